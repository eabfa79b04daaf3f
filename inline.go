package healstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/metastore"
)

// Inline objects (docs/format.md): an object of at most inline_max_size
// bytes is sealed as one block, exactly as block 0 of a striped object
// would be, and the sealed bytes with their checksum go into the object's
// metadata record. Its write is one synced metastore commit: no intent, no
// shards, no backend touched. Only ciphertext (when the policy encrypts)
// and a checksum reach the record; keys never do.

// validateInline checks inline_max_size (called by Validate).
func (c *Config) validateInline() error {
	limit, why := int64(MaxInlineSize), "the metadata record would grow too large"
	if c.Metastore.Kind == "etcd" {
		limit, why = MaxInlineSizeEtcd, "with the etcd metastore every record goes through raft and stays in its history; keep commits far below etcd's request limit"
	}
	switch {
	case c.InlineMaxSize < 0:
		return &ConfigError{File: c.path, Field: "inline_max_size", Msg: "is negative (0 turns inline objects off)"}
	case c.InlineMaxSize > limit:
		return &ConfigError{File: c.path, Field: "inline_max_size",
			Msg: fmt.Sprintf("%d is above the cap of %d bytes (%s)", c.InlineMaxSize, limit, why)}
	}
	return nil
}

// inlineLimit is the largest object written inline under the current
// config (0: none). An inline object is one block, so the block size
// bounds it too.
func (s *Store) inlineLimit() int {
	return int(min(s.cfg.InlineMaxSize, int64(s.cfg.Policy.BlockSize)))
}

// maybeInline reads up to the inline limit plus one byte from *r. When it
// ends within the limit, the object is written inline and done is true
// (with its result). Otherwise *r becomes a reader that yields the bytes
// read so far and then the rest, for the striped path. A Writer's pipe
// gets here too: the read blocks until the writer has written more than the
// limit or closed, so the choice is made at Close for small objects.
func (s *Store) maybeInline(ctx context.Context, name string, r *io.Reader, o writeOpts) (info *ObjectInfo, done bool, err error) {
	limit := s.inlineLimit()
	if limit <= 0 {
		return nil, false, nil
	}
	buf := make([]byte, limit+1)
	n, ended, err := readFull(*r, buf)
	switch {
	case err != nil:
		return nil, true, err
	case ended:
		info, err := s.putInline(ctx, name, buf[:n], o)
		return info, true, err
	}
	*r = io.MultiReader(bytes.NewReader(buf), *r)
	return nil, false, nil
}

// putInline seals data and commits it inside the object's record: one
// synced batch that also drops the replaced version's stripes (their
// shards become garbage), as every commit does.
func (s *Store) putInline(ctx context.Context, name string, data []byte, o writeOpts) (*ObjectInfo, error) {
	pol := s.cfg.Policy
	codec, err := s.codec(pol)
	if err != nil {
		return nil, err
	}
	id := encoder.NewObjectID()
	sealed, sum, err := codec.SealInline(id, data)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	obj := &metastore.Object{
		Name: name, ID: id, Size: int64(len(data)), Created: now, Modified: now,
		Policy: toMetaPolicy(pol), Mode: o.mode, Attrs: o.attrs,
		Inline: sealed, InlineSum: sum,
	}
	if _, err := s.meta.PutObject(ctx, obj, nil, nil, nil); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return objectInfo(obj), nil
}

// blockCount is how many blocks the object being read has: an inline
// object is one block that lives in its record.
func (r *Reader) blockCount() int {
	if r.obj.IsInline() {
		return 1
	}
	return len(r.obj.Stripes)
}

// openInline verifies and opens an inline object's sealed block, kept in
// the record the Reader opened. A damaged record is reported as corrupt
// (never returned as data); there is no other copy to fall back on but the
// metadata snapshots (docs/operations.md).
func (r *Reader) openInline() ([]byte, error) {
	data, err := r.codec.OpenInline(encoder.ObjectID(r.obj.ID), r.obj.Inline, r.obj.InlineSum, int(r.obj.Size))
	switch {
	case err == nil:
		return data, nil
	case errors.Is(err, encoder.ErrAuth):
		return nil, fmt.Errorf("read %q (inline object): %w: %w", r.obj.Name, ErrAuth, err)
	default:
		return nil, fmt.Errorf("read %q (inline object): the data kept in its metadata record is damaged: %w", r.obj.Name, err)
	}
}
