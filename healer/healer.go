package healer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/placement"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer/plan"
	"github.com/healstore/healstore/healer/provision"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/healer/throttle"
	"github.com/healstore/healstore/metastore"
)

// MarkerKey is the key of the identity marker on every backend.
const MarkerKey = "healstore-marker"

// Marker is the identity marker's JSON content: which store and which
// backend of it the backend belongs to.
type Marker struct {
	StoreID string `json:"store_id"`
	Backend string `json:"backend"`
}

// Codec is what the healer needs of the encoder: rebuilding shards from
// any K verified ones, and verifying one shard. *encoder.Codec has both.
type Codec interface {
	Reconstruct(id encoder.StripeID, shards, sums [][]byte, want []int) (rebuilt, newSums [][]byte, err error)
	VerifyShard(id encoder.StripeID, index int, shard, sum []byte) error
}

// Deps are the parts of a store the healer works on.
type Deps struct {
	// Meta is the store's metastore: stripes, backends, queue, garbage.
	Meta *metastore.Store
	// Pool opens backends by name; the store's read and write paths share it.
	Pool shardio.Pool
	// Codec returns the codec for a stripe (by its K, M and checksum).
	Codec func(st *metastore.Stripe) (Codec, error)
	// Register adds a new backend to the store: saves secret (if any) under
	// spec.SecretRef, records the backend (state up) and opens it. The
	// healer writes the identity marker itself afterwards.
	Register func(ctx context.Context, spec backends.Spec, secret string) error
	// Try, when set, opens and probes a backend a user asks to add
	// (AddBackend) or a provisioner made, with the secret given, and
	// closes it again: one that cannot work is refused (and a provisioned
	// one released) before anything is recorded.
	Try func(ctx context.Context, spec backends.Spec, secret string) error
	// StoreID is the store's identity, written in every marker.
	StoreID string
	// Provisioners are tried in order for replacement and spare capacity.
	Provisioners []provision.Provisioner
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Registry receives the healer's metrics; nil creates a private one.
	Registry *prometheus.Registry
	// Now replaces the clock (tests drive grace periods with it); nil
	// means time.Now.
	Now func() time.Time
}

// Healer keeps a store at full redundancy. Create it with New, start the
// background loops with Run, or call the one-shot methods (ProbeAll,
// RepairAll, Scrub, GC) directly. Safe for concurrent use.
type Healer struct {
	cfg   Config
	meta  *metastore.Store
	pool  shardio.Pool
	codec func(st *metastore.Stripe) (Codec, error)
	reg   func(ctx context.Context, spec backends.Spec, secret string) error
	try   func(ctx context.Context, spec backends.Spec, secret string) error
	id    string
	provs []provision.Provisioner
	log   *slog.Logger
	now   func() time.Time
	// bodyTimeout bounds the reading of an API request's body
	// (defaultBodyTimeout; tests lower it).
	bodyTimeout time.Duration

	limiter      *throttle.Limiter
	scrubLimiter *throttle.Limiter
	metrics      *metrics

	mu      sync.Mutex
	members map[string]*member
	workers int
	wake    chan struct{}
	probeMe chan string
	rnd     *rand.Rand
	// provisionAfter delays the next provisioning try after a failure.
	provisionAfter time.Time
	// releaseAfter delays the next release try of a replaced backend
	// after a failed one; released lists those already given back.
	releaseAfter map[string]time.Time
	released     map[string]bool
	// wantedAt is when the latest rebuild that found no target looked at
	// the candidates; capacityAt is when capacity was last added. Only a
	// want newer than the last addition provisions more.
	wantedAt, capacityAt time.Time
	stats                repairStats
	rates                rateWindow
	scrubs               map[string]*ScrubProgress // by pass: "light", "deep"
	census               *Census

	// watched maps the write intents that named a down or draining
	// backend at the last monitor round, or when it was drained, went
	// down or was found wiped, to those backends (see queueCommitted).
	// watchMu serialises queueCommitted with watchIntents, so no merge is
	// lost to a round's swap.
	watchMu sync.Mutex
	watched map[[16]byte][]watch
	// swept names the down or draining backends whose stripes this
	// healer queued after it began watching their writes in flight (the
	// down event, Drain, or settleBackends' catch-up). One not named, in
	// a healer just started (or run again for a new leadership term, see
	// Run) or a state another process set, is swept at the next round:
	// what a healer watched before a restart is gone, and a write it
	// watched may have committed before this one's first round listed
	// the intents (guarded by mu).
	swept map[string]bool

	locks [256]sync.Mutex // per-stripe locks (by id hash): rebuild vs GC vs scrub
}

// member is one backend as the healer sees it.
type member struct {
	rec    metastore.BackendRecord
	spec   backends.Spec
	health plan.Health
	// probed is the capacity of the last probe that answered: the record
	// keeps no device (nor, with a quota, its figures), which a probe
	// knows anew each time.
	probed backends.Capacity
}

// setCapacity takes the capacity a probe reported. Called with h.mu held.
func (m *member) setCapacity(c backends.Capacity) {
	m.rec.Capacity = recordCapacity(c)
	m.probed = c
}

