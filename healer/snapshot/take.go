package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/all"
	"github.com/healstore/healstore/backends/placement"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/metastore"
)

// DefaultKeep is how many snapshots are kept when Config.Keep is 0.
const DefaultKeep = 3

// Config configures a Snapshotter.
type Config struct {
	// Keys derived from the store's master key (DeriveKeys).
	Keys *Keys
	// StoreID is written in every pointer; pointers of another store are
	// ignored.
	StoreID string
	// K and M code each snapshot stripe; use the store's policy so a
	// snapshot survives what the data survives.
	K, M int
	// Keep is how many snapshots stay on the backends (default 3); older
	// ones are deleted once a newer pointer is written.
	Keep int
	// TempDir receives the local spool of a view while it is uploaded
	// (default os.TempDir()).
	TempDir string
	// Logger receives warnings (failed pointer writes, pruning); nil
	// discards them.
	Logger *slog.Logger
}

// Member is one backend of the store as the snapshotter sees it.
type Member struct {
	Name string
	// Spec is recorded in pointers so recovery can reach the backend; it
	// must hold no secret (only SecretRef).
	Spec backends.Spec
	// Domain is the failure domain at the store's placement level.
	Domain string
	// Backend is the open backend, nil when it cannot be reached now.
	Backend backends.Backend
	// Eligible backends may receive snapshot shards (up, not draining);
	// every member with a Backend receives the pointer.
	Eligible  bool
	Free      int64
	FreeKnown bool
}

// Snapshotter takes snapshots of a metastore onto the backends. Safe for
// concurrent use; one Take runs at a time.
type Snapshotter struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	loaded  bool
	kept    []Manifest               // newest first
	specs   map[string]backends.Spec // of backends holding kept shards
	holders map[string]bool          // backends known to hold the current pointer
	maxSeq  uint64
}

// New returns a Snapshotter. It reads nothing until the first Take.
func New(cfg Config) (*Snapshotter, error) {
	if cfg.Keys == nil {
		return nil, errors.New("snapshot: no keys")
	}
	if cfg.StoreID == "" {
		return nil, errors.New("snapshot: no store id")
	}
	if cfg.K < 1 || cfg.M < 1 {
		return nil, fmt.Errorf("snapshot: k=%d m=%d: both must be at least 1", cfg.K, cfg.M)
	}
	if cfg.Keep <= 0 {
		cfg.Keep = DefaultKeep
	}
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Snapshotter{cfg: cfg, log: log, specs: map[string]backends.Spec{}, holders: map[string]bool{}}, nil
}

// TakeOptions adjust one Take.
type TakeOptions struct {
	// Settings are recorded in the manifest for recovery (opaque here).
	Settings json.RawMessage
	// Force uploads even when nothing changed since the newest snapshot.
	Force bool
	// MaxAge: when only Volatile values changed, a new snapshot is taken
	// only once the newest is older than MaxAge (0: never for such
	// changes alone).
	MaxAge time.Duration
}

// Result is what one Take did.
type Result struct {
	// Uploaded is false when the view matched the newest snapshot.
	Uploaded bool
	// Newest is the newest snapshot on the backends after the call.
	Newest Manifest
	// View is when the metastore was read, and Counter/Position its place
	// in the change count: every commit before it is in Newest.
	View     time.Time
	Counter  string
	Position uint64
	// Pointers counts the backends holding the current pointer after the
	// call; PointerErrors names those where writing it failed.
	Pointers      int
	PointerErrors map[string]error
	// Pruned counts snapshot shards deleted.
	Pruned int
}

// Kept returns the snapshots the last Take (or load) saw on the
// backends, newest first.
func (s *Snapshotter) Kept() []Manifest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Manifest(nil), s.kept...)
}

