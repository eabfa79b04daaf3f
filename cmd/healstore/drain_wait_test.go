package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/metastore"
)

// TestDrainWaitStopsAtInterrupt: Ctrl-C (or SIGTERM; main's context ends
// at either) while backend drain --wait waits for the daemon stops the
// command at once, saying that the drain goes on in the daemon and how to
// follow it. Before, it slept on, then failed with "context canceled".
// The daemon's rebuild rate is capped at 1 byte/s, so the drain of b7,
// which holds shards, goes on for the whole test.
func TestDrainWaitStopsAtInterrupt(t *testing.T) {
	dir, cfg := newStore(t)
	if _, errs, code := cli(t, "", "backend", "add", "b7", "--kind", "local", "--path", filepath.Join(dir, "b7"), "--node", "n7"); code != 0 {
		t.Fatalf("backend add: exit %d: %s", code, errs)
	}
	for i := range 8 {
		if _, errs, code := cli(t, strings.Repeat("not inline ", 20000), "put", fmt.Sprintf("obj%d", i), "-"); code != 0 {
			t.Fatalf("put: %d %s", code, errs)
		}
	}
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	capped := strings.Replace(string(raw), "\n[healer]\n", "\n[healer]\nrate_bytes = 1\n", 1)
	if capped == string(raw) {
		t.Fatal("no [healer] section to edit")
	}
	if err := os.WriteFile(cfg, []byte(capped), 0o600); err != nil {
		t.Fatal(err)
	}
	useDaemon(t, cfg)

	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	out := &signalWriter{want: "draining b7", ready: make(chan struct{})}
	errw := &strings.Builder{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"backend", "drain", "b7", "--wait", "1h"}, strings.NewReader(""), out, errw)
	}()
	select {
	case <-out.ready:
	case code := <-done:
		t.Fatalf("drain --wait ended before the interrupt: exit %d, stdout %q, stderr %q", code, out.b.String(), errw.String())
	}
	interrupt()
	var code int
	select {
	case code = <-done:
	case <-time.After(5 * time.Second): // drainPollFirst is 2 s; it must not wait for it
		t.Fatal("drain --wait did not stop at the interrupt")
	}
	if code != exitError || !strings.Contains(errw.String(), "the drain goes on in the daemon") || !strings.Contains(errw.String(), "healstore backend ls") {
		t.Fatalf("drain --wait interrupted: exit %d, stderr %q; want exit %d saying the drain goes on and how to follow it", code, errw.String(), exitError)
	}
	if out, errs, code := cli(t, "", "backend", "ls"); code != 0 || !strings.Contains(out, "draining") {
		t.Fatalf("after the interrupt b7 should still be draining in the daemon: exit %d, %s %s", code, out, errs)
	}
}

// TestDrainWaitPollsLessOften: waitRetired asks the daemon first after
// drainPollFirst (2 s; it asked every second), then twice as long each
// time up to 10 s, says how many shards are left when that changes, and
// returns once the backend is retired.
func TestDrainWaitPollsLessOften(t *testing.T) {
	var calls []time.Time
	backend := func(ctx context.Context, name string) (*healer.BackendStatus, error) {
		calls = append(calls, time.Now())
		bs := &healer.BackendStatus{Name: name, State: "draining", Shards: 5}
		if len(calls) == 2 {
			bs.State, bs.Shards = "retired", 0
		}
		return bs, nil
	}
	var out strings.Builder
	if err := waitRetired(context.Background(), backend, "b7", time.Hour, &out); err != nil || out.String() != "b7 draining: 5 shards left\nb7 retired\n" {
		t.Fatalf("waitRetired: %v, %q", err, out.String())
	}
	if len(calls) != 2 || calls[1].Sub(calls[0]) < 2*time.Second {
		t.Fatalf("status calls at %v; want two, 2 s apart", calls)
	}
	var seq []time.Duration
	for d := drainPollFirst; len(seq) < 5; d = nextDrainPoll(d) {
		seq = append(seq, d)
	}
	if want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}; fmt.Sprint(seq) != fmt.Sprint(want) {
		t.Fatalf("poll intervals %v, want %v", seq, want)
	}

	// The wait running out ends it, saying the drain goes on.
	err := waitRetired(context.Background(), func(ctx context.Context, name string) (*healer.BackendStatus, error) {
		return &healer.BackendStatus{Name: name, State: "draining"}, nil
	}, "b7", time.Millisecond, &out)
	if err == nil || !strings.Contains(err.Error(), "b7 not retired within 1ms") || !strings.Contains(err.Error(), "goes on") {
		t.Fatalf("wait run out: %v", err)
	}
}

// TestDrainWaitOlderDaemon: a daemon without GET /v1/backends/{name} (it
// answers 405: only DELETE had that route) is asked for its whole status
// instead, and a backend missing there is not found.
func TestDrainWaitOlderDaemon(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/status" {
			json.NewEncoder(w).Encode(healer.Status{Backends: []healer.BackendStatus{{Name: "b7", State: "retired"}}})
			return
		}
		w.Header().Set("Allow", "DELETE")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
	}))
	defer srv.Close()
	backend := backendStatusFrom(&healer.Client{Addr: strings.TrimPrefix(srv.URL, "http://")})
	ctx := context.Background()
	if bs, err := backend(ctx, "b7"); err != nil || bs.State != "retired" {
		t.Fatalf("b7 from an older daemon: %+v, %v", bs, err)
	}
	if _, err := backend(ctx, "b9"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("b9 from an older daemon: %v, want not found", err)
	}
}
