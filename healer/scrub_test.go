package healer

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/healstore/healstore/backends/placement"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

// flip changes one byte of a stored shard in place (same size).
func (e *env) flip(st *metastore.Stripe, i int) {
	e.t.Helper()
	l := st.Shards[i]
	b := e.sw(l.Backend).Backend
	data, err := b.Get(context.Background(), l.Key)
	if err != nil {
		e.t.Fatal(err)
	}
	data[len(data)/2] ^= 0x40
	if err := b.Put(context.Background(), l.Key, data); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) drop(st *metastore.Stripe, i int) {
	e.t.Helper()
	l := st.Shards[i]
	if err := e.sw(l.Backend).Backend.Delete(context.Background(), l.Key); err != nil {
		e.t.Fatal(err)
	}
}

// Silent loss is found by the light pass (missing shard), a bit flip only
// by the deep pass; both are forgotten, queued and repaired.
func TestScrubFindsLossAndBitFlips(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour)}})
	objs := e.fill(12, 48<<10)
	e.probe()
	sts := e.stripes()
	e.drop(sts[0], 1)
	e.drop(sts[1], 5)
	e.flip(sts[2], 0)
	e.flip(sts[3], 3)

	var last ScrubProgress
	calls := 0
	p, err := e.h.Scrub(context.Background(), ScrubOptions{Progress: func(p ScrubProgress) { last = p; calls++ }})
	if err != nil {
		t.Fatal(err)
	}
	if p.Missing != 2 || p.Corrupt != 0 || p.Queued != 2 || p.Done != len(sts) || p.Total != len(sts) || p.Finished.IsZero() {
		t.Fatalf("light pass %+v", p)
	}
	if calls != len(sts)+1 || last.Fraction() != 1 {
		t.Fatalf("progress called %d times, last %+v", calls, last)
	}
	p, err = e.h.Scrub(context.Background(), ScrubOptions{Deep: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.Corrupt != 2 || p.Missing != 0 || p.Queued != 4 || p.Bytes == 0 { // the two short since the light pass count again
		t.Fatalf("deep pass %+v", p)
	}
	if q := e.queue(); len(q) != 4 {
		t.Fatalf("%d queued, want 4", len(q))
	}
	for _, i := range []int{0, 1, 2, 3} {
		st, _ := e.meta.GetStripe(context.Background(), sts[i].ID)
		if len(st.Missing()) != 1 {
			t.Fatalf("stripe %d: missing %v, want one forgotten shard", i, st.Missing())
		}
	}
	rep := e.repairAll()
	if rep.Repaired != 4 {
		t.Fatalf("repair %+v", rep)
	}
	e.checkFull()
	e.checkObjects(objs)
	// A clean pass finds nothing.
	p, _ = e.h.Scrub(context.Background(), ScrubOptions{Deep: true})
	if p.Corrupt+p.Missing+p.Queued != 0 {
		t.Fatalf("clean pass %+v", p)
	}
	st, err := e.h.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Scrub["deep"].Done != len(sts) || st.Scrub["light"].Missing != 2 {
		t.Fatalf("status scrub %+v", st.Scrub)
	}
}

// The scrubber checks the placement invariant; the rebuilder moves the
// offending shard to a free domain.
func TestScrubFixesPlacement(t *testing.T) {
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: Duration(time.Hour)}})
	e.probe()
	ctx := context.Background()
	// Write one stripe by hand with shards 0 and 1 on the same backend.
	obj := &metastore.Object{Name: "bad", ID: encoder.NewObjectID(), Created: time.Now(), Modified: time.Now()}
	data := []byte("placement matters")
	enc, err := e.enc.EncodeBlock(encoder.ObjectID(obj.ID), 0, encoder.NewStripeID(), data)
	if err != nil {
		t.Fatal(err)
	}
	targets := []placement.Candidate{{Name: "b0"}, {Name: "b0"}, {Name: "b1"}, {Name: "b2"}, {Name: "b3"}, {Name: "b4"}}
	res := shardio.Upload(ctx, e, enc.ID, enc.Shards, targets, shardio.UploadOptions{Attempts: 1})
	ms := &metastore.Stripe{ID: enc.ID, Object: obj.ID, K: 4, M: 2, DataLen: enc.DataLen, Shards: make([]metastore.ShardLoc, 6)}
	for i := range ms.Shards {
		ms.Shards[i] = metastore.ShardLoc{Backend: res.Landed[i], Key: shardio.ShardKey(enc.ID, i), Size: int64(len(enc.Shards[i])), Sum: enc.Sums[i]}
	}
	obj.Stripes = [][16]byte{ms.ID}
	obj.Size = int64(len(data))
	if _, err := e.meta.PutObject(ctx, obj, []*metastore.Stripe{ms}, nil, nil); err != nil {
		t.Fatal(err)
	}
	p, err := e.h.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Misplaced != 1 || p.Queued != 1 {
		t.Fatalf("scrub %+v", p)
	}
	c, _ := e.h.TakeCensus(ctx)
	if c.Misplaced != 1 {
		t.Fatalf("census misplaced %d", c.Misplaced)
	}
	rep := e.repairAll()
	if rep.Repaired != 1 {
		t.Fatalf("repair %+v", rep)
	}
	st, _ := e.meta.GetStripe(ctx, ms.ID)
	if st.Shards[0].Backend != "b0" || st.Shards[1].Backend != "b5" && st.Shards[1].Backend != "b6" {
		t.Fatalf("shard 1 moved to %s", st.Shards[1].Backend)
	}
	e.checkFull()
	got, err := e.get("bad")
	if err != nil || string(got) != string(data) {
		t.Fatalf("read %q %v", got, err)
	}
	// The moved shard's old copy shares its key with nothing live on b0
	// (shard 0 has its own key), so it went to garbage.
	var g []metastore.Garbage
	_ = e.meta.ListGarbage(ctx, func(x metastore.Garbage) error { g = append(g, x); return nil })
	if len(g) != 1 || g[0].Backend != "b0" || g[0].Key != shardio.ShardKey(ms.ID, 1) {
		t.Fatalf("garbage %+v", g)
	}
}

