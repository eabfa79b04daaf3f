package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackendAddRelativePath: backend add --path is relative to where the
// command runs, like any path argument; the store records it absolute, so
// a daemon or a command started elsewhere finds the backend.
func TestBackendAddRelativePath(t *testing.T) {
	newStore(t)
	here := t.TempDir()
	t.Chdir(here)
	if _, errs, code := cli(t, "", "backend", "add", "b7", "--kind", "local", "--path", "rel7", "--node", "n7"); code != 0 {
		t.Fatalf("backend add: exit %d: %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(here, "rel7", "data")); err != nil {
		t.Fatalf("backend not made under the working directory: %v", err)
	}
	t.Chdir(t.TempDir())
	out, errs, code := cli(t, "", "status")
	if code != 0 || strings.Contains(errs, "b7") {
		t.Fatalf("status from another directory: exit %d, stderr %q, stdout %s", code, errs, out)
	}
}
