package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/healstore/healstore/encoder"
)

// FuzzParseShardKey feeds ParseShardKey keys as a backend listing could
// return them. Snapshot pruning deletes what it parses, so a key that
// parses must be exactly one ShardKey builds: the parsed seq and id, and a
// stripe and shard number written as ShardKey writes them.
func FuzzParseShardKey(f *testing.F) {
	id, _ := encoder.ParseObjectID("00112233445566778899aabbccddeeff")
	for _, k := range []string{
		ShardKey(42, id, 3, 5), ShardKey(0, encoder.ObjectID{}, 0, 0), ShardKey(^uint64(0), id, 0x12345, 17),
		"shards/x", PointerKey, ShardPrefix + "zz", ShardPrefix + strings.Repeat("0", 16) + "-" + "x",
	} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		seq, pid, ok := ParseShardKey(key)
		if ok {
			// ParseShardKey returns no stripe or shard; take them from
			// the tail, which must be "-<stripe hex>.<shard>".
			tail := key[len(ShardPrefix)+16+1+32:]
			st, sh, found := strings.Cut(strings.TrimPrefix(tail, "-"), ".")
			stripe, err1 := strconv.ParseUint(st, 16, 31)
			shard, err2 := strconv.Atoi(sh)
			if !strings.HasPrefix(tail, "-") || !found || err1 != nil || err2 != nil {
				t.Fatalf("ParseShardKey(%q) accepted a key with no stripe and shard", key)
			}
			if want := ShardKey(seq, pid, int(stripe), shard); want != key {
				t.Fatalf("ParseShardKey(%q) = %d, %s, but ShardKey builds %q", key, seq, pid, want)
			}
		}

		// The other way: every key ShardKey builds parses back.
		var oid encoder.ObjectID
		copy(oid[:], key)
		s := uint64(len(key)) * 0x9e3779b97f4a7c15
		built := ShardKey(s, oid, len(key), len(key)%13)
		gs, gid, gok := ParseShardKey(built)
		if !gok || gs != s || gid != oid {
			t.Fatalf("ShardKey(%d, %s) = %q parses to %d, %s, %v", s, oid, built, gs, gid, gok)
		}
	})
}

// readAll reads a whole record stream, returning the records read before
// the first error and that error (nil after a clean end).
func readAll(t *testing.T, b []byte) ([]Record, *streamReader, error) {
	t.Helper()
	sr, err := newStreamReader(bytes.NewReader(b))
	if err != nil {
		return nil, nil, err
	}
	var recs []Record
	for {
		rec, err := sr.next()
		if err == io.EOF { // a clean end, not a wrapped one
			return recs, sr, nil
		}
		if err != nil {
			return recs, sr, err
		}
		recs = append(recs, rec)
	}
}

// writeAll writes recs with the package's stream writer.
func writeAll(t testing.TB, recs []Record) ([]byte, Hashes) {
	t.Helper()
	var buf bytes.Buffer
	sw, err := newStreamWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := sw.put(r.Key, r.Value); err != nil {
			t.Fatal(err)
		}
	}
	h, err := sw.finish()
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), h
}

// FuzzStreamReader feeds the snapshot record stream reader what a backend
// could hand `healstore recover`. Garbage, truncation and hostile length
// fields must end in an ErrCorrupt error, never a panic or an allocation
// out of proportion to the input. A stream that reads to its end was read
// whole (its SHA-256 is the reader's sum) and, written again by the
// writer, reads back record for record. Independently, records made from
// the input and written by the writer read back the same.
func FuzzStreamReader(f *testing.F) {
	valid, _ := writeAll(f, []Record{
		{Key: []byte("backend/b0"), Value: []byte(`{"name":"b0","kind":"local"}`)},
		{Key: []byte("meta/snapshot/status"), Value: []byte("{}")},
		{Key: []byte("obj/a"), Value: bytes.Repeat([]byte{7}, 300)},
		{Key: []byte("obj/b"), Value: nil},
	})
	empty, _ := writeAll(f, nil)
	f.Add(valid)
	f.Add(empty)
	f.Add(valid[:len(valid)/2])
	f.Add(append(bytes.Clone(valid), 'x'))
	f.Add([]byte(streamMagic + "P\x01k\xff\xff\xff\x7f"))        // value length 256 MiB - 1
	f.Add([]byte(streamMagic + "P\xff\xff\xff\xff\xff\xff\x01")) // key length past the cap
	f.Add([]byte("HEALSNAP\x02"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// The reader's own buffer is 256 KiB; beyond that, what it
		// allocates must follow what the input holds. The count covers
		// the whole process, so a goroutine left over from another test
		// can add to it: only three readings over the limit fail.
		var (
			recs []Record
			sr   *streamReader
			err  error
		)
		for try := 1; ; try++ {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			recs, sr, err = readAll(t, data)
			runtime.ReadMemStats(&after)
			got, limit := after.TotalAlloc-before.TotalAlloc, uint64(1<<20+16*len(data))
			if got <= limit {
				break
			}
			if try == 3 {
				t.Fatalf("reading %d bytes allocated %d bytes (limit %d)", len(data), got, limit)
			}
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not match ErrCorrupt", err)
			}
		} else {
			if sum := sha256.Sum256(data); sr.sum() != hex.EncodeToString(sum[:]) {
				t.Fatalf("read to the end, but the sum covers less than the %d bytes", len(data))
			}
			if _, err := sr.next(); err != io.EOF {
				t.Fatalf("next after the end: %v, want io.EOF", err)
			}
			if sr.records != int64(len(recs)) {
				t.Fatalf("reader counts %d records, returned %d", sr.records, len(recs))
			}
			checkRoundTrip(t, recs)
		}

		// Records made from the input: pieces split at 0 bytes, taken as
		// key, value, key, value...; keys sorted, each once, none empty.
		m := map[string][]byte{}
		parts := bytes.Split(data, []byte{0})
		for i := 0; i+1 < len(parts); i += 2 {
			if len(parts[i]) > 0 {
				m[string(parts[i])] = parts[i+1]
			}
		}
		var made []Record
		for _, k := range slices.Sorted(maps.Keys(m)) {
			made = append(made, Record{Key: []byte(k), Value: m[k]})
		}
		checkRoundTrip(t, made)
	})
}

// checkRoundTrip writes recs and reads them back.
func checkRoundTrip(t *testing.T, recs []Record) {
	t.Helper()
	b, h := writeAll(t, recs)
	got, sr, err := readAll(t, b)
	if err != nil {
		t.Fatalf("reading back %d written records: %v", len(recs), err)
	}
	if len(got) != len(recs) {
		t.Fatalf("wrote %d records, read back %d", len(recs), len(got))
	}
	for i := range recs {
		if !bytes.Equal(got[i].Key, recs[i].Key) || !bytes.Equal(got[i].Value, recs[i].Value) {
			t.Fatalf("record %d: read back %q=%q, wrote %q=%q", i, got[i].Key, got[i].Value, recs[i].Key, recs[i].Value)
		}
	}
	if sr.sum() != h.Full {
		t.Fatalf("reader sum %s, writer's %s", sr.sum(), h.Full)
	}
}
