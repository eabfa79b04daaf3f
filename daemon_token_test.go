package healstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/healstore/healstore/healer"
)

// TestDaemonAPINeedsToken: the daemon's API changes the store only for a
// client with its token, which it keeps 0600 in the store's dir; reading
// (status, metrics) needs none. Before, any user of the machine (or host
// of the network, on a private address) could drain, add and remove
// backends of the store.
func TestDaemonAPINeedsToken(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	addr := startDaemon(t, hs)
	ctx := context.Background()
	path := daemonTokenPath(hs.cfg)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	token, err := DaemonToken(hs.cfg)
	if err != nil || len(token) != 64 {
		t.Fatalf("token %q: %v", token, err)
	}
	for _, c := range []*healer.Client{{Addr: addr}, {Addr: addr, Token: strings.Repeat("0", 64)}} {
		err := c.Drain(ctx, "b1")
		if err == nil || !strings.Contains(err.Error(), DaemonTokenFile) {
			t.Fatalf("drain with token %q: %v, want a refusal naming the token file", c.Token, err)
		}
		if _, err := c.Status(ctx); err != nil {
			t.Fatalf("status without the token: %v", err)
		}
	}
	if st, err := hs.s.HealStatus(ctx); err != nil || st.Backends[0].State != "up" {
		t.Fatalf("b1 after refused drains: %+v %v", st, err)
	}
	if _, err := (&healer.Client{Addr: addr, Token: token}).SetSettings(ctx, nil, nil); err != nil {
		t.Fatalf("settings with the token: %v", err)
	}
}

// TestDaemonTokenKept: the token is made once and kept, so a daemon that
// restarts (or a second one sharing the dir) takes the same one; a damaged
// token file is replaced.
func TestDaemonTokenKept(t *testing.T) {
	cfg := &Config{MetadataDir: t.TempDir()}
	first, err := daemonToken(cfg)
	if err != nil || len(first) != 64 {
		t.Fatalf("first token %q: %v", first, err)
	}
	if again, err := daemonToken(cfg); err != nil || again != first {
		t.Fatalf("token at restart %q (%v), want %q", again, err, first)
	}
	path := daemonTokenPath(cfg)
	if err := os.WriteFile(path, []byte(first[:10]), 0o600); err != nil {
		t.Fatal(err)
	}
	fresh, err := daemonToken(cfg)
	if err != nil || len(fresh) != 64 || fresh == first {
		t.Fatalf("token after damage %q: %v", fresh, err)
	}
	if read, err := DaemonToken(cfg); err != nil || read != fresh {
		t.Fatalf("DaemonToken %q (%v), want %q", read, err, fresh)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	if left, _ := filepath.Glob(daemonTokenPath(cfg) + ".tmp*"); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// TestDaemonTokenReplacedOnceByDaemonsStartingTogether: daemons sharing a
// dir that start together and find its token damaged all take the one
// token the file then holds. Each removed the damaged file and made its
// own: one could remove another's fresh token and link its own, and that
// daemon then refused every command that read the file (401).
func TestDaemonTokenReplacedOnceByDaemonsStartingTogether(t *testing.T) {
	for round := range 150 {
		cfg := &Config{MetadataDir: t.TempDir()}
		if err := os.WriteFile(daemonTokenPath(cfg), []byte("cut sh"), 0o600); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		toks, errs := make([]string, 4), make([]error, 4)
		for i := range toks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				toks[i], errs[i] = daemonToken(cfg)
			}()
		}
		close(start)
		wg.Wait()
		file, err := DaemonToken(cfg)
		if err != nil || len(file) != 64 {
			t.Fatalf("round %d: token file %q: %v", round, file, err)
		}
		for i := range toks {
			if errs[i] != nil || toks[i] != file {
				t.Fatalf("round %d: daemon %d holds %q (%v), the file %q", round, i, toks[i], errs[i], file)
			}
		}
	}
}

// TestDaemonWithoutTokenStillHeals: a daemon that cannot keep its token
// (dir read-only on an etcd store; here, a directory in the token file's
// place) runs, serves status, and refuses every change through its API
// saying why, instead of not starting: the store kept healing before
// tokens existed.
func TestDaemonWithoutTokenStillHeals(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	if err := os.Mkdir(daemonTokenPath(hs.cfg), 0o700); err != nil {
		t.Fatal(err)
	}
	addr := startDaemon(t, hs)
	c := &healer.Client{Addr: addr, Token: strings.Repeat("0", 64)}
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatalf("status: %v", err)
	}
	if err := c.Drain(context.Background(), "b1"); err == nil || !strings.Contains(err.Error(), "could not keep a token") {
		t.Fatalf("drain: %v, want a refusal saying the daemon has no token", err)
	}
}

// TestDaemonTokenReadableByOthersReplaced: a token file that others could
// read (a copy restored with a loose mode, a umask-less editor) may have
// been read by them: the daemon makes a fresh token, 0600, rather than
// accept requests signed with one anybody on the machine may hold.
func TestDaemonTokenReadableByOthersReplaced(t *testing.T) {
	cfg := &Config{MetadataDir: t.TempDir()}
	first, err := daemonToken(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := daemonTokenPath(cfg)
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		fresh, err := daemonToken(cfg)
		if err != nil || len(fresh) != 64 || fresh == first {
			t.Fatalf("mode %o: token %q (%v), want a fresh one", mode, fresh, err)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode %o: token file now %v (%v), want 0600", mode, fi.Mode(), err)
		}
		if read, err := DaemonToken(cfg); err != nil || read != fresh {
			t.Fatalf("mode %o: DaemonToken %q (%v), want %q", mode, read, err, fresh)
		}
		first = fresh
	}
	// Owner-only modes other than 0600 leak nothing: kept.
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if again, err := daemonToken(cfg); err != nil || again != first {
		t.Fatalf("0400 file: token %q (%v), want it kept (%q)", again, err, first)
	}
}
