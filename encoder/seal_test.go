package encoder

import (
	"bytes"
	"errors"
	"testing"
)

func TestWrongKey(t *testing.T) {
	for _, enc := range []string{EncryptionAESGCM, EncryptionXChaCha} {
		for _, comp := range []string{CompressionNone, CompressionZstd} {
			p := Policy{K: 3, M: 2, BlockSize: testBlock, Compression: comp, Encryption: enc, Checksum: ChecksumXXH3}
			c := newCodec(t, p)
			other, err := NewCodec(p, bytes.Repeat([]byte{0xa5}, 32))
			if err != nil {
				t.Fatal(err)
			}
			obj, id := NewObjectID(), NewStripeID()
			st, err := c.EncodeBlock(obj, 0, id, bytes.Repeat([]byte("data"), 5000))
			if err != nil {
				t.Fatal(err)
			}
			got, err := other.DecodeBlock(obj, 0, id, st.Shards, st.Sums)
			if !errors.Is(err, ErrAuth) || got != nil {
				t.Errorf("%s/%s: wrong key: %v (got %d bytes), want ErrAuth", enc, comp, err, len(got))
			}
			// The shards themselves are fine: no key is needed to check or
			// rebuild them.
			if bad, err := other.BadShards(id, st.Shards, st.Sums); err != nil || bad != nil {
				t.Errorf("%s/%s: BadShards with another key = %v, %v", enc, comp, bad, err)
			}
		}
	}
}

func TestMovedBlock(t *testing.T) {
	p := Policy{K: 4, M: 2, BlockSize: testBlock, Compression: CompressionNone, Encryption: EncryptionAESGCM, Checksum: ChecksumXXH3}
	c := newCodec(t, p)
	obj, id := NewObjectID(), NewStripeID()
	data := bytes.Repeat([]byte("block three "), 3000)
	st, err := c.EncodeBlock(obj, 3, id, data)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.DecodeBlock(obj, 3, id, st.Shards, st.Sums); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("in place: %v", err)
	}
	// Same shards presented as another block, or another object's block.
	if _, err := c.DecodeBlock(obj, 4, id, st.Shards, st.Sums); !errors.Is(err, ErrAuth) {
		t.Errorf("as block 4: %v, want ErrAuth", err)
	}
	if _, err := c.DecodeBlock(NewObjectID(), 3, id, st.Shards, st.Sums); !errors.Is(err, ErrAuth) {
		t.Errorf("as another object: %v, want ErrAuth", err)
	}
	// Under another policy (block size differs): the policy is bound too.
	p2 := p
	p2.BlockSize = 2 * testBlock
	if _, err := newCodec(t, p2).DecodeBlock(obj, 3, id, st.Shards, st.Sums); !errors.Is(err, ErrAuth) {
		t.Errorf("under another policy: %v, want ErrAuth", err)
	}
	// Re-framed under another stripe id (headers rewritten with valid CRCs
	// and checksums): the stripe id is bound into the seal as well.
	id2 := NewStripeID()
	moved := cloneShards(st.Shards)
	for _, s := range moved {
		h, _ := ParseHeader(s)
		h.Stripe = id2
		h.put(s, algXXH3)
	}
	if _, err := c.DecodeBlock(obj, 3, id2, moved, nil); !errors.Is(err, ErrAuth) {
		t.Errorf("under another stripe id: %v, want ErrAuth", err)
	}
}

func TestCipherMismatch(t *testing.T) {
	p := Policy{K: 2, M: 1, BlockSize: testBlock, Compression: CompressionNone, Encryption: EncryptionAESGCM, Checksum: ChecksumXXH3}
	c := newCodec(t, p)
	obj := NewObjectID()
	st, err := c.EncodeBlock(obj, 0, NewStripeID(), []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	p.Encryption = EncryptionNone
	if _, err := newCodec(t, p).DecodeBlock(obj, 0, st.ID, st.Shards, st.Sums); !errors.Is(err, ErrAuth) {
		t.Fatalf("encrypted block under a no-encryption policy: %v, want ErrAuth", err)
	}
}

func TestObjectKeysDiffer(t *testing.T) {
	a, b := NewObjectID(), NewObjectID()
	ka, err := objectAEAD(cipherAESGCM, testKey, a)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := objectAEAD(cipherAESGCM, testKey, b)
	nonce := make([]byte, 12)
	if bytes.Equal(ka.Seal(nil, nonce, []byte("x"), nil), kb.Seal(nil, nonce, []byte("x"), nil)) {
		t.Fatal("two objects share a key")
	}
}
