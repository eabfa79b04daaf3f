package metastore

import (
	"context"
	"errors"
	"fmt"
)

// GetStripe returns a stripe (ErrNotFound).
func (s *Store) GetStripe(ctx context.Context, id [16]byte) (*Stripe, error) {
	key := stripeKey(id)
	raw, err := s.kv.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("stripe %s: %w", hexID(id), err)
	}
	return decodeStripe(key, raw)
}

// UpdateStripe replaces a stripe's record if its stored Version still equals
// st.Version (ErrConflict otherwise; ErrNotFound if the stripe is gone, for
// example because its object was deleted). In the same batch it moves the
// backend index entries to the new set of backends and adds garbage (the
// shard locations the update abandons). On success st.Version holds the
// new version.
func (s *Store) UpdateStripe(ctx context.Context, st *Stripe, garbage []Garbage) error {
	return s.updateStripe(ctx, st, garbage, false, nil)
}

// CompleteRepair is UpdateStripe plus the removal of the stripe's repair
// queue entry, in one batch. When done is non-nil the entry is removed only
// if it is still the one done describes (same margin and queue time): an
// entry that was re-queued with a lower margin while the repair ran stays.
func (s *Store) CompleteRepair(ctx context.Context, st *Stripe, garbage []Garbage, done *RepairItem) error {
	return s.updateStripe(ctx, st, garbage, true, done)
}

func (s *Store) updateStripe(ctx context.Context, st *Stripe, garbage []Garbage, dequeue bool, done *RepairItem) error {
	key := stripeKey(st.ID)
	what := fmt.Sprintf("update stripe %s", hexID(st.ID))
	raw, err := s.kv.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	cur, err := decodeStripe(key, raw)
	if err != nil {
		return err
	}
	if cur.Version != st.Version {
		return fmt.Errorf("%s: stored version %d, update is based on %d: %w", what, cur.Version, st.Version, ErrConflict)
	}
	next := *st
	next.Version = cur.Version + 1
	rec, err := encodeStripe(&next)
	if err != nil {
		return err
	}
	var b Batch
	b.ExpectValue(key, raw)
	b.Put(key, rec)
	now := make(map[string]bool)
	for _, be := range next.Backends() {
		now[be] = true
		b.Put(indexKey(be, st.ID), nil)
	}
	for _, be := range cur.Backends() {
		if !now[be] {
			b.Delete(indexKey(be, st.ID))
		}
	}
	if err := s.garbageInto(&b, garbage); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if dequeue {
		if err := s.dequeueInto(ctx, &b, st.ID, done); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if err := s.kv.Commit(ctx, &b); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	st.Version = next.Version
	return nil
}

// StripesOnBackend calls fn with the id of every stripe that has a shard on
// backend, in id order, through the backend index (no full scan). fn may
// return ErrStop.
func (s *Store) StripesOnBackend(ctx context.Context, backend string, fn func(id [16]byte) error) error {
	if err := validBackendName(backend); err != nil {
		return err
	}
	prefix := indexPrefix(backend)
	err := s.scan(ctx, prefix, nil, func(k, _ []byte) error {
		id, err := parseHexID(string(k[len(prefix):]))
		if err != nil {
			return fmt.Errorf("index key %q: %w", k, err)
		}
		return fn(id)
	})
	if err != nil {
		return fmt.Errorf("stripes on backend %s: %w", backend, err)
	}
	return nil
}

// AShardOn returns the key of one shard the metadata places on backend
// (through the backend index), or ok false when it places none there.
func (s *Store) AShardOn(ctx context.Context, backend string) (key string, ok bool, err error) {
	var id [16]byte
	found := false
	err = s.StripesOnBackend(ctx, backend, func(i [16]byte) error { id, found = i, true; return ErrStop })
	if err != nil || !found {
		return "", false, err
	}
	st, err := s.GetStripe(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return "", false, nil // deleted since the index was read
	}
	if err != nil {
		return "", false, err
	}
	for _, sh := range st.Shards {
		if sh.Backend == backend {
			return sh.Key, true, nil
		}
	}
	return "", false, nil
}

// CountStripesOnBackend counts the index entries of a backend.
func (s *Store) CountStripesOnBackend(ctx context.Context, backend string) (int, error) {
	n := 0
	err := s.StripesOnBackend(ctx, backend, func([16]byte) error { n++; return nil })
	return n, err
}

// ScanStripes calls fn for every stripe with an id greater than after (the
// zero id: from the first stripe), in id order. fn may return ErrStop; a
// scrubber resumes from the last id it saw.
func (s *Store) ScanStripes(ctx context.Context, after [16]byte, fn func(*Stripe) error) error {
	var start []byte
	if after != ([16]byte{}) {
		start = append(stripeKey(after), 0)
	}
	err := s.scan(ctx, []byte(pStripe), start, func(k, v []byte) error {
		st, err := decodeStripe(k, v)
		if err != nil {
			return err
		}
		return fn(st)
	})
	if err != nil {
		return fmt.Errorf("scan stripes: %w", err)
	}
	return nil
}
