package healstore

import (
	"io"
	"math/bits"
	"sync"

	"github.com/healstore/healstore/encoder"
)

// bufPool recycles large byte buffers by size (one sync.Pool per size), so
// long copies and many small puts neither allocate nor zero a block's
// worth of memory each time. The store owns one; its users are the
// one-block put path (write.go) and WriteTo's decoding (readdirect.go).
type bufPool struct {
	pools sync.Map // int -> *sync.Pool of *[]byte
}

// get returns a buffer of len size.
func (p *bufPool) get(size int) *[]byte {
	sp, ok := p.pools.Load(size)
	if !ok {
		sp, _ = p.pools.LoadOrStore(size, &sync.Pool{})
	}
	if b, ok := sp.(*sync.Pool).Get().(*[]byte); ok {
		return b
	}
	b := encoder.MakeLarge(size)
	return &b
}

// put gives back a buffer get returned; it must not be used afterwards.
func (p *bufPool) put(b *[]byte) {
	if sp, ok := p.pools.Load(len(*b)); ok {
		sp.(*sync.Pool).Put(b)
	}
}

// getShard returns n bytes (Reader.fetchStripe's Alloc) from the pool of
// n's size class, so shards of nearby sizes share a pool: shards come in
// as many sizes as objects do, and a pool per size would stay for good,
// one more for every size ever read. Give it back with putShard.
func (p *bufPool) getShard(n int) []byte {
	return (*p.get(sizeClass(n)))[:n]
}

// putShard gives back memory getShard returned (any prefix of it, whole
// again by its capacity). It must not be used afterwards.
func (p *bufPool) putShard(b []byte) {
	b = b[:cap(b)]
	p.put(&b)
}

// sizeClass rounds n up to one of eight sizes per power of two (at most
// an eighth more; 4 KiB at least).
func sizeClass(n int) int {
	if n <= 4096 {
		return 4096
	}
	step := 1 << (bits.Len(uint(n-1)) - 4)
	return (n + step - 1) &^ (step - 1)
}

// writeFull writes p to w and reports a writer that takes less without an
// error as io.ErrShortWrite, as io.Copy does.
func writeFull(w io.Writer, p []byte) (int, error) {
	n, err := w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	return n, err
}
