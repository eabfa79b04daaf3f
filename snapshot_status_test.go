package healstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLossWindowKeepsLastSnapshotAfterFailure: a snapshotter whose first
// check fails (a daemon restarted while backends are away) records the
// failure without forgetting the snapshot an earlier process took. Before,
// status then said "none yet; a lost machine loses all metadata" while
// that snapshot was still on the backends.
func TestLossWindowKeepsLastSnapshotAfterFailure(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	ctx := context.Background()
	sn, err := hs.s.NewSnapshotter(SnapshotConfig{})
	if err != nil {
		t.Fatal(err)
	}
	taken, err := sn.Take(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	hs.s.Close()
	// Two of six backends away: a snapshot needs k+1 = 5.
	for _, b := range []string{"b2", "b5"} {
		dir := filepath.Join(hs.dir, "backends", b)
		if err := os.Rename(dir, dir+".away"); err != nil {
			t.Fatal(err)
		}
	}
	hs.open()
	sn, err = hs.s.NewSnapshotter(SnapshotConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Take(ctx, true); err == nil {
		t.Fatal("a snapshot with 4 of 6 backends succeeded")
	}
	lw, err := hs.s.LossWindow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if lw.LastError == "" || !strings.Contains(lw.LastError, "reachable") {
		t.Errorf("last error %q", lw.LastError)
	}
	if lw.Covered.IsZero() || lw.Snapshot == nil || lw.Snapshot.ID != taken.ID {
		t.Fatalf("loss window after the failure forgot snapshot %s: %+v", taken.ID, lw)
	}
}
