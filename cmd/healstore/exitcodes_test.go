package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestErrorsHaveOnePrefix: an error that names its command ("healstore
// put: ...") is printed as is, not as "healstore: healstore put: ...".
func TestErrorsHaveOnePrefix(t *testing.T) {
	dir := t.TempDir()
	cases := [][]string{
		{"put"},
		{"put", "a", "b", "c"},
		{"ls", "--bogus"},
		{"get", ""},
		{"--config", filepath.Join(dir, "none.toml"), "ls"},
	}
	for _, args := range cases {
		_, errs, code := cli(t, "", args...)
		if code == 0 || strings.Count(errs, "healstore") == 0 || strings.Contains(errs, "healstore: healstore") ||
			!strings.HasPrefix(errs, "healstore") {
			t.Errorf("%q: exit %d, stderr %q; want one healstore prefix", args, code, errs)
		}
	}
}

// newStore inits a store in a temp dir and points HEALSTORE_CONFIG at it.
func newStore(t *testing.T) (dir, cfg string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "store")
	if _, errs, code := cli(t, "", "init", dir); code != 0 {
		t.Fatalf("init: %d %s", code, errs)
	}
	cfg = filepath.Join(dir, "healstore.toml")
	t.Setenv("HEALSTORE_CONFIG", cfg)
	return dir, cfg
}

// TestUsageAndConfigExitCodes: bad flags, a config asking for more
// backends than the store has, and commands refused for what already
// exists exit 2; a backend that does not exist exits 3, like an object.
func TestUsageAndConfigExitCodes(t *testing.T) {
	dir, cfg := newStore(t)
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"daemon", "--addr", "nonsense"}, exitUsage, `--addr "nonsense"`},
		{[]string{"daemon", "--addr", "127.0.0.1:port"}, exitUsage, `--addr "127.0.0.1:port"`},
		// Checked before the store is opened: no config needed.
		{[]string{"--config", filepath.Join(dir, "none.toml"), "mount", "--block-size", "3K", filepath.Join(dir, "mnt")}, exitUsage, "--block-size 3K: must be between 64K and 64M"},
		{[]string{"mount", "--block-size", "128M", filepath.Join(dir, "mnt")}, exitUsage, "between 64K and 64M"},
		{[]string{"init", dir}, exitUsage, "already exists"},
		{[]string{"backend", "add", "b1", "--kind", "local", "--path", filepath.Join(dir, "other"), "--node", "n9"}, exitUsage, "backend b1 already exists"},
		{[]string{"backend", "rm", "nope"}, exitNotFound, "backend nope: no such backend"},
		{[]string{"backend", "drain", "nope"}, exitNotFound, "backend nope: no such backend"},
	}
	for _, c := range cases {
		_, errs, code := cli(t, "", c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) || strings.Contains(errs, `key "backend/`) {
			t.Errorf("%q: exit %d (want %d), stderr %q (want %q)", c.args, code, c.code, errs, c.msg)
		}
	}

	// m = 20 over the six backends init made: a config problem.
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	wide := filepath.Join(dir, "wide.toml")
	if err := os.WriteFile(wide, []byte(strings.Replace(string(raw), "m = 2\n", "m = 20\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := cli(t, "", "--config", wide, "ls"); code != exitUsage || !strings.Contains(errs, "insufficient backends") {
		t.Errorf("ls with m = 20 over 6 backends: exit %d, stderr %q; want exit 2", code, errs)
	}
	// Unreachable backends are not a config problem: reads fail with 1.
	if _, errs, code := cli(t, strings.Repeat("not inline ", 1000), "put", "obj", "-"); code != 0 {
		t.Fatalf("put: %d %s", code, errs)
	}
	for _, b := range []string{"b1", "b2", "b3"} {
		p := filepath.Join(dir, "backends", b)
		if err := os.Rename(p, p+".gone"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("not a directory"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, errs, code := cli(t, "", "get", "obj"); code != exitError {
		t.Errorf("get with three of six backends unreachable: exit %d, stderr %q; want 1", code, errs)
	}
}
