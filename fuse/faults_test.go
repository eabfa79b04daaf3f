package fuse

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/healstore/healstore"
)

// stopBackend makes a local backend fail every call, as a dead disk
// would: its data directory is moved away and a plain file takes its
// place, so reads and writes under it fail with ENOTDIR (and the backend
// cannot recreate the directory). start undoes it.
type stoppedBackend struct{ data, away string }

func stopBackend(t *testing.T, path string) *stoppedBackend {
	t.Helper()
	s := &stoppedBackend{data: filepath.Join(path, "data"), away: filepath.Join(path, "data.stopped")}
	if err := os.Rename(s.data, s.away); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.data, []byte("stopped by the test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *stoppedBackend) start(t *testing.T) {
	t.Helper()
	if err := os.Remove(s.data); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(s.away, s.data); err != nil {
		t.Fatal(err)
	}
}

// TestBackendFaults stops m of the store's k+m backends in the middle of
// a sequential read through the mount and keeps them stopped for a write:
// both go on, the read byte-identical, the write durable at fsync with the
// write quorum at k. After the backends come back the healer rebuilds the
// shards the write could not place, and every block is at full redundancy.
func TestBackendFaults(t *testing.T) {
	const k, m = 4, 2
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 3))
	st := newStoreWith(t, k, m, 0, func(c *healstore.Config) {
		c.WriteQuorum = k // with m backends gone only k shards can land
	})
	e := newMount(t, st, Options{BlockSize: 256 << 10, CacheSize: 8 << 20})
	randData := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	a := randData(12 << 20)
	if err := os.WriteFile(e.path("a"), a, 0o644); err != nil {
		t.Fatal(err)
	}
	e.remount() // cold caches: the read below goes to the backends

	// Sequential read; m backends stop after the first quarter.
	f, err := os.Open(e.path("a"))
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	buf := make([]byte, 1<<20)
	var stopped []*stoppedBackend
	for {
		n, err := f.Read(buf)
		got.Write(buf[:n])
		if got.Len() >= len(a)/4 && stopped == nil {
			for _, b := range st.cfg.Backends[:m] {
				stopped = append(stopped, stopBackend(t, b.Path))
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read with %d backends stopped: %v", m, err)
		}
	}
	f.Close()
	if !bytes.Equal(got.Bytes(), a) {
		t.Fatal("read with backends stopped mid-way differs")
	}

	// Write with the m backends still stopped.
	b := randData(6 << 20)
	wf, err := os.Create(e.path("b"))
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(b); off += 1 << 20 {
		if _, err := wf.Write(b[off : off+1<<20]); err != nil {
			t.Fatalf("write with %d backends stopped: %v", m, err)
		}
	}
	if err := wf.Sync(); err != nil {
		t.Fatalf("fsync with %d backends stopped: %v", m, err)
	}
	if err := wf.Close(); err != nil {
		t.Fatal(err)
	}
	e.remount()
	for name, want := range map[string][]byte{"a": a, "b": b} {
		if got, err := os.ReadFile(e.path(name)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s with %d backends stopped, cold cache: %v", name, m, err)
		}
	}

	// The write placed only k shards of its stripes: they wait for repair.
	if _, degraded := census(t, st.s); degraded == 0 {
		t.Fatal("no block object is degraded after writing with m backends stopped")
	}
	// The backends come back; the healer restores full redundancy.
	for _, s := range stopped {
		s.start(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h, err := st.s.NewHealer(ctx, healstore.HealerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.RepairAll(ctx, nil); err != nil {
		t.Fatalf("repair (bounded at 5 minutes): %v", err)
	}
	objs, degraded := census(t, st.s)
	if degraded != 0 {
		t.Fatalf("%d block objects still degraded after repair", degraded)
	}
	if want := (len(a) + len(b)) / (256 << 10); objs != want {
		t.Fatalf("%d block objects, want %d", objs, want)
	}
	for name, want := range map[string][]byte{"a": a, "b": b} {
		if got, err := os.ReadFile(e.path(name)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s after repair: %v", name, err)
		}
	}
}

// census counts the filesystem's block objects and those below full
// redundancy.
func census(t *testing.T, s *healstore.Store) (objs, degraded int) {
	t.Helper()
	ctx := context.Background()
	after := ""
	for {
		infos, next, err := s.List(ctx, "fs/", after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, info := range infos {
			objs++
			si, err := s.Stat(ctx, info.Name)
			if err != nil {
				t.Fatal(err)
			}
			if r := si.Redundancy; r.Degraded != 0 || r.MissingShards != 0 || r.MinMargin != si.Policy.M {
				degraded++
			}
		}
		if next == "" {
			return objs, degraded
		}
		after = next
	}
}
