package fuse

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPOSIX checks each operation through a real mount with the os
// package, then remounts with an empty cache and checks what must have
// persisted.
func TestPOSIX(t *testing.T) {
	e := newMount(t, nil, Options{BlockSize: 64 << 10, CacheSize: 4 << 20})
	p := e.path

	t.Run("create-write-read", func(t *testing.T) {
		data := bytes.Repeat([]byte("healstore "), 50_000) // 500 kB, 8 blocks
		if err := os.WriteFile(p("a.txt"), data, 0o640); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p("a.txt"))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back: %v (len %d)", err, len(got))
		}
		fi, err := os.Stat(p("a.txt"))
		if err != nil || fi.Size() != int64(len(data)) || fi.Mode().Perm() != 0o640 || !fi.Mode().IsRegular() {
			t.Fatalf("stat: %v %+v", err, fi)
		}
		if _, err := os.OpenFile(p("a.txt"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); !errors.Is(err, os.ErrExist) {
			t.Fatalf("O_EXCL on an existing file: %v", err)
		}
	})

	t.Run("append", func(t *testing.T) {
		for i := range 3 {
			f, err := os.OpenFile(p("log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(string(rune('a'+i)) + "\n"); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if got, _ := os.ReadFile(p("log")); string(got) != "a\nb\nc\n" {
			t.Fatalf("appended %q", got)
		}
	})

	t.Run("random-read-write", func(t *testing.T) {
		seed := uint64(time.Now().UnixNano())
		t.Logf("seed %d", seed)
		rnd := rand.New(rand.NewPCG(seed, 1))
		f, err := os.OpenFile(p("rand"), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		model := make([]byte, 0)
		for i := range 300 {
			off := rnd.IntN(1 << 20)
			n := 1 + rnd.IntN(100_000)
			buf := make([]byte, n)
			for j := range buf {
				buf[j] = byte(rnd.Uint32())
			}
			if _, err := f.WriteAt(buf, int64(off)); err != nil {
				t.Fatal(err)
			}
			if off+n > len(model) {
				model = append(model, make([]byte, off+n-len(model))...)
			}
			copy(model[off:], buf)
			if i%10 == 0 {
				roff := rnd.IntN(len(model))
				got := make([]byte, min(rnd.IntN(200_000), len(model)-roff))
				if _, err := f.ReadAt(got, int64(roff)); err != nil && err != io.EOF {
					t.Fatal(err)
				}
				if !bytes.Equal(got, model[roff:roff+len(got)]) {
					t.Fatalf("read at %d differs from model (seed %d)", roff, seed)
				}
			}
			if i%100 == 99 {
				if err := f.Sync(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got, _ := os.ReadFile(p("rand")); !bytes.Equal(got, model) {
			t.Fatalf("file differs from model (seed %d)", seed)
		}
	})

	t.Run("sparse", func(t *testing.T) {
		f, err := os.Create(p("sparse"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("tail"), 10<<20); err != nil {
			t.Fatal(err)
		}
		f.Close()
		fi, _ := os.Stat(p("sparse"))
		if fi.Size() != 10<<20+4 {
			t.Fatalf("size %d", fi.Size())
		}
		got, _ := os.ReadFile(p("sparse"))
		if !bytes.Equal(got[:10<<20], make([]byte, 10<<20)) || string(got[10<<20:]) != "tail" {
			t.Fatal("hole does not read as zeros")
		}
	})

	t.Run("truncate-ftruncate", func(t *testing.T) {
		data := bytes.Repeat([]byte{0xab}, 300_000)
		os.WriteFile(p("trunc"), data, 0o644)
		if err := os.Truncate(p("trunc"), 100_000); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p("trunc"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(250_000); err != nil { // ftruncate up
			t.Fatal(err)
		}
		f.Close()
		got, _ := os.ReadFile(p("trunc"))
		want := append(bytes.Repeat([]byte{0xab}, 100_000), make([]byte, 150_000)...)
		if !bytes.Equal(got, want) {
			t.Fatal("truncate down then up does not read zeros past the cut")
		}
		// O_TRUNC.
		f, _ = os.OpenFile(p("trunc"), os.O_WRONLY|os.O_TRUNC, 0)
		f.WriteString("x")
		f.Close()
		if got, _ := os.ReadFile(p("trunc")); string(got) != "x" {
			t.Fatalf("O_TRUNC left %d bytes", len(got))
		}
	})

	t.Run("mkdir-rmdir-readdir", func(t *testing.T) {
		if err := os.MkdirAll(p("d1", "d2", "d3"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(p("d1", "f"), nil, 0o644)
		if err := os.Remove(p("d1", "d2")); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			t.Fatalf("rmdir of a non-empty dir: %v", err)
		}
		if err := os.Remove(p("d1", "d2", "d3")); err != nil {
			t.Fatal(err)
		}
		ents, err := os.ReadDir(p("d1"))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, en := range ents {
			names = append(names, en.Name())
		}
		if !slices.Equal(names, []string{"d2", "f"}) || !ents[0].IsDir() || ents[1].IsDir() {
			t.Fatalf("readdir %v", names)
		}
		var st unix.Stat_t
		unix.Stat(p("d1"), &st)
		if st.Nlink != 3 {
			t.Fatalf("d1 nlink %d, want 3", st.Nlink)
		}
		if err := os.Remove(p("d1", "nope")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("unlink of a missing name: %v", err)
		}
	})

	t.Run("rename", func(t *testing.T) {
		os.MkdirAll(p("r1"), 0o755)
		os.MkdirAll(p("r2"), 0o755)
		os.WriteFile(p("r1", "src"), []byte("src"), 0o644)
		os.WriteFile(p("r2", "dst"), []byte("old dst"), 0o644)
		if err := os.Rename(p("r1", "src"), p("r2", "dst")); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(p("r2", "dst")); string(got) != "src" {
			t.Fatalf("replaced target reads %q", got)
		}
		if _, err := os.Stat(p("r1", "src")); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("source still exists")
		}
		// A directory moves across directories with its content.
		os.MkdirAll(p("r1", "sub"), 0o755)
		os.WriteFile(p("r1", "sub", "inner"), []byte("in"), 0o644)
		if err := os.Rename(p("r1", "sub"), p("r2", "sub2")); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(p("r2", "sub2", "inner")); string(got) != "in" {
			t.Fatal("moved directory lost its content")
		}
		// (os.Rename refuses a directory target itself; ask the kernel.)
		if err := unix.Rename(p("r2", "dst"), p("r2", "sub2")); !errors.Is(err, syscall.EISDIR) {
			t.Fatalf("file over dir: %v", err)
		}
		os.MkdirAll(p("r2", "emptydir"), 0o755)
		if err := unix.Rename(p("r2", "sub2"), p("r2", "emptydir")); err != nil {
			t.Fatalf("dir over empty dir: %v", err)
		}
		os.MkdirAll(p("r2", "other"), 0o755)
		if err := unix.Rename(p("r2", "other"), p("r2", "emptydir")); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			t.Fatalf("dir over non-empty dir: %v", err)
		}
		if err := unix.Renameat2(unix.AT_FDCWD, p("r2", "dst"), unix.AT_FDCWD, p("r2", "other"), unix.RENAME_NOREPLACE); !errors.Is(err, unix.EEXIST) {
			t.Fatalf("RENAME_NOREPLACE: %v", err)
		}
	})

	t.Run("unlink-while-open", func(t *testing.T) {
		os.WriteFile(p("open"), []byte("still here"), 0o644)
		f, err := os.Open(p("open"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(p("open")); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || string(got) != "still here" {
			t.Fatalf("read after unlink: %q %v", got, err)
		}
	})

	t.Run("symlink-hardlink", func(t *testing.T) {
		os.WriteFile(p("target"), []byte("t"), 0o644)
		if err := os.Symlink("target", p("link")); err != nil {
			t.Fatal(err)
		}
		if dest, err := os.Readlink(p("link")); err != nil || dest != "target" {
			t.Fatalf("readlink %q %v", dest, err)
		}
		// Linux allows any bytes but NUL in a target, not only UTF-8.
		if err := os.Symlink(latin1Target, p("latin1")); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Lstat(p("link")); fi.Mode()&os.ModeSymlink == 0 {
			t.Fatal("lstat: not a symlink")
		}
		if got, _ := os.ReadFile(p("link")); string(got) != "t" {
			t.Fatal("reading through the symlink")
		}
		if err := os.Link(p("target"), p("hard")); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		unix.Stat(p("target"), &st)
		if st.Nlink != 2 {
			t.Fatalf("nlink %d after link", st.Nlink)
		}
		os.Remove(p("target"))
		if got, _ := os.ReadFile(p("hard")); string(got) != "t" {
			t.Fatal("hard link lost the data")
		}
	})

	t.Run("chmod-chown-utimes", func(t *testing.T) {
		os.WriteFile(p("attrs"), []byte("x"), 0o644)
		if err := os.Chmod(p("attrs"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p("attrs"), 1234, 5678); err != nil {
			t.Fatal(err)
		}
		mt := time.Date(2001, 2, 3, 4, 5, 6, 789, time.UTC)
		at := time.Date(2002, 2, 3, 4, 5, 6, 0, time.UTC)
		if err := os.Chtimes(p("attrs"), at, mt); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		unix.Stat(p("attrs"), &st)
		if st.Mode&0o7777 != 0o600 || st.Uid != 1234 || st.Gid != 5678 ||
			time.Unix(st.Mtim.Unix()).UTC() != mt || time.Unix(st.Atim.Unix()).UTC() != at {
			t.Fatalf("attrs mode %o uid %d gid %d mtime %v atime %v", st.Mode, st.Uid, st.Gid,
				time.Unix(st.Mtim.Unix()).UTC(), time.Unix(st.Atim.Unix()).UTC())
		}
	})

	t.Run("statfs", func(t *testing.T) {
		var sfs unix.Statfs_t
		if err := unix.Statfs(e.dir, &sfs); err != nil {
			t.Fatal(err)
		}
		if sfs.Blocks == 0 || sfs.Bfree == 0 || sfs.Bfree > sfs.Blocks || sfs.Bsize == 0 {
			t.Fatalf("statfs %+v", sfs)
		}
		// The six local backends share one disk, counted once: the
		// store's usable space is k/(k+m) of that disk, not of six.
		var disk unix.Statfs_t
		unix.Statfs(e.st.dir, &disk)
		want := disk.Blocks * uint64(disk.Bsize) * 4 / 6
		got := sfs.Blocks * uint64(sfs.Bsize)
		if got < want*9/10 || got > want*11/10 {
			t.Fatalf("statfs total %d bytes, want about %d (4/6 of the one disk)", got, want)
		}
		wantFree := disk.Bavail * uint64(disk.Bsize) * 4 / 6
		gotFree := sfs.Bavail * uint64(sfs.Bsize)
		if gotFree > wantFree*11/10 || gotFree < wantFree*9/10 {
			t.Fatalf("statfs available %d bytes, want about %d (4/6 of the one disk's)", gotFree, wantFree)
		}
	})

	t.Run("fsync", func(t *testing.T) {
		f, _ := os.Create(p("synced"))
		f.WriteString("durable")
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if e.m.DirtyBytes() != 0 {
			// Other subtests' files may still upload; this one is clean.
			t.Logf("dirty bytes after fsync: %d", e.m.DirtyBytes())
		}
		f.Close()
	})

	// Everything above survives a remount that reads from the store alone.
	want := map[string]string{}
	for _, name := range []string{"a.txt", "log", "rand", "trunc", "r2/dst", "r2/emptydir/inner", "hard", "synced"} {
		b, err := os.ReadFile(p(name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want[name] = string(b)
	}
	e.remount()
	for name, w := range want {
		got, err := os.ReadFile(p(name))
		if err != nil || string(got) != w {
			t.Fatalf("%s after remount: %v (len %d, want %d)", name, err, len(got), len(w))
		}
	}
	if dest, _ := os.Readlink(p("link")); dest != "target" {
		t.Fatal("symlink lost at remount")
	}
	if dest, err := os.Readlink(p("latin1")); err != nil || dest != latin1Target {
		t.Fatalf("symlink with a non-UTF-8 target after remount: %q, %v; want %q", dest, err, latin1Target)
	}
	var st unix.Stat_t
	unix.Stat(p("attrs"), &st)
	if st.Mode&0o7777 != 0o600 || st.Uid != 1234 {
		t.Fatal("attributes lost at remount")
	}
}

// latin1Target is a symlink target that is not valid UTF-8.
const latin1Target = "caf\xe9/\xff\xfe"
