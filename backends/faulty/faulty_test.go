package faulty

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/bits"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/backendtest"
	"github.com/healstore/healstore/backends/local"
)

func inner(t *testing.T, quota int64) backends.Backend {
	t.Helper()
	b, err := local.Open(backends.Spec{Name: "inner", Kind: backends.KindLocal, Path: t.TempDir(), Quota: quota})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// With every fault off the decorator is transparent.
func TestConformanceFaultsOff(t *testing.T) {
	backendtest.Run(t, backendtest.Factory{
		Open:          func(t *testing.T) backends.Backend { return New(inner(t, 0), Config{}) },
		OpenLimited:   func(t *testing.T, limit int64) backends.Backend { return New(inner(t, limit), Config{}) },
		MaxValueSize:  local.MaxValueSize,
		CapacityKnown: true,
	})
}

func seedT(t *testing.T) uint64 { return backendtest.Seed(t) }

func TestFailRateIsSeeded(t *testing.T) {
	seed := seedT(t)
	run := func() []bool {
		b := New(inner(t, 0), Config{Seed: seed, FailRate: 0.3})
		var out []bool
		for i := 0; i < 200; i++ {
			_, err := b.Stat(context.Background(), "missing")
			if !errors.Is(err, backends.ErrUnavailable) && !errors.Is(err, backends.ErrNotFound) {
				t.Fatalf("injected failure of the wrong kind: %v", err)
			}
			out = append(out, errors.Is(err, backends.ErrUnavailable))
		}
		return out
	}
	a, b := run(), run()
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("the same seed gave different failures")
	}
	n := 0
	for _, f := range a {
		if f {
			n++
		}
	}
	if n < 30 || n > 90 {
		t.Fatalf("FailRate 0.3 failed %d of 200 calls", n)
	}
}

func TestOffline(t *testing.T) {
	b := New(inner(t, 0), Config{})
	ctx := context.Background()
	if err := b.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	b.Offline()
	for name, err := range map[string]error{
		"Put":    b.Put(ctx, "k", []byte("w")),
		"Delete": b.Delete(ctx, "k"),
		"List":   b.List(ctx, "", func(string, int64) error { return nil }),
	} {
		if !errors.Is(err, backends.ErrUnavailable) {
			t.Fatalf("%s while offline: %v", name, err)
		}
	}
	if _, err := b.Probe(ctx); !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("Probe while offline: %v", err)
	}
	b.Online()
	if got, err := b.Get(ctx, "k"); err != nil || string(got) != "v" {
		t.Fatalf("Get back online: %q %v (the offline Put must not have landed)", got, err)
	}
	if s := b.Stats(); s.Offline != 4 {
		t.Fatalf("Stats after 4 offline calls: %+v", s)
	}
}

func TestScheduledWindow(t *testing.T) {
	ctx := context.Background()
	now := New(inner(t, 0), Config{Offline: []Window{{From: 0, To: time.Hour}}})
	if _, err := now.Probe(ctx); !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("Probe inside the window: %v", err)
	}
	later := New(inner(t, 0), Config{Offline: []Window{{From: time.Hour, To: 2 * time.Hour}}})
	if _, err := later.Probe(ctx); err != nil {
		t.Fatalf("Probe before the window: %v", err)
	}
	past := New(inner(t, 0), Config{Offline: []Window{{From: 0, To: time.Millisecond}}})
	time.Sleep(5 * time.Millisecond)
	if _, err := past.Probe(ctx); err != nil {
		t.Fatalf("Probe after the window: %v", err)
	}
}

func TestLoss(t *testing.T) {
	b := New(inner(t, 0), Config{})
	ctx := context.Background()
	for _, k := range []string{"a", "b"} {
		if err := b.Put(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	b.Lose("a")
	if _, err := b.Get(ctx, "a"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Get of a lost value: %v", err)
	}
	if _, err := b.Stat(ctx, "a"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Stat of a lost value: %v", err)
	}
	var keys []string
	b.List(ctx, "", func(k string, _ int64) error { keys = append(keys, k); return nil })
	if fmt.Sprint(keys) != "[b]" {
		t.Fatalf("List with a lost value: %v", keys)
	}
	if err := b.Put(ctx, "a", []byte("again")); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, "a"); err != nil || string(got) != "again" {
		t.Fatalf("Get after rewriting a lost value: %q %v", got, err)
	}

	// LossRate 1: every Put succeeds and every value is gone.
	all := New(inner(t, 0), Config{Seed: seedT(t), LossRate: 1})
	if err := all.Put(ctx, "x", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := all.Get(ctx, "x"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Get with LossRate 1: %v", err)
	}
}

func TestBitFlips(t *testing.T) {
	ctx := context.Background()
	v := bytes.Repeat([]byte{0x5a}, 4096)
	b := New(inner(t, 0), Config{Seed: seedT(t), FlipRate: 1})
	if err := b.Put(ctx, "k", v); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		got, err := b.Get(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if d := bitDiff(got, v); d != 1 {
			t.Fatalf("Get with FlipRate 1 differs in %d bits, want 1", d)
		}
	}
	// The stored value itself is intact.
	if got, _ := b.Unwrap().Get(ctx, "k"); !bytes.Equal(got, v) {
		t.Fatal("a flip reached the stored value")
	}
	c := New(inner(t, 0), Config{})
	c.Put(ctx, "k", v)
	c.Put(ctx, "ok", v)
	c.Corrupt("k")
	got, _ := c.Get(ctx, "k")
	good, _ := c.Get(ctx, "ok")
	if bitDiff(got, v) != 1 || !bytes.Equal(good, v) {
		t.Fatal("Corrupt did not flip exactly the chosen key")
	}
	part, _ := c.GetRange(ctx, "k", 0, 4096)
	if bitDiff(part, v) != 1 {
		t.Fatal("GetRange of a corrupted key came back clean")
	}
	if c.Stats().Flipped != 2 {
		t.Fatalf("Stats: %+v", c.Stats())
	}
}

func bitDiff(a, b []byte) int {
	if len(a) != len(b) {
		return -1
	}
	n := 0
	for i := range a {
		n += bits.OnesCount8(a[i] ^ b[i])
	}
	return n
}

func TestLatencyHonoursContext(t *testing.T) {
	b := New(inner(t, 0), Config{LatencyMin: 5 * time.Second, LatencyMax: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := b.Get(ctx, "k")
	if !errors.Is(err, backends.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get under latency past the deadline: %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatal("latency ignored the deadline")
	}
	b.SetConfig(Config{LatencyMin: 20 * time.Millisecond, LatencyMax: 40 * time.Millisecond})
	r, err := b.Probe(context.Background())
	if err != nil || r.Latency < 20*time.Millisecond {
		t.Fatalf("Probe latency %v, %v; want at least the injected 20ms", r.Latency, err)
	}
}
