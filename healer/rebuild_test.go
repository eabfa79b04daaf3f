package healer

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/backends/faulty"
	"github.com/healstore/healstore/healer/provision"
	"github.com/healstore/healstore/metastore"
)

func localProv(e *env) []provision.Provisioner {
	p, err := provision.NewLocal(provision.LocalConfig{Dir: filepath.Join(e.dir, "provisioned")})
	if err != nil {
		e.t.Fatal(err)
	}
	return []provision.Provisioner{p}
}

// A backend down past the grace period: replaced by a provisioned one,
// every stripe rebuilt onto it, only missing shards rebuilt, k shards read
// per shard written, old locations garbage only after the commit.
func TestDownBackendIsReplacedAndRebuilt(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: 0, SuspectAfter: 1}, provs: localProv})
	objs := e.fill(20, 100<<10)
	e.probe() // markers written, all up
	for _, n := range names(e.bs) {
		if st := e.state(n); st != metastore.StateUp {
			t.Fatalf("%s is %s before any failure", n, st)
		}
	}
	victim := "b2"
	lost := e.onBackend(victim)
	if lost == 0 {
		t.Fatal("victim holds nothing")
	}
	e.kill(victim)
	e.probe()
	if st := e.state(victim); st != metastore.StateDown {
		t.Fatalf("victim is %s, want down (grace 0)", st)
	}
	if n := len(e.queue()); n != lost {
		t.Fatalf("queue holds %d stripes, victim held %d", n, lost)
	}
	// Reads work while degraded.
	e.checkObjects(objs)

	r0, w0 := e.io()
	rep := e.repairAll()
	r1, w1 := e.io()
	if rep.Repaired != lost || rep.Failed != 0 || rep.Remaining != 0 {
		t.Fatalf("repair report %+v, want %d repaired", rep, lost)
	}
	if rep.BytesWritten != w1-w0 || rep.BytesRead != r1-r0 {
		t.Fatalf("report says %d read %d written; backends saw %d and %d", rep.BytesRead, rep.BytesWritten, r1-r0, w1-w0)
	}
	// One lost shard per stripe, rebuilt from exactly k shards of the
	// same size: read amplification is k.
	if amp := float64(rep.BytesRead) / float64(rep.BytesWritten); amp != 4 {
		t.Fatalf("read amplification %.3f, want 4", amp)
	}
	e.probe() // the down backend holds nothing now: replaced
	if st := e.state(victim); st != metastore.StateReplaced {
		t.Fatalf("victim is %s after rebuild, want replaced", st)
	}
	if e.onBackend(victim) != 0 {
		t.Fatal("index still lists stripes on the victim")
	}
	e.checkFull()
	e.checkObjects(objs)

	// The old locations went to garbage in the commit.
	var g int
	_ = e.meta.ListGarbage(context.Background(), func(x metastore.Garbage) error {
		if x.Backend == victim {
			g++
		}
		return nil
	})
	if g != lost {
		t.Fatalf("%d garbage entries on the victim, want %d", g, lost)
	}
	// A replacement was provisioned and registered with a marker.
	recs, _ := e.meta.ListBackends(context.Background())
	var repl *metastore.BackendRecord
	for i := range recs {
		if strings.HasPrefix(recs[i].Name, "repl-") {
			repl = &recs[i]
		}
	}
	if repl == nil || repl.Marker == "" || repl.State != metastore.StateUp {
		t.Fatalf("no marked replacement backend: %+v", recs)
	}
	if e.onBackend(repl.Name) != lost {
		t.Fatalf("replacement holds %d stripes, want %d", e.onBackend(repl.Name), lost)
	}
	st, err := e.h.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.DegradedStripes != 0 || st.Repairs.Repaired != int64(lost) || st.Repairs.ReadAmplification != 4 {
		t.Fatalf("status %+v", st)
	}
}

// An outage shorter than the grace period costs no rebuild bytes.
func TestShortOutageCostsNothing(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour), SuspectAfter: 2}, provs: localProv})
	objs := e.fill(10, 64<<10)
	e.probe()
	e.kill("b1")
	e.probe()
	if st := e.state("b1"); st != metastore.StateUp {
		t.Fatalf("one failed probe made b1 %s", st)
	}
	e.probe()
	if st := e.state("b1"); st != metastore.StateSuspect {
		t.Fatalf("b1 is %s after two failed probes, want suspect", st)
	}
	if q := e.queue(); len(q) != 0 {
		t.Fatalf("a suspect backend with margin left queued %d stripes", len(q))
	}
	e.checkObjects(objs)
	rep := e.repairAll()
	e.revive("b1")
	e.probe()
	if st := e.state("b1"); st != metastore.StateUp {
		t.Fatalf("b1 is %s after answering again", st)
	}
	if _, w := e.io(); rep.BytesWritten != 0 || rep.Repaired != 0 {
		t.Fatalf("short outage rebuilt %d bytes (%+v, %d written)", rep.BytesWritten, rep, w)
	}
	e.checkFull()
}

