package healstore

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/healstore/healstore/metastore"
)

// Errors of the filesystem metadata area.
var (
	// ErrConflict: an FSBatch condition failed (the key changed since it
	// was read); nothing was written.
	ErrConflict = errors.New("metadata changed concurrently")
	// ErrStopScan ends an FSMeta.Scan early when its callback returns it;
	// Scan then returns nil.
	ErrStopScan = errors.New("stop scan")
)

// fsMetaPrefix is where filesystem metadata lives in the metastore:
// "fs/<name>/<key>". docs/fuse.md describes the keys under it.
const fsMetaPrefix = "fs/"

var fsMetaNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// FSMeta is a private key/value area of the store's metastore for a
// filesystem layered on the store (the FUSE mount keeps its inodes and
// directory entries here). It offers what a filesystem needs and objects
// do not: small records, ordered scans and atomic multi-key batches with
// compare-and-swap conditions. Keys are opaque bytes, relative to the area;
// areas of different names never see each other's keys, nor the store's
// own records. Commits are durable when they return, like every metastore
// commit. Safe for concurrent use.
type FSMeta struct {
	s      *Store
	prefix []byte
}

// FSMeta returns the metadata area of the filesystem called name (1-64 of
// [A-Za-z0-9._-]). The area needs no creation: it is empty until the first
// commit.
func (s *Store) FSMeta(name string) (*FSMeta, error) {
	if !fsMetaNameRE.MatchString(name) {
		return nil, fmt.Errorf("fsmeta: name %q: use 1-64 of [A-Za-z0-9._-], starting with a letter or digit", name)
	}
	return &FSMeta{s: s, prefix: []byte(fsMetaPrefix + name + "/")}, nil
}

func (m *FSMeta) key(k []byte) []byte {
	out := make([]byte, 0, len(m.prefix)+len(k))
	return append(append(out, m.prefix...), k...)
}

// Get returns the value of key, or an error matching ErrNotFound.
func (m *FSMeta) Get(ctx context.Context, key []byte) ([]byte, error) {
	if err := m.s.checkOpen(); err != nil {
		return nil, err
	}
	if len(key) == 0 {
		return nil, errors.New("fsmeta get: empty key")
	}
	v, err := m.s.meta.KV().Get(ctx, m.key(key))
	if errors.Is(err, metastore.ErrNotFound) {
		return nil, fmt.Errorf("fsmeta get %x: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("fsmeta get %x: %w", key, err)
	}
	return v, nil
}

// Scan calls fn, in ascending key order, for every key of the area that
// starts with prefix and is >= start (start may be nil). Keys passed to fn
// are relative to the area; fn may keep k and v. When fn returns
// ErrStopScan the walk ends and Scan returns nil; any other error is
// returned as is. Scan is not a snapshot (see metastore.KV).
func (m *FSMeta) Scan(ctx context.Context, prefix, start []byte, fn func(k, v []byte) error) error {
	if err := m.s.checkOpen(); err != nil {
		return err
	}
	var from []byte
	if start != nil {
		from = m.key(start)
	}
	n := len(m.prefix)
	err := m.s.meta.KV().Scan(ctx, m.key(prefix), from, func(k, v []byte) error {
		err := fn(k[n:], v)
		if errors.Is(err, ErrStopScan) {
			return metastore.ErrStop
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("fsmeta scan %x: %w", prefix, err)
	}
	return nil
}

// FSBatch collects writes and conditions to commit at once with
// FSMeta.Commit. Keys and values are copied. The zero value is empty. Not
// safe for concurrent use.
type FSBatch struct {
	ops   []fsOp
	conds []fsOp
}

type fsOp struct {
	key, value []byte
	del        bool // for ops: delete; for conds: expect missing
}

// Put sets key to value.
func (b *FSBatch) Put(key, value []byte) {
	b.ops = append(b.ops, fsOp{key: cloneBytes(key), value: cloneBytes(value)})
}

// Delete removes key (a missing key is not an error).
func (b *FSBatch) Delete(key []byte) { b.ops = append(b.ops, fsOp{key: cloneBytes(key), del: true}) }

// ExpectValue makes the commit fail with ErrConflict unless key holds
// exactly value.
func (b *FSBatch) ExpectValue(key, value []byte) {
	b.conds = append(b.conds, fsOp{key: cloneBytes(key), value: cloneBytes(value)})
}

// ExpectMissing makes the commit fail with ErrConflict unless key is
// absent.
func (b *FSBatch) ExpectMissing(key []byte) {
	b.conds = append(b.conds, fsOp{key: cloneBytes(key), del: true})
}

// Len is the number of writes in the batch.
func (b *FSBatch) Len() int { return len(b.ops) }

func cloneBytes(b []byte) []byte { return append([]byte{}, b...) }

// Commit applies the whole batch or nothing: it checks every condition
// first, and when one fails it writes nothing and returns an error
// matching ErrConflict. A later write to the same key in one batch
// replaces an earlier one. When Commit returns nil the batch is durable.
func (m *FSMeta) Commit(ctx context.Context, b *FSBatch) error {
	if err := m.s.checkOpen(); err != nil {
		return err
	}
	var mb metastore.Batch
	for _, c := range b.conds {
		if len(c.key) == 0 {
			return errors.New("fsmeta commit: empty key in condition")
		}
		if c.del {
			mb.ExpectMissing(m.key(c.key))
		} else {
			mb.ExpectValue(m.key(c.key), c.value)
		}
	}
	for _, op := range b.ops {
		if len(op.key) == 0 {
			return errors.New("fsmeta commit: empty key")
		}
		if op.del {
			mb.Delete(m.key(op.key))
		} else {
			mb.Put(m.key(op.key), op.value)
		}
	}
	if mb.Empty() {
		return nil
	}
	err := m.s.meta.KV().Commit(ctx, &mb)
	if errors.Is(err, metastore.ErrConflict) {
		return fmt.Errorf("fsmeta commit: %w", ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("fsmeta commit: %w", err)
	}
	return nil
}
