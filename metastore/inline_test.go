package metastore

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// An object record written before inline objects existed decodes as it
// did, and an inline record round-trips; damaged or contradictory inline
// fields are refused.
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
	if !strings.Contains(string(raw), `"stripes":[],"inline":"AQAAAAMAAAADAAAAYWJj","inline_sum":"dead"`) {
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
	} {
		if _, err := decodeObject(key, []byte(rec)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %s decoded: %v", name, rec, err)
		}
	}
}
