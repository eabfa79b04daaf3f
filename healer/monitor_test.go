package healer

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/metastore"
)

// A wiped backend (marker gone) is noticed by one probe, with no grace:
// every shard it held is forgotten and queued at once; it stays in use,
// empty, with a fresh marker.
func TestWipedBackendQueuedAtOnce(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour)}})
	objs := e.fill(15, 64<<10)
	e.probe()
	held := e.onBackend("b3")
	e.wipe("b3")
	e.probe()
	if st := e.state("b3"); st != metastore.StateUp {
		t.Fatalf("wiped backend is %s, want up (empty)", st)
	}
	if q := e.queue(); len(q) != held {
		t.Fatalf("%d stripes queued after the wipe, want %d", len(q), held)
	}
	// Its shards count as missing at once, in the census and the status.
	c, err := e.h.TakeCensus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c.Degraded != held || c.RemainingBytes == 0 {
		t.Fatalf("census after the wipe: %d degraded (want %d), %d bytes to rebuild", c.Degraded, held, c.RemainingBytes)
	}
	raw, err := e.sw("b3").Backend.Get(context.Background(), MarkerKey)
	if err != nil {
		t.Fatalf("marker not rewritten: %v", err)
	}
	var m Marker
	if err := json.Unmarshal(raw, &m); err != nil || m.Backend != "b3" || m.StoreID != e.h.id {
		t.Fatalf("marker %s", raw)
	}
	e.checkObjects(objs)
	rep := e.repairAll()
	if rep.Repaired != held {
		t.Fatalf("repaired %d, want %d (%v)", rep.Repaired, held, rep.Errors)
	}
	// With six backends for 4+2 the only place for the lost shards is the
	// wiped backend itself, now empty and marked again.
	if e.onBackend("b3") != held {
		t.Fatalf("b3 holds %d stripes after the rebuild, want %d", e.onBackend("b3"), held)
	}
	e.checkFull()
	e.checkObjects(objs)
	// A second probe finds the new marker: nothing more is queued.
	e.probe()
	if q := e.queue(); len(q) != 0 {
		t.Fatalf("queue not empty after the rebuild: %d", len(q))
	}
}

// A backend carrying another store's marker is out at once and never a
// target; its data (someone else's) is not touched.
func TestForeignMarker(t *testing.T) {
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: Duration(time.Hour)}})
	objs := e.fill(10, 32<<10)
	e.probe()
	held := e.onBackend("b0")
	foreign := `{"store_id":"someone-else","backend":"b0"}`
	if err := e.sw("b0").Backend.Put(context.Background(), MarkerKey, []byte(foreign)); err != nil {
		t.Fatal(err)
	}
	e.probe()
	if st := e.state("b0"); st != metastore.StateDown {
		t.Fatalf("backend with a foreign marker is %s, want down at once", st)
	}
	rec, _ := e.meta.GetBackend(context.Background(), "b0")
	if !strings.Contains(rec.LastError, "foreign") {
		t.Fatalf("last error %q does not say foreign", rec.LastError)
	}
	if q := e.queue(); len(q) != held {
		t.Fatalf("queued %d, want %d", len(q), held)
	}
	rep := e.repairAll()
	if rep.Repaired != held || e.onBackend("b0") != 0 {
		t.Fatalf("repair %+v; b0 still holds %d", rep, e.onBackend("b0"))
	}
	e.probe()
	if st := e.state("b0"); st != metastore.StateReplaced {
		t.Fatalf("emptied foreign backend is %s, want replaced", st)
	}
	// Garbage collection never deletes anything there: the backend is
	// someone else's now.
	gc, err := e.h.GC(context.Background())
	if err != nil || gc.Dropped != held {
		t.Fatalf("gc %+v %v: want the %d old locations on b0 dropped, not deleted", gc, err, held)
	}
	raw, _ := e.sw("b0").Backend.Get(context.Background(), MarkerKey)
	if string(raw) != foreign {
		t.Fatal("the foreign marker was overwritten")
	}
	n := 0
	_ = e.sw("b0").Backend.List(context.Background(), "shards/", func(string, int64) error { n++; return nil })
	if n != held {
		t.Fatalf("%d shard files left on the foreign backend, want all %d untouched", n, held)
	}
	e.checkObjects(objs)
}

// A backend that flaps (fails, answers, fails...) inside the grace period
// never goes down and costs no rebuild.
func TestFlappingWithinGrace(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour), SuspectAfter: 1}})
	e.fill(10, 32<<10)
	e.probe()
	for range 5 {
		e.kill("b4")
		e.probe()
		if st := e.state("b4"); st != metastore.StateSuspect {
			t.Fatalf("b4 is %s", st)
		}
		e.revive("b4")
		e.probe()
		if st := e.state("b4"); st != metastore.StateUp {
			t.Fatalf("b4 is %s after answering", st)
		}
	}
	rep := e.repairAll()
	if rep.BytesWritten != 0 || len(e.queue()) != 0 {
		t.Fatalf("flapping cost %d rebuild bytes", rep.BytesWritten)
	}
}

