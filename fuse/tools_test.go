package fuse

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// makeTree writes a small source tree outside the mount: nested
// directories, files of assorted sizes and modes, a symlink, a hard link
// and an empty file.
func makeTree(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	for i := range 30 {
		dir := filepath.Join(src, fmt.Sprintf("d%d", i%4), fmt.Sprintf("s%d", i%3))
		os.MkdirAll(dir, 0o755)
		data := []byte(strings.Repeat(fmt.Sprintf("file %d\n", i), 1+i*i*50))
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), data, os.FileMode(0o600+i%3*0o40))
	}
	os.WriteFile(filepath.Join(src, "empty"), nil, 0o644)
	os.Symlink("d0/s0/f0", filepath.Join(src, "sym"))
	os.Link(filepath.Join(src, "d1", "s1", "f1"), filepath.Join(src, "hardlink"))
	os.Chmod(filepath.Join(src, "d2"), 0o750)
	return src
}

// TestShellTools runs the programs a user would run in the mount and
// checks their results with the same programs' own verification.
func TestShellTools(t *testing.T) {
	e := newMount(t, nil, Options{BlockSize: 64 << 10, CacheSize: 8 << 20})
	src := makeTree(t)

	t.Run("cp-a", func(t *testing.T) {
		e.sh(fmt.Sprintf("cp -a %q cpdir && diff -r --no-dereference %q cpdir", src, src))
		// cp -a keeps modes, times and links.
		out := e.sh(fmt.Sprintf("cd %q && find . -printf '%%p %%m %%y %%l %%n %%T@\\n' | sort", src))
		got := e.sh("cd cpdir && find . -printf '%p %m %y %l %n %T@\\n' | sort")
		if got != out {
			t.Fatalf("cp -a did not keep attributes:\nsource:\n%s\ncopy:\n%s", out, got)
		}
	})

	t.Run("tar", func(t *testing.T) {
		e.sh(fmt.Sprintf("tar -C %q -cf archive.tar . && mkdir untar && tar -C untar -xf archive.tar && diff -r --no-dereference %q untar", src, src))
		e.sh("tar -tf archive.tar > /dev/null")
	})

	t.Run("rsync", func(t *testing.T) {
		requireTool(t, "rsync")
		e.sh(fmt.Sprintf("rsync -aH %q/ rsyncdir/ && diff -r --no-dereference %q rsyncdir", src, src))
		// A second run finds nothing to do and a checksum run agrees.
		out := e.sh(fmt.Sprintf("rsync -aHc --itemize-changes %q/ rsyncdir/", src))
		if out != "" {
			t.Fatalf("rsync -c found differences:\n%s", out)
		}
	})

	t.Run("git", func(t *testing.T) {
		requireTool(t, "git")
		e.sh(`mkdir repo && cd repo && git init -q && git config user.email t@example.com && git config user.name t &&
			for i in $(seq 1 20); do echo "line $i" >> file.txt; printf 'x%.0s' $(seq 1 $i) > "f$i"; git add -A; git commit -qm "commit $i"; done &&
			git gc -q && git fsck --strict && test "$(git rev-list --count HEAD)" = 20`)
	})

	t.Run("sqlite", func(t *testing.T) {
		requireTool(t, "sqlite3")
		e.sh(`sqlite3 db.sqlite "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);" > /dev/null &&
			for i in $(seq 1 20); do sqlite3 db.sqlite "BEGIN; $(for j in $(seq 1 50); do echo "INSERT INTO t(v) VALUES (hex(randomblob(200)));"; done) COMMIT;"; done &&
			sqlite3 db.sqlite "DELETE FROM t WHERE id % 3 = 0; VACUUM;" &&
			test "$(sqlite3 db.sqlite 'PRAGMA integrity_check;')" = ok`)
		if n := e.sh(`sqlite3 db.sqlite "SELECT count(*) FROM t;"`); n != "667" {
			t.Fatalf("rows %s, want 667", n)
		}
	})

	// Everything reads back the same from the store alone.
	e.remount()
	e.sh(fmt.Sprintf("diff -r --no-dereference %q cpdir && diff -r --no-dereference %q untar", src, src))
	if _, err := os.Stat(e.path("repo")); err == nil {
		e.sh("cd repo && git fsck --strict && test \"$(git log -1 --format=%s)\" = 'commit 20'")
	}
	if _, err := os.Stat(e.path("db.sqlite")); err == nil {
		e.sh(`test "$(sqlite3 db.sqlite 'PRAGMA integrity_check;')" = ok && test "$(sqlite3 db.sqlite 'SELECT count(*) FROM t;')" = 667`)
	}
}

// runBounded kills a command that overstays its limit, children included
// (a child holding the output pipe would otherwise keep Wait waiting).
func TestRunBoundedKillsStuckCommand(t *testing.T) {
	start := time.Now()
	out, err := runBounded(t, exec.Command("bash", "-c", "echo started; sleep 300 & sleep 300"), time.Second)
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("err %v, want a kill", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("runBounded returned after %v for a 1s limit", d)
	}
	if !strings.Contains(string(out), "started") {
		t.Fatalf("output %q lost", out)
	}
}
