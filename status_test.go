package healstore

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/healstore/healstore/encoder"
)

// StatusFrom answers from the daemon when one runs (it holds the store's
// metadata lock) and from the store itself otherwise, with the same figures.
func TestStatusFrom(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	hs.put("a", make([]byte, 100<<10))
	ctx := context.Background()
	direct, err := hs.s.HealStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if direct.Stripes != 4 || direct.DegradedStripes != 0 || len(direct.Backends) != 6 {
		t.Fatalf("direct status %+v", direct)
	}
	hs.s.Close()

	// No daemon: StatusFrom opens the store.
	hs.cfg.Healer.MetricsAddr = "127.0.0.1:1" // nothing listens there
	st, fromDaemon, err := StatusFrom(ctx, hs.cfg)
	if err != nil || fromDaemon || st.Stripes != direct.Stripes {
		t.Fatalf("status without daemon: %+v %v %v", st, fromDaemon, err)
	}

	// With a daemon running on the store, StatusFrom asks it.
	hs.open()
	dctx, cancel := context.WithCancel(ctx)
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- hs.s.RunDaemon(dctx, DaemonOptions{Addr: "127.0.0.1:0", Ready: func(a string) { addrc <- a }})
	}()
	// A copy: the open store reads its own config while the daemon runs.
	client := *hs.cfg
	client.Healer.MetricsAddr = <-addrc
	st, fromDaemon, err = StatusFrom(ctx, &client)
	if err != nil || !fromDaemon || st.Stripes != direct.Stripes || st.StoreID != direct.StoreID {
		t.Fatalf("status through the daemon: %+v %v %v", st, fromDaemon, err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not stop")
	}
}

// statTruth is what the backends hold of an object: per stripe, the
// shards that read back with the recorded checksum.
func statTruth(t *testing.T, hs *healStore, name string) (minMargin, degraded, unreadable, missing int) {
	t.Helper()
	ctx := context.Background()
	minMargin = 1 << 30
	o, err := hs.s.meta.GetObject(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	codec, err := hs.s.codec(fromMetaPolicy(o.Policy))
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range stripesOf(t, hs.s, name) {
		ok := 0
		for i, l := range st.Shards {
			if l.Backend == "" {
				continue
			}
			data, err := hs.raw(hs.spec(l.Backend)).Get(ctx, l.Key)
			if err == nil && codec.VerifyShard(encoder.StripeID(st.ID), i, data, l.Sum) == nil {
				ok++
			}
		}
		m := ok - st.K
		minMargin = min(minMargin, m)
		if m < st.M {
			degraded++
		}
		if m < 0 {
			unreadable++
		}
		missing += len(st.Shards) - ok
	}
	return minMargin, degraded, unreadable, missing
}

func checkStat(t *testing.T, hs *healStore, name string) *Redundancy {
	t.Helper()
	info, err := hs.s.Stat(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	r := info.Redundancy
	minMargin, degraded, unreadable, missing := statTruth(t, hs, name)
	if r.MinMargin != minMargin || r.Degraded != degraded || r.Unreadable != unreadable || r.MissingShards != missing {
		t.Fatalf("stat %s: %+v; the backends hold min margin %d, %d degraded, %d unreadable, %d shards missing",
			name, *r, minMargin, degraded, unreadable, missing)
	}
	return r
}

// Shards a read found corrupt (and queued, heal on read) are lost to Stat
// and to the status until repaired, and the status counts their bytes as
// still to rebuild; both used to report full redundancy and 0 B.
func TestStatAndStatusCountShardsReadFoundCorrupt(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(3, 4))
	data := healRandBytes(rnd, 200<<10)
	hs.put("big", data)
	hs.put("other", healRandBytes(rnd, 100<<10))
	sts := stripesOf(t, hs.s, "big")
	var rebuild int64
	for _, st := range sts {
		// Shard 0 is a data shard: every read fetches it.
		l := st.Shards[0]
		b := hs.raw(hs.spec(l.Backend))
		raw, err := b.Get(ctx, l.Key)
		if err != nil {
			t.Fatal(err)
		}
		raw[len(raw)-1] ^= 0x5a
		if err := b.Put(ctx, l.Key, raw); err != nil {
			t.Fatal(err)
		}
		rebuild += l.Size
	}
	got, err := hs.read("big")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read around corrupt shards: %v", err)
	}
	if q := queue(t, hs.s); len(q) != len(sts) {
		t.Fatalf("%d stripes queued after the read, want %d", len(q), len(sts))
	}
	if r := checkStat(t, hs, "big"); r.MinMargin != 1 || r.Degraded != len(sts) {
		t.Fatalf("stat %+v", r)
	}
	checkStat(t, hs, "other")

	st, err := hs.s.HealStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	others := len(stripesOf(t, hs.s, "other"))
	if st.DegradedStripes != len(sts) || st.WorstMargin != 1 || st.Margins["1"] != len(sts) || st.Margins["2"] != others ||
		st.UnreadableStripes != 0 {
		t.Fatalf("status: %d degraded, worst %d, margins %v, %d unreadable; want %d stripes at margin 1",
			st.DegradedStripes, st.WorstMargin, st.Margins, st.UnreadableStripes, len(sts))
	}
	if st.Queue.Depth != len(sts) || st.Queue.RemainingBytes != rebuild {
		t.Fatalf("queue %d stripes, %d bytes to rebuild; want %d and %d", st.Queue.Depth, st.Queue.RemainingBytes, len(sts), rebuild)
	}
}

