package healstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer/snapshot"
	"github.com/healstore/healstore/metastore"
)

// This file keeps the metastore recoverable from the backends: snapshots
// on a schedule (healer/snapshot does the work), the loss window, and the
// list of snapshots. The daemon runs the snapshotter on the leader only:
//
//	sn, _ := s.NewSnapshotter(healstore.DefaultSnapshotConfig())
//	s.RunAsLeader(ctx, func(ctx context.Context) error {
//		go sn.Run(ctx)
//		return healer.Run(ctx)
//	})

// SnapshotConfig says when the metastore is snapshotted onto the backends.
type SnapshotConfig struct {
	// Interval: the metastore is checked at least this often and a
	// snapshot taken when it changed. Default 30s, which keeps the loss
	// window (changes not yet on the backends) under a minute.
	Interval Duration `toml:"interval,omitempty" json:"interval,omitempty"`
	// MaxChanges: a snapshot is taken as soon as this many metadata
	// commits accumulated, before Interval ends. Default 1000; negative
	// disables. Needs a metastore that counts its commits (etcd, or a KV
	// wrapped with snapshot.CountCommits).
	MaxChanges int64 `toml:"max_changes,omitempty" json:"max_changes,omitempty"`
	// MaxAge: when only backend bookkeeping changed (probe times,
	// capacities), a snapshot waits this long. Default 10m.
	MaxAge Duration `toml:"max_age,omitempty" json:"max_age,omitempty"`
	// Keep is how many snapshots stay on the backends. Default 3.
	Keep int `toml:"keep,omitempty" json:"keep,omitempty"`
}

// DefaultSnapshotConfig returns the defaults.
func DefaultSnapshotConfig() SnapshotConfig {
	return SnapshotConfig{
		Interval:   Duration(snapshot.DefaultInterval),
		MaxChanges: snapshot.DefaultMaxChanges,
		MaxAge:     Duration(snapshot.DefaultMaxAge),
		Keep:       snapshot.DefaultKeep,
	}
}

// metaSnapshotStatus names the metastore value where the snapshotter
// records its last check, so every process sharing the metastore can
// report the loss window. Its key is one of snapshot.Volatile's: writing
// it does not itself make a snapshot due.
const metaSnapshotStatus = "snapshot/status"

// snapshotStatus is the JSON of metaSnapshotStatus.
type snapshotStatus struct {
	// Covered is the time of the view last found on the backends: every
	// commit before it is in snapshot Snapshot.
	Covered  time.Time `json:"covered"`
	Counter  string    `json:"counter,omitempty"`
	Position uint64    `json:"position,omitempty"`
	Snapshot string    `json:"snapshot,omitempty"`
	Seq      uint64    `json:"seq,omitempty"`
	Taken    time.Time `json:"taken"`
	Checked  time.Time `json:"checked"`
	// Interval is the schedule of the process that wrote it.
	Interval    time.Duration `json:"interval,omitempty"`
	LastError   string        `json:"last_error,omitempty"`
	LastErrorAt time.Time     `json:"last_error_at"`
	By          string        `json:"by,omitempty"`
}

// recoverySettings travel in every snapshot so that recovery can write a
// config equal to the lost one (minus paths and secrets).
type recoverySettings struct {
	Policy         encoder.Policy `json:"policy"`
	PlacementLevel string         `json:"placement_level"`
	WriteQuorum    int            `json:"write_quorum,omitempty"`
	HedgeAfter     Duration       `json:"hedge_after,omitempty"`
	Healer         HealerConfig   `json:"healer"`
	// Absent from snapshots of older versions: recovery then writes the
	// defaults.
	InlineMaxSize *int64          `json:"inline_max_size,omitempty"`
	Snapshots     *SnapshotConfig `json:"snapshots,omitempty"`
}

// SnapshotInfo describes one snapshot on the backends.
type SnapshotInfo struct {
	ID  string `json:"id"`
	Seq uint64 `json:"seq"`
	// Taken is when the metastore was read; everything committed before
	// is in the snapshot.
	Taken       time.Time `json:"taken"`
	Records     int64     `json:"records"`
	Bytes       int64     `json:"bytes"` // uncompressed
	Stripes     int       `json:"stripes"`
	Consistency string    `json:"consistency"`
	// Backends holding a shard of it.
	Backends []string `json:"backends"`
}

