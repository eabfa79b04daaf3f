package fuse

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/encoder"
)

// Mount mounts the filesystem opts.Name of store at dir (creating it in
// the store on first use) and serves it until it is unmounted. Mounting as
// root uses mount(2) directly; other users need fusermount3. A stale mount
// left at dir by a mount process that died is detached first, and what it
// left in the write-back cache is uploaded. The store must stay open until
// Wait or Unmount returns.
func Mount(ctx context.Context, store *healstore.Store, dir string, opts Options) (*Mounted, error) {
	if opts.Logger == nil {
		opts.Logger = store.Logger()
	}
	name := opts.Name
	if name == "" {
		name = DefaultName
	}
	meta, err := store.FSMeta(name)
	if err != nil {
		return nil, err
	}
	return mountFS(ctx, storeKV{meta}, storeBlobs{store}, dir, opts)
}

// storeKV is the filesystem's metadata area in the store's metastore.
type storeKV struct{ m *healstore.FSMeta }

func (k storeKV) Get(ctx context.Context, key []byte) ([]byte, error) {
	v, err := k.m.Get(ctx, key)
	if errors.Is(err, healstore.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", errNoKey, err)
	}
	return v, err
}

func (k storeKV) Scan(ctx context.Context, prefix, start []byte, fn func(k, v []byte) error) error {
	return k.m.Scan(ctx, prefix, start, func(key, v []byte) error {
		err := fn(key, v)
		if errors.Is(err, errStop) {
			return healstore.ErrStopScan
		}
		return err
	})
}

func (k storeKV) Commit(ctx context.Context, b *kvBatch) error {
	var fb healstore.FSBatch
	for _, c := range b.conds {
		if c.missing {
			fb.ExpectMissing(c.key)
		} else {
			fb.ExpectValue(c.key, c.value)
		}
	}
	for _, op := range b.ops {
		if op.del {
			fb.Delete(op.key)
		} else {
			fb.Put(op.key, op.value)
		}
	}
	err := k.m.Commit(ctx, &fb)
	if errors.Is(err, healstore.ErrConflict) {
		return fmt.Errorf("%w: %w", errConflict, err)
	}
	return err
}

// storeBlobs keeps file blocks as healstore objects.
type storeBlobs struct{ s *healstore.Store }

func (b storeBlobs) PutBlock(ctx context.Context, name string, r io.Reader) error {
	_, err := b.s.Put(ctx, name, r)
	return err
}

func (b storeBlobs) GetBlock(ctx context.Context, name string, max int) ([]byte, error) {
	r, err := b.s.Open(ctx, name)
	if errors.Is(err, healstore.ErrNotFound) {
		return nil, errNoBlock
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	size := r.Size()
	if size > int64(max) {
		return nil, fmt.Errorf("object %s holds %d bytes, more than its block size %d", name, size, max)
	}
	buf := encoder.MakeLarge(int(size))
	n, err := r.ReadAtContext(ctx, buf, 0)
	if errors.Is(err, io.EOF) && int64(n) == size {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func (b storeBlobs) DeleteBlock(ctx context.Context, name string) error {
	err := b.s.Delete(ctx, name)
	if errors.Is(err, healstore.ErrNotFound) {
		return nil
	}
	return err
}

func (b storeBlobs) ListBlocks(ctx context.Context, prefix, after string, fn func(string) error) error {
	for {
		infos, next, err := b.s.List(ctx, prefix, after, 1000)
		if err != nil {
			return err
		}
		for _, info := range infos {
			if err := fn(info.Name); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		after = next
	}
}

// Capacity sums what the store's reachable, non-spare backends report and
// scales it by k/(k+m): the file bytes that fit. Backends that share one
// file system (local directories on one disk, as healstore init makes
// them) report the same Device and are counted once: each of them sees
// the whole disk, and summing them told df several times the free space
// there is.
func (b storeBlobs) Capacity(ctx context.Context) (capacity, error) {
	rep, err := b.s.Health(ctx)
	if err != nil {
		return capacity{}, err
	}
	c := capacity{Known: true}
	n := 0
	var sum backends.SpaceSum
	for _, be := range rep.Backends {
		if !be.Reachable || be.Spare {
			continue
		}
		n++
		if !be.Capacity.Known {
			c.Known = false
			continue
		}
		sum.Add(be.Capacity)
	}
	if n == 0 {
		c.Known = false
	}
	c.Total, c.Free = uint64(sum.Total), uint64(sum.Free)
	k, m := uint64(rep.Policy.K), uint64(rep.Policy.M)
	if k > 0 {
		c.Total = c.Total * k / (k + m)
		c.Free = c.Free * k / (k + m)
	}
	return c, nil
}
