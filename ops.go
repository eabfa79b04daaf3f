package healstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/metastore"
)

// ObjectInfo describes one object.
type ObjectInfo struct {
	Name     string            `json:"name"`
	Size     int64             `json:"size"`
	Created  time.Time         `json:"created"`
	Modified time.Time         `json:"modified"`
	ID       string            `json:"id"` // object version id, hex
	Policy   encoder.Policy    `json:"policy"`
	Blocks   int               `json:"blocks"`
	Mode     uint32            `json:"mode,omitempty"`
	Attrs    map[string]string `json:"attrs,omitempty"`
	// Inline: the object lives sealed in its metadata record (no stripes,
	// Blocks 0), protected by the metastore's durability, not by erasure
	// coding; Stat leaves Redundancy nil for it.
	Inline bool `json:"inline,omitempty"`
	// Redundancy is filled by Stat, and by Put and Create's Close for the
	// object as it was written (stripes short of k+m shards are queued for
	// repair); nil for an inline object.
	Redundancy *Redundancy `json:"redundancy,omitempty"`
}

// Redundancy summarises how safe an object's stripes are. A shard counts
// as healthy when it has a location on a backend that is up, suspect or
// draining, that this store could open (and does not carry another
// store's marker), and the repair queue does not record it lost (found
// missing or corrupt by a read, a write or a repair, or on a backend found
// wiped).
type Redundancy struct {
	// MinMargin is the lowest margin (healthy shards minus k) among the
	// object's stripes; below 0 the object cannot be read in full.
	MinMargin int `json:"min_margin"`
	// Degraded counts stripes below full redundancy (margin < m).
	Degraded int `json:"degraded_stripes"`
	// Unreadable counts stripes below margin 0 (fewer than k healthy
	// shards).
	Unreadable int `json:"unreadable_stripes"`
	// MissingShards counts shards that are not healthy: without a
	// location, on a backend that is down, replaced or retired or that
	// the store cannot open, or recorded lost by the repair queue.
	MissingShards int `json:"missing_shards"`
}

func toMetaPolicy(p encoder.Policy) metastore.Policy {
	return metastore.Policy{K: p.K, M: p.M, BlockSize: p.BlockSize, Compression: p.Compression, Encryption: p.Encryption, Checksum: p.Checksum}
}

func fromMetaPolicy(p metastore.Policy) encoder.Policy {
	return encoder.Policy{K: p.K, M: p.M, BlockSize: p.BlockSize, Compression: p.Compression, Encryption: p.Encryption, Checksum: p.Checksum}
}

func objectInfo(o *metastore.Object) *ObjectInfo {
	return &ObjectInfo{
		Name: o.Name, Size: o.Size, Created: o.Created, Modified: o.Modified,
		ID: hex.EncodeToString(o.ID[:]), Policy: fromMetaPolicy(o.Policy), Blocks: len(o.Stripes),
		Mode: o.Mode, Attrs: o.Attrs, Inline: o.IsInline(),
	}
}

