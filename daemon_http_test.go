package healstore

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// startDaemon runs hs's daemon on a free loopback port until the test
// ends and returns its address.
func startDaemon(t *testing.T, hs *healStore) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- hs.s.RunDaemon(ctx, DaemonOptions{Addr: "127.0.0.1:0", Ready: func(a string) { addrc <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	select {
	case a := <-addrc:
		return a
	case err := <-done:
		done <- err // for the cleanup, which waits for it
		t.Fatalf("daemon: %v", err)
		return ""
	}
}

// The loss window and the store the daemon serves are read with GET (or
// HEAD); another method is a 405 naming the allowed ones. It was a 404,
// as if the daemon had no loss window to serve.
func TestDaemonLossWindowMethods(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	addr := startDaemon(t, hs)
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"GET", LossWindowPath, 200}, {"HEAD", LossWindowPath, 200}, {"POST", LossWindowPath, 405}, {"PUT", LossWindowPath, 405}, {"DELETE", LossWindowPath, 405},
		{"GET", StorePath, 200}, {"POST", StorePath, 405},
	} {
		req, err := http.NewRequest(c.method, "http://"+addr+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Healstore-Client", "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, resp.StatusCode, body, c.code)
		}
		if c.code == 405 && (resp.Header.Get("Allow") != "GET, HEAD" || !strings.Contains(string(body), c.method)) {
			t.Errorf("%s %s: Allow %q, body %s; want Allow: GET, HEAD and the method named", c.method, c.path, resp.Header.Get("Allow"), body)
		}
	}
}

// The daemon's server bounds how long a client may take to send its
// headers and how long a keep-alive connection may sit idle: without
// IdleTimeout (and no ReadTimeout, which would cancel long heals) an idle
// connection held a descriptor and a goroutine for ever. It sets no
// ReadTimeout or WriteTimeout, which would cut heal and scrub short.
func TestDaemonServerTimeouts(t *testing.T) {
	srv := newDaemonServer(http.NotFoundHandler())
	if srv.ReadHeaderTimeout <= 0 || srv.IdleTimeout <= 0 {
		t.Errorf("ReadHeaderTimeout %v, IdleTimeout %v: both must be set", srv.ReadHeaderTimeout, srv.IdleTimeout)
	}
	if srv.ReadTimeout != 0 || srv.WriteTimeout != 0 {
		t.Errorf("ReadTimeout %v, WriteTimeout %v would end long heals and scrubs", srv.ReadTimeout, srv.WriteTimeout)
	}
}

// CheckDaemonStore tells a daemon of the config's store, its metadata
// directory however named, from another store's daemon at the address.
func TestDaemonCheckStore(t *testing.T) {
	a := newHealStore(t, 6, 4, 2, nil)
	b := newHealStore(t, 6, 4, 2, nil)
	addr := startDaemon(t, a)
	if err := CheckDaemonStore(t.Context(), addr, a.cfg); err != nil {
		t.Fatalf("a's daemon for a's config: %v", err)
	}
	link := filepath.Join(t.TempDir(), "meta-link")
	if err := os.Symlink(a.cfg.MetadataDir, link); err != nil {
		t.Fatal(err)
	}
	viaLink := *a.cfg
	viaLink.MetadataDir = link
	if err := CheckDaemonStore(t.Context(), addr, &viaLink); err != nil {
		t.Fatalf("a's daemon for a's config naming its metadata through a link: %v", err)
	}
	err := CheckDaemonStore(t.Context(), addr, b.cfg)
	if !errors.Is(err, ErrOtherStore) || !strings.Contains(err.Error(), a.s.StoreID()) || !strings.Contains(err.Error(), b.cfg.MetadataDir) {
		t.Fatalf("a's daemon for b's config: %v", err)
	}
	etcd := *b.cfg
	etcd.Metastore.Kind = "etcd"
	if err := CheckDaemonStore(t.Context(), addr, &etcd); !errors.Is(err, ErrOtherStore) {
		t.Fatalf("a's daemon for a config on etcd: %v", err)
	}
}

// StatusFrom with another store's daemon at the config's metrics_addr
// reports the config's store, opened here; it returned the other store's
// status as this one's.
func TestDaemonStatusFromOtherStore(t *testing.T) {
	a := newHealStore(t, 6, 4, 2, nil)
	b := newHealStore(t, 7, 4, 2, nil)
	b.s.Close()
	cfg := *b.cfg
	cfg.Healer.MetricsAddr = startDaemon(t, a)
	st, fromDaemon, err := StatusFrom(t.Context(), &cfg)
	if err != nil || fromDaemon || st.StoreID == a.s.StoreID() || len(st.Backends) != 7 {
		t.Fatalf("status of b with a's daemon at b's address: from daemon %v, %v, %+v", fromDaemon, err, st)
	}
}

// A daemon whose config names its metadata directory relatively (a
// relative --config) says where it is as an absolute path: a command in
// another working directory took the relative one from its own, and
// refused the daemon of its own store as another store's.
func TestDaemonStoreRelativeMetadataDir(t *testing.T) {
	base := t.TempDir()
	t.Chdir(base)
	a := newHealStore(t, 6, 4, 2, func(c *Config) {
		rel, err := filepath.Rel(base, c.MetadataDir)
		if err != nil {
			t.Fatal(err)
		}
		c.MetadataDir = rel
	})
	addr := startDaemon(t, a)
	cfg := *a.cfg
	abs, err := filepath.Abs(cfg.MetadataDir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MetadataDir = abs
	elsewhere := filepath.Join(t.TempDir(), "x", "y")
	if err := os.MkdirAll(elsewhere, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(elsewhere)
	if err := CheckDaemonStore(t.Context(), addr, &cfg); err != nil {
		t.Fatalf("the daemon of this store, asked from another directory: %v", err)
	}
}
