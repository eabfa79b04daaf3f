package encoder

import (
	"errors"
	"fmt"
	"io"
)

// ErrBlockFull is returned by BlockBuffer.Write when the block has no room
// for all of p.
var ErrBlockFull = errors.New("encoder: block buffer full")

// BlockBuffer collects one block for EncodeBuffer. When the policy neither
// compresses nor encrypts, written bytes go straight to their place in the
// data shards, so encoding copies nothing: the stripe's data shards are the
// buffer's own memory. Otherwise it is a plain buffer, sealed as
// EncodeBlock seals.
//
// A BlockBuffer is not safe for concurrent use.
type BlockBuffer struct {
	c       *Codec
	mem     *[]byte // nil until first written
	n       int
	inPlace bool
	per     int // in place: the payload length of a full block
}

// NewBlockBuffer returns an empty BlockBuffer for blocks of this codec. Its
// memory comes from the codec's pool on first write; Free gives it back.
func (c *Codec) NewBlockBuffer() *BlockBuffer {
	return &BlockBuffer{
		c:       c,
		inPlace: c.cipher == cipherNone && c.zenc == nil,
		per:     payloadLen(sealFixedLen+c.p.BlockSize, c.p.K),
	}
}

// Len is the number of bytes in the block.
func (b *BlockBuffer) Len() int { return b.n }

// Available is the room left in the block.
func (b *BlockBuffer) Available() int { return b.c.p.BlockSize - b.n }

// Reset empties the block, keeping its memory.
func (b *BlockBuffer) Reset() { b.n = 0 }

// Free empties the block and gives its memory back to the codec. The
// buffer stays usable. Stripes encoded in place from it become invalid.
func (b *BlockBuffer) Free() {
	b.n = 0
	if b.mem == nil {
		return
	}
	if b.inPlace {
		b.c.shardBufs.Put(b.mem)
	} else {
		b.c.scratch.Put(b.mem)
	}
	b.mem = nil
}

// window returns the writable memory for data bytes from offset off, up
// to the end of the piece that holds off (the end of a data shard in
// place, the end of the block otherwise).
func (b *BlockBuffer) window(off int) []byte {
	if b.mem == nil {
		if b.inPlace {
			b.mem = b.c.fullStripeBuf()
		} else {
			b.mem = b.c.getScratch()
		}
	}
	mem, bs := *b.mem, b.c.p.BlockSize
	if !b.inPlace {
		return mem[off:bs]
	}
	mem = alignedSlice(mem, len(mem)-ShardAlign)
	s := sealFixedLen + off // the sealed header comes first
	i, o := s/b.per, s%b.per
	base := i*slotLen(b.per) + HeaderSize
	return mem[base+o : base+o+min(b.per-o, bs-off)]
}

// Write appends p to the block. If the block cannot take all of p it takes
// what fits and returns ErrBlockFull.
func (b *BlockBuffer) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) && b.n < b.c.p.BlockSize {
		k := copy(b.window(b.n), p[done:])
		b.n += k
		done += k
	}
	if done < len(p) {
		return done, ErrBlockFull
	}
	return done, nil
}

// Fill reads from r until the block is full (returning nil) or r ends
// (returning io.EOF, with the bytes read before it kept). Reads go
// directly into the block's memory.
func (b *BlockBuffer) Fill(r io.Reader) (int, error) {
	start := b.n
	for b.n < b.c.p.BlockSize {
		k, err := r.Read(b.window(b.n))
		b.n += k
		if err == io.EOF {
			return b.n - start, io.EOF
		}
		if err != nil {
			return b.n - start, err
		}
	}
	return b.n - start, nil
}

// contiguous returns the block's bytes in one slice: the buffer itself when
// it is not laid out in place, else a gathered copy in pooled scratch memory
// (given back by the caller).
func (b *BlockBuffer) contiguous() ([]byte, *[]byte) {
	if b.mem == nil {
		return nil, nil
	}
	if !b.inPlace {
		return (*b.mem)[:b.n], nil
	}
	scratch := b.c.getScratch()
	out := (*scratch)[:b.n]
	for off := 0; off < b.n; {
		off += copy(out[off:], b.window(off))
	}
	return out, scratch
}

// EncodeBuffer encodes the block in b as EncodeBlock encodes data, but
// without copying it when the policy neither compresses nor encrypts: the
// stripe then shares b's memory and stays valid until b is written to,
// reset or freed (b keeps its content, so it may be encoded again).
// Otherwise the stripe has its own memory.
func (c *Codec) EncodeBuffer(obj ObjectID, block uint64, id StripeID, b *BlockBuffer) (*Stripe, error) {
	st, _, err := c.encodeBuffer(obj, block, id, b)
	return st, err
}

// encodeBuffer also reports whether the stripe shares b's memory.
func (c *Codec) encodeBuffer(obj ObjectID, block uint64, id StripeID, b *BlockBuffer) (*Stripe, bool, error) {
	if b.c != c {
		return nil, false, fmt.Errorf("encoder: block buffer belongs to another codec")
	}
	n, k := b.n, c.p.K
	per := payloadLen(sealFixedLen+n, k)
	if !b.inPlace || b.mem == nil || per != b.per {
		// Sealing needs the block in one piece, and a short block (the
		// end of a stream) has narrower shards than its buffer's layout.
		data, scratch := b.contiguous()
		st, err := c.EncodeBlock(obj, block, id, data)
		if scratch != nil {
			c.scratch.Put(scratch)
		}
		return st, false, err
	}
	c.active.Add(1)
	defer c.active.Add(-1)
	slot := slotLen(per)
	buf := alignedSlice(*b.mem, (k+c.p.M)*slot)
	h := sealHeader{cipher: cipherNone, plainLen: n, bodyLen: n}
	h.put(buf[HeaderSize:])
	// Zero the padding after the sealed block: the tail of the data shard
	// it ends in, and any data shard wholly past it.
	for s := sealFixedLen + n; s < k*per; {
		i, o := s/per, s%per
		clear(buf[i*slot+HeaderSize+o : i*slot+HeaderSize+per])
		s += per - o
	}
	return c.encode(id, buf, per, nil, sealFixedLen+n, n), true, nil
}
