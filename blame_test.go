package healstore

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
)

// hangPut holds every Put until its ctx ends, as a slow or hung backend
// does, and says so on entered (if set) when it begins.
type hangPut struct {
	backends.Backend
	entered chan<- string
}

func (b hangPut) Put(ctx context.Context, key string, v []byte) error {
	if b.entered != nil {
		b.entered <- b.Name()
	}
	<-ctx.Done()
	return backends.Wrap(b.Name(), "put", key, backends.ErrUnavailable, ctx.Err())
}

// blameLog records the backends the store's data path reports (the feed
// the healer's monitor hears) and reads each one's failing-lately mark.
type blameLog struct {
	mu     sync.Mutex
	blamed []string
}

func newBlameLog(s *Store) *blameLog {
	l := &blameLog{}
	s.OnBackendError(func(name string, err error) {
		l.mu.Lock()
		l.blamed = append(l.blamed, name)
		l.mu.Unlock()
	})
	return l
}

func (l *blameLog) names() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.blamed...)
}

// failing lists the backends the store keeps out of primary placement
// because a data-path call to them failed lately.
func failing(s *Store) []string {
	var out []string
	for _, h := range s.handleList() {
		h.mu.Lock()
		if !h.failedAt.IsZero() {
			out = append(out, h.name)
		}
		h.mu.Unlock()
	}
	return out
}

// A Put that its caller's ctx cuts short while the shards are being
// written (a user's short deadline, a mount's operation timeout, a
// cancel) blames none of the backends it was writing to: they are kept in
// placement and not reported to the monitor. Reported, every healthy
// backend of the stripe left primary placement for failedFor and the
// healer probed them all, at each such Put.
func TestPutCutShortByCallerBlamesNoBackend(t *testing.T) {
	for _, how := range []string{"cancel", "deadline"} {
		t.Run(how, func(t *testing.T) {
			s := newTestStore(t, testOpts{edit: func(c *Config) { c.InlineMaxSize = 0 }})
			entered := make(chan string, 64)
			for _, h := range s.handleList() {
				setBackend(t, s, h.name, func(b backends.Backend) backends.Backend { return hangPut{b, entered} })
			}
			log := newBlameLog(s)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if how == "deadline" {
				ctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
			}
			done := make(chan error, 1)
			go func() {
				_, err := s.Put(ctx, "x", bytes.NewReader(make([]byte, 100<<10)))
				done <- err
			}()
			<-entered // a shard is on its way to a backend
			if how == "cancel" {
				cancel()
			}
			err := <-done
			if !errors.Is(err, ctx.Err()) || ctx.Err() == nil {
				t.Fatalf("Put: %v; want its ctx's error", err)
			}
			if got := log.names(); len(got) != 0 {
				t.Errorf("a Put cut short by its caller (%s) reported backends %v", how, got)
			}
			if got := failing(s); len(got) != 0 {
				t.Errorf("a Put cut short by its caller (%s) kept backends %v out of placement", how, got)
			}
		})
	}
}

// A backend that outlasts the store's own per-call deadline while the
// caller still waits is reported and kept out of placement: that one is
// the backend's fault.
func TestPutReportsBackendPastItsCallDeadline(t *testing.T) {
	s := newTestStore(t, testOpts{edit: func(c *Config) { c.InlineMaxSize = 0 }})
	setBackend(t, s, "b2", func(b backends.Backend) backends.Backend {
		return backends.WithDeadline(hangPut{Backend: b}, 100*time.Millisecond)
	})
	log := newBlameLog(s)
	if _, err := s.Put(context.Background(), "x", bytes.NewReader(make([]byte, 100<<10))); err != nil {
		t.Fatal(err)
	}
	for _, got := range [][]string{log.names(), failing(s)} {
		for _, name := range got {
			if name != "b2" {
				t.Fatalf("blamed %v; want only the hung b2", got)
			}
		}
		if len(got) == 0 {
			t.Fatal("the hung b2 was not blamed")
		}
	}
}

// lateCtx turns past its deadline when flipped while its Err stays nil:
// the moment between a deadline passing and ctx's timer firing, in which
// a call bounded by a socket deadline taken from ctx fails already (see
// backends.Ended).
type lateCtx struct {
	context.Context
	late *atomic.Bool
}

func (c lateCtx) Deadline() (time.Time, bool) {
	if c.late.Load() {
		return time.Now().Add(-time.Second), true
	}
	return c.Context.Deadline()
}

// lateSync passes PutNoSync on and fails Sync the way a backend whose
// socket deadline came from the caller's ctx does once that deadline has
// passed.
type lateSync struct {
	backends.Backend
	late *atomic.Bool
}

func (b lateSync) PutNoSync(ctx context.Context, key string, v []byte) error {
	return backends.PutNoSync(ctx, b.Backend, key, v)
}

func (b lateSync) Sync(ctx context.Context, keys []string) error {
	b.late.Store(true)
	return backends.Wrap(b.Name(), "sync", "", backends.ErrUnavailable, backends.Ended(ctx))
}

// A shard Sync that fails because the caller's deadline passed blames no
// backend, also in the moment before ctx.Err() says so.
func TestPutSyncPastCallerDeadlineBlamesNoBackend(t *testing.T) {
	s := newTestStore(t, testOpts{edit: func(c *Config) { c.InlineMaxSize = 0 }})
	late := &atomic.Bool{}
	for _, h := range s.handleList() {
		setBackend(t, s, h.name, func(b backends.Backend) backends.Backend { return lateSync{b, late} })
	}
	log := newBlameLog(s)
	ctx := lateCtx{context.Background(), late}
	_, err := s.Put(ctx, "x", bytes.NewReader(make([]byte, 100<<10)))
	if !late.Load() {
		t.Fatalf("Put never synced: %v", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Put: %v; want context.DeadlineExceeded", err)
	}
	if got := log.names(); len(got) != 0 {
		t.Errorf("a sync past the caller's deadline reported backends %v", got)
	}
	if got := failing(s); len(got) != 0 {
		t.Errorf("a sync past the caller's deadline kept backends %v out of placement", got)
	}
}