func snapshotInfo(m *snapshot.Manifest) SnapshotInfo {
	seen := map[string]bool{}
	var names []string
	for _, st := range m.Stripes {
		for _, sh := range st.Shards {
			if sh.Backend != "" && !seen[sh.Backend] {
				seen[sh.Backend] = true
				names = append(names, sh.Backend)
			}
		}
	}
	return SnapshotInfo{ID: m.ID.String(), Seq: m.Seq, Taken: m.Taken, Records: m.Records, Bytes: m.Size,
		Stripes: len(m.Stripes), Consistency: m.Consistency, Backends: names}
}

// LossWindow is how much metadata would be lost if this store's machine
// (or its etcd cluster) vanished now: what changed since the newest view
// on the backends.
type LossWindow struct {
	// Covered: every metadata commit before it is in a snapshot on the
	// backends. Zero when no snapshot was ever taken.
	Covered time.Time `json:"covered"`
	// Age is the time since Covered (0 when none).
	Age time.Duration `json:"age"`
	// Changes counts metadata commits since Covered; -1 when the metastore
	// cannot count them (pebble without a commit counter). On etcd it
	// counts every write to the cluster, other stores' included.
	Changes int64 `json:"changes"`
	// Snapshot is the newest snapshot (empty when none).
	Snapshot *SnapshotInfo `json:"snapshot,omitempty"`
	// Checked is the last time the snapshotter compared the metastore
	// with the newest snapshot; Interval its schedule.
	Checked  time.Time     `json:"checked"`
	Interval time.Duration `json:"interval,omitempty"`
	// LastError is the snapshotter's last failure, if its last check
	// failed (then the window grows until a check succeeds).
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at"`
}

// LossWindow reports the loss window from what the snapshotter (running
// in this process or in another one sharing the metastore) recorded.
func (s *Store) LossWindow(ctx context.Context) (*LossWindow, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	lw := &LossWindow{Changes: -1}
	raw, err := s.meta.GetMeta(ctx, metaSnapshotStatus)
	if errors.Is(err, metastore.ErrNotFound) {
		return lw, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loss window: %w", err)
	}
	var st snapshotStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("loss window: snapshot status record: %w", err)
	}
	lw.Covered, lw.Checked, lw.Interval = st.Covered, st.Checked, st.Interval
	lw.LastError, lw.LastErrorAt = st.LastError, st.LastErrorAt
	if !st.Covered.IsZero() {
		lw.Age = max(time.Since(st.Covered), 0)
	}
	if st.Snapshot != "" {
		lw.Snapshot = &SnapshotInfo{ID: st.Snapshot, Seq: st.Seq, Taken: st.Taken}
	}
	if st.Counter != "" {
		pos, counter, ok, err := snapshot.Changes(ctx, s.meta.KV())
		if err == nil && ok && counter == st.Counter && pos > st.Position {
			// The status record's own commit is not a change to lose.
			lw.Changes = int64(pos - st.Position - 1)
		} else if err == nil && ok && counter == st.Counter {
			lw.Changes = 0
		}
	}
	return lw, nil
}

// Snapshots lists the snapshots the backends' pointers name, newest first.
func (s *Store) Snapshots(ctx context.Context) ([]SnapshotInfo, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	keys, err := s.snapshotKeys()
	if err != nil {
		return nil, err
	}
	members, err := s.snapshotMembers(ctx)
	if err != nil {
		return nil, err
	}
	var bs []backends.Backend
	for _, m := range members {
		if m.Backend != nil {
			bs = append(bs, m.Backend)
		}
	}
	cat := snapshot.Merge(snapshot.ReadPointers(ctx, keys, bs))
	var out []SnapshotInfo
	if cat.StoreID != s.storeID {
		return out, nil
	}
	for i := range cat.Snapshots {
		out = append(out, snapshotInfo(&cat.Snapshots[i]))
	}
	return out, nil
}

func (s *Store) snapshotKeys() (*snapshot.Keys, error) {
	if s.key == nil {
		return nil, errors.New("snapshots need a master key: set master_key_file (snapshots are always encrypted, whatever the policy says)")
	}
	return snapshot.DeriveKeys(s.key)
}

