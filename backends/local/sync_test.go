package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/backendtest"
)

// deferredView is a local backend whose Put is PutNoSync followed by Sync,
// so the conformance suite checks the deferred path too.
type deferredView struct{ *Backend }

func (d deferredView) Put(ctx context.Context, key string, value []byte) error {
	if err := d.Backend.PutNoSync(ctx, key, value); err != nil {
		return err
	}
	return d.Backend.Sync(ctx, []string{key})
}

func TestConformanceDeferred(t *testing.T) {
	for _, layout := range []struct {
		name string
		set  func(*Backend) *Backend
	}{{"packs", func(b *Backend) *Backend { return b }}, {"files", filesOnly}} {
		t.Run(layout.name, func(t *testing.T) {
			backendtest.Run(t, backendtest.Factory{
				Open:          func(t *testing.T) backends.Backend { return deferredView{layout.set(openT(t, 0))} },
				OpenLimited:   func(t *testing.T, limit int64) backends.Backend { return deferredView{layout.set(openT(t, limit))} },
				MaxValueSize:  MaxValueSize,
				CapacityKnown: true,
			})
		})
	}
}

// rounds stands in for a backend's flush: it records the keys of each
// round and, when gated, waits for the test to release the round with the
// errors it should report (nil: do the real fsyncs).
type rounds struct {
	mu     sync.Mutex
	keys   [][]string
	gate   chan map[string]error
	in     chan struct{} // a round has started
	really func([]string) map[string]error
}

func hookRounds(b *Backend, gated bool) *rounds {
	r := &rounds{in: make(chan struct{}, 100), really: b.fsyncValues}
	if gated {
		r.gate = make(chan map[string]error)
	}
	b.deferred.flush = func(keys []string) map[string]error {
		r.mu.Lock()
		r.keys = append(r.keys, slices.Sorted(slices.Values(keys)))
		r.mu.Unlock()
		r.in <- struct{}{}
		if r.gate != nil {
			if errs := <-r.gate; errs != nil {
				return errs
			}
		}
		return r.really(keys)
	}
	return r
}

// started waits for a round to begin.
func (r *rounds) started(t *testing.T) {
	t.Helper()
	select {
	case <-r.in:
	case <-time.After(10 * time.Second):
		t.Fatal("no sync round started")
	}
}

func (r *rounds) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.keys)
}

func (b *Backend) pendingLen() int {
	b.deferred.mu.Lock()
	defer b.deferred.mu.Unlock()
	return len(b.deferred.pending)
}

func TestSyncRounds(t *testing.T) {
	b := filesOnly(openT(t, 0))
	r := hookRounds(b, false)
	ctx := context.Background()

	// Values written with Put are durable already: no round.
	if err := b.Put(ctx, "durable", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, []string{"durable", "never-written"}); err != nil {
		t.Fatal(err)
	}
	if r.count() != 0 {
		t.Fatalf("Sync of durable keys ran %d rounds", r.count())
	}

	// Deferred values are visible at once and synced by one round.
	for _, k := range []string{"a", "b", "c"} {
		if err := b.PutNoSync(ctx, k, []byte("value "+k)); err != nil {
			t.Fatal(err)
		}
		got, err := b.Get(ctx, k)
		if err != nil || string(got) != "value "+k {
			t.Fatalf("Get after PutNoSync: %q, %v", got, err)
		}
	}
	if err := b.Sync(ctx, []string{"a", "b", "c"}); err != nil {
		t.Fatal(err)
	}
	if r.count() != 1 || !slices.Equal(r.keys[0], []string{"a", "b", "c"}) || b.pendingLen() != 0 {
		t.Fatalf("after one Sync: rounds %v, %d values pending; want one round of a, b, c and none", r.keys, b.pendingLen())
	}
	if err := b.Sync(ctx, []string{"a"}); err != nil || r.count() != 1 {
		t.Fatalf("Sync of a synced value: %v, %d rounds", err, r.count())
	}

	// One round covers every value written before it, whoever asks.
	b.PutNoSync(ctx, "d", []byte("d"))
	b.PutNoSync(ctx, "e", []byte("e"))
	if err := b.Sync(ctx, []string{"d"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, []string{"e"}); err != nil {
		t.Fatal(err)
	}
	if r.count() != 2 || !slices.Equal(r.keys[1], []string{"d", "e"}) {
		t.Fatalf("rounds %v, want a second one of d and e", r.keys)
	}

	// A value deleted before its round is no failure; one whose file
	// vanished behind the backend's back (a wiped disk) is lost.
	b.PutNoSync(ctx, "f", []byte("f"))
	b.PutNoSync(ctx, "g", []byte("g"))
	if err := b.Delete(ctx, "f"); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(b.pathOf("g")); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, []string{"f"}); err != nil {
		t.Fatalf("Sync of a deleted value: %v", err)
	}
	if err := b.Sync(ctx, []string{"g"}); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Sync of a value whose file vanished: %v, want ErrNotFound", err)
	}
}

