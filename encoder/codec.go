package encoder

import (
	"crypto/rand"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/reedsolomon"
)

// Codec seals and erasure-codes blocks under one policy and master key.
// It is safe for concurrent use. A call uses the cores that other calls of
// the same Codec leave idle, so one block at a time still runs on all cores
// while many blocks at once run one per core without contention.
type Codec struct {
	p         Policy
	policyStr string
	alg       checksumAlg
	cipher    cipherID
	master    []byte
	rs        reedsolomon.Encoder
	zenc      *zstd.Encoder
	zdec      *zstd.Decoder

	// rand supplies nonces. Tests swap it for a fixed stream to produce the
	// golden shard set; nothing else may.
	rand io.Reader

	active    atomic.Int32 // calls in progress, to size each call's parallelism
	scratch   sync.Pool    // *[]byte: sealing buffers
	shardBufs sync.Pool    // *[]byte: full-size stripe buffers
	fullBuf   int          // bytes of a full-block stripe buffer
}

// NewCodec returns a Codec for policy p. masterKey must be 32 bytes, or nil
// when p.Encryption is "none". The key is copied; per-object keys are
// derived from it and it never leaves the Codec.
func NewCodec(p Policy, masterKey []byte) (*Codec, error) {
	if err := p.Validate(0); err != nil {
		return nil, err
	}
	c := &Codec{
		p:         p,
		policyStr: p.String(),
		alg:       checksumIDs[p.Checksum],
		cipher:    cipherIDs[p.Encryption],
		rand:      rand.Reader,
	}
	c.fullBuf = (p.K+p.M)*slotLen(p.MaxShardSize()-HeaderSize) + ShardAlign
	if c.cipher != cipherNone {
		if len(masterKey) != 32 {
			return nil, fmt.Errorf("encoder: encryption %s needs a 32-byte master key, got %d bytes", p.Encryption, len(masterKey))
		}
		c.master = append([]byte(nil), masterKey...)
	}
	// One goroutine per call: the codec parallelises across columns and
	// blocks itself, and small column pieces are not worth splitting.
	rs, err := reedsolomon.New(p.K, p.M, reedsolomon.WithMaxGoroutines(1))
	if err != nil {
		return nil, fmt.Errorf("encoder: reed-solomon %d+%d: %w", p.K, p.M, err)
	}
	c.rs = rs
	if p.Compression == CompressionZstd {
		procs := runtime.GOMAXPROCS(0)
		c.zenc, err = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(procs),
			zstd.WithEncoderCRC(false), // shards carry checksums; the AEAD authenticates
			zstd.WithZeroFrames(true))
		if err != nil {
			return nil, fmt.Errorf("encoder: zstd encoder: %w", err)
		}
		// Bound what a hostile or broken frame can make the decoder
		// allocate: a block never decodes to more than BlockSize bytes.
		c.zdec, err = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(procs),
			zstd.WithDecoderMaxMemory(uint64(max(p.BlockSize, 64<<10))),
			zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			return nil, fmt.Errorf("encoder: zstd decoder: %w", err)
		}
	}
	return c, nil
}

// Policy returns the codec's policy.
func (c *Codec) Policy() Policy { return c.p }

// Stripe is one sealed, erasure-coded block.
type Stripe struct {
	ID      StripeID
	Shards  [][]byte // K+M full shards: 128-byte header + payload
	Sums    [][]byte // Sum of each full shard (header+payload); what the metastore keeps
	DataLen int      // plaintext length of the block

	release func() // gives the memory back; nil once released or if not pooled
}

// Release hands the stripe's memory back to its Codec for the next
// EncodeBlock. Call it once every shard is stored and nothing reads Shards
// any more; it is optional (the garbage collector frees unreleased stripes)
// but saves allocating and zeroing megabytes per block.
func (s *Stripe) Release() {
	if s == nil || s.release == nil {
		return
	}
	s.release()
	s.release = nil
	s.Shards = nil
}

// stripeBuf returns a buffer of n bytes for a stripe's shards, starting
// on a ShardAlign boundary when it holds a shard that slotLen aligns.
// Buffers for blocks near full size come from a pool; a small block gets
// its own allocation rather than pinning a full-size buffer.
func (c *Codec) stripeBuf(n int) ([]byte, *[]byte) {
	if n < c.fullBuf/2 {
		if n < AlignedShardMin {
			return make([]byte, n), nil // no shard here is aligned
		}
		return alignedSlice(make([]byte, n+ShardAlign), n), nil
	}
	p := c.fullStripeBuf()
	return alignedSlice(*p, n), p
}

// fullStripeBuf returns a pooled full-size stripe buffer (fullBuf bytes,
// ShardAlign of them spare for alignment).
func (c *Codec) fullStripeBuf() *[]byte {
	if p, ok := c.shardBufs.Get().(*[]byte); ok {
		return p
	}
	b := MakeLarge(c.fullBuf)
	return &b
}

// alignedSlice returns n bytes of b starting at its first ShardAlign
// boundary. b must have ShardAlign-1 bytes to spare. (Go allocates large
// buffers on 8 KiB pages, so this rarely skips anything; it is not
// promised, hence the spare bytes.)
func alignedSlice(b []byte, n int) []byte {
	off := 0
	if len(b) > 0 {
		if r := int(uintptr(unsafe.Pointer(&b[0])) % ShardAlign); r != 0 {
			off = ShardAlign - r
		}
	}
	return b[off : off+n]
}

