package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/local"
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

// readMarker reads the identity marker of the local backend at path, as
// the store does.
func readMarker(path string) ([]byte, error) {
	b, err := local.Open(backends.Spec{Name: "look", Kind: backends.KindLocal, Path: path})
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return b.Get(context.Background(), healstore.MarkerKey)
}

// TestBackendAddRefusesAnotherBackendsPlace: backend add at the place of
// a backend of this store (or of another store) is refused, and that
// backend's identity marker is left as it was. Adopted, the new backend
// overwrote the marker, so the old one looked foreign to the healer (and
// wiped), and the two shared one failure domain.
func TestBackendAddRefusesAnotherBackendsPlace(t *testing.T) {
	dir, _ := newStore(t)
	b1 := filepath.Join(dir, "backends", "b1")
	before, err := readMarker(b1)
	if err != nil || len(before) == 0 {
		t.Fatalf("b1's marker: %q %v", before, err)
	}
	_, errs, code := cli(t, "", "backend", "add", "b8", "--kind", "local", "--path", b1, "--node", "n8")
	if code == 0 || !strings.Contains(errs, "b1") {
		t.Fatalf("backend add at b1's directory: exit %d, stderr %q; want a refusal naming b1", code, errs)
	}
	if after, err := readMarker(b1); err != nil || string(after) != string(before) {
		t.Fatalf("b1's marker changed: %q -> %q (%v)", before, after, err)
	}
	out, _, _ := cli(t, "", "backend", "ls")
	if strings.Contains(out, "b8") {
		t.Fatalf("b8 registered:\n%s", out)
	}

	// A removed backend's place may be used again.
	x := filepath.Join(t.TempDir(), "x")
	for _, args := range [][]string{
		{"backend", "add", "b7", "--kind", "local", "--path", x, "--node", "n7"},
		{"backend", "drain", "b7"},
		{"backend", "rm", "b7"},
		{"backend", "add", "b8", "--kind", "local", "--path", x, "--node", "n8"},
	} {
		if _, errs, code := cli(t, "", args...); code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, errs)
		}
	}

	// Another store's backend.
	other, _ := newStore(t)
	_, errs, code = cli(t, "", "backend", "add", "b9", "--kind", "local", "--path", filepath.Join(dir, "backends", "b2"), "--node", "n9")
	if code == 0 || !strings.Contains(errs, "another store") {
		t.Fatalf("backend add at another store's backend (store in %s): exit %d, stderr %q", other, code, errs)
	}
}

