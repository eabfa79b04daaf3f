package healer

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/local"
	"github.com/healstore/healstore/healer/provision"
	"github.com/healstore/healstore/metastore"
)

// A provisioned backend that goes down and is replaced gives its capacity
// back once it has been replaced for ReleaseReplacedAfter (never, when
// negative), and only then; objects stay readable throughout.
func TestReplacedBackendIsReleased(t *testing.T) {
	for _, tc := range []struct {
		name    string
		after   time.Duration
		release bool
	}{{"after delay", time.Hour, true}, {"never", -1, false}} {
		t.Run(tc.name, func(t *testing.T) {
			e, local := newLocalEnv(t, Config{Grace: 0, SuspectAfter: 1, ReleaseReplacedAfter: Duration(tc.after)}, nil)
			ctx := context.Background()
			now := time.Now()
			e.h.now = func() time.Time { return now }
			victim, objs := e.provisionHolding()
			dir := filepath.Join(local.Dir(), victim)
			if _, err := os.Stat(dir); err != nil {
				t.Fatalf("provisioned backend's directory: %v", err)
			}

			e.kill(victim)
			e.probe() // grace 0: down at once, its stripes queued
			if rep := e.repairAll(); rep.Failed != 0 || rep.Remaining != 0 {
				t.Fatalf("repair %+v", rep)
			}
			e.probe()
			if st := e.state(victim); st != metastore.StateReplaced {
				t.Fatalf("victim is %s, want replaced", st)
			}
			if _, err := os.Stat(dir); err != nil {
				t.Fatalf("released before the delay: %v", err)
			}

			now = now.Add(2 * time.Hour)
			e.probe()
			_, statErr := os.Stat(dir)
			_, metaErr := e.meta.GetMeta(ctx, provisionedMeta(victim))
			if tc.release {
				if !errors.Is(statErr, os.ErrNotExist) {
					t.Fatalf("replaced backend's directory not released: %v", statErr)
				}
				if !errors.Is(metaErr, metastore.ErrNotFound) {
					t.Fatalf("released backend still recorded as provisioned: %v", metaErr)
				}
			} else if statErr != nil || metaErr != nil {
				t.Fatalf("release_replaced_after < 0 released anyway: dir %v, record %v", statErr, metaErr)
			}
			if st := e.state(victim); st != metastore.StateReplaced {
				t.Fatalf("victim is %s after release, want replaced", st)
			}
			e.checkFull()
			e.checkObjects(objs)
		})
	}
}

// newLocalEnv is an env whose provisioner is a Local under <dir>/prov,
// wrapped by wrap when not nil.
func newLocalEnv(t *testing.T, cfg Config, wrap func(*provision.Local) provision.Provisioner) (*env, *provision.Local) {
	t.Helper()
	var local *provision.Local
	e := newEnv(t, envOpts{backends: 6, cfg: cfg, provs: func(e *env) []provision.Provisioner {
		l, err := provision.NewLocal(provision.LocalConfig{Dir: filepath.Join(e.dir, "prov")})
		if err != nil {
			t.Fatal(err)
		}
		local = l
		if wrap != nil {
			return []provision.Provisioner{wrap(l)}
		}
		return []provision.Provisioner{l}
	}})
	return e, local
}

// provisionHolding fills the store, provisions a backend and stores more
// objects, some of whose shards land on it. It returns the new backend's
// name and every object stored.
func (e *env) provisionHolding() (string, map[string][]byte) {
	e.t.Helper()
	objs := e.fill(10, 40<<10)
	e.probe()
	victim, err := e.h.provision(context.Background(), false, "")
	if err != nil {
		e.t.Fatal(err)
	}
	for i := range 10 {
		data := make([]byte, 30<<10)
		for j := range data {
			data[j] = byte(i + j)
		}
		n := "later-" + string(rune('a'+i))
		e.put(n, data)
		objs[n] = data
	}
	if e.onBackend(victim) == 0 {
		e.t.Fatal("provisioned backend holds nothing")
	}
	return victim, objs
}

