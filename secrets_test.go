package healstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// TestSecretStoreSharedFile: several SecretStores on one file (a daemon and
// `healstore backend add`, or a hand edit) keep each other's secrets.
func TestSecretStoreSharedFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "secrets.toml")
	open := func() *SecretStore {
		t.Helper()
		s, err := OpenSecrets(p)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	onDisk := func() string {
		t.Helper()
		return strings.Join(open().Refs(), ",")
	}
	a, b := open(), open()
	if err := a.Set("zdb/new", "pw-from-a"); err != nil {
		t.Fatal(err)
	}
	if err := b.Set("s3/other", "pw-from-b"); err != nil {
		t.Fatal(err)
	}
	if got := onDisk(); got != "s3/other,zdb/new" {
		t.Fatalf("after a Set by each of two instances the file holds %q", got)
	}
	// a never saw b's secret in memory: Lookup reads the file again.
	if v, err := a.Lookup("s3/other"); err != nil || v != "pw-from-b" {
		t.Fatalf("Lookup of another instance's secret: %q, %v", v, err)
	}

	// A hand edit survives the next Set.
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("\"by/hand\" = \"edited\"\n")
	f.Close()
	if err := b.Set("zdb/third", "pw3"); err != nil {
		t.Fatal(err)
	}
	if got := onDisk(); got != "by/hand,s3/other,zdb/new,zdb/third" {
		t.Fatalf("after a hand edit and a Set the file holds %q", got)
	}

	// Delete of a ref this instance never loaded removes it from the file
	// and nothing else.
	c := open()
	if err := a.Set("late", "x"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete("late"); err != nil {
		t.Fatal(err)
	}
	if got := onDisk(); got != "by/hand,s3/other,zdb/new,zdb/third" {
		t.Fatalf("after Delete by a stale instance the file holds %q", got)
	}

	for _, f := range []string{p, p + ".lock"} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, %v; want mode 0600", f, st.Mode(), err)
		}
	}

	// A malformed hand edit makes Set fail and leaves the file as it is.
	bad := []byte("ok = \"fine\"\nbroken = \"hunter2\n")
	if err := os.WriteFile(p, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Set("zdb/new", "changed"); err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), ":2") {
		t.Fatalf("Set over a malformed file: %v", err)
	}
	if got, _ := os.ReadFile(p); string(got) != string(bad) {
		t.Fatalf("Set over a malformed file rewrote it: %q", got)
	}
}

// TestSecretStoreConcurrentInstances: Sets racing from two instances (two
// processes, as far as the lock can tell) all land.
func TestSecretStoreConcurrentInstances(t *testing.T) {
	p := filepath.Join(t.TempDir(), "secrets.toml")
	const perInstance = 15
	var wg sync.WaitGroup
	errs := make(chan error, 2*perInstance)
	for inst := range 2 {
		s, err := OpenSecrets(p)
		if err != nil {
			t.Fatal(err)
		}
		for i := range perInstance {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.Set(fmt.Sprintf("i%d/r%02d", inst, i), "v"); err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s, err := OpenSecrets(p)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(s.Refs()); n != 2*perInstance {
		t.Fatalf("%d of %d concurrently set secrets are in the file: %v", n, 2*perInstance, s.Refs())
	}
}
