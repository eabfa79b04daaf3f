package encoder

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"runtime"
	"strings"
	"testing"

	"github.com/zeebo/xxh3"
)

func encodedShard(t testing.TB) []byte {
	t.Helper()
	c := newCodec(t, Policy{K: 2, M: 1, BlockSize: testBlock, Compression: CompressionNone, Encryption: EncryptionNone, Checksum: ChecksumXXH3})
	st, err := c.EncodeBlock(ObjectID{1}, 0, StripeID{2}, bytes.Repeat([]byte{3}, 1000))
	if err != nil {
		t.Fatal(err)
	}
	return st.Shards[1]
}

func TestParseHeaderLayout(t *testing.T) {
	s := encodedShard(t)
	h, err := ParseHeader(s)
	if err != nil {
		t.Fatal(err)
	}
	want := Header{Version: 1, Stripe: StripeID{2}, Index: 1, K: 2, M: 1, PayloadLen: 512, SealedLen: 1012, DataLen: 1000, Checksum: ChecksumXXH3}
	h2 := h
	h2.PayloadSum = nil
	if h2.Stripe != want.Stripe || h2.Index != want.Index || h2.K != want.K || h2.M != want.M || h2.PayloadLen != want.PayloadLen ||
		h2.SealedLen != want.SealedLen || h2.DataLen != want.DataLen || h2.Checksum != want.Checksum || h2.Version != want.Version {
		t.Fatalf("header %+v, want %+v", h2, want)
	}
	// Byte positions as docs/format.md lists them.
	le := binary.LittleEndian
	if string(s[0:8]) != "HEALSHRD" || s[8] != 1 || s[9] != 1 || le.Uint16(s[10:]) != 1 || le.Uint16(s[12:]) != 2 || le.Uint16(s[14:]) != 1 ||
		s[16] != 2 || le.Uint32(s[32:]) != 512 || le.Uint32(s[36:]) != 1012 || le.Uint32(s[40:]) != 1000 || le.Uint32(s[44:]) != 32768 {
		t.Fatalf("header bytes do not follow the documented layout: % x", s[:48])
	}
	// Payload checksum: xxh3-128 over the length and the leaf hashes.
	payload := s[HeaderSize:]
	leaf := xxh3.Hash128(payload).Bytes()
	root := xxh3.Hash128(append(binary.LittleEndian.AppendUint64(nil, uint64(len(payload))), leaf[:]...)).Bytes()
	if !bytes.Equal(s[48:64], root[:]) || !bytes.Equal(h.PayloadSum, root[:]) || !bytes.Equal(s[64:124], make([]byte, 60)) {
		t.Fatalf("payload checksum field % x, want % x then zeros", s[48:80], root)
	}
	if le.Uint32(s[124:]) != crc32.Checksum(s[:124], crc32.MakeTable(crc32.Castagnoli)) {
		t.Fatal("header CRC is not CRC32C of bytes 0..123")
	}
	// Sum of the whole shard: length, header, payload checksum.
	outer := append(binary.LittleEndian.AppendUint64(nil, uint64(len(s))), s[:HeaderSize]...)
	outer = append(outer, root[:]...)
	if want := xxh3.Hash128(outer).Bytes(); !bytes.Equal(Sum(ChecksumXXH3, s), want[:]) {
		t.Fatal("Sum does not follow the documented construction")
	}
}

func TestSumConstruction(t *testing.T) {
	// A payload over several leaves, and inputs around the 128-byte head.
	for _, n := range []int{0, 1, 127, 128, 129, 128 + leafSize, 128 + 3*leafSize + 5} {
		b := bytes.Repeat([]byte{0x61, 0x62, 0x63}, n/3+1)[:n]
		for _, alg := range []checksumAlg{algXXH3, algSHA256} {
			h := min(n, HeaderSize)
			var leaves []byte
			leaves = binary.LittleEndian.AppendUint64(leaves, uint64(n-h))
			for off := h; off < n; off += leafSize {
				d := make([]byte, alg.size())
				alg.hash(d, b[off:min(off+leafSize, n)])
				leaves = append(leaves, d...)
			}
			inner := make([]byte, alg.size())
			alg.hash(inner, leaves)
			outer := binary.LittleEndian.AppendUint64(nil, uint64(n))
			outer = append(append(outer, b[:h]...), inner...)
			want := make([]byte, alg.size())
			alg.hash(want, outer)
			if got := Sum(alg.String(), b); !bytes.Equal(got, want) {
				t.Errorf("%s over %d bytes: %x, want %x", alg, n, got, want)
			}
		}
	}
	if Sum("md5", nil) != nil {
		t.Error("Sum of an unknown algorithm is not nil")
	}
	if a, b := Sum(ChecksumXXH3, []byte("a")), Sum(ChecksumXXH3, []byte("b")); bytes.Equal(a, b) || len(a) != 16 || len(Sum(ChecksumSHA256, nil)) != 32 {
		t.Error("Sum sizes or distinctness wrong")
	}
}

