package backends

import "context"

// Prefetcher is an optional ability of a Backend: a hint that key is about
// to be read, so the backend can start fetching it while the caller sets up
// its other reads. A read of one stripe asks k backends for a shard each;
// issued one after the other from a few busy threads, the reads of a disk
// shared by several local backends queue behind each other, where hints
// given first let the disk work on all of them at once.
//
// Prefetch must return without waiting for the data, and it changes
// nothing a later call sees: a key that does not exist, an error, or a
// backend that ignores hints are all the same to the caller.
type Prefetcher interface {
	Prefetch(ctx context.Context, key string)
}

// Prefetch gives b the hint that key is about to be read, if b, or a
// backend it decorates (see Unwrap), takes hints.
func Prefetch(ctx context.Context, b Backend, key string) {
	for b != nil {
		if p, ok := b.(Prefetcher); ok {
			p.Prefetch(ctx, key)
			return
		}
		u, ok := b.(interface{ Unwrap() Backend })
		if !ok {
			return
		}
		b = u.Unwrap()
	}
}
