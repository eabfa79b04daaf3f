package encoder

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

// fixedNonces makes a codec's nonces a function of seed, so two encodings
// of the same block can be compared byte for byte.
func fixedNonces(c *Codec, seed uint64) {
	var s [32]byte
	s[0] = byte(seed)
	c.rand = rand.NewChaCha8(s)
}

func TestEncodeBufferMatchesEncodeBlock(t *testing.T) {
	rng, _ := seedRand(t)
	for _, p := range allPolicies(4, 2, testBlock) {
		c := newCodec(t, p)
		for _, size := range []int{0, 1, 100, testBlock - 1, testBlock} {
			data := fill(rng, size)
			bb := c.NewBlockBuffer()
			// Write in uneven pieces, across shard boundaries.
			for off := 0; off < size; {
				n := min(size-off, 1+rng.IntN(9000))
				if k, err := bb.Write(data[off : off+n]); err != nil || k != n {
					t.Fatalf("Write: %d, %v", k, err)
				}
				off += n
			}
			if bb.Len() != size || bb.Available() != p.BlockSize-size {
				t.Fatalf("Len %d Available %d after %d bytes", bb.Len(), bb.Available(), size)
			}
			obj, id := NewObjectID(), NewStripeID()
			fixedNonces(c, 1)
			want, err := c.EncodeBlock(obj, 5, id, data)
			if err != nil {
				t.Fatal(err)
			}
			fixedNonces(c, 1)
			got, err := c.EncodeBuffer(obj, 5, id, bb)
			if err != nil {
				t.Fatal(err)
			}
			for i := range want.Shards {
				if !bytes.Equal(want.Shards[i], got.Shards[i]) || !bytes.Equal(want.Sums[i], got.Sums[i]) {
					t.Fatalf("%s size %d: shard %d from EncodeBuffer differs from EncodeBlock", p, size, i)
				}
			}
			// Encoding again from the same buffer gives the same stripe.
			fixedNonces(c, 1)
			again, err := c.EncodeBuffer(obj, 5, id, bb)
			if err != nil || !bytes.Equal(again.Shards[0], want.Shards[0]) {
				t.Fatalf("%s size %d: second EncodeBuffer differs: %v", p, size, err)
			}
			bb.Free()
		}
	}
}

func TestBlockBufferFull(t *testing.T) {
	c := newCodec(t, Policy{K: 3, M: 1, BlockSize: 1000, Compression: CompressionNone, Encryption: EncryptionNone, Checksum: ChecksumXXH3})
	bb := c.NewBlockBuffer()
	n, err := bb.Write(make([]byte, 1200))
	if n != 1000 || !errors.Is(err, ErrBlockFull) {
		t.Fatalf("Write over the block: %d, %v", n, err)
	}
	bb.Reset()
	data := bytes.Repeat([]byte("0123456789"), 150)
	r := bytes.NewReader(data)
	n, err = bb.Fill(iotest.OneByteReader(r))
	if n != 1000 || err != nil {
		t.Fatalf("Fill of a long reader: %d, %v", n, err)
	}
	st, err := c.EncodeBuffer(ObjectID{}, 0, StripeID{}, bb)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.DecodeBlock(ObjectID{}, 0, StripeID{}, st.Shards, st.Sums)
	if err != nil || !bytes.Equal(got, data[:1000]) {
		t.Fatalf("decode: %v", err)
	}
	bb.Reset()
	n, err = bb.Fill(r)
	if n != 500 || err != io.EOF {
		t.Fatalf("Fill of the rest: %d, %v", n, err)
	}
	bb.Reset()
	boom := errors.New("boom")
	if _, err := bb.Fill(iotest.ErrReader(boom)); !errors.Is(err, boom) {
		t.Fatalf("Fill of a failing reader: %v", err)
	}
	other := newCodec(t, c.Policy())
	if _, err := other.EncodeBuffer(ObjectID{}, 0, StripeID{}, bb); err == nil {
		t.Fatal("EncodeBuffer accepted another codec's buffer")
	}
}

func TestReleaseReusesMemory(t *testing.T) {
	rng, _ := seedRand(t)
	p := Policy{K: 4, M: 2, BlockSize: testBlock, Compression: CompressionNone, Encryption: EncryptionAESGCM, Checksum: ChecksumXXH3}
	c := newCodec(t, p)
	obj := NewObjectID()
	a, b := fill(rng, testBlock), fill(rng, testBlock)
	kept, err := c.EncodeBlock(obj, 0, NewStripeID(), a)
	if err != nil {
		t.Fatal(err)
	}
	keptCopy := cloneShards(kept.Shards)
	for i := range 20 {
		st, err := c.EncodeBlock(obj, 1, NewStripeID(), b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.DecodeBlock(obj, 1, st.ID, st.Shards, st.Sums)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("round %d: %v", i, err)
		}
		st.Release()
		st.Release() // idempotent
		if st.Shards != nil {
			t.Fatal("Release left Shards set")
		}
	}
	for i := range keptCopy {
		if !bytes.Equal(keptCopy[i], kept.Shards[i]) {
			t.Fatal("an unreleased stripe changed under later encodes")
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	_, seed := seedRand(t)
	p := Policy{K: 4, M: 2, BlockSize: 256 << 10, Compression: CompressionZstd, Encryption: EncryptionAESGCM, Checksum: ChecksumXXH3}
	c := newCodec(t, p)
	obj := NewObjectID()
	errc := make(chan error, 8)
	for g := range 8 {
		go func() {
			r := rand.New(rand.NewPCG(seed, uint64(g)))
			for i := range 6 {
				data := fill(r, r.IntN(p.BlockSize+1))
				st, err := c.EncodeBlock(obj, uint64(i), NewStripeID(), data)
				if err != nil {
					errc <- err
					return
				}
				sh := st.Shards[:]
				sh[r.IntN(len(sh))] = nil
				got, err := c.DecodeBlock(obj, uint64(i), st.ID, sh, st.Sums)
				if err != nil || !bytes.Equal(got, data) {
					errc <- errors.Join(err, errors.New("concurrent round trip differs"))
					return
				}
				st.Release()
			}
			errc <- nil
		}()
	}
	for range 8 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}
