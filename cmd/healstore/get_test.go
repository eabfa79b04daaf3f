package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// getStore makes a store holding obj and points HEALSTORE_CONFIG at it.
// It returns the test's directory (the store is DIR/store) and obj's bytes.
func getStore(t *testing.T, size int) (string, []byte) {
	t.Helper()
	dir := newCLIStore(t)
	data := make([]byte, size)
	rand.Read(data)
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := cli(t, "", "put", "obj", src); code != 0 {
		t.Fatalf("put: %d %s", code, errs)
	}
	return dir, data
}

// noTempFiles fails the test if get left a temporary file in any of dirs.
func noTempFiles(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		left, _ := filepath.Glob(filepath.Join(d, ".*.healstore-*"))
		if len(left) > 0 {
			t.Errorf("get left temporary files behind: %v", left)
		}
	}
}

// TestGetIntoFIFO: a FIFO is written in place, so the process reading it
// gets the object, and it is still a FIFO afterwards.
func TestGetIntoFIFO(t *testing.T) {
	dir, data := getStore(t, 3<<20)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	// A second name for the FIFO, to let the reader go should get replace
	// the first one instead of writing into it.
	keep := filepath.Join(dir, "fifo.keep")
	if err := os.Link(fifo, keep); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		f, err := os.Open(fifo) // blocks until get opens the FIFO
		if err != nil {
			got <- nil
			return
		}
		defer f.Close()
		b, _ := io.ReadAll(f)
		got <- b
	}()
	if _, errs, code := cli(t, "", "get", "obj", fifo); code != 0 {
		t.Errorf("get into a FIFO: %d %s", code, errs)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, data) {
			t.Errorf("the FIFO's reader got %d bytes, want the %d stored", len(b), len(data))
		}
	case <-time.After(20 * time.Second):
		go func() { // unblock the reader
			if f, err := os.OpenFile(keep, os.O_WRONLY, 0); err == nil {
				f.Close()
			}
		}()
		t.Error("the FIFO's reader got nothing: get did not write into the FIFO")
	}
	if st, err := os.Lstat(fifo); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("after get, %s is %v (%v), want a FIFO still", fifo, st.Mode(), err)
	}
	noTempFiles(t, dir)
}

// TestGetThroughSymlink: a symlink FILE stays a symlink and the file it
// points to gets the bytes, keeping its mode; a dangling symlink gets its
// target created.
func TestGetThroughSymlink(t *testing.T) {
	dir, data := getStore(t, 100<<10)
	links, files := filepath.Join(dir, "links"), filepath.Join(dir, "files")
	os.Mkdir(links, 0o755)
	os.Mkdir(files, 0o755)
	real := filepath.Join(files, "real")
	if err := os.WriteFile(real, []byte("old\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	os.Chmod(real, 0o640)
	link := filepath.Join(links, "link")
	if err := os.Symlink("../files/real", link); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(links, "dangling")
	if err := os.Symlink("../files/new", dangling); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ link, to, target string }{
		{link, "../files/real", real},
		{dangling, "../files/new", filepath.Join(files, "new")},
	} {
		if _, errs, code := cli(t, "", "get", "obj", c.link); code != 0 {
			t.Fatalf("get into %s: %d %s", c.link, code, errs)
		}
		if to, err := os.Readlink(c.link); err != nil || to != c.to {
			t.Errorf("after get, %s is no longer a symlink to %s: %q %v", c.link, c.to, to, err)
		}
		if b, err := os.ReadFile(c.target); err != nil || !bytes.Equal(b, data) {
			t.Errorf("%s (the link's target) has %d bytes (%v), want the %d stored", c.target, len(b), err, len(data))
		}
	}
	if st, err := os.Stat(real); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("the link's target has mode %v (%v), want 0640 kept", st.Mode(), err)
	}
	noTempFiles(t, links, files)
}

