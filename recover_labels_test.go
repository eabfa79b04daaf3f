package healstore

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/healstore/healstore/backends"
)

// TestRecoverKeepsRecordedLabels: a backend spec given to Recover to reach
// a backend (its address or path on the new machine) but without failure-
// domain labels or quota keeps the ones the lost store recorded. Written
// into the config as given, it made the backend its own domain
// ("backend:b3"): placement could then put two shards of a stripe on one
// real node, and a quota was lifted.
func TestRecoverKeepsRecordedLabels(t *testing.T) {
	ctx := context.Background()
	f := newRecoverFixture(t)
	f.specs[2].Farm = "f3"
	f.specs[2].Quota = 1 << 40
	f.cfg.Backends = f.specs
	s := f.open(t)
	recPutRandom(t, s, recRand(t), "o", 3)
	snapshotAndClose(t, s)
	f.destroyFrontend(t)

	given := f.specs[2]
	given.Node, given.Farm, given.Quota = "", "", 0
	rep, err := Recover(ctx, RecoverOptions{KeyFile: f.keyFile, Backends: []backends.Spec{given}, Dir: filepath.Join(t.TempDir(), "r")})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(rep.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Backends) != 1 {
		t.Fatalf("config backends %+v, want the one given", cfg.Backends)
	}
	got := cfg.Backends[0]
	if got.Node != "n3" || got.Farm != "f3" || got.Quota != 1<<40 || got.Path != given.Path {
		t.Fatalf("recovered spec %+v: want node n3, farm f3, quota 1 TiB and the given path", got)
	}

	// Labels given are the user's word: they stay.
	f2 := newRecoverFixture(t)
	s2 := f2.open(t)
	recPutRandom(t, s2, recRand(t), "o", 2)
	snapshotAndClose(t, s2)
	f2.destroyFrontend(t)
	moved := f2.specs[1]
	moved.Node = "elsewhere"
	rep, err = Recover(ctx, RecoverOptions{KeyFile: f2.keyFile, Backends: []backends.Spec{moved}, Dir: filepath.Join(t.TempDir(), "r2")})
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err = LoadConfig(rep.ConfigPath); err != nil {
		t.Fatal(err)
	}
	if got := cfg.Backends[0]; got.Node != "elsewhere" || got.Farm != "" {
		t.Fatalf("recovered spec %+v: want the given node and no farm", got)
	}
}
