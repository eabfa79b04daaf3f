package metastore

import (
	"bytes"
	"context"
	"fmt"
)

// KV is the small ordered key-value store every metadata engine provides
// (pebble embedded, etcd shared, an in-memory map for tests). The typed
// Store is written once on top of it.
//
// Contracts every implementation keeps (metastoretest.RunKV checks them):
//   - Keys are non-empty byte strings compared bytewise; values may be empty
//     (an empty value is present, not missing).
//   - Get returns a copy the caller may keep and modify, or an error
//     matching ErrNotFound.
//   - Scan calls fn in ascending key order for every key that starts with
//     prefix and is >= start (start may be nil or lie outside the prefix).
//     k and v are copies fn may keep. fn may call any KV method, including
//     Commit. Scan is not a snapshot: a key committed during the walk may or
//     may not be seen, but every key that exists for the whole walk is seen
//     exactly once. When fn returns ErrStop, Scan returns nil; any other
//     error from fn is returned unchanged.
//   - Commit applies the whole batch or nothing. It first checks every
//     condition (against the state before the batch); if one fails it
//     writes nothing and returns an error matching ErrConflict. When Commit
//     returns nil the batch is durable (synced to disk, or committed by the
//     etcd quorum). Commits are linearizable: a commit's conditions and
//     writes happen at one instant with respect to every other commit.
//   - After Close every method returns an error matching ErrClosed; Close
//     may be called more than once and concurrently (later calls return
//     ErrClosed, never panic).
//   - Every method honours ctx and is safe for concurrent use.
type KV interface {
	Get(ctx context.Context, key []byte) ([]byte, error)
	Scan(ctx context.Context, prefix, start []byte, fn func(k, v []byte) error) error
	Commit(ctx context.Context, b *Batch) error
	Close() error
}

// Op is one write in a Batch.
type Op struct {
	Key    []byte
	Value  []byte // nil for a delete
	Delete bool
}

// Cond is one condition of a Batch.
type Cond struct {
	Key []byte
	// Missing: the key must not exist. Otherwise the key must exist and
	// hold exactly Value.
	Missing bool
	Value   []byte
}

// Batch collects writes and conditions to commit atomically. The zero value
// is an empty batch. Keys and values are copied, so callers may reuse their
// slices. A later write to the same key replaces an earlier one (etcd does
// not accept two writes to one key in a transaction, so the batch keeps only
// the last). A Batch is not safe for concurrent use.
type Batch struct {
	ops   []Op
	index map[string]int // key -> position in ops
	conds []Cond
}

func clone(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return bytes.Clone(b)
}

func (b *Batch) write(op Op) {
	if b.index == nil {
		b.index = make(map[string]int)
	}
	if i, ok := b.index[string(op.Key)]; ok {
		b.ops[i] = op
		return
	}
	b.index[string(op.Key)] = len(b.ops)
	b.ops = append(b.ops, op)
}

// Put sets key to value.
func (b *Batch) Put(key, value []byte) {
	b.write(Op{Key: clone(key), Value: clone(value)})
}

// Delete removes key; deleting a missing key is not an error.
func (b *Batch) Delete(key []byte) {
	b.write(Op{Key: clone(key), Delete: true})
}

// ExpectValue makes Commit fail with ErrConflict unless key holds exactly
// value (a missing key fails too).
func (b *Batch) ExpectValue(key, value []byte) {
	b.conds = append(b.conds, Cond{Key: clone(key), Value: clone(value)})
}

// ExpectMissing makes Commit fail with ErrConflict unless key is absent.
func (b *Batch) ExpectMissing(key []byte) {
	b.conds = append(b.conds, Cond{Key: clone(key), Missing: true})
}

// Ops returns the writes in the order they were first added. For
// implementations; callers must not modify the result.
func (b *Batch) Ops() []Op { return b.ops }

// Conds returns the conditions. For implementations; callers must not
// modify the result.
func (b *Batch) Conds() []Cond { return b.conds }

// Len is the number of distinct keys written.
func (b *Batch) Len() int { return len(b.ops) }

// Empty reports whether the batch has neither writes nor conditions.
func (b *Batch) Empty() bool { return len(b.ops) == 0 && len(b.conds) == 0 }

// Validate checks what every implementation requires of a batch: no empty
// keys. Implementations call it before committing.
func (b *Batch) Validate() error {
	for _, op := range b.ops {
		if len(op.Key) == 0 {
			return fmt.Errorf("%w: empty key in batch", ErrInvalid)
		}
	}
	for _, c := range b.conds {
		if len(c.Key) == 0 {
			return fmt.Errorf("%w: empty key in batch condition", ErrInvalid)
		}
	}
	return nil
}

// ScanStart returns the first key a Scan of (prefix, start) visits:
// max(prefix, start). For implementations.
func ScanStart(prefix, start []byte) []byte {
	if bytes.Compare(start, prefix) > 0 {
		return start
	}
	return prefix
}

// PrefixEnd returns the smallest key greater than every key with the given
// prefix, or nil when there is none (empty prefix, or all 0xff bytes).
// For implementations.
func PrefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
