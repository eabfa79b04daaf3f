package healstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/backends/backendtest"
)

// statusFromWithin calls StatusFrom and fails the test if it has not
// returned within limit.
func statusFromWithin(t *testing.T, limit time.Duration, cfg *Config) (fromDaemon bool, err error) {
	t.Helper()
	type result struct {
		fromDaemon bool
		err        error
	}
	done := make(chan result, 1)
	go func() {
		_, fd, err := StatusFrom(context.Background(), cfg)
		done <- result{fd, err}
	}()
	select {
	case r := <-done:
		return r.fromDaemon, r.err
	case <-time.After(limit):
		t.Fatalf("StatusFrom still waiting after %s", limit)
		return false, nil
	}
}

// StatusFrom with something at healer.metrics_addr that accepts
// connections and never answers (a hung daemon) waited forever. It must
// give up after daemonAnswerWait: open the store here when it can, and
// else say that the daemon at that address does not answer.
func TestStatusFromSilentDaemon(t *testing.T) {
	old := daemonAnswerWait
	daemonAnswerWait = 300 * time.Millisecond
	t.Cleanup(func() { daemonAnswerWait = old })

	hs := newHealStore(t, 6, 4, 2, nil)
	addr := backendtest.HangingServer(t)
	// A copy: the open store reads its own config.
	cfg := *hs.cfg
	cfg.Healer.MetricsAddr = addr

	// The store held (by hs): nowhere to get a status from.
	start := time.Now()
	_, err := statusFromWithin(t, 10*time.Second, &cfg)
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "does not answer within 300ms") {
		t.Fatalf("StatusFrom with the store held and a silent daemon: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("StatusFrom gave up after %s", took)
	}

	// The store free: it is opened here.
	hs.s.Close()
	fromDaemon, err := statusFromWithin(t, 10*time.Second, &cfg)
	if err != nil || fromDaemon {
		t.Fatalf("StatusFrom with the store free and a silent address: from daemon %v, %v", fromDaemon, err)
	}
}
