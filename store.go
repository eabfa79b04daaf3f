package healstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/all"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/healer/snapshot"
	"github.com/healstore/healstore/metastore"
	etcdkv "github.com/healstore/healstore/metastore/etcd"
	pebblekv "github.com/healstore/healstore/metastore/pebble"
)

// MarkerKey is the key of the identity marker every backend carries. It is
// written when the backend joins the store; the healer treats a backend
// whose marker vanished as wiped.
const MarkerKey = "healstore-marker"

// Marker is the identity marker's JSON content.
type Marker struct {
	StoreID string `json:"store_id"`
	Backend string `json:"backend"`
}

// metaKeyCheck names the metastore value holding the master key's
// fingerprint (see keyCheck).
const metaKeyCheck = "master-key-check"

const (
	// refreshEvery bounds how stale the in-memory view of backend states
	// (set by the healer, possibly in another process) may get.
	refreshEvery = 2 * time.Second
	// reopenEvery spaces attempts to open a backend that failed to open.
	reopenEvery = 10 * time.Second
	// failedFor keeps a backend that just failed a data-path call out of
	// new placements, so one dead backend does not stall every stripe
	// (longer for one that keeps failing: holdOff).
	failedFor = 30 * time.Second
	// openTimeout bounds opening (and first probing) one backend.
	openTimeout = 10 * time.Second
)

// Store is an open healstore. It is safe for concurrent use.
//
// Files of this package outside the store's own (daemon, heal, status,
// snapshot, recover, leader) reach its parts through these fields:
//   - meta: the typed metastore, the one source of truth for objects,
//     stripes, backends, the repair queue, garbage and intents;
//   - the backend pool (Backend, handles, refreshBackends): every
//     non-retired backend of the metastore, opened lazily and reopened
//     after failures; registerBackend adds one;
//   - codec(policy): encoders for any policy an object was written with;
//   - noteBackendError: the data path's error feed (OnBackendError hooks).
type Store struct {
	cfg     *Config
	log     *slog.Logger
	meta    *metastore.Store
	secrets *SecretStore
	key     []byte // master key; nil when encryption is "none" and no key file
	storeID string
	closed  atomic.Bool

	// probes are the background probes of backends that failed
	// (reprobe); Close cancels and waits for them. probeMu orders their
	// start against Close.
	probeMu    sync.Mutex
	probes     sync.WaitGroup
	probesCtx  context.Context
	stopProbes context.CancelFunc

	codecMu sync.Mutex
	codecs  map[encoder.Policy]*encoder.Codec

	bmu       sync.Mutex
	handles   map[string]*handle
	refreshed time.Time

	rndMu sync.Mutex
	rnd   *rand.Rand

	hookMu sync.Mutex
	hooks  []func(backend string, err error)

	bufs bufPool // large buffers of the read and write paths

	metrics *storeMetrics // the data path's counters (metrics.go)
}

// handle is one backend in the pool.
type handle struct {
	name string
	spec backends.Spec

	mu       sync.Mutex
	rec      metastore.BackendRecord // as last read from the metastore
	b        backends.Backend        // nil while not open
	openErr  error
	lastTry  time.Time
	capacity backends.Capacity // from the last probe
	written  int64             // bytes placed since that probe
	failedAt time.Time         // last data-path failure to answer (ErrUnavailable)
	fullAt   time.Time         // last time it said it was full (ErrFull)
	laggedAt time.Time         // last time a fetch hedged around it (Lagging)
	foreign  bool              // marker names another store
	wiped    bool              // found without its marker (see writeMarkers); until it has one again
	probeErr error             // the probe at open failed
	// answeredAt is the last time a probe by this store got an answer: a
	// suspect mark or a failure older than that is not followed
	// (candidates).
	answeredAt time.Time
	reprobing  bool // a reprobe is under way
	// strikes counts data-path failures in a row, each after a probe had
	// let the backend back in (holdOff); reset by a shard that lands.
	strikes int
}

// outOfReach reports whether h is known not to answer: it failed a call
// since its last answer to this store, or the healer marked it suspect
// (rec, as last read) with no answer since. New writes and metadata
// snapshots leave such a backend alone. Called with h.mu held.
func (h *handle) outOfReach(rec metastore.BackendRecord) bool {
	unanswered := rec.State == metastore.StateSuspect && !h.answeredAt.After(rec.Since)
	return h.failing() || unanswered
}

// failing reports whether h failed a call since its last answer to this
// store. Called with h.mu held.
func (h *handle) failing() bool {
	return !h.failedAt.IsZero() && !h.answeredAt.After(h.failedAt)
}