// setReplaced moves a backend's record to replaced, as finish does.
func (e *env) setReplaced(name string, since time.Time) {
	e.t.Helper()
	err := e.meta.UpdateBackend(context.Background(), name, func(r *metastore.BackendRecord) error {
		r.State, r.Since = metastore.StateReplaced, since
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// A replaced backend whose capacity was released keeps its record; the
// next provisioned backend gets a name of its own, not the released one's
// (its directory is free again).
func TestProvisionSkipsNamesOfReleasedBackends(t *testing.T) {
	e, local := newLocalEnv(t, Config{Grace: 0, SuspectAfter: 1}, nil)
	ctx := context.Background()
	e.probe()
	first, err := e.h.provision(ctx, false, "")
	if err != nil {
		t.Fatal(err)
	}
	e.setReplaced(first, time.Now())
	if err := e.h.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	e.h.mu.Lock()
	spec := e.h.members[first].spec
	e.h.mu.Unlock()
	if err := e.h.release(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(local.Dir(), first)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("released directory: %v", err)
	}
	next, err := e.h.provision(ctx, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if next == first || next == "" {
		t.Fatalf("provisioned %q after releasing %q: a name is never reused", next, first)
	}
	if st := e.state(first); st != metastore.StateReplaced {
		t.Fatalf("%s is %s, want replaced", first, st)
	}
	if st := e.state(next); st != metastore.StateUp {
		t.Fatalf("%s is %s, want up", next, st)
	}
}

// sameName is a provisioner that always makes a backend by one name (on
// node node, or its own name's), as a careless provisioning program might.
type sameName struct {
	dir      string
	name     string
	node     string
	releases int
}

func (p *sameName) Name() string { return "same" }

func (p *sameName) Provision(ctx context.Context, c provision.Constraints) (backends.Spec, string, error) {
	path := filepath.Join(p.dir, p.name)
	if err := os.MkdirAll(path, 0o700); err != nil {
		return backends.Spec{}, "", err
	}
	return backends.Spec{Name: p.name, Kind: backends.KindLocal, Path: path, Node: cmp.Or(p.node, p.name)}, "", nil
}

func (p *sameName) Release(ctx context.Context, spec backends.Spec) error {
	p.releases++
	return os.RemoveAll(spec.Path)
}

// A provisioner handing out the name of a replaced backend is refused
// with an error that says so, and the old record stays as it was.
func TestAdoptRefusesNameOfReplacedBackend(t *testing.T) {
	var p *sameName
	e := newEnv(t, envOpts{backends: 6, cfg: Config{Grace: 0, SuspectAfter: 1}, provs: func(e *env) []provision.Provisioner {
		p = &sameName{dir: filepath.Join(e.dir, "same"), name: "x-1"}
		return []provision.Provisioner{p}
	}})
	ctx := context.Background()
	e.probe()
	name, err := e.h.provision(ctx, false, "")
	if err != nil || name != "x-1" {
		t.Fatalf("first provision: %q %v", name, err)
	}
	e.setReplaced(name, time.Now())
	if err := e.h.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = e.h.provision(ctx, false, "")
	if err == nil || !strings.Contains(err.Error(), "never reused") {
		t.Fatalf("provisioning the name of a replaced backend again: %v", err)
	}
	if st := e.state(name); st != metastore.StateReplaced {
		t.Fatalf("%s is %s, want replaced", name, st)
	}
	if p.releases != 1 {
		t.Fatalf("%d releases of the refused backend, want 1", p.releases)
	}
}

// A backend recorded as replaced that still holds stripes is not released
// (its record says it is empty; the stripe index says otherwise).
func TestReleaseReplacedSkipsBackendWithStripes(t *testing.T) {
	e, local := newLocalEnv(t, Config{Grace: 0, SuspectAfter: 1, ReleaseReplacedAfter: Duration(time.Hour)}, nil)
	ctx := context.Background()
	now := time.Now()
	e.h.now = func() time.Time { return now }
	victim, objs := e.provisionHolding()
	e.setReplaced(victim, now)
	now = now.Add(2 * time.Hour)
	e.probe()
	e.probe()
	if _, err := os.Stat(filepath.Join(local.Dir(), victim)); err != nil {
		t.Fatalf("replaced backend holding %d stripes was released: %v", e.onBackend(victim), err)
	}
	if _, err := e.meta.GetMeta(ctx, provisionedMeta(victim)); err != nil {
		t.Fatalf("provisioned record: %v", err)
	}
	e.checkObjects(objs)
}

// cancelOnRelease is a Local whose Release cancels the context the healer
// runs with, so the release succeeds and recording it fails.
type cancelOnRelease struct {
	*provision.Local
	cancel   context.CancelFunc
	releases int
}

func (p *cancelOnRelease) Release(ctx context.Context, spec backends.Spec) error {
	p.releases++
	err := p.Local.Release(ctx, spec)
	if p.cancel != nil {
		p.cancel()
	}
	return err
}

// A release that succeeded but could not be recorded is not repeated.
func TestReleaseReplacedNotRepeatedWhenRecordFails(t *testing.T) {
	var p *cancelOnRelease
	e, local := newLocalEnv(t, Config{Grace: 0, SuspectAfter: 1, ReleaseReplacedAfter: Duration(time.Hour)},
		func(l *provision.Local) provision.Provisioner {
			p = &cancelOnRelease{Local: l}
			return p
		})
	ctx := context.Background()
	now := time.Now()
	e.h.now = func() time.Time { return now }
	objs := e.fill(10, 40<<10)
	e.probe()
	victim, err := e.h.provision(ctx, false, "")
	if err != nil {
		t.Fatal(err)
	}
	e.kill(victim)
	e.probe()
	if rep := e.repairAll(); rep.Failed != 0 || rep.Remaining != 0 {
		t.Fatalf("repair %+v", rep)
	}
	e.probe()
	if st := e.state(victim); st != metastore.StateReplaced {
		t.Fatalf("victim is %s, want replaced", st)
	}
	now = now.Add(2 * time.Hour)
	cctx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	_ = e.h.settleBackends(cctx)
	p.cancel = nil
	if p.releases != 1 {
		t.Fatalf("%d releases, want 1", p.releases)
	}
	if _, err := os.Stat(filepath.Join(local.Dir(), victim)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("released directory: %v", err)
	}
	if _, err := e.meta.GetMeta(ctx, provisionedMeta(victim)); err != nil {
		t.Fatalf("the failed recording should have left the provisioned record: %v", err)
	}
	for range 3 {
		now = now.Add(time.Hour) // past any backoff
		e.probe()
	}
	if p.releases != 1 {
		t.Fatalf("%d releases after the recording failed, want 1", p.releases)
	}
	e.checkFull()
	e.checkObjects(objs)
}

// A provisioned spec named like a live backend is refused: adopting it
// would rewrite where that backend's shards are found.
func TestAdoptRefusesNameOfLiveBackend(t *testing.T) {
	e := newEnv(t, envOpts{backends: 6, cfg: Config{Grace: 0, SuspectAfter: 1}, provs: func(e *env) []provision.Provisioner {
		// The name of a live backend (b1), with a spec of its own.
		return []provision.Provisioner{&sameName{dir: filepath.Join(e.dir, "live"), name: "b1", node: "elsewhere"}}
	}})
	ctx := context.Background()
	e.probe()
	before, err := e.meta.GetBackend(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.h.provision(ctx, false, ""); err == nil || !strings.Contains(err.Error(), "never reused") {
		t.Fatalf("provisioning the name of a live backend: %v", err)
	}
	after, err := e.meta.GetBackend(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before.SpecJSON, after.SpecJSON) || after.State != before.State {
		t.Fatalf("live backend's record changed: %s %s -> %s %s", before.State, before.SpecJSON, after.State, after.SpecJSON)
	}
}

// brokenProv hands out a local backend whose path is a regular file, so
// it cannot open: as a provisioning command with a typo might.
type brokenProv struct {
	dir      string
	releases int
}

func (p *brokenProv) Name() string { return "broken" }

func (p *brokenProv) Provision(ctx context.Context, c provision.Constraints) (backends.Spec, string, error) {
	path := filepath.Join(p.dir, "not-a-dir")
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return backends.Spec{}, "", err
	}
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		return backends.Spec{}, "", err
	}
	return backends.Spec{Name: "broken-1", Kind: backends.KindLocal, Path: path, Node: "broken-node"}, "", nil
}

func (p *brokenProv) Release(ctx context.Context, spec backends.Spec) error {
	p.releases++
	return nil
}

// A provisioned backend that does not open is released and never
// recorded, and the next provisioner is asked instead.
func TestProvisionTriesBackendBeforeRecording(t *testing.T) {
	var broken *brokenProv
	e := newEnv(t, envOpts{backends: 6, cfg: Config{Grace: 0, SuspectAfter: 1}, provs: func(e *env) []provision.Provisioner {
		broken = &brokenProv{dir: filepath.Join(e.dir, "broken")}
		return []provision.Provisioner{broken, &sameName{dir: filepath.Join(e.dir, "same"), name: "good-1"}}
	}})
	tried := 0
	e.h.try = func(ctx context.Context, spec backends.Spec, secret string) error {
		tried++
		b, err := local.Open(spec)
		if err != nil {
			return err
		}
		defer b.Close()
		_, err = b.Probe(ctx)
		return err
	}
	// The store's Register records the backend before it opens it (see
	// Store.registerBackend): a backend that does not open leaves its
	// record behind.
	e.h.reg = func(ctx context.Context, spec backends.Spec, secret string) error {
		raw, _ := json.Marshal(spec)
		if err := e.meta.PutBackend(ctx, &metastore.BackendRecord{Name: spec.Name, SpecJSON: raw, State: metastore.StateUp,
			Since: time.Now(), Domain: spec.Domain("node")}); err != nil {
			return err
		}
		return e.register(ctx, spec, secret)
	}
	ctx := context.Background()
	e.probe()
	name, err := e.h.provision(ctx, false, "")
	if err != nil || name != "good-1" {
		t.Fatalf("provision: %q %v, want good-1 from the second provisioner", name, err)
	}
	if _, err := e.meta.GetBackend(ctx, "broken-1"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("record of the backend that did not open: %v, want none", err)
	}
	if tried != 2 {
		t.Fatalf("%d backends tried, want 2", tried)
	}
	if broken.releases != 1 {
		t.Fatalf("broken backend released %d times, want 1", broken.releases)
	}

	// With only the broken provisioner, provisioning fails and says why.
	e.h.provs = e.h.provs[:1]
	e.h.provisionAfter = time.Time{}
	_, err = e.h.provision(ctx, false, "")
	if err == nil || !strings.Contains(err.Error(), "broken-1") || !strings.Contains(err.Error(), "does not work") {
		t.Fatalf("provision with a broken provisioner only: %v", err)
	}
}