// load reads the pointers once, so that a restarted (or newly elected)
// snapshotter continues the sequence and keeps pruning old snapshots.
func (s *Snapshotter) load(ctx context.Context, members []Member) error {
	if s.loaded {
		return nil
	}
	var bs []backends.Backend
	for _, m := range members {
		if m.Backend != nil {
			bs = append(bs, m.Backend)
		}
	}
	reads := ReadPointers(ctx, s.cfg.Keys, bs)
	// When no backend answered, one that did not may hold a newer
	// pointer: better to wait than to restart the sequence and prune what
	// that pointer names.
	if countOK(reads) == 0 {
		for _, r := range reads {
			if !errors.Is(r.Err, ErrCorrupt) && !errors.Is(r.Err, ErrWrongKey) {
				return fmt.Errorf("read snapshot pointers: %w", r.Err)
			}
		}
	}
	cat := Merge(reads)
	for _, m := range cat.Snapshots {
		if cat.StoreID != s.cfg.StoreID {
			break
		}
		s.kept = append(s.kept, m)
		s.maxSeq = max(s.maxSeq, m.Seq)
	}
	if len(s.kept) > s.cfg.Keep {
		s.kept = s.kept[:s.cfg.Keep]
	}
	if cat.StoreID == s.cfg.StoreID {
		for name, spec := range cat.Specs {
			s.specs[name] = spec
		}
	}
	if len(s.kept) > 0 {
		for _, r := range reads {
			if r.Pointer != nil && len(r.Pointer.Snapshots) > 0 && r.Pointer.Snapshots[0].ID == s.kept[0].ID {
				s.holders[r.Backend] = true
			}
		}
	}
	s.loaded = true
	return nil
}

func countOK(reads []PointerRead) int {
	n := 0
	for _, r := range reads {
		if r.Pointer != nil || errors.Is(r.Err, backends.ErrNotFound) {
			n++
		}
	}
	return n
}

// Take reads a consistent view of kv and, unless it matches the newest
// snapshot, uploads it as a new snapshot and points every reachable
// backend at it, then prunes snapshots beyond Keep.
func (s *Snapshotter) Take(ctx context.Context, kv metastore.KV, members []Member, o TakeOptions) (*Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.load(ctx, members); err != nil {
		return nil, err
	}
	view, err := readView(ctx, kv, s.cfg.TempDir)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	defer view.remove()
	res := &Result{View: view.taken, Counter: view.counter, Position: view.position, PointerErrors: map[string]error{}}

	if !o.Force && len(s.kept) > 0 {
		newest := s.kept[0]
		same := newest.Hashes.Full == view.hashes.Full
		volatileOnly := !same && newest.Hashes.Significant == view.hashes.Significant
		if same || (volatileOnly && (o.MaxAge <= 0 || time.Since(newest.Taken) < o.MaxAge)) {
			// Nothing to upload; make sure backends that joined since
			// hold the pointer too.
			res.Newest = newest
			if err := s.writePointers(ctx, members, res, true); err != nil {
				return nil, err
			}
			res.Pointers = len(s.holders)
			return res, nil
		}
	}

	man, err := s.upload(ctx, view, members, o.Settings)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	kept := append([]Manifest{*man}, s.kept...)
	var dropped []Manifest
	if len(kept) > s.cfg.Keep {
		dropped = kept[s.cfg.Keep:]
		kept = kept[:s.cfg.Keep]
	}
	prevKept, prevHolders := s.kept, s.holders
	s.kept, s.holders = kept, map[string]bool{}
	for _, m := range members {
		if s.holds(*man, m.Name) {
			s.specs[m.Name] = m.Spec
		}
	}
	res.Newest = *man
	if err := s.writePointers(ctx, members, res, false); err != nil {
		// No backend points at the new snapshot: forget it and remove its
		// shards; the old pointers stand.
		s.kept, s.holders = prevKept, prevHolders
		s.deleteShards(context.WithoutCancel(ctx), members, []Manifest{*man})
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	s.maxSeq = man.Seq
	res.Uploaded = true
	res.Pointers = len(s.holders)
	res.Pruned = s.deleteShards(ctx, members, dropped)
	res.Pruned += s.sweep(ctx, members)
	return res, nil
}

// holds reports whether backend holds a shard of m.
func (s *Snapshotter) holds(m Manifest, backend string) bool {
	for _, st := range m.Stripes {
		for _, sh := range st.Shards {
			if sh.Backend == backend {
				return true
			}
		}
	}
	return false
}

// writePointers seals the pointer for s.kept and writes it to every
// reachable member (onlyMissing: to those not known to hold it). It fails
// only when no backend at all holds the pointer afterwards.
func (s *Snapshotter) writePointers(ctx context.Context, members []Member, res *Result, onlyMissing bool) error {
	if onlyMissing {
		s.checkHolders(ctx, members)
	}
	var targets []Member
	for _, m := range members {
		if m.Backend != nil && !(onlyMissing && s.holders[m.Name]) {
			targets = append(targets, m)
		}
	}
	if len(targets) == 0 {
		return nil
	}
	p := &Pointer{Format: pointerFormat, StoreID: s.cfg.StoreID, Written: time.Now().UTC(), Snapshots: s.kept}
	used := map[string]bool{}
	for _, m := range s.kept {
		for _, st := range m.Stripes {
			for _, sh := range st.Shards {
				if sh.Backend != "" {
					used[sh.Backend] = true
				}
			}
		}
	}
	for name := range used {
		if spec, ok := s.specs[name]; ok {
			p.Backends = append(p.Backends, spec)
		}
	}
	sort.Slice(p.Backends, func(i, j int) bool { return p.Backends[i].Name < p.Backends[j].Name })
	sealed, err := s.cfg.Keys.Seal(p)
	if err != nil {
		return err
	}
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, m := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.Backend.Put(ctx, PointerKey, sealed)
		}()
	}
	wg.Wait()
	for i, m := range targets {
		if errs[i] != nil {
			res.PointerErrors[m.Name] = errs[i]
			delete(s.holders, m.Name)
			s.log.Warn("cannot write snapshot pointer", "backend", m.Name, "err", errs[i])
			continue
		}
		s.holders[m.Name] = true
	}
	if len(s.holders) == 0 {
		return fmt.Errorf("no backend took the snapshot pointer (%d tried): %w", len(targets), errors.Join(errs...))
	}
	return nil
}

