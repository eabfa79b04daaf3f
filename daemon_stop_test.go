package healstore

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/metastore"
)

// counterValue sums a counter the healer registered in reg (0 if absent).
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				v += c.GetValue()
			}
		}
	}
	return v
}

// cappedRebuildStore is a store on six local backends (k=4, m=2) with
// 1 MiB blocks and the rebuild capped at 1 MiB/s, holding an 8 MiB object
// each of whose stripes has lost shard 0: each stripe's repair reads 1 MiB
// and writes 256 KiB, so rebuilding them all takes about 10 s.
func cappedRebuildStore(t *testing.T) (*healStore, map[string][]byte, []*metastore.Stripe) {
	t.Helper()
	hs := newHealStore(t, 6, 4, 2, func(cfg *Config) {
		cfg.Policy.BlockSize = 1 << 20
		cfg.Healer.RateBytes = 1 << 20
	})
	objs := map[string][]byte{"big": healRandBytes(rand.New(rand.NewPCG(7, 7)), 8<<20)}
	for n, d := range objs {
		hs.put(n, d)
	}
	var stripes []*metastore.Stripe
	if err := hs.s.meta.ScanStripes(context.Background(), [16]byte{}, func(st *metastore.Stripe) error {
		stripes = append(stripes, st)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(stripes) < 8 {
		t.Fatalf("%d stripes; want 8 or more", len(stripes))
	}
	return hs, objs, stripes
}

// loseAndQueue deletes shard 0 of each stripe behind the store's back and
// queues the stripes as a reader's finding would, not to be retried
// before notBefore: a back-off keeps the daemon's own rebuilder off them,
// so only a heal asked for works on them.
func loseAndQueue(t *testing.T, hs *healStore, stripes []*metastore.Stripe, notBefore time.Time) {
	t.Helper()
	ctx := context.Background()
	for _, st := range stripes {
		l := st.Shards[0]
		b, ok := hs.s.Backend(l.Backend)
		if !ok {
			t.Fatalf("backend %s not open", l.Backend)
		}
		if err := b.Delete(ctx, l.Key); err != nil {
			t.Fatal(err)
		}
		if err := hs.s.meta.Enqueue(ctx, metastore.RepairItem{Stripe: st.ID, Margin: st.M - 1,
			Reason: metastore.ReadFindingReason([]int{0}, nil), NotBefore: notBefore}); err != nil {
			t.Fatal(err)
		}
	}
}

// checkDoneOrQueued fails unless each stripe either has every shard it
// records on its backend or is still on the repair queue: a repair cut
// short commits nothing half-way and keeps its entry.
func checkDoneOrQueued(t *testing.T, hs *healStore, stripes []*metastore.Stripe) (repaired, queued int) {
	t.Helper()
	ctx := context.Background()
	q, err := hs.s.meta.Queue(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	inQueue := map[[16]byte]bool{}
	for _, it := range q {
		inQueue[it.Stripe] = true
	}
	for _, old := range stripes {
		st, err := hs.s.meta.GetStripe(ctx, old.ID)
		if err != nil {
			t.Fatal(err)
		}
		whole := true
		for i, l := range st.Shards {
			b, ok := hs.s.Backend(l.Backend)
			if !ok {
				t.Fatalf("stripe %x shard %d: backend %q not open", st.ID, i, l.Backend)
			}
			if _, err := b.Stat(ctx, l.Key); errors.Is(err, backends.ErrNotFound) {
				whole = false
			} else if err != nil {
				t.Fatal(err)
			}
		}
		switch {
		case inQueue[st.ID]:
			queued++
		case whole:
			repaired++
		default:
			t.Errorf("stripe %x lacks a shard and is off the repair queue", st.ID)
		}
	}
	return repaired, queued
}

// A daemon stopped (SIGTERM ends its context) while `healstore heal`
// rebuilds through it under a bandwidth cap exits promptly and cleanly:
// the heal's repairs give up at once rather than the daemon waiting for
// them (it waited its whole shutdown grace, 10 s, then failed), and the
// stripes they did not finish stay queued for the next start.
func TestDaemonStopsPromptlyDuringCappedHeal(t *testing.T) {
	hs, objs, stripes := cappedRebuildStore(t)
	loseAndQueue(t, hs, stripes, time.Now().Add(time.Hour))

	d := startCappedDaemon(t, hs)
	addr := d.addr
	healed := make(chan error, 1)
	go func() {
		token, err := DaemonToken(hs.cfg)
		if err == nil {
			_, err = (&healer.Client{Addr: addr, Token: token}).Heal(context.Background(), "")
		}
		healed <- err
	}()
	// The queued entries' back-off keeps the daemon's rebuilder off
	// them, so bytes read for a rebuild are the heal's: it is under way.
	d.stopOnceRebuilding(t, "heal")
	select {
	case err := <-healed:
		if err == nil || !strings.Contains(err.Error(), "the daemon is stopping") {
			t.Errorf("the heal cut short by the daemon's stop reported %v; want it to say the daemon is stopping", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the heal's request did not end with the daemon")
	}
	repaired, queued := checkDoneOrQueued(t, hs, stripes)
	t.Logf("%d stripes repaired, %d left queued", repaired, queued)
	if queued == 0 {
		t.Error("nothing left queued: the heal was not cut short")
	}
	hs.check(objs)
}

// The daemon's own rebuilder, stopped while its repairs wait on the rate
// cap, lets the daemon exit promptly too, its unfinished stripes queued.
func TestDaemonStopsPromptlyDuringCappedRebuild(t *testing.T) {
	hs, objs, stripes := cappedRebuildStore(t)
	loseAndQueue(t, hs, stripes, time.Time{})

	d := startCappedDaemon(t, hs)
	// Once the first stripe's sources are read, its worker waits on the
	// cap to write and the others to read theirs.
	d.stopOnceRebuilding(t, "rebuild")
	repaired, queued := checkDoneOrQueued(t, hs, stripes)
	t.Logf("%d stripes repaired, %d left queued", repaired, queued)
	if queued == 0 {
		t.Error("nothing left queued: the rebuild was not cut short")
	}
	hs.check(objs)
}

// cappedDaemon is a daemon run by a test, stopped by ending its context.
type cappedDaemon struct {
	addr   string
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

// startCappedDaemon runs hs's daemon with scrubs off (they would queue
// the lost shards afresh, for the daemon's own rebuilder) and no census.
func startCappedDaemon(t *testing.T, hs *healStore) *cappedDaemon {
	t.Helper()
	d := &cappedDaemon{reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	t.Cleanup(cancel)
	addrc := make(chan string, 1)
	go func() {
		d.done <- hs.s.RunDaemon(ctx, DaemonOptions{Addr: "127.0.0.1:0", Ready: func(a string) { addrc <- a },
			Healer: HealerOptions{Registry: d.reg, Tune: func(c *healer.Config) {
				c.ScrubPeriod, c.LightScrubPeriod = -1, -1
				c.CensusInterval = healer.Duration(time.Hour)
			}}})
	}()
	select {
	case d.addr = <-addrc:
	case err := <-d.done:
		t.Fatal(err)
	}
	return d
}

// stopOnceRebuilding waits until a rebuild (what) has read bytes, stops
// the daemon, and checks that it returned nil within a second: well above
// a prompt stop (milliseconds) on a loaded machine, well below a capped
// stripe's rebuild (over a second) and the shutdown grace.
func (d *cappedDaemon) stopOnceRebuilding(t *testing.T, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for counterValue(t, d.reg, "healstore_rebuild_read_bytes_total") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the %s read nothing", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	d.cancel()
	var stopErr error
	select {
	case stopErr = <-d.done:
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop")
	}
	took := time.Since(start)
	t.Logf("daemon stopped %v after its context ended", took)
	if stopErr != nil {
		t.Errorf("daemon stopped with %v", stopErr)
	}
	if took > time.Second {
		t.Errorf("daemon took %v to stop during a capped %s; want under 1s", took, what)
	}
}