// A round that began before a value was written does not make it durable:
// the Sync waiting for that value runs another one.
func TestSyncWaitsForALaterRound(t *testing.T) {
	b := openT(t, 0)
	r := hookRounds(b, true)
	ctx := context.Background()
	b.PutNoSync(ctx, "early", []byte("1"))
	first := make(chan error, 1)
	go func() { first <- b.Sync(ctx, []string{"early"}) }()
	r.started(t) // round 1 is running and covers "early" only

	b.PutNoSync(ctx, "late", []byte("2"))
	second := make(chan error, 1)
	go func() { second <- b.Sync(ctx, []string{"late"}) }()

	r.gate <- nil // round 1 succeeds
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-second:
		t.Fatalf("Sync of a value written after round 1 began returned %v before round 2", err)
	case <-r.in: // round 2 started
	case <-time.After(10 * time.Second):
		t.Fatal("no second round")
	}
	r.gate <- nil
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if r.count() != 2 || !slices.Equal(r.keys[0], []string{"early"}) || !slices.Equal(r.keys[1], []string{"late"}) {
		t.Fatalf("rounds %v, want [early] then [late]", r.keys)
	}
}

// A value whose fsync fails is lost: every Sync naming it fails until it
// is written again or deleted; the other values of the round are fine.
func TestFailedFsyncLosesThatValue(t *testing.T) {
	b := openT(t, 0)
	r := hookRounds(b, true)
	ctx := context.Background()
	b.PutNoSync(ctx, "x", []byte("1"))
	b.PutNoSync(ctx, "y", []byte("2"))
	done := make(chan error, 1)
	go func() { done <- b.Sync(ctx, []string{"x", "y"}) }()
	r.started(t)
	eio := &os.PathError{Op: "fsync", Path: b.pathOf("x"), Err: syscall.EIO}
	r.gate <- map[string]error{"x": eio}
	err := <-done
	if !errors.Is(err, backends.ErrUnavailable) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Sync after a failed fsync: %v, want ErrUnavailable wrapping EIO", err)
	}
	if err := b.Sync(ctx, []string{"y"}); err != nil {
		t.Fatalf("Sync of the value whose fsync worked: %v", err)
	}
	if err := b.Sync(ctx, []string{"x"}); !errors.Is(err, syscall.EIO) {
		t.Fatalf("second Sync of the lost value: %v, want EIO again", err)
	}
	if r.count() != 1 {
		t.Fatalf("%d rounds, want 1", r.count())
	}
	// Writing x again gives it a new chance.
	b.PutNoSync(ctx, "x", []byte("3"))
	go func() { done <- b.Sync(ctx, []string{"x"}) }()
	r.started(t)
	r.gate <- nil
	if err := <-done; err != nil {
		t.Fatalf("Sync of a value rewritten after the failure: %v", err)
	}
	// Deleting a lost value forgets it.
	b.PutNoSync(ctx, "z", []byte("4"))
	go func() { done <- b.Sync(ctx, []string{"z"}) }()
	r.started(t)
	r.gate <- map[string]error{"z": eio}
	<-done
	if err := b.Delete(ctx, "z"); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, []string{"z"}); err != nil {
		t.Fatalf("Sync of a deleted key: %v", err)
	}
}

