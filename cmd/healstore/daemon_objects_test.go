package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDataCommandsThroughDaemon: with the daemon running (it holds the
// embedded metastore), put, get, ls, stat and rm work through it, with
// the exit codes they have without it. Before, each of them failed, and a
// user had to stop the healer to store a file.
func TestDataCommandsThroughDaemon(t *testing.T) {
	_, cfg := newStore(t)
	useDaemon(t, cfg)

	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	data := bytes.Repeat([]byte("through the daemon "), 400_000) // 7.6 MB: two blocks
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errs, code := cli(t, "", "put", "docs/a", src); code != 0 || !strings.Contains(out, "stored docs/a") {
		t.Fatalf("put: exit %d: %s %s", code, out, errs)
	}
	dst := filepath.Join(dir, "dst")
	if _, errs, code := cli(t, "", "get", "docs/a", dst); code != 0 {
		t.Fatalf("get: exit %d: %s", code, errs)
	}
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("get: %d bytes, %v", len(got), err)
	}
	if out, _, code := cli(t, "", "put", "docs/b", "-"); code != 0 {
		t.Fatalf("put from stdin: exit %d %s", code, out)
	}
	if out, errs, code := cli(t, "", "ls", "docs/"); code != 0 || out != "docs/a\ndocs/b\n" {
		t.Fatalf("ls: exit %d: %q %s", code, out, errs)
	}
	if out, errs, code := cli(t, "", "stat", "docs/a"); code != 0 || !strings.Contains(out, "can lose 2 more") {
		t.Fatalf("stat: exit %d: %s %s", code, out, errs)
	}
	if _, errs, code := cli(t, "", "rm", "docs/a"); code != 0 {
		t.Fatalf("rm: exit %d: %s", code, errs)
	}
	for _, args := range [][]string{{"get", "docs/a", "-"}, {"stat", "docs/a"}, {"rm", "docs/a"}} {
		if _, errs, code := cli(t, "", args...); code != exitNotFound || !strings.Contains(errs, "not found") {
			t.Errorf("%v after rm: exit %d (want %d): %s", args, code, exitNotFound, errs)
		}
	}
}
