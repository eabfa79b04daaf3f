package metastore

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// recordVersion is the "v" field of every JSON record this code writes,
// except object records that carry inline data (inlineRecordVersion). A
// record with a higher version than its kind allows was written by a newer
// healstore and is refused with ErrSchema rather than half understood.
const recordVersion = 1

// inlineRecordVersion is the "v" of an object record that carries an inline
// object's sealed block (fields inline and inline_sum). Healstore releases
// before inline objects ignore unknown fields: given a version-1 record
// with inline data they would see an object without content and, on a
// rename or any other rewrite, drop the data. They refuse a version above
// 1 with ErrSchema, so inline records use 2. Records without inline data
// keep version 1, byte for byte as before.
const inlineRecordVersion = 2

// The *Rec types are the on-disk JSON forms (docs/metadata.md). They are kept
// apart from the API types so that renaming a Go field never changes the
// format.

type shardRec struct {
	Backend string `json:"backend,omitempty"`
	Key     string `json:"key,omitempty"`
	Size    int64  `json:"size,omitempty"`
	Sum     string `json:"sum,omitempty"` // hex
}

type objectRec struct {
	V        int               `json:"v"`
	Name     string            `json:"name"`
	ID       string            `json:"id"`
	Size     int64             `json:"size"`
	Created  string            `json:"created,omitempty"`
	Modified string            `json:"modified,omitempty"`
	Policy   Policy            `json:"policy"`
	Stripes  []string          `json:"stripes"`
	Mode     uint32            `json:"mode,omitempty"`
	Attrs    map[string]string `json:"attrs,omitempty"`
	// Inline objects (no stripes): the sealed block, base64 (standard
	// alphabet, padded), and its checksum, hex. Absent otherwise, so
	// records written before inline objects existed decode unchanged.
	Inline    string `json:"inline,omitempty"`
	InlineSum string `json:"inline_sum,omitempty"`
}

type stripeRec struct {
	V       int        `json:"v"`
	ID      string     `json:"id"`
	Object  string     `json:"object"`
	Block   uint64     `json:"block"`
	K       int        `json:"k"`
	M       int        `json:"m"`
	DataLen int        `json:"data_len"`
	Version uint64     `json:"version"`
	Shards  []shardRec `json:"shards"`
}

type repairRec struct {
	V         int    `json:"v"`
	Stripe    string `json:"stripe"`
	Margin    int    `json:"margin"`
	Queued    string `json:"queued"`
	Reason    string `json:"reason,omitempty"`
	Attempts  int    `json:"attempts,omitempty"`
	LastError string `json:"last_error,omitempty"`
	NotBefore string `json:"not_before,omitempty"`
}

type capacityRec struct {
	Known bool  `json:"known"`
	Used  int64 `json:"used"`
	Limit int64 `json:"limit"`
	Free  int64 `json:"free"`
}

type backendRec struct {
	V             int             `json:"v"`
	Name          string          `json:"name"`
	Spec          json.RawMessage `json:"spec,omitempty"`
	State         BackendState    `json:"state"`
	Since         string          `json:"since,omitempty"`
	LastProbe     string          `json:"last_probe,omitempty"`
	ProbeFailures int             `json:"probe_failures,omitempty"`
	LastError     string          `json:"last_error,omitempty"`
	Capacity      capacityRec     `json:"capacity"`
	Domain        string          `json:"domain,omitempty"`
	Spare         bool            `json:"spare,omitempty"`
	Marker        string          `json:"marker,omitempty"`
}

type garbageRec struct {
	V       int    `json:"v"`
	Backend string `json:"backend"`
	Key     string `json:"key"`
	After   string `json:"after"`
}

type intentRec struct {
	V       int        `json:"v"`
	ID      string     `json:"id"`
	Created string     `json:"created"`
	Shards  []shardRec `json:"shards"`
}

