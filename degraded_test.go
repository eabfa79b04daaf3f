package healstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/metastore"
)

func queue(t *testing.T, s *Store) []metastore.RepairItem {
	t.Helper()
	q, err := s.meta.Queue(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func stripesOf(t *testing.T, s *Store, name string) []*metastore.Stripe {
	t.Helper()
	ctx := context.Background()
	o, err := s.meta.GetObject(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	var out []*metastore.Stripe
	for _, id := range o.Stripes {
		st, err := s.meta.GetStripe(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, st)
	}
	return out
}

func TestDegradedWriteRetriesOnSpare(t *testing.T) {
	s := newTestStore(t, testOpts{spares: 1})
	setBackend(t, s, "b2", func(b backends.Backend) backends.Backend { return downBackend{b} })
	data := bytes.Repeat([]byte("spare me "), 50000)
	if _, err := s.Put(context.Background(), "x", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	for _, st := range stripesOf(t, s, "x") {
		for i, sh := range st.Shards {
			if sh.Backend == "b2" || sh.Backend == "" {
				t.Fatalf("stripe %x shard %d on %q", st.ID, i, sh.Backend)
			}
		}
		if !strings.Contains(strings.Join(st.Backends(), ","), "b6") {
			t.Fatalf("spare b6 unused: %v", st.Backends())
		}
	}
	if q := queue(t, s); len(q) != 0 {
		t.Fatalf("repairs queued although the spare took the shard: %v", q)
	}
	if !bytes.Equal(readAll(t, s, "x"), data) {
		t.Fatal("read back differs")
	}
}

func TestDegradedWriteQueuesRepairs(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	setBackend(t, s, "b4", func(b backends.Backend) backends.Backend { return downBackend{b} })
	data := bytes.Repeat([]byte("degraded "), 30000) // 5 blocks
	put, err := s.Put(ctx, "x", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	sts := stripesOf(t, s, "x")
	// Put says so itself, without a Stat.
	if r := put.Redundancy; r == nil || r.Degraded != len(sts) || r.MissingShards != len(sts) || r.MinMargin != s.cfg.Policy.M-1 {
		t.Fatalf("Put's redundancy %+v for %d stripes each one shard short", r, len(sts))
	}
	q := queue(t, s)
	if len(q) != len(sts) {
		t.Fatalf("%d repairs queued for %d stripes", len(q), len(sts))
	}
	queued := map[[16]byte]metastore.RepairItem{}
	for _, it := range q {
		queued[it.Stripe] = it
	}
	for _, st := range sts {
		if len(st.Missing()) != 1 {
			t.Fatalf("stripe %x missing %v", st.ID, st.Missing())
		}
		it, ok := queued[st.ID]
		if !ok || it.Margin != 1 {
			t.Fatalf("stripe %x: queued %v margin %d", st.ID, ok, it.Margin)
		}
	}
	info, _ := s.Stat(ctx, "x")
	if info.Redundancy.Degraded != len(sts) || info.Redundancy.MissingShards != len(sts) {
		t.Fatalf("stat redundancy %+v", info.Redundancy)
	}
	if !bytes.Equal(readAll(t, s, "x"), data) {
		t.Fatal("read back differs")
	}

	// Two down: 4 domains left, quorum 5: the write fails, nothing is
	// visible, and what was uploaded is garbage.
	setBackend(t, s, "b5", func(b backends.Backend) backends.Backend { return downBackend{b} })
	_, err = s.Put(ctx, "y", bytes.NewReader(data))
	var ie *InsufficientBackendsError
	if !errors.As(err, &ie) || ie.Usable != 4 || ie.Needed != 5 {
		t.Fatalf("want insufficient backends 4/5, got %v", err)
	}
	if _, err := s.Stat(ctx, "y"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("failed write visible: %v", err)
	}
	n := 0
	s.meta.ListIntents(ctx, func(metastore.Intent) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d intents left by a failed write", n)
	}
}

func TestWriteQuorumK(t *testing.T) {
	// With the quorum lowered to k, two lost backends still take writes,
	// at margin 0, and the repairs are queued first in line.
	s := newTestStore(t, testOpts{quorum: 4, edit: func(c *Config) { c.InlineMaxSize = 0 }}) // shards, not inline
	for _, b := range []string{"b0", "b3"} {
		setBackend(t, s, b, func(b backends.Backend) backends.Backend { return downBackend{b} })
	}
	if _, err := s.Put(context.Background(), "z", strings.NewReader("thin ice")); err != nil {
		t.Fatal(err)
	}
	q := queue(t, s)
	if len(q) != 1 || q[0].Margin != 0 {
		t.Fatalf("queue %+v", q)
	}
	if string(readAll(t, s, "z")) != "thin ice" {
		t.Fatal("read back differs")
	}
}

// degradedRead writes objects, stops m backends with stop, and checks that
// every object still reads back identical.
func degradedRead(t *testing.T, s *Store, stop func(names []string)) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 3))
	objs := map[string][]byte{}
	for i := range 8 {
		data := randBytes(rnd, rnd.IntN(5*s.cfg.Policy.BlockSize))
		name := fmt.Sprintf("obj%d", i)
		if _, err := s.Put(ctx, name, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		objs[name] = data
	}
	var victims []string
	for _, i := range rnd.Perm(len(s.cfg.Backends))[:s.cfg.Policy.M] {
		victims = append(victims, s.cfg.Backends[i].Name)
	}
	t.Logf("stopping %v", victims)
	stop(victims)
	for name, data := range objs {
		if got := readAll(t, s, name); !bytes.Equal(got, data) {
			t.Fatalf("%s differs with %v stopped", name, victims)
		}
	}
	return objs
}

func TestDegradedReadLocal(t *testing.T) {
	s := newTestStore(t, testOpts{})
	degradedRead(t, s, func(names []string) {
		for _, n := range names {
			setBackend(t, s, n, func(b backends.Backend) backends.Backend { return downBackend{b} })
		}
	})
	// Unreachable backends may come back: a read does not queue repairs
	// for them (the healer decides after its grace period).
	if q := queue(t, s); len(q) != 0 {
		t.Fatalf("unreachable shards queued: %d", len(q))
	}
}

func TestDegradedReadWipedBackends(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	objs := degradedRead(t, s, func(names []string) {
		for _, n := range names {
			// Lose the data for good: empty the backend's directory.
			dir := s.cfg.Backends[mustIndex(t, s, n)].Path
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			os.MkdirAll(dir, 0o700)
		}
	})
	// Every stripe that lost a data shard was found short by the read and
	// queued (heal on read). A read fetches only what it needs, so a lost
	// parity shard may go unseen (the scrubber finds those), and the margin
	// queued counts the losses the read saw: never below the true margin.
	trueMargin := map[[16]byte]int{}
	mustQueue := map[[16]byte]bool{}
	for name := range objs {
		for _, st := range stripesOf(t, s, name) {
			lost := 0
			for i, sh := range st.Shards {
				if sh.Backend != "" && !s.fileExists(ctx, sh.Backend, sh.Key) {
					lost++
					if i < st.K {
						mustQueue[st.ID] = true
					}
				}
			}
			if lost > 0 {
				trueMargin[st.ID] = len(st.Shards) - lost - st.K
			}
		}
	}
	got := map[[16]byte]int{}
	for _, it := range queue(t, s) {
		got[it.Stripe] = it.Margin
	}
	if len(mustQueue) == 0 {
		t.Fatal("no data shard lost: the test tested nothing")
	}
	for id := range mustQueue {
		if _, ok := got[id]; !ok {
			t.Fatalf("stripe %x lost a data shard but was not queued", id)
		}
	}
	for id, m := range got {
		tm, lost := trueMargin[id]
		if !lost {
			t.Fatalf("stripe %x queued but lost nothing", id)
		}
		if m < tm || m >= s.cfg.Policy.M {
			t.Fatalf("stripe %x queued at margin %d; true margin %d", id, m, tm)
		}
	}
}

func mustIndex(t *testing.T, s *Store, name string) int {
	for i, b := range s.cfg.Backends {
		if b.Name == name {
			return i
		}
	}
	t.Fatalf("no backend %s", name)
	return -1
}

func (s *Store) fileExists(ctx context.Context, backend, key string) bool {
	b, ok := s.Backend(backend)
	if !ok {
		return false
	}
	_, err := b.Stat(ctx, key)
	return err == nil
}

func TestCorruptShardDetected(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	data := bytes.Repeat([]byte("bits rot "), 10000)
	for _, n := range []string{"flipped", "resummed"} {
		if _, err := s.Put(ctx, n, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	// A bit flip in data shard 0 of the first stripe.
	st := stripesOf(t, s, "flipped")[0]
	flipShard(t, s, "flipped", 0, 0)
	// A shard intact in itself but not what the metastore recorded: only
	// the metastore's checksum can tell (invariant 3).
	st2 := stripesOf(t, s, "resummed")[0]
	st2.Shards[1].Sum = encoder.Sum(s.cfg.Policy.Checksum, []byte("some other shard"))
	if err := s.meta.UpdateStripe(ctx, st2, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"flipped", "resummed"} {
		if !bytes.Equal(readAll(t, s, n), data) {
			t.Fatalf("%s: read back differs", n)
		}
	}
	got := map[[16]byte]string{}
	margins := map[[16]byte]int{}
	for _, it := range queue(t, s) {
		got[it.Stripe] = it.Reason
		margins[it.Stripe] = it.Margin
	}
	if !strings.Contains(got[st.ID], "corrupt [0]") || !strings.Contains(got[st2.ID], "corrupt [1]") || len(got) != 2 {
		t.Fatalf("queued %v", got)
	}
	// One bad shard each: counted once (not also as missing), so the
	// margin is m-1.
	for _, id := range [][16]byte{st.ID, st2.ID} {
		if want := s.cfg.Policy.M - 1; margins[id] != want || strings.Contains(got[id], "missing [0]") || strings.Contains(got[id], "missing [1]") {
			t.Fatalf("stripe %x queued at margin %d (want %d): %s", id, margins[id], want, got[id])
		}
	}
}

func TestWrongMasterKey(t *testing.T) {
	cfg := testConfig(t, testOpts{})
	s := openTest(t, cfg)
	if _, err := s.Put(context.Background(), "secret", strings.NewReader("for your eyes only")); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Opening with another key is refused before anything is written.
	other := filepath.Join(t.TempDir(), "other.key")
	if err := GenerateMasterKey(other); err != nil {
		t.Fatal(err)
	}
	cfg2 := *cfg
	cfg2.MasterKeyFile = other
	_, err := Open(context.Background(), &cfg2)
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), other) {
		t.Fatalf("open with wrong key: %v", err)
	}

	// Had the fingerprint check been passed (say the key file was swapped
	// under a running store), reads still fail with ErrAuth, never with
	// garbage.
	s = openTest(t, cfg)
	wrong, _ := LoadMasterKey(other)
	s.codecMu.Lock()
	s.key = wrong
	s.codecs = map[encoder.Policy]*encoder.Codec{}
	s.codecMu.Unlock()
	r, err := s.Open(context.Background(), "secret")
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Read(make([]byte, 10))
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("read with wrong key: %v", err)
	}
}

// A local backend that has held data and whose directory is gone when the
// store opens (a failed disk, a volume not mounted at boot) is down: its
// directory is not made again, where it would fill the file system under
// the mount point. A directory made again by hand (a new, empty disk) is
// opened as a backend again.
func TestVanishedLocalBackendNotMadeAgain(t *testing.T) {
	cfg := testConfig(t, testOpts{})
	ctx := context.Background()
	s := openTest(t, cfg)
	data := bytes.Repeat([]byte("mount me first "), 20000)
	if _, err := s.Put(ctx, "obj", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	gone := cfg.Backends[1]
	if err := os.RemoveAll(gone.Path); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, cfg)
	if _, err := os.Stat(gone.Path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("opening the store made the vanished backend directory %s again: %v", gone.Path, err)
	}
	if !bytes.Equal(readAll(t, s, "obj"), data) {
		t.Fatal("read back differs with one backend gone")
	}
	rep, err := s.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range rep.Backends {
		if b.Name == gone.Name && (b.Reachable || !strings.Contains(b.Error, "is gone")) {
			t.Fatalf("the vanished backend: %+v", b)
		}
	}
	s.Close()
	// The backend directory back but empty: a mount point whose volume
	// is not mounted. Still down, nothing made under it.
	if err := os.Mkdir(gone.Path, 0o755); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, cfg)
	if ents, _ := os.ReadDir(gone.Path); len(ents) != 0 {
		t.Fatalf("opening the store wrote into the empty backend directory (an unmounted mount point): %v", ents)
	}
	s.Close()
	// A new disk: its data directory made by hand, and the backend opens.
	if err := os.Mkdir(filepath.Join(gone.Path, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, cfg)
	rep, err = s.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range rep.Backends {
		if b.Name == gone.Name && !b.Reachable {
			t.Fatalf("a backend on a new disk with its data directory made by hand: %+v", b)
		}
	}
}
