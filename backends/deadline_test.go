package backends

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
)

// stuck is a backend that ignores nothing but ctx: every call waits for ctx
// and returns its bare error, as a careless implementation might. List
// yields keys with a pause between them.
type stuck struct {
	pause time.Duration
	keys  int
}

func (s *stuck) Name() string { return "stuck" }
func (s *stuck) wait(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}
func (s *stuck) Put(ctx context.Context, key string, value []byte) error { return s.wait(ctx) }
func (s *stuck) Get(ctx context.Context, key string) ([]byte, error)     { return nil, s.wait(ctx) }
func (s *stuck) GetRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	return nil, s.wait(ctx)
}
func (s *stuck) Stat(ctx context.Context, key string) (int64, error) { return 0, s.wait(ctx) }
func (s *stuck) Delete(ctx context.Context, key string) error        { return s.wait(ctx) }
func (s *stuck) Probe(ctx context.Context) (ProbeResult, error)      { return ProbeResult{}, s.wait(ctx) }
func (s *stuck) Close() error                                        { return nil }
func (s *stuck) List(ctx context.Context, prefix string, fn func(string, int64) error) error {
	for i := 0; i < s.keys; i++ {
		select {
		case <-time.After(s.pause):
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := fn(fmt.Sprint(i), 1); err != nil {
			return err
		}
	}
	return s.wait(ctx) // then the backend stalls
}

func TestWithDeadlineBoundsEveryCall(t *testing.T) {
	b := WithDeadline(&stuck{}, 100*time.Millisecond)
	ctx := context.Background()
	calls := map[string]func() error{
		"Put":      func() error { return b.Put(ctx, "k", nil) },
		"Get":      func() error { _, err := b.Get(ctx, "k"); return err },
		"GetRange": func() error { _, err := b.GetRange(ctx, "k", 0, 1); return err },
		"Stat":     func() error { _, err := b.Stat(ctx, "k"); return err },
		"Delete":   func() error { return b.Delete(ctx, "k") },
		"Probe":    func() error { _, err := b.Probe(ctx); return err },
		"List":     func() error { return b.List(ctx, "", func(string, int64) error { return nil }) },
	}
	for name, call := range calls {
		start := time.Now()
		err := call()
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s took %v", name, took)
		}
		var be *Error
		if !errors.Is(err, ErrUnavailable) || !errors.As(err, &be) || be.Backend != "stuck" {
			t.Errorf("%s past its deadline: %v, want a *Error of kind ErrUnavailable", name, err)
		}
	}
	if b.Name() != "stuck" || b.(interface{ Unwrap() Backend }).Unwrap() == nil {
		t.Error("the decorator hides the backend's name or itself")
	}
}

// A long listing that keeps producing keys is not cut off; one whose
// backend stops producing is.
func TestWithDeadlineListIsIdleBound(t *testing.T) {
	// The walk takes about 30 * (10ms + 10ms), well past the 400ms bound,
	// while no single wait comes near it.
	b := WithDeadline(&stuck{pause: 10 * time.Millisecond, keys: 30}, 400*time.Millisecond)
	n := 0
	start := time.Now()
	err := b.List(context.Background(), "", func(string, int64) error {
		n++
		time.Sleep(10 * time.Millisecond) // the caller's own work does not count
		return nil
	})
	if n != 30 {
		t.Fatalf("List delivered %d keys before being cut, want all 30 (walk took %v)", n, time.Since(start))
	}
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("List whose backend stalled: %v, want ErrUnavailable and context.DeadlineExceeded", err)
	}
}

// lateTimer is a context whose deadline has passed but whose timer has not
// fired yet: Err is still nil, as it is for a moment on a loaded machine.
type lateTimer struct {
	context.Context
	dl time.Time
}

func (c lateTimer) Deadline() (time.Time, bool) { return c.dl, true }

// timesOut fails every call at once with what a socket deadline taken from
// ctx gives: a bare timeout, not an *Error.
type timesOut struct{ *stuck }

func (timesOut) err() error { return fmt.Errorf("read tcp 127.0.0.1:1: %w", os.ErrDeadlineExceeded) }
func (b timesOut) Get(ctx context.Context, key string) ([]byte, error) {
	return nil, b.err()
}
func (b timesOut) Put(ctx context.Context, key string, value []byte) error { return b.err() }

// A call that fails with a timeout after its deadline passed, before ctx's
// timer fired, is still reported as ErrUnavailable and DeadlineExceeded.
func TestWithDeadlineErrorBeforeCtxTimer(t *testing.T) {
	b := WithDeadline(timesOut{&stuck{}}, time.Minute)
	ctx := lateTimer{Context: context.Background(), dl: time.Now().Add(-time.Millisecond)}
	for name, call := range map[string]func() error{
		"Get": func() error { _, err := b.Get(ctx, "k"); return err },
		"Put": func() error { return b.Put(ctx, "k", nil) },
	} {
		err := call()
		var be *Error
		if !errors.Is(err, ErrUnavailable) || !errors.As(err, &be) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s past its deadline, ctx's timer not fired: %v, want a *Error of kind ErrUnavailable and DeadlineExceeded", name, err)
		}
	}
	// Before the deadline the same error is passed on as it is.
	ctx.dl = time.Now().Add(time.Hour)
	if _, err := b.Get(ctx, "k"); errors.Is(err, ErrUnavailable) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Get before the deadline: %v, want the backend's own error", err)
	}
}

func TestWithDeadlineDefault(t *testing.T) {
	if WithDeadline(&stuck{}, 0).(*deadlineBackend).d != DefaultCallTimeout {
		t.Fatal("d <= 0 does not mean the default")
	}
}

func TestCheckKey(t *testing.T) {
	good := []string{"a", "shards/0123.4", ".", "..", "a/b/c", "A-Z_a.z/0-9"}
	for _, k := range good {
		if err := CheckKey(k); err != nil {
			t.Errorf("CheckKey(%q): %v", k, err)
		}
	}
	long := make([]byte, MaxKeyLen+1)
	for i := range long {
		long[i] = 'k'
	}
	for _, k := range []string{"", string(long), "a b", "a:b", "a\x00", "é", "a%b", "a+b"} {
		if err := CheckKey(k); err == nil {
			t.Errorf("CheckKey(%q) accepted a bad key", k)
		}
	}
	err := InvalidKey("b", "put", string(long), errors.New("too long"))
	var be *Error
	if !errors.Is(err, ErrInvalidKey) || !errors.As(err, &be) || len(be.Key) > 40 {
		t.Errorf("InvalidKey: %v", err)
	}
}