// snapshotMembers lists the backends for the snapshotter: every backend
// not retired or replaced receives the pointer; those up (not spares, not
// draining) may receive snapshot shards. Down backends are left out so a
// snapshot does not wait on their timeouts, and so, for now, are those
// this store knows not to answer (outOfReach): listed without a Backend.
func (s *Store) snapshotMembers(ctx context.Context) ([]snapshot.Member, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	recs, err := s.meta.ListBackends(ctx)
	if err != nil {
		return nil, fmt.Errorf("snapshot members: %w", err) // the metastore names the listing
	}
	var out []snapshot.Member
	for _, rec := range recs {
		switch rec.State {
		case metastore.StateRetired, metastore.StateReplaced, metastore.StateDown:
			continue
		}
		var spec backends.Spec
		if err := json.Unmarshal(rec.SpecJSON, &spec); err != nil {
			return nil, fmt.Errorf("backend %s: stored spec: %w", rec.Name, err)
		}
		m := snapshot.Member{
			Name: rec.Name, Spec: spec, Domain: spec.Domain(s.cfg.PlacementLevel),
			Eligible: rec.State == metastore.StateUp && !rec.Spare,
			Free:     rec.Capacity.Free, FreeKnown: rec.Capacity.Known,
		}
		// A backend known not to answer is left out, as if unreachable:
		// its pointer, listing and deletes would each wait out the call
		// deadline (a stopping daemon's last snapshot took 30 s while a
		// node hung). A later snapshot writes its pointer once it is back.
		unreachable := false
		if h := s.handleOf(rec.Name); h != nil {
			h.mu.Lock()
			unreachable = h.outOfReach(rec)
			h.mu.Unlock()
		}
		if unreachable {
			m.Eligible = false
		} else if b, ok := s.Backend(rec.Name); ok {
			m.Backend = b
		}
		out = append(out, m)
	}
	return out, nil
}

// Snapshotter takes snapshots of a store's metastore onto its backends.
// Build it with NewSnapshotter; Run it (on the leader) or call Take.
type Snapshotter struct {
	s     *Store
	cfg   SnapshotConfig
	snap  *snapshot.Snapshotter
	settl []byte
	by    string

	mu   sync.Mutex
	last snapshotStatus
}

// NewSnapshotter prepares a snapshotter for s. Zero fields of c take the
// defaults. It needs the master key (snapshots are always encrypted).
func (s *Store) NewSnapshotter(c SnapshotConfig) (*Snapshotter, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	def := DefaultSnapshotConfig()
	if c.Interval <= 0 {
		c.Interval = def.Interval
	}
	if c.MaxChanges == 0 {
		c.MaxChanges = def.MaxChanges
	}
	if c.MaxAge <= 0 {
		c.MaxAge = def.MaxAge
	}
	if c.Keep <= 0 {
		c.Keep = def.Keep
	}
	keys, err := s.snapshotKeys()
	if err != nil {
		return nil, err
	}
	tmp := s.cfg.CacheDir
	if tmp == "" {
		tmp = os.TempDir()
	} else if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("snapshots: cache dir: %w", err)
	}
	settings, err := json.Marshal(recoverySettings{
		Policy: s.cfg.Policy, PlacementLevel: s.cfg.PlacementLevel, WriteQuorum: s.cfg.WriteQuorum,
		HedgeAfter: s.cfg.HedgeAfter, Healer: s.cfg.Healer,
		InlineMaxSize: &s.cfg.InlineMaxSize, Snapshots: &c,
	})
	if err != nil {
		return nil, fmt.Errorf("snapshots: settings: %w", err)
	}
	snap, err := snapshot.New(snapshot.Config{
		Keys: keys, StoreID: s.storeID, K: s.cfg.Policy.K, M: s.cfg.Policy.M,
		Keep: c.Keep, TempDir: tmp, Logger: s.log,
	})
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	return &Snapshotter{s: s, cfg: c, snap: snap, settl: settings, by: fmt.Sprintf("%s/%d", host, os.Getpid())}, nil
}

