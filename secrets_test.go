package healstore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/healstore/healstore/backends"
)

func TestMasterKeyFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	if err := GenerateMasterKey(p); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	k, err := LoadMasterKey(p)
	if err != nil || len(k) != MasterKeySize {
		t.Fatalf("load: %v (%d bytes)", err, len(k))
	}
	if err := GenerateMasterKey(p); err == nil {
		t.Fatal("overwrote an existing key")
	}
	os.Chmod(p, 0o640)
	_, err = LoadMasterKey(p)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable key accepted: %v", err)
	}
	os.Chmod(p, 0o600)
	os.WriteFile(p, []byte("not hex at all, and secret-looking\n"), 0o600)
	_, err = LoadMasterKey(p)
	if err == nil || strings.Contains(err.Error(), "secret-looking") {
		t.Fatalf("bad key: %v", err)
	}
}

func TestSecretStore(t *testing.T) {
	p := filepath.Join(t.TempDir(), "secrets.toml")
	s, err := OpenSecrets(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup("zdb1"); !errors.Is(err, backends.ErrNoSecret) || !strings.Contains(err.Error(), "zdb1") {
		t.Fatalf("missing ref: %v", err)
	}
	if err := s.Set("zdb1", `pa"ss=word`); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("s3.key", "s3cr3t"); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	again, err := OpenSecrets(p)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := again.Lookup("zdb1"); err != nil || v != `pa"ss=word` {
		t.Fatalf("reloaded %q %v", v, err)
	}
	if got := strings.Join(again.Refs(), ","); got != "s3.key,zdb1" {
		t.Fatalf("refs %s", got)
	}
	if err := again.Delete("zdb1"); err != nil {
		t.Fatal(err)
	}
	if _, err := again.Lookup("zdb1"); err == nil {
		t.Fatal("deleted ref still there")
	}

	os.Chmod(p, 0o644)
	if _, err := OpenSecrets(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable secrets accepted: %v", err)
	}
	os.Chmod(p, 0o600)
	// A malformed file: the error names the line, never the content.
	os.WriteFile(p, []byte("ok = \"fine\"\nbroken = \"hunter2\n"), 0o600)
	_, err = OpenSecrets(p)
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), ":2") {
		t.Fatalf("malformed secrets: %v", err)
	}
}
