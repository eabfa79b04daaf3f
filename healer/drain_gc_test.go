package healer

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/healer/provision"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

// Drain rebuilds a backend's shards from the other shards (never reading
// the leaving backend), then retires it and gives its capacity back.
func TestDrain(t *testing.T) {
	var local *provision.Local
	e := newEnv(t, envOpts{backends: 6, cfg: Config{Grace: Duration(time.Hour)}, provs: func(e *env) []provision.Provisioner {
		l, err := provision.NewLocal(provision.LocalConfig{Dir: filepath.Join(e.dir, "prov")})
		if err != nil {
			t.Fatal(err)
		}
		local = l
		return []provision.Provisioner{l}
	}})
	ctx := context.Background()
	objs := e.fill(15, 48<<10)
	e.probe()
	// A provisioned backend to drain, so retiring it releases its directory.
	name, err := e.h.provision(ctx, false, "")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 { // some of these land on the new backend
		data := make([]byte, 30<<10)
		for j := range data {
			data[j] = byte(i * j)
		}
		name := "more-" + string(rune('a'+i))
		e.put(name, data)
		objs[name] = data
	}
	held := e.onBackend(name)
	if held == 0 {
		t.Fatal("new backend holds nothing")
	}
	if err := e.h.Drain(ctx, name); err != nil {
		t.Fatal(err)
	}
	if st := e.state(name); st != metastore.StateDraining {
		t.Fatalf("state %s", st)
	}
	if n := len(e.queue()); n != held {
		t.Fatalf("queued %d, want %d", n, held)
	}
	// Reads still work from the draining backend meanwhile.
	e.checkObjects(objs)
	before := e.sw(name).read.Load()
	rep := e.repairAll()
	if rep.Repaired != held {
		t.Fatalf("repair %+v", rep)
	}
	if got := e.sw(name).read.Load() - before; got != 0 {
		t.Fatalf("drain read %d bytes from the leaving backend", got)
	}
	if e.onBackend(name) != 0 {
		t.Fatal("drained backend still holds stripes")
	}
	e.probe()
	if st := e.state(name); st != metastore.StateRetired {
		t.Fatalf("drained backend is %s, want retired", st)
	}
	if _, err := e.meta.GetMeta(ctx, provisionedMeta(name)); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatal("retired backend still recorded as provisioned")
	}
	if _, err := filepath.Glob(filepath.Join(local.Dir(), name)); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(local.Dir(), name)); len(m) != 0 {
		t.Fatal("released backend's directory still exists")
	}
	e.checkFull()
	if err := e.h.Drain(ctx, name); err == nil {
		t.Fatal("draining a retired backend succeeded")
	}
	// Remove refuses a backend that still holds shards.
	if err := e.h.RemoveBackend(ctx, "b0"); err == nil || !strings.Contains(err.Error(), "drain") {
		t.Fatalf("remove of a full backend: %v", err)
	}
	if err := e.h.RemoveBackend(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := e.meta.GetBackend(ctx, name); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatal("removed backend still recorded")
	}
}

