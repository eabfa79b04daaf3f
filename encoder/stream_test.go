package encoder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
)

// drain reads a stream encoder to the end, decoding every stripe, and
// returns the object's bytes.
func drain(t *testing.T, c *Codec, obj ObjectID, s *StreamEncoder) []byte {
	t.Helper()
	var out []byte
	for want := uint64(0); ; want++ {
		blk, st, err := s.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if blk != want {
			t.Fatalf("block %d came out as block %d", want, blk)
		}
		data, err := c.DecodeBlock(obj, blk, st.ID, st.Shards, st.Sums)
		if err != nil {
			t.Fatalf("block %d: %v", blk, err)
		}
		out = append(out, data...)
		st.Release()
	}
}

func TestStreamRoundTrip(t *testing.T) {
	rng, _ := seedRand(t)
	sizes := []int{0, 1, testBlock - 1, testBlock, testBlock + 1, 5*testBlock + 3}
	for _, p := range allPolicies(4, 2, testBlock)[:12] {
		c := newCodec(t, p)
		for _, size := range sizes {
			for _, inflight := range []int{0, 1, 3} {
				name := fmt.Sprintf("%s/%d/inflight %d", p, size, inflight)
				data := fill(rng, size)
				obj := NewObjectID()
				// A reader that returns short reads, as pipes and sockets do.
				s := c.NewStreamEncoder(context.Background(), obj, iotest.HalfReader(bytes.NewReader(data)), inflight)
				got := drain(t, c, obj, s)
				if !bytes.Equal(got, data) {
					t.Fatalf("%s: stream round trip differs (%d bytes, want %d)", name, len(got), len(data))
				}
				if _, _, err := s.Next(); err != io.EOF {
					t.Fatalf("%s: Next after the end = %v, want io.EOF", name, err)
				}
				s.Close()
				if _, _, err := s.Next(); !errors.Is(err, ErrStreamClosed) {
					t.Fatalf("%s: Next after Close = %v", name, err)
				}
			}
		}
	}
}

func TestStreamReadError(t *testing.T) {
	c := newCodec(t, Policy{K: 2, M: 1, BlockSize: 1000, Compression: CompressionNone, Encryption: EncryptionNone, Checksum: ChecksumXXH3})
	boom := errors.New("disk on fire")
	r := io.MultiReader(bytes.NewReader(make([]byte, 2500)), iotest.ErrReader(boom))
	s := c.NewStreamEncoder(context.Background(), ObjectID{}, r, 2)
	defer s.Close()
	for want := range uint64(2) {
		blk, _, err := s.Next()
		if err != nil || blk != want {
			t.Fatalf("block %d before the error: %d, %v", want, blk, err)
		}
	}
	if _, _, err := s.Next(); !errors.Is(err, boom) {
		t.Fatalf("Next = %v, want the read error", err)
	}
}

// slowReader never ends: it hands out zeros, a little at a time.
type slowReader struct{ reads atomic.Int64 }

func (r *slowReader) Read(p []byte) (int, error) {
	r.reads.Add(1)
	time.Sleep(time.Millisecond)
	return copy(p, make([]byte, min(len(p), 512))), nil
}

func TestStreamCancelAndClose(t *testing.T) {
	c := newCodec(t, Policy{K: 2, M: 1, BlockSize: 4096, Compression: CompressionNone, Encryption: EncryptionNone, Checksum: ChecksumXXH3})
	before := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	s := c.NewStreamEncoder(ctx, ObjectID{}, &slowReader{}, 2)
	if _, _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, _, err := s.Next(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next after cancel = %v", err)
	}
	s.Close()

	// Close without draining stops the read-ahead too.
	r := &slowReader{}
	s = c.NewStreamEncoder(context.Background(), ObjectID{}, r, 3)
	if _, _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.Close()
	reads := r.reads.Load()
	time.Sleep(50 * time.Millisecond)
	if r.reads.Load() != reads {
		t.Fatal("the reader is still read after Close")
	}
	// Goroutines are gone (allow the runtime a moment to reap them).
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after Close, %d before", n, before)
	}
}

// Once ctx is cancelled Next returns ctx's error, even when the next
// stripe is already encoded and waiting: Next's select must not pick the
// stripe at random (a writer whose ctx ended would upload one more block).
func TestStreamNextAfterCancelWithStripeReady(t *testing.T) {
	c := newCodec(t, Policy{K: 2, M: 1, BlockSize: 4096, Compression: CompressionNone, Encryption: EncryptionNone, Checksum: ChecksumXXH3})
	const inflight = 2
	for i := range 50 {
		ctx, cancel := context.WithCancel(context.Background())
		s := c.NewStreamEncoder(ctx, ObjectID{}, &genReader{size: 1 << 20}, inflight)
		if _, st, err := s.Next(); err != nil {
			t.Fatal(err)
		} else {
			st.Release()
		}
		// Once blocks 1 and 2 are queued the reader waits for a token, so
		// the queue can be emptied and refilled in order without a race;
		// meanwhile wait until both are encoded.
		deadline := time.Now().Add(10 * time.Second)
		for len(s.order) < inflight {
			if time.Now().After(deadline) {
				t.Fatal("the read-ahead never filled up")
			}
			time.Sleep(time.Millisecond)
		}
		var queued []*streamJob
		for range inflight {
			queued = append(queued, <-s.order)
		}
		for _, j := range queued {
			select {
			case <-j.ready:
			case <-time.After(10 * time.Second):
				t.Fatalf("block %d was never encoded", j.block)
			}
			s.order <- j
		}
		cancel()
		if _, _, err := s.Next(); !errors.Is(err, context.Canceled) {
			t.Fatalf("try %d: Next after cancel with a stripe ready = %v, want context.Canceled", i, err)
		}
		s.Close()
	}
}

