package healstore

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// The daemon's API on healer.metrics_addr changes the store (heal, scrub,
// settings, backend add, drain and rm) for whoever can reach that address:
// every user of the machine on loopback, every host of the network on a
// private address. So requests that change something must carry the
// daemon's token, kept in DaemonTokenFile, mode 0600: only the daemon's
// user (who can read the master key anyway) can act through the API.
// Reading (metrics, status) needs no token, so Prometheus scrapes as
// before.

// DaemonTokenFile holds the daemon's API token: in the metadata directory
// of an embedded store, in the config's dir for one on etcd.
const DaemonTokenFile = "daemon.token"

// daemonTokenPath is where cfg's daemon keeps its token. An embedded
// store's metadata directory is writable wherever the daemon runs at all;
// dir may be a read-only /etc next to the config file.
func daemonTokenPath(cfg *Config) string {
	if cfg.Metastore.Kind != "etcd" {
		return filepath.Join(cfg.MetadataDir, DaemonTokenFile)
	}
	return filepath.Join(cfg.Dir, DaemonTokenFile)
}

// daemonToken returns the token in cfg's token file, making the file
// (mode 0600) when there is none yet. The token stays across restarts, so
// a command that read it keeps working when the daemon restarts, and
// daemons that share a dir (frontends of an etcd store on one machine)
// share it; to change it, remove the file and restart the daemons.
func daemonToken(cfg *Config) (string, error) {
	path := daemonTokenPath(cfg)
	// Daemons sharing the dir that start together replace a damaged
	// token one at a time: each removing it and linking its own, one
	// removed another's fresh token, and that daemon then held a token no
	// command could read. Best effort: a file system without flock on a
	// directory keeps the link below, which settles a token made where
	// there was none.
	if unlock, err := lockDir(filepath.Dir(path)); err == nil {
		defer unlock()
	}
	for range 3 {
		raw, loose, err := readToken(path)
		switch old := strings.TrimSpace(string(raw)); {
		case err == nil && len(old) == 2*tokenBytes && !loose:
			return old, nil
		case err == nil:
			// Damaged (cut short, edited), or readable by others, who
			// may have read it: replaced.
			os.Remove(path)
		case !errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("daemon token %s: %w", path, err)
		}
		buf := make([]byte, tokenBytes)
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("daemon token: %w", err)
		}
		token := hex.EncodeToString(buf)
		f, err := os.CreateTemp(filepath.Dir(path), DaemonTokenFile+".tmp*")
		if err != nil {
			return "", fmt.Errorf("daemon token: %w", err)
		}
		// CreateTemp makes it 0600 already; said again for whoever
		// changes that.
		err = f.Chmod(0o600)
		if err == nil {
			_, err = f.WriteString(token + "\n")
		}
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			// A link, not a rename: of two daemons starting at once,
			// the second finds the first's token and takes it.
			err = os.Link(f.Name(), path)
		}
		os.Remove(f.Name())
		switch {
		case err == nil:
			return token, nil
		case !errors.Is(err, fs.ErrExist):
			return "", fmt.Errorf("daemon token %s: %w", path, err)
		}
	}
	return "", fmt.Errorf("daemon token %s: made and replaced again and again", path)
}

// readToken reads the token file at path and says whether its mode lets
// others than its owner read it.
func readToken(path string) (raw []byte, loose bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	raw, err = io.ReadAll(io.LimitReader(f, 1<<10))
	return raw, fi.Mode().Perm()&0o077 != 0, err
}

// lockDir takes an exclusive flock on directory dir, released by unlock.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := flockWait(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// tokenBytes is the length of a token, before its hex encoding.
const tokenBytes = 32

// DaemonToken reads the token of cfg's daemon, for a client's requests
// that change something. "" with no error when there is none (no daemon
// ran yet, or one older than tokens, which asks for none). An error when
// the file is there but cannot be read: another user's daemon.
func DaemonToken(cfg *Config) (string, error) {
	raw, err := os.ReadFile(daemonTokenPath(cfg))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("the daemon's API token: %w (run this command as the daemon's user)", err)
	}
	return strings.TrimSpace(string(raw)), nil
}

// requireToken lets through requests that only read (GET, HEAD), and the
// others only with "Authorization: Bearer token"; with no token (the
// daemon could not keep one), none of them.
func requireToken(next http.Handler, token, path string, tokenErr error) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead &&
			(token == "" || subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1) {
			msg := fmt.Sprintf("%s %s needs the daemon's API token (in %s, readable by the daemon's user only): run the command as that user", r.Method, r.URL.Path, path)
			if token == "" {
				msg = fmt.Sprintf("%s %s: this daemon takes no changes through its API, as it could not keep a token (%v); stop it to run the command", r.Method, r.URL.Path, tokenErr)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
			return
		}
		next.ServeHTTP(w, r)
	})
}
