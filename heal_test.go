package healstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/local"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/healer/provision"
	"github.com/healstore/healstore/metastore"
)

// healStore is a store on local backends with the helpers the healer tests
// share: kill (the directory vanishes), revive, wipe, and direct shard
// access for silent loss and bit flips.
type healStore struct {
	t   *testing.T
	dir string
	cfg *Config
	s   *Store
}

func newHealStore(t *testing.T, n int, k, m int, edit func(*Config)) *healStore {
	t.Helper()
	dir := t.TempDir()
	path, err := Init(dir, InitOptions{Backends: n, Policy: encoder.Policy{K: k, M: m, BlockSize: 32 << 10,
		Compression: encoder.CompressionNone, Encryption: encoder.EncryptionAESGCM, Checksum: encoder.ChecksumXXH3}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Healer.GCDelay = 0
	if edit != nil {
		edit(cfg)
	}
	hs := &healStore{t: t, dir: dir, cfg: cfg}
	hs.open()
	return hs
}

func (hs *healStore) open() {
	hs.t.Helper()
	s, err := Open(context.Background(), hs.cfg)
	if err != nil {
		hs.t.Fatal(err)
	}
	hs.s = s
	hs.t.Cleanup(func() { s.Close() })
}

// probedHealer makes a healer of the store that has probed every backend
// once, closed when the test ends.
func (hs *healStore) probedHealer() *Healer {
	hs.t.Helper()
	ctx := context.Background()
	h, err := hs.s.NewHealer(ctx, HealerOptions{})
	if err != nil {
		hs.t.Fatal(err)
	}
	hs.t.Cleanup(func() { h.Close() })
	if err := h.ProbeAll(ctx); err != nil {
		hs.t.Fatal(err)
	}
	return h
}

func (hs *healStore) backendDir(name string) string {
	return filepath.Join(hs.dir, "backends", name)
}

// kill makes a backend's directory vanish (its probe then fails).
// A plain file is left at the path, so nothing can recreate the directory
// and write there while the backend is "dead".
func (hs *healStore) kill(name string) {
	hs.t.Helper()
	if err := os.Rename(hs.backendDir(name), hs.backendDir(name)+".dead"); err != nil {
		hs.t.Fatal(err)
	}
	if err := os.WriteFile(hs.backendDir(name), []byte("dead\n"), 0o600); err != nil {
		hs.t.Fatal(err)
	}
}

func (hs *healStore) revive(name string) {
	hs.t.Helper()
	if err := os.Remove(hs.backendDir(name)); err != nil {
		hs.t.Fatal(err)
	}
	if err := os.Rename(hs.backendDir(name)+".dead", hs.backendDir(name)); err != nil {
		hs.t.Fatal(err)
	}
}

// raw opens a second handle on a local backend's directory, bypassing the
// store, to lose or damage shards behind its back.
func (hs *healStore) raw(spec backends.Spec) backends.Backend {
	hs.t.Helper()
	b, err := local.Open(spec)
	if err != nil {
		hs.t.Fatal(err)
	}
	return b
}

func (hs *healStore) spec(name string) backends.Spec {
	hs.t.Helper()
	for _, h := range hs.s.handleList() {
		if h.name == name {
			return h.spec
		}
	}
	hs.t.Fatalf("no backend %s", name)
	return backends.Spec{}
}

func (hs *healStore) put(name string, data []byte) {
	hs.t.Helper()
	if _, err := hs.s.Put(context.Background(), name, bytes.NewReader(data)); err != nil {
		hs.t.Fatalf("put %s: %v", name, err)
	}
}

func (hs *healStore) read(name string) ([]byte, error) {
	r, err := hs.s.Open(context.Background(), name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func (hs *healStore) check(objs map[string][]byte) {
	hs.t.Helper()
	for name, want := range objs {
		got, err := hs.read(name)
		if err != nil {
			hs.t.Fatalf("read %s: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			hs.t.Fatalf("%s reads back different bytes", name)
		}
	}
}

func healRandBytes(rnd *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	return b
}

// placementHolds checks every stripe's shards lie in distinct domains of
// backends that are up, and that the stripe is complete.
func (hs *healStore) fullAndPlaced() error {
	ctx := context.Background()
	recs, err := hs.s.meta.ListBackends(ctx)
	if err != nil {
		return err
	}
	byName := map[string]metastore.BackendRecord{}
	for _, r := range recs {
		byName[r.Name] = r
	}
	return hs.s.meta.ScanStripes(ctx, [16]byte{}, func(st *metastore.Stripe) error {
		seen := map[string]bool{}
		for i, l := range st.Shards {
			r, ok := byName[l.Backend]
			if l.Backend == "" || !ok || r.State != metastore.StateUp {
				return fmt.Errorf("stripe %x shard %d on %q (%s): not at full redundancy", st.ID, i, l.Backend, r.State)
			}
			if seen[r.Domain] {
				return fmt.Errorf("stripe %x: two shards in domain %s", st.ID, r.Domain)
			}
			seen[r.Domain] = true
		}
		return nil
	})
}

func localProvisioner(t *testing.T, dir string) []provision.Provisioner {
	p, err := provision.NewLocal(provision.LocalConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return []provision.Provisioner{p}
}

// The store's healer, end to end on the real read and write paths: a
// backend that vanishes is declared down, replaced by a provisioned one
// and rebuilt; reads work throughout; a corrupt shard a read meets is
// queued by the read path and repaired.
func TestStoreHealerReplacesLostBackend(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(1, 2))
	objs := map[string][]byte{}
	for i := range 12 {
		name := fmt.Sprintf("o%d", i)
		objs[name] = healRandBytes(rnd, 1+rnd.IntN(200<<10))
		hs.put(name, objs[name])
	}
	h, err := hs.s.NewHealer(ctx, HealerOptions{
		Provisioners: localProvisioner(t, filepath.Join(hs.dir, "provisioned")),
		Tune:         func(c *healer.Config) { c.Grace = 0; c.SuspectAfter = 1 },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.ProbeAll(ctx); err != nil {
		t.Fatal(err)
	}
	hs.kill("b3")
	if err := h.ProbeAll(ctx); err != nil {
		t.Fatal(err)
	}
	hs.check(objs) // degraded reads
	rep, err := h.RepairAll(ctx, nil)
	if err != nil || rep.Failed != 0 || rep.Remaining != 0 || rep.Repaired == 0 {
		t.Fatalf("repair %+v %v", rep, err)
	}
	if err := h.ProbeAll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := hs.fullAndPlaced(); err != nil {
		t.Fatal(err)
	}
	hs.check(objs)
	st, err := h.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, b := range st.Backends {
		states[b.Name] = b.State
	}
	if states["b3"] != "replaced" || len(st.Backends) != 7 || st.DegradedStripes != 0 {
		t.Fatalf("status backends %v degraded %d", states, st.DegradedStripes)
	}

	// Heal on read: damage one shard behind the store's back; a read
	// still returns the data and queues the stripe; the healer repairs it.
	obj, _ := hs.s.meta.GetObject(ctx, "o1")
	sid := obj.Stripes[0]
	mst, _ := hs.s.meta.GetStripe(ctx, sid)
	loc := mst.Shards[0]
	raw := hs.raw(hs.spec(loc.Backend))
	data, err := raw.Get(ctx, loc.Key)
	if err != nil {
		t.Fatal(err)
	}
	data[200] ^= 1
	if err := raw.Put(ctx, loc.Key, data); err != nil {
		t.Fatal(err)
	}
	hs.check(map[string][]byte{"o1": objs["o1"]})
	if _, err := hs.s.meta.GetRepair(ctx, sid); err != nil {
		t.Fatalf("read did not queue the damaged stripe: %v", err)
	}
	rep, err = h.RepairAll(ctx, nil)
	if err != nil || rep.Repaired != 1 {
		t.Fatalf("heal on read repair %+v %v", rep, err)
	}
	mst, _ = hs.s.meta.GetStripe(ctx, sid)
	good, err := hs.raw(hs.spec(mst.Shards[0].Backend)).Get(ctx, mst.Shards[0].Key)
	if err != nil || bytes.Equal(good, data) {
		t.Fatalf("shard 0 not rewritten: %v", err)
	}
	if err := hs.fullAndPlaced(); err != nil {
		t.Fatal(err)
	}
}

// A provisioner named in the config is built by NewHealer.
func TestHealerProvisionerFromConfig(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, func(c *Config) {
		c.Healer.GracePeriod = 0
		c.Healer.Provisioner = ProvisionerConfig{Kind: "local", Settings: map[string]any{"dir": "extra", "prefix": "x"}}
	})
	ctx := context.Background()
	hs.put("a", bytes.Repeat([]byte("a"), 100<<10))
	h, err := hs.s.NewHealer(ctx, HealerOptions{Tune: func(c *healer.Config) { c.SuspectAfter = 1 }})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	_ = h.ProbeAll(ctx)
	hs.kill("b1")
	if err := h.ProbeAll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(hs.dir, "extra", "repl-1")); err != nil {
		t.Fatalf("replacement not made under the configured dir: %v", err)
	}
	if _, err := h.RepairAll(ctx, nil); err != nil {
		t.Fatal(err)
	}
	_ = h.ProbeAll(ctx)
	if err := hs.fullAndPlaced(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []ProvisionerConfig{
		{Kind: "local", Settings: map[string]any{"nope": 1}},
		{Kind: "spare", Settings: map[string]any{}},
	} {
		hs.s.cfg.Healer.Provisioner = bad
		if _, err := hs.s.NewHealer(ctx, HealerOptions{}); err == nil {
			t.Fatalf("bad provisioner settings %+v accepted", bad)
		}
	}
}

// A backend a user adds is opened and probed first: one that does not work
// is refused with nothing recorded and its secret not saved.
func TestAddBackendThatDoesNotWork(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	ctx := context.Background()
	h, err := hs.s.NewHealer(ctx, HealerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	dead := backends.Spec{Name: "z9", Kind: backends.KindZDB, Address: "127.0.0.1:1", Namespace: "hs", SecretRef: "zdb/z9", Node: "n9"}
	err = h.AddBackend(ctx, dead, "the-password")
	if err == nil || !strings.Contains(err.Error(), "does not work, so it was not added") {
		t.Fatalf("adding a backend nobody listens for: %v", err)
	}
	if strings.Contains(err.Error(), "the-password") {
		t.Fatalf("the error shows the secret: %v", err)
	}
	if _, err := hs.s.Secrets().Lookup("zdb/z9"); err == nil {
		t.Fatal("the secret of a refused backend was saved")
	}
	if _, err := hs.s.meta.GetBackend(ctx, "z9"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("a refused backend was recorded: %v", err)
	}
	// One that works is added.
	ok := backends.Spec{Name: "l9", Kind: backends.KindLocal, Path: filepath.Join(hs.dir, "l9"), Node: "n9"}
	if err := h.AddBackend(ctx, ok, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := hs.s.meta.GetBackend(ctx, "l9"); err != nil {
		t.Fatalf("a working backend was not recorded: %v", err)
	}
}
