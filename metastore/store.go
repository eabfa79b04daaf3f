package metastore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"
)

// DefaultGarbageDelay is how long a replaced or deleted object's shards stay
// on their backends before garbage collection may delete them, so readers
// that opened the old version can finish.
const DefaultGarbageDelay = 15 * time.Minute

// maxAttempts bounds the read-modify-write retries of operations whose
// conditions can be re-evaluated (a concurrent writer changed what they
// read); after that ErrConflict reaches the caller.
const maxAttempts = 16

// Store is healstore's typed metadata on top of a KV: objects, stripes, the
// backend->stripe index, the repair queue, backends, garbage, intents and a
// few named values. Every change that touches more than one record is one
// KV batch, so a crash leaves either all of it or none. Safe for concurrent
// use; concurrent changes are detected with batch conditions.
type Store struct {
	kv           KV
	now          func() time.Time
	garbageDelay time.Duration
}

// Option configures a Store.
type Option func(*Store)

// WithGarbageDelay sets how long the shards of replaced and deleted objects
// are kept before garbage collection may delete them (default
// DefaultGarbageDelay).
func WithGarbageDelay(d time.Duration) Option { return func(s *Store) { s.garbageDelay = d } }

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// New returns a Store over kv. The Store does not own kv until Close.
func New(kv KV, opts ...Option) *Store {
	s := &Store{kv: kv, now: time.Now, garbageDelay: DefaultGarbageDelay}
	for _, o := range opts {
		o(s)
	}
	return s
}

// KV returns the underlying KV (for snapshots and dumps).
func (s *Store) KV() KV { return s.kv }

// Close closes the underlying KV.
func (s *Store) Close() error { return s.kv.Close() }

// GarbageDelay is the delay configured with WithGarbageDelay.
func (s *Store) GarbageDelay() time.Duration { return s.garbageDelay }

// get reads a raw value; found is false when the key is missing.
func (s *Store) get(ctx context.Context, key []byte) (raw []byte, found bool, err error) {
	raw, err = s.kv.Get(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return raw, true, nil
}

// update runs build to fill a batch and commits it, rebuilding and
// retrying when a condition failed because something changed between the
// reads in build and the commit. build must do all its reads itself.
func (s *Store) update(ctx context.Context, what string, build func(b *Batch) error) error {
	for attempt := 1; ; attempt++ {
		var b Batch
		if err := build(&b); err != nil {
			return err
		}
		if b.Len() == 0 {
			return nil
		}
		err := s.kv.Commit(ctx, &b)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrConflict) || attempt >= maxAttempts {
			return fmt.Errorf("%s: %w", what, err)
		}
		// Jittered back-off so contending writers do not retry in step.
		d := time.Duration(mrand.Int64N(int64(attempt) * int64(time.Millisecond)))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(d):
		}
	}
}

// scan walks a prefix, turning ErrStop from fn into a clean stop.
func (s *Store) scan(ctx context.Context, prefix, start []byte, fn func(k, v []byte) error) error {
	err := s.kv.Scan(ctx, prefix, start, fn)
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

// StoreID returns the store's identity, created on first use (32 hex
// digits) and stable afterwards, even when several processes ask at once.
func (s *Store) StoreID(ctx context.Context) (string, error) {
	key := []byte(kStoreID)
	for attempt := 1; ; attempt++ {
		raw, found, err := s.get(ctx, key)
		if err != nil {
			return "", fmt.Errorf("store id: %w", err)
		}
		if found {
			return string(raw), nil
		}
		var id [16]byte
		if _, err := rand.Read(id[:]); err != nil {
			return "", fmt.Errorf("store id: %w", err)
		}
		var b Batch
		b.ExpectMissing(key)
		b.Put(key, []byte(hex.EncodeToString(id[:])))
		err = s.kv.Commit(ctx, &b)
		if err == nil {
			return hex.EncodeToString(id[:]), nil
		}
		if !errors.Is(err, ErrConflict) || attempt >= maxAttempts {
			return "", fmt.Errorf("store id: %w", err)
		}
	}
}

// ExistingStoreID returns the store's id, or ErrNotFound when the metastore
// holds no store yet; unlike StoreID it never makes one.
func (s *Store) ExistingStoreID(ctx context.Context) (string, error) {
	raw, found, err := s.get(ctx, []byte(kStoreID))
	switch {
	case err != nil:
		return "", fmt.Errorf("store id: %w", err)
	case !found:
		return "", fmt.Errorf("store id: %w", ErrNotFound)
	}
	return string(raw), nil
}

// GetMeta returns a named value (ErrNotFound when unset).
func (s *Store) GetMeta(ctx context.Context, name string) ([]byte, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty meta name", ErrInvalid)
	}
	v, err := s.kv.Get(ctx, metaKey(name))
	if err != nil {
		return nil, fmt.Errorf("meta %q: %w", name, err)
	}
	return v, nil
}

// PutMeta sets a named value.
func (s *Store) PutMeta(ctx context.Context, name string, v []byte) error {
	if name == "" {
		return fmt.Errorf("%w: empty meta name", ErrInvalid)
	}
	var b Batch
	b.Put(metaKey(name), v)
	if err := s.kv.Commit(ctx, &b); err != nil {
		return fmt.Errorf("put meta %q: %w", name, err)
	}
	return nil
}

// DeleteMeta removes a named value; a missing one is not an error.
func (s *Store) DeleteMeta(ctx context.Context, name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty meta name", ErrInvalid)
	}
	var b Batch
	b.Delete(metaKey(name))
	if err := s.kv.Commit(ctx, &b); err != nil {
		return fmt.Errorf("delete meta %q: %w", name, err)
	}
	return nil
}

// SwapMeta sets a named value only if it currently holds old (old == nil:
// only if unset). new == nil deletes it. ErrConflict otherwise.
func (s *Store) SwapMeta(ctx context.Context, name string, old, new []byte) error {
	if name == "" {
		return fmt.Errorf("%w: empty meta name", ErrInvalid)
	}
	var b Batch
	key := metaKey(name)
	if old == nil {
		b.ExpectMissing(key)
	} else {
		b.ExpectValue(key, old)
	}
	if new == nil {
		b.Delete(key)
	} else {
		b.Put(key, new)
	}
	if err := s.kv.Commit(ctx, &b); err != nil {
		return fmt.Errorf("swap meta %q: %w", name, err)
	}
	return nil
}