// A key written again while its round runs: the round settles the value
// it was started for, and a Sync naming the key waits for the new value.
func TestRewriteDuringRound(t *testing.T) {
	b := openT(t, 0)
	r := hookRounds(b, true)
	ctx := context.Background()
	b.PutNoSync(ctx, "k", []byte("old"))
	done := make(chan error, 1)
	go func() { done <- b.Sync(ctx, []string{"k"}) }()
	r.started(t)
	b.PutNoSync(ctx, "k", []byte("new"))
	r.gate <- nil
	r.started(t) // the new value needs a round of its own
	select {
	case err := <-done:
		t.Fatalf("Sync returned %v before the rewritten value's round", err)
	default:
	}
	r.gate <- nil
	if err := <-done; err != nil || b.pendingLen() != 0 || r.count() != 2 {
		t.Fatalf("Sync: %v, %d pending, %d rounds; want nil, 0, 2", err, b.pendingLen(), r.count())
	}
}

func TestSyncHonoursContext(t *testing.T) {
	b := openT(t, 0)
	r := hookRounds(b, true)
	b.PutNoSync(context.Background(), "k", []byte("v"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Sync(ctx, []string{"k"}) }()
	r.started(t)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, backends.ErrUnavailable) || !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Sync: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Sync ignored its context while the round was stuck")
	}
	closed := make(chan struct{})
	go func() { b.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a round was running")
	case <-time.After(50 * time.Millisecond):
	}
	r.gate <- nil // the round ends; Close returns
	<-closed
	if err := b.Sync(context.Background(), []string{"k"}); !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("Sync after Close: %v", err)
	}
	if err := b.PutNoSync(context.Background(), "k", nil); !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("PutNoSync after Close: %v", err)
	}
}