// TestWrongMetadataDirIsNamed: a config whose dir (so metadata_dir)
// points away from the store's metadata opens an empty metastore; the
// store's own backends then look like another store's. The error says
// which metadata it opened, so the user checks that, not the backends.
func TestWrongMetadataDirIsNamed(t *testing.T) {
	_, cfg := newStore(t)
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(t.TempDir(), "elsewhere")
	edited := strings.Replace(string(raw), `dir = "."`, "dir = "+strconv.Quote(elsewhere), 1)
	if edited == string(raw) {
		t.Fatal("no dir line to edit")
	}
	if err := os.WriteFile(cfg, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errs, code := cli(t, "", "stat", "x")
	if code == 0 || !strings.Contains(errs, "another store") || !strings.Contains(errs, filepath.Join(elsewhere, "meta")) || !strings.Contains(errs, "metadata_dir") {
		t.Fatalf("stat with dir pointing elsewhere: exit %d, stderr %q; want the metadata it opened named", code, errs)
	}
	// ls opens the metadata alone (no backend to find another store's
	// marker on), and makes no store where none is.
	os.RemoveAll(elsewhere)
	_, errs, code = cli(t, "", "ls")
	if code != exitUsage || !strings.Contains(errs, "no store at "+filepath.Join(elsewhere, "meta")) || !strings.Contains(errs, "metadata_dir") {
		t.Fatalf("ls with dir pointing elsewhere: exit %d, stderr %q; want a config error naming the metadata it looked at", code, errs)
	}
	if _, err := os.Stat(elsewhere); !os.IsNotExist(err) {
		t.Fatalf("ls made something at %s: %v", elsewhere, err)
	}
}

// TestBackendAddRefusesFlagsOfAnotherKind: a flag that means nothing for
// the kind given (--bucket for a local backend) is a usage error naming
// the flag and the kind, and nothing is added or saved. Before, the flag
// was dropped silently and the user believed the setting took effect.
func TestBackendAddRefusesFlagsOfAnotherKind(t *testing.T) {
	dir, _ := newStore(t)
	secrets := filepath.Join(dir, "secrets.toml")
	secretsBefore, err := os.ReadFile(secrets)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "b7")
	local := []string{"backend", "add", "b7", "--kind", "local", "--path", path, "--node", "n7"}
	zdb := []string{"backend", "add", "b7", "--kind", "zdb", "--address", "127.0.0.1:1", "--namespace", "ns", "--node", "n7"}
	s3 := []string{"backend", "add", "b7", "--kind", "s3", "--address", "127.0.0.1:1", "--bucket", "healstore", "--node", "n7"}
	for _, c := range []struct {
		args  []string
		stdin string
		want  string
	}{
		{append(local, "--bucket", "x"), "", "--bucket does not apply to a local backend"},
		{append(local, "--tls=false"), "", "--tls does not apply to a local backend"},
		{append(local, "--address", "127.0.0.1:9900"), "", "--address does not apply to a local backend"},
		{append(local, "--secret-ref", "r", "--secret-stdin"), "hunter2\n", "--secret-ref does not apply to a local backend"},
		{append(zdb, "--path", path), "", "--path does not apply to a zdb backend"},
		{append(zdb, "--access-key", "AK"), "", "--access-key does not apply to a zdb backend"},
		{append(zdb, "--prefix", "p/"), "", "--prefix does not apply to a zdb backend"},
		{append(s3, "--namespace", "ns"), "", "--namespace does not apply to an s3 backend"},
		{append(s3, "--path", path), "", "--path does not apply to an s3 backend"},
	} {
		_, errs, code := cli(t, c.stdin, c.args...)
		if code != exitUsage || !strings.Contains(errs, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit %d and %q", c.args, code, errs, exitUsage, c.want)
		}
	}
	out, _, _ := cli(t, "", "backend", "ls")
	if strings.Contains(out, "b7") {
		t.Fatalf("b7 registered:\n%s", out)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the refused local backend's directory was made: %v", err)
	}
	if after, err := os.ReadFile(secrets); err != nil || string(after) != string(secretsBefore) {
		t.Fatalf("secrets file changed: %q -> %q (%v)", secretsBefore, after, err)
	}

	// The flags of the kind given, and those of every kind, pass.
	for _, args := range [][]string{
		{"--kind", "local", "--path", path, "--quota", "1GiB", "--node", "n", "--farm", "f", "--spare"},
		{"--kind", "zdb", "--address", "h:1", "--namespace", "ns", "--secret-ref", "r", "--secret-stdin", "--quota", "1GiB", "--node", "n", "--farm", "f", "--spare"},
		{"--kind", "s3", "--address", "h:1", "--bucket", "b", "--prefix", "p", "--region", "r", "--tls", "--access-key", "AK",
			"--secret-ref", "r", "--secret-stdin", "--quota", "1GiB", "--node", "n", "--farm", "f", "--spare"},
		{"--kind", "nfs", "--bucket", "b"}, // an unknown kind is Validate's to report
	} {
		cmd := newBackendAddCmd(&globalOptions{})
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		kind, _ := cmd.Flags().GetString("kind")
		if err := checkKindFlags(cmd, kind); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
}

// TestBackendAddKindFlagsExist: checkKindFlags spells each field of
// backends.KindFields as a flag; every one of those names a flag of
// backend add, so none is left unchecked by a rename.
func TestBackendAddKindFlagsExist(t *testing.T) {
	cmd := newBackendAddCmd(&globalOptions{})
	for _, f := range backends.KindFields() {
		name := strings.ReplaceAll(f.Key, "_", "-")
		if cmd.Flags().Lookup(name) == nil {
			t.Errorf("field %s: backend add has no --%s", f.Key, name)
		}
	}
}
