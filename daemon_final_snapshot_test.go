package healstore

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestDaemonSnapshotsAtStop: a daemon that stops (SIGTERM, a VM's clean
// shutdown) snapshots what changed since its last scheduled snapshot.
// Before, up to an interval of changes (30 s by default) lived only in the
// local metastore, lost with the machine.
func TestDaemonSnapshotsAtStop(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, func(c *Config) {
		c.Snapshots.Interval = Duration(time.Hour)
		c.Snapshots.MaxChanges = 1 << 30
	})
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- hs.s.RunDaemon(ctx, DaemonOptions{Addr: "127.0.0.1:0", Ready: func(a string) { ready <- a }})
	}()
	<-ready
	// The loop's first snapshot, at start.
	deadline := time.Now().Add(20 * time.Second)
	for {
		lw, err := hs.s.LossWindow(context.Background())
		if err == nil && lw.Snapshot != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot at start: %+v %v", lw, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := hs.s.Put(context.Background(), "late", bytes.NewReader(make([]byte, 100_000))); err != nil {
		t.Fatal(err)
	}
	lw, err := hs.s.LossWindow(context.Background())
	if err != nil || lw.Changes == 0 {
		t.Fatalf("after a put: %+v %v; want changes not in the snapshot", lw, err)
	}
	before := lw.Snapshot.Seq
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lw, err = hs.s.LossWindow(context.Background())
	if err != nil || lw.Snapshot == nil || lw.Snapshot.Seq <= before || lw.Changes != 0 {
		t.Fatalf("after the stop: %+v %v; want a newer snapshot covering every change", lw, err)
	}
}