// Data-path errors reach the monitor: with the loops running, a Report of
// an unavailable backend triggers a probe long before the interval.
func TestReportTriggersProbe(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour), SuspectAfter: 1, ProbeInterval: Duration(time.Hour),
		ScrubPeriod: -1, LightScrubPeriod: -1}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, func() bool {
		r, _ := e.meta.GetBackend(ctx, "b1")
		return r != nil && !r.LastProbe.IsZero()
	})
	e.kill("b1")
	e.h.Report("b1", backends.Errorf("b1", "get", "k", backends.ErrNotFound, "shard gone"))
	e.h.Report("b1", backends.Errorf("b1", "get", "k", backends.ErrUnavailable, "refused"))
	waitFor(t, func() bool { return e.state("b1") == metastore.StateSuspect })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The grace period is measured in real time from the moment the backend
// became suspect.
func TestGraceExpires(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(300 * time.Millisecond), SuspectAfter: 1}, provs: localProv})
	e.fill(5, 32<<10)
	e.probe()
	e.kill("b5")
	e.probe()
	if st := e.state("b5"); st != metastore.StateSuspect {
		t.Fatalf("b5 is %s", st)
	}
	rec, _ := e.meta.GetBackend(context.Background(), "b5")
	if time.Since(rec.Since) > 10*time.Second || rec.ProbeFailures != 1 {
		t.Fatalf("record %+v", rec)
	}
	time.Sleep(350 * time.Millisecond)
	e.probe()
	if st := e.state("b5"); st != metastore.StateDown {
		t.Fatalf("b5 is %s after the grace period", st)
	}
}

// Two backends go away together and come back blank (a host's disks
// swapped during maintenance). Their stripes were queued while they were
// suspect; found wiped, the entries must say so, whatever their margin,
// or the rebuilder sees both backends up, finds nothing to do and drops
// stripes that have lost two shards.
func TestWipedAfterOutageReplacesSuspectReason(t *testing.T) {
	e := newEnv(t, envOpts{backends: 8, cfg: Config{Grace: Duration(time.Hour), SuspectAfter: 1}})
	objs := e.fill(20, 64<<10)
	e.probe()
	e.kill("b0", "b1")
	e.probe()
	e.probe()
	if len(e.queue()) == 0 {
		t.Fatal("no stripe queued while b0 and b1 were suspect")
	}
	e.wipe("b0")
	e.wipe("b1")
	e.revive("b0", "b1")
	e.probe()
	for _, it := range e.queue() {
		if len(wipedBackends(it.Reason)) == 0 {
			t.Fatalf("after the wipes, stripe %x is queued for %q", it.Stripe, it.Reason)
		}
	}
	e.repairAll()
	e.checkObjects(objs)
	e.checkFull()
}

// A backend found wiped stays named in its stripes' entries when another
// backend then goes suspect or down: the rebuilder must still check the
// wiped one's shards, or they stay lost.
func TestWipedReasonSurvivesAnotherOutage(t *testing.T) {
	e := newEnv(t, envOpts{backends: 8, cfg: Config{Grace: 0, SuspectAfter: 1}})
	objs := e.fill(20, 64<<10)
	e.probe()
	e.wipe("b0")
	e.probe()
	e.kill("b1")
	e.probe()
	e.probe()
	for _, st := range e.stripes() {
		onB0 := false
		for _, l := range st.Shards {
			onB0 = onB0 || l.Backend == "b0"
		}
		if !onB0 {
			continue
		}
		it, err := e.h.meta.GetRepair(context.Background(), st.ID)
		if err != nil || !slices.Contains(wipedBackends(it.Reason), "b0") {
			t.Fatalf("stripe %x on the wiped b0, after b1 went down: %+v, %v", st.ID, it, err)
		}
	}
	e.revive("b1")
	e.probe()
	e.repairAll()
	e.checkObjects(objs)
	e.checkFull()
}

// Probes that find a wiped backend's marker still missing (it cannot be
// written) leave its entries and their back-off alone, so the rebuilder
// backs off instead of retrying every stripe at every probe.
func TestWipedAgainKeepsBackoff(t *testing.T) {
	e := newEnv(t, envOpts{backends: 8, cfg: Config{Grace: Duration(time.Hour)}})
	e.fill(10, 64<<10)
	e.probe()
	e.wipe("b0")
	ctx := context.Background()
	if err := e.h.wiped(ctx, "b0", false); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	q := e.queue()
	if len(q) == 0 {
		t.Fatal("nothing queued for the wiped b0")
	}
	for _, it := range q {
		if err := e.h.meta.Requeue(ctx, metastore.RepairItem{Stripe: it.Stripe, Margin: it.Margin, Attempts: 1, LastError: "no target", NotBefore: later}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.h.wiped(ctx, "b0", false); err != nil {
		t.Fatal(err)
	}
	for _, it := range e.queue() {
		if !it.NotBefore.Equal(later.UTC()) && !it.NotBefore.Equal(later) {
			t.Fatalf("a second wiped finding cleared the back-off: %+v", it)
		}
	}
}
