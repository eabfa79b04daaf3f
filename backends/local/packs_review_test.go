package local

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"

	"golang.org/x/sys/unix"
)

// holdPack opens path and takes its lock, as the instance appending to
// it does; the returned func lets go (the instance closes or dies).
func holdPack(t *testing.T, path string) (*os.File, func()) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !tryLock(f) {
		t.Fatal("pack already locked")
	}
	done := false
	release := func() {
		if !done {
			done = true
			unlock(f)
			f.Close()
		}
	}
	t.Cleanup(release)
	return f, release
}

// inFlightPack makes another instance's pack holding k0, then a hole
// where k1's append is reserved but not yet written, then k2 written
// (two appends ending out of order), and opens an instance a on it that
// has read k2. finish writes k1 and lets the other instance go.
func inFlightPack(t *testing.T) (a *Backend, finish func()) {
	t.Helper()
	a, endK1, release := inFlightPackHeld(t)
	return a, func() {
		endK1()
		release()
	}
}

// inFlightPackHeld is inFlightPack with k1's append ending (endK1) apart
// from the other instance letting go (release).
func inFlightPackHeld(t *testing.T) (a *Backend, endK1, release func()) {
	t.Helper()
	dir := t.TempDir()
	k0, k1, k2 := record("k0", []byte("zero"), 10), record("k1", []byte("one"), 11), record("k2", []byte("two"), 12)
	path := writePack(t, dir, 0, k0)
	f, release := holdPack(t, path)
	if _, err := f.WriteAt(k2, int64(len(k0)+len(k1))); err != nil {
		t.Fatal(err)
	}
	a, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	mustGetLocal(t, a, "k2", []byte("two"))
	return a, func() {
		if _, err := f.WriteAt(k1, int64(len(k0))); err != nil {
			t.Fatal(err)
		}
	}, release
}

// mustHoldAll checks the three records of inFlightPack.
func mustHoldAll(t *testing.T, b *Backend) {
	t.Helper()
	for k, v := range map[string]string{"k0": "zero", "k1": "one", "k2": "two"} {
		mustGetLocal(t, b, k, []byte(v))
	}
}

// TestPackCheckpointOfAppendsInFlight checks a checkpoint of a pack that
// another instance appends to while two of its appends end out of order:
// the later one is whole, the earlier one not written yet (a hole before
// a record). Neither this instance, once the other lets go, nor the next
// Open from its checkpoint may lose the earlier record.
func TestPackCheckpointOfAppendsInFlight(t *testing.T) {
	a, finish := inFlightPack(t)
	finish() // k1's append ends, and the other instance closes
	mustGetLocal(t, a, "k1", []byte("one"))
	a.Close()
	mustHoldAll(t, openAgain(t, a))
}

// TestPackCheckpointOfAppendsInFlightAtCrash is the same with the
// checkpoint written while the other instance still holds its pack, and
// that instance then killed after its last append: the next Open must read
// the pack from before the hole, not from past it.
func TestPackCheckpointOfAppendsInFlightAtCrash(t *testing.T) {
	a, finish := inFlightPack(t)
	a.Close() // the checkpoint: the other instance still appends
	finish()
	nb := openAgain(t, a)
	if !nb.packs.fromIndex {
		t.Fatal("the checkpoint was not taken")
	}
	mustHoldAll(t, nb)
}

// TestPackCheckpointLoserPunched checks a key whose record a checkpoint
// names was written again after it, to a pack the checkpoint does not
// name, by an instance that died before punching the old record: Open
// serves the new value, and once the key is deleted the old one never
// comes back (here: when its pack is read again as its last other record
// is deleted).
func TestPackCheckpointLoserPunched(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writePack(t, dir, 0, record("k", []byte("old"), 1), record("x", []byte("x"), 2))
	a, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	a.Close() // the checkpoint names k's record in pack 0
	writePack(t, dir, 1, record("k", []byte("new"), 3))
	b := openAgain(t, a)
	if !b.packs.fromIndex {
		t.Fatal("the checkpoint was not taken")
	}
	mustGetLocal(t, b, "k", []byte("new"))
	if err := b.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if v, err := b.Get(ctx, "k"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Get of a deleted key: %q, %v; want not found", v, err)
	}
	if v, err := reopen(t, b).Get(ctx, "k"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Get of a deleted key after a reopen: %q, %v; want not found", v, err)
	}
}