// Two backends out at once inside the grace period leave the stripes on
// both at margin 0: those are repaired at once; the rest wait.
func TestMarginZeroRepairedDuringGrace(t *testing.T) {
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: Duration(time.Hour), SuspectAfter: 1}})
	objs := e.fill(20, 64<<10)
	e.probe()
	both, either := 0, 0
	for _, st := range e.stripes() {
		on := map[string]bool{}
		for _, l := range st.Shards {
			on[l.Backend] = true
		}
		if on["b1"] && on["b2"] {
			both++
		}
		if on["b1"] || on["b2"] {
			either++
		}
	}
	if both == 0 {
		t.Fatal("no stripe on both b1 and b2; pick another seed")
	}
	e.kill("b1", "b2")
	e.probe()
	if e.state("b1") != metastore.StateSuspect || e.state("b2") != metastore.StateSuspect {
		t.Fatal("killed backends not suspect")
	}
	q := e.queue()
	if len(q) != both {
		t.Fatalf("%d stripes queued, want the %d at margin 0", len(q), both)
	}
	for _, it := range q {
		if it.Margin != 0 {
			t.Fatalf("queued margin %d", it.Margin)
		}
	}
	rep := e.repairAll()
	if rep.Repaired != both || rep.Failed != 0 {
		t.Fatalf("repair %+v, want %d repaired", rep, both)
	}
	// Each such stripe got one shard rebuilt on the one answering backend
	// outside it: margin 1, enough to survive one more loss, and no more
	// bytes spent on an outage that may yet end.
	if rep.BytesWritten == 0 || rep.BytesRead != 4*rep.BytesWritten {
		t.Fatalf("margin-0 repairs read %d and wrote %d bytes", rep.BytesRead, rep.BytesWritten)
	}
	c, err := e.h.TakeCensus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c.Margins[0] != 0 || c.Margins[1] != either || c.Margins[2] != c.Stripes-either {
		t.Fatalf("margins %v; want %d stripes (on b1 or b2) at 1, none at 0", c.Margins, either)
	}
	e.checkObjects(objs)
	e.revive("b1", "b2")
	e.probe()
	e.checkFull()
}

// Rebuilds converge through a flaky data path (backends/faulty): calls that
// fail at random, reads that come back with a flipped bit. No object is
// lost, every stripe ends at full redundancy and in distinct domains.
func TestRebuildThroughFlakyBackends(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	e := newEnv(t, envOpts{backends: 8, seed: seed, faulty: &faulty.Config{Seed: seed},
		cfg: Config{Grace: 0, SuspectAfter: 1, Workers: 3}, provs: localProv})
	objs := e.fill(20, 60<<10)
	e.probe()
	e.kill("b3")
	e.probe()
	held := len(e.queue())
	if held == 0 {
		t.Fatal("nothing queued")
	}
	// No probes while the data path misbehaves: this is about the
	// rebuilder, not about the monitor declaring healthy backends down.
	for name, f := range e.faults {
		if name != "b3" {
			f.SetConfig(faulty.Config{FailRate: 0.15, FlipRate: 0.03, LatencyMax: time.Millisecond})
		}
	}
	ctx := context.Background()
	for round := 0; round < 30 && len(e.queue()) > 0; round++ {
		if _, err := e.h.RepairAll(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	var injected faulty.Stats
	for name, f := range e.faults {
		if name != "b3" {
			st := f.Stats()
			injected.Failed += st.Failed
			injected.Flipped += st.Flipped
			f.SetConfig(faulty.Config{})
		}
	}
	t.Logf("injected %d failed calls and %d flipped reads", injected.Failed, injected.Flipped)
	if injected.Failed == 0 {
		t.Fatal("no fault was injected")
	}
	if q := e.queue(); len(q) != 0 {
		t.Fatalf("%d stripes still queued after 30 rounds; head %+v", len(q), q[0])
	}
	e.probe()
	e.checkFull()
	e.checkObjects(objs)
}

// A repair whose source read finds more shards gone than the plan knew
// requeues the stripe at the margin those losses leave, so it keeps its
// place in the queue's order (lowest margin first).
func TestFailedSourceReadRequeuesAtTrueMargin(t *testing.T) {
	e := newEnv(t, envOpts{backends: 6, cfg: Config{Grace: Duration(time.Hour)}})
	e.fill(1, 64<<10)
	e.probe()
	ctx := context.Background()
	st := e.stripes()[0]
	// Shard 5's backend lost it (and is queued as wiped); shards 0 and 1
	// rotted without anyone knowing.
	l5 := st.Shards[5]
	if err := e.sw(l5.Backend).Backend.Delete(ctx, l5.Key); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1} {
		l := st.Shards[i]
		data, err := e.sw(l.Backend).Backend.Get(ctx, l.Key)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)-1] ^= 0xff
		if err := e.sw(l.Backend).Backend.Put(ctx, l.Key, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.h.meta.Enqueue(ctx, metastore.RepairItem{Stripe: st.ID, Margin: 1, Reason: wipedReason(l5.Backend)}); err != nil {
		t.Fatal(err)
	}
	if rep := e.repairAll(); rep.Repaired != 0 {
		t.Fatalf("repaired a stripe with 3 of 6 shards left: %+v", rep)
	}
	q := e.queue()
	if len(q) != 1 || q[0].Margin != -1 {
		t.Fatalf("requeued %+v, want the stripe at margin -1 (3 shards of 6 left, k=4)", q)
	}
}
