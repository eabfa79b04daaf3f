package fuse

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestKillMountProcess SIGKILLs the mount process (a child re-executed
// from the test binary) after writes, some fsynced and some not, mounts
// again on the same cache and checks that nothing fsynced was lost. The
// child runs without the kernel's write-back page cache, so every write
// that returned had reached the mount process: the replayed cache must
// bring back those unsynced writes too. A final mount with an empty cache
// proves the data is in the store, not only in the cache.
func TestKillMountProcess(t *testing.T) {
	requireFUSE(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 2))
	st := newStore(t, 4, 2, 0)
	st.s.Close() // the mount processes open it; pebble admits one process
	dir, cache := t.TempDir(), t.TempDir()

	synced := map[string][]byte{}   // fsynced: must survive any crash
	unsynced := map[string][]byte{} // written, not fsynced: replayed on the same boot
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	for round := range 3 {
		c := startChild(t, st.cfgPath, dir, cache, true)
		// Check what earlier rounds left.
		for name, want := range synced {
			got, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("round %d: fsynced %s lost after SIGKILL: %v (len %d, want %d; seed %d)", round, name, err, len(got), len(want), seed)
			}
		}
		for name, want := range unsynced {
			got, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("round %d: written %s not replayed after SIGKILL: %v (len %d, want %d; seed %d)", round, name, err, len(got), len(want), seed)
			}
			synced[name] = want // now in the store (replay uploads at mount)
		}
		clear(unsynced)

		var open []*os.File
		for i := range 4 {
			name := fmt.Sprintf("r%d-f%d", round, i)
			data := randBytes(1 + rnd.IntN(400_000))
			f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_RDWR, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatalf("fsync: %v", err)
			}
			synced[name] = data
			// Overwrite part of it without fsync, keeping the file open.
			off := rnd.IntN(len(data))
			patch := randBytes(min(1+rnd.IntN(100_000), len(data)-off))
			if _, err := f.WriteAt(patch, int64(off)); err != nil {
				t.Fatal(err)
			}
			after := bytes.Clone(data)
			copy(after[off:], patch)
			delete(synced, name)
			unsynced[name] = after
			open = append(open, f)
		}
		// A file that only ever existed unsynced, with a grown size.
		name := fmt.Sprintf("r%d-unsynced", round)
		data := randBytes(1 + rnd.IntN(300_000))
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		unsynced[name] = data
		open = append(open, f)

		c.stop(t, syscall.SIGKILL)
		for _, f := range open {
			f.Close() // the connection is gone; the error is expected
		}
	}
	// Replay once more, then unmount cleanly with SIGTERM.
	c := startChild(t, st.cfgPath, dir, cache, true)
	c.stop(t, syscall.SIGTERM)
	for name, data := range unsynced {
		synced[name] = data
	}
	// An empty cache: everything comes from the store.
	c = startChild(t, st.cfgPath, dir, t.TempDir(), false)
	for name, want := range synced {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s not in the store after replay and clean unmount: %v (seed %d)", name, err, seed)
		}
	}
	// healstore umount: SIGTERM to the process named by its pid file, and
	// a wait until it has flushed and exited.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := Unmount(ctx, dir, false); err != nil {
		t.Fatalf("Unmount: %v\n%s", err, c.stderr)
	}
	if c.cmd.ProcessState == nil {
		if err := c.cmd.Wait(); err != nil {
			t.Fatalf("mount process after Unmount: %v\n%s", err, c.stderr)
		}
	}
	if !c.cmd.ProcessState.Success() || isFuseMount(dir) {
		t.Fatalf("mount process exit %v, still mounted %v", c.cmd.ProcessState, isFuseMount(dir))
	}
	if err := Unmount(ctx, dir, false); err == nil {
		t.Fatal("Unmount of a directory that is no mount succeeded")
	}
}

// TestKillMountProcessLostCache SIGKILLs the mount process after a chmod
// of a file that has grown by writes never fsynced, and mounts again
// without its cache directory (lost, as after a machine restart). The
// file must come back as it was fsynced: a chmod commits the mode, not a
// size whose blocks never reached the store (they would read as zeros).
// On the same cache, the journal replays the unsynced writes too.
func TestKillMountProcessLostCache(t *testing.T) {
	requireFUSE(t)
	for _, keepCache := range []bool{false, true} {
		t.Run(fmt.Sprintf("keepCache=%v", keepCache), func(t *testing.T) {
			st := newStore(t, 4, 2, 0)
			st.s.Close() // the mount processes open it; pebble admits one process
			dir, cache := t.TempDir(), t.TempDir()
			c := startChild(t, st.cfgPath, dir, cache, true)
			path := filepath.Join(dir, "f")
			synced := bytes.Repeat([]byte("fsynced "), 100_000/8)
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(synced); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatalf("fsync: %v", err)
			}
			tail := bytes.Repeat([]byte("unsynced"), 50_000/8)
			if _, err := f.Write(tail); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, 0o600); err != nil {
				t.Fatal(err)
			}
			c.stop(t, syscall.SIGKILL)
			f.Close() // the connection is gone; the error is expected

			want := synced
			if keepCache {
				want = append(bytes.Clone(synced), tail...)
			} else {
				cache = t.TempDir()
			}
			c = startChild(t, st.cfgPath, dir, cache, true)
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("after chmod, SIGKILL and a mount with keepCache=%v the file has %d bytes (%d zero at the end), want %d",
					keepCache, len(got), len(got)-len(bytes.TrimRight(got, "\x00")), len(want))
			}
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("mode after remount: %v, %v (chmod is committed at once)", fi.Mode(), err)
			}
			c.stop(t, syscall.SIGTERM)
		})
	}
}
