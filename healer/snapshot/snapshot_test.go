package snapshot

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/local"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/metastore"
	"github.com/healstore/healstore/metastore/memkv"
)

func testKeys(t testing.TB) (*Keys, []byte) {
	t.Helper()
	master := make([]byte, 32)
	rand.Read(master)
	k, err := DeriveKeys(master)
	if err != nil {
		t.Fatal(err)
	}
	return k, master
}

type fixture struct {
	members []Member
	dirs    map[string]string
	open    map[string]backends.Backend
}

func newFixture(t *testing.T, n int) *fixture {
	t.Helper()
	f := &fixture{dirs: map[string]string{}, open: map[string]backends.Backend{}}
	for i := range n {
		name := fmt.Sprintf("b%d", i+1)
		spec := backends.Spec{Name: name, Kind: backends.KindLocal, Path: filepath.Join(t.TempDir(), name), Node: name}
		b, err := local.Open(spec)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		f.dirs[name] = spec.Path
		f.open[name] = b
		f.members = append(f.members, Member{Name: name, Spec: spec, Domain: spec.Domain("node"), Backend: b, Eligible: true})
	}
	return f
}

func (f *fixture) opener() Opener {
	return func(_ context.Context, name string) (backends.Backend, bool) {
		b, ok := f.open[name]
		return b, ok
	}
}

