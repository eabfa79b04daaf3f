package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/backends/backendtest"
	"github.com/healstore/healstore/healer"
)

func setDaemonAnswerWait(t *testing.T, d time.Duration) {
	old := daemonAnswerWait
	daemonAnswerWait = d
	t.Cleanup(func() { daemonAnswerWait = old })
}

// setMetricsAddr points the config's healer.metrics_addr at addr.
func setMetricsAddr(t *testing.T, cfg, addr string) {
	t.Helper()
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(raw), "127.0.0.1:9310", addr, 1)
	if conf == string(raw) {
		t.Fatalf("%s names no 127.0.0.1:9310", cfg)
	}
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
}

// cliWithin runs the command line like cli, but fails the test if it has
// not returned within limit (the command is left running until the test
// ends and its connections close).
func cliWithin(t *testing.T, limit time.Duration, args ...string) (string, string, int) {
	t.Helper()
	type result struct {
		out, errs string
		code      int
	}
	done := make(chan result, 1)
	go func() {
		var out, errb strings.Builder
		code := run(context.Background(), args, strings.NewReader(""), &out, &errb)
		done <- result{out.String(), errb.String(), code}
	}()
	select {
	case r := <-done:
		return r.out, r.errs, r.code
	case <-time.After(limit):
		t.Fatalf("%q still waiting after %s", args, limit)
		return "", "", 0
	}
}

// A daemon that holds the store's metadata and accepts connections but
// never answers (hung, deadlocked, stopped with SIGSTOP): status, heal,
// scrub and backend waited for it forever without a word. They must give
// up after daemonAnswerWait, naming the holder and the address, and say
// what to do.
func TestCommandFailsWhenDaemonDoesNotAnswer(t *testing.T) {
	setDaemonAnswerWait(t, 300*time.Millisecond)
	_, cfg := newStore(t)
	addr := backendtest.HangingServer(t)
	setMetricsAddr(t, cfg, addr)
	pid, _ := holdStore(t, cfg, "healstore", "daemon") // released when the test ends

	var errs string
	for _, args := range [][]string{{"status"}, {"heal"}, {"scrub"}, {"backend", "drain", "b1"}} {
		var code int
		start := time.Now()
		_, errs, code = cliWithin(t, 10*time.Second, append([]string{"--config", cfg}, args...)...)
		took := time.Since(start)
		if code != exitError {
			t.Errorf("%q with a daemon that does not answer: exit %d, want %d; stderr %q", args, code, exitError, errs)
		}
		if took > 5*time.Second {
			t.Errorf("%q gave up after %s; want about %s", args, took, daemonAnswerWait)
		}
		for _, want := range []string{
			addr,
			fmt.Sprintf("pid %d", pid),
			"the healstore daemon",
			"does not answer within 300ms",
			"stuck",
			"systemctl status",
			fmt.Sprintf("kill %d", pid),
		} {
			if !strings.Contains(errs, want) {
				t.Errorf("%q: stderr %q lacks %q", args, errs, want)
			}
		}
		if strings.Count(errs, "\n") != 1 {
			t.Errorf("%q: stderr %q; want one line", args, errs)
		}
	}
	t.Log(strings.TrimSpace(errs))

	// The daemon stopped (SIGSTOP, Ctrl-Z): the message says so and how
	// to resume it.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Runs before release (cleanups run last first): a stopped holder
	// would not end.
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	waitFor(t, func() bool { return processStopped(pid) })
	_, errs, code := cliWithin(t, 10*time.Second, "--config", cfg, "status")
	t.Log(strings.TrimSpace(errs))
	if code != exitError || !strings.Contains(errs, "is stopped") || !strings.Contains(errs, fmt.Sprintf("kill -CONT %d", pid)) {
		t.Errorf("status with the daemon stopped: exit %d, stderr %q", code, errs)
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The same address silent, but the store held by a short command: that
// process is no daemon, so the command waits for it as it would with
// nothing at the address, and runs once it is done.
func TestCommandWaitsForShortHolderPastSilentAddress(t *testing.T) {
	setDaemonAnswerWait(t, 300*time.Millisecond)
	setLockWait(t, 30*time.Second)
	_, cfg := newStore(t)
	setMetricsAddr(t, cfg, backendtest.HangingServer(t))
	_, release := holdStore(t, cfg, "healstore", "put", "x", "-")
	time.AfterFunc(500*time.Millisecond, release)
	out, errs, code := cliWithin(t, 20*time.Second, "--config", cfg, "status")
	if code != 0 || !strings.Contains(out, "store ") {
		t.Fatalf("status once the put holding the store ended: exit %d, stderr %q\n%s", code, errs, out)
	}
}

// A daemon that answers the quick question (GET /v1/store) is used even
// when its status, a census of every stripe, takes far longer than
// daemonAnswerWait; so is a daemon older than GET /v1/store (404 there).
func TestCommandUsesDaemonWithSlowStatus(t *testing.T) {
	setDaemonAnswerWait(t, 200*time.Millisecond)
	for _, old := range []bool{false, true} {
		t.Run(fmt.Sprintf("old=%v", old), func(t *testing.T) {
			_, cfg := newStore(t)
			loaded, err := healstore.LoadConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			healed := make(chan struct{}, 1)
			var censuses atomic.Int32
			mux := http.NewServeMux()
			if !old {
				mux.HandleFunc("GET "+healstore.StorePath, func(w http.ResponseWriter, r *http.Request) {
					_ = json.NewEncoder(w).Encode(healstore.DaemonStore{StoreID: "s1", MetadataDir: loaded.MetadataDir})
				})
			}
			mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
				censuses.Add(1)
				// A census of a large store: many times daemonAnswerWait.
				select {
				case <-r.Context().Done():
					return
				case <-time.After(5 * 200 * time.Millisecond):
				}
				_ = json.NewEncoder(w).Encode(healer.Status{})
			})
			mux.HandleFunc("POST /v1/heal", func(w http.ResponseWriter, r *http.Request) {
				healed <- struct{}{}
				_ = json.NewEncoder(w).Encode(healer.RepairReport{})
			})
			srv := httptest.NewServer(mux)
			defer srv.Close()
			setMetricsAddr(t, cfg, strings.TrimPrefix(srv.URL, "http://"))
			_, release := holdStore(t, cfg, "healstore", "daemon")
			defer release()

			_, errs, code := cliWithin(t, 20*time.Second, "--config", cfg, "heal")
			if code != 0 {
				t.Fatalf("heal with a daemon whose status is slow: exit %d, stderr %q", code, errs)
			}
			select {
			case <-healed:
			default:
				t.Fatal("heal did not go to the daemon")
			}
			// A daemon that says which store it serves is known to be
			// there: no census before the heal. An older one's status is
			// what tells.
			if n, want := censuses.Load(), map[bool]int32{false: 0, true: 1}[old]; n != want {
				t.Fatalf("heal asked the daemon for its status %d times, want %d", n, want)
			}
		})
	}
}