// Garbage collection deletes due garbage, never a shard a committed stripe
// references, leaves unreachable backends for later, and turns old
// intents into garbage.
func TestGC(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour), OrphanDelay: Duration(time.Minute)}})
	ctx := context.Background()
	objs := e.fill(6, 40<<10)
	e.probe()
	// Deleting an object makes its shards garbage (delay 0 in this env).
	obj, _ := e.meta.GetObject(ctx, "obj-000")
	if err := e.meta.DeleteObject(ctx, "obj-000"); err != nil {
		t.Fatal(err)
	}
	delete(objs, "obj-000")
	var shards []metastore.ShardLoc
	for _, id := range obj.Stripes {
		for i := range 6 {
			shards = append(shards, metastore.ShardLoc{Key: shardio.ShardKey(id, i)})
		}
	}
	// A bogus garbage entry for a live shard must not delete it.
	live := e.stripes()[0]
	if err := e.meta.AddGarbage(ctx, metastore.Garbage{Backend: live.Shards[2].Backend, Key: live.Shards[2].Key, After: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	// An old intent (crashed write) and a young one (write in flight).
	orphan := [16]byte{1}
	young := [16]byte{2}
	if err := e.sw("b0").Backend.Put(ctx, shardio.ShardKey(orphan, 0), []byte("orphan")); err != nil {
		t.Fatal(err)
	}
	if err := e.sw("b0").Backend.Put(ctx, shardio.ShardKey(young, 0), []byte("young")); err != nil {
		t.Fatal(err)
	}
	_ = e.meta.AddIntent(ctx, metastore.Intent{ID: orphan, Created: time.Now().Add(-time.Hour),
		Shards: []metastore.ShardLoc{{Backend: "b0", Key: shardio.ShardKey(orphan, 0)}}})
	_ = e.meta.AddIntent(ctx, metastore.Intent{ID: young, Created: time.Now(),
		Shards: []metastore.ShardLoc{{Backend: "b0", Key: shardio.ShardKey(young, 0)}}})
	// One backend does not answer: its garbage waits.
	e.kill("b5")
	e.probe()

	rep, err := e.h.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Referenced != 1 || rep.Orphans != 1 || rep.Deferred == 0 || rep.Deleted == 0 {
		t.Fatalf("gc %+v", rep)
	}
	// Every shard of the deleted object is gone except on b5.
	for _, l := range shards {
		for _, n := range []string{"b0", "b1", "b2", "b3", "b4"} {
			if _, err := e.sw(n).Backend.Stat(ctx, l.Key); !errors.Is(err, backends.ErrNotFound) {
				t.Fatalf("%s:%s survived GC (%v)", n, l.Key, err)
			}
		}
	}
	if _, err := e.sw("b0").Backend.Stat(ctx, shardio.ShardKey(orphan, 0)); !errors.Is(err, backends.ErrNotFound) {
		t.Fatal("orphan of an old intent survived")
	}
	if _, err := e.sw("b0").Backend.Stat(ctx, shardio.ShardKey(young, 0)); err != nil {
		t.Fatal("shard of a young intent deleted")
	}
	e.revive("b5")
	e.probe()
	rep, err = e.h.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deferred != 0 || rep.Deleted == 0 {
		t.Fatalf("second gc %+v", rep)
	}
	n := 0
	_ = e.meta.ListGarbage(ctx, func(metastore.Garbage) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d garbage entries left", n)
	}
	e.checkFull()
	e.checkObjects(objs)
}

// A repair that cannot succeed records why, naming present, missing and
// waiting shards, and backs off.
func TestFailedRepairRecordsWhy(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: 0, SuspectAfter: 1, RetryBackoff: Duration(time.Minute)}})
	e.fill(5, 20<<10)
	e.probe()
	e.kill("b0", "b1", "b2")
	e.probe()
	rep := e.repairAll()
	if rep.Failed == 0 || rep.Repaired != 0 || rep.Remaining == 0 || len(rep.Errors) == 0 {
		t.Fatalf("repair %+v", rep)
	}
	for _, it := range e.queue() {
		if it.Attempts != 1 || !it.NotBefore.After(time.Now().Add(30*time.Second)) {
			t.Fatalf("entry %+v not backed off", it)
		}
		if !strings.Contains(it.LastError, "present [") || !strings.Contains(it.LastError, "missing [") ||
			!strings.Contains(it.LastError, ErrUnrecoverable.Error()) {
			t.Fatalf("last error %q does not name the shards", it.LastError)
		}
	}
	st, _ := e.h.Status(context.Background())
	if st.Repairs.Failed == 0 || len(st.Repairs.LastFailures) == 0 || st.Queue.Head[0].LastError == "" {
		t.Fatalf("status %+v", st.Repairs)
	}
	var re *RepairError
	_, err := e.h.Repair(context.Background(), e.queue()[0])
	if !errors.As(err, &re) || !errors.Is(err, ErrUnrecoverable) || len(re.Present)+len(re.Missing) != 6 {
		t.Fatalf("error %v", err)
	}
	// Revived, the same entries repair.
	e.revive("b0", "b1", "b2")
	e.probe()
	rep = e.repairAll()
	if rep.Failed != 0 || rep.Remaining != 0 {
		t.Fatalf("after revival %+v", rep)
	}
}

// A crash between a rebuild's upload and its commit leaves shards no
// record names; the scrubber's sweep hands them to garbage collection
// (after the orphan delay) and leaves everything named alone.
func TestScrubSweepsOrphans(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour), OrphanDelay: Duration(time.Hour)}})
	ctx := context.Background()
	objs := e.fill(5, 30<<10)
	e.probe()
	st := e.stripes()[0]
	// Shard 0 of a real stripe on a backend that does not hold it (an
	// uncommitted rebuild), and a shard of a stripe that does not exist.
	var stray string
	for _, n := range names(e.bs) {
		if n != st.Shards[0].Backend {
			stray = n
			break
		}
	}
	orphan1 := shardio.ShardKey(st.ID, 0)
	orphan2 := shardio.ShardKey([16]byte{9, 9}, 3)
	inIntent := shardio.ShardKey([16]byte{7}, 1)
	for _, k := range []string{orphan1, orphan2, inIntent} {
		if err := e.sw(stray).Backend.Put(ctx, k, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	_ = e.meta.AddIntent(ctx, metastore.Intent{ID: [16]byte{7}, Created: time.Now(),
		Shards: []metastore.ShardLoc{{Backend: stray, Key: inIntent}}})
	p, err := e.h.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Orphans != 2 {
		t.Fatalf("sweep found %d orphans, want 2", p.Orphans)
	}
	var g []metastore.Garbage
	_ = e.meta.ListGarbage(ctx, func(x metastore.Garbage) error { g = append(g, x); return nil })
	if len(g) != 2 || g[0].After.Before(time.Now().Add(50*time.Minute)) {
		t.Fatalf("garbage %+v: want the two orphans, due after the orphan delay", g)
	}
	// A second pass does not count them again.
	if p, _ := e.h.Scrub(ctx, ScrubOptions{}); p.Orphans != 0 {
		t.Fatalf("second sweep found %d", p.Orphans)
	}
	// Not due yet: nothing deleted.
	if rep, _ := e.h.GC(ctx); rep.Deleted != 0 {
		t.Fatalf("gc deleted %d before the delay", rep.Deleted)
	}
	e.checkFull()
	e.checkObjects(objs)
}
