package metastore

import (
	"bytes"
	"slices"
	"testing"
	"time"
)

func TestQueueKeysSortByMarginThenTime(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	items := []RepairItem{ // in the order the queue must yield them
		{Margin: -40000, Queued: t0},                      // clamps to the lowest position
		{Margin: -1, Queued: t0.Add(time.Hour)},           // data lost: before every margin >= 0
		{Margin: 0, Queued: time.Time{}},                  // zero time sorts first at its margin
		{Margin: 0, Queued: t0},                           //
		{Margin: 0, Queued: t0.Add(time.Nanosecond)},      // nanosecond resolution
		{Margin: 1, Queued: t0.Add(-24 * time.Hour)},      // older but higher margin
		{Margin: 255, Queued: t0},                         //
		{Margin: 256, Queued: t0},                         // no lexical surprise past one hex digit
		{Margin: 1 << 20, Queued: t0.AddDate(-100, 0, 0)}, // clamps to the highest position
	}
	var keys [][]byte
	for i := range items {
		items[i].Stripe = [16]byte{byte(i)}
		keys = append(keys, queueKey(&items[i]))
	}
	if !slices.IsSortedFunc(keys, bytes.Compare) {
		for _, k := range keys {
			t.Logf("%s", k)
		}
		t.Fatal("queue keys are not in margin-then-age order")
	}
	if got := string(queueKey(&RepairItem{Margin: 0, Queued: time.Unix(0, 0x18ed0d6fc717dd15)})); got != "queue/8000/18ed0d6fc717dd15/00000000000000000000000000000000" {
		t.Fatalf("queue key layout %q (docs/metadata.md)", got)
	}
}

func TestGarbageKeyRoundTrip(t *testing.T) {
	g := Garbage{Backend: "zdb-1", Key: "shards/ab.3/x", After: time.Unix(0, 1)}
	k := garbageKey(&g)
	if string(k) != "garbage/0000000000000001/zdb-1/shards/ab.3/x" {
		t.Fatalf("garbage key %q", k)
	}
	be, key, err := parseGarbageKey(k)
	if err != nil || be != g.Backend || key != g.Key {
		t.Fatalf("parse: %q %q %v", be, key, err)
	}
	for _, bad := range []string{"garbage/", "garbage/00000000000000010/x/y", "garbage/0000000000000001//k", "garbage/0000000000000001/nokey"} {
		if _, _, err := parseGarbageKey([]byte(bad)); err == nil {
			t.Errorf("parseGarbageKey(%q) accepted", bad)
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""}, {"a", "b"}, {"a/", "a0"}, {"a\xff", "b"}, {"\xff\xff", ""}, {"ab\xff\xff", "ac"},
	} {
		got := PrefixEnd([]byte(tc.in))
		if string(got) != tc.want || (tc.want == "" && got != nil) {
			t.Errorf("PrefixEnd(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestBatchCopiesAndDedups(t *testing.T) {
	var b Batch
	k, v := []byte("k"), []byte("v")
	b.Put(k, v)
	k[0], v[0] = 'x', 'x'
	b.Delete([]byte("d"))
	b.Put([]byte("d"), []byte("back"))
	b.ExpectMissing([]byte("c"))
	ops := b.Ops()
	if len(ops) != 2 || string(ops[0].Key) != "k" || string(ops[0].Value) != "v" || ops[1].Delete || string(ops[1].Value) != "back" {
		t.Fatalf("ops %+v", ops)
	}
	if b.Empty() || b.Len() != 2 || len(b.Conds()) != 1 {
		t.Fatal("batch accounting")
	}
	var empty Batch
	if !empty.Empty() || empty.Validate() != nil {
		t.Fatal("zero batch")
	}
}
