package healstore

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/local"
	"github.com/healstore/healstore/healer/snapshot"
	"github.com/healstore/healstore/metastore"
)

// recoverFixture is a store of six local backends (4+2) whose frontend
// state (metadata, cache, config) lives apart from the backends, so a
// test can destroy the frontend and keep the data.
type recoverFixture struct {
	front   string // frontend directory: meta, cache, key
	specs   []backends.Spec
	keyFile string
	cfg     *Config
}

func newRecoverFixture(t *testing.T) *recoverFixture {
	t.Helper()
	root := t.TempDir()
	f := &recoverFixture{front: filepath.Join(root, "frontend")}
	if err := os.MkdirAll(f.front, 0o700); err != nil {
		t.Fatal(err)
	}
	f.keyFile = filepath.Join(root, "healstore.key") // the key's backup lives apart too
	if err := GenerateMasterKey(f.keyFile); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		f.specs = append(f.specs, backends.Spec{Name: fmt.Sprintf("b%d", i+1), Kind: backends.KindLocal,
			Path: filepath.Join(root, "backends", fmt.Sprintf("b%d", i+1)), Node: fmt.Sprintf("n%d", i+1)})
	}
	cfg := DefaultConfig()
	cfg.Dir = f.front
	cfg.MasterKeyFile = f.keyFile
	cfg.Policy.BlockSize = 64 << 10
	cfg.Backends = f.specs
	f.cfg = cfg
	return f
}

