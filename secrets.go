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
	"golang.org/x/sys/unix"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/healer"
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
// `ref = "secret"` lines with mode 0600. Safe for concurrent use, and for
// several SecretStores (in several processes) on one file: every change
// re-reads the file under a lock and changes only its own ref, so secrets
// another process or a hand edit added are kept.
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
	m, err := readSecrets(path)
	if err != nil {
		return nil, err
	}
	s.m = m
	return s, nil
}

// readSecrets parses the secrets file; a missing file is an empty map.
// Files are replaced by rename, so a read needs no lock.
func readSecrets(path string) (map[string]string, error) {
	m := map[string]string{}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err := checkPrivate(path, "secrets file"); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets file %s: %w", path, errors.Unwrap(err))
	}
	if err := toml.Unmarshal(data, &m); err != nil {
		// The decoder's message may quote the offending text, which could
		// be a secret: report the line only.
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			return nil, fmt.Errorf("secrets file %s:%d: malformed; each line must be ref = \"secret\"", path, line)
		}
		return nil, fmt.Errorf("secrets file %s: malformed; each line must be ref = \"secret\"", path)
	}
	return m, nil
}

// Lookup returns the secret for ref, or an error matching
// backends.ErrNoSecret that names the ref. It is a backends.SecretLookup.
// A ref not known in memory is looked for in the file again, so a secret
// another process added (healstore backend add next to a running daemon)
// is found.
func (s *SecretStore) Lookup(ref string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.m[ref]; ok {
		return v, nil
	}
	if s.path == "" {
		return "", fmt.Errorf("secret ref %q is not in the secrets file: %w", ref, backends.ErrNoSecret)
	}
	m, err := readSecrets(s.path)
	if err != nil {
		return "", fmt.Errorf("secret ref %q: %w (%w)", ref, backends.ErrNoSecret, err)
	}
	s.m = m
	if v, ok := s.m[ref]; ok {
		return v, nil
	}
	return "", fmt.Errorf("secret ref %q is not in %s: %w", ref, s.path, backends.ErrNoSecret)
}

var _ backends.SecretLookup = (*SecretStore)(nil).Lookup

// Set stores secret under ref and rewrites the file (atomically, 0600),
// keeping every other ref the file holds.
func (s *SecretStore) Set(ref, secret string) error {
	if ref == "" {
		return errors.New("secret ref is empty")
	}
	return s.change(func(m map[string]string) bool {
		if v, ok := m[ref]; ok && v == secret {
			return false
		}
		m[ref] = secret
		return true
	})
}

// ErrSecretInUse: a ref already holds another secret. It is the healer's
// sentinel, so the daemon's API (which sees it through the healer's
// Register dependency) answers it as a conflict, not its own failure.
var ErrSecretInUse = healer.ErrSecretInUse

// Add stores secret under a new ref, like Set, but refuses (ErrSecretInUse)
// a ref that holds another secret: a backend may be using it, and would
// lose its login. The same secret again is not an error.
func (s *SecretStore) Add(ref, secret string) error {
	if ref == "" {
		return errors.New("secret ref is empty")
	}
	inUse := false
	err := s.change(func(m map[string]string) bool {
		if v, ok := m[ref]; ok {
			inUse = v != secret
			return false
		}
		m[ref] = secret
		return true
	})
	if err != nil {
		return err
	}
	if inUse {
		return fmt.Errorf("secret ref %q already holds another secret, which a backend may use; "+
			"choose another secret ref, or change the secret in %s by hand: %w", ref, s.path, ErrSecretInUse)
	}
	return nil
}

// Delete removes ref from the file; a missing ref is not an error.
func (s *SecretStore) Delete(ref string) error {
	return s.change(func(m map[string]string) bool {
		if _, ok := m[ref]; !ok {
			return false
		}
		delete(m, ref)
		return true
	})
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

// change applies edit to the file's current content under an exclusive
// lock and writes the result back when edit reports a change. The memory
// copy becomes the file's content: a change made from one map alone would
// drop what others wrote since it was read.
func (s *SecretStore) change(edit func(m map[string]string) bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.path == "" {
		return errors.New("secret store has no file to save to (set secrets_file in the config)")
	}
	unlock, err := lockSecrets(s.path)
	if err != nil {
		return err
	}
	defer unlock()
	m, err := readSecrets(s.path)
	if err != nil {
		return err
	}
	if edit(m) {
		if err := writeSecrets(s.path, m); err != nil {
			return err
		}
	}
	s.m = m
	return nil
}

// lockSecrets takes an exclusive flock on a lock file next to the secrets
// file (the secrets file itself is replaced by rename, so a lock on it
// would not be seen by the next writer). Closing the file releases it.
func lockSecrets(path string) (unlock func(), err error) {
	lp := path + ".lock"
	f, err := os.OpenFile(lp, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock secrets file: %w", err)
	}
	if err := flockWait(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock secrets file: flock %s: %w", lp, err)
	}
	return func() { f.Close() }, nil
}

// flockWait takes an exclusive flock on f, waiting for it (through
// signals that interrupt the wait). Closing f releases it.
func flockWait(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			return err
		}
	}
}

func writeSecrets(path string, m map[string]string) error {
	var buf bytes.Buffer
	buf.WriteString("# healstore secrets: ref = \"secret\". Keep this file mode 0600.\n")
	refs := make([]string, 0, len(m))
	for r := range m {
		refs = append(refs, r)
	}
	sort.Strings(refs)
	for _, r := range refs {
		line, err := toml.Marshal(map[string]string{r: m[r]})
		if err != nil {
			return fmt.Errorf("secrets file %s: cannot encode ref %q", path, r)
		}
		buf.Write(line)
	}
	return writePrivate(path, buf.Bytes())
}
