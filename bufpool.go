package healstore

import (
	"io"
	"sync"
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
	b := make([]byte, size)
	return &b
}

// put gives back a buffer get returned; it must not be used afterwards.
func (p *bufPool) put(b *[]byte) {
	if sp, ok := p.pools.Load(len(*b)); ok {
		sp.(*sync.Pool).Put(b)
	}
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
