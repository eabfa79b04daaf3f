package healer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/healer/plan"
	"github.com/healstore/healstore/healer/provision"
	"github.com/healstore/healstore/metastore"
)

// Report feeds the monitor an error the data path met on a backend (a
// failed shard put or get). An unavailable backend counts as a failed probe
// and is probed again at once, so an outage is noticed between probe
// rounds. Shard-level errors (not found, corrupt) say nothing about the
// backend and are ignored here; the read path queues those stripes itself.
// Report never blocks.
func (h *Healer) Report(backend string, err error) {
	if err == nil || !errors.Is(err, backends.ErrUnavailable) {
		return
	}
	select {
	case h.probeMe <- backend:
	default:
	}
}

func (h *Healer) monitorLoop(ctx context.Context) {
	tick := time.NewTicker(h.cfg.ProbeInterval.D())
	defer tick.Stop()
	for {
		if err := h.ProbeAll(ctx); err != nil && ctx.Err() == nil {
			h.log.Warn("monitor round failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-h.probeMe:
			// Drain what else arrived so one outage makes one extra round.
			for len(h.probeMe) > 0 {
				<-h.probeMe
			}
		}
	}
}

// persistProbeEvery bounds how stale a backend record's probe time and
// capacity may get when nothing else changes.
const persistProbeEvery = 30 * time.Second

// recordCapacity is what a backend record keeps of a probe's capacity.
func recordCapacity(c backends.Capacity) metastore.Capacity {
	return metastore.Capacity{Known: c.Known, Used: c.Used, Limit: c.Limit, Free: c.Free}
}

// openErrorer is a pool that remembers why a backend did not open (the
// store's does): a probe reports that rather than only "not open".
type openErrorer interface {
	OpenError(name string) error
}

// probeResult is one probe's outcome.
type probeResult struct {
	name   string
	obs    plan.Observation
	cap    backends.Capacity
	err    error
	marker string // the marker JSON, when found and ours
}

// ProbeAll runs one monitor round: it probes every backend that is not
// retired or replaced (in parallel), advances each one's state, acts on
// what changed (queue repairs, find replacements) and completes drains and
// replacements whose backends hold nothing any more.
func (h *Healer) ProbeAll(ctx context.Context) error {
	results, err := h.probeEvery(ctx, true)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range results {
		if err := h.apply(ctx, r); err != nil {
			errs = append(errs, err)
		}
	}
	if err := h.settleBackends(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := h.ensureCapacity(ctx); err != nil {
		errs = append(errs, err)
	}
	h.metrics.observeBackends(h)
	return errors.Join(errs...)
}

// probeEvery probes every backend that is not retired or replaced, in
// parallel, after re-reading the backend records. mark lets a probe write
// the identity marker of a backend never marked (see probe).
func (h *Healer) probeEvery(ctx context.Context, mark bool) ([]probeResult, error) {
	if err := h.refresh(ctx); err != nil {
		return nil, err
	}
	h.mu.Lock()
	var names []string
	recs := map[string]metastore.BackendRecord{}
	for name, m := range h.members {
		if m.health.State == plan.Retired || m.health.State == plan.Replaced {
			continue
		}
		names = append(names, name)
		recs[name] = m.rec
	}
	h.mu.Unlock()
	sort.Strings(names)

	results := make([]probeResult, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = h.probe(ctx, name, recs[name], mark)
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return results, nil
}

// Look probes every backend once, as a monitor round does, and keeps what
// it saw in this healer's memory only: each backend's state as the
// monitor would now decide it, its capacity, and the error of one that
// does not answer. It records nothing, queues nothing and writes no
// marker, so it is safe for a command that only looks while no daemon
// runs.
//
// Without it such a command's Status shows the states and capacity last
// recorded, possibly by a daemon that stopped days ago: a backend lost
// since then shows as up and its shards as healthy, and one that came
// back stays suspect. After Look, one that does not answer, or answers
// without its identity marker (wiped), counts as unreachable: the census
// counts its shards as missing, as the daemon would until it has rebuilt
// them.
func (h *Healer) Look(ctx context.Context) error {
	results, err := h.probeEvery(ctx, false)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range results {
		m := h.members[r.name]
		if m == nil {
			continue
		}
		next, _ := plan.Observe(m.health, r.obs, plan.MonitorPolicy{SuspectAfter: h.cfg.SuspectAfter, Grace: h.cfg.Grace.D()})
		m.rec.LastProbe, m.rec.LastError = r.obs.At, ""
		if r.obs.OK {
			m.setCapacity(r.cap)
		}
		switch {
		case r.err != nil:
			m.rec.LastError = r.err.Error()
		case r.obs.OK && r.obs.Marker == plan.MarkerMissing:
			// Observe keeps a wiped backend up (it may take new shards);
			// what it held is gone, which the daemon would queue.
			next.Failures++
			m.rec.LastError = fmt.Sprintf("backend %s answers without its identity marker: it lost what it held (wiped, or a new disk)", r.name)
		}
		m.health = next
		m.rec.ProbeFailures = next.Failures
	}
	return nil
}

// probe checks one backend: Probe for reachability and capacity, then the
// identity marker. A backend never marked, which holds what the metadata
// places on it, is marked now when mark is set, else taken as marked.
func (h *Healer) probe(ctx context.Context, name string, rec metastore.BackendRecord, mark bool) (r probeResult) {
	r.name = name
	ctx, cancel := context.WithTimeout(ctx, h.cfg.ProbeTimeout.D())
	defer cancel()
	defer func() { r.obs.At = h.now() }()
	b, ok := h.pool.Backend(name)
	if !ok {
		r.err = fmt.Errorf("backend %s is not open", name)
		if p, ok := h.pool.(openErrorer); ok {
			if err := p.OpenError(name); err != nil {
				r.err = err
			}
		}
		return r
	}
	pr, err := b.Probe(ctx)
	if err != nil {
		r.err = err
		return r
	}
	r.cap = pr.Capacity
	raw, err := b.Get(ctx, MarkerKey)
	switch {
	case errors.Is(err, backends.ErrNotFound):
		if rec.Marker == "" {
			// Never marked (it joined before a marker could be
			// written, or was unreachable when the store opened): mark
			// it now rather than call it wiped, unless a shard the
			// metadata places there is gone too: it lost what it held.
			lost, lerr := ShardGone(ctx, h.meta, b)
			if lerr != nil {
				r.err = lerr
				return r
			}
			if lost {
				r.obs.OK, r.obs.Marker = true, plan.MarkerMissing
				return r
			}
			if !mark {
				r.obs.OK, r.obs.Marker = true, plan.MarkerOK
				return r
			}
			if werr := h.writeMarker(ctx, b); werr != nil {
				r.err = werr
				return r
			}
			r.obs.OK, r.obs.Marker = true, plan.MarkerOK
			r.marker = h.markerJSON(name)
			return r
		}
		r.obs.OK, r.obs.Marker = true, plan.MarkerMissing
		return r
	case err != nil:
		r.err = err
		return r
	}
	var m Marker
	if json.Unmarshal(raw, &m) != nil || m.StoreID != h.id || m.Backend != name {
		r.obs.OK, r.obs.Marker = true, plan.MarkerForeign
		r.err = fmt.Errorf("backend %s carries a foreign identity marker (store %q, backend %q)", name, m.StoreID, m.Backend)
		return r
	}
	r.obs.OK, r.obs.Marker = true, plan.MarkerOK
	if rec.Marker == "" {
		r.marker = string(raw)
	}
	return r
}

// ShardGone says whether a shard the metadata places on b is missing
// there (false when it places none): for a backend without a marker, the
// difference between one never marked and one wiped. The store asks it
// when it opens, the monitor at every probe.
func ShardGone(ctx context.Context, meta *metastore.Store, b backends.Backend) (bool, error) {
	key, ok, err := meta.AShardOn(ctx, b.Name())
	if err != nil || !ok {
		return false, err
	}
	_, err = b.Stat(ctx, key)
	if errors.Is(err, backends.ErrNotFound) {
		return true, nil
	}
	return false, err
}

func (h *Healer) markerJSON(name string) string {
	b, _ := json.Marshal(Marker{StoreID: h.id, Backend: name})
	return string(b)
}

func (h *Healer) writeMarker(ctx context.Context, b backends.Backend) error {
	if err := b.Put(ctx, MarkerKey, []byte(h.markerJSON(b.Name()))); err != nil {
		return fmt.Errorf("write identity marker: %w", err)
	}
	return nil
}

// apply advances one backend's health by a probe result, persists it and
// handles the events.
func (h *Healer) apply(ctx context.Context, r probeResult) error {
	h.mu.Lock()
	m := h.members[r.name]
	if m == nil {
		h.mu.Unlock()
		return nil
	}
	before := m.health.State
	next, events := plan.Observe(m.health, r.obs, plan.MonitorPolicy{SuspectAfter: h.cfg.SuspectAfter, Grace: h.cfg.Grace.D()})
	m.health = next
	rec0 := m.rec
	h.mu.Unlock()

	lastErr := ""
	if r.err != nil {
		lastErr = r.err.Error()
	}
	// A probe that changes nothing is written only now and then: every
	// probe of every backend would otherwise be a synced metastore write.
	changed := next.State != before || next.Failures != rec0.ProbeFailures || r.marker != "" ||
		(lastErr != rec0.LastError && (lastErr != "" || r.obs.OK)) || len(events) > 0
	if !changed && r.obs.At.Sub(rec0.LastProbe) < persistProbeEvery {
		h.mu.Lock()
		if m := h.members[r.name]; m != nil && r.obs.OK {
			m.setCapacity(r.cap)
		}
		h.mu.Unlock()
		return nil
	}
	err := h.meta.UpdateBackend(ctx, r.name, func(rec *metastore.BackendRecord) error {
		// An operator's state change that raced this probe wins.
		if plan.State(rec.State) == before {
			rec.State, rec.Since = metastore.BackendState(next.State), next.Since
		}
		rec.LastProbe = r.obs.At
		rec.ProbeFailures = next.Failures
		if lastErr != "" || r.obs.OK {
			rec.LastError = lastErr
		}
		if r.obs.OK {
			rec.Capacity = recordCapacity(r.cap)
		}
		if r.marker != "" {
			rec.Marker = r.marker
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record probe of %s: %w", r.name, err)
	}
	h.mu.Lock()
	if m := h.members[r.name]; m != nil {
		m.rec.LastProbe, m.rec.ProbeFailures = r.obs.At, next.Failures
		if lastErr != "" || r.obs.OK {
			m.rec.LastError = lastErr
		}
		if r.obs.OK {
			m.setCapacity(r.cap)
		}
		if r.marker != "" {
			m.rec.Marker = r.marker
		}
	}
	h.mu.Unlock()
	var errs []error
	for _, ev := range events {
		h.log.Info("backend "+string(ev), "backend", r.name, "state", next.State, "err", lastErr)
		if err := h.onEvent(ctx, r.name, ev, r.obs.Marker); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// onEvent acts on one monitor event.
func (h *Healer) onEvent(ctx context.Context, name string, ev plan.Event, marker plan.Marker) error {
	switch ev {
	case plan.EventSuspect:
		// Only stripes the outage leaves without margin are repaired
		// now; the rest wait for the grace period to run out.
		return h.queueBackend(ctx, name, "backend "+name+" suspect", true)
	case plan.EventDown:
		// Before the index scan: a write committing after it (while
		// replace provisions, say) is queued at the next round.
		werr := h.watchIntents(ctx, name, false)
		if err := h.queueBackend(ctx, name, "backend "+name+" down", false); err != nil {
			return errors.Join(werr, err)
		}
		if werr == nil {
			h.setSwept(name)
		}
		if len(h.provs) == 0 && h.pickSpare() == "" {
			h.log.Warn("no spare and no provisioner: rebuilding onto the remaining backends", "down", name)
		}
		return errors.Join(werr, h.replace(ctx, name))
	case plan.EventWiped:
		return h.wiped(ctx, name, marker == plan.MarkerForeign)
	case plan.EventRecovered:
		h.retrySoon(ctx)
	}
	return nil
}

// queueBackend queues the stripes with a shard on the backend. With
// onlyUrgent it queues only those the planner wants rebuilt right now
// (margin 0 while the backend is suspect).
//
// Joined (EnqueueJoin): a stripe may be queued already for a cause only
// its reason records, a backend found wiped (up again, behind a fresh
// marker) or a reader's finding. This sweep's margin is often lower (it
// counts this backend's shard lost, the planner takes the wiped one for
// whole), and Enqueue would let its reason replace that cause: the
// rebuilder would rebuild this backend's shard only and leave the wiped
// one missing until a scrub.
func (h *Healer) queueBackend(ctx context.Context, name, reason string, onlyUrgent bool) error {
	views := h.views()
	var batch []metastore.RepairItem
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := h.meta.EnqueueJoin(ctx, batch...)
		batch = batch[:0]
		return err
	}
	err := h.meta.StripesOnBackend(ctx, name, func(id [16]byte) error {
		st, err := h.meta.GetStripe(ctx, id)
		if errors.Is(err, metastore.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		d := plan.Stripe(view(st), views)
		if onlyUrgent && len(d.Rebuild) == 0 {
			return nil
		}
		batch = append(batch, metastore.RepairItem{Stripe: id, Margin: d.Margin, Reason: reason})
		if len(batch) >= 256 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("queue stripes of %s: %w", name, err)
	}
	h.kick()
	return nil
}

// wiped handles a backend found without its marker (or with a foreign
// one), with no grace period. A foreign one is already down (see plan):
// its stripes are queued and its shards count as missing. One that merely
// lost its marker answers but is empty: every stripe it held is queued at
// once (in a few large batches, so the rebuild starts within a second),
// with a reason the rebuilder recognises; it checks that backend's shards
// of each stripe (a Stat each) and rebuilds those gone. The backend is
// marked again and stays in use, empty, so it can take shards back.
//
// The writes in flight with a shard there are watched first, as for a
// backend gone down: the backend index names a write's stripe only from
// its commit on, so one whose shard landed before the wipe and that
// commits after the scan below would keep that shard missing, behind the
// fresh marker, until a scrub. queueCommitted queues it when it commits.
// The watch lives in memory only: a write that commits across a healer
// restart is left to the scrub (unlike a down or draining backend, whose
// recorded state the next healer sweeps again, nothing records the wipe
// once the marker is back).
func (h *Healer) wiped(ctx context.Context, name string, foreign bool) error {
	if foreign {
		h.metrics.wiped.Inc()
		return nil
	}
	// Counted once its stripes are queued, so a reader of the metric
	// finds the work already there.
	defer h.metrics.wiped.Inc()
	// A failed watch leaves the marker unwritten (below): the next
	// probe finds the backend wiped again and watches then.
	werr := h.watchIntents(ctx, name, true)
	views := h.views()
	var batch []metastore.RepairItem
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		// EnqueueRecause: an entry queued earlier (the backend was
		// suspect, say) must now say wiped whatever its margin, or the
		// rebuilder, seeing the backend up, finds nothing to do.
		err := h.meta.EnqueueRecause(ctx, batch...)
		batch = batch[:0]
		h.kick()
		return err
	}
	err := h.meta.StripesOnBackend(ctx, name, func(id [16]byte) error {
		st, err := h.meta.GetStripe(ctx, id)
		if errors.Is(err, metastore.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		// An entry for another wiped backend keeps its name: the
		// queue keeps one reason per stripe, and the rebuilder checks
		// the shards on every backend it names. Marking both gives a
		// lower margin, so the merged entry takes the joint reason.
		wiped := []string{name}
		var others []string
		if old, err := h.meta.GetRepair(ctx, id); err == nil {
			names, rest := splitWiped(old.Reason)
			if slices.Contains(names, name) {
				// Already said (a probe while the marker is still
				// missing): leave the entry and its back-off alone.
				return nil
			}
			for _, b := range names {
				if b != name {
					wiped = append(wiped, b)
				}
			}
			// What the entry said besides (a reader's finding) stays;
			// that a backend was suspect or down is moot now.
			for _, r := range rest {
				if !strings.HasPrefix(r, "backend ") {
					others = append(others, r)
				}
			}
		} else if !errors.Is(err, metastore.ErrNotFound) {
			return err
		}
		v := view(st)
		for _, b := range wiped {
			markOn(&v, st, b)
		}
		d := plan.Stripe(v, views)
		reason := strings.Join(append([]string{wipedReason(wiped...)}, others...), "; ")
		batch = append(batch, metastore.RepairItem{Stripe: id, Margin: d.Margin, Reason: reason})
		if len(batch) >= 512 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return errors.Join(werr, fmt.Errorf("wiped backend %s: %w", name, err))
	}
	if werr != nil {
		return fmt.Errorf("wiped backend %s: %w", name, werr)
	}
	b, ok := h.pool.Backend(name)
	if !ok {
		return fmt.Errorf("wiped backend %s: not open", name)
	}
	if err := h.writeMarker(ctx, b); err != nil {
		return fmt.Errorf("wiped backend %s: %w", name, err)
	}
	marker := h.markerJSON(name)
	if err := h.meta.UpdateBackend(ctx, name, func(r *metastore.BackendRecord) error { r.Marker = marker; return nil }); err != nil {
		return fmt.Errorf("wiped backend %s: %w", name, err)
	}
	return nil
}

// wipedReason is the queue reason of a stripe queued because backends
// were found wiped ("backend b1 wiped; backend b2 wiped"); wipedBackends
// reverses it.
func wipedReason(backends ...string) string {
	parts := make([]string, len(backends))
	for i, b := range backends {
		parts[i] = "backend " + b + " wiped"
	}
	return strings.Join(parts, "; ")
}

// wipedBackends names the backends a reason names wiped; its other parts
// ("; "-separated) are other causes.
func wipedBackends(reason string) []string {
	names, _ := splitWiped(reason)
	return names
}

// splitWiped parts a reason into the backends it names wiped and the rest.
func splitWiped(reason string) (names []string, rest []string) {
	if reason == "" {
		return nil, nil
	}
	for _, part := range strings.Split(reason, "; ") {
		if name, ok := strings.CutSuffix(strings.TrimPrefix(part, "backend "), " wiped"); ok && name != "" && strings.HasPrefix(part, "backend ") {
			names = append(names, name)
			continue
		}
		rest = append(rest, part)
	}
	return names, rest
}

// markOn marks the stripe's shards on backend as bad in a planner view.
func markOn(v *plan.StripeView, st *metastore.Stripe, backend string) {
	for i, l := range st.Shards {
		if l.Backend == backend {
			v.Shards[i].Bad = true
		}
	}
}

// clearShards forgets the shard locations of a stripe that match (they are
// lost or corrupt), hands them to garbage collection when asked, and
// queues the stripe, all under the stripe's lock and with a CAS retry.
func (h *Healer) clearShards(ctx context.Context, id [16]byte, match func(i int, loc metastore.ShardLoc) bool, garbage bool, reason string) error {
	unlock := h.lockStripe(id)
	defer unlock()
	for attempt := 0; ; attempt++ {
		st, err := h.meta.GetStripe(ctx, id)
		if errors.Is(err, metastore.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var g []metastore.Garbage
		changed := false
		for i, loc := range st.Shards {
			if loc.Backend == "" || !match(i, loc) {
				continue
			}
			if garbage {
				g = append(g, metastore.Garbage{Backend: loc.Backend, Key: loc.Key})
			}
			st.Shards[i] = metastore.ShardLoc{}
			changed = true
		}
		if !changed {
			return nil
		}
		err = h.meta.UpdateStripe(ctx, st, g)
		if errors.Is(err, metastore.ErrConflict) && attempt < 8 {
			continue
		}
		if err != nil {
			return err
		}
		d := plan.Stripe(view(st), h.views())
		// Joined: an entry's cause only its reason records (a wiped
		// backend, a reader's finding) stays for the rebuilder.
		return h.meta.EnqueueJoin(ctx, metastore.RepairItem{Stripe: id, Margin: d.Margin, Reason: reason})
	}
}

// settleBackends finishes what the states imply: a down backend that
// holds no stripe any more is replaced; a draining one is retired (and its
// capacity released to the provisioner that made it).
func (h *Healer) settleBackends(ctx context.Context) error {
	h.mu.Lock()
	var check []string
	var replaced []member
	for name, m := range h.members {
		if m.health.State == plan.Down || m.health.State == plan.Draining {
			check = append(check, name)
		}
		if m.rec.State == metastore.StateReplaced {
			replaced = append(replaced, *m)
		}
	}
	// A backend that left down or draining is swept again if it comes
	// back to either.
	for name := range h.swept {
		if !slices.Contains(check, name) {
			delete(h.swept, name)
		}
	}
	h.mu.Unlock()
	h.releaseReplaced(ctx, replaced)
	var errs []error
	// A write in flight may have placed shards on the backend before it
	// was drained (or went down); its commit will reference them, and the
	// backend index names them only from then on. Its intent names them
	// now: the backend is not finished (and its capacity not given back)
	// while one does.
	inFlight, err := h.queueCommitted(ctx, check)
	if err != nil {
		if inFlight == nil && len(check) > 0 {
			return err // writes in flight unknown: finish nothing
		}
		errs = append(errs, err)
	}
	// inFlight is set: the intents were listed, and the writes in flight
	// on every backend of check are watched from then on.
	if err := h.sweepUnswept(ctx, check); err != nil {
		errs = append(errs, err)
	}
	for _, name := range check {
		if inFlight[name] {
			continue
		}
		n, err := h.meta.CountStripesOnBackend(ctx, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if n > 0 {
			continue
		}
		if err := h.finish(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sweepUnswept queues the stripes on the backends of check that this
// healer has not swept (see Healer.swept): those it found down or draining
// when it started, or that another process drained. The caller has just
// listed the intents and watches the writes in flight on them, so, as for
// a down event, a write that committed before that listing is in the
// backend index now and one that commits after it is watched. Without
// this, a write the previous healer watched that committed before this
// one's first round would keep its shard on the backend until a scrub
// (and a crash between recording a backend down and queueing its stripes
// would leave all of them so).
func (h *Healer) sweepUnswept(ctx context.Context, check []string) error {
	views := h.views()
	var errs []error
	for _, name := range check {
		h.mu.Lock()
		done := h.swept[name]
		h.mu.Unlock()
		if done {
			continue
		}
		if err := h.queueBackend(ctx, name, "backend "+name+" "+string(views[name].State), false); err != nil {
			errs = append(errs, err)
			continue
		}
		h.setSwept(name)
	}
	return errors.Join(errs...)
}

// intentBackends names the backends that write intents name: writes in
// flight may commit shards there.
func (h *Healer) intentBackends(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	err := h.meta.ListIntents(ctx, func(in metastore.Intent) error {
		for _, l := range in.Shards {
			out[l.Backend] = true
		}
		return nil
	})
	return out, err
}

// watch is one backend a write in flight is watched for: down or draining
// (its state says which when the write commits), or found wiped while it
// stayed up.
type watch struct {
	backend string
	wiped   bool
}

// queueCommitted queues the stripes of writes that were in flight on a
// down or draining backend or on one found wiped (their intents named it)
// at the previous round and have committed since. The monitor queued
// the backend's stripes when it went down, was drained or was found
// wiped, through the backend index, which names a write's stripe only
// from its commit on: without this, such a stripe would keep a shard on
// the backend (or, wiped, a shard missing there) with nothing to rebuild
// or move it.
//
// From the same listing it returns the backends any intent names (writes
// in flight may commit shards there); nil when it could not list them, or
// listed nothing because check is empty and no write is watched.
func (h *Healer) queueCommitted(ctx context.Context, check []string) (map[string]bool, error) {
	h.watchMu.Lock()
	defer h.watchMu.Unlock()
	h.mu.Lock()
	prev := h.watched
	h.mu.Unlock()
	now := map[[16]byte][]watch{}
	var inFlight map[string]bool
	if len(check) > 0 || len(prev) > 0 {
		inFlight = map[string]bool{}
		err := h.meta.ListIntents(ctx, func(in metastore.Intent) error {
			// One watchIntents added stays watched while in flight,
			// even if check was taken before its backend changed (and
			// a wiped backend, up, is never in check).
			if ws, ok := prev[in.ID]; ok {
				now[in.ID] = slices.Clone(ws)
			}
			for _, l := range in.Shards {
				inFlight[l.Backend] = true
				w := watch{backend: l.Backend}
				if slices.Contains(check, l.Backend) && !slices.Contains(now[in.ID], w) {
					now[in.ID] = append(now[in.ID], w)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("settle backends: %w", err)
		}
	}
	h.mu.Lock()
	h.watched = now
	h.mu.Unlock()
	views := h.views()
	var items, wipedItems []metastore.RepairItem
	var err error
	for id, ws := range prev {
		if _, ok := now[id]; ok {
			continue
		}
		var st *metastore.Stripe
		st, err = h.meta.GetStripe(ctx, id)
		if errors.Is(err, metastore.ErrNotFound) {
			err = nil // abandoned, or deleted since
			continue
		}
		if err != nil {
			break
		}
		var why, wiped []string
		for _, w := range ws {
			if !slices.ContainsFunc(st.Shards, func(l metastore.ShardLoc) bool { return l.Backend == w.backend }) {
				continue
			}
			if w.wiped {
				wiped = append(wiped, w.backend)
				continue
			}
			why = append(why, "backend "+w.backend+" "+string(views[w.backend].State))
		}
		if d := plan.Stripe(view(st), views); len(why) > 0 && len(d.Rebuild) > 0 {
			items = append(items, metastore.RepairItem{Stripe: id, Margin: d.Margin, Reason: strings.Join(why, "; ")})
		}
		if len(wiped) == 0 {
			continue
		}
		// The planner takes a shard on an up backend for whole, so
		// the shard the wipe took is named by the reason: the wipe
		// sweep's own ("backend b6 wiped"), from which the rebuilder
		// reads the backends (wipedBackends) and Stats the stripe's
		// shards there, rebuilding those gone; one that landed after
		// the wipe is found there and nothing is done. (A read
		// finding's reason would have it Stat every shard, and read
		// them all when none is gone.) The margin counts them lost,
		// as the sweep's does.
		pv := view(st)
		for _, b := range wiped {
			markOn(&pv, st, b)
		}
		d := plan.Stripe(pv, views)
		for _, b := range wiped {
			wipedItems = append(wipedItems, metastore.RepairItem{Stripe: id, Margin: d.Margin, Reason: wipedReason(b)})
		}
	}
	if err == nil {
		// Joined, as queueBackend's: an entry already there (a wiped
		// backend's, a reader's finding, a degraded write's) keeps what
		// it says and gains these causes, whatever the margins.
		err = h.meta.EnqueueJoin(ctx, append(items, wipedItems...)...)
	}
	if err != nil {
		// Looked at again next round.
		h.mu.Lock()
		for id, ws := range prev {
			if _, ok := h.watched[id]; !ok {
				h.watched[id] = ws
			}
		}
		h.mu.Unlock()
		return inFlight, fmt.Errorf("queue stripes of writes committed onto down, draining or wiped backends: %w", err)
	}
	if len(items) > 0 || len(wipedItems) > 0 {
		h.kick()
	}
	return inFlight, nil
}

// watchIntents adds the write intents that name backend to watched. Drain,
// a backend going down and one found wiped (wiped set) call it before
// they scan the backend index for its stripes: a write that commits after
// that scan, before the next round's queueCommitted lists the intents, is
// then queued all the same.
func (h *Healer) watchIntents(ctx context.Context, backend string, wiped bool) error {
	h.watchMu.Lock()
	defer h.watchMu.Unlock()
	var ids [][16]byte
	err := h.meta.ListIntents(ctx, func(in metastore.Intent) error {
		if slices.ContainsFunc(in.Shards, func(l metastore.ShardLoc) bool { return l.Backend == backend }) {
			ids = append(ids, in.ID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("writes in flight on %s: %w", backend, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watched == nil {
		h.watched = map[[16]byte][]watch{}
	}
	w := watch{backend: backend, wiped: wiped}
	for _, id := range ids {
		if !slices.Contains(h.watched[id], w) {
			h.watched[id] = append(h.watched[id], w)
		}
	}
	return nil
}

// finish moves an emptied backend to its final state.
func (h *Healer) finish(ctx context.Context, name string) error {
	var final metastore.BackendState
	var spec backends.Spec
	now := h.now()
	err := h.meta.UpdateBackend(ctx, name, func(r *metastore.BackendRecord) error {
		switch r.State {
		case metastore.StateDown:
			final = metastore.StateReplaced
		case metastore.StateDraining:
			final = metastore.StateRetired
		default:
			final = ""
			return nil
		}
		r.State, r.Since = final, now
		if err := json.Unmarshal(r.SpecJSON, &spec); err != nil {
			return err
		}
		return nil
	})
	if err != nil || final == "" {
		return err
	}
	h.log.Info("backend "+string(final), "backend", name)
	h.mu.Lock()
	if m := h.members[name]; m != nil {
		m.health.State, m.health.Since = plan.State(final), now
		m.rec.State = final
	}
	h.mu.Unlock()
	if final == metastore.StateRetired {
		if err := h.release(ctx, spec); err != nil {
			h.log.Warn("release retired backend", "backend", name, "err", err)
		}
	}
	return nil
}

// releaseReplaced gives back the capacity of replaced backends that have
// been replaced for cfg.ReleaseReplacedAfter. A replaced backend holds no
// shard any committed stripe references (that is what made it replaced),
// so releasing it loses nothing; that is checked again just before the
// release, and a backend that still holds a stripe, or whose record is no
// longer replaced, is left alone. Backends the operator added themselves
// are left alone too (release finds no provisioner record). A failed
// release is retried after the provisioning backoff, not on every round;
// one whose capacity was given back but could not be recorded as such is
// not released a second time.
func (h *Healer) releaseReplaced(ctx context.Context, replaced []member) {
	after := h.cfg.ReleaseReplacedAfter.D()
	if after < 0 {
		return
	}
	now := h.now()
	for _, m := range replaced {
		name := m.rec.Name
		h.mu.Lock()
		skip := h.released[name] || now.Before(h.releaseAfter[name]) || now.Sub(m.rec.Since) < after
		h.mu.Unlock()
		if skip {
			continue
		}
		err := h.releasable(ctx, name)
		var given *unrecordedReleaseError
		if err == nil {
			err = h.release(ctx, m.spec)
		}
		h.mu.Lock()
		if err != nil && !errors.As(err, &given) {
			if h.releaseAfter == nil {
				h.releaseAfter = map[string]time.Time{}
			}
			h.releaseAfter[name] = now.Add(h.cfg.ProvisionBackoff.D())
		} else {
			if h.released == nil {
				h.released = map[string]bool{}
			}
			h.released[name] = true
			delete(h.releaseAfter, name)
		}
		h.mu.Unlock()
		switch {
		case given != nil:
			h.log.Warn("replaced backend released, but recording it failed; not releasing it again", "backend", name, "err", err)
		case err != nil:
			h.log.Warn("release replaced backend", "backend", name, "err", err)
		}
	}
}

// releasable checks, from the metastore, that a backend about to be
// released is still replaced and holds no stripe.
func (h *Healer) releasable(ctx context.Context, name string) error {
	rec, err := h.meta.GetBackend(ctx, name)
	if err != nil {
		return err
	}
	if rec.State != metastore.StateReplaced {
		return fmt.Errorf("backend %s is %s, not replaced; not releasing it", name, rec.State)
	}
	n, err := h.meta.CountStripesOnBackend(ctx, name)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("replaced backend %s still holds %d stripes; not releasing it", name, n)
	}
	return nil
}

// unrecordedReleaseError means the provisioner gave a backend's capacity
// back but the metastore could not record that.
type unrecordedReleaseError struct{ err error }

func (e *unrecordedReleaseError) Error() string { return "record the release: " + e.err.Error() }
func (e *unrecordedReleaseError) Unwrap() error { return e.err }

// provisionedMeta names the metastore value recording which provisioner
// created a backend, so retiring it can give the capacity back.
func provisionedMeta(name string) string { return "healer/provisioned/" + name }

// replacementMeta records the replacement found for a down backend, so a
// restarted healer does not provision a second one.
func replacementMeta(name string) string { return "healer/replacement/" + name }

func (h *Healer) release(ctx context.Context, spec backends.Spec) error {
	raw, err := h.meta.GetMeta(ctx, provisionedMeta(spec.Name))
	if errors.Is(err, metastore.ErrNotFound) {
		return nil // the operator's capacity: nothing to give back
	}
	if err != nil {
		return err
	}
	for _, p := range h.provs {
		if p.Name() == string(raw) {
			if err := p.Release(ctx, spec); err != nil {
				return err
			}
			h.log.Info("backend capacity released", "backend", spec.Name, "provisioner", p.Name())
			if err := h.meta.DeleteMeta(ctx, provisionedMeta(spec.Name)); err != nil {
				return &unrecordedReleaseError{err}
			}
			return nil
		}
	}
	return fmt.Errorf("backend %s was made by provisioner %q, which is not configured", spec.Name, raw)
}

// replace finds a replacement for a down backend: a registered spare is
// promoted (it becomes a regular member), else a provisioner makes a new
// backend. Either way the rebuild targets then include it.
func (h *Healer) replace(ctx context.Context, down string) error {
	if _, err := h.meta.GetMeta(ctx, replacementMeta(down)); err == nil {
		return nil
	}
	if name := h.pickUnassigned(ctx); name != "" {
		h.log.Info("capacity provisioned during the grace period replaces down backend", "backend", name, "down", down)
		if err := h.meta.DeleteMeta(ctx, unassignedMeta(name)); err != nil {
			return err
		}
		return h.meta.PutMeta(ctx, replacementMeta(down), []byte(name))
	}
	if name := h.pickSpare(); name != "" {
		if err := h.promote(ctx, name); err != nil {
			return err
		}
		h.log.Info("spare promoted to replace down backend", "spare", name, "down", down)
		h.metrics.replacements.WithLabelValues("spare").Inc()
		return h.meta.PutMeta(ctx, replacementMeta(down), []byte(name))
	}
	if len(h.provs) == 0 {
		// Nothing to replace it with: the stripes are rebuilt onto the
		// remaining backends, as far as their domains allow.
		return nil
	}
	name, err := h.provision(ctx, false, down)
	if err != nil {
		return err
	}
	if name == "" {
		return nil
	}
	h.metrics.replacements.WithLabelValues("provisioned").Inc()
	return h.meta.PutMeta(ctx, replacementMeta(down), []byte(name))
}

// promote makes a spare a regular member (new writes may use it).
func (h *Healer) promote(ctx context.Context, name string) error {
	err := h.meta.UpdateBackend(ctx, name, func(r *metastore.BackendRecord) error {
		r.Spare = false
		var spec backends.Spec
		if err := json.Unmarshal(r.SpecJSON, &spec); err == nil {
			spec.Spare = false
			if raw, err := json.Marshal(spec); err == nil {
				r.SpecJSON = raw
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("promote spare %s: %w", name, err)
	}
	if err := h.refresh(ctx); err != nil {
		return err
	}
	h.retrySoon(ctx)
	return nil
}

// unassignedMeta marks a backend provisioned for a rebuild that found no
// target (margin-0 repairs inside a grace period), not yet counted as the
// replacement of a down backend.
func unassignedMeta(name string) string { return "healer/unassigned/" + name }

// pickUnassigned returns an up backend provisioned for capacity that no
// down backend claimed yet.
func (h *Healer) pickUnassigned(ctx context.Context) string {
	h.mu.Lock()
	var names []string
	for name, m := range h.members {
		if m.health.State == plan.Up && !m.rec.Spare {
			names = append(names, name)
		}
	}
	h.mu.Unlock()
	sort.Strings(names)
	for _, name := range names {
		if _, err := h.meta.GetMeta(ctx, unassignedMeta(name)); err == nil {
			return name
		}
	}
	return ""
}

// pickSpare returns a registered spare that is up and answering.
func (h *Healer) pickSpare() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var names []string
	for name, m := range h.members {
		if m.rec.Spare && m.health.State == plan.Up && m.health.Reachable() {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// ensureCapacity retries replacements that failed and keeps the spare
// target.
func (h *Healer) ensureCapacity(ctx context.Context) error {
	h.mu.Lock()
	var down, spareNames []string
	for name, m := range h.members {
		if m.health.State == plan.Down {
			down = append(down, name)
		}
		if m.rec.Spare && m.health.State == plan.Up {
			spareNames = append(spareNames, name)
		}
	}
	wanted := h.wantedAt.After(h.capacityAt)
	h.mu.Unlock()
	sort.Strings(down)
	var errs []error
	for _, name := range down {
		if err := h.replace(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	// A spare that received rebuilt shards is a member now: promote it,
	// so new writes use it too, and let the target bring a fresh spare.
	spares := 0
	for _, name := range spareNames {
		n, err := h.meta.CountStripesOnBackend(ctx, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if n == 0 {
			spares++
			continue
		}
		if err := h.promote(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	if wanted && spares == 0 {
		// A rebuild found no target outside its stripe's domains. The new
		// backend is remembered as unassigned: the next backend declared
		// down takes it as its replacement instead of provisioning another.
		name, err := h.provision(ctx, false, "")
		if err != nil {
			errs = append(errs, err)
		} else if name != "" {
			h.mu.Lock()
			h.capacityAt = h.now()
			h.mu.Unlock()
			if err := h.meta.PutMeta(ctx, unassignedMeta(name), []byte{}); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for ; spares < h.cfg.SpareTarget; spares++ {
		name, err := h.provision(ctx, true, "")
		if err != nil {
			errs = append(errs, err)
			break
		}
		if name == "" {
			break
		}
	}
	return errors.Join(errs...)
}

// ErrNoProvisioner means a backend needed replacing but no provisioner is
// configured.
var ErrNoProvisioner = errors.New("no provisioner configured")

// ErrBackendExists: AddBackend was given the name of a backend the store
// already has (in any state, retired ones included).
var ErrBackendExists = errors.New("a backend of that name already exists")

// The operator's mistakes with backends, which the API answers as the
// request's fault (4xx) rather than the daemon's (500); see Handler.
var (
	// ErrSecretInUse: the Register dependency refused a new backend's
	// secret because its secret ref already holds another secret (the
	// store's secret store returns it; healstore.ErrSecretInUse is this).
	ErrSecretInUse = errors.New("secret ref holds another secret")
	// ErrBackendUnusable: AddBackend tried the backend (Deps.Try) and it
	// does not work: it cannot be opened or reached, or it holds another
	// backend's or store's data.
	ErrBackendUnusable = errors.New("backend does not work")
	// ErrBackendRetired: Drain was asked for a backend that is retired
	// or replaced, which holds nothing and is never used again.
	ErrBackendRetired = errors.New("backend is retired or replaced")
	// ErrBackendNotEmpty: RemoveBackend was asked for a backend that still
	// holds shards (committed, or of writes in flight); drain it first.
	ErrBackendNotEmpty = errors.New("backend still holds shards")
)

// kindError is err, with its text unchanged, that errors.Is also matches
// as kind: one of the sentinels above, for the API to map to a status.
type kindError struct{ err, kind error }

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.err, e.kind} }

// withKind tags err (non-nil) as kind.
func withKind(kind, err error) error { return &kindError{err: err, kind: kind} }

// provision asks the provisioners, in order, for a backend outside every
// failure domain in use, registers it and marks it. It returns "" without
// error while a previous failure's back-off lasts.
func (h *Healer) provision(ctx context.Context, spare bool, replacing string) (string, error) {
	if len(h.provs) == 0 {
		return "", fmt.Errorf("replace backend %q: %w", replacing, ErrNoProvisioner)
	}
	if h.reg == nil {
		return "", errors.New("healer: cannot register provisioned backends (no Register dependency)")
	}
	now := h.now()
	h.mu.Lock()
	if now.Before(h.provisionAfter) {
		h.mu.Unlock()
		return "", nil
	}
	var avoid []string
	var minSize int64
	for name, m := range h.members {
		switch m.health.State {
		case plan.Retired, plan.Replaced:
			continue
		}
		avoid = append(avoid, m.spec.Domain(h.cfg.Level))
		if name == replacing && m.rec.Capacity.Known && ownsUsage(m.spec) {
			minSize = m.rec.Capacity.Used
		}
	}
	h.mu.Unlock()
	// Every name the store has a record of is taken, whatever the
	// record's state: a replaced or retired backend keeps its record after
	// its capacity is released, and a new backend by its name would meet
	// that record instead of a record of its own.
	recs, err := h.meta.ListBackends(ctx)
	if err != nil {
		return "", fmt.Errorf("provision a backend (replacing %q): list backends: %w", replacing, err)
	}
	taken := make([]string, 0, len(recs))
	for _, r := range recs {
		taken = append(taken, r.Name)
	}
	hint := "repl"
	if spare {
		hint = "spare"
	}
	c := provision.Constraints{AvoidDomains: avoid, Level: h.cfg.Level, MinSize: minSize, NameHint: hint, TakenNames: taken}
	var errs []error
	for _, p := range h.provs {
		spec, secret, err := p.Provision(ctx, c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		spec.Spare = spare
		// Open and probe it before anything is recorded: a provisioned
		// backend that cannot work (a provisioning command's typo, a
		// node that refuses the namespace it just made) would otherwise
		// be registered and then found down, and replaced in its turn.
		if h.try != nil {
			if err = h.try(ctx, spec, secret); err != nil {
				err = fmt.Errorf("provisioner %s made backend %s, but it does not work: %w", p.Name(), spec.Name, err)
			}
		}
		if err == nil {
			err = h.adopt(ctx, spec, secret, p.Name())
		}
		if err != nil {
			if rerr := p.Release(ctx, spec); rerr != nil {
				h.log.Warn("release unusable provisioned backend", "backend", spec.Name, "err", rerr)
			}
			errs = append(errs, err)
			continue
		}
		h.log.Info("provisioned backend", "backend", spec.Name, "provisioner", p.Name(), "spare", spare, "replacing", replacing)
		h.metrics.provisioned.WithLabelValues(p.Name()).Inc()
		return spec.Name, nil
	}
	h.mu.Lock()
	h.provisionAfter = now.Add(h.cfg.ProvisionBackoff.D())
	h.mu.Unlock()
	h.metrics.provisionFailures.Inc()
	return "", fmt.Errorf("provision a backend (replacing %q): %w", replacing, errors.Join(errs...))
}

// adopt registers a new backend with the store, marks it and records who
// made it.
func (h *Healer) adopt(ctx context.Context, spec backends.Spec, secret, by string) error {
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("provisioner %s returned a bad spec: %w", by, err)
	}
	// A name is never reused: registering it would find the old record,
	// which stays replaced or retired and never opens again.
	rec, err := h.meta.GetBackend(ctx, spec.Name)
	switch {
	case err == nil && (rec.State == metastore.StateReplaced || rec.State == metastore.StateRetired):
		return fmt.Errorf("provisioner %s returned backend %s, the name of a %s backend the store still has a record of; names are never reused",
			by, spec.Name, rec.State)
	case err == nil && !sameSpec(rec.SpecJSON, spec):
		// Registering it would rewrite where a live backend's shards
		// are found. (The same spec again is an adoption that failed
		// half way, retried.)
		return fmt.Errorf("provisioner %s returned backend %s, the name of a %s backend with another spec; names are never reused",
			by, spec.Name, rec.State)
	case err != nil && !errors.Is(err, metastore.ErrNotFound):
		return fmt.Errorf("backend %s: %w", spec.Name, err)
	}
	if by != "" {
		if err := h.meta.PutMeta(ctx, provisionedMeta(spec.Name), []byte(by)); err != nil {
			return err
		}
	}
	if err := h.reg(ctx, spec, secret); err != nil {
		return fmt.Errorf("register backend %s: %w", spec.Name, err)
	}
	b, ok := h.pool.Backend(spec.Name)
	if !ok {
		return fmt.Errorf("backend %s registered but does not open", spec.Name)
	}
	if err := h.writeMarker(ctx, b); err != nil {
		return fmt.Errorf("backend %s: %w", spec.Name, err)
	}
	marker := h.markerJSON(spec.Name)
	now := h.now()
	pr, perr := b.Probe(ctx)
	err = h.meta.UpdateBackend(ctx, spec.Name, func(r *metastore.BackendRecord) error {
		r.Marker = marker
		r.Spare = spec.Spare
		r.LastProbe = now
		if perr == nil {
			r.Capacity = recordCapacity(pr.Capacity)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := h.refresh(ctx); err != nil {
		return err
	}
	h.retrySoon(ctx)
	return nil
}

// AddBackend registers an operator's backend (the CLI's `backend add`):
// recorded, opened, marked, and from then on probed and used.
func (h *Healer) AddBackend(ctx context.Context, spec backends.Spec, secret string) error {
	if h.reg == nil {
		return errors.New("healer: cannot register backends (no Register dependency)")
	}
	if _, err := h.meta.GetBackend(ctx, spec.Name); err == nil {
		return fmt.Errorf("backend %s: %w", spec.Name, ErrBackendExists)
	}
	// An operator's spec is new input: a field of another kind (bucket on
	// a local backend) would be dropped while they believe it took effect.
	// (adopt checks only Validate: a provisioner's spec is the program's.)
	if err := spec.ValidateInput(); err != nil {
		return err
	}
	if h.try != nil {
		if err := h.try(ctx, spec, secret); err != nil {
			return withKind(ErrBackendUnusable, fmt.Errorf("backend %s does not work, so it was not added: %w", spec.Name, err))
		}
	}
	return h.adopt(ctx, spec, secret, "")
}

// Drain starts evacuating a backend: it is marked draining (no new
// shards), and every stripe with a shard on it is queued; the rebuilder
// rebuilds those shards elsewhere from the other shards, in parallel. When
// it holds nothing any more it is retired.
func (h *Healer) Drain(ctx context.Context, name string) error {
	now := h.now()
	err := h.meta.UpdateBackend(ctx, name, func(r *metastore.BackendRecord) error {
		switch r.State {
		case metastore.StateRetired, metastore.StateReplaced:
			return withKind(ErrBackendRetired, fmt.Errorf("backend %s is %s; it holds nothing and is never used again", name, r.State))
		case metastore.StateDraining:
			return nil
		}
		r.State, r.Since = metastore.StateDraining, now
		return nil
	})
	if err != nil {
		return fmt.Errorf("drain %s: %w", name, err)
	}
	if err := h.refresh(ctx); err != nil {
		return err
	}
	// Before the index scan: a write committing after it is queued at
	// the monitor's next round.
	werr := h.watchIntents(ctx, name, false)
	if err := h.queueBackend(ctx, name, "backend "+name+" draining", false); err != nil {
		return errors.Join(werr, err)
	}
	if werr != nil {
		return werr
	}
	h.setSwept(name)
	return nil
}

// setSwept records that a down or draining backend's stripes were queued
// after its writes in flight were watched (see Healer.swept).
func (h *Healer) setSwept(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.swept == nil {
		h.swept = map[string]bool{}
	}
	h.swept[name] = true
}

// RemoveBackend forgets a backend that holds no stripe (drain it first).
// Its capacity goes back to the provisioner that made it, if any.
func (h *Healer) RemoveBackend(ctx context.Context, name string) error {
	// A write in flight that placed shards there would commit them
	// onto a backend no longer known (and maybe given back). Intents
	// first, stripes second (as settleBackends): a write that commits
	// between the two is then counted by the second.
	inFlight, err := h.intentBackends(ctx)
	if err != nil {
		return err
	}
	if inFlight[name] {
		return withKind(ErrBackendNotEmpty, fmt.Errorf("backend %s holds shards of writes not committed yet; try again once they are (a crashed write's are given up after the orphan delay, an hour by default)", name))
	}
	n, err := h.meta.CountStripesOnBackend(ctx, name)
	if err != nil {
		return err
	}
	if n > 0 {
		return withKind(ErrBackendNotEmpty, fmt.Errorf("backend %s still holds shards of %d stripes; run `healstore backend drain %s` first", name, n, name))
	}
	rec, err := h.meta.GetBackend(ctx, name)
	if err != nil {
		return err
	}
	var spec backends.Spec
	if err := json.Unmarshal(rec.SpecJSON, &spec); err == nil {
		if err := h.release(ctx, spec); err != nil {
			h.log.Warn("release removed backend", "backend", name, "err", err)
		}
	}
	if err := h.meta.DeleteBackend(ctx, name); err != nil {
		return err
	}
	return h.refresh(ctx)
}

// ownsUsage reports whether a backend's reported Used counts its own data.
// A local directory without a quota reports its whole filesystem (statfs),
// which other backends and programs share: asking a replacement for that
// much room would refuse every candidate on the same disk.
func ownsUsage(spec backends.Spec) bool {
	return spec.Kind != backends.KindLocal || spec.Quota > 0
}

// sameSpec reports whether a backend record's stored spec is spec (records
// hold the spec's JSON encoding, as the store's registration writes it).
func sameSpec(recJSON []byte, spec backends.Spec) bool {
	raw, err := json.Marshal(spec)
	return err == nil && bytes.Equal(recJSON, raw)
}