// fill writes n records of random sizes under a few prefixes.
func fill(t testing.TB, kv metastore.KV, rnd *mrand.Rand, n int) {
	t.Helper()
	var b metastore.Batch
	for i := range n {
		// Random bytes do not compress, so a few thousand records make
		// several stripes.
		v := make([]byte, rnd.IntN(3000))
		for j := range v {
			v[j] = byte(rnd.Uint32())
		}
		prefix := []string{"obj/", "stripe/", "bidx/x/", "queue/"}[i%4]
		b.Put(fmt.Appendf(nil, "%s%08d", prefix, i), v)
		if b.Len() >= 100 {
			if err := kv.Commit(context.Background(), &b); err != nil {
				t.Fatal(err)
			}
			b = metastore.Batch{}
		}
	}
	if err := kv.Commit(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
}

func dump(t testing.TB, kv metastore.KV) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := kv.Scan(context.Background(), nil, nil, func(k, v []byte) error {
		out[string(k)] = string(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameKV(t *testing.T, want, got map[string]string) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("restored %d keys, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("key %q: restored value differs (%d bytes, want %d)", k, len(got[k]), len(v))
		}
	}
}

func newSnapshotter(t *testing.T, keys *Keys, keep int) *Snapshotter {
	t.Helper()
	s, err := New(Config{Keys: keys, StoreID: "store-1", K: 4, M: 2, Keep: keep, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStreamRoundTripAndDamage(t *testing.T) {
	kv := memkv.New()
	seed := mrand.Uint64()
	t.Logf("seed %d", seed)
	fill(t, kv, mrand.New(mrand.NewPCG(seed, 1)), 300)
	sp, err := readView(context.Background(), kv, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sp.remove()
	if sp.records != 300 || sp.consistency != Settled {
		t.Fatalf("view: %d records, %s", sp.records, sp.consistency)
	}
	raw, err := os.ReadFile(sp.path)
	if err != nil {
		t.Fatal(err)
	}
	read := func(b []byte) (int, error) {
		sr, err := newStreamReader(bytes.NewReader(b))
		if err != nil {
			return 0, err
		}
		n := 0
		for {
			_, err := sr.next()
			if errors.Is(err, io.EOF) {
				if sr.sum() != sp.hashes.Full {
					return n, errors.New("sum differs")
				}
				return n, nil
			}
			if err != nil {
				return n, err
			}
			n++
		}
	}
	if n, err := read(raw); err != nil || n != 300 {
		t.Fatalf("read back %d records: %v", n, err)
	}
	for _, cut := range []int{5, len(raw) / 2, len(raw) - 1} {
		if _, err := read(raw[:cut]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("truncated at %d: %v, want ErrCorrupt", cut, err)
		}
	}
	if _, err := read(append(bytes.Clone(raw), 'x')); !errors.Is(err, ErrCorrupt) {
		t.Errorf("trailing byte: %v, want ErrCorrupt", err)
	}
}

func TestPointerSeal(t *testing.T) {
	keys, _ := testKeys(t)
	other, _ := testKeys(t)
	p := &Pointer{Format: pointerFormat, StoreID: "s1", Written: time.Now().UTC(),
		Backends:  []backends.Spec{{Name: "zdb-secretive", Kind: backends.KindZDB, Address: "10.0.0.1:9900", Namespace: "ns", SecretRef: "zdb-ref"}},
		Snapshots: []Manifest{{ID: encoder.NewObjectID(), Seq: 7}}}
	sealed, err := keys.Seal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, clear := range []string{"zdb-secretive", "10.0.0.1", "zdb-ref", "s1"} {
		if bytes.Contains(sealed, []byte(clear)) {
			t.Errorf("sealed pointer shows %q in the clear", clear)
		}
	}
	got, err := keys.Open(sealed)
	if err != nil || got.Snapshots[0].Seq != 7 || got.Backends[0].SecretRef != "zdb-ref" {
		t.Fatalf("open: %+v, %v", got, err)
	}
	if _, err := other.Open(sealed); !errors.Is(err, ErrWrongKey) {
		t.Errorf("other key: %v, want ErrWrongKey", err)
	}
	for _, i := range []int{len(sealed) - 1, pointerHeader + 3, len(pointerMagic) + 8} {
		bad := bytes.Clone(sealed)
		bad[i] ^= 1
		if _, err := keys.Open(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("flipped byte %d: %v, want ErrCorrupt", i, err)
		}
	}
	// A pointer built by someone without the key cannot carry this key's
	// check and still authenticate.
	forged := bytes.Clone(sealed[:pointerHeader])
	forged = append(forged, bytes.Repeat([]byte{0}, 200)...)
	if _, err := keys.Open(forged); !errors.Is(err, ErrCorrupt) {
		t.Errorf("forged pointer: %v, want ErrCorrupt", err)
	}
}

func TestTakeRestorePrune(t *testing.T) {
	ctx := context.Background()
	keys, _ := testKeys(t)
	f := newFixture(t, 6)
	kv := memkv.New()
	seed := mrand.Uint64()
	t.Logf("seed %d", seed)
	rnd := mrand.New(mrand.NewPCG(seed, 2))
	fill(t, kv, rnd, 4000) // about 6 MiB: two stripes
	s := newSnapshotter(t, keys, 2)
	res, err := s.Take(ctx, kv, f.members, TakeOptions{Settings: []byte(`{"x":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Uploaded || res.Pointers != 6 || res.Newest.Seq != 1 || len(res.Newest.Stripes) < 2 {
		t.Fatalf("first take: uploaded %v, %d pointers, seq %d, %d stripes", res.Uploaded, res.Pointers, res.Newest.Seq, len(res.Newest.Stripes))
	}
	for _, st := range res.Newest.Stripes {
		seen := map[string]bool{}
		for _, sh := range st.Shards {
			if seen[sh.Backend] {
				t.Fatalf("stripe %s: two shards on %s", st.ID, sh.Backend)
			}
			seen[sh.Backend] = true
		}
	}
	want := dump(t, kv)
	restoreAndCompare := func(m *Manifest, want map[string]string) {
		t.Helper()
		dst := memkv.New()
		n, err := Restore(ctx, keys, m, f.opener(), dst)
		if err != nil {
			t.Fatal(err)
		}
		if n != int64(len(want)) {
			t.Fatalf("restored %d records, want %d", n, len(want))
		}
		sameKV(t, want, dump(t, dst))
	}
	restoreAndCompare(&res.Newest, want)

	// Nothing changed: no upload.
	res, err = s.Take(ctx, kv, f.members, TakeOptions{})
	if err != nil || res.Uploaded {
		t.Fatalf("unchanged take: uploaded %v, %v", res.Uploaded, err)
	}
	// A backend that lost its pointer (wiped) gets it back at the next
	// check, even without an upload.
	if err := f.open["b2"].Delete(ctx, PointerKey); err != nil {
		t.Fatal(err)
	}
	if res, err = s.Take(ctx, kv, f.members, TakeOptions{}); err != nil || res.Uploaded {
		t.Fatalf("take after a lost pointer: %v", err)
	}
	if _, err := f.open["b2"].Stat(ctx, PointerKey); err != nil {
		t.Fatalf("the lost pointer was not rewritten: %v", err)
	}
	// Only a volatile value changed: no upload before MaxAge...
	var b metastore.Batch
	b.Put([]byte("backend/b1"), []byte(`{"probe":"now"}`))
	if err := kv.Commit(ctx, &b); err != nil {
		t.Fatal(err)
	}
	if res, err = s.Take(ctx, kv, f.members, TakeOptions{MaxAge: time.Hour}); err != nil || res.Uploaded {
		// The key is new, so it is a significant change.
		if err != nil || !res.Uploaded {
			t.Fatalf("new volatile key: uploaded %v, %v", res.Uploaded, err)
		}
	}
	b = metastore.Batch{}
	b.Put([]byte("backend/b1"), []byte(`{"probe":"later"}`))
	kv.Commit(ctx, &b)
	if res, err = s.Take(ctx, kv, f.members, TakeOptions{MaxAge: time.Hour}); err != nil || res.Uploaded {
		t.Fatalf("volatile value change: uploaded %v, %v", res != nil && res.Uploaded, err)
	}
	// ...but at once when it is old enough.
	if res, err = s.Take(ctx, kv, f.members, TakeOptions{MaxAge: time.Nanosecond}); err != nil || !res.Uploaded {
		t.Fatalf("volatile change past MaxAge: %v", err)
	}
	// A significant change is snapshotted, and Keep=2 prunes the oldest.
	fill(t, kv, rnd, 10)
	res, err = s.Take(ctx, kv, f.members, TakeOptions{})
	if err != nil || !res.Uploaded || res.Newest.Seq != 4 {
		t.Fatalf("take after change: %+v, %v", res, err)
	}
	kept := s.Kept()
	if len(kept) != 2 || kept[0].Seq != 4 || kept[1].Seq != 3 {
		t.Fatalf("kept %d snapshots", len(kept))
	}
	seqs := map[uint64]bool{}
	for _, m := range f.members {
		m.Backend.List(ctx, ShardPrefix, func(key string, _ int64) error {
			seq, _, ok := ParseShardKey(key)
			if !ok {
				t.Errorf("unparsable snapshot key %q", key)
			}
			seqs[seq] = true
			return nil
		})
	}
	if len(seqs) != 2 || !seqs[3] || !seqs[4] {
		t.Fatalf("snapshot shards of sequences %v on the backends, want 3 and 4 only", seqs)
	}
	restoreAndCompare(&kept[0], dump(t, kv))

	// A new snapshotter (a restart) reads the pointers and continues.
	s2 := newSnapshotter(t, keys, 2)
	fill(t, kv, rnd, 5)
	res, err = s2.Take(ctx, kv, f.members, TakeOptions{})
	if err != nil || res.Newest.Seq != 5 {
		t.Fatalf("restarted snapshotter: %+v, %v", res, err)
	}
	cat := Merge(ReadPointers(ctx, keys, backendsOf(f.members)))
	if cat.Read != 6 || len(cat.Snapshots) != 2 || cat.Snapshots[0].Seq != 5 || cat.StoreID != "store-1" || len(cat.Specs) != 6 {
		t.Fatalf("catalog: read %d, %d snapshots, specs %d", cat.Read, len(cat.Snapshots), len(cat.Specs))
	}
	if string(cat.Snapshots[0].Settings) != `{"x":1}` && string(cat.Snapshots[0].Settings) != "" {
		t.Fatalf("settings %s", cat.Snapshots[0].Settings)
	}
}

func backendsOf(ms []Member) []backends.Backend {
	var out []backends.Backend
	for _, m := range ms {
		out = append(out, m.Backend)
	}
	return out
}

func TestRestoreWithLostAndCorruptShards(t *testing.T) {
	ctx := context.Background()
	keys, _ := testKeys(t)
	f := newFixture(t, 6)
	kv := memkv.New()
	fill(t, kv, mrand.New(mrand.NewPCG(3, 3)), 800)
	s := newSnapshotter(t, keys, 3)
	res, err := s.Take(ctx, kv, f.members, TakeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := res.Newest
	want := dump(t, kv)
	// Two backends gone (m=2): still readable.
	down := map[string]bool{"b1": true, "b4": true}
	open := func(_ context.Context, name string) (backends.Backend, bool) {
		if down[name] {
			return nil, false
		}
		return f.open[name], true
	}
	dst := memkv.New()
	if _, err := Restore(ctx, keys, &m, open, dst); err != nil {
		t.Fatalf("two backends down: %v", err)
	}
	sameKV(t, want, dump(t, dst))
	// A third one with a corrupted shard: too few good shards.
	st := m.Stripes[0]
	var victim ShardRef
	for _, sh := range st.Shards {
		if !down[sh.Backend] {
			victim = sh
			break
		}
	}
	v, _ := f.open[victim.Backend].Get(ctx, victim.Key)
	v[len(v)-1] ^= 0xff
	f.open[victim.Backend].Put(ctx, victim.Key, v)
	_, err = Restore(ctx, keys, &m, open, memkv.New())
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, encoder.ErrTooFewShards) {
		t.Fatalf("three shards bad: %v, want ErrCorrupt and ErrTooFewShards", err)
	}
	// The wrong key does not open the blocks.
	other, _ := testKeys(t)
	if _, err := Restore(ctx, other, &m, f.opener(), memkv.New()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong key: %v", err)
	}
}

// TestSettledViewUnderWrites commits pairs of keys that must always be
// equal (a/i and z/i, at the two ends of the key space) while snapshots
// are taken: a walk that saw half of a commit would restore a pair that
// differs.
func TestSettledViewUnderWrites(t *testing.T) {
	ctx := context.Background()
	keys, _ := testKeys(t)
	f := newFixture(t, 6)
	kv := memkv.New()
	fill(t, kv, mrand.New(mrand.NewPCG(4, 4)), 300)
	s := newSnapshotter(t, keys, 3)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for gen := 0; ; gen++ {
			select {
			case <-stop:
				return
			default:
			}
			var b metastore.Batch
			for i := range 5 {
				v := fmt.Appendf(nil, "gen-%d", gen)
				b.Put(fmt.Appendf(nil, "a/%d", i), v)
				b.Put(fmt.Appendf(nil, "z/%d", i), v)
			}
			kv.Commit(ctx, &b)
			// Bursts of commits with quiet gaps: a settled view needs a
			// walk without commits, which a walk under constant writes
			// never gets (engines with point-in-time reads do not care).
			if gen%10 == 9 {
				time.Sleep(200 * time.Millisecond)
			} else {
				time.Sleep(time.Duration(mrand.IntN(1000)) * time.Microsecond)
			}
		}
	}()
	uploaded, busy := 0, 0
	deadline := time.Now().Add(20 * time.Second)
	for uploaded < 2 && time.Now().Before(deadline) {
		res, err := s.Take(ctx, kv, f.members, TakeOptions{})
		if errors.Is(err, ErrBusy) {
			busy++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if !res.Uploaded {
			continue
		}
		uploaded++
		dst := memkv.New()
		if _, err := Restore(ctx, keys, &res.Newest, f.opener(), dst); err != nil {
			t.Fatal(err)
		}
		got := dump(t, dst)
		for i := range 5 {
			a, z := got[fmt.Sprintf("a/%d", i)], got[fmt.Sprintf("z/%d", i)]
			if a != z {
				t.Fatalf("snapshot %d holds half a commit: a/%d=%q z/%d=%q", res.Newest.Seq, i, a, i, z)
			}
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d snapshots under writes, %d busy attempts", uploaded, busy)
	if uploaded == 0 {
		t.Fatal("no snapshot settled in 20s of bursty writes")
	}
	// Once the writes stop, a snapshot always succeeds.
	if _, err := s.Take(ctx, kv, f.members, TakeOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestChangeCounting(t *testing.T) {
	ctx := context.Background()
	kv := memkv.New()
	if _, _, ok, err := Changes(ctx, kv); ok || err != nil {
		t.Fatalf("memkv counts changes? ok=%v err=%v", ok, err)
	}
	c := CountCommits(kv)
	var b metastore.Batch
	b.Put([]byte("k"), []byte("v"))
	for range 3 {
		if err := c.Commit(ctx, &b); err != nil {
			t.Fatal(err)
		}
	}
	b = metastore.Batch{}
	b.ExpectMissing([]byte("k"))
	b.Put([]byte("j"), nil)
	if err := c.Commit(ctx, &b); !errors.Is(err, metastore.ErrConflict) {
		t.Fatal(err)
	}
	pos, ctr, ok, err := Changes(ctx, c)
	if !ok || err != nil || pos != 3 || !strings.HasPrefix(ctr, "process:") {
		t.Fatalf("counted %d (%s, ok=%v, %v), want 3", pos, ctr, ok, err)
	}
	if Unwrap(c) != metastore.KV(kv) {
		t.Fatal("Unwrap does not reach the engine")
	}
}

func TestShardKeys(t *testing.T) {
	id := encoder.NewObjectID()
	key := ShardKey(42, id, 3, 5)
	if err := backends.CheckKey(key); err != nil {
		t.Fatal(err)
	}
	seq, got, ok := ParseShardKey(key)
	if !ok || seq != 42 || got != id {
		t.Fatalf("parse %q: %d %s %v", key, seq, got, ok)
	}
	for _, bad := range []string{"shards/x", PointerKey, ShardPrefix + "zz", ShardPrefix + strings.Repeat("0", 16) + "-" + "x"} {
		if _, _, ok := ParseShardKey(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}
