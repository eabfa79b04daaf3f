package local

import (
	"context"
	"errors"
	"os"
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
	backendtest.Run(t, backendtest.Factory{
		Open:          func(t *testing.T) backends.Backend { return deferredView{openT(t, 0)} },
		OpenLimited:   func(t *testing.T, limit int64) backends.Backend { return deferredView{openT(t, limit)} },
		MaxValueSize:  MaxValueSize,
		CapacityKnown: true,
	})
}

// rounds replaces b's syncfs with one that counts rounds and, when gate is
// not nil, waits for a value on it before answering with what it receives.
type rounds struct {
	mu   sync.Mutex
	n    int
	gate chan error
	in   chan struct{} // a round has started
}

func hookRounds(b *Backend, gated bool) *rounds {
	r := &rounds{in: make(chan struct{}, 100)}
	if gated {
		r.gate = make(chan error)
	}
	b.deferred.syncfs = func(f *os.File) error {
		r.mu.Lock()
		r.n++
		r.mu.Unlock()
		r.in <- struct{}{}
		if r.gate != nil {
			return <-r.gate
		}
		return syncfs(f)
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
	return r.n
}

func (b *Backend) pendingLen() int {
	b.deferred.mu.Lock()
	defer b.deferred.mu.Unlock()
	return len(b.deferred.pending)
}

func TestSyncRounds(t *testing.T) {
	b := openT(t, 0)
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
	if r.count() != 1 || b.pendingLen() != 0 {
		t.Fatalf("after one Sync: %d rounds, %d values pending; want 1 and 0", r.count(), b.pendingLen())
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
	if r.count() != 2 {
		t.Fatalf("%d rounds, want 2", r.count())
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
	if r.count() != 2 {
		t.Fatalf("%d rounds, want 2", r.count())
	}
}

// A failed round loses every value not yet durable, whoever wrote it; a
// value written afterwards syncs normally.
func TestFailedRoundLosesPendingValues(t *testing.T) {
	b := openT(t, 0)
	r := hookRounds(b, true)
	ctx := context.Background()
	b.PutNoSync(ctx, "x", []byte("1"))
	b.PutNoSync(ctx, "y", []byte("2"))
	done := make(chan error, 1)
	go func() { done <- b.Sync(ctx, []string{"x"}) }()
	r.started(t)
	r.gate <- &os.PathError{Op: "syncfs", Path: b.Path(), Err: syscall.EIO}
	err := <-done
	if !errors.Is(err, backends.ErrUnavailable) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Sync after a failed round: %v, want ErrUnavailable wrapping EIO", err)
	}
	// "y" was pending too: the error may have been its write-back.
	if err := b.Sync(ctx, []string{"y"}); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Sync of another pending value: %v, want the round's error", err)
	}
	if r.count() != 1 {
		t.Fatalf("%d rounds, want 1 (lost values need no round)", r.count())
	}
	// Writing y again gives it a new chance.
	b.PutNoSync(ctx, "y", []byte("3"))
	go func() { done <- b.Sync(ctx, []string{"y"}) }()
	r.started(t)
	r.gate <- nil
	if err := <-done; err != nil {
		t.Fatalf("Sync of a value rewritten after the failure: %v", err)
	}
	// Deleting x forgets it.
	if err := b.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, []string{"x"}); err != nil {
		t.Fatalf("Sync of a deleted key: %v", err)
	}
}

// A write still in progress when a round fails counts as lost: its bytes
// may have been the ones the disk failed to write.
func TestFailedRoundLosesWritesInProgress(t *testing.T) {
	b := openT(t, 0)
	b.deferred.register("w") // as PutNoSync does before writing
	b.deferred.syncfs = func(*os.File) error { return syscall.EIO }
	b.PutNoSync(context.Background(), "other", []byte("1"))
	if err := b.Sync(context.Background(), []string{"other"}); err == nil {
		t.Fatal("Sync succeeded through a failing round")
	}
	b.deferred.finished("w", true)
	if err := b.Sync(context.Background(), []string{"w"}); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Sync of a write in progress during the failure: %v, want EIO", err)
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
	r.gate <- nil // the round ends on its own; Close waits for it
	b.Close()
	if err := b.Sync(context.Background(), []string{"k"}); !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("Sync after Close: %v", err)
	}
	if err := b.PutNoSync(context.Background(), "k", nil); !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("PutNoSync after Close: %v", err)
	}
}

// The real system call, through the held directory.
func TestSyncfsRuns(t *testing.T) {
	b := openT(t, 0)
	ctx := context.Background()
	if err := b.PutNoSync(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, []string{"k"}); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := syncfs(b.deferred.root); err == nil {
		t.Fatal("syncfs through a closed directory succeeded")
	}
}
