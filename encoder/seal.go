package encoder

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// Sealed block layout (docs/format.md): a 12-byte fixed header, the nonce,
// then the body (the block, zstd-compressed or not, encrypted or not, with
// the AEAD tag at its end).
const (
	sealFixedLen = 12
	sealVersion  = 1
	flagZstd     = 1 << 0 // body is a zstd frame
)

type cipherID uint8

const (
	cipherNone    cipherID = 0
	cipherAESGCM  cipherID = 1
	cipherXChaCha cipherID = 2
)

var cipherIDs = map[string]cipherID{
	EncryptionNone:    cipherNone,
	EncryptionAESGCM:  cipherAESGCM,
	EncryptionXChaCha: cipherXChaCha,
}

var compressionIDs = map[string]bool{CompressionNone: false, CompressionZstd: true}

func (c cipherID) nonceLen() int {
	switch c {
	case cipherAESGCM:
		return 12
	case cipherXChaCha:
		return 24
	}
	return 0
}

func (c cipherID) tagLen() int {
	if c == cipherNone {
		return 0
	}
	return 16
}

func (c cipherID) String() string {
	for name, id := range cipherIDs {
		if id == c {
			return name
		}
	}
	return fmt.Sprintf("cipher-%d", uint8(c))
}

// maxSealedLen is the largest sealed block a full block makes: header,
// nonce, the block stored uncompressed (zstd output is kept only when
// smaller), tag.
func maxSealedLen(p Policy) int {
	c := cipherIDs[p.Encryption]
	return sealFixedLen + c.nonceLen() + p.BlockSize + c.tagLen()
}

// maxSealedAny bounds the sealed block of any policy with this block size,
// whatever its cipher: checks that need no key use it, so a key-less codec
// can verify and rebuild shards of encrypted stripes.
func maxSealedAny(blockSize int) int {
	return sealFixedLen + cipherXChaCha.nonceLen() + blockSize + cipherXChaCha.tagLen()
}

// sealHeader is the parsed fixed part of a sealed block.
type sealHeader struct {
	flags    uint8
	cipher   cipherID
	plainLen int // block bytes before compression and encryption
	bodyLen  int // bytes after header and nonce
	nonce    []byte
}

func (h *sealHeader) len() int { return sealFixedLen + len(h.nonce) }

func (h *sealHeader) put(b []byte) {
	b[0] = sealVersion
	b[1] = h.flags
	b[2] = byte(h.cipher)
	b[3] = byte(len(h.nonce))
	binary.LittleEndian.PutUint32(b[4:], uint32(h.plainLen))
	binary.LittleEndian.PutUint32(b[8:], uint32(h.bodyLen))
	copy(b[sealFixedLen:], h.nonce)
}

// parseSealHeader reads the sealed block header at the start of b.
func parseSealHeader(b []byte) (sealHeader, error) {
	if len(b) < sealFixedLen {
		return sealHeader{}, fmt.Errorf("sealed block of %d bytes is shorter than its header", len(b))
	}
	if b[0] != sealVersion {
		return sealHeader{}, fmt.Errorf("sealed block version %d, want %d", b[0], sealVersion)
	}
	h := sealHeader{
		flags:    b[1],
		cipher:   cipherID(b[2]),
		plainLen: int(binary.LittleEndian.Uint32(b[4:])),
		bodyLen:  int(binary.LittleEndian.Uint32(b[8:])),
	}
	if h.flags&^flagZstd != 0 {
		return sealHeader{}, fmt.Errorf("unknown sealed block flags %#x", h.flags)
	}
	if h.cipher > cipherXChaCha {
		return sealHeader{}, fmt.Errorf("unknown cipher id %d", b[2])
	}
	if n := int(b[3]); n != h.cipher.nonceLen() {
		return sealHeader{}, fmt.Errorf("nonce length %d for %s", n, h.cipher)
	}
	end := sealFixedLen + h.cipher.nonceLen()
	if len(b) < end {
		return sealHeader{}, fmt.Errorf("sealed block of %d bytes is shorter than its header", len(b))
	}
	h.nonce = b[sealFixedLen:end]
	return h, nil
}

// objectKeySalt separates healstore's key derivation from any other use of
// the master key.
var objectKeySalt = []byte("healstore/v1 object key")

