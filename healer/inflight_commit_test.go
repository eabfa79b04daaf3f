package healer

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/healer/provision"
	"github.com/healstore/healstore/metastore"
)

// hookedKV runs a test's function after a metastore scan: a write can
// then commit between two passes of the healer over the metastore.
type hookedKV struct {
	metastore.KV
	mu        sync.Mutex
	afterScan func(prefix string)
}

func (k *hookedKV) Scan(ctx context.Context, prefix, start []byte, fn func(k, v []byte) error) error {
	err := k.KV.Scan(ctx, prefix, start, fn)
	k.mu.Lock()
	f := k.afterScan
	k.mu.Unlock()
	if f != nil {
		f(string(prefix))
	}
	return err
}

// onceAfterScan commits w right after the first scan whose prefix one of
// prefixes starts, and disarms itself.
func (k *hookedKV) onceAfterScan(t *testing.T, w *stagedWrite, meta func() *metastore.Store, prefixes ...string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.afterScan = func(prefix string) {
		for _, p := range prefixes {
			if strings.HasPrefix(prefix, p) {
				k.mu.Lock()
				k.afterScan = nil
				k.mu.Unlock()
				w.commit(t, meta())
				return
			}
		}
	}
}

// hookMeta puts a hookedKV under the env's metastore and builds the
// healer again on it (newEnv starts nothing, so nothing runs on the old).
func (e *env) hookMeta(cfg Config) *hookedKV {
	e.t.Helper()
	k := &hookedKV{KV: e.meta.KV()}
	e.meta = metastore.New(k, metastore.WithGarbageDelay(0))
	e.newHealer(cfg, e.h.provs)
	return k
}

// A write in flight on a backend being drained that commits right after
// Drain scanned the backend index (before the monitor's next round saw
// its intent) has its stripe queued at that round, and the drain ends.
func TestDrainWriteCommittedAfterScanQueued(t *testing.T) {
	cfg := Config{Grace: Duration(time.Hour)}
	e := newEnv(t, envOpts{backends: 7, cfg: cfg})
	k := e.hookMeta(cfg)
	objs, w := e.stageInFlight("b6")
	k.onceAfterScan(t, w, func() *metastore.Store { return e.meta }, "bidx/b6/")
	if err := e.h.Drain(context.Background(), "b6"); err != nil {
		t.Fatal(err)
	}
	e.checkCommitted(w, objs, "during the drain")
	e.probe() // the monitor's next round
	e.checkQueued(w.stripes[0].ID, "the write's stripe with a shard on the draining b6")
	e.repairAndSettle("b6", metastore.StateRetired)
	e.checkFull()
	e.checkObjects(objs)
}

// provHook runs a test's function when a replacement is provisioned.
type provHook struct {
	provision.Provisioner
	before func()
}

func (p *provHook) Provision(ctx context.Context, c provision.Constraints) (backends.Spec, string, error) {
	if p.before != nil {
		p.before()
		p.before = nil
	}
	return p.Provisioner.Provision(ctx, c)
}

// Likewise for a backend going down: a write that commits after the down
// event scanned the backend index, while a replacement is provisioned
// (minutes, on a grid), has its stripe queued.
func TestDownWriteCommittedWhileReplacingQueued(t *testing.T) {
	prov := &provHook{}
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: 0, SuspectAfter: 1}, provs: func(e *env) []provision.Provisioner {
		prov.Provisioner = localProv(e)[0]
		return []provision.Provisioner{prov}
	}})
	objs, w := e.stageInFlight("b6")
	prov.before = func() { w.commit(t, e.meta) }
	e.kill("b6")
	e.probe() // b6 down: its committed stripes are queued, then the write commits
	e.checkState("b6", metastore.StateDown)
	e.checkCommitted(w, objs, "while b6 was replaced")
	e.probe()
	e.checkQueued(w.stripes[0].ID, "the write's stripe with a shard on the down b6")
	e.repairAndSettle("b6", metastore.StateReplaced)
	e.checkObjects(objs)
}

// A write in flight on a backend that commits between RemoveBackend's
// two checks (committed stripes, write intents) is seen by one of them:
// the backend is not forgotten while a stripe names it.
func TestRemoveBackendWriteCommittedBetweenChecks(t *testing.T) {
	cfg := Config{Grace: Duration(time.Hour)}
	e := newEnv(t, envOpts{backends: 7, cfg: cfg})
	k := e.hookMeta(cfg)
	ctx := context.Background()
	e.probe()
	data := make([]byte, 12<<10)
	w := e.stageWrite("in-flight", data, "b6", time.Now())
	if e.onBackend("b6") != 0 {
		t.Fatal("b6 holds committed stripes")
	}
	// Commit right after whichever check runs first.
	k.onceAfterScan(t, w, func() *metastore.Store { return e.meta }, "bidx/b6/", "intent/")
	if err := e.h.RemoveBackend(ctx, "b6"); err == nil {
		t.Fatal("b6 was removed although the write committed a stripe onto it meanwhile")
	}
	if _, err := e.meta.GetObject(ctx, "in-flight"); err != nil {
		t.Fatalf("the write did not commit during the removal: %v", err)
	}
	if _, err := e.meta.GetBackend(ctx, "b6"); err != nil {
		t.Fatalf("b6 is forgotten: %v", err)
	}
}