// getObject maps the metastore's not-found to ErrNotFound.
func (s *Store) getObject(ctx context.Context, name string) (*metastore.Object, error) {
	o, err := s.meta.GetObject(ctx, name)
	if errors.Is(err, metastore.ErrNotFound) {
		return nil, fmt.Errorf("object %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return o, nil
}

// usable reports whether the shard at loc counts as healthy.
func (s *Store) usable(ctx context.Context, loc metastore.ShardLoc) bool {
	h := s.handleOf(loc.Backend)
	if h == nil {
		return false
	}
	h.mu.Lock()
	b, wiped := h.b, h.wiped
	lost := (h.b == nil && h.openErr != nil) || h.foreign
	state := h.rec.State
	h.mu.Unlock()
	if lost {
		// Known lost to this process, whatever its recorded state says
		// (which only a healer changes, and none may run).
		return false
	}
	if wiped {
		// Emptied, and nothing recorded that yet: what is there now was
		// written since, so the shard itself is asked for.
		if b == nil {
			return false // closed meanwhile (retired, reopened)
		}
		_, err := b.Stat(ctx, loc.Key)
		return err == nil
	}
	return state == metastore.StateUp || state == metastore.StateSuspect || state == metastore.StateDraining
}

// Stat describes object name, with its redundancy, read from every stripe
// record and the stripe's repair queue entry, if any (two point lookups
// per stripe; no backend is contacted but one this process found wiped,
// whose marker it reads again and which it asks for each shard placed
// there). ErrNotFound when there is none.
func (s *Store) Stat(ctx context.Context, name string) (*ObjectInfo, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	// A stripe gone missing between reading the object and reading the
	// stripe means the object was replaced or deleted meanwhile: the name
	// is read again, to describe the new version or say ErrNotFound.
	for attempt := 1; ; attempt++ {
		info, err := s.stat(ctx, name)
		if !errors.Is(err, errStripeGone) || attempt >= statAttempts {
			return info, err
		}
	}
}

// statAttempts bounds how often Stat reads an object that keeps being
// replaced under it.
const statAttempts = 8

// errStripeGone: a stripe the object record named was not found.
var errStripeGone = errors.New("the object was replaced or deleted while being read")

// stat is one attempt of Stat.
func (s *Store) stat(ctx context.Context, name string) (*ObjectInfo, error) {
	o, err := s.getObject(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stat: %w", err)
	}
	info := objectInfo(o)
	s.recheckWiped(ctx)
	red := &Redundancy{MinMargin: o.Policy.M}
	count := func(st *metastore.Stripe, lost []bool) {
		healthy := 0
		for i, l := range st.Shards {
			if l.Backend != "" && (lost == nil || !lost[i]) && s.usable(ctx, l) {
				healthy++
			}
		}
		m := healthy - st.K
		red.MinMargin = min(red.MinMargin, m)
		if m < st.M {
			red.Degraded++
		}
		if m < 0 {
			red.Unreadable++
		}
		red.MissingShards += len(st.Shards) - healthy
	}
	// Queued stripes are counted once all entries are in: a backend one
	// entry names wiped counts for the object's other queued stripes too
	// (healer.QueueLosses).
	losses := healer.NewQueueLosses()
	var queued []*metastore.Stripe
	for _, id := range o.Stripes {
		st, err := s.meta.GetStripe(ctx, id)
		if errors.Is(err, metastore.ErrNotFound) {
			// Replaced or deleted meanwhile, unless the same version is
			// still there: then its record names a stripe that does not
			// exist, which is damage, not a race.
			if now, nerr := s.meta.GetObject(ctx, name); nerr != nil || now.ID != o.ID {
				return nil, fmt.Errorf("stat %q: stripe %x: %w", name, id, errStripeGone)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("stat %q: stripe %x: %w", name, id, err)
		}
		it, err := s.meta.GetRepair(ctx, id)
		switch {
		case errors.Is(err, metastore.ErrNotFound):
			count(st, nil)
		case err != nil:
			return nil, fmt.Errorf("stat %q: stripe %x: %w", name, id, err)
		default:
			losses.Add(*it)
			queued = append(queued, st)
		}
	}
	for _, st := range queued {
		count(st, losses.Lost(st))
	}
	if !o.IsInline() {
		info.Redundancy = red
	}
	return info, nil
}

// Delete removes object name at once; its shards go to garbage collection
// in the same commit. ErrNotFound when there is none.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	err := s.meta.DeleteObject(ctx, name)
	if errors.Is(err, metastore.ErrNotFound) {
		return fmt.Errorf("delete: object %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	return nil
}

// Rename gives object from the name to. It fails with ErrExists when an
// object called to exists (delete it first to replace it) and ErrNotFound
// when from does not. The data does not move.
func (s *Store) Rename(ctx context.Context, from, to string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if err := checkName(to); err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	// One commit checks that to is free and moves the object: an object
	// written under to after a separate check would be replaced.
	err := s.meta.RenameObjectNoReplace(ctx, from, to)
	switch {
	case errors.Is(err, metastore.ErrNotFound):
		return fmt.Errorf("rename: object %q: %w", from, ErrNotFound)
	case errors.Is(err, metastore.ErrExists):
		return fmt.Errorf("rename %q: object %q: %w", from, to, ErrExists)
	case err != nil:
		return fmt.Errorf("rename %q: %w", from, err)
	}
	return nil
}

// DefaultListLimit is the page size List uses when limit <= 0.
const DefaultListLimit = 1000

// List returns up to limit objects whose names start with prefix and sort
// after `after`, in name order, and the name to pass as `after` for the
// next page ("" when this was the last page).
func (s *Store) List(ctx context.Context, prefix, after string, limit int) ([]ObjectInfo, string, error) {
	if err := s.checkOpen(); err != nil {
		return nil, "", err
	}
	if limit <= 0 {
		limit = DefaultListLimit
	}
	objs, err := s.meta.ListObjects(ctx, prefix, after, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list %q: %w", prefix, err)
	}
	next := ""
	if len(objs) > limit {
		objs = objs[:limit]
		next = objs[limit-1].Name
	}
	out := make([]ObjectInfo, len(objs))
	for i := range objs {
		out[i] = *objectInfo(&objs[i])
	}
	return out, next, nil
}

// HealthReport is the store's state as one Health call saw it.
type HealthReport struct {
	StoreID        string          `json:"store_id"`
	Policy         encoder.Policy  `json:"policy"`
	PlacementLevel string          `json:"placement_level"`
	WriteQuorum    int             `json:"write_quorum"`
	Backends       []BackendHealth `json:"backends"`
	// Domains counts distinct failure domains with a reachable, writable
	// (up or suspect, not full) backend, spares included: a write that
	// finds too few other backends places shards on spares.
	Domains int `json:"domains"`
	// Writable: a new stripe reaches the write quorum.
	Writable bool `json:"writable"`
	// FullRedundancy: a new stripe gets all k+m shards placed.
	FullRedundancy bool `json:"full_redundancy"`
	// QueueLen is the repair queue's length.
	QueueLen int `json:"repair_queue"`
	// Problems lists what an operator should look at, in words.
	Problems []string `json:"problems,omitempty"`
}

// BackendHealth is one backend in a HealthReport.
type BackendHealth struct {
	Name      string            `json:"name"`
	Kind      string            `json:"kind"`
	Domain    string            `json:"domain"`
	State     string            `json:"state"`
	Spare     bool              `json:"spare,omitempty"`
	Reachable bool              `json:"reachable"`
	Latency   time.Duration     `json:"latency_ns"`
	Capacity  backends.Capacity `json:"capacity"`
	Error     string            `json:"error,omitempty"`
}

// Health probes every backend (in parallel, each bounded by a few seconds)
// and reports what the store can do now.
func (s *Store) Health(ctx context.Context) (*HealthReport, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if err := s.refreshBackends(ctx); err != nil {
		return nil, err
	}
	p := s.cfg.Policy
	rep := &HealthReport{StoreID: s.storeID, Policy: p, PlacementLevel: s.cfg.PlacementLevel, WriteQuorum: s.cfg.Quorum()}
	hs := s.handleList()
	rep.Backends = make([]BackendHealth, len(hs))
	foreign := make([]bool, len(hs))
	var wg sync.WaitGroup
	for i, h := range hs {
		h.mu.Lock()
		foreign[i] = h.foreign
		h.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep.Backends[i] = s.probeHandle(ctx, h)
		}()
	}
	wg.Wait()
	domains := map[string]bool{}
	for i, b := range rep.Backends {
		switch {
		case !b.Reachable:
			rep.Problems = append(rep.Problems, fmt.Sprintf("backend %s is unreachable: %s", b.Name, b.Error))
		case foreign[i]:
			// Writes place nothing there (candidates).
			rep.Problems = append(rep.Problems, fmt.Sprintf("backend %s carries another store's identity marker (%s); no shards are placed on it", b.Name, MarkerKey))
		case b.State != string(metastore.StateUp) && b.State != string(metastore.StateSuspect):
			rep.Problems = append(rep.Problems, fmt.Sprintf("backend %s is %s", b.Name, b.State))
		case b.Capacity.Known && b.Capacity.Free <= int64(p.MaxShardSize()):
			rep.Problems = append(rep.Problems, fmt.Sprintf("backend %s is full", b.Name))
		default:
			domains[b.Domain] = true
		}
	}
	rep.Domains = len(domains)
	rep.Writable = rep.Domains >= rep.WriteQuorum
	rep.FullRedundancy = rep.Domains >= p.K+p.M
	if !rep.Writable {
		rep.Problems = append(rep.Problems, fmt.Sprintf("writes fail: %d usable %s domains, the write quorum is %d", rep.Domains, s.cfg.PlacementLevel, rep.WriteQuorum))
	} else if !rep.FullRedundancy {
		rep.Problems = append(rep.Problems, fmt.Sprintf("new writes are degraded: %d usable %s domains, policy %d+%d needs %d", rep.Domains, s.cfg.PlacementLevel, p.K, p.M, p.K+p.M))
	}
	n, err := s.meta.QueueLen(ctx)
	if err != nil {
		return nil, fmt.Errorf("health: %w", err)
	}
	rep.QueueLen = n
	if n > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d stripes wait for repair", n))
	}
	sort.Strings(rep.Problems)
	return rep, nil
}

// probeHandle probes one backend and refreshes its capacity estimate.
func (s *Store) probeHandle(ctx context.Context, h *handle) BackendHealth {
	h.mu.Lock()
	bh := BackendHealth{Name: h.name, Kind: h.spec.Kind, Domain: h.spec.Domain(s.cfg.PlacementLevel),
		State: string(h.rec.State), Spare: h.rec.Spare}
	b, openErr := h.b, h.openErr
	h.mu.Unlock()
	if b == nil {
		if bb, ok := s.Backend(h.name); ok {
			b = bb
		} else {
			bh.Error = "not open"
			if openErr != nil {
				bh.Error = openErr.Error()
			}
			return bh
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := b.Probe(pctx)
	if err != nil {
		bh.Error = err.Error()
		return bh
	}
	bh.Reachable, bh.Latency, bh.Capacity = true, res.Latency, res.Capacity
	h.mu.Lock()
	h.capacity, h.written = res.Capacity, 0
	h.answeredAt = time.Now()
	h.mu.Unlock()
	return bh
}