// objectAEAD derives the object's key, HKDF-SHA256(master, salt, info =
// cipher name || 0x00 || object id), and returns the cipher. Deriving per
// cipher as well means a key never serves two algorithms.
func objectAEAD(c cipherID, master []byte, obj ObjectID) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, master, objectKeySalt, c.String()+"\x00"+string(obj[:]), 32)
	if err != nil {
		return nil, fmt.Errorf("encoder: derive object key: %w", err)
	}
	defer clear(key)
	switch c {
	case cipherAESGCM:
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("encoder: aes: %w", err)
		}
		return cipher.NewGCM(b)
	case cipherXChaCha:
		return chacha20poly1305.NewX(key)
	}
	return nil, fmt.Errorf("encoder: no cipher for %s", c)
}

// aadPrefix opens the associated data of every sealed block.
const aadPrefix = "healstore/v1 seal\x00"

// aad binds a sealed block to its place: object, block index, stripe,
// policy and the sealed block's own header (flags, lengths, nonce).
func (c *Codec) aad(obj ObjectID, block uint64, id StripeID, sealHdr []byte) []byte {
	b := make([]byte, 0, len(aadPrefix)+16+8+16+4+len(c.policyStr)+len(sealHdr))
	b = append(b, aadPrefix...)
	b = append(b, obj[:]...)
	b = binary.LittleEndian.AppendUint64(b, block)
	b = append(b, id[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(c.policyStr)))
	b = append(b, c.policyStr...)
	return append(b, sealHdr...)
}

// sealed is a sealed block as pieces to be laid into the data shards.
type sealed struct {
	hdr     []byte  // sealed block header with nonce
	body    []byte  // follows hdr
	scratch *[]byte // pooled buffer body lives in, if any; give back after use
}

func (s *sealed) len() int { return len(s.hdr) + len(s.body) }

// seal compresses (when that shrinks the block) and encrypts one block.
// With neither, the body is data itself and nothing is copied here: the
// codec copies it once, straight into the shards.
func (c *Codec) seal(obj ObjectID, block uint64, id StripeID, data []byte) (sealed, error) {
	h := sealHeader{cipher: c.cipher, plainLen: len(data), nonce: make([]byte, c.cipher.nonceLen())}
	out := sealed{body: data}
	if c.zenc != nil {
		out.scratch = c.getScratch()
		comp := c.zenc.EncodeAll(data, (*out.scratch)[:0])
		if len(comp) > 0 && len(comp) < len(data) {
			if &comp[0] != &(*out.scratch)[0] {
				// zstd grew the buffer on its way; bring the result home.
				comp = append((*out.scratch)[:0], comp...)
			}
			h.flags |= flagZstd
			out.body = comp
		}
	}
	h.bodyLen = len(out.body) + c.cipher.tagLen()
	out.hdr = make([]byte, h.len())
	if c.cipher != cipherNone {
		if _, err := c.rand.Read(h.nonce); err != nil {
			c.release(&out)
			return sealed{}, fmt.Errorf("encoder: nonce: %w", err)
		}
	}
	h.put(out.hdr)
	if c.cipher == cipherNone {
		return out, nil
	}
	aead, err := objectAEAD(c.cipher, c.master, obj)
	if err != nil {
		c.release(&out)
		return sealed{}, err
	}
	if out.scratch == nil {
		out.scratch = c.getScratch()
	}
	// Seal in place when the body already sits in scratch (compressed);
	// otherwise encrypt from data into scratch.
	out.body = aead.Seal((*out.scratch)[:0], h.nonce, out.body, c.aad(obj, block, id, out.hdr))
	return out, nil
}

func (c *Codec) release(s *sealed) {
	if s.scratch != nil {
		c.scratch.Put(s.scratch)
		s.scratch = nil
	}
}

func (c *Codec) getScratch() *[]byte {
	if b, ok := c.scratch.Get().(*[]byte); ok {
		return b
	}
	// zstd may need a little more than the input before we see it does not
	// shrink; the AEAD tag needs 16 bytes.
	b := MakeLarge(c.p.BlockSize + c.p.BlockSize/64 + 1024)
	return &b
}