// Run checks the metastore on the schedule and snapshots it until ctx
// ends or the store is closed. Run it on one process per store (see
// RunAsLeader). It returns nil when ctx ends, ErrClosed when the store
// was closed.
func (sn *Snapshotter) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	err := sn.snap.Run(ctx, sn.s.meta.KV(), sn.s.snapshotMembers,
		snapshot.Schedule{Interval: sn.cfg.Interval.Std(), MaxChanges: sn.cfg.MaxChanges, MaxAge: sn.cfg.MaxAge.Std()},
		snapshot.TakeOptions{Settings: sn.settl},
		func(res *snapshot.Result, err error) {
			if sn.s.checkOpen() != nil {
				cancel(ErrClosed)
				return
			}
			sn.record(ctx, res, err)
		})
	if cause := context.Cause(ctx); errors.Is(cause, ErrClosed) {
		return fmt.Errorf("snapshots: store: %w", ErrClosed)
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Take checks the metastore now and uploads a snapshot if it changed
// since the newest one (always, with force). It returns the newest
// snapshot on the backends afterwards.
func (sn *Snapshotter) Take(ctx context.Context, force bool) (*SnapshotInfo, error) {
	if err := sn.s.checkOpen(); err != nil {
		return nil, err
	}
	members, err := sn.s.snapshotMembers(ctx)
	var res *snapshot.Result
	if err == nil {
		res, err = sn.snap.Take(ctx, sn.s.meta.KV(), members, snapshot.TakeOptions{Settings: sn.settl, Force: force, MaxAge: sn.cfg.MaxAge.Std()})
	}
	sn.record(ctx, res, err)
	if err != nil {
		return nil, err
	}
	info := snapshotInfo(&res.Newest)
	return &info, nil
}

// record writes the outcome of a check into the metastore for LossWindow.
func (sn *Snapshotter) record(ctx context.Context, res *snapshot.Result, err error) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	st := &sn.last
	st.Interval, st.By, st.Checked = sn.cfg.Interval.Std(), sn.by, time.Now().UTC()
	if err != nil {
		st.LastError, st.LastErrorAt = err.Error(), st.Checked
		sn.s.log.Warn("snapshot failed", "err", err)
		if st.Snapshot == "" {
			// Nothing taken by this process yet: keep what an earlier
			// one recorded, whose snapshot is still on the backends.
			// Written over, status said none was ever taken.
			var prev snapshotStatus
			if raw, gerr := sn.s.meta.GetMeta(context.WithoutCancel(ctx), metaSnapshotStatus); gerr == nil && json.Unmarshal(raw, &prev) == nil {
				st.Covered, st.Counter, st.Position = prev.Covered, prev.Counter, prev.Position
				st.Snapshot, st.Seq, st.Taken = prev.Snapshot, prev.Seq, prev.Taken
			}
		}
	} else {
		st.LastError, st.LastErrorAt = "", time.Time{}
		st.Covered, st.Counter, st.Position = res.View.UTC(), res.Counter, res.Position
		st.Snapshot, st.Seq, st.Taken = res.Newest.ID.String(), res.Newest.Seq, res.Newest.Taken
		if res.Uploaded {
			sn.s.log.Info("snapshot taken", "id", st.Snapshot, "seq", st.Seq, "records", res.Newest.Records,
				"bytes", res.Newest.Size, "pointers", res.Pointers, "pruned", res.Pruned)
		}
	}
	raw, jerr := json.Marshal(st)
	if jerr != nil {
		return
	}
	if perr := sn.s.meta.PutMeta(context.WithoutCancel(ctx), metaSnapshotStatus, raw); perr != nil {
		sn.s.log.Warn("cannot record snapshot status", "err", perr)
	}
}

// StartSnapshots builds a snapshotter with c and runs it in the
// background until ctx ends or the store is closed. Use it when this
// process is the only one using the metastore (pebble); with etcd, run the
// snapshotter under RunAsLeader instead.
func (s *Store) StartSnapshots(ctx context.Context, c SnapshotConfig) (*Snapshotter, error) {
	sn, err := s.NewSnapshotter(c)
	if err != nil {
		return nil, err
	}
	go sn.Run(ctx)
	return sn, nil
}