// genReader generates a deterministic stream without holding it: byte i is
// genTable[i % len(genTable)], a period prime to the block size so no two
// blocks are alike, and the decoded stream can be checked as it goes.
type genReader struct{ off, size int64 }

var genTable = func() []byte {
	t := make([]byte, 65521)
	for i := range t {
		t[i] = byte(i*2654435761>>13) ^ byte(i>>9)
	}
	return t
}()

func genByte(i int64) byte { return genTable[i%int64(len(genTable))] }

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), g.size-g.off)]
	n := 0
	for n < len(p) {
		n += copy(p[n:], genTable[(g.off+int64(n))%int64(len(genTable)):])
	}
	g.off += int64(n)
	return n, nil
}

// TestStream1GiBBoundedMemory streams 1 GiB through the encoder and checks
// the heap never holds more than the in-flight blocks need.
func TestStream1GiBBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB stream skipped in -short mode")
	}
	const size = 1 << 30
	p := Policy{K: 4, M: 2, BlockSize: 4 << 20, Compression: CompressionNone, Encryption: EncryptionNone, Checksum: ChecksumXXH3}
	c := newCodec(t, p)
	const inflight = 4
	s := c.NewStreamEncoder(context.Background(), ObjectID{}, &genReader{size: size}, inflight)
	defer s.Close()

	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	var total int64
	for {
		blk, st, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		// Check the data shards hold the stream (no decoding needed when
		// all data shards are present); fully decode every 32nd block.
		if blk%32 == 0 {
			data, err := c.DecodeBlock(ObjectID{}, blk, st.ID, st.Shards, st.Sums)
			if err != nil {
				t.Fatal(err)
			}
			for i, b := range data {
				if b != genByte(int64(blk)*int64(p.BlockSize)+int64(i)) {
					t.Fatalf("block %d byte %d differs", blk, i)
				}
			}
		}
		total += int64(st.DataLen)
		st.Release()
	}
	close(stop)
	<-sampled
	if total != size {
		t.Fatalf("streamed %d bytes, want %d", total, size)
	}
	// In flight: 4 stripes of 6 MiB, plus the one being checked and its
	// decoded block; allow the GC its slack (GOGC=100 doubles the live heap).
	// Unbounded read-ahead would hold the 1.5 GiB of stripes instead.
	limit := uint64(128 << 20)
	t.Logf("peak heap in use %d MiB for a 1 GiB stream (limit %d MiB)", peak.Load()>>20, limit>>20)
	if peak.Load() > limit {
		t.Fatalf("peak heap %d MiB exceeds %d MiB: memory is not bounded by in-flight stripes", peak.Load()>>20, limit>>20)
	}
}

func TestBlockRange(t *testing.T) {
	cases := []struct {
		off, n      int64
		first, last uint64
	}{
		{0, 1, 0, 0}, {0, 100, 0, 0}, {99, 1, 0, 0}, {99, 2, 0, 1}, {100, 1, 1, 1},
		{50, 200, 0, 2}, {250, 0, 2, 2}, {0, 300, 0, 2}, {0, 301, 0, 3},
	}
	for _, tc := range cases {
		f, l := BlockRange(100, tc.off, tc.n)
		if f != tc.first || l != tc.last {
			t.Errorf("BlockRange(100, %d, %d) = %d, %d; want %d, %d", tc.off, tc.n, f, l, tc.first, tc.last)
		}
	}
}

func TestReadAtTouchesOnlyCoveredBlocks(t *testing.T) {
	rng, _ := seedRand(t)
	const bs = 1000
	for _, size := range []int64{0, 1, 999, 1000, 1001, 4567} {
		obj := make([]byte, size)
		for i := range obj {
			obj[i] = byte(rng.Uint32())
		}
		var fetched []uint64
		fetch := func(ctx context.Context, b uint64) ([]byte, error) {
			fetched = append(fetched, b)
			start := int64(b) * bs
			return obj[start:min(start+bs, size)], nil
		}
		for range 50 {
			off := rng.Int64N(size + 2)
			p := make([]byte, rng.IntN(2500))
			fetched = nil
			n, err := ReadAt(context.Background(), p, off, size, bs, fetch)
			want := max(0, min(int64(len(p)), size-off))
			if int64(n) != want || !bytes.Equal(p[:n], obj[min(off, size):min(off, size)+want]) {
				t.Fatalf("size %d ReadAt(%d, %d) = %d, %v", size, len(p), off, n, err)
			}
			if (int64(len(p)) > want) != (err == io.EOF) || (err != nil && err != io.EOF) {
				t.Fatalf("size %d ReadAt(%d, %d): err %v", size, len(p), off, err)
			}
			var wantBlocks []uint64
			if want > 0 {
				f, l := BlockRange(bs, off, want)
				for b := f; b <= l; b++ {
					wantBlocks = append(wantBlocks, b)
				}
			}
			if fmt.Sprint(fetched) != fmt.Sprint(wantBlocks) {
				t.Fatalf("size %d ReadAt(%d, %d) fetched blocks %v, want %v", size, len(p), off, fetched, wantBlocks)
			}
		}
	}
	// A block of the wrong length is corruption, not silently short data.
	_, err := ReadAt(context.Background(), make([]byte, 10), 0, 2000, bs, func(context.Context, uint64) ([]byte, error) {
		return make([]byte, 999), nil
	})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short block: %v, want ErrCorrupt", err)
	}
}
