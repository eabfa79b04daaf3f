package encoder

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestDefaultPolicy(t *testing.T) {
	p := DefaultPolicy()
	want := Policy{K: 4, M: 2, BlockSize: 4 << 20, Compression: "none", Encryption: "aes-256-gcm", Checksum: "xxh3-128"}
	if p != want {
		t.Fatalf("DefaultPolicy() = %+v, want %+v", p, want)
	}
	if err := p.Validate(8 << 20); err != nil {
		t.Fatalf("default policy does not fit a 0-db value: %v", err)
	}
}

func TestValidateNamesField(t *testing.T) {
	ok := DefaultPolicy()
	cases := []struct {
		name  string
		edit  func(*Policy)
		limit int
		field string
	}{
		{"k zero", func(p *Policy) { p.K = 0 }, 0, "k"},
		{"k negative", func(p *Policy) { p.K = -3 }, 0, "k"},
		{"m zero", func(p *Policy) { p.M = 0 }, 0, "m"},
		{"too many shards", func(p *Policy) { p.K, p.M = 250, 7 }, 0, "k+m"},
		{"block zero", func(p *Policy) { p.BlockSize = 0 }, 0, "block_size"},
		{"block too big", func(p *Policy) { p.BlockSize = 64<<20 + 1 }, 0, "block_size"},
		{"compression", func(p *Policy) { p.Compression = "gzip" }, 0, "compression"},
		{"compression empty", func(p *Policy) { p.Compression = "" }, 0, "compression"},
		{"encryption", func(p *Policy) { p.Encryption = "aes-128-gcm" }, 0, "encryption"},
		{"checksum", func(p *Policy) { p.Checksum = "crc32" }, 0, "checksum"},
		{"shard over backend limit", func(p *Policy) { p.K, p.BlockSize = 1, 16<<20 }, 8 << 20, "block_size"},
	}
	for _, tc := range cases {
		p := ok
		tc.edit(&p)
		err := p.Validate(tc.limit)
		var pe *PolicyError
		if !errors.As(err, &pe) || pe.Field != tc.field || !errors.Is(err, ErrInvalidPolicy) || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%s: Validate = %v, want a PolicyError naming %q", tc.name, err, tc.field)
		}
	}
	edge := []Policy{
		{K: 1, M: 1, BlockSize: 1, Compression: "zstd", Encryption: "xchacha20-poly1305", Checksum: "sha256"},
		{K: 255, M: 1, BlockSize: MaxBlockSize, Compression: "none", Encryption: "none", Checksum: "xxh3-128"},
		{K: 128, M: 128, BlockSize: 4 << 20, Compression: "none", Encryption: "none", Checksum: "xxh3-128"},
	}
	for _, p := range edge {
		if err := p.Validate(0); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestMaxShardSize(t *testing.T) {
	// 4 MiB over k=4, AES-GCM: 12-byte seal header, 12-byte nonce, 16-byte
	// tag, rounded up to 64 bytes per shard, plus the 128-byte header.
	p := DefaultPolicy()
	want := HeaderSize + ((4<<20+40+3)/4+63)&^63
	if got := p.MaxShardSize(); got != want {
		t.Fatalf("MaxShardSize = %d, want %d", got, want)
	}
	// The limit is inclusive: a shard exactly at the limit fits.
	if err := p.Validate(want); err != nil {
		t.Fatalf("Validate(MaxShardSize) = %v", err)
	}
	if err := p.Validate(want - 1); err == nil {
		t.Fatal("Validate(MaxShardSize-1) accepted a policy whose shards do not fit")
	}
}

func TestIDs(t *testing.T) {
	o := NewObjectID()
	if o == NewObjectID() {
		t.Fatal("two random object ids are equal")
	}
	got, err := ParseObjectID(o.String())
	if err != nil || got != o || len(o.String()) != 32 {
		t.Fatalf("ParseObjectID(%q) = %v, %v", o, got, err)
	}
	s := NewStripeID()
	gs, err := ParseStripeID(s.String())
	if err != nil || gs != s {
		t.Fatalf("ParseStripeID(%q) = %v, %v", s, gs, err)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("g", 32), strings.Repeat("a", 34)} {
		if _, err := ParseStripeID(bad); err == nil {
			t.Errorf("ParseStripeID(%q) accepted", bad)
		}
		if _, err := ParseObjectID(bad); err == nil {
			t.Errorf("ParseObjectID(%q) accepted", bad)
		}
	}
	b, err := json.Marshal(struct{ ID StripeID }{s})
	if err != nil || string(b) != `{"ID":"`+s.String()+`"}` {
		t.Fatalf("JSON = %s, %v", b, err)
	}
	var back struct{ ID StripeID }
	if err := json.Unmarshal(b, &back); err != nil || back.ID != s {
		t.Fatalf("JSON round trip: %v, %v", back.ID, err)
	}
}

func TestNewCodecKey(t *testing.T) {
	p := DefaultPolicy()
	if _, err := NewCodec(p, nil); err == nil {
		t.Error("AES policy accepted a nil key")
	}
	if _, err := NewCodec(p, make([]byte, 16)); err == nil {
		t.Error("AES policy accepted a 16-byte key")
	}
	p.Encryption = EncryptionNone
	if _, err := NewCodec(p, nil); err != nil {
		t.Errorf("no encryption, nil key: %v", err)
	}
	p.K = 0
	if _, err := NewCodec(p, nil); !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("invalid policy: %v", err)
	}
	// The key must never show in an error.
	key := []byte("0123456789abcdef0123456789abcdef")
	c, err := NewCodec(DefaultPolicy(), key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.EncodeBlock(NewObjectID(), 0, NewStripeID(), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DecodeBlock(NewObjectID(), 0, st.ID, st.Shards, st.Sums)
	if err == nil || strings.Contains(err.Error(), string(key)) || strings.Contains(err.Error(), "0123456789") {
		t.Fatalf("error %v", err)
	}
}
