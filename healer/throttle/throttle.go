package throttle

import (
	"context"
	"sync"
	"time"
)

// slice bounds one sleep, so waiters notice a rate change quickly.
const slice = 100 * time.Millisecond

// burst is how far the limiter lets idle time accumulate as credit.
const burst = 100 * time.Millisecond

// Limiter spaces out byte counts to a rate. The zero rate means unlimited.
// It is safe for concurrent use.
type Limiter struct {
	mu    sync.Mutex
	rate  int64     // bytes per second; 0 = unlimited
	next  time.Time // when the bytes already granted are paid for
	epoch uint64    // bumped by SetRate; waiters re-reserve on change
	now   func() time.Time
	sleep func(context.Context, time.Duration) error
}

// New returns a limiter at bytesPerSec (0 or less = unlimited).
func New(bytesPerSec int64) *Limiter {
	return &Limiter{rate: max(bytesPerSec, 0), now: time.Now, sleep: sleepCtx}
}

// Rate is the current cap in bytes per second (0 = unlimited).
func (l *Limiter) Rate() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rate
}

// SetRate changes the cap. Callers already waiting re-pace themselves at
// the new rate within one slice (100 ms).
func (l *Limiter) SetRate(bytesPerSec int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rate = max(bytesPerSec, 0)
	l.next = time.Time{}
	l.epoch++
}

// Wait blocks until n more bytes fit under the cap, or ctx ends (its error
// is returned). n may exceed a second's worth; it is then paid for over
// the time it takes at the rate.
func (l *Limiter) Wait(ctx context.Context, n int) error {
	if n <= 0 {
		return ctx.Err()
	}
	for {
		l.mu.Lock()
		if l.rate == 0 {
			l.mu.Unlock()
			return ctx.Err()
		}
		now := l.now()
		start := l.next
		if floor := now.Add(-burst); start.Before(floor) {
			start = floor
		}
		cost := time.Duration(float64(n) / float64(l.rate) * float64(time.Second))
		l.next = start.Add(cost)
		until := l.next
		epoch := l.epoch
		l.mu.Unlock()

		for {
			d := until.Sub(l.now())
			if d <= 0 {
				return ctx.Err()
			}
			if err := l.sleep(ctx, min(d, slice)); err != nil {
				return err
			}
			l.mu.Lock()
			changed := l.epoch != epoch
			l.mu.Unlock()
			if changed {
				break // reserve again at the new rate
			}
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