// marshal encodes a record without HTML escaping (records stay readable in
// a dump) and without a trailing newline.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// unmarshal decodes a record and checks its version against the highest
// one this healstore understands for the record's kind.
func unmarshal(key, raw []byte, v any, version *int, maxVersion int) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrCorrupt, key, err)
	}
	switch {
	case *version > maxVersion:
		return fmt.Errorf("%w: record %q has version %d, this healstore understands up to %d; it was written by a newer healstore: upgrade healstore",
			ErrSchema, key, *version, maxVersion)
	case *version < 1:
		return fmt.Errorf("%w: record %q has no version field", ErrCorrupt, key)
	}
	return nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// timeInRange reports whether t, in UTC, has a four-digit year: RFC 3339
// has no other, and a time outside would be written as text that no
// reader parses.
func timeInRange(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

// checkTimes refuses to encode a record with a time fmtTime cannot write
// readably (a FUSE mtime in the year 10000, say).
func checkTimes(what string, ts ...time.Time) error {
	for _, t := range ts {
		if !t.IsZero() && !timeInRange(t) {
			return fmt.Errorf("%w: %s: time %v outside the years 0 to 9999", ErrInvalid, what, t)
		}
	}
	return nil
}

func parseTime(key []byte, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %q: time %q: %v", ErrCorrupt, key, s, err)
	}
	if !timeInRange(t) {
		return time.Time{}, fmt.Errorf("%w: %q: time %q is outside the years 0 to 9999 in UTC", ErrCorrupt, key, s)
	}
	return t.UTC(), nil
}

func toShardRecs(shards []ShardLoc) []shardRec {
	out := make([]shardRec, len(shards))
	for i, sh := range shards {
		out[i] = shardRec{Backend: sh.Backend, Key: sh.Key, Size: sh.Size}
		if sh.Sum != nil {
			out[i].Sum = hex.EncodeToString(sh.Sum)
		}
	}
	return out
}

func fromShardRecs(key []byte, recs []shardRec) ([]ShardLoc, error) {
	out := make([]ShardLoc, len(recs))
	for i, r := range recs {
		out[i] = ShardLoc{Backend: r.Backend, Key: r.Key, Size: r.Size}
		if r.Sum != "" {
			sum, err := hex.DecodeString(r.Sum)
			if err != nil {
				return nil, fmt.Errorf("%w: %q: shard %d sum: %v", ErrCorrupt, key, i, err)
			}
			out[i].Sum = sum
		}
	}
	return out, nil
}

func checkShards(shards []ShardLoc) error {
	for i, sh := range shards {
		if sh.Backend == "" {
			continue
		}
		if err := validBackendName(sh.Backend); err != nil {
			return fmt.Errorf("shard %d: %w", i, err)
		}
		if !utf8.ValidString(sh.Key) {
			return fmt.Errorf("%w: shard %d key is not UTF-8", ErrInvalid, i)
		}
	}
	return nil
}

func encodeObject(o *Object) ([]byte, error) {
	if o.Name == "" {
		return nil, fmt.Errorf("%w: object without a name", ErrInvalid)
	}
	for k, v := range o.Attrs {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, fmt.Errorf("%w: object %q: attribute %q is not UTF-8", ErrInvalid, o.Name, k)
		}
	}
	if err := checkTimes(fmt.Sprintf("object %q", o.Name), o.Created, o.Modified); err != nil {
		return nil, err
	}
	r := objectRec{
		V: recordVersion, Name: o.Name, ID: hexID(o.ID), Size: o.Size,
		Created: fmtTime(o.Created), Modified: fmtTime(o.Modified),
		Policy: o.Policy, Stripes: make([]string, len(o.Stripes)), Mode: o.Mode, Attrs: o.Attrs,
	}
	for i, id := range o.Stripes {
		r.Stripes[i] = hexID(id)
	}
	if err := encodeInline(o, &r); err != nil {
		return nil, err
	}
	return marshal(&r)
}

