package healstore

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/pelletier/go-toml/v2"

	"github.com/healstore/healstore/backends"
)

// MasterKeySize is the length of the master key in bytes.
const MasterKeySize = 32

// checkPrivate refuses a secret-bearing file that group or others may
// access. The message says how to fix it and never shows the content.
func checkPrivate(path string, what string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, errors.Unwrap(err))
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s %s: not a regular file", what, path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s %s has mode %04o: group and others must have no access; run: chmod 600 %s", what, path, perm, path)
	}
	return nil
}

// writePrivate writes data to path atomically (temp file, fsync, rename)
// with mode 0600.
func writePrivate(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// GenerateMasterKey writes a new random master key to path (64 hex digits
// and a newline, mode 0600). It refuses to overwrite an existing file: a
// lost master key makes every object unreadable.
func GenerateMasterKey(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("master key file %s already exists; refusing to overwrite it", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("master key file %s: %w", path, err)
	}
	key := make([]byte, MasterKeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("generate master key: %w", err)
	}
	return writePrivate(path, []byte(hex.EncodeToString(key)+"\n"))
}

// LoadMasterKey reads a master key file written by GenerateMasterKey. The
// file must be mode 0600 (or stricter). Errors never show the content.
func LoadMasterKey(path string) ([]byte, error) {
	if err := checkPrivate(path, "master key file"); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("master key file %s: %w", path, errors.Unwrap(err))
	}
	text := strings.TrimSpace(string(data))
	key, err := hex.DecodeString(text)
	if err != nil || len(key) != MasterKeySize {
		return nil, fmt.Errorf("master key file %s: must hold %d hex digits (a %d-byte key)", path, 2*MasterKeySize, MasterKeySize)
	}
	return key, nil
}

// keyCheck is a one-way fingerprint of the master key, stored in the
// metastore so that opening a store with the wrong key fails at once
// instead of writing objects no one can read. It reveals nothing about the
// key beyond equality.
func keyCheck(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("healstore master key check v1"))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// SecretStore maps secret refs (backends.Spec.SecretRef) to secrets: zdb
// namespace passwords, S3 secret keys. It is persisted as a TOML file of
// `ref = "secret"` lines with mode 0600. Safe for concurrent use.
//
// Secrets never leave it except through Lookup; its errors name refs only.
type SecretStore struct {
	path string
	mu   sync.Mutex
	m    map[string]string
}

// OpenSecrets loads the secrets file at path. A missing file is an empty
// store (Set creates it); a file group or others can read is refused. An
// empty path gives an in-memory store that Set cannot persist.
func OpenSecrets(path string) (*SecretStore, error) {
	s := &SecretStore{path: path, m: map[string]string{}}
	if path == "" {
		return s, nil
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err := checkPrivate(path, "secrets file"); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets file %s: %w", path, errors.Unwrap(err))
	}
	if err := toml.Unmarshal(data, &s.m); err != nil {
		// The decoder's message may quote the offending text, which could
		// be a secret: report the line only.
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			return nil, fmt.Errorf("secrets file %s:%d: malformed; each line must be ref = \"secret\"", path, line)
		}
		return nil, fmt.Errorf("secrets file %s: malformed; each line must be ref = \"secret\"", path)
	}
	return s, nil
}

// Lookup returns the secret for ref, or an error matching
// backends.ErrNoSecret that names the ref. It is a backends.SecretLookup.
func (s *SecretStore) Lookup(ref string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[ref]
	if !ok {
		where := "the secrets file"
		if s.path != "" {
			where = s.path
		}
		return "", fmt.Errorf("secret ref %q is not in %s: %w", ref, where, backends.ErrNoSecret)
	}
	return v, nil
}

var _ backends.SecretLookup = (*SecretStore)(nil).Lookup

// Set stores secret under ref and rewrites the file (atomically, 0600).
func (s *SecretStore) Set(ref, secret string) error {
	if ref == "" {
		return errors.New("secret ref is empty")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.m[ref]
	s.m[ref] = secret
	if err := s.save(); err != nil {
		if had {
			s.m[ref] = old
		} else {
			delete(s.m, ref)
		}
		return err
	}
	return nil
}

// Delete removes ref; a missing ref is not an error.
func (s *SecretStore) Delete(ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.m[ref]
	if !had {
		return nil
	}
	delete(s.m, ref)
	if err := s.save(); err != nil {
		s.m[ref] = old
		return err
	}
	return nil
}

// Refs lists the refs held, sorted.
func (s *SecretStore) Refs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	refs := make([]string, 0, len(s.m))
	for r := range s.m {
		refs = append(refs, r)
	}
	sort.Strings(refs)
	return refs
}

func (s *SecretStore) save() error {
	if s.path == "" {
		return errors.New("secret store has no file to save to (set secrets_file in the config)")
	}
	var buf bytes.Buffer
	buf.WriteString("# healstore secrets: ref = \"secret\". Keep this file mode 0600.\n")
	refs := make([]string, 0, len(s.m))
	for r := range s.m {
		refs = append(refs, r)
	}
	sort.Strings(refs)
	for _, r := range refs {
		line, err := toml.Marshal(map[string]string{r: s.m[r]})
		if err != nil {
			return fmt.Errorf("secrets file %s: cannot encode ref %q", s.path, r)
		}
		buf.Write(line)
	}
	return writePrivate(s.path, buf.Bytes())
}
