package plan

import (
	"slices"
	"testing"
	"time"
)

// A draining backend that answers with another store's marker stays
// draining (an operator state) but counts as not answering: nothing on it
// is read, listed or deleted any more.
func TestDrainingForeignCountsAsFailing(t *testing.T) {
	t0 := time.Unix(1000, 0)
	h := Health{State: Draining, Since: t0, LastOK: t0}
	h, ev := Observe(h, Observation{At: t0.Add(time.Second), OK: true, Marker: MarkerForeign}, MonitorPolicy{SuspectAfter: 2, Grace: time.Minute})
	if h.State != Draining || !slices.Equal(ev, []Event{EventWiped}) {
		t.Fatalf("got %s %v, want draining [wiped]", h.State, ev)
	}
	if h.Reachable() {
		t.Fatal("a draining backend with a foreign marker counts as reachable")
	}
	// Its own marker again: reachable again.
	h, _ = Observe(h, Observation{At: t0.Add(2 * time.Second), OK: true, Marker: MarkerOK}, MonitorPolicy{SuspectAfter: 2, Grace: time.Minute})
	if h.State != Draining || !h.Reachable() {
		t.Fatalf("got %s reachable=%v", h.State, h.Reachable())
	}
}
