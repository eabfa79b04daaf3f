package metastore

import (
	"context"
	"fmt"
)

// GetObject returns the object stored under name (ErrNotFound).
func (s *Store) GetObject(ctx context.Context, name string) (*Object, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty object name", ErrInvalid)
	}
	key := objectKey(name)
	raw, err := s.kv.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("object %q: %w", name, err)
	}
	return decodeObject(key, raw)
}

// ListObjects returns objects whose name starts with prefix and sorts after
// `after` ("" = from the start), in name order, at most limit of them
// (limit <= 0: all).
func (s *Store) ListObjects(ctx context.Context, prefix, after string, limit int) ([]Object, error) {
	var start []byte
	if after != "" {
		start = append(objectKey(after), 0) // first key strictly after
	}
	var out []Object
	err := s.scan(ctx, objectKey(prefix), start, func(k, v []byte) error {
		o, err := decodeObject(k, v)
		if err != nil {
			return err
		}
		out = append(out, *o)
		if limit > 0 && len(out) >= limit {
			return ErrStop
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list objects %q: %w", prefix, err)
	}
	return out, nil
}

// PutObject commits a new object version in one batch: the object record,
// its new stripes (stored at Version 1; the caller's structs are updated),
// their backend index entries, the given repair items (merged as Enqueue
// does), and the removal of the given intents. Every intent must still
// exist: if one was collected (IntentToGarbage or RemoveIntent ran first),
// nothing is written and the error matches ErrIntentLost (and ErrConflict).
// If an object with that name existed, its stripes that the new version
// does not reference are deleted (with their index and queue entries) and
// their shards become garbage due after the garbage delay; the old object
// is returned.
//
// Every stripe in `stripes` must be listed in obj.Stripes; a listed stripe
// not in `stripes` must belong to the replaced version (it is kept).
func (s *Store) PutObject(ctx context.Context, obj *Object, stripes []*Stripe, repairs []RepairItem, intents [][16]byte) (replaced *Object, err error) {
	rec, err := encodeObject(obj)
	if err != nil {
		return nil, err
	}
	listed := make(map[[16]byte]bool, len(obj.Stripes))
	for _, id := range obj.Stripes {
		listed[id] = true
	}
	given := make(map[[16]byte]bool, len(stripes))
	stripeRecs := make([][]byte, len(stripes))
	for i, st := range stripes {
		if !listed[st.ID] {
			return nil, fmt.Errorf("%w: put object %q: stripe %s is not listed in the object", ErrInvalid, obj.Name, hexID(st.ID))
		}
		if st.Object != obj.ID {
			return nil, fmt.Errorf("%w: put object %q: stripe %s names object %s, not %s", ErrInvalid, obj.Name, hexID(st.ID), hexID(st.Object), hexID(obj.ID))
		}
		given[st.ID] = true
		v := *st
		v.Version = 1
		if stripeRecs[i], err = encodeStripe(&v); err != nil {
			return nil, fmt.Errorf("put object %q: %w", obj.Name, err)
		}
	}
	for _, in := range intents {
		if in == ([16]byte{}) {
			return nil, fmt.Errorf("%w: put object %q: zero intent id", ErrInvalid, obj.Name)
		}
	}
	key := objectKey(obj.Name)
	err = s.update(ctx, fmt.Sprintf("put object %q", obj.Name), func(b *Batch) error {
		replaced = nil
		// Each intent must still exist: the collector turns an intent it
		// judges abandoned into garbage and deletes its shards, and a
		// commit after that would reference deleted shards. The condition
		// makes "collect" and "commit" exclusive, whichever comes first.
		for _, in := range intents {
			ikey := intentKey(in)
			raw, found, err := s.get(ctx, ikey)
			if err != nil {
				return err
			}
			if !found {
				return fmt.Errorf("%w: intent %s of this write is gone: garbage collection judged the write abandoned (open longer than the orphan delay) and may have deleted its shards", ErrIntentLost, hexID(in))
			}
			b.ExpectValue(ikey, raw)
			b.Delete(ikey)
		}
		oldRaw, found, err := s.get(ctx, key)
		if err != nil {
			return err
		}
		keep := make(map[[16]byte]bool)
		if found {
			b.ExpectValue(key, oldRaw)
			if replaced, err = decodeObject(key, oldRaw); err != nil {
				return err
			}
			for _, id := range replaced.Stripes {
				if listed[id] && !given[id] {
					keep[id] = true
				}
			}
			if err := s.dropStripes(ctx, b, replaced.Stripes, keep); err != nil {
				return err
			}
		} else {
			b.ExpectMissing(key)
		}
		for id := range listed {
			if !given[id] && !keep[id] {
				return fmt.Errorf("%w: object references stripe %s that is neither given nor part of the replaced version", ErrInvalid, hexID(id))
			}
		}
		b.Put(key, rec)
		for i, st := range stripes {
			b.Put(stripeKey(st.ID), stripeRecs[i])
			for _, be := range st.Backends() {
				b.Put(indexKey(be, st.ID), nil)
			}
		}
		if err := s.enqueueInto(ctx, b, repairs, mergeEnqueue); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, st := range stripes {
		st.Version = 1
	}
	return replaced, nil
}

// dropStripes adds to b the removal of the given stripes (except keep):
// stripe records, index entries, queue entries; every placed shard becomes
// garbage. Each stripe record read is made a condition, so a concurrent
// UpdateStripe (a rebuild moving a shard) makes the batch retry instead of
// leaking the new shard.
func (s *Store) dropStripes(ctx context.Context, b *Batch, ids [][16]byte, keep map[[16]byte]bool) error {
	after := s.now().Add(s.garbageDelay)
	for _, id := range ids {
		if keep[id] {
			continue
		}
		key := stripeKey(id)
		raw, found, err := s.get(ctx, key)
		if err != nil {
			return err
		}
		if !found {
			continue // already gone; nothing to collect
		}
		b.ExpectValue(key, raw)
		st, err := decodeStripe(key, raw)
		if err != nil {
			return err
		}
		b.Delete(key)
		for _, be := range st.Backends() {
			b.Delete(indexKey(be, id))
		}
		if err := s.dequeueInto(ctx, b, id, nil); err != nil {
			return err
		}
		for _, sh := range st.Shards {
			if sh.Backend == "" {
				continue
			}
			g := Garbage{Backend: sh.Backend, Key: sh.Key, After: after}
			v, err := encodeGarbage(&g)
			if err != nil {
				return err
			}
			b.Put(garbageKey(&g), v)
		}
	}
	return nil
}

// DeleteObject removes the object and its stripes, index and queue entries
// in one batch; its shards become garbage due after the garbage delay.
func (s *Store) DeleteObject(ctx context.Context, name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty object name", ErrInvalid)
	}
	key := objectKey(name)
	return s.update(ctx, fmt.Sprintf("delete object %q", name), func(b *Batch) error {
		raw, found, err := s.get(ctx, key)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("delete object %q: %w", name, ErrNotFound)
		}
		o, err := decodeObject(key, raw)
		if err != nil {
			return err
		}
		b.ExpectValue(key, raw)
		b.Delete(key)
		return s.dropStripes(ctx, b, o.Stripes, nil)
	})
}

// RenameObject moves an object to a new name in one batch. An object
// already under `to` is replaced, as a POSIX rename does: its stripes are
// dropped and its shards become garbage.
func (s *Store) RenameObject(ctx context.Context, from, to string) error {
	return s.renameObject(ctx, from, to, true)
}

// RenameObjectNoReplace is RenameObject that fails with ErrExists, writing
// nothing, when an object is under `to`. The check is part of the commit:
// a check made before it could not see an object written in between, and
// the rename would drop that object.
func (s *Store) RenameObjectNoReplace(ctx context.Context, from, to string) error {
	return s.renameObject(ctx, from, to, false)
}

func (s *Store) renameObject(ctx context.Context, from, to string, replace bool) error {
	if from == "" || to == "" {
		return fmt.Errorf("%w: empty object name", ErrInvalid)
	}
	fromKey, toKey := objectKey(from), objectKey(to)
	return s.update(ctx, fmt.Sprintf("rename object %q to %q", from, to), func(b *Batch) error {
		raw, found, err := s.get(ctx, fromKey)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("rename object %q: %w", from, ErrNotFound)
		}
		if from == to {
			return nil
		}
		o, err := decodeObject(fromKey, raw)
		if err != nil {
			return err
		}
		b.ExpectValue(fromKey, raw)
		oldRaw, found, err := s.get(ctx, toKey)
		if err != nil {
			return err
		}
		if found && !replace {
			return fmt.Errorf("rename object %q: object %q: %w", from, to, ErrExists)
		}
		if found {
			b.ExpectValue(toKey, oldRaw)
			old, err := decodeObject(toKey, oldRaw)
			if err != nil {
				return err
			}
			keep := make(map[[16]byte]bool, len(o.Stripes))
			for _, id := range o.Stripes {
				keep[id] = true
			}
			if err := s.dropStripes(ctx, b, old.Stripes, keep); err != nil {
				return err
			}
		} else {
			b.ExpectMissing(toKey)
		}
		o.Name = to
		rec, err := encodeObject(o)
		if err != nil {
			return err
		}
		b.Delete(fromKey)
		b.Put(toKey, rec)
		return nil
	})
}