// holdOff is how long a backend that failed stays out of new placements
// before a probe may let it back in: failedFor, doubled for each failure
// in a row after it was let back in (a node that answers probes but hangs
// on writes), up to 16 times (8 min).
func holdOff(strikes int) time.Duration {
	return failedFor << min(max(strikes-1, 0), 4)
}

// Open opens the store described by cfg: the metastore (pebble under
// cfg.MetadataDir by default, or etcd), then every backend it knows (the
// config's, registered on first sight, and any the healer added). A
// backend that cannot be reached does not stop Open: reads and writes work
// around it, and Health names it. Open waits up to 10 s for a backend that
// does not answer, and about 2 s for a remote one once the others answered
// and hold the policy's k+m failure domains without it (openHandles).
// Open fails when the policy's k+m shards cannot be placed in distinct
// failure domains even with every backend up (*InsufficientBackendsError),
// when the master key does not match the store or etcd refuses the
// configured user (ErrAuth), or on a bad config (ErrBadConfig, also for a
// TLS or password file of [metastore] that does not load).
func Open(ctx context.Context, cfg *Config) (*Store, error) {
	return open(ctx, cfg, true)
}

// open opens the store, and its backends when withBackends is set (see
// OpenCatalog for a store without them).
func open(ctx context.Context, cfg *Config, withBackends bool) (*Store, error) {
	if cfg == nil {
		return nil, &ConfigError{Msg: "no config"}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var key []byte
	if cfg.MasterKeyFile != "" {
		k, err := LoadMasterKey(cfg.MasterKeyFile)
		if err != nil {
			return nil, &ConfigError{File: cfg.path, Field: "master_key_file", Msg: err.Error()}
		}
		key = k
	}
	secrets, err := OpenSecrets(cfg.SecretsFile)
	if err != nil {
		return nil, &ConfigError{File: cfg.path, Field: "secrets_file", Msg: err.Error()}
	}
	if !withBackends && cfg.Metastore.Kind != "etcd" {
		// A catalog makes no store: pebble would create a database
		// where a wrong dir or metadata_dir points.
		if _, err := os.Stat(cfg.MetadataDir); errors.Is(err, fs.ErrNotExist) {
			return nil, noStoreError(cfg)
		}
	}
	kv, err := openKV(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s := &Store{
		cfg:     cfg,
		log:     log,
		meta:    metastore.New(kv, metastore.WithGarbageDelay(cfg.Healer.GCDelay.Std())),
		secrets: secrets,
		key:     key,
		codecs:  map[encoder.Policy]*encoder.Codec{},
		handles: map[string]*handle{},
		rnd:     rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		metrics: newStoreMetrics(),
	}
	s.probesCtx, s.stopProbes = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if withBackends {
		s.storeID, err = s.meta.StoreID(ctx)
	} else if s.storeID, err = s.meta.ExistingStoreID(ctx); errors.Is(err, metastore.ErrNotFound) {
		return nil, noStoreError(cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := s.checkKey(ctx); err != nil {
		return nil, err
	}
	if _, err := s.codec(cfg.Policy); err != nil {
		return nil, err
	}
	for _, spec := range cfg.Backends {
		if err := s.registerSpec(ctx, spec); err != nil {
			return nil, err
		}
	}
	fresh, err := s.loadHandles(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.checkDomains(); err != nil {
		return nil, err
	}
	if withBackends {
		s.openHandles(ctx, fresh, true)
		if err := s.writeMarkers(ctx); err != nil {
			return nil, err
		}
	}
	ok = true
	return s, nil
}

// openKV opens the configured metadata engine. The embedded engine is
// wrapped to count its commits, so the snapshotter's change trigger
// (snapshots.max_changes) and the loss window work on it as on etcd,
// whose revision counts them already. Code that needs the engine itself
// (etcd leases, snapshot reads) finds it with snapshot.Unwrap.
func openKV(ctx context.Context, cfg *Config) (metastore.KV, error) {
	switch cfg.Metastore.Kind {
	case "etcd":
		opts, err := cfg.etcdOptions()
		if err != nil {
			return nil, err
		}
		kv, err := etcdkv.Open(ctx, cfg.Metastore.Endpoints, cfg.Metastore.Prefix, opts...)
		if err != nil {
			return nil, cfg.etcdOpenError(err)
		}
		return kv, nil
	default:
		kv, err := pebblekv.Open(cfg.MetadataDir)
		if err != nil {
			if errors.Is(err, metastore.ErrLocked) {
				// err names the directory. The advice must be something the
				// user can do: a daemon answers no data commands.
				return nil, fmt.Errorf("open metastore: %w; only one process at a time can open the embedded (pebble) metastore, "+
					"so stop the other healstore process (a daemon or a mount) before running this command; "+
					"to use the data while the store heals, run the healer inside the mount (healstore mount --with-healer) instead of a separate daemon, "+
					"or keep the metadata in etcd ([metastore] kind = \"etcd\"), which several processes share", err)
			}
			return nil, fmt.Errorf("open metastore %s: %w", cfg.MetadataDir, err)
		}
		return snapshot.CountCommits(kv), nil
	}
}

// checkKey compares the master key with the fingerprint the store
// recorded when it was created, so a wrong key fails here instead of
// writing objects no one can read.
func (s *Store) checkKey(ctx context.Context) error {
	if s.key == nil {
		return nil
	}
	want := keyCheck(s.key)
	got, err := s.meta.GetMeta(ctx, metaKeyCheck)
	switch {
	case errors.Is(err, metastore.ErrNotFound):
		if err := s.meta.PutMeta(ctx, metaKeyCheck, []byte(want)); err != nil {
			return fmt.Errorf("record master key fingerprint: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("read master key fingerprint: %w", err)
	case string(got) != want:
		return fmt.Errorf("master key in %s is not this store's key: %w", s.cfg.MasterKeyFile, ErrAuth)
	}
	return nil
}

// Close releases the backends and the metastore. Open readers and writers
// fail afterwards. Close is idempotent.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.probeMu.Lock()
	s.stopProbes()
	s.probeMu.Unlock()
	s.probes.Wait()
	var errs []error
	s.bmu.Lock()
	for _, h := range s.handles {
		h.mu.Lock()
		if h.b != nil {
			if err := h.b.Close(); err != nil {
				errs = append(errs, err)
			}
			h.b = nil
		}
		h.mu.Unlock()
	}
	s.bmu.Unlock()
	if err := s.meta.Close(); err != nil && !errors.Is(err, metastore.ErrClosed) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Store) checkOpen() error {
	if s.closed.Load() {
		return fmt.Errorf("store: %w", ErrClosed)
	}
	return nil
}

// closedCause replaces err by ErrClosed once the store is closed: a read
// or write still under way then fails on closed metadata or on backends
// that look gone, and saying so (insufficient backends, say) would send
// the caller after a fault that is not there.
func (s *Store) closedCause(err error) error {
	if err != nil && s.closed.Load() && !errors.Is(err, ErrClosed) {
		return fmt.Errorf("store: %w", ErrClosed)
	}
	return err
}

// Config returns the store's config (read-only by convention).
func (s *Store) Config() *Config { return s.cfg }

// Meta returns the store's metastore. Changes made through it bypass the
// store's checks; the healer and tools use it.
func (s *Store) Meta() *metastore.Store { return s.meta }

// StoreID is the store's stable random identity (also in every marker).
func (s *Store) StoreID() string { return s.storeID }

// Secrets returns the store's secret store.
func (s *Store) Secrets() *SecretStore { return s.secrets }

// Logger returns the store's logger.
func (s *Store) Logger() *slog.Logger { return s.log }

// Codec returns the codec for objects written with policy p.
func (s *Store) Codec(p encoder.Policy) (*encoder.Codec, error) { return s.codec(p) }

func (s *Store) codec(p encoder.Policy) (*encoder.Codec, error) {
	s.codecMu.Lock()
	defer s.codecMu.Unlock()
	if c, ok := s.codecs[p]; ok {
		return c, nil
	}
	var key []byte
	if p.Encryption != "none" {
		if s.key == nil {
			return nil, fmt.Errorf("policy uses encryption %q but no master key is configured (master_key_file)", p.Encryption)
		}
		key = s.key
	}
	c, err := encoder.NewCodec(p, key)
	if err != nil {
		return nil, fmt.Errorf("policy %d+%d: %w", p.K, p.M, err)
	}
	s.codecs[p] = c
	return c, nil
}

// OnBackendError registers fn to hear every failed data-path call (shard
// put, get, verify) with the backend's name; the healer's monitor uses it.
// fn must be quick and must not block.
func (s *Store) OnBackendError(fn func(backend string, err error)) {
	s.hookMu.Lock()
	s.hooks = append(s.hooks, fn)
	s.hookMu.Unlock()
}

// NoteLagging implements shardio.LagTracker: a read (or a rebuild) gave
// up waiting for backend name, whose shard had not come within
// hedge_after when the stripe was read from others.
func (s *Store) NoteLagging(name string) {
	if h := s.handleOf(name); h != nil {
		h.mu.Lock()
		h.laggedAt = time.Now()
		h.mu.Unlock()
	}
}

// Lagging implements shardio.LagTracker: backend name lagged within
// failedFor, or is known not to answer (outOfReach), so reads and
// rebuilds ask it last.
func (s *Store) Lagging(name string) bool {
	h := s.handleOf(name)
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return time.Since(h.laggedAt) < failedFor || h.outOfReach(h.rec)
}

var _ shardio.LagTracker = (*Store)(nil)

// reprobe probes h in the background, once at a time: a backend that
// failed a data-path call takes new shards again only once a probe gets
// an answer (candidates), and the probe, not a write placed there, finds
// out whether it still hangs.
func (s *Store) reprobe(h *handle) {
	s.probeMu.Lock()
	defer s.probeMu.Unlock()
	h.mu.Lock()
	b := h.b
	if h.reprobing || b == nil || s.probesCtx.Err() != nil {
		h.mu.Unlock()
		return
	}
	h.reprobing = true
	h.mu.Unlock()
	s.probes.Add(1)
	go func() {
		defer s.probes.Done()
		ctx, cancel := context.WithTimeout(s.probesCtx, openTimeout)
		defer cancel()
		res, err := b.Probe(ctx)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.reprobing = false
		switch {
		case err == nil:
			h.answeredAt = time.Now()
			h.capacity, h.written = res.Capacity, 0
		case s.probesCtx.Err() == nil:
			h.failedAt = time.Now() // the next try after holdOff
			s.log.Debug("backend still does not answer", "backend", h.name, "err", err)
		}
	}()
}

// noteBackendError records a data-path failure: an unreachable or full
// backend is kept out of new placements for a while (an unreachable one
// until a probe answers, see reprobe), and the hooks hear it.
func (s *Store) noteBackendError(name string, err error) {
	h := s.handleOf(name)
	if h != nil && errors.Is(err, backends.ErrFull) {
		// It answers, so reads still ask it first; only new shards
		// keep off it for a while (its next probe updates its room).
		h.mu.Lock()
		h.fullAt = time.Now()
		h.mu.Unlock()
	}
	if h != nil && errors.Is(err, backends.ErrUnavailable) {
		h.mu.Lock()
		now := time.Now()
		switch {
		case h.failedAt.IsZero():
			h.strikes = 1
		case h.answeredAt.After(h.failedAt):
			// Let back in since its last failure: a strike more if
			// that came soon, else a new start. (Failures while it
			// was still out, such as the other stripes of the same
			// write, are the same strike.)
			if now.Sub(h.failedAt) < 2*holdOff(h.strikes) {
				h.strikes++
			} else {
				h.strikes = 1
			}
		}
		h.failedAt = now
		h.mu.Unlock()
	}
	s.log.Debug("backend error", "backend", name, "err", err)
	s.hookMu.Lock()
	hooks := append([]func(string, error){}, s.hooks...)
	s.hookMu.Unlock()
	for _, fn := range hooks {
		fn(name, err)
	}
}

// Backend returns the open backend called name (shardio.Pool). A backend
// that failed to open is retried at most every 10 s; a name the pool does
// not know yet (added by the healer, possibly in another process) makes it
// re-read the metastore's backend list.
func (s *Store) Backend(name string) (backends.Backend, bool) {
	if s.closed.Load() {
		return nil, false
	}
	s.bmu.Lock()
	h := s.handles[name]
	stale := h == nil && time.Since(s.refreshed) > time.Second
	s.bmu.Unlock()
	if stale {
		ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
		if err := s.refreshBackends(ctx); err != nil {
			s.log.Warn("refresh backends", "err", err)
		}
		cancel()
		h = s.handleOf(name)
	}
	if h == nil {
		return nil, false
	}
	h.mu.Lock()
	b, tried := h.b, h.lastTry
	h.mu.Unlock()
	if b != nil {
		return b, true
	}
	if time.Since(tried) < reopenEvery {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	s.openHandle(ctx, h)
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.b, h.b != nil
}

// handleOf returns the handle of backend name, nil for a name the store
// does not know (yet).
func (s *Store) handleOf(name string) *handle {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	return s.handles[name]
}

// OpenError says why backend name is not open: the error of its last
// attempt to open, or nil when it is open or unknown.
func (s *Store) OpenError(name string) error {
	h := s.handleOf(name)
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.b != nil {
		return nil
	}
	return h.openErr
}

var _ shardio.Pool = (*Store)(nil)

// openHandle opens h's backend and probes it once for capacity.
func (s *Store) openHandle(ctx context.Context, h *handle) {
	h.mu.Lock()
	if h.b != nil {
		h.mu.Unlock()
		return
	}
	h.lastTry = time.Now()
	// A backend with the store's marker has held data: a local one whose
	// directory vanished is down, not a new empty backend to fill.
	used := h.rec.Marker != ""
	h.mu.Unlock()
	open := all.Open
	if used {
		open = all.OpenUsed
	}
	b, err := open(ctx, h.spec, s.secrets.Lookup)
	var probe backends.ProbeResult
	var answeredAt time.Time
	if err == nil {
		probe, err = b.Probe(ctx)
		answeredAt = time.Now()
		if err != nil {
			// Opened but not answering: keep it open; calls will
			// fail fast and the healer sees the probe failures.
			// Info, not Warn: Unreachable and Health report it to
			// whoever opened the store (the CLI prints a warning), and
			// the healer logs the backend's state changes.
			s.log.Info("backend does not answer", "backend", h.name, "err", err)
			h.mu.Lock()
			h.failedAt, h.probeErr = time.Now(), err
			h.mu.Unlock()
			err = nil
			probe, answeredAt = backends.ProbeResult{}, time.Time{}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.openErr = err
		s.log.Info("cannot open backend", "backend", h.name, "err", err) // see above: Info
		return
	}
	if h.b != nil || s.closed.Load() {
		b.Close()
		return
	}
	h.b, h.openErr = b, nil
	h.capacity, h.written = probe.Capacity, 0
	h.answeredAt = answeredAt
}

// UnreachableBackend is a backend the store could not open or that did not
// answer its first probe.
type UnreachableBackend struct {
	Name  string
	Error string
}

// Unreachable lists the backends that failed to open or to answer when
// the store opened them, for a command to warn about. It does not probe.
func (s *Store) Unreachable() []UnreachableBackend {
	var out []UnreachableBackend
	for _, h := range s.handleList() {
		h.mu.Lock()
		switch {
		case h.b == nil && h.openErr != nil:
			out = append(out, UnreachableBackend{Name: h.name, Error: h.openErr.Error()})
		case h.probeErr != nil:
			out = append(out, UnreachableBackend{Name: h.name, Error: h.probeErr.Error()})
		case h.b == nil:
			out = append(out, UnreachableBackend{Name: h.name, Error: "not open"})
		}
		h.mu.Unlock()
	}
	return out
}

// registerSpec records a config backend in the metastore on first sight,
// and updates its spec (not its state) when the config changed it.
func (s *Store) registerSpec(ctx context.Context, spec backends.Spec) error {
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("backend %s: encode spec: %w", spec.Name, err)
	}
	domain := spec.Domain(s.cfg.PlacementLevel)
	rec, err := s.meta.GetBackend(ctx, spec.Name)
	switch {
	case errors.Is(err, metastore.ErrNotFound):
		now := time.Now()
		return s.meta.PutBackend(ctx, &metastore.BackendRecord{
			Name: spec.Name, SpecJSON: specJSON, State: metastore.StateUp, Since: now,
			Domain: domain, Spare: spec.Spare,
		})
	case err != nil:
		return fmt.Errorf("backend %s: %w", spec.Name, err)
	}
	if bytes.Equal(rec.SpecJSON, specJSON) && rec.Domain == domain && rec.Spare == spec.Spare {
		return nil
	}
	return s.meta.UpdateBackend(ctx, spec.Name, func(r *metastore.BackendRecord) error {
		r.SpecJSON, r.Domain, r.Spare = specJSON, domain, spec.Spare
		return nil
	})
}

// registerBackend adds a backend to a running store: records it (state up),
// opens it and writes its marker. The healer calls it for provisioned
// backends; the secret, if any, must already be in the secret store.
func (s *Store) registerBackend(ctx context.Context, spec backends.Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if err := s.registerSpec(ctx, spec); err != nil {
		return err
	}
	if err := s.refreshBackends(ctx); err != nil {
		return err
	}
	return s.writeMarkers(ctx)
}

// AddBackend registers a new backend in a running store, opens it and
// writes its identity marker; secret (a zdb password or S3 secret key, ""
// if none) is saved in the secrets file under spec.SecretRef first.
func (s *Store) AddBackend(ctx context.Context, spec backends.Spec, secret string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	// A spec that cannot work is refused before its secret is saved.
	if err := spec.Validate(); err != nil {
		return err
	}
	if secret != "" {
		if spec.SecretRef == "" {
			return fmt.Errorf("backend %s: a secret was given but the spec has no secret_ref", spec.Name)
		}
		if err := s.secrets.Add(spec.SecretRef, secret); err != nil {
			return fmt.Errorf("backend %s: %w", spec.Name, err)
		}
	}
	return s.registerBackend(ctx, spec)
}

// refreshBackends re-reads the metastore's backend records: new ones are
// opened (in parallel), retired or replaced ones closed, states updated.
func (s *Store) refreshBackends(ctx context.Context) error {
	fresh, err := s.loadHandles(ctx)
	if err != nil {
		return err
	}
	s.openHandles(ctx, fresh, false)
	return nil
}

// loadHandles is refreshBackends but for opening the new backends: it
// returns their handles.
func (s *Store) loadHandles(ctx context.Context) ([]*handle, error) {
	recs, err := s.meta.ListBackends(ctx)
	if err != nil {
		return nil, fmt.Errorf("refresh backends: %w", err) // the metastore names the listing
	}
	var fresh []*handle
	seen := map[string]bool{}
	s.bmu.Lock()
	for _, rec := range recs {
		if rec.State == metastore.StateRetired || rec.State == metastore.StateReplaced {
			continue
		}
		seen[rec.Name] = true
		h := s.handles[rec.Name]
		var spec backends.Spec
		if err := json.Unmarshal(rec.SpecJSON, &spec); err != nil {
			s.bmu.Unlock()
			return nil, fmt.Errorf("backend %s: stored spec: %w", rec.Name, err)
		}
		if h != nil && h.spec != spec {
			// The spec changed (config edit): reopen with the new one.
			h.mu.Lock()
			if h.b != nil {
				h.b.Close()
				h.b = nil
			}
			h.mu.Unlock()
			h = nil
		}
		if h == nil {
			h = &handle{name: rec.Name, spec: spec}
			s.handles[rec.Name] = h
			fresh = append(fresh, h)
		}
		h.mu.Lock()
		h.rec = rec
		h.mu.Unlock()
	}
	for name, h := range s.handles {
		if !seen[name] {
			delete(s.handles, name)
			h.mu.Lock()
			if h.b != nil {
				h.b.Close()
				h.b = nil
			}
			h.mu.Unlock()
		}
	}
	s.refreshed = time.Now()
	s.bmu.Unlock()
	return fresh, nil
}

// openHandles opens and probes the backends of handles at once, each for
// openTimeout at most. When opening the store (atOpen) it stops waiting
// for the last ones when they are remote (onlyRemote), the others have
// answered and cover the policy's k+m failure domains, and lagWait has
// passed: their opens go on in the background, and such a backend is taken
// for one that did not answer its probe.
func (s *Store) openHandles(ctx context.Context, handles []*handle, atOpen bool) {
	type answer struct {
		h    *handle
		took time.Duration
	}
	start := time.Now()
	done := make(chan answer, len(handles)) // buffered: opens left behind never block
	pending := map[*handle]bool{}
	for _, h := range handles {
		pending[h] = true
		go func() {
			octx, cancel := context.WithTimeout(ctx, openTimeout)
			defer cancel()
			s.openHandle(octx, h)
			done <- answer{h, time.Since(start)}
		}()
	}
	var slowest time.Duration
	var giveUp <-chan time.Time
	for len(pending) > 0 {
		select {
		case a := <-done:
			delete(pending, a.h)
			slowest = max(slowest, a.took)
			if atOpen && len(pending) > 0 && onlyRemote(pending) && s.domainsWithout(pending) >= s.cfg.Policy.K+s.cfg.Policy.M {
				giveUp = time.After(lagWait(slowest) - time.Since(start))
			}
		case <-giveUp:
			err := fmt.Errorf("did not answer within %s of opening the store, while the others answered", lagWait(slowest).Round(100*time.Millisecond))
			for h := range pending {
				h.mu.Lock()
				if h.b == nil && h.openErr == nil {
					h.failedAt, h.probeErr = time.Now(), err
					s.log.Info("backend does not answer", "backend", h.name, "err", err)
				}
				h.mu.Unlock()
			}
			return
		}
	}
}

// onlyRemote reports whether every handle in hs is a backend on another
// machine. A local backend is always waited for: one that a crash left
// without its index reads every value's header when it opens, which can
// take seconds, and it is not hung.
func onlyRemote(hs map[*handle]bool) bool {
	for h := range hs {
		if h.spec.Kind == backends.KindLocal {
			return false
		}
	}
	return true
}

// lagWait is how long opening the store waits for the last backends once
// the others answered, the slowest of them in slowest: a hung node costs
// that instead of openTimeout, and one a few times slower than the rest is
// still waited for.
func lagWait(slowest time.Duration) time.Duration {
	return max(2*time.Second, 4*slowest)
}

// domainsWithout counts the distinct failure domains of the open,
// answering, non-spare backends that count for placement, leaving out
// those in skip.
func (s *Store) domainsWithout(skip map[*handle]bool) int {
	domains := map[string]bool{}
	for _, h := range s.handleList() {
		if skip[h] {
			continue
		}
		h.mu.Lock()
		ok := h.b != nil && h.probeErr == nil && !h.rec.Spare && countsForPlacement(h.rec.State)
		h.mu.Unlock()
		if ok {
			domains[h.spec.Domain(s.cfg.PlacementLevel)] = true
		}
	}
	return len(domains)
}

// noStoreError says that the metadata a config opens holds no store: a
// catalog does not make one.
func noStoreError(cfg *Config) error {
	field, where := "metadata_dir", cfg.MetadataDir
	if cfg.Metastore.Kind == "etcd" {
		field, where = "metastore", cfg.metadataWhere()
	}
	return &ConfigError{File: cfg.path, Field: field, Msg: fmt.Sprintf("no store at %s: healstore init makes one; "+
		"if the store is elsewhere, check dir and metadata_dir (or [metastore]), and that their volume is mounted", where)}
}

// maybeRefresh re-reads backend states when the view is older than
// refreshEvery; errors keep the old view.
func (s *Store) maybeRefresh(ctx context.Context) {
	s.bmu.Lock()
	stale := time.Since(s.refreshed) > refreshEvery
	s.bmu.Unlock()
	if stale {
		if err := s.refreshBackends(ctx); err != nil {
			s.log.Warn("refresh backends", "err", err)
		}
	}
}

// handleList returns the pool's handles sorted by name.
func (s *Store) handleList() []*handle {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	out := make([]*handle, 0, len(s.handles))
	for _, h := range s.handles {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// countsForPlacement reports whether a backend in state st counts towards
// the failure domains a store can place stripes in.
func countsForPlacement(st metastore.BackendState) bool {
	switch st {
	case metastore.StateRetired, metastore.StateReplaced, metastore.StateDraining:
		return false
	}
	return true
}

// checkDomains refuses a store whose backends, even all up, cannot hold
// k+m shards in distinct failure domains.
func (s *Store) checkDomains() error {
	p := s.cfg.Policy
	need := p.K + p.M
	domains := map[string][]string{}
	for _, h := range s.handleList() {
		h.mu.Lock()
		rec := h.rec
		h.mu.Unlock()
		if rec.Spare || !countsForPlacement(rec.State) {
			continue
		}
		d := h.spec.Domain(s.cfg.PlacementLevel)
		domains[d] = append(domains[d], h.name)
	}
	if len(domains) >= need {
		return nil
	}
	var list []string
	for d, names := range domains {
		list = append(list, fmt.Sprintf("%s (%s)", d, joinLimited(names, 3)))
	}
	sort.Strings(list)
	detail := fmt.Sprintf("policy %d+%d needs %d backends in distinct %s failure domains; the store has %d",
		p.K, p.M, need, s.cfg.PlacementLevel, len(domains))
	if len(list) > 0 {
		detail += ": " + joinLimited(list, 8)
	}
	detail += fmt.Sprintf("; add %d backend(s) on other %ss, or lower policy.k+policy.m", need-len(domains), s.cfg.PlacementLevel)
	if s.cfg.PlacementLevel == "farm" {
		detail += ", or use placement_level = \"node\""
	}
	return &InsufficientBackendsError{Op: "open", Usable: len(domains), Needed: need, Detail: detail}
}

// setWiped notes that h was found wiped: Stat counts its shards missing
// until a healer has marked it again (recheckWiped), as nothing this
// process may run records the loss before that.
func (s *Store) setWiped(h *handle) {
	h.mu.Lock()
	h.wiped = true
	h.mu.Unlock()
}

// recheckWiped looks again at the marker of each backend found wiped and
// forgets the finding once the marker is back: a healer then has queued
// what it lost (or rebuilt it), and the queue says what is missing.
func (s *Store) recheckWiped(ctx context.Context) {
	for _, h := range s.handleList() {
		h.mu.Lock()
		b, wiped := h.b, h.wiped
		h.mu.Unlock()
		if !wiped || b == nil {
			continue
		}
		if _, err := b.Get(ctx, MarkerKey); err == nil {
			h.mu.Lock()
			h.wiped = false
			h.mu.Unlock()
		}
	}
}

// writeMarkers writes the identity marker on every open backend that never
// had one. A backend whose record says a marker was written but which has
// none now was wiped: the marker is not rewritten (that would hide the
// loss from the healer). A backend carrying another store's marker is
// refused on first sight and kept out of placement afterwards.
//
// The backends are asked all at once, each for openTimeout at most, and a
// backend that did not answer its probe when it was opened is not asked:
// one after another, each hung backend held every command for its call
// deadline (30 s) before it began. The healer's monitor marks those when
// they answer.
func (s *Store) writeMarkers(ctx context.Context) error {
	hs := s.handleList()
	errs := make([]error, len(hs))
	var wg sync.WaitGroup
	for i, h := range hs {
		h.mu.Lock()
		b, rec, silent := h.b, h.rec, h.probeErr != nil
		h.mu.Unlock()
		if b == nil || silent {
			continue
		}
		wg.Go(func() {
			mctx, cancel := context.WithTimeout(ctx, openTimeout)
			defer cancel()
			errs[i] = s.checkMarker(mctx, h, b, rec)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err // the first backend's, in the handles' order
		}
	}
	return nil
}

// checkMarker is writeMarkers for one backend.
func (s *Store) checkMarker(ctx context.Context, h *handle, b backends.Backend, rec metastore.BackendRecord) error {
	want, err := json.Marshal(Marker{StoreID: s.storeID, Backend: h.name})
	if err != nil {
		return err
	}
	got, err := b.Get(ctx, MarkerKey)
	switch {
	case err == nil:
		var m Marker
		if jerr := json.Unmarshal(got, &m); jerr != nil || m.StoreID != s.storeID {
			if rec.Marker == "" {
				return fmt.Errorf("backend %s holds another store's data (its %s names store %q, this store is %q); refusing to use it. "+
					"Either the backend's place is another store's, or the metadata this config opens (%s) is not its store's: "+
					"check dir and metadata_dir (or [metastore]), and that their volume is mounted",
					h.name, MarkerKey, m.StoreID, s.storeID, s.cfg.metadataWhere())
			}
			s.log.Error("backend carries a foreign identity marker; not placing shards on it", "backend", h.name, "store", m.StoreID)
			h.mu.Lock()
			h.foreign = true
			h.mu.Unlock()
			return nil
		}
		if rec.Marker == "" {
			if err := s.setMarker(ctx, h.name, string(got)); err != nil {
				return err
			}
		}
	case errors.Is(err, backends.ErrNotFound):
		if rec.Marker != "" {
			s.log.Warn("backend lost its identity marker (wiped?); leaving it for the healer", "backend", h.name)
			s.setWiped(h)
			return nil
		}
		// Never marked (unreachable when the store opened, and
		// written later?): if a shard the metadata places there is
		// gone too, it was wiped, and a fresh marker would hide it.
		lost, herr := healer.ShardGone(ctx, s.meta, b)
		if lost {
			s.log.Warn("backend has no identity marker and lost a shard the metadata places there (wiped?); leaving it for the healer", "backend", h.name)
			s.setWiped(h)
			return nil
		}
		if herr != nil {
			s.log.Warn("cannot tell whether backend lost its shards; not marking it", "backend", h.name, "err", herr)
			return nil
		}
		if err := b.Put(ctx, MarkerKey, want); err != nil {
			s.log.Warn("cannot write identity marker", "backend", h.name, "err", err)
			return nil
		}
		if err := s.setMarker(ctx, h.name, string(want)); err != nil {
			return err
		}
	default:
		s.log.Warn("cannot read identity marker", "backend", h.name, "err", err)
	}
	return nil
}

func (s *Store) setMarker(ctx context.Context, name, marker string) error {
	err := s.meta.UpdateBackend(ctx, name, func(r *metastore.BackendRecord) error {
		r.Marker = marker
		return nil
	})
	if err != nil {
		return fmt.Errorf("backend %s: record marker: %w", name, err)
	}
	h := s.handleOf(name)
	if h != nil {
		h.mu.Lock()
		h.rec.Marker = marker
		h.mu.Unlock()
	}
	return nil
}

// randSource returns a generator for placement; callers hold no lock, so
// each gets its own child generator.
func (s *Store) randSource() *rand.Rand {
	s.rndMu.Lock()
	defer s.rndMu.Unlock()
	return rand.New(rand.NewPCG(s.rnd.Uint64(), s.rnd.Uint64()))
}