// decodeObject takes the name from the key: JSON strings cannot carry names
// that are not valid UTF-8, the key can.
func decodeObject(key, raw []byte) (*Object, error) {
	var r objectRec
	if err := unmarshal(key, raw, &r, &r.V, inlineRecordVersion); err != nil {
		return nil, err
	}
	o := &Object{Name: string(key[len(pObject):]), Size: r.Size, Policy: r.Policy, Mode: r.Mode, Attrs: r.Attrs}
	var err error
	if o.ID, err = parseHexID(r.ID); err != nil {
		return nil, fmt.Errorf("object %q: %w", o.Name, err)
	}
	if o.Created, err = parseTime(key, r.Created); err != nil {
		return nil, err
	}
	if o.Modified, err = parseTime(key, r.Modified); err != nil {
		return nil, err
	}
	o.Stripes = make([][16]byte, len(r.Stripes))
	for i, s := range r.Stripes {
		if o.Stripes[i], err = parseHexID(s); err != nil {
			return nil, fmt.Errorf("object %q stripe %d: %w", o.Name, i, err)
		}
	}
	if err := decodeInline(key, &r, o); err != nil {
		return nil, err
	}
	return o, nil
}

func encodeStripe(s *Stripe) ([]byte, error) {
	if s.K < 1 || s.M < 0 || len(s.Shards) != s.K+s.M {
		return nil, fmt.Errorf("%w: stripe %s: k=%d m=%d with %d shards", ErrInvalid, hexID(s.ID), s.K, s.M, len(s.Shards))
	}
	if err := checkShards(s.Shards); err != nil {
		return nil, fmt.Errorf("stripe %s: %w", hexID(s.ID), err)
	}
	r := stripeRec{
		V: recordVersion, ID: hexID(s.ID), Object: hexID(s.Object), Block: s.Block,
		K: s.K, M: s.M, DataLen: s.DataLen, Version: s.Version, Shards: toShardRecs(s.Shards),
	}
	return marshal(&r)
}

func decodeStripe(key, raw []byte) (*Stripe, error) {
	var r stripeRec
	if err := unmarshal(key, raw, &r, &r.V, recordVersion); err != nil {
		return nil, err
	}
	s := &Stripe{Block: r.Block, K: r.K, M: r.M, DataLen: r.DataLen, Version: r.Version}
	var err error
	if s.ID, err = parseHexID(r.ID); err != nil {
		return nil, err
	}
	if s.Object, err = parseHexID(r.Object); err != nil {
		return nil, err
	}
	if s.Shards, err = fromShardRecs(key, r.Shards); err != nil {
		return nil, err
	}
	// What encodeStripe refuses is corrupt here: readers index shards by
	// k and m.
	if s.K < 1 || s.M < 0 || len(s.Shards) != s.K+s.M {
		return nil, fmt.Errorf("%w: %q: k=%d m=%d with %d shards", ErrCorrupt, key, s.K, s.M, len(s.Shards))
	}
	if err := checkShards(s.Shards); err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrCorrupt, key, err)
	}
	return s, nil
}

func encodeRepair(it *RepairItem) ([]byte, error) {
	if err := checkTimes("repair of stripe "+hexID(it.Stripe), it.Queued, it.NotBefore); err != nil {
		return nil, err
	}
	return marshal(&repairRec{
		V: recordVersion, Stripe: hexID(it.Stripe), Margin: it.Margin, Queued: fmtTime(it.Queued),
		Reason: it.Reason, Attempts: it.Attempts, LastError: it.LastError, NotBefore: fmtTime(it.NotBefore),
	})
}

func decodeRepair(key, raw []byte) (*RepairItem, error) {
	var r repairRec
	if err := unmarshal(key, raw, &r, &r.V, recordVersion); err != nil {
		return nil, err
	}
	it := &RepairItem{Margin: r.Margin, Reason: r.Reason, Attempts: r.Attempts, LastError: r.LastError}
	var err error
	if it.Stripe, err = parseHexID(r.Stripe); err != nil {
		return nil, err
	}
	if it.Queued, err = parseTime(key, r.Queued); err != nil {
		return nil, err
	}
	if it.NotBefore, err = parseTime(key, r.NotBefore); err != nil {
		return nil, err
	}
	return it, nil
}

