package backends

import (
	"context"
	"errors"
	"sync"
	"time"
)

// DefaultCallTimeout bounds one backend call when nothing else is configured.
// 0-db clients in the field (zstor) use the same 30 s.
const DefaultCallTimeout = 30 * time.Second

// WithDeadline returns b with every call bounded by d (d <= 0 means
// DefaultCallTimeout), on top of whatever deadline the caller's ctx carries.
//
// List is the exception that proves the rule: a walk over millions of keys
// may rightly take longer than d, so for List d bounds the wait for the next
// key (the timer restarts each time fn is called and returns), not the walk.
//
// A call that ends after its deadline with an error that is not already an
// *Error is reported as ErrUnavailable, so callers can always branch on kind.
func WithDeadline(b Backend, d time.Duration) Backend {
	if d <= 0 {
		d = DefaultCallTimeout
	}
	return &deadlineBackend{b: b, d: d}
}

type deadlineBackend struct {
	b Backend
	d time.Duration
}

// Unwrap returns the decorated backend, so optional interfaces of the inner
// implementation stay reachable.
func (w *deadlineBackend) Unwrap() Backend { return w.b }

func (w *deadlineBackend) Name() string { return w.b.Name() }

func (w *deadlineBackend) fix(ctx context.Context, op, key string, err error) error {
	if err == nil {
		return nil
	}
	cerr := Ended(ctx)
	if cerr == nil {
		return err
	}
	var be *Error
	if errors.As(err, &be) {
		return err
	}
	return Wrap(w.b.Name(), op, key, ErrUnavailable, errors.Join(cerr, err))
}

// Ended says why ctx is over, or nil. A deadline that has passed counts
// even while ctx's own timer has not fired yet: a call bounded by a socket
// deadline taken from ctx can fail a moment before ctx.Err() turns
// non-nil, and on a loaded machine that moment is long. List's idle timer
// cancels with DeadlineExceeded as the cause; that is what it reports.
func Ended(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			return context.DeadlineExceeded
		}
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

func (w *deadlineBackend) Put(ctx context.Context, key string, value []byte) error {
	ctx, cancel := context.WithTimeout(ctx, w.d)
	defer cancel()
	return w.fix(ctx, "put", key, w.b.Put(ctx, key, value))
}

func (w *deadlineBackend) Get(ctx context.Context, key string) ([]byte, error) {
	return w.GetBuf(ctx, key, nil) // bufget.go: with alloc nil, the inner Get
}

func (w *deadlineBackend) GetRange(ctx context.Context, key string, off, length int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, w.d)
	defer cancel()
	v, err := w.b.GetRange(ctx, key, off, length)
	return v, w.fix(ctx, "get", key, err)
}

func (w *deadlineBackend) Stat(ctx context.Context, key string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, w.d)
	defer cancel()
	n, err := w.b.Stat(ctx, key)
	return n, w.fix(ctx, "stat", key, err)
}

func (w *deadlineBackend) Delete(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, w.d)
	defer cancel()
	return w.fix(ctx, "delete", key, w.b.Delete(ctx, key))
}

func (w *deadlineBackend) List(ctx context.Context, prefix string, fn func(key string, size int64) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The timer fires only while the walk waits on the backend; it is
	// stopped while fn runs, because the caller's own work is not the
	// backend's lag.
	var mu sync.Mutex
	timer := time.AfterFunc(w.d, func() { cancel(context.DeadlineExceeded) })
	defer timer.Stop()
	wrapped := func(key string, size int64) error {
		mu.Lock()
		timer.Stop()
		mu.Unlock()
		err := fn(key, size)
		mu.Lock()
		timer.Reset(w.d)
		mu.Unlock()
		return err
	}
	return w.fix(ctx, "list", prefix, w.b.List(ctx, prefix, wrapped))
}

func (w *deadlineBackend) Probe(ctx context.Context) (ProbeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, w.d)
	defer cancel()
	r, err := w.b.Probe(ctx)
	return r, w.fix(ctx, "probe", "", err)
}

func (w *deadlineBackend) Close() error { return w.b.Close() }
