package metastore

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
)

// An object record written before inline objects existed decodes as it
// did and re-encodes byte for byte at version 1; an inline record is
// written at version 2 (which releases before inline objects refuse
// instead of dropping its data) and round-trips; damaged or contradictory
// inline fields are refused.
func TestInlineObjectRecord(t *testing.T) {
	key := objectKey("x")
	old := `{"v":1,"name":"x","id":"8f1c02449a33710ec1552031aa901107","size":3,"policy":{"k":2,"m":1,"block_size":4194304,"compression":"none","encryption":"none","checksum":"xxh3-128"},"stripes":["3b9e4107d26a881f005ce27319b4a60d"]}`
	o, err := decodeObject(key, []byte(old))
	if err != nil || o.IsInline() || len(o.Stripes) != 1 || o.InlineSum != nil {
		t.Fatalf("old record: %+v %v", o, err)
	}
	again, err := encodeObject(o)
	if err != nil || string(again) != old {
		t.Fatalf("old record re-encoded differently:\n%s\n%s (%v)", again, old, err)
	}

	in := &Object{Name: "x", ID: o.ID, Size: 3, Policy: o.Policy, Stripes: [][16]byte{},
		Inline: []byte{1, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 'a', 'b', 'c'}, InlineSum: []byte{0xde, 0xad}}
	raw, err := encodeObject(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(raw), `{"v":2,`) || !strings.Contains(string(raw), `"stripes":[],"inline":"AQAAAAMAAAADAAAAYWJj","inline_sum":"dead"`) {
		t.Fatalf("inline record: %s", raw)
	}
	back, err := decodeObject(key, raw)
	if err != nil || !bytes.Equal(back.Inline, in.Inline) || !bytes.Equal(back.InlineSum, in.InlineSum) || len(back.Stripes) != 0 {
		t.Fatalf("inline round trip: %+v %v", back, err)
	}

	both := *in
	both.Stripes = o.Stripes
	if _, err := encodeObject(&both); !errors.Is(err, ErrInvalid) {
		t.Fatalf("inline data with stripes encoded: %v", err)
	}
	noSum := *in
	noSum.InlineSum = nil
	if _, err := encodeObject(&noSum); !errors.Is(err, ErrInvalid) {
		t.Fatalf("inline data without checksum encoded: %v", err)
	}
	for name, rec := range map[string]string{
		"with stripes": strings.TrimSuffix(old, "}") + `,"inline":"YWJj","inline_sum":"dead"}`,
		"bad base64":   strings.Replace(string(raw), "AQAAAAMAAAADAAAAYWJj", "!!", 1),
		"bad sum":      strings.Replace(string(raw), `"dead"`, `"zz"`, 1),
		"sum only":     strings.Replace(string(raw), `"inline":"AQAAAAMAAAADAAAAYWJj",`, "", 1),
		"v2 striped":   strings.Replace(old, `{"v":1,`, `{"v":2,`, 1),
	} {
		if _, err := decodeObject(key, []byte(rec)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %s decoded: %v", name, rec, err)
		}
	}
}

// Inline records written at version 1 (before inline records moved to
// version 2) still decode and are rewritten at version 2; a version above
// what a record kind allows is ErrSchema.
func TestInlineRecordVersions(t *testing.T) {
	key := objectKey("x")
	v2 := `{"v":2,"name":"x","id":"8f1c02449a33710ec1552031aa901107","size":3,"policy":{"k":2,"m":1,"block_size":4194304,"compression":"none","encryption":"none","checksum":"xxh3-128"},"stripes":[],"inline":"AQAAAAMAAAADAAAAYWJj","inline_sum":"dead"}`
	v1 := strings.Replace(v2, `{"v":2,`, `{"v":1,`, 1)
	o, err := decodeObject(key, []byte(v1))
	if err != nil || !o.IsInline() || o.Size != 3 {
		t.Fatalf("version-1 inline record: %+v %v", o, err)
	}
	again, err := encodeObject(o)
	if err != nil || string(again) != v2 {
		t.Fatalf("version-1 inline record re-encoded as\n%s, want\n%s (%v)", again, v2, err)
	}
	if _, err := decodeObject(key, []byte(strings.Replace(v2, `{"v":2,`, `{"v":3,`, 1))); !errors.Is(err, ErrSchema) {
		t.Fatalf("version-3 object record: %v, want ErrSchema", err)
	}
	stripe := `{"v":2,"id":"3b9e4107d26a881f005ce27319b4a60d","object":"8f1c02449a33710ec1552031aa901107","block":0,"k":1,"m":0,"data_len":3,"version":1,"shards":[{}]}`
	if _, err := decodeStripe([]byte("stripe/3b9e4107d26a881f005ce27319b4a60d"), []byte(stripe)); !errors.Is(err, ErrSchema) {
		t.Fatalf("version-2 stripe record: %v, want ErrSchema", err)
	}
}

// Decode bounds an inline object's sealed block and its size; encode
// refuses the same objects.
func TestInlineRecordLimits(t *testing.T) {
	key := objectKey("x")
	rec := func(size int64, compression string, sealed []byte) string {
		return `{"v":2,"name":"x","id":"8f1c02449a33710ec1552031aa901107","size":` + strconv.FormatInt(size, 10) +
			`,"policy":{"k":2,"m":1,"block_size":4194304,"compression":"` + compression + `","encryption":"none","checksum":"xxh3-128"},"stripes":[],"inline":"` +
			base64.StdEncoding.EncodeToString(sealed) + `","inline_sum":"dead"}`
	}
	small := make([]byte, 15)
	big := make([]byte, MaxInlineSize+1)
	for _, tc := range []struct {
		name string
		rec  string
		ok   bool
	}{
		{"fits", rec(3, "none", small), true},
		{"empty", rec(0, "none", small), true},
		{"at limit", rec(MaxInlineSize-sealHeaderSize, "none", make([]byte, MaxInlineSize)), true},
		{"compressed", rec(4096, "zstd", small), true},
		{"negative size", rec(-1, "none", small), false},
		{"size beyond uncompressed block", rec(4, "none", small), false},
		{"size beyond limit", rec(MaxInlineSize+1, "zstd", small), false},
		{"block beyond limit", rec(3, "none", big), false},
	} {
		o, err := decodeObject(key, []byte(tc.rec))
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrCorrupt)) {
			t.Errorf("%s: decode: %v", tc.name, err)
			continue
		}
		if tc.ok {
			if _, err := encodeObject(o); err != nil {
				t.Errorf("%s: encode: %v", tc.name, err)
			}
		}
	}
	in := &Object{Name: "x", Size: 4, Policy: Policy{Compression: "none"}, Inline: small, InlineSum: []byte{1}}
	if _, err := encodeObject(in); !errors.Is(err, ErrInvalid) {
		t.Errorf("encoded an object larger than its uncompressed sealed block: %v", err)
	}
	in.Size = -1
	if _, err := encodeObject(in); !errors.Is(err, ErrInvalid) {
		t.Errorf("encoded an object of negative size: %v", err)
	}
}
