package healstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/metastore"
)

const testBS = 64 << 10 // testOpts' default block size

// putRandom stores size random bytes under name and returns them.
func putRandom(t *testing.T, s *Store, name string, size int) []byte {
	t.Helper()
	data := randBytes(rand.New(rand.NewPCG(uint64(size), 7)), size)
	if _, err := s.Put(context.Background(), name, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return data
}

// loseShards deletes shards idx of stripe number blk of object name.
func loseShards(t *testing.T, s *Store, name string, blk int, idx ...int) {
	t.Helper()
	st := stripesOf(t, s, name)[blk]
	for _, i := range idx {
		b, _ := s.Backend(st.Shards[i].Backend)
		if err := b.Delete(context.Background(), st.Shards[i].Key); err != nil {
			t.Fatal(err)
		}
	}
}

// flipShard flips one bit in the middle of shard idx of stripe number blk
// of object name, on its backend.
func flipShard(t *testing.T, s *Store, name string, blk, idx int) {
	t.Helper()
	ctx := context.Background()
	sh := stripesOf(t, s, name)[blk].Shards[idx]
	b, _ := s.Backend(sh.Backend)
	raw, err := b.Get(ctx, sh.Key)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 0x40
	if err := b.Put(ctx, sh.Key, raw); err != nil {
		t.Fatal(err)
	}
}

// A read covering whole blocks decodes them straight into the caller's
// buffer, outside the cache, and still verifies every shard against the
// metastore (invariant 3): a flipped shard, a shard that is intact but not
// the one recorded, and a lost shard each count as missing, the block is
// decoded around them and the stripe is queued for repair.
func TestReadWholeBlocksVerifiesShards(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	data := putRandom(t, s, "obj", 5*testBS+100)
	sts := stripesOf(t, s, "obj")

	// Block 0: a bit flip in data shard 0.
	flipShard(t, s, "obj", 0, 0)
	// Block 2: data shard 1 is not the shard the metastore recorded.
	sts[2].Shards[1].Sum = encoder.Sum(s.cfg.Policy.Checksum, []byte("some other shard"))
	if err := s.meta.UpdateStripe(ctx, sts[2], nil); err != nil {
		t.Fatal(err)
	}
	// Block 3: data shard 2 is lost.
	loseShards(t, s, "obj", 3, 2)

	r, err := s.Open(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The first read ends within the last block, which it does not cover
	// whole, so that one goes through the cache.
	buf := make([]byte, len(data))
	if n, err := io.ReadFull(r, buf[:5*testBS+50]); err != nil || n != 5*testBS+50 {
		t.Fatalf("read %d bytes, err %v", n, err)
	}
	if n, err := io.ReadFull(r, buf[5*testBS+50:]); err != nil || n != 50 || !bytes.Equal(buf, data) {
		t.Fatalf("read %d of the last 50 bytes, err %v, equal %v", n, err, bytes.Equal(buf, data))
	}
	r.mu.Lock()
	for blk := range uint64(5) {
		if _, ok := r.cache[blk]; ok {
			t.Errorf("whole block %d went through the cache", blk)
		}
	}
	if _, ok := r.cache[5]; !ok {
		t.Errorf("the partial last block did not go through the cache")
	}
	r.mu.Unlock()

	got := map[[16]byte]string{}
	for _, it := range queue(t, s) {
		got[it.Stripe] = it.Reason
	}
	if !strings.Contains(got[sts[0].ID], "corrupt [0]") || !strings.Contains(got[sts[2].ID], "corrupt [1]") ||
		!strings.Contains(got[sts[3].ID], "missing [2]") || len(got) != 3 {
		t.Fatalf("queued %v", got)
	}
}

// slowBackend delays Get of keys that contain slow.
type slowBackend struct {
	backends.Backend
	slow  string
	delay time.Duration
}

func (b slowBackend) Get(ctx context.Context, key string) ([]byte, error) {
	if strings.Contains(key, b.slow) {
		select {
		case <-time.After(b.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return b.Backend.Get(ctx, key)
}

// slowFirstBlock makes every backend slow to return the shards of block 0
// of name, so that block arrives after the others, and returns name's
// stripes.
func slowFirstBlock(t *testing.T, s *Store, name string) []*metastore.Stripe {
	t.Helper()
	sts := stripesOf(t, s, name)
	slow := strings.TrimPrefix(sts[0].Shards[0].Key, "shards/")
	slow = slow[:strings.IndexByte(slow, '.')]
	for _, bk := range s.cfg.Backends {
		setBackend(t, s, bk.Name, func(b backends.Backend) backends.Backend {
			return slowBackend{Backend: b, slow: slow, delay: 150 * time.Millisecond}
		})
	}
	return sts
}

// Whole blocks are decoded several at a time and may finish in any order;
// the read returns the blocks in order up to the first that failed, all
// of them decoded, and that block's error.
func TestReadWholeBlocksOrder(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	data := putRandom(t, s, "obj", 8*testBS)
	// Block 0 arrives last: its shards are slow on every backend.
	slowFirstBlock(t, s, "obj")
	read := func(off int64, n int) ([]byte, int, error) {
		t.Helper()
		r, err := s.Open(ctx, "obj")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		buf := make([]byte, n)
		k, err := r.ReadAt(buf, off)
		return buf, k, err
	}
	buf, n, err := read(0, len(data))
	if err != nil || n != len(data) || !bytes.Equal(buf, data) {
		t.Fatalf("all blocks, block 0 last: read %d, err %v, equal %v", n, err, bytes.Equal(buf, data))
	}

	// Block 5 cannot be read (m+1 shards lost): blocks 0-4 come back, the
	// slow block 0 included, with block 5's error.
	loseShards(t, s, "obj", 5, 0, 1, 2)
	buf, n, err = read(0, len(data))
	if !errors.Is(err, ErrInsufficientBackends) || n != 5*testBS || !bytes.Equal(buf[:n], data[:n]) {
		t.Fatalf("block 5 lost: read %d, err %v, want %d bytes and ErrInsufficientBackends", n, err, 5*testBS)
	}
	// Block 2 lost too: the first failure decides, whatever finishes first.
	loseShards(t, s, "obj", 2, 3, 4, 5)
	buf, n, err = read(0, len(data))
	if !errors.Is(err, ErrInsufficientBackends) || !strings.Contains(err.Error(), "block 2") || n != 2*testBS || !bytes.Equal(buf[:n], data[:n]) {
		t.Fatalf("blocks 2 and 5 lost: read %d, err %v, want %d bytes and block 2's error", n, err, 2*testBS)
	}
	// A read of whole blocks after the lost ones succeeds.
	buf, n, err = read(6*testBS, 2*testBS)
	if err != nil || n != 2*testBS || !bytes.Equal(buf, data[6*testBS:]) {
		t.Fatalf("blocks 6-7: read %d, err %v", n, err)
	}
}

// Reads at any offset and length return the same bytes through the direct
// path as through the cache, and sequential whole-block reads leave the
// next blocks fetched ahead.
func TestReadAtDirectMatchesCached(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	size := 6*testBS + 1234
	data := putRandom(t, s, "obj", size)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, noDirect := range []bool{false, true} {
		r, err := s.Open(ctx, "obj")
		if err != nil {
			t.Fatal(err)
		}
		r.noDirect = noDirect
		for range 60 {
			off := rng.Int64N(int64(size))
			if rng.IntN(2) == 0 {
				off -= off % testBS // on a block boundary
			}
			buf := make([]byte, rng.IntN(3*testBS+10)+1)
			n, err := r.ReadAt(buf, off)
			want := data[off:min(off+int64(len(buf)), int64(size))]
			if n != len(want) || !bytes.Equal(buf[:n], want) || (n < len(buf)) != (err == io.EOF) || (err != nil && err != io.EOF) {
				t.Fatalf("noDirect %v: ReadAt(%d bytes at %d) = %d, %v; want %d", noDirect, len(buf), off, n, err, len(want))
			}
		}
		r.Close()
	}

	// Sequential reads of two whole blocks each: after each, the next
	// blocks are being fetched ahead.
	r, err := s.Open(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 2*testBS)
	if _, err := io.ReadFull(r, buf); err != nil || !bytes.Equal(buf, data[:2*testBS]) {
		t.Fatalf("first read: %v", err)
	}
	r.mu.Lock()
	_, ahead2 := r.cache[2]
	_, ahead3 := r.cache[3]
	r.mu.Unlock()
	if !ahead2 || !ahead3 {
		t.Fatalf("blocks 2 and 3 not fetched ahead after a sequential read of blocks 0-1")
	}
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(rest, data[2*testBS:]) {
		t.Fatalf("rest: %v", err)
	}
}

// Closing the Reader stops a read of whole blocks under way.
func TestReadWholeBlocksClose(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	putRandom(t, s, "obj", 4*testBS)
	for _, bk := range s.cfg.Backends {
		setBackend(t, s, bk.Name, func(b backends.Backend) backends.Backend {
			return slowBackend{Backend: b, slow: "shards/", delay: 10 * time.Second}
		})
	}
	r, err := s.Open(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	var closed atomic.Bool
	time.AfterFunc(100*time.Millisecond, func() { closed.Store(true); r.Close() })
	start := time.Now()
	n, err := r.ReadAt(make([]byte, 4*testBS), 0)
	if err == nil || n != 0 || !closed.Load() || time.Since(start) > 5*time.Second {
		t.Fatalf("read after close: %d, %v after %v", n, err, time.Since(start))
	}
}

// io.Copy (WriteTo) decodes whole blocks outside the cache, several at a
// time, and writes them in order: block 0, slow on every backend, arrives
// last; a corrupt and a lost shard are decoded around and queued for
// repair (invariant 3 on this path too); a copy from inside a block takes
// that block through the cache and the rest directly; a block that cannot
// be read ends the copy after every block before it, with its error.
func TestWriteToWholeBlocks(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	data := putRandom(t, s, "obj", 8*testBS+100)
	sts := slowFirstBlock(t, s, "obj")
	// Block 1: a bit flip in data shard 0. Block 3: data shard 2 lost.
	flipShard(t, s, "obj", 1, 0)
	loseShards(t, s, "obj", 3, 2)

	copyFrom := func(off int64) ([]byte, int64, *Reader, error) {
		t.Helper()
		r, err := s.Open(ctx, "obj")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		n, err := io.Copy(&out, r)
		return out.Bytes(), n, r, err
	}
	got, n, r, err := copyFrom(0)
	if err != nil || n != int64(len(data)) || !bytes.Equal(got, data) {
		t.Fatalf("copy: %d bytes, %v, equal %v", n, err, bytes.Equal(got, data))
	}
	r.mu.Lock()
	for blk := range uint64(9) {
		if _, ok := r.cache[blk]; ok {
			t.Errorf("block %d went through the cache", blk)
		}
	}
	r.mu.Unlock()
	if pos, _ := r.Seek(0, io.SeekCurrent); pos != int64(len(data)) {
		t.Errorf("position after the copy: %d", pos)
	}
	r.Close()
	queued := map[[16]byte]string{}
	for _, it := range queue(t, s) {
		queued[it.Stripe] = it.Reason
	}
	if !strings.Contains(queued[sts[1].ID], "corrupt [0]") || !strings.Contains(queued[sts[3].ID], "missing [2]") || len(queued) != 2 {
		t.Fatalf("queued %v", queued)
	}

	// From inside block 2: its rest through the cache, then blocks 3-8.
	off := int64(2*testBS + 777)
	got, n, r, err = copyFrom(off)
	if err != nil || n != int64(len(data))-off || !bytes.Equal(got, data[off:]) {
		t.Fatalf("copy from %d: %d bytes, %v", off, n, err)
	}
	r.mu.Lock()
	_, c2 := r.cache[2]
	_, c3 := r.cache[3]
	_, c4 := r.cache[4]
	r.mu.Unlock()
	if !c2 || c3 || c4 {
		t.Errorf("from inside block 2: cached block 2 %v (want true), 3 %v and 4 %v (want false)", c2, c3, c4)
	}
	r.Close()

	// Block 5 unreadable: blocks 0-4 written, then block 5's error.
	loseShards(t, s, "obj", 5, 0, 1, 3)
	got, n, r, err = copyFrom(0)
	r.Close()
	if !errors.Is(err, ErrInsufficientBackends) || !strings.Contains(err.Error(), "block 5") || n != 5*testBS || !bytes.Equal(got, data[:5*testBS]) {
		t.Fatalf("block 5 lost: copied %d, %v; want %d bytes and block 5's error", n, err, 5*testBS)
	}
}

// A writer's error ends the copy at once; Close ends a copy under way.
func TestWriteToStops(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	data := putRandom(t, s, "obj", 6*testBS)
	r, err := s.Open(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	w := &limitWriter{left: 2*testBS + 5}
	n, err := io.Copy(w, r)
	if !errors.Is(err, io.ErrShortWrite) || n != 2*testBS+5 || !bytes.Equal(w.buf.Bytes(), data[:n]) {
		t.Fatalf("writer failing after %d bytes: copied %d, %v", 2*testBS+5, n, err)
	}
	r.Close()

	for _, bk := range s.cfg.Backends {
		setBackend(t, s, bk.Name, func(b backends.Backend) backends.Backend {
			return slowBackend{Backend: b, slow: "shards/", delay: 10 * time.Second}
		})
	}
	r, err = s.Open(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(100*time.Millisecond, func() { r.Close() })
	start := time.Now()
	n, err = io.Copy(io.Discard, r)
	if err == nil || n != 0 || time.Since(start) > 5*time.Second {
		t.Fatalf("copy after close: %d, %v after %v", n, err, time.Since(start))
	}
}

// limitWriter keeps left bytes, then fails.
type limitWriter struct {
	buf  bytes.Buffer
	left int
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		w.buf.Write(p[:w.left])
		n := w.left
		w.left = 0
		return n, io.ErrShortWrite
	}
	w.left -= len(p)
	return w.buf.Write(p)
}

// shortWriter takes at most max bytes of each write and reports no error,
// breaking io.Writer's contract.
type shortWriter struct{ max int }

func (w shortWriter) Write(p []byte) (int, error) { return min(len(p), w.max), nil }

// WriteTo reports a writer's short write as one (io.ErrShortWrite), not as
// damaged data, and a record whose stripes do not match its size as
// corrupt, without panicking.
func TestWriteToShortWriteAndDamagedRecord(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	putRandom(t, s, "obj", 6*testBS)
	open := func() *Reader {
		r, err := s.Open(ctx, "obj")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	if n, err := open().WriteTo(shortWriter{max: 100}); !errors.Is(err, io.ErrShortWrite) || n != 100 {
		t.Fatalf("short writer: %d, %v; want 100, io.ErrShortWrite", n, err)
	}
	// The cached path too (an inline object, a copy from mid-block).
	putRandom(t, s, "small", 1000)
	r, err := s.Open(ctx, "small")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n, err := r.WriteTo(shortWriter{max: 0}); !errors.Is(err, io.ErrShortWrite) || n != 0 {
		t.Fatalf("inline object, writer taking nothing: %d, %v; want 0, io.ErrShortWrite", n, err)
	}
	mid := open()
	if _, err := mid.Seek(10, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if n, err := mid.WriteTo(shortWriter{max: 7}); !errors.Is(err, io.ErrShortWrite) || n != 7 {
		t.Fatalf("copy from mid-block, short writer: %d, %v; want 7, io.ErrShortWrite", n, err)
	}
	for _, size := range []int64{7 * testBS, 2*testBS + 10} {
		r := open()
		r.obj.Size = size
		if _, err := r.WriteTo(io.Discard); !errors.Is(err, encoder.ErrCorrupt) {
			t.Fatalf("record of %d bytes over 6 stripes: %v, want ErrCorrupt", size, err)
		}
	}
}
