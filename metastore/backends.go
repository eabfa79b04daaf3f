package metastore

import (
	"context"
	"fmt"
)

// PutBackend writes a backend record, replacing any previous one. Use
// UpdateBackend when the change depends on the current record.
func (s *Store) PutBackend(ctx context.Context, rec *BackendRecord) error {
	v, err := encodeBackend(rec)
	if err != nil {
		return fmt.Errorf("put backend: %w", err)
	}
	var b Batch
	b.Put(backendKey(rec.Name), v)
	if err := s.kv.Commit(ctx, &b); err != nil {
		return fmt.Errorf("put backend %s: %w", rec.Name, err)
	}
	return nil
}

// GetBackend returns a backend record (ErrNotFound).
func (s *Store) GetBackend(ctx context.Context, name string) (*BackendRecord, error) {
	if err := validBackendName(name); err != nil {
		return nil, err
	}
	key := backendKey(name)
	raw, err := s.kv.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", name, err)
	}
	return decodeBackend(key, raw)
}

// UpdateBackend applies fn to the current record of backend name and
// writes the result, retrying fn on a concurrent change (so fn must be a
// pure function of its argument). ErrNotFound when the backend is unknown;
// an error from fn aborts without writing.
func (s *Store) UpdateBackend(ctx context.Context, name string, fn func(*BackendRecord) error) error {
	if err := validBackendName(name); err != nil {
		return err
	}
	key := backendKey(name)
	return s.update(ctx, "update backend "+name, func(b *Batch) error {
		raw, found, err := s.get(ctx, key)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("update backend %s: %w", name, ErrNotFound)
		}
		rec, err := decodeBackend(key, raw)
		if err != nil {
			return err
		}
		if err := fn(rec); err != nil {
			return err
		}
		rec.Name = name
		v, err := encodeBackend(rec)
		if err != nil {
			return err
		}
		b.ExpectValue(key, raw)
		b.Put(key, v)
		return nil
	})
}

// ListBackends returns every backend record in name order.
func (s *Store) ListBackends(ctx context.Context) ([]BackendRecord, error) {
	var out []BackendRecord
	err := s.scan(ctx, []byte(pBackend), nil, func(k, v []byte) error {
		rec, err := decodeBackend(k, v)
		if err != nil {
			return err
		}
		out = append(out, *rec)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list backends: %w", err)
	}
	return out, nil
}

// DeleteBackend removes a backend record (ErrNotFound when unknown). It
// leaves the backend index alone: a backend's index empties as its
// stripes are rebuilt elsewhere.
func (s *Store) DeleteBackend(ctx context.Context, name string) error {
	if err := validBackendName(name); err != nil {
		return err
	}
	key := backendKey(name)
	return s.update(ctx, "delete backend "+name, func(b *Batch) error {
		raw, found, err := s.get(ctx, key)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("delete backend %s: %w", name, ErrNotFound)
		}
		b.ExpectValue(key, raw)
		b.Delete(key)
		return nil
	})
}
