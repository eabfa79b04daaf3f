package healer

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/placement"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

// hooked runs a test's function around one backend's calls.
type hooked struct {
	backends.Backend
	beforePut  func(ctx context.Context, key string) error
	afterPut   func(key string)
	beforeList func()
}

func (b *hooked) Put(ctx context.Context, key string, v []byte) error {
	if b.beforePut != nil {
		if err := b.beforePut(ctx, key); err != nil {
			return err
		}
	}
	err := b.Backend.Put(ctx, key, v)
	if err == nil && b.afterPut != nil {
		b.afterPut(key)
	}
	return err
}

func (b *hooked) List(ctx context.Context, prefix string, fn func(string, int64) error) error {
	if b.beforeList != nil {
		b.beforeList()
	}
	return b.Backend.List(ctx, prefix, fn)
}

// hook puts a hooked wrapper under a backend's switchable (so kill and
// revive still work above it).
func (e *env) hook(name string) *hooked {
	e.mu.Lock()
	defer e.mu.Unlock()
	h := &hooked{Backend: e.bs[name].Backend}
	e.bs[name] = &switchable{Backend: h}
	return h
}

// stagedWrite is a put stopped just before its commit: its intent is
// recorded and its shards are uploaded, one of them on a chosen backend.
type stagedWrite struct {
	obj     *metastore.Object
	data    []byte
	stripes []*metastore.Stripe
	intents [][16]byte
}

// stageWrite does what the store's write path does up to the commit, for
// an object of one block, placing one shard on backend `on`.
func (e *env) stageWrite(name string, data []byte, on string, created time.Time) *stagedWrite {
	e.t.Helper()
	ctx := context.Background()
	obj := &metastore.Object{Name: name, ID: encoder.NewObjectID(), Size: int64(len(data)),
		Created: time.Now(), Modified: time.Now(),
		Policy: metastore.Policy{K: e.pol.K, M: e.pol.M, BlockSize: e.pol.BlockSize,
			Compression: e.pol.Compression, Encryption: e.pol.Encryption, Checksum: e.pol.Checksum}}
	st, err := e.enc.EncodeBlock(encoder.ObjectID(obj.ID), 0, encoder.NewStripeID(), data)
	if err != nil {
		e.t.Fatal(err)
	}
	n := e.pol.K + e.pol.M
	var first placement.Candidate
	cands := e.h.candidates()
	for _, c := range cands {
		if c.Name == on {
			first = c
		}
	}
	if first.Name == "" {
		e.t.Fatalf("%s is not a candidate", on)
	}
	rest, err := placement.Choose(cands, n-1, map[string]bool{first.Name: true, first.Domain: true}, false, e.rnd)
	if err != nil {
		e.t.Fatal(err)
	}
	targets := append([]placement.Candidate{first}, rest...)
	in := metastore.Intent{ID: st.ID, Created: created}
	for i, t := range targets {
		in.Shards = append(in.Shards, metastore.ShardLoc{Backend: t.Name, Key: shardio.ShardKey(st.ID, i)})
	}
	if err := e.meta.AddIntent(ctx, in); err != nil {
		e.t.Fatal(err)
	}
	res := shardio.Upload(ctx, e, st.ID, st.Shards, targets, shardio.UploadOptions{Attempts: 1})
	ms := &metastore.Stripe{ID: st.ID, Object: obj.ID, K: e.pol.K, M: e.pol.M, DataLen: st.DataLen,
		Shards: make([]metastore.ShardLoc, n)}
	for i, b := range res.Landed {
		if b == "" {
			e.t.Fatalf("shard %d did not land: %v", i, res.Errs[i])
		}
		ms.Shards[i] = metastore.ShardLoc{Backend: b, Key: shardio.ShardKey(st.ID, i), Size: int64(len(st.Shards[i])), Sum: st.Sums[i]}
	}
	obj.Stripes = [][16]byte{st.ID}
	return &stagedWrite{obj: obj, data: data, stripes: []*metastore.Stripe{ms}, intents: [][16]byte{st.ID}}
}

