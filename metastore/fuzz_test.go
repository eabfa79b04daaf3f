package metastore

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Seeds: a striped record, an inline record, inline records from before
// version 2, records of a newer version, and damaged ones.
var fuzzObjectSeeds = []string{
	`{"v":1,"name":"x","id":"8f1c02449a33710ec1552031aa901107","size":4194304,"created":"2026-12-01T06:30:00.123456789Z","modified":"2026-12-01T06:30:00.123456789Z","policy":{"k":2,"m":1,"block_size":4194304,"compression":"zstd","encryption":"aes-256-gcm","checksum":"xxh3-128"},"stripes":["3b9e4107d26a881f005ce27319b4a60d"],"mode":420,"attrs":{"uid":"1000"}}`,
	`{"v":1,"name":"x","id":"8f1c02449a33710ec1552031aa901107","size":3,"policy":{"k":2,"m":1,"block_size":4194304,"compression":"none","encryption":"none","checksum":"xxh3-128"},"stripes":["3b9e4107d26a881f005ce27319b4a60d"]}`,
	`{"v":2,"name":"x","id":"8f1c02449a33710ec1552031aa901107","size":3,"policy":{"k":2,"m":1,"block_size":4194304,"compression":"none","encryption":"none","checksum":"xxh3-128"},"stripes":[],"inline":"AQAAAAMAAAADAAAAYWJj","inline_sum":"dead"}`,
	`{"v":1,"name":"x","id":"8f1c02449a33710ec1552031aa901107","size":3,"policy":{"k":2,"m":1,"block_size":4194304,"compression":"none","encryption":"none","checksum":"xxh3-128"},"stripes":[],"inline":"AQAAAAMAAAADAAAAYWJj","inline_sum":"dead"}`,
	`{"v":2,"name":"x","id":"8f1c02449a33710ec1552031aa901107","size":70000,"policy":{"k":2,"m":1,"block_size":65536,"compression":"zstd","encryption":"none","checksum":"xxh3-128"},"stripes":[],"inline":"AQAAAAMAAAADAAAAYWJj","inline_sum":"dead"}`,
	`{"v":2,"name":"x","id":"8f1c02449a33710ec1552031aa901107","size":-1,"policy":{"compression":"none"},"stripes":[],"inline":"AQAAAAMAAAADAAAAYWJj","inline_sum":"dead"}`,
	`{"v":2,"name":"x","id":"8f1c02449a33710ec1552031aa901107","size":3,"stripes":["3b9e4107d26a881f005ce27319b4a60d"],"inline":"AQAAAAMAAAADAAAAYWJj","inline_sum":"dead"}`,
	`{"v":2,"name":"x","id":"8f1c02449a33710ec1552031aa901107","size":3,"stripes":[]}`,
	`{"v":3,"name":"x","id":"8f1c02449a33710ec1552031aa901107","size":3,"stripes":[],"inline":"AQAAAAMAAAADAAAAYWJj","inline_sum":"dead"}`,
	`{"v":2,"name":"x","id":"8f1c02449a33710ec1552031aa901107","size":3,"stripes":[],"inline":"!!","inline_sum":"zz"}`,
	`{"v":1,"name":"x","id":"8f1c","size":3,"created":"yesterday","stripes":["3b9e"]}`,
	`{"v":1,"attrs":{},"created":"0001-01-01T00:00:00Z","id":"00000000000000000000000000000000"}`,
	`{"v":1,"id":"00000000000000000000000000000000","created":"9999-12-31T23:00:00-01:00","modified":"0000-01-01T00:30:00+01:00"}`,
	`{"v":1,`,
	`{"name":"x"}`,
	`null`,
	``,
}

// FuzzDecodeObject: decoding any bytes never panics, and a record that
// decodes encodes again into a record that decodes to the same object and
// encodes to the same bytes.
func FuzzDecodeObject(f *testing.F) {
	for _, s := range fuzzObjectSeeds {
		f.Add("x", []byte(s))
	}
	f.Fuzz(func(t *testing.T, name string, raw []byte) {
		if name == "" {
			return // no object has an empty name: PutObject refuses it
		}
		key := objectKey(name)
		o, err := decodeObject(key, raw)
		if err != nil {
			return
		}
		if o.IsInline() && (len(o.Inline) > MaxInlineSize || o.Size < 0 || o.Size > MaxInlineSize) {
			t.Fatalf("decoded an inline object out of bounds: %d-byte block, size %d", len(o.Inline), o.Size)
		}
		b1, err := encodeObject(o)
		if err != nil {
			t.Fatalf("decoded %q but cannot encode it again: %v", raw, err)
		}
		o2, err := decodeObject(key, b1)
		if err != nil {
			t.Fatalf("re-encoded record %s does not decode: %v", b1, err)
		}
		if !reflect.DeepEqual(normObject(o), normObject(o2)) {
			t.Fatalf("round trip changed the object:\n%+v\n%+v", o, o2)
		}
		b2, err := encodeObject(o2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("second encoding differs:\n%s\n%s (%v)", b1, b2, err)
		}
		if want := o.IsInline(); want != strings.HasPrefix(string(b1), `{"v":2,`) {
			t.Fatalf("inline %v record encoded as %s", want, b1)
		}
	})
}

// normObject folds what the format cannot tell apart: no attributes and
// an empty attribute map.
func normObject(o *Object) *Object {
	c := *o
	if len(c.Attrs) == 0 {
		c.Attrs = nil
	}
	return &c
}

