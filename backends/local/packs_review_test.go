package local

import (
	"os"
	"path/filepath"
	"testing"

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

// TestPackCheckpointOfAppendsInFlight checks a checkpoint of a pack that
// another instance appends to while two of its appends end out of order:
// the later one is whole, the earlier one not written yet (a hole before
// a record). Neither this instance, once the other lets go, nor the next
// Open from its checkpoint may lose the earlier record.
func TestPackCheckpointOfAppendsInFlight(t *testing.T) {
	dir := t.TempDir()
	k0, k1, k2 := record("k0", []byte("zero"), 10), record("k1", []byte("one"), 11), record("k2", []byte("two"), 12)
	// The other instance's pack: k0, k1's place reserved but not yet
	// written (a hole), k2 written.
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
	// k1's append ends, and the other instance closes.
	if _, err := f.WriteAt(k1, int64(len(k0))); err != nil {
		t.Fatal(err)
	}
	release()
	mustGetLocal(t, a, "k1", []byte("one"))
	a.Close()
	nb := openAgain(t, a)
	for k, v := range map[string]string{"k0": "zero", "k1": "one", "k2": "two"} {
		mustGetLocal(t, nb, k, []byte(v))
	}
}

// TestPackCheckpointOfAppendsInFlightAtCrash is the same with the
// checkpoint written while the other instance still holds its pack, and
// that instance then killed after its last append: the next Open must read
// the pack from before the hole, not from past it.
func TestPackCheckpointOfAppendsInFlightAtCrash(t *testing.T) {
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
	a.Close() // the checkpoint: the other instance still appends
	if _, err := f.WriteAt(k1, int64(len(k0))); err != nil {
		t.Fatal(err)
	}
	release()
	nb := openAgain(t, a)
	if !nb.packs.fromIndex {
		t.Fatal("the checkpoint was not taken")
	}
	for k, v := range map[string]string{"k0": "zero", "k1": "one", "k2": "two"} {
		mustGetLocal(t, nb, k, []byte(v))
	}
}

var _ = filepath.Join
var _ = unix.SEEK_DATA
