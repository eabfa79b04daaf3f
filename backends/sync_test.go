package backends

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// recorder is a backend that records its calls; with syncer set it is
// wrapped as a Syncer.
type recorder struct {
	stuck
	mu    sync.Mutex
	calls []string
	keys  []string // keys of the last Sync
	err   error    // returned by Sync
}

func (r *recorder) note(call string) {
	r.mu.Lock()
	r.calls = append(r.calls, call)
	r.mu.Unlock()
}

func (r *recorder) Put(ctx context.Context, key string, value []byte) error {
	r.note("put " + key)
	return nil
}

type syncRecorder struct{ *recorder }

func (r syncRecorder) PutNoSync(ctx context.Context, key string, value []byte) error {
	r.note("putnosync " + key)
	return nil
}

func (r syncRecorder) Sync(ctx context.Context, keys []string) error {
	r.note("sync")
	r.mu.Lock()
	r.keys = slices.Clone(keys)
	r.mu.Unlock()
	if _, ok := ctx.Deadline(); !ok {
		return errors.New("sync called without a deadline")
	}
	return r.err
}

func TestSyncHelpersFallBackToPut(t *testing.T) {
	ctx := context.Background()
	r := &recorder{}
	if err := PutNoSync(ctx, r, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := Sync(ctx, r, []string{"k"}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.calls, []string{"put k"}) {
		t.Fatalf("a backend without the ability saw %v, want one durable put", r.calls)
	}
}

func TestDeadlinePassesSyncOn(t *testing.T) {
	ctx := context.Background()
	r := &recorder{}
	b := WithDeadline(syncRecorder{r}, time.Minute)
	if _, ok := b.(Syncer); !ok {
		t.Fatal("the deadline decorator hides the Syncer ability")
	}
	if err := PutNoSync(ctx, b, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := Sync(ctx, b, []string{"k", "j"}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.calls, []string{"putnosync k", "sync"}) || !slices.Equal(r.keys, []string{"k", "j"}) {
		t.Fatalf("calls %v, sync keys %v", r.calls, r.keys)
	}

	// An error that is not an *Error after the deadline passed becomes
	// ErrUnavailable, as for every other call.
	r.err = context.DeadlineExceeded
	short := WithDeadline(syncRecorder{r}, time.Nanosecond)
	time.Sleep(time.Millisecond)
	if err := Sync(ctx, short, []string{"k"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Sync past its deadline: %v, want ErrUnavailable", err)
	}

	// Over a backend without the ability, the decorator's PutNoSync is a
	// durable Put and its Sync does nothing.
	plain := &recorder{}
	b = WithDeadline(plain, time.Minute)
	if err := PutNoSync(ctx, b, "k", nil); err != nil {
		t.Fatal(err)
	}
	if err := Sync(ctx, b, []string{"k"}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(plain.calls, []string{"put k"}) {
		t.Fatalf("calls %v, want one durable put", plain.calls)
	}
}