// FuzzDecodeRecords does the same for stripe, repair, backend, garbage and
// intent records.
func FuzzDecodeRecords(f *testing.F) {
	seeds := [][]string{
		{"3b9e4107d26a881f005ce27319b4a60d", `{"v":1,"id":"3b9e4107d26a881f005ce27319b4a60d","object":"8f1c02449a33710ec1552031aa901107","block":0,"k":2,"m":1,"data_len":4194304,"version":1,"shards":[{"backend":"zdb-a","key":"shards/3b.0","size":2097280,"sum":"5e11"},{"backend":"zdb-b","key":"shards/3b.1","size":2097280,"sum":"0102"},{}]}`},
		{"8000/18ed0d6fc717dd15/3b9e4107d26a881f005ce27319b4a60d", `{"v":1,"stripe":"3b9e4107d26a881f005ce27319b4a60d","margin":0,"queued":"2026-12-01T06:30:00.123456789Z","reason":"degraded write"}`},
		{"zdb-a", `{"v":1,"name":"zdb-a","spec":{"name":"zdb-a", "kind":"zdb"},"state":"up","since":"2026-12-01T06:30:00.123456789Z","capacity":{"known":true,"used":1,"limit":2,"free":1},"domain":"node:12","marker":"c0ffee/zdb-a"}`},
		{"18ed0e4153460515/zdb-c/shards/aa.2", `{"v":1,"backend":"zdb-c","key":"shards/aa.2","after":"2026-12-01T06:45:00.123456789Z"}`},
		{"3b9e4107d26a881f005ce27319b4a60d", `{"v":1,"id":"3b9e4107d26a881f005ce27319b4a60d","created":"2026-12-01T06:30:00.123456789Z","shards":[{"backend":"zdb-a","key":"shards/3b.0"}]}`},
	}
	for kind, s := range seeds {
		f.Add(uint8(kind), s[0], []byte(s[1]))
		f.Add(uint8(kind), s[0], []byte(strings.Replace(s[1], `{"v":1,`, `{"v":2,`, 1)))
		f.Add(uint8(kind), s[0], []byte(s[1][:len(s[1])/2]))
	}
	f.Fuzz(func(t *testing.T, kind uint8, suffix string, raw []byte) {
		var (
			decode func(key, raw []byte) (any, error)
			encode func(v any) ([]byte, error)
			prefix string
			norm   = func(v any) any { return v }
		)
		switch kind % 5 {
		case 0:
			prefix = pStripe
			decode = func(k, r []byte) (any, error) { return decodeStripe(k, r) }
			encode = func(v any) ([]byte, error) { return encodeStripe(v.(*Stripe)) }
		case 1:
			prefix = pQueue
			decode = func(k, r []byte) (any, error) { return decodeRepair(k, r) }
			encode = func(v any) ([]byte, error) { return encodeRepair(v.(*RepairItem)) }
		case 2:
			prefix = pBackend
			decode = func(k, r []byte) (any, error) { return decodeBackend(k, r) }
			encode = func(v any) ([]byte, error) { return encodeBackend(v.(*BackendRecord)) }
			norm = func(v any) any {
				b := *v.(*BackendRecord)
				if len(b.SpecJSON) > 0 {
					var buf bytes.Buffer
					if json.Compact(&buf, b.SpecJSON) == nil {
						b.SpecJSON = buf.Bytes()
					}
				}
				return &b
			}
		case 3:
			prefix = pGarbage
			decode = func(k, r []byte) (any, error) { return decodeGarbage(k, r) }
			encode = func(v any) ([]byte, error) { return encodeGarbage(v.(*Garbage)) }
		case 4:
			prefix = pIntent
			decode = func(k, r []byte) (any, error) { return decodeIntent(k, r) }
			encode = func(v any) ([]byte, error) { return encodeIntent(v.(*Intent)) }
		}
		key := []byte(prefix + suffix)
		v, err := decode(key, raw)
		if err != nil {
			return
		}
		b1, err := encode(v)
		if err != nil {
			t.Fatalf("decoded %q but cannot encode it again: %v", raw, err)
		}
		v2, err := decode(key, b1)
		if err != nil {
			t.Fatalf("re-encoded record %s does not decode: %v", b1, err)
		}
		if !reflect.DeepEqual(norm(v), norm(v2)) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", v, v2)
		}
		b2, err := encode(v2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("second encoding differs:\n%s\n%s (%v)", b1, b2, err)
		}
	})
}

// A time RFC 3339 cannot carry (a year beyond 9999 in UTC) is refused on
// encode, and on decode when an offset pushes it there, rather than written
// as a record no reader parses (found by FuzzDecodeObject).
func TestRecordTimeRange(t *testing.T) {
	far := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := encodeObject(&Object{Name: "x", Modified: far}); !errors.Is(err, ErrInvalid) {
		t.Errorf("object modified in the year 10000 encoded: %v", err)
	}
	if _, err := encodeIntent(&Intent{Created: far.AddDate(-10001, 0, 0)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("intent created in the year -1 encoded: %v", err)
	}
	if _, err := encodeObject(&Object{Name: "x", Modified: far.Add(-time.Nanosecond)}); err != nil {
		t.Errorf("object modified at the end of 9999: %v", err)
	}
	raw := `{"v":1,"name":"x","id":"00000000000000000000000000000000","modified":"9999-12-31T23:00:00-01:00","stripes":[]}`
	if _, err := decodeObject(objectKey("x"), []byte(raw)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("record with a time in the year 10000 UTC decoded: %v", err)
	}
}
