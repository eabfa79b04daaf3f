package faulty

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/healstore/healstore/backends"
)

// Window is a scheduled offline period, measured from New.
type Window struct {
	From, To time.Duration
}

// Config sets the faults. The zero value injects nothing.
type Config struct {
	// Seed of the random stream (print it in tests).
	Seed uint64
	// Every call first waits a uniform random time in
	// [LatencyMin, LatencyMax] (honouring ctx).
	LatencyMin, LatencyMax time.Duration
	// FailRate is the probability that a call fails with ErrUnavailable
	// without reaching the backend.
	FailRate float64
	// LossRate is the probability that a successful Put is lost: the value
	// then reads as missing (ErrNotFound) and List leaves it out, until it
	// is written again.
	LossRate float64
	// FlipRate is the probability that a Get or GetRange returns its value
	// with one bit flipped.
	FlipRate float64
	// Offline lists windows during which every call fails with
	// ErrUnavailable, as if the node were powered off.
	Offline []Window
}

// Stats counts what was injected.
type Stats struct {
	Calls, Failed, Offline, Lost, Flipped int64
}

// Backend is a faulty view of another backend. Safe for concurrent use.
type Backend struct {
	inner backends.Backend
	start time.Time

	mu        sync.Mutex
	cfg       Config
	rnd       *rand.Rand
	offline   bool
	lost      map[string]bool
	corrupted map[string]bool
	stats     Stats
}

var _ backends.Backend = (*Backend)(nil)

// New wraps inner with the faults of cfg.
func New(inner backends.Backend, cfg Config) *Backend {
	return &Backend{
		inner:     inner,
		start:     time.Now(),
		cfg:       cfg,
		rnd:       rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		lost:      map[string]bool{},
		corrupted: map[string]bool{},
	}
}

// Unwrap returns the wrapped backend.
func (b *Backend) Unwrap() backends.Backend { return b.inner }

// SetConfig replaces the rates and windows (the random stream and the
// lost/corrupted keys are kept; windows are still measured from New).
func (b *Backend) SetConfig(cfg Config) {
	b.mu.Lock()
	b.cfg = cfg
	b.mu.Unlock()
}

// Offline makes every call fail with ErrUnavailable until Online.
func (b *Backend) Offline() {
	b.mu.Lock()
	b.offline = true
	b.mu.Unlock()
}

// Online ends an Offline.
func (b *Backend) Online() {
	b.mu.Lock()
	b.offline = false
	b.mu.Unlock()
}

// Lose makes key read as missing until it is written again; the wrapped
// backend keeps the value, as a disk keeps a block it can no longer find.
func (b *Backend) Lose(key string) {
	b.mu.Lock()
	b.lost[key] = true
	b.stats.Lost++
	b.mu.Unlock()
}

// Corrupt makes every Get of key return it with one bit flipped, until it
// is written again.
func (b *Backend) Corrupt(key string) {
	b.mu.Lock()
	b.corrupted[key] = true
	b.mu.Unlock()
}

// Stats returns the counts so far.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// Name implements backends.Backend.
func (b *Backend) Name() string { return b.inner.Name() }

// enter applies latency, offline state and random failure to one call.
func (b *Backend) enter(ctx context.Context, op, key string) error {
	b.mu.Lock()
	b.stats.Calls++
	cfg := b.cfg
	var wait time.Duration
	if cfg.LatencyMax > 0 {
		wait = cfg.LatencyMin
		if span := cfg.LatencyMax - cfg.LatencyMin; span > 0 {
			wait += time.Duration(b.rnd.Int64N(int64(span) + 1))
		}
	}
	fail := cfg.FailRate > 0 && b.rnd.Float64() < cfg.FailRate
	b.mu.Unlock()
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return backends.Wrap(b.Name(), op, key, backends.ErrUnavailable, ctx.Err())
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.offline || b.inWindow(cfg.Offline) {
		b.stats.Offline++
		return backends.Errorf(b.Name(), op, key, backends.ErrUnavailable, "offline (injected fault)")
	}
	if fail {
		b.stats.Failed++
		return backends.Errorf(b.Name(), op, key, backends.ErrUnavailable, "failed (injected fault)")
	}
	return nil
}

