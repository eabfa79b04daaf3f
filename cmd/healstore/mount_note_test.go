package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A mount of a store on pebble holds its metadata, so no daemon can open
// the store beside it: without --with-healer nothing replaces a lost
// backend or repairs a stripe while it is mounted. The mount says so when
// it starts, and says nothing of the kind with --with-healer.
func TestMountSaysWhenNoHealerRuns(t *testing.T) {
	needRoot(t, "a FUSE mount")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if os.Getenv("HEALSTORE_REQUIRE_COMPONENTS") == "1" {
			t.Fatalf("FUSE is required (HEALSTORE_REQUIRE_COMPONENTS=1) but /dev/fuse is missing")
		}
		t.Skip("FUSE not available: /dev/fuse is missing")
	}
	_, cfg := newStore(t)
	setMetricsAddr(t, cfg, freeAddr(t))
	for _, c := range []struct {
		args []string
		note bool
	}{
		{nil, true},
		{[]string{"--with-healer"}, false},
	} {
		mnt := filepath.Join(t.TempDir(), "mnt")
		if err := os.Mkdir(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errw := &signalWriter{want: "mounted at", ready: make(chan struct{})}
		done := make(chan int, 1)
		args := append(append([]string{"--config", cfg, "mount"}, c.args...), mnt)
		go func() { done <- run(ctx, args, strings.NewReader(""), &strings.Builder{}, errw) }()
		select {
		case <-errw.ready:
		case code := <-done:
			cancel()
			t.Fatalf("mount %v exited %d: %s", c.args, code, errw.b.String())
		case <-time.After(30 * time.Second):
			cancel()
			t.Fatalf("mount %v did not mount within 30s: %s", c.args, errw.b.String())
		}
		cancel()
		if code := <-done; code != 0 {
			t.Fatalf("mount %v, stopped: exit %d: %s", c.args, code, errw.b.String())
		}
		errw.mu.Lock()
		out := errw.b.String()
		errw.mu.Unlock()
		if got := strings.Contains(out, "no healer") && strings.Contains(out, "--with-healer"); got != c.note {
			t.Errorf("mount %v: says no healer runs: %v, want %v:\n%s", c.args, got, c.note, out)
		}
	}
}