// TestPunchProbeLeavesPacksAlone checks that asking whether the file
// system punches holes never punches a pack: another instance appends to
// its end at any moment, and a probe past the end it saw can land on a
// record just written there.
func TestPunchProbeLeavesPacksAlone(t *testing.T) {
	dir := t.TempDir()
	path := writePack(t, dir, 0, record("k0", []byte("zero"), 1))
	w, release := holdPack(t, path) // the other instance, appending
	defer release()
	s := &packs{dir: filepath.Dir(path), max: defaultPackMax, index: map[string]packLoc{}, byID: map[uint32]*pack{}}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s.byID[0] = &pack{id: 0, path: path, f: f}
	rec := record("k1", bytes.Repeat([]byte{1}, 100), 2)
	done := make(chan int64)
	go func() {
		off := int64(recAlign)
		for range 2000 {
			if _, err := w.WriteAt(rec, off); err != nil {
				t.Error(err)
			}
			off += int64(len(rec))
		}
		done <- off
	}()
	var end int64
	for end == 0 {
		select {
		case end = <-done:
		default:
			s.punchChecked = false
			s.punchable()
		}
	}
	buf := make([]byte, len(rec))
	for off := int64(recAlign); off < end; off += int64(len(rec)) {
		if _, err := w.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, rec) {
			t.Fatalf("the record at %d of %d was changed by the probe", off, end)
		}
	}
}

// TestFailedPunchDeletesForGood checks a Delete whose punch fails (a file
// system without holes, or a full one that needs space to make a hole):
// after a crash the key stays deleted, in Get and in List, although a
// checkpoint written before named its record.
func TestFailedPunchDeletesForGood(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, k := range []string{"keep", "gone"} {
		if err := b.Put(ctx, k, bytes.Repeat([]byte(k), 3000)); err != nil {
			t.Fatal(err)
		}
	}
	b = reopen(t, b) // its Close leaves a checkpoint naming both
	if !b.packs.fromIndex {
		t.Fatal("no checkpoint read")
	}
	b.packs.mu.Lock()
	b.packs.fallocate = func(int, uint32, int64, int64) error { return unix.ENOSPC }
	b.packs.mu.Unlock()
	if err := b.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	crashClose(b)
	nb := openAgain(t, b)
	listed := map[string]bool{}
	nb.List(ctx, "", func(k string, _ int64) error { listed[k] = true; return nil })
	if listed["gone"] || !listed["keep"] {
		t.Fatalf("List after the crash: %v, want keep alone", listed)
	}
	if _, err := nb.Get(ctx, "gone"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Get of the deleted key: %v, want not found", err)
	}
	mustGetLocal(t, nb, "keep", bytes.Repeat([]byte("keep"), 3000))
}

// TestDeleteRacingClose checks a Delete that passed the backend's check
// just before Close closed the packs: it must fail as unavailable, not
// report a delete whose punch went nowhere (the value is there on the
// next Open).
func TestDeleteRacingClose(t *testing.T) {
	b := openHolding(t)
	ctx := context.Background()
	b.packs.closeAll() // Close, between Delete's check and its punch
	if err := b.Delete(ctx, "k"); !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("Delete after the packs closed: %v, want unavailable", err)
	}
	b.Close()
	mustGetLocal(t, openAgain(t, b), "k", []byte("value"))
}