// stageInFlight fills the env with five objects, lets the monitor see
// them, and stages a write of one block named "in-flight" with a shard on
// backend `on`. It returns the objects that must read back at the end
// (commitInto or checkCommitted adds the write's) and the write.
func (e *env) stageInFlight(on string) (map[string][]byte, *stagedWrite) {
	e.t.Helper()
	objs := e.fill(5, 30<<10)
	e.probe()
	return objs, e.stageWrite("in-flight", patterned(12<<10, 7), on, time.Now())
}

// commit finishes a staged write as the store's commit does: the object,
// its stripes and the removal of its intents in one batch.
func (w *stagedWrite) commit(t *testing.T, meta *metastore.Store) {
	t.Helper()
	if _, err := meta.PutObject(context.Background(), w.obj, w.stripes, nil, w.intents); err != nil {
		t.Fatalf("commit of the staged write: %v", err)
	}
}

// commitInto commits the write and adds its data to objs, the objects
// that must read back.
func (w *stagedWrite) commitInto(t *testing.T, meta *metastore.Store, objs map[string][]byte) {
	t.Helper()
	w.commit(t, meta)
	objs[w.obj.Name] = w.data
}

// checkCommitted fails the test unless the write, committed by a hook
// `during` some step, is in the metastore, and adds its data to objs.
func (e *env) checkCommitted(w *stagedWrite, objs map[string][]byte, during string) {
	e.t.Helper()
	if _, err := e.meta.GetObject(context.Background(), w.obj.Name); err != nil {
		e.t.Fatalf("the write did not commit %s: %v", during, err)
	}
	objs[w.obj.Name] = w.data
}

// checkQueued fails the test unless the stripe is in the repair queue;
// what names the stripe in the failure.
func (e *env) checkQueued(id [16]byte, what string) {
	e.t.Helper()
	if _, err := e.meta.GetRepair(context.Background(), id); err != nil {
		e.t.Fatalf("%s is not queued: %v", what, err)
	}
}

// checkState fails the test unless the backend's recorded state is want.
func (e *env) checkState(name string, want metastore.BackendState) {
	e.t.Helper()
	if st := e.state(name); st != want {
		e.t.Fatalf("%s is %s, want %s", name, st, want)
	}
}

// repairAndSettle repairs every queued stripe, runs a monitor round (which
// retires a drained backend or records a down one replaced once nothing
// holds it back), and fails the test unless the backend is then in state
// want.
func (e *env) repairAndSettle(name string, want metastore.BackendState) {
	e.t.Helper()
	e.repairAll()
	e.probe()
	if st := e.state(name); st != want {
		e.t.Fatalf("%s is %s after the repairs, want %s", name, st, want)
	}
}

// rebuildLosingTarget kills b0, lets the monitor queue its stripes and
// repairs the first of them. In that repair, right after the first
// rebuilt shard landed on its target and before the commit, lose runs
// once with the target's name and then the monitor runs a round, as it
// may in that window. It returns the repaired item and the target.
func (e *env) rebuildLosingTarget(lose func(target string)) (metastore.RepairItem, string) {
	e.t.Helper()
	ctx := context.Background()
	e.mu.Lock()
	all := names(e.bs)
	e.mu.Unlock()
	var once sync.Once
	var target atomic.Value
	for _, name := range all {
		e.hook(name).afterPut = func(key string) {
			if _, _, ok := shardio.ParseShardKey(key); !ok {
				return
			}
			once.Do(func() {
				target.Store(name)
				lose(name)
				_ = e.h.ProbeAll(ctx)
			})
		}
	}
	e.kill("b0")
	e.probe()
	q := e.queue()
	if len(q) == 0 {
		e.t.Fatal("nothing queued for the down b0")
	}
	it := q[0]
	if o, err := e.h.Repair(ctx, it); o != Repaired {
		e.t.Fatalf("repair: %s, %v", o, err)
	}
	name, _ := target.Load().(string)
	if name == "" {
		e.t.Fatal("the rebuild wrote no shard")
	}
	return it, name
}

// patterned returns n bytes of a pattern that mul varies, so the objects
// of one test differ.
func patterned(n, mul int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * mul)
	}
	return b
}
