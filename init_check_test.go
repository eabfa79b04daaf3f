package healstore

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInitChecksKeptFilesBeforeWriting: a secrets file or master key that
// init keeps but the store could not open (readable by others, malformed)
// is refused before init writes anything, not after it wrote a key and a
// config that the next init then refuses to replace.
func TestInitChecksKeptFilesBeforeWriting(t *testing.T) {
	for _, c := range []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"world-readable", "a = \"b\"\n", 0o644, "chmod 600"},
		{"malformed", "not toml at all\n", 0o600, "malformed"},
	} {
		t.Run("secrets "+c.name, func(t *testing.T) {
			dir := t.TempDir()
			sp := filepath.Join(dir, "secrets.toml")
			if err := os.WriteFile(sp, []byte(c.content), c.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(sp, c.mode); err != nil {
				t.Fatal(err)
			}
			_, err := Init(dir, InitOptions{})
			if !errors.Is(err, ErrInitRefused) || !strings.Contains(err.Error(), sp) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Init: %v; want a refusal naming %s and %q", err, sp, c.want)
			}
			for _, f := range []string{ConfigFileName, "healstore.key", "backends"} {
				if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s written before the refusal (stat: %v)", f, err)
				}
			}
		})
	}

	for _, c := range []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"world-readable", "", 0o644, "chmod 600"},
		{"malformed", "nothex\n", 0o600, "hex digits"},
	} {
		t.Run("force key "+c.name, func(t *testing.T) {
			dir := t.TempDir()
			p, err := Init(dir, InitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			kp := filepath.Join(dir, "healstore.key")
			if c.content != "" {
				if err := os.WriteFile(kp, []byte(c.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(kp, c.mode); err != nil {
				t.Fatal(err)
			}
			edited := []byte("# the user's config\n")
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			edited = append(edited, raw...)
			if err := os.WriteFile(p, edited, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = Init(dir, InitOptions{Force: true})
			if !errors.Is(err, ErrInitRefused) || !strings.Contains(err.Error(), kp) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Init --force: %v; want a refusal naming %s and %q", err, kp, c.want)
			}
			if got, err := os.ReadFile(p); err != nil || string(got) != string(edited) {
				t.Fatalf("config rewritten before the refusal (read: %v)", err)
			}
		})
	}
}
