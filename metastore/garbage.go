package metastore

import (
	"context"
	"fmt"
	"time"
)

func (s *Store) garbageInto(b *Batch, garbage []Garbage) error {
	for _, g := range garbage {
		if g.After.IsZero() {
			g.After = s.now().Add(s.garbageDelay)
		}
		v, err := encodeGarbage(&g)
		if err != nil {
			return err
		}
		b.Put(garbageKey(&g), v)
	}
	return nil
}

// AddGarbage records shards to delete once their After time has passed (a
// zero After means now plus the garbage delay), in one batch.
//
// Garbage collection must check, before deleting a shard, that no stripe
// references (backend, key) any more: a rebuild may have put a shard back
// on a backend it once left.
func (s *Store) AddGarbage(ctx context.Context, g ...Garbage) error {
	if len(g) == 0 {
		return nil
	}
	var b Batch
	if err := s.garbageInto(&b, g); err != nil {
		return fmt.Errorf("add garbage: %w", err)
	}
	if err := s.kv.Commit(ctx, &b); err != nil {
		return fmt.Errorf("add garbage: %w", err)
	}
	return nil
}

// ListGarbage calls fn for every garbage entry, earliest After first. fn
// may return ErrStop.
func (s *Store) ListGarbage(ctx context.Context, fn func(Garbage) error) error {
	return s.listGarbage(ctx, time.Time{}, fn)
}

// DueGarbage calls fn for the garbage entries whose After is not later than
// now, earliest first.
func (s *Store) DueGarbage(ctx context.Context, now time.Time, fn func(Garbage) error) error {
	return s.listGarbage(ctx, now, fn)
}

func (s *Store) listGarbage(ctx context.Context, due time.Time, fn func(Garbage) error) error {
	err := s.scan(ctx, []byte(pGarbage), nil, func(k, v []byte) error {
		g, err := decodeGarbage(k, v)
		if err != nil {
			return err
		}
		if !due.IsZero() && g.After.After(due) {
			return ErrStop // keys are in After order: nothing later is due
		}
		return fn(*g)
	})
	if err != nil {
		return fmt.Errorf("list garbage: %w", err)
	}
	return nil
}

// RemoveGarbage deletes garbage entries (as ListGarbage returned them, After
// included) in one batch. Absent entries are ignored.
func (s *Store) RemoveGarbage(ctx context.Context, g ...Garbage) error {
	if len(g) == 0 {
		return nil
	}
	var b Batch
	for i := range g {
		b.Delete(garbageKey(&g[i]))
	}
	if err := s.kv.Commit(ctx, &b); err != nil {
		return fmt.Errorf("remove garbage: %w", err)
	}
	return nil
}

// AddIntent records shards about to be uploaded. A zero Created means now.
func (s *Store) AddIntent(ctx context.Context, in Intent) error {
	if in.ID == ([16]byte{}) {
		return fmt.Errorf("%w: intent with zero id", ErrInvalid)
	}
	if in.Created.IsZero() {
		in.Created = s.now()
	}
	v, err := encodeIntent(&in)
	if err != nil {
		return err
	}
	var b Batch
	b.Put(intentKey(in.ID), v)
	if err := s.kv.Commit(ctx, &b); err != nil {
		return fmt.Errorf("add intent %s: %w", hexID(in.ID), err)
	}
	return nil
}

// ExtendIntent replaces an existing intent with in, which lists more
// shards (a write retrying a shard elsewhere), keeping its creation time.
// An intent no longer there is ErrNotFound and nothing is written: it
// expired, its shards went to garbage collection, and the write must
// fail rather than record them again as its own and commit them.
func (s *Store) ExtendIntent(ctx context.Context, in Intent) error {
	key := intentKey(in.ID)
	return s.update(ctx, "extend intent "+hexID(in.ID), func(b *Batch) error {
		raw, found, err := s.get(ctx, key)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("intent %s expired (its shards went to garbage collection): %w", hexID(in.ID), ErrNotFound)
		}
		old, err := decodeIntent(key, raw)
		if err != nil {
			return err
		}
		in.Created = old.Created
		v, err := encodeIntent(&in)
		if err != nil {
			return err
		}
		b.ExpectValue(key, raw)
		b.Put(key, v)
		return nil
	})
}

// GetIntent returns an intent (ErrNotFound).
func (s *Store) GetIntent(ctx context.Context, id [16]byte) (*Intent, error) {
	key := intentKey(id)
	raw, err := s.kv.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("intent %s: %w", hexID(id), err)
	}
	return decodeIntent(key, raw)
}

// ListIntents calls fn for every intent, in id order. fn may return ErrStop.
func (s *Store) ListIntents(ctx context.Context, fn func(Intent) error) error {
	err := s.scan(ctx, []byte(pIntent), nil, func(k, v []byte) error {
		in, err := decodeIntent(k, v)
		if err != nil {
			return err
		}
		return fn(*in)
	})
	if err != nil {
		return fmt.Errorf("list intents: %w", err)
	}
	return nil
}

// RemoveIntent deletes an intent; absent is not an error.
func (s *Store) RemoveIntent(ctx context.Context, id [16]byte) error {
	var b Batch
	b.Delete(intentKey(id))
	if err := s.kv.Commit(ctx, &b); err != nil {
		return fmt.Errorf("remove intent %s: %w", hexID(id), err)
	}
	return nil
}

// IntentToGarbage turns an abandoned intent (its write crashed or failed)
// into garbage entries due at after, and removes it, in one batch. Absent
// is not an error.
func (s *Store) IntentToGarbage(ctx context.Context, id [16]byte, after time.Time) error {
	key := intentKey(id)
	return s.update(ctx, "expire intent "+hexID(id), func(b *Batch) error {
		raw, found, err := s.get(ctx, key)
		if err != nil || !found {
			return err
		}
		in, err := decodeIntent(key, raw)
		if err != nil {
			return err
		}
		b.ExpectValue(key, raw)
		b.Delete(key)
		var g []Garbage
		for _, sh := range in.Shards {
			if sh.Backend != "" {
				g = append(g, Garbage{Backend: sh.Backend, Key: sh.Key, After: after})
			}
		}
		return s.garbageInto(b, g)
	})
}
