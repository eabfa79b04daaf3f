package healstore

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/backendtest"
	"github.com/healstore/healstore/metastore"
)

// markerGets counts the identity marker reads of backends it wraps, and
// holds each until every wrapped backend has asked (or a while passed):
// reads made one after another never all get in.
type markerGets struct {
	mu      sync.Mutex
	asked   map[string]bool
	want    int
	allIn   chan struct{}
	overlap bool
}

type markerGetBackend struct {
	backends.Backend
	g *markerGets
}

func (b markerGetBackend) Get(ctx context.Context, key string) ([]byte, error) {
	if key == MarkerKey {
		g := b.g
		g.mu.Lock()
		g.asked[b.Name()] = true
		if len(g.asked) == g.want {
			g.overlap = true
			close(g.allIn)
		}
		g.mu.Unlock()
		select {
		case <-g.allIn:
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return b.Backend.Get(ctx, key)
}

// Opening a store reads every backend's identity marker at once, and not
// from a backend that did not answer its probe: each such read waited out
// the backend's call deadline (30 s) in turn, so with two hung S3
// servers every command took more than a minute before it began.
func TestMarkersReadAtOnceSkippingSilentBackends(t *testing.T) {
	s := newTestStore(t, testOpts{})
	g := &markerGets{asked: map[string]bool{}, want: 5, allIn: make(chan struct{})}
	for _, name := range []string{"b0", "b1", "b2", "b3", "b4"} {
		setBackend(t, s, name, func(b backends.Backend) backends.Backend { return markerGetBackend{b, g} })
	}
	// b5 did not answer its probe when the store opened.
	silent := s.handleOf("b5")
	silent.mu.Lock()
	silent.probeErr = backends.Errorf("b5", "probe", "", backends.ErrUnavailable, "no answer")
	silent.mu.Unlock()
	setBackend(t, s, "b5", func(b backends.Backend) backends.Backend { return markerGetBackend{b, g} })

	if err := s.writeMarkers(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.asked["b5"] {
		t.Error("the marker of a backend that did not answer its probe was read")
	}
	if !g.overlap {
		t.Errorf("marker reads did not overlap: %d of 5 in flight at once", len(g.asked))
	}
}

// hungPuts takes puts and never answers them (a node stopped with
// SIGSTOP), until the caller gives up or the store's 30 s call deadline
// would have passed (it wraps the backend outside that deadline).
type hungPuts struct{ backends.Backend }

func (h hungPuts) Put(ctx context.Context, key string, v []byte) error {
	select {
	case <-ctx.Done():
	case <-time.After(backends.DefaultCallTimeout):
	}
	return backends.Errorf(h.Name(), "put", key, backends.ErrUnavailable, "no answer")
}

// A write whose shard goes to a hung backend gives that shard up once the
// others have landed and 5 s have passed, and puts it on the spare,
// instead of waiting out the backend's 30 s call deadline; the hung
// backend's copy, should it land after all, goes to garbage collection.
func TestWriteGivesUpOnHungBackend(t *testing.T) {
	s := newTestStore(t, testOpts{spares: 1}) // 4+2 on b0..b5, spare b6
	setBackend(t, s, "b2", func(b backends.Backend) backends.Backend { return hungPuts{b} })
	start := time.Now()
	data := putRandom(t, s, "obj", testBS) // one stripe, a shard on each of b0..b5
	if took := time.Since(start); took >= 30*time.Second {
		t.Fatalf("the write took %v: it waited out the hung backend's call deadline", took)
	}
	var on []string
	for _, sh := range stripesOf(t, s, "obj")[0].Shards {
		on = append(on, sh.Backend)
	}
	if slices.Contains(on, "b2") || !slices.Contains(on, "b6") {
		t.Fatalf("shards on %v: want the hung b2's on the spare b6", on)
	}
	if !bytes.Equal(readAll(t, s, "obj"), data) {
		t.Fatal("read back differs")
	}
	garbage := false
	err := s.meta.ListGarbage(context.Background(), func(g metastore.Garbage) error {
		garbage = garbage || g.Backend == "b2"
		return nil
	})
	if err != nil || !garbage {
		t.Fatalf("the given-up location on b2 is not garbage (%v)", err)
	}
}

// unreachableError returns what Unreachable says of backend name, "" when
// it is not listed.
func unreachableError(s *Store, name string) string {
	for _, u := range s.Unreachable() {
		if u.Name == name {
			return u.Error
		}
	}
	return ""
}

// Opening the store does not wait out openTimeout (10 s) for a node that
// hangs when the backends that answered hold the policy's k+m failure
// domains without it: it stops waiting lagWait after the others answered,
// and the store works without that backend.
func TestOpenStopsWaitingForAHungNode(t *testing.T) {
	ctx := context.Background()
	addr, accepted := backendtest.CountingHangingServer(t)
	cfg := testConfig(t, testOpts{edit: func(c *Config) {
		c.InlineMaxSize = 0
		c.Backends = append(c.Backends, backends.Spec{Name: "hung", Kind: backends.KindZDB, Address: addr, Namespace: "hs", Node: "hung-node"})
	}})
	s := openTest(t, cfg)
	if accepted() == 0 {
		t.Fatal("the hung backend was not tried")
	}
	if got := unreachableError(s, "hung"); !strings.Contains(got, "did not answer within 2s") {
		t.Fatalf("the hung backend is listed as %q; want it given up after 2s", got)
	}
	data := bytes.Repeat([]byte("healstore "), 50_000)
	if _, err := s.Put(ctx, "x", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, "x"); !bytes.Equal(got, data) {
		t.Fatal("the object does not read back identical")
	}
}

// When the backends that answered do not hold the policy's k+m failure
// domains, opening the store keeps waiting for the others (here until the
// node gives up after 3 s and its error is known), not lagWait.
func TestOpenWaitsForANodeItNeeds(t *testing.T) {
	addr := backendtest.HangThenRefuse(t, 3*time.Second)
	cfg := testConfig(t, testOpts{backends: 5, edit: func(c *Config) {
		c.Backends = append(c.Backends, backends.Spec{Name: "late", Kind: backends.KindZDB, Address: addr, Namespace: "hs", Node: "late-node"})
	}})
	s := openTest(t, cfg)
	got := unreachableError(s, "late")
	if got == "" || strings.Contains(got, "did not answer within") {
		t.Fatalf("the sixth domain's backend is listed as %q; want the error it ended with, not given up", got)
	}
}

// hungNode takes puts and never answers them (as hungPuts); its probe
// fails at once while down is set and answers when it is cleared.
type hungNode struct {
	backends.Backend
	down *atomic.Bool
	puts *atomic.Int64
}

func (h hungNode) Put(ctx context.Context, key string, v []byte) error {
	if !h.down.Load() {
		return h.Backend.Put(ctx, key, v)
	}
	h.puts.Add(1)
	return hungPuts{h.Backend}.Put(ctx, key, v)
}

func (h hungNode) Probe(ctx context.Context) (backends.ProbeResult, error) {
	if h.down.Load() {
		return backends.ProbeResult{}, backends.Errorf(h.Name(), "probe", "", backends.ErrUnavailable, "no answer")
	}
	return h.Backend.Probe(ctx)
}

// A backend that failed a write is kept out of new placements until a
// probe gets an answer from it, not only for failedFor: with a node that
// hangs and no healer to mark it suspect (a mount without --with-healer),
// every write placed there once failedFor had passed waited 5 s before
// giving its shard up, so an fsync took 5 s about every 35 s for as long
// as the node hung.
func TestFailedBackendWaitsForAnAnswer(t *testing.T) {
	s := newTestStore(t, testOpts{backends: 7, edit: func(c *Config) { c.InlineMaxSize = 0 }})
	down, puts := &atomic.Bool{}, &atomic.Int64{}
	down.Store(true)
	setBackend(t, s, "b0", func(b backends.Backend) backends.Backend { return hungNode{b, down, puts} })
	h := s.handleOf("b0")
	// b0 failed a write failedFor ago (and more), after its last answer:
	// as if a first put had waited on it and given up.
	expire := func() {
		h.mu.Lock()
		h.failedAt = time.Now().Add(-failedFor - time.Second)
		h.answeredAt = h.failedAt.Add(-time.Second)
		h.mu.Unlock()
	}
	expire()
	start := time.Now()
	for i := range 10 {
		putRandom(t, s, fmt.Sprintf("a%d", i), testBS)
	}
	if took, n := time.Since(start), puts.Load(); n != 0 || took > 4*time.Second {
		t.Fatalf("10 writes with b0 hung since its last failure took %v and sent it %d puts: its probe does not answer, so it should take none", took, n)
	}
	// The node answers again: a probe finds it, and it takes shards.
	down.Store(false)
	expire()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		putRandom(t, s, fmt.Sprintf("b%d", i), testBS)
		n, err := s.meta.CountStripesOnBackend(context.Background(), "b0")
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b0 answers its probe again, yet %d writes placed nothing there", i+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hungData answers probes but never answers a put (a node whose disk
// hangs, or a server whose HEAD works and PUT stalls).
type hungData struct {
	backends.Backend
	puts *atomic.Int64
}

func (h hungData) Put(ctx context.Context, key string, v []byte) error {
	h.puts.Add(1)
	return hungPuts{h.Backend}.Put(ctx, key, v)
}

// A backend that fails again soon after a probe let it back in is kept out
// twice as long each time: a node that answers probes but hangs on writes
// cost one write's 5 s wait every 30 s for as long as it did so.
func TestBackendFailingAgainIsKeptOutLonger(t *testing.T) {
	s := newTestStore(t, testOpts{backends: 7, edit: func(c *Config) { c.InlineMaxSize = 0 }})
	puts := &atomic.Int64{}
	setBackend(t, s, "b0", func(b backends.Backend) backends.Backend { return hungData{b, puts} })
	h := s.handleOf("b0")
	// b0 failed a write once, failedFor ago, and a probe has let it back in.
	h.mu.Lock()
	h.failedAt = time.Now().Add(-failedFor - 2*time.Second)
	h.answeredAt = time.Now().Add(-time.Second)
	h.strikes = 1
	h.mu.Unlock()
	for i := 0; puts.Load() == 0; i++ {
		if i == 50 {
			t.Fatal("50 writes placed nothing on b0")
		}
		putRandom(t, s, fmt.Sprintf("a%d", i), testBS)
	}
	// passes moves b0's times back by d, as if d had passed.
	passes := func(d time.Duration) {
		h.mu.Lock()
		h.failedAt, h.answeredAt = h.failedAt.Add(-d), h.answeredAt.Add(-d)
		h.mu.Unlock()
	}
	h.mu.Lock()
	strikes := h.strikes
	h.mu.Unlock()
	passes(failedFor + time.Second) // its probe would answer now
	if strikes != 2 {
		t.Fatalf("b0 failed again right after it was let back in: %d strikes, want 2", strikes)
	}
	before := puts.Load()
	start := time.Now()
	for i := range 10 {
		putRandom(t, s, fmt.Sprintf("b%d", i), testBS)
		time.Sleep(10 * time.Millisecond) // room for a probe, were one started
	}
	if n, took := puts.Load()-before, time.Since(start); n != 0 || took > 4*time.Second {
		t.Fatalf("b0 failed twice in a row, then failedFor passed: 10 writes sent it %d puts and took %v; it should be out for twice failedFor", n, took)
	}
	// Once it has been out that long, it is probed and let back in.
	passes(failedFor)
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; puts.Load() == before; i++ {
		if time.Now().After(deadline) {
			t.Fatal("b0 out for twice failedFor and answering probes, yet no write tried it")
		}
		putRandom(t, s, fmt.Sprintf("c%d", i), testBS)
		time.Sleep(10 * time.Millisecond)
	}
}

// hungCalls takes every data call (put, get, list, delete) and never
// answers it, counting them.
type hungCalls struct {
	backends.Backend
	calls *atomic.Int64
}

func (h hungCalls) hang(ctx context.Context, op, key string) error {
	h.calls.Add(1)
	select {
	case <-ctx.Done():
	case <-time.After(backends.DefaultCallTimeout):
	}
	return backends.Errorf(h.Name(), op, key, backends.ErrUnavailable, "no answer")
}

func (h hungCalls) Put(ctx context.Context, key string, v []byte) error {
	return h.hang(ctx, "put", key)
}

func (h hungCalls) Get(ctx context.Context, key string) ([]byte, error) {
	return nil, h.hang(ctx, "get", key)
}

func (h hungCalls) Delete(ctx context.Context, key string) error {
	return h.hang(ctx, "delete", key)
}

func (h hungCalls) List(ctx context.Context, prefix string, fn func(string, int64) error) error {
	return h.hang(ctx, "list", prefix)
}

// A metadata snapshot sends nothing to a backend that failed since it
// last answered, or that the healer marked suspect with no answer since:
// it waited for such a node's pointer write, listing and deletes until
// the call deadline, so a daemon or a mount with --with-healer took 30 s
// to stop (its last snapshot) while a node hung, and that snapshot's
// pruning then failed on every backend for want of time.
func TestSnapshotSkipsAHungBackend(t *testing.T) {
	for _, how := range []string{"failed", "suspect"} {
		t.Run(how, func(t *testing.T) {
			s := newTestStore(t, testOpts{backends: 7})
			ctx := context.Background()
			putRandom(t, s, "obj", testBS)
			sn, err := s.NewSnapshotter(SnapshotConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sn.Take(ctx, true); err != nil {
				t.Fatal(err)
			}
			calls := &atomic.Int64{}
			setBackend(t, s, "b0", func(b backends.Backend) backends.Backend { return hungCalls{b, calls} })
			h := s.handleOf("b0")
			switch how {
			case "failed": // a write gave up on it a moment ago
				h.mu.Lock()
				h.answeredAt, h.failedAt = time.Now().Add(-time.Minute), time.Now()
				h.mu.Unlock()
			case "suspect": // the healer's probes failed
				if err := s.meta.UpdateBackend(ctx, "b0", func(r *metastore.BackendRecord) error {
					r.State, r.Since = metastore.StateSuspect, time.Now()
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				if err := s.refreshBackends(ctx); err != nil {
					t.Fatal(err)
				}
			}
			putRandom(t, s, "more", testBS)
			tctx, cancel := context.WithTimeout(ctx, 8*time.Second)
			defer cancel()
			start := time.Now()
			info, err := sn.Take(tctx, true)
			if err != nil {
				t.Fatalf("snapshot with b0 hung: %v", err)
			}
			if took, n := time.Since(start), calls.Load(); n != 0 || took > 4*time.Second {
				t.Fatalf("snapshot with b0 hung took %v and sent it %d calls", took, n)
			}
			if slices.Contains(info.Backends, "b0") {
				t.Fatalf("snapshot shards on the hung b0: %v", info.Backends)
			}
		})
	}
}

// A backend that said it is full is kept out of new placements for a
// while, but it answers: reads still ask it first, and snapshots still
// reach it.
func TestFullBackendIsNotOutOfReach(t *testing.T) {
	s := newTestStore(t, testOpts{backends: 7})
	s.noteBackendError("b0", backends.Errorf("b0", "put", "k", backends.ErrFull, "no space left"))
	if s.Lagging("b0") {
		t.Error("b0 said it is full, and reads now ask it last")
	}
	primary, _ := s.candidates(1)
	for _, c := range primary {
		if c.Name == "b0" {
			t.Error("b0 said it is full a moment ago, and new writes may still go there")
		}
	}
	// A backend that did not answer is out of reach.
	s.noteBackendError("b1", backends.Errorf("b1", "put", "k", backends.ErrUnavailable, "no answer"))
	if !s.Lagging("b1") {
		t.Error("b1 did not answer a put, and reads still ask it first")
	}
}