// New builds a healer. It reads the backend records once; it starts
// nothing (see Run).
func New(ctx context.Context, cfg Config, d Deps) (*Healer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.fill()
	if d.Meta == nil || d.Pool == nil || d.Codec == nil {
		return nil, errors.New("healer: Meta, Pool and Codec are required")
	}
	if d.StoreID == "" {
		return nil, errors.New("healer: StoreID is required")
	}
	log := d.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	reg := d.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	h := &Healer{
		cfg:          cfg,
		meta:         d.Meta,
		pool:         d.Pool,
		codec:        d.Codec,
		reg:          d.Register,
		try:          d.Try,
		id:           d.StoreID,
		provs:        d.Provisioners,
		log:          log,
		now:          time.Now,
		bodyTimeout:  defaultBodyTimeout,
		limiter:      throttle.New(cfg.RateLimit),
		scrubLimiter: throttle.New(cfg.ScrubRateLimit),
		members:      map[string]*member{},
		workers:      cfg.Workers,
		wake:         make(chan struct{}, 1),
		probeMe:      make(chan string, 64),
		rnd:          rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		scrubs:       map[string]*ScrubProgress{},
	}
	if d.Now != nil {
		h.now = d.Now
	}
	h.metrics = newMetrics(reg, h)
	if err := h.refresh(ctx); err != nil {
		return nil, err
	}
	return h, nil
}

// Registry returns the registry holding the healer's metrics.
func (h *Healer) Registry() *prometheus.Registry { return h.metrics.reg }

// Config returns the healer's effective configuration.
func (h *Healer) Config() Config {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.cfg
	c.Workers = h.workers
	c.RateLimit = h.limiter.Rate()
	return c
}

// SetWorkers changes the number of concurrent repairs (at least 1); it
// takes effect as running repairs finish.
func (h *Healer) SetWorkers(n int) {
	h.mu.Lock()
	h.workers = max(n, 1)
	h.mu.Unlock()
	h.kick()
}

// SetRateLimit changes the rebuild cap in bytes per second (0 = none);
// repairs waiting on the old cap re-pace within 100 ms.
func (h *Healer) SetRateLimit(bytesPerSec int64) { h.limiter.SetRate(bytesPerSec) }

// kick wakes the rebuilder's dispatcher.
func (h *Healer) kick() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *Healer) lockStripe(id [16]byte) func() {
	m := &h.locks[int(id[0])^int(id[15])]
	m.Lock()
	return m.Unlock
}

// refresh re-reads the backend records. The metastore is the truth for
// states an operator (or another process) set; the in-memory health keeps
// failure counts between probes.
func (h *Healer) refresh(ctx context.Context) error {
	recs, err := h.meta.ListBackends(ctx)
	if err != nil {
		return fmt.Errorf("healer: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[string]bool{}
	for _, rec := range recs {
		seen[rec.Name] = true
		var spec backends.Spec
		if err := json.Unmarshal(rec.SpecJSON, &spec); err != nil {
			return fmt.Errorf("healer: backend %s: stored spec: %w", rec.Name, err)
		}
		m := h.members[rec.Name]
		if m == nil {
			m = &member{health: plan.Health{State: plan.State(rec.State), Since: rec.Since, Failures: rec.ProbeFailures}}
			if rec.ProbeFailures == 0 {
				m.health.LastOK = rec.LastProbe
			}
			h.members[rec.Name] = m
		}
		if plan.State(rec.State) != m.health.State {
			m.health.State, m.health.Since = plan.State(rec.State), rec.Since
		}
		m.rec, m.spec = rec, spec
	}
	for name := range h.members {
		if !seen[name] {
			delete(h.members, name)
		}
	}
	return nil
}

// views returns the planner's picture of every backend.
func (h *Healer) views() map[string]plan.BackendView {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]plan.BackendView, len(h.members))
	for name, m := range h.members {
		out[name] = plan.BackendView{
			State:     m.health.State,
			Reachable: m.health.Reachable(),
			Domain:    m.spec.Domain(h.cfg.Level),
		}
	}
	return out
}

// candidates lists the backends that may receive rebuilt shards: up,
// answering, with room; spares included (flagged).
func (h *Healer) candidates() []placement.Candidate {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []placement.Candidate
	for name, m := range h.members {
		if m.health.State != plan.Up || !m.health.Reachable() {
			continue
		}
		c := m.rec.Capacity
		out = append(out, placement.Candidate{
			Name: name, Domain: m.spec.Domain(h.cfg.Level),
			Free: c.Free, FreeKnown: c.Known, Spare: m.rec.Spare,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// randSource returns a child generator for one placement decision.
func (h *Healer) randSource() *rand.Rand {
	h.mu.Lock()
	defer h.mu.Unlock()
	return rand.New(rand.NewPCG(h.rnd.Uint64(), h.rnd.Uint64()))
}

// view turns a stripe record into the planner's input.
func view(st *metastore.Stripe) plan.StripeView {
	v := plan.StripeView{K: st.K, M: st.M, Shards: make([]plan.Shard, len(st.Shards))}
	for i, s := range st.Shards {
		v.Shards[i] = plan.Shard{Backend: s.Backend}
	}
	return v
}

// Run starts the monitor, the rebuilder, the scrubbers, garbage collection
// and the census, and returns when ctx ends (nil) or one of them fails
// for good.
func (h *Healer) Run(ctx context.Context) error {
	// A daemon on etcd runs its healer again each time it wins the
	// maintenance lease back. Another process's healer led in between,
	// and what it watched is gone with it: a backend this one swept in
	// an earlier term may have come back and gone down again under the
	// other, with a write in flight there that committed after the
	// other's last round. So, as at a restart, every down or draining
	// backend is swept again at the first round.
	h.mu.Lock()
	h.swept = nil
	h.mu.Unlock()
	var wg sync.WaitGroup
	loops := []func(context.Context){h.monitorLoop, h.rebuildLoop, h.gcLoop, h.censusLoop}
	if h.cfg.LightScrubPeriod > 0 {
		loops = append(loops, func(ctx context.Context) { h.scrubLoop(ctx, false) })
	}
	if h.cfg.ScrubPeriod > 0 {
		loops = append(loops, func(ctx context.Context) { h.scrubLoop(ctx, true) })
	}
	for _, loop := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

var _ Codec = (*encoder.Codec)(nil)
