package healstore

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
// daemon's token, which it writes at start to DaemonTokenFile in the
// store's dir, mode 0600: only the daemon's user (who can read the master
// key anyway) can act through the API. Reading (metrics, status) needs no
// token, so Prometheus scrapes as before.

// DaemonTokenFile holds the running daemon's API token, in the config's
// dir.
const DaemonTokenFile = "daemon.token"

// daemonTokenPath is where cfg's daemon keeps its token.
func daemonTokenPath(cfg *Config) string { return filepath.Join(cfg.Dir, DaemonTokenFile) }

// writeDaemonToken makes a new token and writes it where the store's
// commands read it (replacing an old daemon's), mode 0600.
func writeDaemonToken(cfg *Config) (string, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("daemon token: %w", err)
	}
	token := hex.EncodeToString(raw)
	path := daemonTokenPath(cfg)
	f, err := os.CreateTemp(filepath.Dir(path), DaemonTokenFile+".tmp*")
	if err != nil {
		return "", fmt.Errorf("daemon token: %w", err)
	}
	defer os.Remove(f.Name())
	// CreateTemp makes it 0600 already; said again for whoever changes it.
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.WriteString(token + "\n")
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return "", fmt.Errorf("daemon token %s: %w", path, err)
	}
	return token, nil
}

// removeDaemonToken removes cfg's token file if it still holds token (a
// daemon started since keeps its own).
func removeDaemonToken(cfg *Config, token string) {
	path := daemonTokenPath(cfg)
	if raw, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(raw)) == token {
		os.Remove(path)
	}
}

// DaemonToken reads the token of cfg's running daemon, for a client's
// requests that change something. "" with no error when there is none (no
// daemon, or one older than tokens, which asks for none). An error when
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
// others only with "Authorization: Bearer token".
func requireToken(next http.Handler, token, path string) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead &&
			subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf(
				"%s %s needs the daemon's API token (in %s, readable by the daemon's user only): run the command as that user", r.Method, r.URL.Path, path)})
			return
		}
		next.ServeHTTP(w, r)
	})
}
