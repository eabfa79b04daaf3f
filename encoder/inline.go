package encoder

import (
	"bytes"
	"fmt"
)

// InlineStripe is the stripe id bound into the associated data of an
// inline object's sealed block. An inline object has no stripe; random
// stripe ids are never all zero in practice, and the zero id keeps an inline
// sealed block from opening as block 0 of any real stripe (and the reverse).
var InlineStripe StripeID

// SealInline seals data as block 0 of object obj exactly as EncodeBlock
// seals a block (optional compression, then encryption with the object's
// key, the AAD binding object id, block 0, InlineStripe and the policy),
// but returns the sealed block itself instead of coding it into shards, for
// objects small enough to live in their metadata record. sum is the policy's
// checksum (Sum) of the sealed bytes; the record keeps both. data must be
// at most BlockSize bytes; the result never shares memory with data.
func (c *Codec) SealInline(obj ObjectID, data []byte) (sealed, sum []byte, err error) {
	if len(data) > c.p.BlockSize {
		return nil, nil, fmt.Errorf("encoder: inline object %s: %d bytes, above the policy's block_size %d", obj, len(data), c.p.BlockSize)
	}
	sl, err := c.seal(obj, 0, InlineStripe, data)
	if err != nil {
		return nil, nil, err
	}
	defer c.release(&sl)
	out := make([]byte, 0, sl.len())
	out = append(out, sl.hdr...)
	out = append(out, sl.body...)
	return out, Sum(c.p.Checksum, out), nil
}

// OpenInline checks an inline object's sealed block against its checksum
// (ErrCorrupt on a mismatch: the record was damaged), then opens it as
// DecodeBlock opens a block (ErrAuth when it does not authenticate) and
// checks its plaintext length against size. The result does not share
// memory with sealed.
func (c *Codec) OpenInline(obj ObjectID, sealed, sum []byte, size int) ([]byte, error) {
	if want := Sum(c.p.Checksum, sealed); want == nil || !bytes.Equal(want, sum) {
		return nil, fmt.Errorf("%w: inline object %s: sealed block (%d bytes) does not match its %s checksum", ErrCorrupt, obj, len(sealed), c.p.Checksum)
	}
	// open may decrypt in place: work on a copy so the caller's record
	// stays intact.
	data, err := c.open(obj, 0, InlineStripe, bytes.Clone(sealed), size)
	if err != nil {
		return nil, err
	}
	return data, nil
}
