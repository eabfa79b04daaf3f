package plan

import (
	"slices"
	"testing"
	"time"
)

func TestObserve(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	pol := MonitorPolicy{SuspectAfter: 2, Grace: 600 * time.Second}
	ok := func(s int) Observation { return Observation{At: at(s), OK: true, Marker: MarkerOK} }
	fail := func(s int) Observation { return Observation{At: at(s)} }

	type step struct {
		obs   Observation
		state State
		ev    []Event
	}
	cases := []struct {
		name  string
		start Health
		pol   MonitorPolicy
		steps []step
	}{
		{"one failure is not suspect", Health{State: Up, Since: t0}, pol, []step{
			{fail(5), Up, nil},
			{ok(10), Up, nil},
			{fail(15), Up, nil}, // the count restarted
		}},
		{"suspect, then back before grace", Health{State: Up, Since: t0}, pol, []step{
			{fail(5), Up, nil},
			{fail(10), Suspect, []Event{EventSuspect}},
			{fail(300), Suspect, nil},
			{ok(305), Up, []Event{EventRecovered}},
		}},
		{"grace runs from suspect", Health{State: Up, Since: t0}, pol, []step{
			{fail(5), Up, nil},
			{fail(10), Suspect, []Event{EventSuspect}},
			{fail(609), Suspect, nil},
			{fail(610), Down, []Event{EventDown}},
			{fail(700), Down, nil},
			{ok(800), Up, []Event{EventRecovered}},
		}},
		{"grace zero: down at once", Health{State: Up, Since: t0}, MonitorPolicy{SuspectAfter: 1}, []step{
			{fail(5), Down, []Event{EventSuspect, EventDown}},
		}},
		{"suspect-after below one means one", Health{State: Up, Since: t0}, MonitorPolicy{Grace: time.Hour}, []step{
			{fail(5), Suspect, []Event{EventSuspect}},
		}},
		{"wiped: up, all shards queued", Health{State: Up, Since: t0}, pol, []step{
			{Observation{At: at(5), OK: true, Marker: MarkerMissing}, Up, []Event{EventWiped}},
		}},
		{"wiped while suspect comes back up", Health{State: Suspect, Since: t0, Failures: 3}, pol, []step{
			{Observation{At: at(5), OK: true, Marker: MarkerMissing}, Up, []Event{EventWiped}},
		}},
		{"foreign marker: down at once, no grace", Health{State: Up, Since: t0}, pol, []step{
			{Observation{At: at(5), OK: true, Marker: MarkerForeign}, Down, []Event{EventDown, EventWiped}},
			{Observation{At: at(6), OK: true, Marker: MarkerForeign}, Down, []Event{EventWiped}},
		}},
		{"draining stays draining", Health{State: Draining, Since: t0}, pol, []step{
			{fail(5), Draining, nil},
			{fail(5000), Draining, nil},
			{ok(5001), Draining, nil},
		}},
		{"draining but wiped", Health{State: Draining, Since: t0}, pol, []step{
			{Observation{At: at(5), OK: true, Marker: MarkerMissing}, Draining, []Event{EventWiped}},
		}},
		{"retired and replaced are final", Health{State: Replaced, Since: t0}, pol, []step{
			{ok(5), Replaced, nil},
			{fail(10), Replaced, nil},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.start
			for i, s := range tc.steps {
				var ev []Event
				h, ev = Observe(h, s.obs, tc.pol)
				if h.State != s.state || !slices.Equal(ev, s.ev) {
					t.Fatalf("step %d: got %s %v, want %s %v", i, h.State, ev, s.state, s.ev)
				}
				if s.obs.OK != h.Reachable() {
					t.Fatalf("step %d: Reachable = %v after OK=%v", i, h.Reachable(), s.obs.OK)
				}
				if s.obs.OK && !h.LastOK.Equal(s.obs.At) {
					t.Fatalf("step %d: LastOK not updated", i)
				}
				if len(s.ev) > 0 && s.ev[0] != EventWiped && !h.Since.Equal(s.obs.At) {
					t.Fatalf("step %d: Since = %v, want %v", i, h.Since, s.obs.At)
				}
			}
		})
	}
}
