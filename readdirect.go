package healstore

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/healstore/healstore/encoder"
)

// directWorkers is how many whole blocks one read fetches and decodes at
// once: one more than the cached path keeps in flight (the block read plus
// readAhead). Each block's shards are read from the backends and then
// decoded on the CPU; with four blocks under way the disk has reads queued
// while the cores decode, and a 64 MiB read of 16 MiB blocks goes in one
// wave instead of two. Each costs a block's worth of shard buffers.
const directWorkers = readAhead + 2

// readWhole decodes the run of whole blocks that starts at pos and that p
// covers straight into p, skipping the block cache and its copy: the
// shards are gathered and verified in pooled memory, and the seal opens
// from there into p. Up to directWorkers blocks are fetched and decoded at
// once. It returns 0 and no error when no such run starts at pos (pos not
// on a block boundary, a partial block, or a block already cached or being
// fetched ahead), leaving the read to the cached path. Otherwise it
// returns the bytes of the blocks decoded in order up to the first that
// failed, and that block's error. When sequential and p ends on a block
// boundary, the blocks after it are fetched ahead as the cached path does.
func (r *Reader) readWhole(ctx context.Context, p []byte, pos int64, sequential bool) (int, error) {
	bs := int64(r.pol.BlockSize)
	if pos%bs != 0 || r.noDirect {
		return 0, nil
	}
	first := uint64(pos / bs)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return 0, fmt.Errorf("read %q: %w", r.obj.Name, ErrClosed)
	}
	// The run: whole blocks of a striped object, none in the cache.
	var lens []int
	for b, off := first, int64(0); int(b) < len(r.obj.Stripes); b, off = b+1, off+bs {
		l := min(bs, r.obj.Size-int64(b)*bs)
		if l <= 0 || off+l > int64(len(p)) {
			break
		}
		if _, cached := r.cache[b]; cached {
			break
		}
		lens = append(lens, int(l))
	}
	r.mu.Unlock()
	if len(lens) == 0 {
		return 0, nil
	}

	// Stop when the caller's context or the Reader's ends.
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.ctx, cancel)()

	errs := make([]error, len(lens))
	var failed atomic.Int64 // lowest failed index + 1; 0: none yet
	sem := make(chan struct{}, directWorkers)
	var wg sync.WaitGroup
	for i, off := 0, 0; i < len(lens); off, i = off+lens[i], i+1 {
		sem <- struct{}{}
		if f := failed.Load(); f != 0 && int(f-1) < i {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, errs[i] = r.fetchStripe(dctx, first+uint64(i), p[off:off+lens[i]])
			if errs[i] != nil {
				// Blocks after the first failure would not be returned:
				// start no more. Those before it must finish.
				for {
					f := failed.Load()
					if (f != 0 && int(f-1) <= i) || failed.CompareAndSwap(f, int64(i)+1) {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	// Every block before the first failure was started and has finished.
	n := 0
	for i, l := range lens {
		if errs[i] != nil {
			return n, errs[i]
		}
		n += l
	}
	end := first + uint64(len(lens))
	if sequential && n == len(p) {
		for i := uint64(0); i < readAhead && int(end+i) < len(r.obj.Stripes); i++ {
			if _, err := r.start(end + i); err != nil {
				break
			}
		}
	}
	return n, nil
}

// writeWhole is WriteTo from a block boundary to the end of a striped
// object: up to directWorkers blocks are fetched and decoded at once, each
// straight into a recycled buffer (as readWhole decodes into the caller's
// memory), and written to w in order. A block already in the cache is
// taken from there. It stops at the first block that fails or the first
// write error, after the blocks still being decoded have ended, and
// returns the bytes written; the Reader's position moves by as much.
func (r *Reader) writeWhole(w io.Writer) (int64, error) {
	bs := r.pol.BlockSize
	first := uint64(r.off / int64(bs))
	// A damaged record may name more stripes than its size needs (the
	// extra ones are never read) or fewer (an error below, not a panic).
	nb := min(uint64(len(r.obj.Stripes)), uint64((r.obj.Size+int64(bs)-1)/int64(bs)))
	ctx, cancel := context.WithCancel(r.ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // the blocks under way end quickly once cancelled
	defer cancel()

	type job struct {
		b    uint64
		buf  *[]byte // nil when data came from the cache
		data []byte
		err  error
		done chan struct{}
	}
	// Jobs in block order. Each starts once it is queued, so at most
	// directWorkers are decoding while w takes the one before them.
	queue := make(chan *job, directWorkers-1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(queue)
		for b := first; b < nb; b++ {
			j := &job{b: b, done: make(chan struct{})}
			select {
			case queue <- j:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(j.done)
				r.mu.Lock()
				closed := r.closed
				_, cached := r.cache[j.b]
				r.mu.Unlock()
				if closed {
					j.err = fmt.Errorf("read %q: %w", r.obj.Name, ErrClosed)
					return
				}
				if cached {
					j.data, j.err = r.block(ctx, j.b, false)
					return
				}
				l := int(min(int64(bs), r.obj.Size-int64(j.b)*int64(bs)))
				j.buf = r.s.bufs.get(bs)
				j.data, j.err = r.fetchStripe(ctx, j.b, (*j.buf)[:l])
			}()
		}
	}()

	var total int64
	for j := range queue {
		<-j.done
		if j.err != nil {
			return total, j.err
		}
		in := r.off - int64(j.b)*int64(bs)
		if in < 0 || in >= int64(len(j.data)) {
			return total, fmt.Errorf("read %q: block %d holds %d bytes, expected more: %w", r.obj.Name, j.b, len(j.data), encoder.ErrCorrupt)
		}
		n, err := writeFull(w, j.data[in:])
		total += int64(n)
		r.off += int64(n)
		if j.buf != nil {
			r.s.bufs.put(j.buf)
		}
		if err != nil {
			return total, err
		}
	}
	if r.off < r.obj.Size {
		if err := context.Cause(ctx); err != nil {
			return total, fmt.Errorf("read %q: %w", r.obj.Name, err)
		}
		return total, fmt.Errorf("read %q: the record names %d stripes for %d bytes: %w", r.obj.Name, len(r.obj.Stripes), r.obj.Size, encoder.ErrCorrupt)
	}
	return total, nil
}

// decode opens block b from its fetched shards into dst (nil: new
// memory), verifying every shard it uses against sums.
func (r *Reader) decode(dst []byte, b uint64, sid encoder.StripeID, shards, sums [][]byte) ([]byte, error) {
	obj := encoder.ObjectID(r.obj.ID)
	if dst == nil {
		return r.codec.DecodeBlock(obj, b, sid, shards, sums)
	}
	n, err := r.codec.DecodeBlockTo(dst, obj, b, sid, shards, sums)
	if err != nil {
		return nil, err
	}
	return dst[:n], nil
}
