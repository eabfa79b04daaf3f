package encoder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
)

// ErrStreamClosed is returned by StreamEncoder.Next after Close.
var ErrStreamClosed = errors.New("encoder: stream encoder closed")

// StreamEncoder cuts a reader into blocks and encodes them ahead of its
// caller on all cores. At most inflight blocks are read but not yet returned
// by Next, so memory stays bounded (about inflight × (block_size + stripe
// size)) whatever the size of the stream. Stripes come out in block order.
//
// An empty stream yields no stripe: Next returns io.EOF at once. Next and
// Close are for one goroutine (the consumer); the encoding runs on others.
type StreamEncoder struct {
	ctx    context.Context
	cancel context.CancelFunc
	order  chan *streamJob // jobs in block order, for Next
	tokens chan struct{}   // one per block read but not yet returned
	wg     sync.WaitGroup
	done   bool
	closed bool
}

type streamJob struct {
	block uint64
	st    *Stripe
	err   error
	ready chan struct{}
}

// NewStreamEncoder starts encoding r as object obj. inflight bounds the
// blocks read ahead (values below 1 mean GOMAXPROCS+1, enough to keep every
// core busy while the caller consumes one stripe). Blocks get fresh random
// stripe ids. Cancelling ctx or calling Close stops the background work.
func (c *Codec) NewStreamEncoder(ctx context.Context, obj ObjectID, r io.Reader, inflight int) *StreamEncoder {
	if inflight < 1 {
		inflight = runtime.GOMAXPROCS(0) + 1
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &StreamEncoder{
		ctx:    ctx,
		cancel: cancel,
		order:  make(chan *streamJob, inflight),
		tokens: make(chan struct{}, inflight),
	}
	workers := min(inflight, runtime.GOMAXPROCS(0))
	work := make(chan func(), inflight)
	for range workers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for f := range work {
				f()
			}
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(work)
		defer close(s.order)
		s.read(c, obj, r, work)
	}()
	return s
}

// read cuts r into blocks and queues them for encoding, in order. Each
// block is read straight into a BlockBuffer, so with neither compression
// nor encryption the bytes are never copied again: the stripe's data
// shards are the memory the reader filled.
func (s *StreamEncoder) read(c *Codec, obj ObjectID, r io.Reader, work chan<- func()) {
	for block := uint64(0); ; block++ {
		select {
		case s.tokens <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
		bb := c.NewBlockBuffer()
		n, err := bb.Fill(r)
		if n == 0 && err == io.EOF {
			bb.Free()
			return // end of stream on a block boundary
		}
		j := &streamJob{block: block, ready: make(chan struct{})}
		if err != nil && err != io.EOF {
			bb.Free()
			j.err = fmt.Errorf("encoder: read block %d of object %s: %w", block, obj, err)
			close(j.ready)
			s.order <- j // cannot block: one slot per token
			return
		}
		s.order <- j
		select {
		case work <- func() {
			st, shared, err := c.encodeBuffer(obj, block, NewStripeID(), bb)
			if shared {
				st.release = bb.Free
			} else {
				bb.Free()
			}
			j.st, j.err = st, err
			close(j.ready)
		}:
		case <-s.ctx.Done():
			bb.Free()
			return
		}
		if err == io.EOF {
			return // short block: the stream ended inside it
		}
	}
}

// Next returns the next block's number and stripe, io.EOF after the last
// one, or the first error (a read error, ctx's error, ErrStreamClosed).
// The caller owns the stripe (and may Release it once stored).
func (s *StreamEncoder) Next() (block uint64, st *Stripe, err error) {
	if s.closed {
		return 0, nil, ErrStreamClosed
	}
	if s.done {
		return 0, nil, io.EOF
	}
	// A ctx that has ended wins over a stripe that is already waiting:
	// select picks among ready cases at random, and a writer whose ctx
	// ended must not be handed another block to upload.
	if err := s.ctx.Err(); err != nil {
		return 0, nil, err
	}
	var j *streamJob
	var ok bool
	select {
	case j, ok = <-s.order:
	case <-s.ctx.Done():
		return 0, nil, s.ctx.Err()
	}
	if !ok {
		if err := s.ctx.Err(); err != nil {
			return 0, nil, err
		}
		s.done = true
		return 0, nil, io.EOF
	}
	select {
	case <-j.ready:
	case <-s.ctx.Done():
		return 0, nil, s.ctx.Err()
	}
	<-s.tokens
	if err := s.ctx.Err(); err != nil {
		j.st.Release() // ctx ended while Next waited: drop the stripe
		return 0, nil, err
	}
	if j.err != nil {
		s.done = true
		s.cancel()
		return 0, nil, j.err
	}
	return j.block, j.st, nil
}

// Close stops the background work and waits for it to end. Stripes not yet
// returned by Next are dropped. Close is idempotent.
func (s *StreamEncoder) Close() {
	if s.closed {
		return
	}
	s.closed = true
	s.cancel()
	// Unblock the reader if it waits for a token or an order slot.
	for {
		select {
		case <-s.tokens:
			continue
		case _, ok := <-s.order:
			if ok {
				continue
			}
		}
		break
	}
	s.wg.Wait()
}