// Three of six backends of a 4+2 store wiped (more than m): every stripe
// lost three shards and the object cannot be read. After the healer has
// found the wipes and tried the repairs, Stat and the status say so; they
// used to report "full; can lose 2 more" and worst margin 1.
func TestStatAndStatusAfterMoreThanMWiped(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(5, 6))
	hs.put("big", healRandBytes(rnd, 200<<10))
	n := len(stripesOf(t, hs.s, "big"))
	h := hs.probedHealer()
	for _, name := range []string{"b1", "b3", "b5"} {
		wipeLocal(t, hs.spec(name).Path)
	}
	if _, err := hs.read("big"); err == nil {
		t.Fatal("read big with three of six shards of each stripe gone")
	}
	if err := h.ProbeAll(ctx); err != nil {
		t.Fatal(err)
	}
	if rep, err := h.RepairAll(ctx, nil); err != nil || rep.Repaired != 0 {
		t.Fatalf("repair: %+v %v", rep, err)
	}
	if r := checkStat(t, hs, "big"); r.MinMargin != -1 || r.Unreadable != n || r.MissingShards != 3*n {
		t.Fatalf("stat %+v", r)
	}
	st, err := h.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.WorstMargin != -1 || st.Margins["-1"] != n || len(st.Margins) != 1 || st.DegradedStripes != n || st.UnreadableStripes != n {
		t.Fatalf("status: worst %d, margins %v, %d degraded, %d unreadable; want all %d stripes at -1",
			st.WorstMargin, st.Margins, st.DegradedStripes, st.UnreadableStripes, n)
	}
}

// A backend wiped while no healer ran (a disk replaced by a blank one,
// the store closed): a process that opens the store finds its marker gone
// and leaves it to the healer. Stat used to count its shards as there
// ("full; can lose 2 more") until a healer queued them; it now counts
// them missing, as the backends say, and as whole again once a healer
// marked the backend again and rebuilt them.
func TestStatCountsWipedBackendFoundAtOpen(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(7, 8))
	hs.put("obj", healRandBytes(rnd, 150<<10))
	n := len(stripesOf(t, hs.s, "obj"))
	path := hs.spec("b2").Path
	hs.s.Close()
	wipeLocal(t, path)
	hs.open()
	if r := checkStat(t, hs, "obj"); r.MissingShards != n || r.MinMargin != 1 {
		t.Fatalf("stat after b2 was wiped: %+v, want %d shards missing", r, n)
	}
	// An object written since has its shard on b2: it is there.
	hs.put("new", healRandBytes(rnd, 100<<10))
	checkStat(t, hs, "new")
	h := hs.probedHealer()
	if rep, err := h.RepairAll(ctx, nil); err != nil || rep.Repaired != n {
		t.Fatalf("repair: %+v %v", rep, err)
	}
	if r := checkStat(t, hs, "obj"); r.MissingShards != 0 || r.MinMargin != 2 {
		t.Fatalf("stat after the healer rebuilt b2's shards: %+v", r)
	}
}
