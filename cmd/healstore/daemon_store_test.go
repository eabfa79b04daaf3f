package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/healer"
)

// signalWriter collects what is written and closes ready once it holds
// want.
type signalWriter struct {
	mu    sync.Mutex
	b     strings.Builder
	want  string
	ready chan struct{}
	once  sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if strings.Contains(w.b.String(), w.want) {
		w.once.Do(func() { close(w.ready) })
	}
	return len(p), nil
}

// runDaemon runs `healstore --config cfg daemon args...` in this process
// until the test ends and returns once it serves.
func runDaemon(t *testing.T, cfg string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errw := &signalWriter{want: "daemon serving", ready: make(chan struct{})}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"--config", cfg, "--log-level", "error", "daemon"}, args...), strings.NewReader(""), &strings.Builder{}, errw)
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-errw.ready:
	case code := <-done:
		t.Fatalf("daemon exited %d: %s", code, errw.b.String())
	}
}

// freeAddr is a loopback address nothing listens on just now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Two stores made by init share healer.metrics_addr, and store A's
// daemon serves there. A command for store B, whose metadata another
// process holds, must not take A's daemon for B's: before, backend drain
// b1 for B retired A's b1, and status and heal for B showed and healed A.
// With B held by a daemon it fails at once, naming A's daemon; with B
// held by a short command it waits for it and works on B.
func TestCommandRefusesOtherStoresDaemon(t *testing.T) {
	dir := t.TempDir()
	shared := freeAddr(t)
	cfgs := map[string]string{}
	for _, n := range []string{"A", "B"} {
		if _, errs, code := cli(t, "", "init", filepath.Join(dir, n)); code != 0 {
			t.Fatalf("init %s: %s", n, errs)
		}
		cfg := filepath.Join(dir, n, "healstore.toml")
		raw, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfg, []byte(strings.Replace(string(raw), "127.0.0.1:9310", shared, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		cfgs[n] = cfg
	}
	runDaemon(t, cfgs["A"])
	a := &healer.Client{Addr: shared}
	stA, err := a.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	_, release := holdStore(t, cfgs["B"], "healstore", "daemon", "--addr", freeAddr(t))
	for _, args := range [][]string{{"backend", "drain", "b1"}, {"status"}, {"heal"}} {
		_, errs, code := cli(t, "", append([]string{"--config", cfgs["B"]}, args...)...)
		if code == 0 || !strings.Contains(errs, "serves store "+stA.StoreID) || !strings.Contains(errs, "healer.metrics_addr") {
			t.Errorf("%q for B held by a daemon, A's daemon at B's metrics_addr: exit %d, stderr %q", args, code, errs)
		}
	}
	release()

	// B held by a put that ends while the command waits for it.
	setLockWait(t, 30*time.Second)
	_, release = holdStore(t, cfgs["B"], "healstore", "put", "x", "y")
	time.AfterFunc(200*time.Millisecond, release)
	out, errs, code := cli(t, "", "--config", cfgs["B"], "status")
	if code != 0 || !strings.Contains(out, "store ") || strings.Contains(out, stA.StoreID) {
		t.Errorf("status for B once its holder ended: exit %d, stderr %q\n%s", code, errs, out)
	}

	// A's own commands still go to A's daemon.
	if out, errs, code := cli(t, "", "--config", cfgs["A"], "status"); code != 0 || !strings.Contains(out, stA.StoreID) {
		t.Errorf("status for A through its daemon: exit %d, stderr %q", code, errs)
	}
	st, err := a.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range st.Backends {
		if b.State != "up" {
			t.Errorf("store A's backend %s is %s after commands for store B", b.Name, b.State)
		}
	}
}

// On etcd a command finds the daemon of its store at healer.metrics_addr
// by asking which store it serves (GET /v1/store), which is quick. It
// asked for the status, a census of every stripe, within 3 s: on a large
// store that timed out, and the command ran a healer here that waited for
// the leadership the daemon holds and failed. Here a stand-in daemon leads
// the store and answers its status only when the test ends.
func TestEtcdCommandFindsDaemonWithSlowStatus(t *testing.T) {
	path := etcdStore(t, "hs-cli-slow")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(raw), "127.0.0.1:9310", ln.Addr().String(), 1)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := standInLeader(t, path, "daemon-here/1")

	healed := make(chan struct{}, 1)
	testDone := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+healstore.StorePath, func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(healstore.DaemonStore{StoreID: s.StoreID()})
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		select { // a census of a large store
		case <-r.Context().Done():
		case <-testDone:
		}
	})
	mux.HandleFunc("POST /v1/heal", func(w http.ResponseWriter, r *http.Request) {
		healed <- struct{}{}
		_ = json.NewEncoder(w).Encode(healer.RepairReport{})
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	defer close(testDone)

	_, errs, code := cli(t, "", "--config", path, "heal")
	if code != 0 {
		t.Fatalf("heal with the store's daemon leading: exit %d, stderr %q", code, errs)
	}
	select {
	case <-healed:
	default:
		t.Fatal("heal did not go to the daemon")
	}
}
