package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// A name holding control characters is shown escaped by ls, ls -l, stat
// and put, so it stays one line and no escape sequence reaches the
// terminal; --json gives it exactly.
func TestNamesWithControlCharactersAreShownEscaped(t *testing.T) {
	dir := t.TempDir()
	if _, errs, code := cli(t, "", "init", filepath.Join(dir, "store")); code != 0 {
		t.Fatalf("init: %d %s", code, errs)
	}
	t.Setenv("HEALSTORE_CONFIG", filepath.Join(dir, "store", "healstore.toml"))
	hostile := "logs/a\nb\x1b[2Jc"
	want := `"logs/a\nb\x1b[2Jc"`
	out, errs, code := cli(t, "data", "put", hostile, "-")
	if code != 0 {
		t.Fatalf("put: %d %s", code, errs)
	}
	if !strings.Contains(out, want) || strings.ContainsAny(out, "\x1b") {
		t.Fatalf("put printed %q, want the name as %s", out, want)
	}
	if _, errs, code := cli(t, "plain", "put", "logs/plain name", "-"); code != 0 {
		t.Fatalf("put: %d %s", code, errs)
	}
	out, errs, code = cli(t, "", "ls")
	if code != 0 || out != want+"\nlogs/plain name\n" {
		t.Fatalf("ls: %d %q %s; want the hostile name escaped on one line and the plain one as is", code, out, errs)
	}
	out, _, code = cli(t, "", "ls", "-l")
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, want) || strings.ContainsAny(out, "\x1b") {
		t.Fatalf("ls -l: %d %q", code, out)
	}
	out, _, code = cli(t, "", "stat", hostile)
	if code != 0 || !strings.Contains(out, "name:       "+want+"\n") {
		t.Fatalf("stat: %d %q", code, out)
	}
	out, _, code = cli(t, "", "ls", "--json")
	if code != 0 {
		t.Fatalf("ls --json: %d", code)
	}
	var first struct{ Name string }
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &first); err != nil || first.Name != hostile {
		t.Fatalf("ls --json gave %q (%v), want the name exactly", first.Name, err)
	}
}
