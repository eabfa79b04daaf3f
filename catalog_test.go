package healstore

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/backendtest"
	"github.com/healstore/healstore/metastore"
)

// A catalog lists, renames and deletes objects without opening a backend:
// with a hung node in the config, Open waits up to 10 s for it before any
// of that could start.
func TestCatalogOpensNoBackend(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, testOpts{})
	rnd := rand.New(rand.NewPCG(7, 7))
	keep, gone := randBytes(rnd, 200<<10), randBytes(rnd, 200<<10)
	for name, data := range map[string][]byte{"keep": keep, "gone": gone} {
		if _, err := s.Put(ctx, name, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	goneObj, err := s.meta.GetObject(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	var goneShards []metastore.ShardLoc
	for _, id := range goneObj.Stripes {
		st, err := s.meta.GetStripe(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		goneShards = append(goneShards, st.Shards...)
	}
	cfg := s.Config()
	s.Close()

	// The hung node stops with the subtest (connections are refused after
	// it), so the store opened below does not wait for it: the catalog
	// registered the config's backends, as Open does.
	t.Run("hung node in the config", func(t *testing.T) {
		addr, accepted := backendtest.CountingHangingServer(t)
		hung := *cfg
		hung.Backends = append(append([]backends.Spec(nil), cfg.Backends...), backends.Spec{
			Name: "hung", Kind: backends.KindZDB, Address: addr, Namespace: "hs", Node: "hung-node",
		})
		c, err := OpenCatalog(ctx, &hung)
		if err != nil {
			t.Fatal(err)
		}
		objs, next, err := c.List(ctx, "", "", 10)
		if err != nil || next != "" || len(objs) != 2 || objs[0].Name != "gone" || objs[1].Name != "keep" {
			t.Fatalf("list: %+v, next %q, %v", objs, next, err)
		}
		if err := c.Rename(ctx, "keep", "kept"); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, "gone"); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, "gone"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleting it again: %v, want ErrNotFound", err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if n := accepted(); n != 0 {
			t.Fatalf("the catalog connected to the hung node %d times", n)
		}
	})

	// The changes are the store's: the renamed object reads back, the
	// deleted one's stripes wait for garbage collection.
	s = openTest(t, cfg)
	if got := readAll(t, s, "kept"); !bytes.Equal(got, keep) {
		t.Fatal("the renamed object does not read back identical")
	}
	if _, err := s.Stat(ctx, "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stat of the deleted object: %v", err)
	}
	queued := map[[2]string]bool{}
	if err := s.meta.ListGarbage(ctx, func(g metastore.Garbage) error {
		queued[[2]string{g.Backend, g.Key}] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(goneShards) == 0 {
		t.Fatal("the deleted object had no shards")
	}
	for _, sh := range goneShards {
		if !queued[[2]string{sh.Backend, sh.Key}] {
			t.Errorf("shard %s on %s of the deleted object is not queued for garbage collection", sh.Key, sh.Backend)
		}
	}

	// A catalog makes no store: where the config's metadata holds none
	// (dir pointing elsewhere) it fails, naming where it looked, and
	// creates nothing there.
	elsewhere := *cfg
	elsewhere.MetadataDir = filepath.Join(t.TempDir(), "meta")
	if _, err := OpenCatalog(ctx, &elsewhere); !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), elsewhere.MetadataDir) {
		t.Fatalf("a catalog where no store is: %v; want a config error naming %s", err, elsewhere.MetadataDir)
	}
	if _, err := os.Stat(elsewhere.MetadataDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the catalog left something at %s: %v", elsewhere.MetadataDir, err)
	}
}