// openTo is open writing the plaintext into dst (which must not overlap
// sealed) and returning its length: the AEAD decrypts from sealed straight
// into dst, so the plaintext is never copied again. Checks and errors are
// open's, plus ErrCorrupt when dst is too small. A compressed block is
// decrypted in place, so sealed may be overwritten.
func (c *Codec) openTo(dst []byte, obj ObjectID, block uint64, id StripeID, sealed []byte, dataLen int) (int, error) {
	corrupt := func(format string, args ...any) (int, error) {
		return 0, fmt.Errorf("%w: block %d of object %s: %s", ErrCorrupt, block, obj, fmt.Sprintf(format, args...))
	}
	h, err := parseSealHeader(sealed)
	if err != nil {
		return corrupt("%v", err)
	}
	if h.cipher != c.cipher {
		return 0, fmt.Errorf("%w: block %d of object %s is sealed with %s, the policy says %s", ErrAuth, block, obj, h.cipher, c.cipher)
	}
	if h.len()+h.bodyLen != len(sealed) || h.plainLen != dataLen || h.plainLen > c.p.BlockSize {
		return corrupt("sealed lengths (header %d, body %d, plain %d) do not match the shards (sealed %d, data %d)",
			h.len(), h.bodyLen, h.plainLen, len(sealed), dataLen)
	}
	if h.plainLen > len(dst) {
		return corrupt("%d bytes do not fit the destination's %d", h.plainLen, len(dst))
	}
	hdr, body := sealed[:h.len()], sealed[h.len():]
	zstd := h.flags&flagZstd != 0
	if zstd && c.zdec == nil {
		return corrupt("block is zstd-compressed but the policy has compression none")
	}
	if c.cipher != cipherNone {
		if !zstd && len(body) != h.plainLen+c.cipher.tagLen() {
			return corrupt("body of %d bytes, want %d", len(body)-c.cipher.tagLen(), h.plainLen)
		}
		aead, err := objectAEAD(c.cipher, c.master, obj)
		if err != nil {
			return 0, err
		}
		// Uncompressed, the plaintext is the block: decrypt into dst.
		// Compressed, decrypt in place and decompress into dst.
		out := body[:0]
		if !zstd {
			out = dst[:0]
		}
		body, err = aead.Open(out, h.nonce, body, c.aad(obj, block, id, hdr))
		if err != nil {
			return 0, fmt.Errorf("%w: block %d of object %s, stripe %s", ErrAuth, block, obj, id)
		}
		if !zstd {
			return len(body), nil
		}
	}
	if zstd {
		// The cap limit (NewCodec) keeps DecodeAll within dst's capacity.
		out, err := c.zdec.DecodeAll(body, dst[:0:h.plainLen])
		if err != nil {
			return corrupt("zstd: %v", err)
		}
		if len(out) != h.plainLen {
			return corrupt("decompressed to %d bytes, want %d", len(out), h.plainLen)
		}
		if h.plainLen > 0 && &out[0] != &dst[0] {
			copy(dst, out) // cannot happen with the cap limit; stay correct
		}
		return len(out), nil
	}
	if len(body) != h.plainLen {
		return corrupt("body of %d bytes, want %d", len(body), h.plainLen)
	}
	return copy(dst, body), nil
}

// open checks and opens a sealed block: decrypt (ErrAuth if it does not
// authenticate), decompress, and check the plaintext length against the one
// the shard headers recorded. The result may share memory with sealed.
func (c *Codec) open(obj ObjectID, block uint64, id StripeID, sealed []byte, dataLen int) ([]byte, error) {
	corrupt := func(format string, args ...any) ([]byte, error) {
		return nil, fmt.Errorf("%w: block %d of object %s: %s", ErrCorrupt, block, obj, fmt.Sprintf(format, args...))
	}
	h, err := parseSealHeader(sealed)
	if err != nil {
		return corrupt("%v", err)
	}
	if h.cipher != c.cipher {
		return nil, fmt.Errorf("%w: block %d of object %s is sealed with %s, the policy says %s", ErrAuth, block, obj, h.cipher, c.cipher)
	}
	if h.len()+h.bodyLen != len(sealed) || h.plainLen != dataLen || h.plainLen > c.p.BlockSize {
		return corrupt("sealed lengths (header %d, body %d, plain %d) do not match the shards (sealed %d, data %d)",
			h.len(), h.bodyLen, h.plainLen, len(sealed), dataLen)
	}
	hdr, body := sealed[:h.len()], sealed[h.len():]
	if c.cipher != cipherNone {
		aead, err := objectAEAD(c.cipher, c.master, obj)
		if err != nil {
			return nil, err
		}
		body, err = aead.Open(body[:0], h.nonce, body, c.aad(obj, block, id, hdr))
		if err != nil {
			return nil, fmt.Errorf("%w: block %d of object %s, stripe %s", ErrAuth, block, obj, id)
		}
	}
	if h.flags&flagZstd != 0 {
		if c.zdec == nil {
			return corrupt("block is zstd-compressed but the policy has compression none")
		}
		out, err := c.zdec.DecodeAll(body, make([]byte, 0, h.plainLen))
		if err != nil {
			return corrupt("zstd: %v", err)
		}
		if len(out) != h.plainLen {
			return corrupt("decompressed to %d bytes, want %d", len(out), h.plainLen)
		}
		return out, nil
	}
	if len(body) != h.plainLen {
		return corrupt("body of %d bytes, want %d", len(body), h.plainLen)
	}
	return body[:len(body):len(body)], nil
}