func TestParseHeaderRejects(t *testing.T) {
	base := encodedShard(t)
	fix := func(b []byte) { binary.LittleEndian.PutUint32(b[124:], crc32.Checksum(b[:124], castagnoli)) }
	cases := []struct {
		name string
		edit func(b []byte) []byte
		msg  string
	}{
		{"short", func(b []byte) []byte { return b[:HeaderSize-1] }, "shorter"},
		{"magic", func(b []byte) []byte { b[0] = 'X'; fix(b); return b }, "magic"},
		{"crc", func(b []byte) []byte { b[40]++; return b }, "crc32c"},
		{"version", func(b []byte) []byte { b[8] = 2; fix(b); return b }, "version 2"},
		{"checksum id", func(b []byte) []byte { b[9] = 9; fix(b); return b }, "checksum algorithm"},
		{"leaf size", func(b []byte) []byte { b[44] = 1; fix(b); return b }, "leaf size"},
		{"k zero", func(b []byte) []byte { b[12], b[13] = 0, 0; fix(b); return b }, "out of range"},
		{"index", func(b []byte) []byte { b[10] = 3; fix(b); return b }, "index 3"},
		{"huge payload", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[32:], 1<<31); fix(b); return b }, "payload length"},
		{"huge data", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[40:], 1<<30); fix(b); return b }, "data length"},
		{"sealed vs payload", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[36:], 500); fix(b); return b }, "payload length 512"},
		{"reserved", func(b []byte) []byte { b[100] = 1; fix(b); return b }, "reserved"},
	}
	for _, tc := range cases {
		b := tc.edit(bytes.Clone(base))
		_, err := ParseHeader(b)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: ParseHeader = %v, want ErrCorrupt mentioning %q", tc.name, err, tc.msg)
		}
	}
}

// TestHostileLengthsAllocateLittle feeds DecodeBlock shards whose valid
// headers claim lengths far beyond the policy: nothing may be allocated
// from those claims.
func TestHostileLengthsAllocateLittle(t *testing.T) {
	p := Policy{K: 2, M: 1, BlockSize: 4096, Compression: CompressionZstd, Encryption: EncryptionNone, Checksum: ChecksumXXH3}
	c := newCodec(t, p)
	id := StripeID{9}
	shards := make([][]byte, 3)
	for i := range shards {
		h := Header{Stripe: id, Index: i, K: 2, M: 1, SealedLen: 60 << 20, DataLen: 60 << 20}
		h.PayloadLen = payloadLen(h.SealedLen, 2)
		b := make([]byte, HeaderSize+64)
		h.put(b, algXXH3)
		shards[i] = b
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := c.DecodeBlock(ObjectID{}, 0, id, shards, nil)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooFewShards) {
		t.Fatalf("DecodeBlock = %v, want ErrTooFewShards", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("decoding hostile headers allocated %d bytes", got)
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add(encodedShard(f)[:HeaderSize])
	f.Add(make([]byte, HeaderSize))
	f.Add([]byte("HEALSHRD"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not match ErrCorrupt", err)
			}
			return
		}
		// Anything accepted writes back to the same bytes, and stays in
		// bounds.
		if h.PayloadLen > maxPayloadLen || h.DataLen > MaxBlockSize || h.Index >= h.K+h.M {
			t.Fatalf("accepted out-of-bounds header %+v", h)
		}
		out := make([]byte, HeaderSize)
		h.put(out, checksumIDs[h.Checksum])
		if !bytes.Equal(out, b[:HeaderSize]) {
			t.Fatalf("header does not round-trip:\n% x\n% x", b[:HeaderSize], out)
		}
	})
}