func encodeBackend(b *BackendRecord) ([]byte, error) {
	if err := validBackendName(b.Name); err != nil {
		return nil, err
	}
	if err := checkTimes("backend "+b.Name, b.Since, b.LastProbe); err != nil {
		return nil, err
	}
	r := backendRec{
		V: recordVersion, Name: b.Name, State: b.State, Since: fmtTime(b.Since), LastProbe: fmtTime(b.LastProbe),
		ProbeFailures: b.ProbeFailures, LastError: b.LastError,
		Capacity: capacityRec(b.Capacity), Domain: b.Domain, Spare: b.Spare, Marker: b.Marker,
	}
	if len(b.SpecJSON) > 0 {
		if !json.Valid(b.SpecJSON) {
			return nil, fmt.Errorf("%w: backend %s: spec is not valid JSON", ErrInvalid, b.Name)
		}
		// Compact so the record stays one line; the bytes are otherwise kept.
		var buf bytes.Buffer
		if err := json.Compact(&buf, b.SpecJSON); err != nil {
			return nil, fmt.Errorf("%w: backend %s: spec: %v", ErrInvalid, b.Name, err)
		}
		r.Spec = buf.Bytes()
	}
	return marshal(&r)
}

func decodeBackend(key, raw []byte) (*BackendRecord, error) {
	var r backendRec
	if err := unmarshal(key, raw, &r, &r.V, recordVersion); err != nil {
		return nil, err
	}
	if err := validBackendName(string(key[len(pBackend):])); err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrCorrupt, key, err)
	}
	b := &BackendRecord{
		Name: string(key[len(pBackend):]), State: r.State, ProbeFailures: r.ProbeFailures, LastError: r.LastError,
		Capacity: Capacity(r.Capacity), Domain: r.Domain, Spare: r.Spare, Marker: r.Marker,
	}
	if len(r.Spec) > 0 {
		b.SpecJSON = []byte(r.Spec)
	}
	var err error
	if b.Since, err = parseTime(key, r.Since); err != nil {
		return nil, err
	}
	if b.LastProbe, err = parseTime(key, r.LastProbe); err != nil {
		return nil, err
	}
	return b, nil
}

func encodeGarbage(g *Garbage) ([]byte, error) {
	if err := validBackendName(g.Backend); err != nil {
		return nil, err
	}
	if g.Key == "" || !utf8.ValidString(g.Key) {
		return nil, fmt.Errorf("%w: garbage on %s: key %q must be non-empty UTF-8", ErrInvalid, g.Backend, g.Key)
	}
	if err := checkTimes("garbage on "+g.Backend, g.After); err != nil {
		return nil, err
	}
	return marshal(&garbageRec{V: recordVersion, Backend: g.Backend, Key: g.Key, After: fmtTime(g.After)})
}

func decodeGarbage(key, raw []byte) (*Garbage, error) {
	var r garbageRec
	if err := unmarshal(key, raw, &r, &r.V, recordVersion); err != nil {
		return nil, err
	}
	backend, k, err := parseGarbageKey(key)
	if err != nil {
		return nil, err
	}
	if err := validBackendName(backend); err != nil || k == "" || !utf8.ValidString(k) {
		return nil, fmt.Errorf("%w: garbage key %q: backend %q, key %q", ErrCorrupt, key, backend, k)
	}
	g := &Garbage{Backend: backend, Key: k}
	if g.After, err = parseTime(key, r.After); err != nil {
		return nil, err
	}
	return g, nil
}

func encodeIntent(in *Intent) ([]byte, error) {
	if err := checkShards(in.Shards); err != nil {
		return nil, fmt.Errorf("intent %s: %w", hexID(in.ID), err)
	}
	if err := checkTimes("intent "+hexID(in.ID), in.Created); err != nil {
		return nil, err
	}
	return marshal(&intentRec{V: recordVersion, ID: hexID(in.ID), Created: fmtTime(in.Created), Shards: toShardRecs(in.Shards)})
}

func decodeIntent(key, raw []byte) (*Intent, error) {
	var r intentRec
	if err := unmarshal(key, raw, &r, &r.V, recordVersion); err != nil {
		return nil, err
	}
	in := &Intent{}
	var err error
	if in.ID, err = parseHexID(r.ID); err != nil {
		return nil, err
	}
	if in.Created, err = parseTime(key, r.Created); err != nil {
		return nil, err
	}
	if in.Shards, err = fromShardRecs(key, r.Shards); err != nil {
		return nil, err
	}
	if err := checkShards(in.Shards); err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrCorrupt, key, err)
	}
	return in, nil
}