// TestGetPlantedSymlinkRefused: in a sticky world-writable directory (like
// /tmp) get follows only links of its own user or the directory's owner,
// as the kernel's protected_symlinks does for cp: another user's link must
// not steer root's get onto a file of root's.
func TestGetPlantedSymlinkRefused(t *testing.T) {
	needRoot(t, "the planted link belongs to another uid")
	dir, data := getStore(t, 10<<10)
	victim := filepath.Join(dir, "passwd")
	if err := os.WriteFile(victim, []byte("root:x:0:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	planted := filepath.Join(tmp, "out")
	if err := os.Symlink(victim, planted); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(planted, 4321, 4321); err != nil {
		t.Fatal(err)
	}
	_, errs, code := cli(t, "", "get", "obj", planted)
	if code == 0 || !strings.Contains(errs, "refusing to follow the symlink") {
		t.Fatalf("get into another user's link in a sticky directory: exit %d, %q", code, errs)
	}
	if b, _ := os.ReadFile(victim); string(b) != "root:x:0:0\n" {
		t.Fatalf("the link's target was changed: %q", b)
	}
	// root's own link there is followed.
	own := filepath.Join(tmp, "own")
	if err := os.Symlink(filepath.Join(dir, "mine"), own); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := cli(t, "", "get", "obj", own); code != 0 {
		t.Fatalf("get into root's own link: %d %s", code, errs)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "mine")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("root's own link: target has %d bytes (%v)", len(b), err)
	}
}

// TestGetKeepsModeAndOwner: get replacing a file keeps its permission
// bits (and, as root, its owner and group); a new file gets 0666 minus
// the umask, as cp and curl -o give it.
func TestGetKeepsModeAndOwner(t *testing.T) {
	dir, data := getStore(t, 100<<10)
	for _, perm := range []os.FileMode{0o644, 0o604, 0o600} {
		p := filepath.Join(dir, "out-"+perm.String())
		os.WriteFile(p, []byte("old\n"), perm)
		os.Chmod(p, perm) // past the umask
		if _, errs, code := cli(t, "", "get", "obj", p); code != 0 {
			t.Fatalf("get: %d %s", code, errs)
		}
		st, err := os.Stat(p)
		if err != nil || st.Mode() != perm {
			t.Errorf("a %v file is %v after get (%v)", perm, st.Mode(), err)
		}
		if b, _ := os.ReadFile(p); !bytes.Equal(b, data) {
			t.Errorf("%s: get wrote different bytes", p)
		}
	}

	umask := syscall.Umask(0o022)
	syscall.Umask(umask)
	fresh := filepath.Join(dir, "fresh")
	if _, errs, code := cli(t, "", "get", "obj", fresh); code != 0 {
		t.Fatalf("get: %d %s", code, errs)
	}
	if st, err := os.Stat(fresh); err != nil || st.Mode() != 0o666&^os.FileMode(umask) {
		t.Errorf("a new file is %v (%v), want %v (0666 minus the umask %03o)", st.Mode(), err, 0o666&^os.FileMode(umask), umask)
	}

	needRoot(t, "files of another owner")
	owned := filepath.Join(dir, "owned")
	os.WriteFile(owned, []byte("old\n"), 0o644)
	if err := os.Chown(owned, 4321, 8765); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := cli(t, "", "get", "obj", owned); code != 0 {
		t.Fatalf("get: %d %s", code, errs)
	}
	st, err := os.Stat(owned)
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 4321 || sys.Gid != 8765 || st.Mode() != 0o644 {
		t.Errorf("root's get made a 4321:8765 0644 file %d:%d %v", sys.Uid, sys.Gid, st.Mode())
	}
}

// TestGetIntoDirectoryRefused: a directory FILE is a usage error, said
// before the store is opened, and nothing is written anywhere.
func TestGetIntoDirectoryRefused(t *testing.T) {
	dir, _ := getStore(t, 100<<10)
	target := filepath.Join(dir, "d")
	os.Mkdir(target, 0o755)
	linkToDir := filepath.Join(dir, "dlink")
	os.Symlink("d", linkToDir)
	noConfig := filepath.Join(dir, "none.toml")
	for _, args := range [][]string{
		{"get", "obj", target},
		{"get", "obj", linkToDir},
		{"--config", noConfig, "get", "obj", target},
	} {
		_, errs, code := cli(t, "", args...)
		if code != exitUsage || !strings.Contains(errs, "is a directory") || strings.Contains(errs, "none.toml") {
			t.Errorf("%q: exit %d (want %d), stderr %q (want \"is a directory\", and no word of the config)", args, code, exitUsage, errs)
		}
	}
	if ents, _ := os.ReadDir(target); len(ents) != 0 {
		t.Errorf("get into a directory wrote %v in it", ents)
	}
	if st, err := os.Lstat(linkToDir); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink to the directory is %v (%v) after get", st.Mode(), err)
	}
	noTempFiles(t, dir, target)
}

// TestFailedGetLeavesFileIntact: when get fails, whether the object is
// missing or its shards cannot be read, an existing FILE keeps its bytes
// and mode and no temporary file is left.
func TestFailedGetLeavesFileIntact(t *testing.T) {
	dir, _ := getStore(t, 3<<20)
	out := filepath.Join(dir, "out")
	old := []byte("the old contents\n")
	os.WriteFile(out, old, 0o644)
	link := filepath.Join(dir, "link")
	os.Symlink("out", link)
	check := func(what string) {
		t.Helper()
		st, err := os.Stat(out)
		if b, _ := os.ReadFile(out); err != nil || !bytes.Equal(b, old) || st.Mode() != 0o644 {
			t.Errorf("%s: FILE is %q %v (%v), want %q 0644 as before", what, b, st.Mode(), err, old)
		}
		noTempFiles(t, dir)
	}
	for _, target := range []string{out, link} {
		if _, errs, code := cli(t, "", "get", "never/was", target); code != exitNotFound {
			t.Errorf("get of a missing object: %d %s", code, errs)
		}
		check("get of a missing object into " + target)
	}
	// Three of six backends lost: more than the two the store survives.
	for _, b := range []string{"b1", "b3", "b5"} {
		os.RemoveAll(filepath.Join(dir, "store", "backends", b))
	}
	for _, target := range []string{out, link} {
		if _, errs, code := cli(t, "", "get", "obj", target); code == 0 {
			t.Errorf("get with three backends lost succeeded: %s", errs)
		} else {
			t.Logf("get with three backends lost: exit %d: %s", code, strings.TrimSpace(errs))
		}
		check("get with three backends lost into " + target)
	}
}

// needRoot skips a test that needs root, or fails it under make test
// (HEALSTORE_REQUIRE_COMPONENTS=1), which runs as root.
func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("HEALSTORE_REQUIRE_COMPONENTS") == "1" {
		t.Fatalf("needs root (%s), and make test runs as root", why)
	}
	t.Skipf("needs root: %s", why)
}