// checkHolders forgets the backends believed to hold the pointer that no
// longer do (wiped, or replaced by an empty one under the same name), so
// the next writePointers gives it back to them.
func (s *Snapshotter) checkHolders(ctx context.Context, members []Member) {
	var wg sync.WaitGroup
	// The map is changed after the Stats, not by them: this loop reads it.
	gone := make([]bool, len(members))
	for i, m := range members {
		if m.Backend == nil || !s.holders[m.Name] {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Backend.Stat(ctx, PointerKey)
			gone[i] = errors.Is(err, backends.ErrNotFound)
		}()
	}
	wg.Wait()
	for i, m := range members {
		if gone[i] {
			delete(s.holders, m.Name)
		}
	}
}

// upload encodes the spooled view and spreads its stripes.
func (s *Snapshotter) upload(ctx context.Context, view *spool, members []Member, settings json.RawMessage) (*Manifest, error) {
	var cands []placement.Candidate
	byName := map[string]Member{}
	maxShard := 0
	for _, m := range members {
		if m.Backend == nil || !m.Eligible {
			continue
		}
		byName[m.Name] = m
		cands = append(cands, placement.Candidate{Name: m.Name, Domain: m.Domain, Free: m.Free, FreeKnown: m.FreeKnown})
		if v := all.MaxValueSize(m.Spec.Kind); v > 0 && (maxShard == 0 || v < maxShard) {
			maxShard = v
		}
	}
	k, mm := s.cfg.K, s.cfg.M
	if len(cands) < k+1 {
		return nil, fmt.Errorf("only %d reachable backends, a snapshot needs at least k+1=%d", len(cands), k+1)
	}
	pol, err := snapshotPolicy(k, mm, maxShard)
	if err != nil {
		return nil, err
	}
	codec, err := encoder.NewCodec(pol, s.cfg.Keys.codec)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(view.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	man := &Manifest{
		ID: encoder.NewObjectID(), Seq: s.maxSeq + 1, Taken: view.taken.UTC(), Consistency: view.consistency,
		Counter: view.counter, Position: view.position, Records: view.records, Size: view.size,
		Hashes: view.hashes, Policy: pol, Settings: settings,
	}
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	enc := codec.NewStreamEncoder(ctx, man.ID, f, 2)
	defer enc.Close()
	for {
		block, st, err := enc.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.deleteShards(context.WithoutCancel(ctx), members, []Manifest{*man})
			return nil, fmt.Errorf("encode: %w", err)
		}
		// The stripe's buffers are left to the garbage collector rather
		// than released: a Put that timed out may still be reading them.
		ref, err := s.putStripe(ctx, man, int(block), st, cands, byName, rnd)
		man.Stripes = append(man.Stripes, ref)
		if err != nil {
			s.deleteShards(context.WithoutCancel(ctx), members, []Manifest{*man})
			return nil, err
		}
	}
	return man, nil
}

