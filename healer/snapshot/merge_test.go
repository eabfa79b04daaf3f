package snapshot

import (
	"testing"
	"time"

	"github.com/healstore/healstore/encoder"
)

// Two snapshots of one sequence number happen when two processes took one
// each across a leader handover (the old leader's upload still running).
// Under one change counter the view read at the later position holds
// every commit the other holds and more, so it is the newer one, whatever
// the two machines' clocks said; Taken decides only when the positions do
// not compare.
func TestMergeSameSeqOrdersByPosition(t *testing.T) {
	base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	mk := func(id byte, counter string, pos uint64, taken time.Time) Manifest {
		return Manifest{ID: encoder.ObjectID{id}, Seq: 7, Taken: taken, Counter: counter, Position: pos}
	}
	// The old leader's clock runs ahead: its view (revision 100) says it
	// was taken later than the new leader's (revision 150).
	old := mk(1, "etcd:abc", 100, base.Add(5*time.Second))
	cur := mk(2, "etcd:abc", 150, base.Add(time.Second))
	reads := []PointerRead{
		{Backend: "b1", Pointer: &Pointer{Format: pointerFormat, StoreID: "s", Written: base.Add(6 * time.Second), Snapshots: []Manifest{old}}},
		{Backend: "b2", Pointer: &Pointer{Format: pointerFormat, StoreID: "s", Written: base.Add(2 * time.Second), Snapshots: []Manifest{cur}}},
	}
	cat := Merge(reads)
	if len(cat.Snapshots) != 2 || cat.Snapshots[0].ID != cur.ID {
		t.Fatalf("newest is %v (position %d), want %v (position 150)", cat.Snapshots[0].ID, cat.Snapshots[0].Position, cur.ID)
	}
	// Positions of different counters do not compare: Taken decides.
	other := mk(3, "process:x", 1, base.Add(5*time.Second))
	cat = Merge([]PointerRead{
		{Backend: "b1", Pointer: &Pointer{Format: pointerFormat, StoreID: "s", Snapshots: []Manifest{cur}}},
		{Backend: "b2", Pointer: &Pointer{Format: pointerFormat, StoreID: "s", Snapshots: []Manifest{other}}},
	})
	if cat.Snapshots[0].ID != other.ID {
		t.Fatalf("under different counters the newest is %v, want the later taken %v", cat.Snapshots[0].ID, other.ID)
	}
}
