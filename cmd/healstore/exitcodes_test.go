package main

import (
	"errors"
	"io/fs"
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
		{[]string{"init", filepath.Join(dir, "wide"), "--k", "300"}, exitUsage, "--k 300 --m 2"},
		{[]string{"backend", "add", "b1", "--kind", "local", "--path", filepath.Join(dir, "other"), "--node", "n9"}, exitUsage, "backend b1 already exists"},
		{[]string{"backend", "rm", "nope"}, exitNotFound, "backend nope: no such backend"},
		{[]string{"backend", "drain", "nope"}, exitNotFound, "backend nope: no such backend"},
		{[]string{"backend", "drain", "b1", "--wait", "-5s"}, exitUsage, "--wait -5s"},
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

// TestInitForceKeepsTheStoreReadable: init --force rewrites the config
// and keeps the key, so the store's objects still read; with the key
// gone it refuses to make a new one the store's metadata would reject;
// and it will not point a backend of the old config somewhere else.
func TestInitForceKeepsTheStoreReadable(t *testing.T) {
	dir, cfg := newStore(t)
	data := strings.Repeat("kept across init --force ", 1000)
	if _, errs, code := cli(t, data, "put", "obj", "-"); code != 0 {
		t.Fatalf("put: %d %s", code, errs)
	}
	keyPath := filepath.Join(dir, "healstore.key")
	key, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	readable := func(when string) {
		t.Helper()
		if out, errs, code := cli(t, "", "get", "obj"); code != 0 || out != data {
			t.Fatalf("%s: get exit %d, stderr %q", when, code, errs)
		}
	}

	// The config broken: --force writes a new one, keeping the key.
	os.WriteFile(cfg, []byte("garbage = \n"), 0o600)
	if _, errs, code := cli(t, "", "init", "--force", dir); code != 0 {
		t.Fatalf("init --force with the key in place: exit %d, stderr %q", code, errs)
	}
	if got, _ := os.ReadFile(keyPath); string(got) != string(key) {
		t.Fatal("init --force replaced the master key")
	}
	readable("after init --force")

	// Without --force, an existing key is refused, pointing at --force.
	os.Remove(cfg)
	if _, errs, code := cli(t, "", "init", dir); code != exitUsage || !strings.Contains(errs, "--force") {
		t.Fatalf("init over an existing key: exit %d, stderr %q; want 2 naming --force", code, errs)
	}

	// The key moved away: no new key, no new config, exit 2.
	if err := os.Rename(keyPath, keyPath+".away"); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init", "--force", dir}, {"init", dir}} {
		_, errs, code := cli(t, "", args...)
		if code != exitUsage || !strings.Contains(errs, "master key") || !strings.Contains(errs, "healstore recover") {
			t.Errorf("%q with the metadata but no key: exit %d, stderr %q; want 2, naming the key and recover", args, code, errs)
		}
		if _, err := os.Stat(keyPath); err == nil {
			t.Fatalf("%q wrote a new master key over a store made under another", args)
		}
		if _, err := os.Stat(cfg); err == nil {
			t.Fatalf("%q wrote a config though it refused", args)
		}
	}
	// The key restored: init --force makes the store work again.
	if err := os.Rename(keyPath+".away", keyPath); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := cli(t, "", "init", "--force", dir); code != 0 {
		t.Fatalf("init --force with the key restored: exit %d, stderr %q", code, errs)
	}
	readable("after the key was restored")

	// A config whose b1 lives elsewhere is not rewritten.
	raw, _ := os.ReadFile(cfg)
	moved := strings.Replace(string(raw), `path = "backends/b1"`, `path = "elsewhere/b1"`, 1)
	os.WriteFile(cfg, []byte(moved), 0o600)
	if _, errs, code := cli(t, "", "init", "--force", dir); code != exitUsage || !strings.Contains(errs, "backend b1") {
		t.Fatalf("init --force over a config with b1 elsewhere: exit %d, stderr %q; want 2 naming b1", code, errs)
	}
	if got, _ := os.ReadFile(cfg); string(got) != moved {
		t.Fatal("init --force rewrote a config whose backend it would have moved")
	}
}

// TestInitForceLeavesAGoneBackendGone: init --force over a store whose
// backend directory vanished (a volume not mounted) does not make it
// again; the store reports it and still reads from the others.
func TestInitForceLeavesAGoneBackendGone(t *testing.T) {
	dir, _ := newStore(t)
	data := strings.Repeat("read without b2 ", 1000)
	if _, errs, code := cli(t, data, "put", "obj", "-"); code != 0 {
		t.Fatalf("put: %d %s", code, errs)
	}
	b2 := filepath.Join(dir, "backends", "b2")
	if err := os.Rename(b2, b2+".unmounted"); err != nil {
		t.Fatal(err)
	}
	_, errs, code := cli(t, "", "init", "--force", dir)
	if code != 0 {
		t.Fatalf("init --force: exit %d, stderr %q", code, errs)
	}
	if _, err := os.Stat(filepath.Join(b2, "data")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("init --force made the vanished backend's data directory again: %v", err)
	}
	if !strings.Contains(errs, "b2") {
		t.Errorf("init --force said nothing of the vanished backend b2: stderr %q", errs)
	}
	if out, errs, code := cli(t, "", "get", "obj"); code != 0 || out != data {
		t.Fatalf("get without b2: exit %d, stderr %q", code, errs)
	}
	if _, err := os.Stat(filepath.Join(b2, "data")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("get made the vanished backend's data directory again: %v", err)
	}
}
