package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/backendtest"
)

func specFor(dir string) backends.Spec {
	return backends.Spec{Name: "loc", Kind: backends.KindLocal, Path: dir}
}

func openT(t *testing.T, quota int64) *Backend {
	t.Helper()
	b, err := Open(backends.Spec{Name: "loc", Kind: backends.KindLocal, Path: t.TempDir(), Quota: quota})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// filesOnly turns packs off: every value gets a file of its own, as
// values over packs.max do (the tests of that path use small values).
func filesOnly(b *Backend) *Backend {
	if b != nil {
		b.packs.max = -1
	}
	return b
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, backendtest.Factory{
		Open:          func(t *testing.T) backends.Backend { return openT(t, 0) },
		OpenLimited:   func(t *testing.T, limit int64) backends.Backend { return openT(t, limit) },
		MaxValueSize:  MaxValueSize,
		CapacityKnown: true,
	})
}

// TestConformanceFiles runs the suite with packs off, so the file of each
// value (the layout of values over packs.max) is checked with every size.
func TestConformanceFiles(t *testing.T) {
	backendtest.Run(t, backendtest.Factory{
		Open:          func(t *testing.T) backends.Backend { return filesOnly(openT(t, 0)) },
		OpenLimited:   func(t *testing.T, limit int64) backends.Backend { return filesOnly(openT(t, limit)) },
		MaxValueSize:  MaxValueSize,
		CapacityKnown: true,
	})
}

func TestLayoutFansOut(t *testing.T) {
	b := filesOnly(openT(t, 0))
	ctx := context.Background()
	dirs := map[string]bool{}
	for i := 0; i < 200; i++ {
		key := fmt.Sprintf("shards/%032x.%d", i, i%6)
		if err := b.Put(ctx, key, []byte("v")); err != nil {
			t.Fatal(err)
		}
		p := b.pathOf(key)
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("value of %s not at %s: %v", key, p, err)
		}
		rel, _ := filepath.Rel(b.Path(), p)
		parts := strings.Split(rel, string(filepath.Separator))
		if len(parts) != 2 || len(parts[0]) != 2 || strings.Contains(parts[1], "/") {
			t.Fatalf("value of %s at %s, want <2 hex>/<name>", key, rel)
		}
		dirs[parts[0]] = true
	}
	if len(dirs) < 50 {
		t.Fatalf("200 keys landed in only %d fan-out directories", len(dirs))
	}
}

func TestNamesRoundTrip(t *testing.T) {
	for _, k := range []string{"a", ".", "..", ".x/y", "a/b/c", "x.y", "-_."} {
		n := fileName(k)
		if n == "." || n == ".." || strings.HasPrefix(n, ".") || strings.Contains(n, "/") {
			t.Fatalf("key %q maps to unsafe file name %q", k, n)
		}
		back, ok := keyName(n)
		if !ok || back != k {
			t.Fatalf("key %q -> %q -> %q, %v", k, n, back, ok)
		}
	}
	if _, ok := keyName(tmpPrefix + "123"); ok {
		t.Fatal("a temporary file was taken for a key")
	}
}

// A crash between the temporary write and the rename leaves a ".tmp-*" file;
// it must never show up as a key, and Open removes it.
func TestInterruptedPutLeavesNoKey(t *testing.T) {
	dir := t.TempDir()
	spec := backends.Spec{Name: "loc", Kind: backends.KindLocal, Path: dir, Quota: 1 << 20}
	b, err := Open(spec)
	filesOnly(b)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Put(ctx, "k", []byte("old")); err != nil {
		t.Fatal(err)
	}
	// Left by a crash a while ago: a temporary made a moment ago may be
	// another process's Put, not yet locked (removeAbandonedTemp).
	tmp := crashTemp(t, b, "k", time.Minute)
	n := 0
	b.List(ctx, "", func(k string, _ int64) error { n++; return nil })
	if n != 1 {
		t.Fatalf("List saw %d keys with a temporary lying around, want 1", n)
	}
	b.Close()
	b, err = Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open left the temporary file: %v", err)
	}
	if b.used != 3 {
		t.Fatalf("Open counted %d bytes used, want 3", b.used)
	}
	got, err := b.Get(ctx, "k")
	if err != nil || string(got) != "old" {
		t.Fatalf("Get after the crash: %q, %v", got, err)
	}
}

