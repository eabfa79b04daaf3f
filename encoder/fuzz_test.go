package encoder

import (
	"bytes"
	"errors"
	"runtime"
	"testing"
)

// fuzzStripe is the stripe FuzzDecode mutates: small, two leaves a shard.
type fuzzStripe struct {
	c      *Codec
	obj    ObjectID
	id     StripeID
	data   []byte
	shards [][]byte
	sums   [][]byte
}

func newFuzzStripe(f *testing.F, p Policy) *fuzzStripe {
	c := newCodec(f, p)
	fs := &fuzzStripe{c: c, obj: ObjectID{1}, id: StripeID{2}, data: goldenData(p.BlockSize - 10)}
	st, err := c.EncodeBlock(fs.obj, 3, fs.id, fs.data)
	if err != nil {
		f.Fatal(err)
	}
	fs.shards, fs.sums = st.Shards, st.Sums
	return fs
}

// FuzzDecode decodes damaged stripes: a real stripe with shards dropped,
// bytes flipped (headers included) and a shard cut short, or, in raw mode,
// shards cut straight from the fuzz input. Decoding must not panic or hang,
// must never return wrong data, and must not allocate beyond the policy's
// bounds whatever the headers say.
func FuzzDecode(f *testing.F) {
	stripes := []*fuzzStripe{
		newFuzzStripe(f, Policy{K: 3, M: 2, BlockSize: 80 << 10, Compression: CompressionNone, Encryption: EncryptionNone, Checksum: ChecksumXXH3}),
		newFuzzStripe(f, Policy{K: 2, M: 2, BlockSize: 16 << 10, Compression: CompressionZstd, Encryption: EncryptionAESGCM, Checksum: ChecksumSHA256}),
	}
	f.Add(uint8(0), uint8(0), uint32(0), []byte{}, uint32(0))
	f.Add(uint8(1), uint8(0b00011), uint32(130), []byte{0xff}, uint32(0))
	f.Add(uint8(0), uint8(0b00100), uint32(12), []byte{1, 2, 3, 4}, uint32(7))
	f.Add(uint8(1), uint8(0), uint32(40), []byte{0x80}, uint32(0))
	f.Add(uint8(2), uint8(0), uint32(0), bytes.Repeat([]byte("HEALSHRD"), 64), uint32(0))
	f.Fuzz(func(t *testing.T, mode, missing uint8, pos uint32, edit []byte, cut uint32) {
		fs := stripes[int(mode)%len(stripes)]
		n := len(fs.shards)
		var shards [][]byte
		if mode >= 128 {
			// Raw: n shards cut from the edit bytes.
			shards = make([][]byte, n)
			for i := range shards {
				shards[i] = edit[i*len(edit)/n : (i+1)*len(edit)/n]
			}
		} else {
			shards = cloneShards(fs.shards)
			if len(edit) > 0 {
				s := shards[int(pos)%n]
				for j, b := range edit {
					s[(int(pos/8)+j)%len(s)] ^= b
				}
			}
			if cut != 0 {
				i := int(cut) % n
				shards[i] = shards[i][:int(cut/8)%(len(shards[i])+1)]
			}
		}
		for i := range n {
			if missing&(1<<i) != 0 {
				shards[i] = nil
			}
		}
		var sums [][]byte
		if mode&64 == 0 {
			sums = fs.sums
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		got, err := fs.c.DecodeBlock(fs.obj, 3, fs.id, shards, sums)
		runtime.ReadMemStats(&after)
		// A few times the block is what decoding may need; a length field
		// believed would ask for up to 64 MiB.
		if a := after.TotalAlloc - before.TotalAlloc; a > uint64(16*fs.c.p.BlockSize+(1<<20)) {
			t.Fatalf("decode allocated %d bytes for a %d-byte block", a, fs.c.p.BlockSize)
		}
		if err == nil && !bytes.Equal(got, fs.data) {
			t.Fatal("decode returned wrong data without an error")
		}
		if err != nil && !errors.Is(err, ErrTooFewShards) && !errors.Is(err, ErrAuth) && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("untyped error %v", err)
		}
		// DecodeBlockTo must agree with DecodeBlock, within the same bounds.
		dst := make([]byte, fs.c.p.BlockSize)
		runtime.ReadMemStats(&before)
		n, errTo := fs.c.DecodeBlockTo(dst, fs.obj, 3, fs.id, shards, sums)
		runtime.ReadMemStats(&after)
		if a := after.TotalAlloc - before.TotalAlloc; a > uint64(16*fs.c.p.BlockSize+(1<<20)) {
			t.Fatalf("DecodeBlockTo allocated %d bytes for a %d-byte block", a, fs.c.p.BlockSize)
		}
		if (err == nil) != (errTo == nil) {
			t.Fatalf("DecodeBlock: %v; DecodeBlockTo: %v", err, errTo)
		}
		if errTo == nil && !bytes.Equal(dst[:n], fs.data) {
			t.Fatal("DecodeBlockTo returned wrong data without an error")
		}
		if errTo != nil && !errors.Is(errTo, ErrTooFewShards) && !errors.Is(errTo, ErrAuth) && !errors.Is(errTo, ErrCorrupt) {
			t.Fatalf("untyped error %v", errTo)
		}
		bad, err := fs.c.BadShards(fs.id, shards, sums)
		if err != nil {
			t.Fatal(err)
		}
		// Good shards can always rebuild the bad ones exactly.
		if len(bad) > 0 && len(bad) <= fs.c.p.M && missing == 0 && mode < 128 {
			rb, _, err := fs.c.Reconstruct(fs.id, shards, sums, bad)
			if err == nil {
				for j, i := range bad {
					if !bytes.Equal(rb[j], fs.shards[i]) {
						t.Fatalf("rebuilt shard %d differs from the original", i)
					}
				}
			}
		}
	})
}
