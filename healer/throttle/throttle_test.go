package throttle

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeClock advances only when the limiter sleeps.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
	return ctx.Err()
}

func fake(rate int64) (*Limiter, *fakeClock) {
	c := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := New(rate)
	l.now, l.sleep = c.now, c.sleep
	return l, c
}

func TestPacesToRate(t *testing.T) {
	ctx := context.Background()
	l, c := fake(1000)
	start := c.now()
	for range 50 {
		if err := l.Wait(ctx, 100); err != nil {
			t.Fatal(err)
		}
	}
	// 5000 bytes at 1000 B/s is 5 s, less at most the idle credit.
	el := c.now().Sub(start)
	if el < 5*time.Second-burst || el > 5*time.Second {
		t.Fatalf("5000 bytes took %v at 1000 B/s", el)
	}
	// A request larger than a second's worth is paid over its time.
	start = c.now()
	if err := l.Wait(ctx, 3000); err != nil {
		t.Fatal(err)
	}
	if el := c.now().Sub(start); el < 3*time.Second-burst || el > 3*time.Second {
		t.Fatalf("3000 bytes took %v", el)
	}
}

func TestIdleCreditIsBounded(t *testing.T) {
	l, c := fake(1000)
	c.t = c.t.Add(time.Hour) // a long idle time must not buy an hour of burst
	start := c.now()
	for range 10 {
		_ = l.Wait(context.Background(), 1000)
	}
	if el := c.now().Sub(start); el < 10*time.Second-burst {
		t.Fatalf("after idling, 10000 bytes took only %v", el)
	}
}

func TestUnlimited(t *testing.T) {
	l, c := fake(0)
	start := c.now()
	for range 100 {
		if err := l.Wait(context.Background(), 1<<30); err != nil {
			t.Fatal(err)
		}
	}
	if c.now() != start || l.Rate() != 0 {
		t.Fatal("unlimited limiter slept")
	}
	if New(-5).Rate() != 0 {
		t.Fatal("negative rate not treated as unlimited")
	}
}

func TestRateChangeReachesWaiters(t *testing.T) {
	for _, newRate := range []int64{0, 1 << 30} {
		l := New(10) // 1 MB would take a day
		done := make(chan error, 1)
		go func() { done <- l.Wait(context.Background(), 1<<20) }()
		time.Sleep(50 * time.Millisecond)
		l.SetRate(newRate)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("waiter did not notice SetRate(%d)", newRate)
		}
		if l.Rate() != newRate {
			t.Fatalf("Rate() = %d", l.Rate())
		}
	}
}

func TestContextEndsWait(t *testing.T) {
	l := New(1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.Wait(ctx, 1<<20); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
}
