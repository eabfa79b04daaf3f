package healer

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/metastore"
)

// servedEnv is a healer of seven backends holding n objects of size
// bytes, probed, with its API served for the test, and a client of it.
func servedEnv(t *testing.T, n, size int) (*env, map[string][]byte, *httptest.Server, *Client) {
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: 0, SuspectAfter: 1}})
	objs := e.fill(n, size)
	e.probe()
	srv := httptest.NewServer(e.h.Handler())
	t.Cleanup(srv.Close)
	return e, objs, srv, &Client{Addr: strings.TrimPrefix(srv.URL, "http://")}
}

func TestClient(t *testing.T) {
	e, objs, srv, c := servedEnv(t, 6, 20<<10)
	ctx := context.Background()

	e.kill("b2")
	e.probe()
	s, err := c.Status(ctx)
	if err != nil || s.DegradedStripes != e.onBackend("b2") || len(s.Backends) != 7 {
		t.Fatalf("status %+v %v", s, err)
	}
	rep, err := c.Heal(ctx, "")
	if err != nil || rep.Remaining != 0 || rep.Repaired == 0 {
		t.Fatalf("heal %+v %v", rep, err)
	}
	if _, err := c.Heal(ctx, "obj-001"); err != nil {
		t.Fatal(err)
	}
	var de *DaemonError
	if _, err := c.Heal(ctx, "missing"); !errors.As(err, &de) || de.Status != 404 {
		t.Fatalf("heal of a missing object: %v", err)
	}
	steps := 0
	p, err := c.Scrub(ctx, false, func(ScrubProgress) { steps++ })
	if err != nil || p.Finished.IsZero() || steps == 0 || p.Done != len(e.stripes()) {
		t.Fatalf("scrub %+v %v", p, err)
	}
	if _, err := c.GC(ctx); err != nil {
		t.Fatal(err)
	}
	w, r := 5, int64(123456)
	set, err := c.SetSettings(ctx, &w, &r)
	if err != nil || set.Workers != 5 || set.RateLimit != r || e.h.limiter.Rate() != r {
		t.Fatalf("settings %+v %v", set, err)
	}
	spec := backends.Spec{Name: "n1", Kind: backends.KindLocal, Path: e.dir + "/n1", Node: "n1"}
	if err := c.AddBackend(ctx, spec, ""); err != nil || e.state("n1") != metastore.StateUp {
		t.Fatalf("add: %v", err)
	}
	if err := c.AddBackend(ctx, spec, ""); err == nil {
		t.Fatal("added a backend twice")
	}
	if err := c.Drain(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveBackend(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	e.checkObjects(objs)

	srv.Close()
	dead := &Client{Addr: c.Addr}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := dead.Status(cctx); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("closed daemon: %v", err)
	}
}

// Requests that change something need the client's header and an IP or
// localhost Host, which a web page in a browser cannot arrange: neither by
// posting across origins nor by rebinding its own name to 127.0.0.1.
func TestHandlerRefusesBrowserRequests(t *testing.T) {
	e := newEnv(t, envOpts{backends: 6})
	srv := httptest.NewServer(e.h.Handler("Storage1.lan:9310"))
	defer srv.Close()
	do := func(method, path, host string, header bool) int {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(`{"workers":3}`))
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		if header {
			req.Header.Set(ClientHeader, "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		method, path, host string
		header             bool
		want               int
	}{
		{"PUT", "/v1/settings", "", false, http.StatusForbidden},                 // a cross-origin form post
		{"PUT", "/v1/settings", "evil.example:9310", true, http.StatusForbidden}, // DNS rebinding
		{"POST", "/v1/probe", "evil.example", true, http.StatusForbidden},
		{"PUT", "/v1/settings", "", true, http.StatusOK}, // healstore's client
		{"PUT", "/v1/settings", "localhost:9310", true, http.StatusOK},
		{"PUT", "/v1/settings", "[::1]:9310", true, http.StatusOK},
		{"PUT", "/v1/settings", "LOCALHOST:9310", true, http.StatusOK},
		{"PUT", "/v1/settings", "storage1.LAN:9310", true, http.StatusOK}, // the name it listens on
		{"PUT", "/v1/settings", "storage2.lan:9310", true, http.StatusForbidden},
		{"GET", "/status", "evil.example", false, http.StatusOK}, // reads stay open to Prometheus & co
		{"GET", "/metrics", "", false, http.StatusOK},
	} {
		if got := do(c.method, c.path, c.host, c.header); got != c.want {
			t.Errorf("%s %s host %q header %v: %d, want %d", c.method, c.path, c.host, c.header, got, c.want)
		}
	}
}

// The client reaches a daemon whose metrics_addr names no host or every
// interface through loopback, which the API accepts as Host.
func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		":9310":            "127.0.0.1:9310",
		"0.0.0.0:9310":     "127.0.0.1:9310",
		"[::]:9310":        "[::1]:9310",
		"127.0.0.1:9310":   "127.0.0.1:9310",
		"storage1.lan:931": "storage1.lan:931",
		"bogus":            "bogus",
	} {
		if got := dialAddr(in); got != want {
			t.Errorf("dialAddr(%q) = %q, want %q", in, got, want)
		}
	}
	// And end to end: a server on every interface, a client given ":port".
	e := newEnv(t, envOpts{backends: 6})
	srv := httptest.NewUnstartedServer(e.h.Handler(":0"))
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	w := 3
	c := &Client{Addr: ":" + port}
	if _, err := c.SetSettings(context.Background(), &w, nil); err != nil {
		t.Fatalf("SetSettings through %q: %v", c.Addr, err)
	}
}

// TestBackendStatus: GET /v1/backends/{name} (Client.Backend) answers one
// backend's state and the shards it holds, counted from the backend's own
// index, as /status does with a census of every stripe; an unknown name
// is a 404 that Client turns back into metastore.ErrNotFound.
func TestBackendStatus(t *testing.T) {
	e, _, _, c := servedEnv(t, 6, 20<<10)
	ctx := context.Background()
	e.kill("b3")
	e.probe()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range st.Backends {
		got, err := c.Backend(ctx, want.Name)
		if err != nil {
			t.Fatalf("Backend %s: %v", want.Name, err)
		}
		if got.Name != want.Name || got.State != want.State || got.Shards != want.Shards || got.Shards != e.onBackend(want.Name) {
			t.Fatalf("Backend %s: %+v; /status says %+v, the stripes %d shards", want.Name, got, want, e.onBackend(want.Name))
		}
	}
	if b3, _ := c.Backend(ctx, "b3"); b3.State == "up" {
		t.Fatalf("b3 killed and probed, still %q", b3.State)
	}
	if _, err := c.Backend(ctx, "nope"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("Backend of an unknown name: %v, want not found", err)
	}
}
