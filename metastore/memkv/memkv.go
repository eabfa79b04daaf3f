package memkv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/healstore/healstore/metastore"
)

// scanPage bounds how many entries Scan copies per lock hold; fn runs with
// the lock released so it may call back into the KV.
const scanPage = 256

// KV is an in-memory metastore.KV. Safe for concurrent use.
type KV struct {
	mu     sync.RWMutex
	keys   []string // sorted
	vals   map[string][]byte
	closed bool
}

var _ metastore.KV = (*KV)(nil)

// New returns an empty KV.
func New() *KV { return &KV{vals: make(map[string][]byte)} }

func (m *KV) check(ctx context.Context) error {
	if m.closed {
		return metastore.ErrClosed
	}
	return ctx.Err()
}

// Get implements metastore.KV.
func (m *KV) Get(ctx context.Context, key []byte) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(ctx); err != nil {
		return nil, err
	}
	v, ok := m.vals[string(key)]
	if !ok {
		return nil, fmt.Errorf("key %q: %w", key, metastore.ErrNotFound)
	}
	return append([]byte{}, v...), nil
}

// Scan implements metastore.KV.
func (m *KV) Scan(ctx context.Context, prefix, start []byte, fn func(k, v []byte) error) error {
	from := string(metastore.ScanStart(prefix, start))
	inclusive := true
	for {
		type kv struct{ k, v []byte }
		var page []kv
		m.mu.RLock()
		if err := m.check(ctx); err != nil {
			m.mu.RUnlock()
			return err
		}
		i, found := slices.BinarySearch(m.keys, from)
		if found && !inclusive {
			i++
		}
		for ; i < len(m.keys) && len(page) < scanPage; i++ {
			k := m.keys[i]
			if !bytes.HasPrefix([]byte(k), prefix) {
				break
			}
			page = append(page, kv{[]byte(k), append([]byte{}, m.vals[k]...)})
		}
		m.mu.RUnlock()
		for _, e := range page {
			if err := fn(e.k, e.v); err != nil {
				if errors.Is(err, metastore.ErrStop) {
					return nil
				}
				return err
			}
		}
		if len(page) < scanPage {
			return nil
		}
		from, inclusive = string(page[len(page)-1].k), false
	}
}

// Commit implements metastore.KV.
func (m *KV) Commit(ctx context.Context, b *metastore.Batch) error {
	if err := b.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return err
	}
	for _, c := range b.Conds() {
		v, ok := m.vals[string(c.Key)]
		if c.Missing && ok {
			return fmt.Errorf("key %q exists: %w", c.Key, metastore.ErrConflict)
		}
		if !c.Missing && (!ok || !bytes.Equal(v, c.Value)) {
			return fmt.Errorf("key %q changed: %w", c.Key, metastore.ErrConflict)
		}
	}
	for _, op := range b.Ops() {
		k := string(op.Key)
		i, found := slices.BinarySearch(m.keys, k)
		if op.Delete {
			if found {
				m.keys = slices.Delete(m.keys, i, i+1)
				delete(m.vals, k)
			}
			continue
		}
		if !found {
			m.keys = slices.Insert(m.keys, i, k)
		}
		m.vals[k] = append([]byte{}, op.Value...)
	}
	return nil
}

// Close implements metastore.KV.
func (m *KV) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return metastore.ErrClosed
	}
	m.closed = true
	return nil
}

// Len returns the number of keys (tests).
func (m *KV) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.keys)
}