func (b *Backend) inWindow(ws []Window) bool {
	since := time.Since(b.start)
	for _, w := range ws {
		if since >= w.From && since < w.To {
			return true
		}
	}
	return false
}

func (b *Backend) isLost(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lost[key]
}

func (b *Backend) notFound(op, key string) error {
	return backends.Errorf(b.Name(), op, key, backends.ErrNotFound, "value lost (injected fault)")
}

// maybeFlip returns v, or a copy with one bit flipped.
func (b *Backend) maybeFlip(key string, v []byte) []byte {
	if len(v) == 0 {
		return v
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.corrupted[key] && !(b.cfg.FlipRate > 0 && b.rnd.Float64() < b.cfg.FlipRate) {
		return v
	}
	out := append([]byte(nil), v...)
	bit := b.rnd.IntN(len(out) * 8)
	out[bit/8] ^= 1 << (bit % 8)
	b.stats.Flipped++
	return out
}

// Put implements backends.Backend.
func (b *Backend) Put(ctx context.Context, key string, value []byte) error {
	if err := b.enter(ctx, "put", key); err != nil {
		return err
	}
	if err := b.inner.Put(ctx, key, value); err != nil {
		return err
	}
	b.mu.Lock()
	delete(b.lost, key)
	delete(b.corrupted, key)
	if b.cfg.LossRate > 0 && b.rnd.Float64() < b.cfg.LossRate {
		b.lost[key] = true
		b.stats.Lost++
	}
	b.mu.Unlock()
	return nil
}

// Get implements backends.Backend.
func (b *Backend) Get(ctx context.Context, key string) ([]byte, error) {
	if err := b.enter(ctx, "get", key); err != nil {
		return nil, err
	}
	if b.isLost(key) {
		return nil, b.notFound("get", key)
	}
	v, err := b.inner.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	return b.maybeFlip(key, v), nil
}

// GetRange implements backends.Backend.
func (b *Backend) GetRange(ctx context.Context, key string, off, length int64) ([]byte, error) {
	if err := b.enter(ctx, "get", key); err != nil {
		return nil, err
	}
	if b.isLost(key) {
		return nil, b.notFound("get", key)
	}
	v, err := b.inner.GetRange(ctx, key, off, length)
	if err != nil {
		return nil, err
	}
	return b.maybeFlip(key, v), nil
}

// Stat implements backends.Backend.
func (b *Backend) Stat(ctx context.Context, key string) (int64, error) {
	if err := b.enter(ctx, "stat", key); err != nil {
		return 0, err
	}
	if b.isLost(key) {
		return 0, b.notFound("stat", key)
	}
	return b.inner.Stat(ctx, key)
}

// Delete implements backends.Backend.
func (b *Backend) Delete(ctx context.Context, key string) error {
	if err := b.enter(ctx, "delete", key); err != nil {
		return err
	}
	if err := b.inner.Delete(ctx, key); err != nil {
		return err
	}
	b.mu.Lock()
	delete(b.lost, key)
	delete(b.corrupted, key)
	b.mu.Unlock()
	return nil
}

// List implements backends.Backend; lost values are left out.
func (b *Backend) List(ctx context.Context, prefix string, fn func(key string, size int64) error) error {
	if err := b.enter(ctx, "list", prefix); err != nil {
		return err
	}
	return b.inner.List(ctx, prefix, func(key string, size int64) error {
		if b.isLost(key) {
			return nil
		}
		return fn(key, size)
	})
}

// Probe implements backends.Backend.
func (b *Backend) Probe(ctx context.Context) (backends.ProbeResult, error) {
	start := time.Now()
	if err := b.enter(ctx, "probe", ""); err != nil {
		return backends.ProbeResult{}, err
	}
	r, err := b.inner.Probe(ctx)
	if err == nil {
		r.Latency = time.Since(start) // the injected latency is part of what a caller sees
	}
	return r, err
}

// Close implements backends.Backend.
func (b *Backend) Close() error { return b.inner.Close() }
