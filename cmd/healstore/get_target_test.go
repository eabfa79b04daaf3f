package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestGetIntoMissingDirectory: get FILE whose directory does not exist
// fails before the store is opened, naming FILE, not the temporary file
// get would have written (".FILE.healstore-NNN").
func TestGetIntoMissingDirectory(t *testing.T) {
	newStore(t)
	file := filepath.Join(t.TempDir(), "nodir", "out.bin")
	_, errs, code := cli(t, "", "get", "no-such-object", file)
	if code != exitError || !strings.Contains(errs, file) || strings.Contains(errs, ".healstore-") || strings.Contains(errs, "not found") {
		t.Fatalf("get into a missing directory: exit %d, stderr %q; want exit %d naming %s", code, errs, exitError, file)
	}
}