// EncodeBlock seals data (block number block of object obj; compress, then
// encrypt with the object's key, binding object id, block index, stripe id
// and policy as associated data) and Reed-Solomon codes it into K+M shards
// with headers and checksums. data may be empty (an empty block still makes
// a stripe) and at most BlockSize bytes; EncodeBlock does not keep it.
func (c *Codec) EncodeBlock(obj ObjectID, block uint64, id StripeID, data []byte) (*Stripe, error) {
	if len(data) > c.p.BlockSize {
		return nil, fmt.Errorf("encoder: block %d of object %s: %d bytes, above the policy's block_size %d", block, obj, len(data), c.p.BlockSize)
	}
	c.active.Add(1)
	defer c.active.Add(-1)

	sl, err := c.seal(obj, block, id, data)
	if err != nil {
		return nil, err
	}
	defer c.release(&sl)

	per := payloadLen(sl.len(), c.p.K)
	buf, pooled := c.stripeBuf((c.p.K + c.p.M) * slotLen(per))
	st := c.encode(id, buf, per, &sl, sl.len(), len(data))
	if pooled != nil {
		st.release = func() { c.shardBufs.Put(pooled) }
	}
	return st, nil
}

// encode codes a sealed block into buf, laid out as K+M shards of
// HeaderSize+per bytes, slotLen(per) apart. With src nil the sealed block
// is already in place in the data payloads (see BlockBuffer) and nothing
// is copied.
func (c *Codec) encode(id StripeID, buf []byte, per int, src *sealed, sealedLen, dataLen int) *Stripe {
	k, n := c.p.K, c.p.K+c.p.M
	stride, slot := HeaderSize+per, slotLen(per)
	st := &Stripe{ID: id, Shards: make([][]byte, n), Sums: make([][]byte, n), DataLen: dataLen}
	j := &encodeJob{c: c, src: src, per: per, payloads: make([][]byte, n), leaves: make([][]byte, n)}
	for i := range n {
		st.Shards[i] = buf[i*slot : i*slot+stride : i*slot+stride]
		j.payloads[i] = st.Shards[i][HeaderSize:]
		j.leaves[i] = c.alg.leafBuf(per)
	}
	c.parallel(numLeaves(per), j.columns)

	h := Header{Version: FormatVersion, Stripe: id, K: k, M: c.p.M, PayloadLen: per, SealedLen: sealedLen, DataLen: dataLen}
	for i := range n {
		h.Index = i
		h.PayloadSum = c.alg.root(j.leaves[i])
		h.put(st.Shards[i], c.alg)
		st.Sums[i] = c.alg.shardSum(stride, st.Shards[i][:HeaderSize], h.PayloadSum)
	}
	return st
}

// encodeJob lays a sealed block into the data payloads, computes parity and
// hashes every payload, one column of leafSize bytes per shard at a time:
// a column of all K+M shards fits in a core's L2 cache, so each byte is
// copied, coded and hashed there before it goes back to memory.
type encodeJob struct {
	c        *Codec
	src      *sealed
	per      int
	payloads [][]byte
	leaves   [][]byte
}

func (j *encodeJob) columns(from, to int) {
	k, alg := j.c.p.K, j.c.alg
	col := make([][]byte, len(j.payloads))
	for s := from; s < to; s++ {
		a := s * leafSize
		b := min(a+leafSize, j.per)
		if j.src != nil {
			for i := range k {
				j.src.copyTo(j.payloads[i][a:b], i*j.per+a)
			}
		}
		for i := range col {
			col[i] = j.payloads[i][a:b]
		}
		// Coding first: it reads the data from memory at a pace the
		// prefetcher keeps up with, leaving it in cache for hashing, which
		// is fast enough to stall on memory if it came first.
		// Cannot fail: k+m shards of equal, non-zero length.
		if err := j.c.rs.Encode(col); err != nil {
			panic("encoder: reed-solomon encode: " + err.Error())
		}
		for i := range col {
			alg.hashLeaf(j.leaves[i], j.payloads[i], s)
		}
	}
}

// copyTo copies sealed bytes [off, off+len(dst)) into dst and zeroes the
// part of dst past the end of the sealed block (the padding).
func (s *sealed) copyTo(dst []byte, off int) {
	n := 0
	if off < len(s.hdr) {
		n = copy(dst, s.hdr[off:])
	}
	if bo := off + n - len(s.hdr); n < len(dst) && bo < len(s.body) {
		n += copy(dst[n:], s.body[bo:])
	}
	clear(dst[n:])
}

// minUnitsPerWorker keeps a helper goroutine from being started for less
// than 64 KiB per shard; below that the hand-off costs more than it saves.
const minUnitsPerWorker = 2

// parallel runs fn over [0, units) split into contiguous ranges, one per
// core that no other call of this Codec is using (plus the caller's own).
func (c *Codec) parallel(units int, fn func(from, to int)) {
	idle := runtime.GOMAXPROCS(0) - int(c.active.Load())
	w := min(1+max(idle, 0), units/minUnitsPerWorker)
	if w <= 1 {
		fn(0, units)
		return
	}
	var wg sync.WaitGroup
	for i := 1; i < w; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i*units/w, (i+1)*units/w)
		}()
	}
	fn(0, units/w)
	wg.Wait()
}