// A paced, resumable pass: a pass cut short resumes from its cursor.
func TestScrubResumes(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour)}})
	e.fill(10, 20<<10)
	e.probe()
	total := len(e.stripes())
	ctx, cancel := context.WithCancel(context.Background())
	p, err := e.h.Scrub(ctx, ScrubOptions{Resume: true, Progress: func(p ScrubProgress) {
		if p.Done == 3 {
			cancel()
		}
	}})
	if err == nil || p.Done != 3 {
		t.Fatalf("cut pass: %+v %v", p, err)
	}
	seen := 0
	p, err = e.h.Scrub(context.Background(), ScrubOptions{Resume: true, Progress: func(ScrubProgress) { seen++ }})
	if err != nil {
		t.Fatal(err)
	}
	if p.Done != total || seen != total-3+1 {
		t.Fatalf("resumed pass checked %d more (%+v), want %d", seen-1, p, total-3)
	}
	// Paced: a period spreads the pass out.
	start := time.Now()
	if _, err := e.h.Scrub(context.Background(), ScrubOptions{Period: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 250*time.Millisecond {
		t.Fatalf("paced pass took %v", time.Since(start))
	}
}

// A pass resumed after the store grew counts its total anew: before, its
// total stayed the number of stripes when it first started, and status
// showed "100% (8/4 stripes)" for a pass still under way.
func TestScrubResumedTotalCountsWhatIsLeft(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour)}})
	e.fill(6, 20<<10)
	e.probe()
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := e.h.Scrub(ctx, ScrubOptions{Resume: true, Progress: func(p ScrubProgress) {
		if p.Done == 3 {
			cancel()
		}
	}}); err == nil {
		t.Fatal("the pass was not cut")
	}
	for i := range 24 {
		e.put(fmt.Sprintf("more-%d", i), bytes.Repeat([]byte{byte(i)}, 20<<10))
	}
	var bad []ScrubProgress
	p, err := e.h.Scrub(context.Background(), ScrubOptions{Resume: true, Progress: func(p ScrubProgress) {
		if p.Done > p.Total {
			bad = append(bad, p)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Fatalf("progress past its total while under way: %d/%d (first of %d)", bad[0].Done, bad[0].Total, len(bad))
	}
	if p.Done != p.Total || p.Done <= 6 {
		t.Fatalf("finished pass %d/%d", p.Done, p.Total)
	}
}
