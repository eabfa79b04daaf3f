package healstore

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// The daemon is what keeps the loss window short: it must take metadata
// snapshots by itself, so that `healstore recover` finds one.
func TestDaemonTakesSnapshots(t *testing.T) {
	cfg := testConfig(t, testOpts{})
	cfg.Snapshots.Interval = Duration(100 * time.Millisecond)
	cfg.Snapshots.MaxAge = Duration(100 * time.Millisecond)
	s := openTest(t, cfg)
	ctx := context.Background()
	if _, err := s.Put(ctx, "before-daemon", bytes.NewReader([]byte("kept by the snapshot"))); err != nil {
		t.Fatal(err)
	}
	if snaps, err := s.Snapshots(ctx); err != nil || len(snaps) != 0 {
		t.Fatalf("snapshots before the daemon ran: %v %v", snaps, err)
	}
	dctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.RunDaemon(dctx, DaemonOptions{Addr: "127.0.0.1:0"}) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		snaps, err := s.Snapshots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		lw, err := s.LossWindow(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(snaps) > 0 && !lw.Covered.IsZero() {
			if snaps[0].Records == 0 {
				t.Fatalf("snapshot holds no records: %+v", snaps[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon took no metadata snapshot within 60 s (loss window %+v)", lw)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("daemon: %v", err)
	}
}