func (f *recoverFixture) open(t *testing.T) *Store {
	t.Helper()
	cfg := *f.cfg
	s, err := Open(context.Background(), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// recPutRandom writes n objects of random sizes (up to three blocks) and
// returns their contents.
func recPutRandom(t *testing.T, s *Store, rnd *rand.Rand, prefix string, n int) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for i := range n {
		data := make([]byte, rnd.IntN(150<<10))
		for j := range data {
			data[j] = byte(rnd.Uint32())
		}
		name := fmt.Sprintf("%s/%03d", prefix, i)
		if _, err := s.Put(context.Background(), name, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		out[name] = data
	}
	return out
}

func recStripes(t *testing.T, s *Store, names map[string][]byte) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for name := range names {
		o, err := s.meta.GetObject(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range o.Stripes {
			out[hex.EncodeToString(id[:])] = true
		}
	}
	return out
}

func recReadBack(t *testing.T, s *Store, want map[string][]byte) {
	t.Helper()
	for name, data := range want {
		r, err := s.Open(context.Background(), name)
		if err != nil {
			t.Fatalf("open %s: %v", name, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: read %d bytes that differ from the %d written", name, len(got), len(data))
		}
	}
}

// destroyFrontend deletes the store's metadata and cache, as losing the
// machine would.
// snapshotAndClose takes one metadata snapshot of s and closes it.
func snapshotAndClose(t *testing.T, s *Store) {
	t.Helper()
	sn, err := s.NewSnapshotter(SnapshotConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Take(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func (f *recoverFixture) destroyFrontend(t *testing.T) {
	t.Helper()
	for _, d := range []string{"meta", "cache"} {
		if err := os.RemoveAll(filepath.Join(f.front, d)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRecoverFromOneBackend(t *testing.T) {
	ctx := context.Background()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 7))
	f := newRecoverFixture(t)
	f.cfg.InlineMaxSize = 1000 // not the default: recovery keeps it
	s := f.open(t)
	before := recPutRandom(t, s, rnd, "before", 20)
	snapCfg := SnapshotConfig{Interval: Duration(45 * time.Second), MaxChanges: 77, MaxAge: Duration(time.Hour), Keep: 5}
	sn, err := s.NewSnapshotter(snapCfg)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := sn.Take(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "before/000"); err != nil { // after the snapshot: recovery brings it back
		t.Fatal(err)
	}
	after := recPutRandom(t, s, rnd, "after", 5)
	afterStripes := recStripes(t, s, after)
	storeID := s.StoreID()
	s.Close()
	f.destroyFrontend(t)

	target := filepath.Join(t.TempDir(), "recovered")
	rep, err := Recover(ctx, RecoverOptions{KeyFile: f.keyFile, Backends: f.specs[2:3], Dir: target})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Snapshot.ID != snap.ID || rep.StoreID != storeID || rep.Objects != len(before) || len(rep.Skipped) != 0 {
		t.Fatalf("report: snapshot %s (want %s), store %s, %d objects (want %d), skipped %v",
			rep.Snapshot.ID, snap.ID, rep.StoreID, rep.Objects, len(before), rep.Skipped)
	}
	if rep.Pointers.Read != 6 || len(rep.Unreachable) != 0 || len(rep.Damaged) != 0 || rep.Queued != 0 {
		t.Fatalf("report: %d pointers read, unreachable %v, damaged %v, queued %d", rep.Pointers.Read, rep.Unreachable, rep.Damaged, rep.Queued)
	}
	// The shards written after the snapshot are found and reported.
	got := map[string]bool{}
	for _, ls := range rep.Later {
		got[ls.Stripe] = true
		if !ls.Complete || ls.K != 4 || ls.M != 2 || len(ls.Shards) != 6 {
			t.Errorf("later stripe %s: complete %v, k=%d m=%d, %d shards", ls.Stripe, ls.Complete, ls.K, ls.M, len(ls.Shards))
		}
	}
	if len(got) != len(afterStripes) || rep.LaterShards != 6*len(afterStripes) {
		t.Fatalf("%d later stripes (%d shards) reported, %d written after the snapshot", len(got), rep.LaterShards, len(afterStripes))
	}
	for id := range afterStripes {
		if !got[id] {
			t.Fatalf("stripe %s written after the snapshot is not reported", id)
		}
	}

	cfg, err := LoadConfig(rep.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Policy != f.cfg.Policy {
		t.Fatalf("recovered policy %v, want %v", cfg.Policy, f.cfg.Policy)
	}
	if cfg.InlineMaxSize != 1000 || cfg.Snapshots != snapCfg {
		t.Fatalf("recovered inline_max_size %d and snapshots %+v, want 1000 and %+v", cfg.InlineMaxSize, cfg.Snapshots, snapCfg)
	}
	r, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.StoreID() != storeID {
		t.Fatalf("recovered store id %s, want %s", r.StoreID(), storeID)
	}
	recReadBack(t, r, before)
	for name := range after {
		if _, err := r.Stat(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s was written after the snapshot, stat: %v", name, err)
		}
	}
	// The recovered store keeps working: writes, and a new snapshot.
	more := recPutRandom(t, r, rnd, "more", 3)
	recReadBack(t, r, more)
	sn2, err := r.NewSnapshotter(SnapshotConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := sn2.Take(ctx, false); err != nil || info.Seq != snap.Seq+1 {
		t.Fatalf("snapshot after recovery: %+v, %v", info, err)
	}
	assertNoKeyOnBackends(t, f)
}

// assertNoKeyOnBackends checks that no value on any backend holds the
// master key, in hex or raw.
func assertNoKeyOnBackends(t *testing.T, f *recoverFixture) {
	t.Helper()
	key, err := LoadMasterKey(f.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	hexKey := []byte(hex.EncodeToString(key))
	for _, spec := range f.specs {
		filepath.WalkDir(spec.Path, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(path)
			if bytes.Contains(b, key) || bytes.Contains(b, hexKey) {
				t.Errorf("%s holds the master key", path)
			}
			return nil
		})
	}
}

// corruptSnapshot flips a byte in every shard of snapshot id that lives
// on one of the named backends.
func corruptSnapshot(t *testing.T, f *recoverFixture, id string, on ...string) int {
	t.Helper()
	n := 0
	for _, spec := range f.specs {
		if !recContains(on, spec.Name) {
			continue
		}
		b, err := local.Open(spec)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		b.List(context.Background(), snapshot.ShardPrefix, func(key string, _ int64) error {
			if _, sid, ok := snapshot.ParseShardKey(key); ok && sid.String() == id {
				keys = append(keys, key)
			}
			return nil
		})
		for _, key := range keys {
			v, err := b.Get(context.Background(), key)
			if err != nil {
				t.Fatal(err)
			}
			v[len(v)/2] ^= 0x40
			if err := b.Put(context.Background(), key, v); err != nil {
				t.Fatal(err)
			}
			n++
		}
		b.Close()
	}
	return n
}

func recContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// recTakeDown makes a local backend unreachable: its directory is replaced
// by a file, so opening it fails.
func recTakeDown(t *testing.T, spec backends.Spec) {
	t.Helper()
	if err := os.Rename(spec.Path, spec.Path+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(spec.Path, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRecoverFallsBackAndToleratesDownBackends(t *testing.T) {
	ctx := context.Background()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 8))
	f := newRecoverFixture(t)
	s := f.open(t)
	first := recPutRandom(t, s, rnd, "first", 10)
	sn, err := s.NewSnapshotter(SnapshotConfig{})
	if err != nil {
		t.Fatal(err)
	}
	older, err := sn.Take(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	second := recPutRandom(t, s, rnd, "second", 4)
	newest, err := sn.Take(ctx, false)
	if err != nil || newest.Seq != older.Seq+1 {
		t.Fatalf("second snapshot: %+v, %v", newest, err)
	}
	s.Close()
	f.destroyFrontend(t)
	// The newest snapshot loses three shards per stripe to corruption
	// (m=2 survives two), and two other backends are down.
	if n := corruptSnapshot(t, f, newest.ID, "b1", "b2", "b3"); n < 3 {
		t.Fatalf("corrupted %d shards", n)
	}
	recTakeDown(t, f.specs[4])
	recTakeDown(t, f.specs[5])

	target := filepath.Join(t.TempDir(), "recovered")
	rep, err := Recover(ctx, RecoverOptions{KeyFile: f.keyFile, Backends: []backends.Spec{f.specs[0], f.specs[5]}, Dir: target})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Snapshot.ID != older.ID || len(rep.Skipped) != 1 || rep.Skipped[0].Snapshot.ID != newest.ID {
		t.Fatalf("restored %s (want the older %s), skipped %+v", rep.Snapshot.ID, older.ID, rep.Skipped)
	}
	if len(rep.Unreachable) != 2 || rep.Unreachable["b5"] == "" || rep.Unreachable["b6"] == "" {
		t.Fatalf("unreachable: %v", rep.Unreachable)
	}
	if rep.Objects != len(first) || len(rep.Damaged) != 0 {
		t.Fatalf("%d objects, damaged %v", rep.Objects, rep.Damaged)
	}
	t.Logf("skipped: %s", rep.Skipped[0].Error)
	r := openConfigFile(t, rep.ConfigPath)
	recReadBack(t, r, first) // four of six backends: still enough
	for name := range second {
		if _, err := r.Stat(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if rep.LaterShards == 0 {
		t.Fatal("the shards written after the older snapshot are not reported")
	}
}

// A stripe recovery finds short is reported by object, stripe, missing
// shard indices and the backends they were on, with how many are present of
// the k needed: in the report, its JSON and the repair queue's reason.
func TestRecoverNamesMissingShards(t *testing.T) {
	ctx := context.Background()
	f := newRecoverFixture(t)
	s := f.open(t)
	data := bytes.Repeat([]byte("recover names the shards "), 2000) // one block, not inline
	for _, name := range []string{"lost", "short", "whole"} {
		if _, err := s.Put(ctx, name, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	stripe0 := func(name string) *metastore.Stripe {
		o, err := s.meta.GetObject(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		st, err := s.meta.GetStripe(ctx, o.Stripes[0])
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	lose := func(st *metastore.Stripe, idx ...int) {
		for _, i := range idx {
			b, _ := s.Backend(st.Shards[i].Backend)
			if err := b.Delete(ctx, st.Shards[i].Key); err != nil {
				t.Fatal(err)
			}
		}
	}
	lost, short := stripe0("lost"), stripe0("short")
	lose(lost, 0, 2, 5) // 3 of 4 left: unreadable
	lose(short, 1)      // 5 of 4: queued for repair
	// A cause only the queue knows (a backend found wiped, now up with
	// a fresh marker) must outlive the survey's own queueing.
	wiped := "backend " + short.Shards[3].Backend + " wiped"
	if err := s.meta.Enqueue(ctx, metastore.RepairItem{Stripe: short.ID, Margin: 2, Queued: time.Now(), Reason: wiped}); err != nil {
		t.Fatal(err)
	}
	snapshotAndClose(t, s)
	f.destroyFrontend(t)

	rep, err := Recover(ctx, RecoverOptions{KeyFile: f.keyFile, Backends: f.specs, Dir: filepath.Join(t.TempDir(), "recovered")})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Damaged) != 1 || rep.Damaged[0] != "lost" || rep.Queued != 2 || rep.DamagedStripeCount != 1 || len(rep.DamagedStripes) != 1 {
		t.Fatalf("damaged %v, %d damaged stripes %+v, queued %d", rep.Damaged, rep.DamagedStripeCount, rep.DamagedStripes, rep.Queued)
	}
	on := func(st *metastore.Stripe, i int) string { return st.Shards[i].Backend }
	ds := rep.DamagedStripes[0]
	if ds.Object != "lost" || ds.Stripe != hex.EncodeToString(lost.ID[:]) || ds.K != 4 || ds.Present != 3 ||
		fmt.Sprint(ds.Missing) != "[0 2 5]" || len(ds.MissingShards) != 3 ||
		ds.MissingShards[1] != (ShardLocation{Index: 2, Backend: on(lost, 2), Key: lost.Shards[2].Key}) {
		t.Fatalf("damaged stripe %+v", ds)
	}
	wantLost := fmt.Sprintf("object \"lost\" stripe %x: 3 present, 4 needed; missing 0 (%s), 2 (%s), 5 (%s)",
		lost.ID, on(lost, 0), on(lost, 2), on(lost, 5))
	if ds.Detail != wantLost {
		t.Fatalf("detail %q, want %q", ds.Detail, wantLost)
	}
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"missing":[0,2,5]`) || !strings.Contains(string(js), `"damaged_stripe_count":1`) {
		t.Fatalf("JSON report lacks the missing indices: %s", js)
	}
	byBackend := map[string]int{}
	for _, i := range []int{0, 2, 5} {
		byBackend[on(lost, i)]++
	}
	byBackend[on(short, 1)]++
	if fmt.Sprint(rep.MissingByBackend) != fmt.Sprint(byBackend) {
		t.Fatalf("missing by backend %v, want %v", rep.MissingByBackend, byBackend)
	}

	r := openConfigFile(t, rep.ConfigPath)
	for _, c := range []struct {
		st   *metastore.Stripe
		want string
	}{
		{lost, "recovery: " + wantLost},
		{short, wiped + "; " + fmt.Sprintf("recovery: object \"short\" stripe %x: 5 present, 4 needed; missing 1 (%s)", short.ID, on(short, 1))},
	} {
		it, err := r.meta.GetRepair(ctx, c.st.ID)
		if err != nil {
			t.Fatal(err)
		}
		if it.Reason != c.want {
			t.Errorf("repair reason %q, want %q", it.Reason, c.want)
		}
		// Names only: a spec (here a path; elsewhere an address or an
		// access key) never goes into a reason.
		for _, spec := range f.specs {
			if strings.Contains(it.Reason, spec.Path) {
				t.Errorf("reason %q holds backend %s's spec", it.Reason, spec.Name)
			}
		}
	}
}

// shardsWhere names at most maxShardsNamed shards and counts the rest;
// a shard never placed has no backend to name.
func TestRecoverShardsWhereIsBounded(t *testing.T) {
	st := &metastore.Stripe{K: 16, Shards: make([]metastore.ShardLoc, 24)}
	var idx []int
	for i := range st.Shards {
		if i != 3 {
			st.Shards[i].Backend = fmt.Sprintf("b%d", i)
		}
		idx = append(idx, i)
	}
	got := shardsWhere(st, idx)
	want := "0 (b0), 1 (b1), 2 (b2), 3 (no location), 4 (b4), 5 (b5), 6 (b6), 7 (b7) and 16 more"
	if got != want {
		t.Fatalf("shardsWhere: %q, want %q", got, want)
	}
	if got := shardsWhere(st, idx[:2]); got != "0 (b0), 1 (b1)" {
		t.Fatalf("shardsWhere of two: %q", got)
	}
}

func TestRecoverWrongKeyWritesNothing(t *testing.T) {
	ctx := context.Background()
	f := newRecoverFixture(t)
	s := f.open(t)
	recPutRandom(t, s, rand.New(rand.NewPCG(1, 9)), "x", 2)
	snapshotAndClose(t, s)

	wrong := filepath.Join(t.TempDir(), "other.key")
	if err := GenerateMasterKey(wrong); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "recovered")
	_, err := Recover(ctx, RecoverOptions{KeyFile: wrong, Backends: f.specs[:1], Dir: target})
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong key: %v, want ErrAuth", err)
	}
	t.Logf("wrong key: %v", err)
	if _, serr := os.Stat(target); !errors.Is(serr, fs.ErrNotExist) {
		t.Fatalf("recovery with the wrong key created %s", target)
	}
	// A backend directory that does not exist is reported, not made.
	missing := backends.Spec{Name: "e1", Kind: backends.KindLocal, Path: filepath.Join(t.TempDir(), "e1")}
	_, err = Recover(ctx, RecoverOptions{KeyFile: f.keyFile, Backends: []backends.Spec{missing}, Dir: target})
	if err == nil || !strings.Contains(err.Error(), "is gone") {
		t.Fatalf("missing backend directory: %v", err)
	}
	if _, serr := os.Stat(missing.Path); !errors.Is(serr, fs.ErrNotExist) {
		t.Fatalf("recovery made the missing backend directory %s", missing.Path)
	}
	// A backend with no snapshot at all says so.
	empty := missing
	if err := os.MkdirAll(filepath.Join(empty.Path, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Recover(ctx, RecoverOptions{KeyFile: f.keyFile, Backends: []backends.Spec{empty}, Dir: target})
	if !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("empty backend: %v, want ErrNoSnapshot", err)
	}
	if _, serr := os.Stat(target); !errors.Is(serr, fs.ErrNotExist) {
		t.Fatalf("failed recovery created %s", target)
	}
	// A non-empty target is refused.
	if err := os.MkdirAll(target, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(target, "precious"), []byte("x"), 0o600)
	if _, err := Recover(ctx, RecoverOptions{KeyFile: f.keyFile, Backends: f.specs[:1], Dir: target}); err == nil {
		t.Fatal("recovered into a non-empty directory")
	}
	if b, err := os.ReadFile(filepath.Join(target, "precious")); err != nil || string(b) != "x" {
		t.Fatal("recovery touched a non-empty target")
	}
}

// TestRecoverRefusesBadInput: a SecretsFile that is not there (a typo)
// and a backend spec with a field of another kind are errors naming them,
// before anything is written; before, the first was read as an empty
// secrets file and the second dropped, and the store was recovered without
// what the caller believed it had given.
func TestRecoverRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	f := newRecoverFixture(t)
	s := f.open(t)
	recPutRandom(t, s, rand.New(rand.NewPCG(5, 9)), "x", 2)
	snapshotAndClose(t, s)
	f.destroyFrontend(t)

	target := filepath.Join(t.TempDir(), "recovered")
	typo := filepath.Join(t.TempDir(), "secrets.tmol")
	_, err := Recover(ctx, RecoverOptions{KeyFile: f.keyFile, Backends: f.specs[:1], SecretsFile: typo, Dir: target})
	if err == nil || !strings.Contains(err.Error(), "secrets file "+typo) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing secrets file: %v; want an error naming %s", err, typo)
	}
	if _, serr := os.Stat(target); !errors.Is(serr, fs.ErrNotExist) {
		t.Fatalf("recovery with a missing secrets file created %s", target)
	}
	stray := f.specs[0]
	stray.Bucket = "healstore"
	_, err = Recover(ctx, RecoverOptions{KeyFile: f.keyFile, Backends: []backends.Spec{stray}, Dir: target})
	// Refused up front, naming the spec by its place, not by the config
	// recovery wrote: loading that config refuses it too, but only after
	// the metadata was written into the target (and cleared again).
	if err == nil || !strings.HasPrefix(err.Error(), "recover: backend 1: backend "+stray.Name+": bucket does not apply to a local backend") || errors.Is(err, ErrBadConfig) {
		t.Fatalf("spec with a bucket on a local backend: %v; want it refused before anything is written", err)
	}
	if _, serr := os.Stat(target); !errors.Is(serr, fs.ErrNotExist) {
		t.Fatalf("recovery with a bad spec created %s", target)
	}
	// The same store recovers from good input: what was refused was the
	// input, and "" is no secrets file.
	if _, err := Recover(ctx, RecoverOptions{KeyFile: f.keyFile, Backends: f.specs[:1], Dir: target}); err != nil {
		t.Fatalf("recover: %v", err)
	}
}

func TestSnapshotLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f := newRecoverFixture(t)
	s := f.open(t)
	defer s.Close()
	lw, err := s.LossWindow(ctx)
	if err != nil || !lw.Covered.IsZero() || lw.Snapshot != nil {
		t.Fatalf("loss window before any snapshot: %+v, %v", lw, err)
	}
	sn, err := s.NewSnapshotter(SnapshotConfig{Interval: Duration(200 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sn.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	recPutRandom(t, s, rand.New(rand.NewPCG(2, 10)), "loop", 3)
	wrote := time.Now()
	deadline := time.Now().Add(20 * time.Second)
	for {
		lw, err = s.LossWindow(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if lw.Covered.After(wrote) && lw.Snapshot != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("loss window never covered the writes: %+v", lw)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if lw.Interval != 200*time.Millisecond || lw.LastError != "" {
		t.Fatalf("loss window: %+v", lw)
	}
	list, err := s.Snapshots(ctx)
	if err != nil || len(list) == 0 || list[0].ID != lw.Snapshot.ID {
		t.Fatalf("snapshots: %+v, %v (loss window names %s)", list, err, lw.Snapshot.ID)
	}
	// Idle: checks go on, no new snapshot is uploaded. Wait for two more
	// checks rather than a fixed time: one check reads the metastore and
	// the backends, and a stalled disk can make it take seconds.
	seq := list[0].Seq
	checked := lw.Checked
	for range 2 {
		deadline := time.Now().Add(20 * time.Second)
		for {
			lw2, err := s.LossWindow(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if lw2.Checked.After(checked) {
				checked = lw2.Checked
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the snapshotter stopped checking: last check %v, 20 s ago", checked)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	list, _ = s.Snapshots(ctx)
	if list[0].Seq != seq {
		t.Fatalf("idle store took snapshot %d after %d", list[0].Seq, seq)
	}
}

// TestSnapshotsStopWithTheStore: a snapshotter started with the store
// ends when the store closes, even if its context lives on.
func TestSnapshotsStopWithTheStore(t *testing.T) {
	f := newRecoverFixture(t)
	s := f.open(t)
	sn, err := s.NewSnapshotter(SnapshotConfig{Interval: Duration(50 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sn.Run(context.Background()) }()
	time.Sleep(200 * time.Millisecond)
	s.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Run after Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the snapshotter runs on after the store closed")
	}
}

// A failed recovery into an existing empty directory (one an operator
// made, with the owner and mode the daemon needs, or a mount point) leaves
// that directory as it was: empty, but there.
func TestRecoverFailureKeepsGivenEmptyDir(t *testing.T) {
	ctx := context.Background()
	f := newRecoverFixture(t)
	s := f.open(t)
	recPutRandom(t, s, rand.New(rand.NewPCG(3, 9)), "x", 2)
	sn, err := s.NewSnapshotter(SnapshotConfig{})
	if err != nil {
		t.Fatal(err)
	}
	only, err := sn.Take(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Three of six shards per stripe damaged: the only snapshot does not
	// read back, so recovery fails after it has started writing.
	if n := corruptSnapshot(t, f, only.ID, "b1", "b2", "b3"); n < 3 {
		t.Fatalf("corrupted %d shards", n)
	}
	target := filepath.Join(t.TempDir(), "recovered")
	if err := os.Mkdir(target, 0o750); err != nil {
		t.Fatal(err)
	}
	_, err = Recover(ctx, RecoverOptions{KeyFile: f.keyFile, Backends: f.specs[:1], Dir: target})
	if !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("damaged snapshot: %v, want ErrNoSnapshot", err)
	}
	fi, serr := os.Stat(target)
	if serr != nil {
		t.Fatalf("the failed recovery removed the given directory: %v", serr)
	}
	if fi.Mode().Perm() != 0o750 {
		t.Fatalf("target mode %v, was 0750", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(target); len(ents) != 0 {
		t.Fatalf("the failed recovery left %d entries in %s", len(ents), target)
	}
}