func TestErrorKinds(t *testing.T) {
	for _, c := range []struct {
		err  error
		kind error
	}{
		{&fs.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}, backends.ErrFull},
		{&fs.PathError{Op: "write", Path: "x", Err: syscall.EDQUOT}, backends.ErrFull},
		{&fs.PathError{Op: "open", Path: "x", Err: syscall.ENOENT}, backends.ErrNotFound},
		{&fs.PathError{Op: "open", Path: "x", Err: syscall.EACCES}, backends.ErrAuth},
		{&fs.PathError{Op: "read", Path: "x", Err: syscall.EIO}, backends.ErrUnavailable},
	} {
		if got := kindOf(c.err); got != c.kind {
			t.Errorf("kindOf(%v) = %v, want %v", c.err, got, c.kind)
		}
	}
}

func TestClosedIsUnavailable(t *testing.T) {
	b := openT(t, 0)
	b.Close()
	err := b.Put(context.Background(), "k", []byte("v"))
	if !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("Put after Close: %v", err)
	}
}

func TestProbeOfVanishedDirectory(t *testing.T) {
	b := openT(t, 0)
	if err := os.RemoveAll(b.Path()); err != nil {
		t.Fatal(err)
	}
	_, err := b.Probe(context.Background())
	if !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("Probe of a vanished directory: %v", err)
	}
}

// A backend directory that vanishes while the backend is open stays gone:
// writes fail as unavailable and probes keep failing, so the healer sees
// the outage, instead of the first write making the directory again (on
// an unmounted volume: on the file system under the mount point).
func TestVanishedDirectoryIsNotMadeAgain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	b, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Put(ctx, "before", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for i, durable := range []bool{true, false} {
		key := fmt.Sprintf("after-%d", i)
		var err error
		if durable {
			err = b.Put(ctx, key, []byte("v"))
		} else {
			err = b.PutNoSync(ctx, key, []byte("v"))
		}
		if !errors.Is(err, backends.ErrUnavailable) || !strings.Contains(err.Error(), "gone") {
			t.Fatalf("Put (durable %v) into a vanished directory: %v", durable, err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("after a Put (durable %v) the vanished directory is there again: %v", durable, err)
		}
	}
	if _, err := b.Probe(ctx); !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("Probe after the Puts: %v", err)
	}
}

// TestPrepare checks that a prepared backend has every fan-out directory,
// so its first writes make none (no mkdir, no fsync of the data directory
// in their sync rounds), and that preparing again keeps what is there.
func TestPrepare(t *testing.T) {
	dir := t.TempDir()
	if err := Prepare(dir); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "data"))
	if err != nil || len(ents) != 256 {
		t.Fatalf("data directory has %d entries (%v), want 256 fan-out directories", len(ents), err)
	}
	b, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 300 {
		key := fmt.Sprintf("shards/%032x.%d", i, i%14)
		if err := b.PutNoSync(ctx, key, []byte("v")); err != nil {
			t.Fatal(err)
		}
		if err := b.Sync(ctx, []string{key}); err != nil {
			t.Fatal(err)
		}
	}
	b.dirMu.Lock()
	made := b.dirGen
	b.dirMu.Unlock()
	if made != 0 {
		t.Errorf("%d fan-out directories made after Prepare, want 0", made)
	}
	if err := Prepare(dir); err != nil {
		t.Fatalf("second Prepare: %v", err)
	}
	if got, err := b.Get(ctx, "shards/00000000000000000000000000000007.7"); err != nil || string(got) != "v" {
		t.Fatalf("value after a second Prepare: %q, %v", got, err)
	}
}