// putStripe places the k+m shards of one snapshot stripe in distinct
// failure domains where there are enough, reusing domains otherwise, and
// retries a failed shard on a backend the stripe does not use yet. At
// least k+1 shards must land.
func (s *Snapshotter) putStripe(ctx context.Context, man *Manifest, block int, st *encoder.Stripe, cands []placement.Candidate, byName map[string]Member, rnd *rand.Rand) (StripeRef, error) {
	n := len(st.Shards)
	ref := StripeRef{ID: st.ID, DataLen: st.DataLen, Shards: make([]ShardRef, n)}
	chosen, err := placement.Choose(cands, min(n, distinctDomains(cands)), nil, true, rnd)
	if err != nil {
		return ref, fmt.Errorf("place snapshot stripe %d: %w", block, err)
	}
	targets := make([]string, n)
	for i := range targets {
		targets[i] = chosen[i%len(chosen)].Name
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := ShardKey(man.Seq, man.ID, block, i)
			if errs[i] = byName[targets[i]].Backend.Put(ctx, key, st.Shards[i]); errs[i] == nil {
				ref.Shards[i] = ShardRef{Backend: targets[i], Key: key, Sum: st.Sums[i]}
			}
		}()
	}
	wg.Wait()
	// Retry failed shards, one at a time, on backends the stripe does not
	// use; there are few and they are small.
	used := map[string]bool{}
	for _, t := range targets {
		used[t] = true
	}
	for i := range n {
		if errs[i] == nil {
			continue
		}
		for _, c := range cands {
			if used[c.Name] {
				continue
			}
			used[c.Name] = true
			key := ShardKey(man.Seq, man.ID, block, i)
			if err := byName[c.Name].Backend.Put(ctx, key, st.Shards[i]); err == nil {
				ref.Shards[i] = ShardRef{Backend: c.Name, Key: key, Sum: st.Sums[i]}
				errs[i] = nil
				break
			}
		}
	}
	landed := 0
	for _, sh := range ref.Shards {
		if sh.Backend != "" {
			landed++
		}
	}
	if landed < s.cfg.K+1 {
		return ref, fmt.Errorf("snapshot stripe %d: only %d of %d shards landed (need %d): %w", block, landed, n, s.cfg.K+1, errors.Join(errs...))
	}
	return ref, nil
}

func distinctDomains(cands []placement.Candidate) int {
	d := map[string]bool{}
	for _, c := range cands {
		d[c.Domain] = true
	}
	return len(d)
}

// deleteShards removes the shards of the given snapshots from the
// reachable backends (best effort) and returns how many went.
func (s *Snapshotter) deleteShards(ctx context.Context, members []Member, ms []Manifest) int {
	open := map[string]backends.Backend{}
	for _, m := range members {
		if m.Backend != nil {
			open[m.Name] = m.Backend
		}
	}
	n := 0
	for _, m := range ms {
		for _, st := range m.Stripes {
			for _, sh := range st.Shards {
				b := open[sh.Backend]
				if b == nil || sh.Key == "" {
					continue
				}
				if err := b.Delete(ctx, sh.Key); err != nil {
					s.log.Warn("cannot delete old snapshot shard", "backend", sh.Backend, "key", sh.Key, "err", err)
					continue
				}
				n++
			}
		}
	}
	return n
}

// sweep deletes snapshot shards that no kept snapshot names and that are
// older than the newest (left by failed uploads or by pointers that were
// never written), so they cannot pile up. Shards with a sequence number
// at or above the newest may belong to an upload still running elsewhere
// and are left alone.
func (s *Snapshotter) sweep(ctx context.Context, members []Member) int {
	if len(s.kept) == 0 {
		return 0
	}
	keep := map[encoder.ObjectID]bool{}
	for _, m := range s.kept {
		keep[m.ID] = true
	}
	newest := s.kept[0].Seq
	n := 0
	for _, m := range members {
		if m.Backend == nil {
			continue
		}
		var stale []string
		err := m.Backend.List(ctx, ShardPrefix, func(key string, _ int64) error {
			seq, id, ok := ParseShardKey(key)
			if ok && !keep[id] && seq < newest {
				stale = append(stale, key)
			}
			return nil
		})
		if err != nil {
			s.log.Warn("cannot list snapshot shards", "backend", m.Name, "err", err)
			continue
		}
		for _, key := range stale {
			if err := m.Backend.Delete(ctx, key); err == nil {
				n++
			}
		}
	}
	return n
}