// The real fsyncs: a value's file and directory, and a failure to open one.
func TestFsyncValues(t *testing.T) {
	b := filesOnly(openT(t, 0))
	ctx := context.Background()
	for _, k := range []string{"one", "two"} {
		if err := b.PutNoSync(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if errs := b.fsyncValues([]string{"one", "two"}); len(errs) != 0 {
		t.Fatalf("fsyncValues: %v", errs)
	}
	if errs := b.fsyncValues([]string{"one", "missing"}); len(errs) != 1 || !errors.Is(errs["missing"], fs.ErrNotExist) {
		t.Fatalf("fsyncValues with a missing file: %v", errs)
	}
	if err := os.Chmod(b.pathOf("one"), 0); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		return // root opens it anyway
	}
	if errs := b.fsyncValues([]string{"one"}); errs["one"] == nil {
		t.Fatal("fsyncValues of an unreadable file reported no error")
	}
}

// keyInNewDir returns a key whose fan-out directory does not exist yet.
func keyInNewDir(t *testing.T, b *Backend, prefix string) string {
	t.Helper()
	for i := 0; i < 10000; i++ {
		k := fmt.Sprintf("%s-%d", prefix, i)
		if _, err := os.Stat(b.dirOf(k)); errors.Is(err, fs.ErrNotExist) {
			return k
		}
	}
	t.Fatal("no key in a new fan-out directory")
	return ""
}

// A value written without sync into a new fan-out directory is durable
// only once its round has also fsynced the root (the new directory's
// entry); a round whose root fsync fails loses its values, and the next
// round fsyncs the root again.
func TestRoundSyncsRootForNewDirs(t *testing.T) {
	b := filesOnly(openT(t, 0))
	ctx := context.Background()
	var mu sync.Mutex
	var synced []string
	rootErr := error(nil)
	// Durable Puts fsync directories one by one, rounds all at once.
	b.fsyncDir = func(dir string) error {
		mu.Lock()
		defer mu.Unlock()
		synced = append(synced, dir)
		if dir == b.root {
			return rootErr
		}
		return syncDir(dir)
	}
	b.syncPaths = func(paths []string) []error {
		errs := syncPaths(paths)
		mu.Lock()
		defer mu.Unlock()
		for i, p := range paths {
			synced = append(synced, p)
			if p == b.root && rootErr != nil {
				errs[i] = rootErr
			}
		}
		return errs
	}
	rootSyncs := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, d := range synced {
			if d == b.root {
				n++
			}
		}
		synced = nil
		return n
	}

	k1 := keyInNewDir(t, b, "a")
	if err := b.PutNoSync(ctx, k1, []byte("1")); err != nil {
		t.Fatal(err)
	}
	if n := rootSyncs(); n != 0 {
		t.Fatalf("PutNoSync into a new directory fsynced the root %d times; the round should", n)
	}
	if err := b.Sync(ctx, []string{k1}); err != nil {
		t.Fatal(err)
	}
	if n := rootSyncs(); n != 1 {
		t.Fatalf("round after a new directory fsynced the root %d times, want 1", n)
	}
	// The same directory again: no root fsync.
	if err := b.PutNoSync(ctx, k1, []byte("2")); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, []string{k1}); err != nil {
		t.Fatal(err)
	}
	if n := rootSyncs(); n != 0 {
		t.Fatalf("round without new directories fsynced the root %d times", n)
	}

	// The root fsync fails: the round's values are lost, and the next
	// round tries the root again (the value is written anew: a lost one
	// stays lost until then).
	mu.Lock()
	rootErr = &os.PathError{Op: "fsync", Path: b.root, Err: syscall.EIO}
	mu.Unlock()
	k2 := keyInNewDir(t, b, "b")
	if err := b.PutNoSync(ctx, k2, []byte("3")); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, []string{k2}); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Sync when the root fsync fails: %v, want EIO", err)
	}
	mu.Lock()
	rootErr = nil
	mu.Unlock()
	rootSyncs()
	if err := b.PutNoSync(ctx, k2, []byte("4")); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, []string{k2}); err != nil {
		t.Fatal(err)
	}
	if n := rootSyncs(); n != 1 {
		t.Fatalf("round after a failed root fsync fsynced the root %d times, want 1", n)
	}

	// A durable Put into a new directory fsyncs the root itself.
	k3 := keyInNewDir(t, b, "c")
	if err := b.Put(ctx, k3, []byte("5")); err != nil {
		t.Fatal(err)
	}
	if n := rootSyncs(); n != 1 {
		t.Fatalf("durable Put into a new directory fsynced the root %d times, want 1", n)
	}

	// So does a durable Put into a directory a deferred write made, before
	// any round made that directory's entry durable.
	k4 := keyInNewDir(t, b, "d")
	if err := b.PutNoSync(ctx, k4, []byte("6")); err != nil {
		t.Fatal(err)
	}
	k5 := ""
	for i := 0; k5 == ""; i++ {
		if k := fmt.Sprintf("e-%d", i); b.dirOf(k) == b.dirOf(k4) {
			k5 = k
		}
	}
	if err := b.Put(ctx, k5, []byte("7")); err != nil {
		t.Fatal(err)
	}
	if n := rootSyncs(); n != 1 {
		t.Fatalf("durable Put into a directory made by PutNoSync fsynced the root %d times, want 1", n)
	}
	if err := b.Sync(ctx, []string{k4}); err != nil {
		t.Fatal(err)
	}
	if n := rootSyncs(); n != 0 {
		t.Fatalf("round after the root was synced fsynced it again %d times", n)
	}
}
