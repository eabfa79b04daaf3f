package backends

import "context"

// Syncer is an optional ability of a Backend: Puts whose durability is
// deferred, then established for many values at once. Making fourteen
// shards durable one by one costs fourteen rounds of fsyncs; a Syncer lets
// the write path store every shard of an object first and then pay for
// durability once per backend, before its metadata commit.
//
// Contracts (on top of Backend's):
//   - PutNoSync stores value under key as Put does: when it returns, Get,
//     GetRange, Stat and List see the new value. But until a Sync naming
//     key returns nil, a crash of the machine (power loss, kernel panic)
//     may leave key missing or holding a partial or zero-filled value. A
//     crash of the process alone loses nothing that PutNoSync returned.
//   - Sync makes durable the values stored under keys by PutNoSyncs that
//     returned before Sync was called. A key written by Put, or already
//     synced, costs nothing. An error means any of the keys may be lost
//     or torn after a crash: callers treat every one of them as not
//     stored. Sync may flush more than it was asked to.
//   - Both honour ctx like every other call; a Sync whose ctx ends returns
//     ErrUnavailable and leaves the values' durability unknown.
//
// Callers record where a deferred value goes before writing it (healstore
// writes an intent first), since a torn value can reach the disk, and read
// it back only through a checksum kept elsewhere.
type Syncer interface {
	PutNoSync(ctx context.Context, key string, value []byte) error
	Sync(ctx context.Context, keys []string) error
}

// PutNoSync stores value under key with b's deferred-durability Put when
// b is a Syncer, else with its Put (durable at once).
func PutNoSync(ctx context.Context, b Backend, key string, value []byte) error {
	if s, ok := b.(Syncer); ok {
		return s.PutNoSync(ctx, key, value)
	}
	return b.Put(ctx, key, value)
}

// Sync makes the values PutNoSync stored under keys on b durable; for a
// backend that is not a Syncer they already are, and it returns nil.
func Sync(ctx context.Context, b Backend, keys []string) error {
	if s, ok := b.(Syncer); ok {
		return s.Sync(ctx, keys)
	}
	return nil
}

// The deadline decorator passes the ability on, bounding both calls like
// the others. It is a Syncer whatever it wraps: over a backend without the
// ability, PutNoSync is a durable Put and Sync has nothing to do.
var _ Syncer = (*deadlineBackend)(nil)

func (w *deadlineBackend) PutNoSync(ctx context.Context, key string, value []byte) error {
	ctx, cancel := context.WithTimeout(ctx, w.d)
	defer cancel()
	return w.fix(ctx, "put", key, PutNoSync(ctx, w.b, key, value))
}

func (w *deadlineBackend) Sync(ctx context.Context, keys []string) error {
	ctx, cancel := context.WithTimeout(ctx, w.d)
	defer cancel()
	return w.fix(ctx, "sync", "", Sync(ctx, w.b, keys))
}