// TestReadErrorKeepsRecord checks that a read the disk fails (here: a
// descriptor that cannot read) returns the error and leaves the record in
// the index, so the value reads again once the disk does, and a
// checkpoint still names it.
func TestReadErrorKeepsRecord(t *testing.T) {
	b := openHolding(t)
	ctx := context.Background()
	l, _ := b.packs.known("k")
	wo, err := os.OpenFile(l.p.path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	b.packs.mu.Lock()
	good := l.p.f
	l.p.f = wo // every read fails (EBADF), as a failing disk's would
	b.packs.mu.Unlock()
	if _, err := b.Get(ctx, "k"); err == nil || errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Get through a failing read: %v, want the read's error", err)
	}
	b.packs.mu.Lock()
	l.p.f = good
	b.packs.mu.Unlock()
	wo.Close()
	mustGetLocal(t, b, "k", []byte("value"))
	mustGetLocal(t, reopen(t, b), "k", []byte("value"))
}

// openHolding opens a backend in a new directory, holding "k" = "value".
func openHolding(t *testing.T) *Backend {
	t.Helper()
	b, err := Open(specFor(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(context.Background(), "k", []byte("value")); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPackAppendEndedOutOfOrderSeenWhileHeld: of two appends of another
// instance, the later ended first, and this instance read the pack then,
// stepping over the hole where the earlier one was going. Once that one
// ends, its record is found while the other instance still appends to the
// pack, not only when it lets go: a healer that rebuilt a shard into its
// pack, on a disk shared with a frontend, left the frontend taking the
// shard for lost as long as the healer ran.
func TestPackAppendEndedOutOfOrderSeenWhileHeld(t *testing.T) {
	a, endK1, _ := inFlightPackHeld(t)
	defer a.Close()
	if _, err := a.Stat(context.Background(), "k1"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Stat of an append not written yet: %v", err)
	}
	endK1()
	mustGetLocal(t, a, "k1", []byte("one"))
	mustHoldAll(t, a)
}

// TestOpenLeavesAnotherInstancesPutAlone: Open removes the temporaries of
// Puts interrupted by a crash. Another process may have the directory
// open and be writing a value in a file of its own right then (two
// frontends sharing their metadata in etcd, one starting): its temporary
// is not a crash's, and removing it failed that Put. A temporary left by a
// crash is still removed.
func TestOpenLeavesAnotherInstancesPutAlone(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	a, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	big := bytes.Repeat([]byte("v"), defaultPackMax+1) // a file of its own
	opened := 0
	a.beforeRename = func() {
		// Another process starting meanwhile, taking any temporary for
		// old enough: only the lock keeps this Put's.
		b, err := open(specFor(dir), 0)
		if err != nil {
			t.Error(err)
			return
		}
		b.Close()
		opened++
	}
	if err := a.Put(ctx, "big", big); err != nil {
		t.Fatalf("Put while another instance opened the directory: %v", err)
	}
	if opened != 1 {
		t.Fatalf("the other instance opened %d times, want 1", opened)
	}
	mustGetLocal(t, a, "big", big)

	// A crash's temporary (nobody holds it) is removed by the next Open.
	left := crashTemp(t, a, "x", time.Hour)
	c, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := os.Stat(left); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a crash's temporary left by Open: %v", err)
	}
}

// TestYoungCrashTemporaryRemovedLater: a process restarted right after a
// crash finds the crash's temporary too young to tell from another
// process's Put in progress. It is removed once old enough, not left until
// the next Open (for a daemon, days).
func TestYoungCrashTemporaryRemovedLater(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	left := crashTemp(t, b, "x", 0)
	b.Close()
	const age = 300 * time.Millisecond
	b, err = open(specFor(dir), age)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := os.Stat(left); err != nil {
		t.Fatalf("a temporary younger than %v removed at Open: %v", age, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(left); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the crash's temporary is still there %v after Open", 10*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// crashTemp leaves the temporary of a Put of key interrupted by a crash
// age ago in b's directory, and returns its path.
func crashTemp(t *testing.T, b *Backend, key string, age time.Duration) string {
	t.Helper()
	p := filepath.Join(b.dirOf(key), tmpPrefix+"crashed")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("half a value"), 0o644); err != nil {
		t.Fatal(err)
	}
	when := time.Now().Add(-age)
	if err := os.Chtimes(p, when, when); err != nil {
		t.Fatal(err)
	}
	return p
}
