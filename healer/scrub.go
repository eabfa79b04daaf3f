package healer

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer/plan"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

// ScrubOptions tune one scrub pass.
type ScrubOptions struct {
	// Deep reads and verifies every shard; otherwise the pass is light:
	// each shard must exist with its recorded size.
	Deep bool
	// Period spreads the pass so it takes about this long (0 = as fast as
	// possible, as `healstore scrub` runs).
	Period time.Duration
	// Resume continues from the cursor a previous, unfinished pass of the
	// same kind saved (the daemon's passes survive restarts).
	Resume bool
	// Progress, if set, hears the progress after every stripe.
	Progress func(ScrubProgress)
}

// ScrubProgress is the state of a scrub pass.
type ScrubProgress struct {
	Pass     string    `json:"pass"` // "light" or "deep"
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	// Total is the number of stripes when the pass started or resumed
	// (those done plus those left), grown when new ones are met; Done
	// those checked so far.
	Total int `json:"total"`
	Done  int `json:"done"`
	// Bytes read and verified (deep pass).
	Bytes int64 `json:"bytes"`
	// Shards found missing, corrupt (bad checksum or size), on a backend
	// that did not answer (not checked), and stripes breaking the
	// placement invariant.
	Missing     int `json:"missing"`
	Corrupt     int `json:"corrupt"`
	Unreachable int `json:"unreachable"`
	Misplaced   int `json:"misplaced"`
	// Queued counts stripes the pass put on the repair queue.
	Queued int `json:"queued"`
	// Orphans counts shards found on backends that no stripe, write
	// intent or garbage entry names (left by a crash between a rebuild's
	// upload and its commit); they are handed to garbage collection.
	Orphans int `json:"orphans"`
	// InlineDamaged counts inline objects (deep pass) whose data in their
	// metadata record fails its checksum: no shards to rebuild them from,
	// they are logged by name to be restored from a metadata snapshot.
	InlineDamaged int `json:"inline_damaged,omitempty"`
	// Cursor is the last stripe checked (hex), where a resumed pass goes on.
	Cursor string `json:"cursor,omitempty"`
}

// Fraction is the part of the pass done, 0..1.
func (p ScrubProgress) Fraction() float64 {
	if !p.Finished.IsZero() {
		return 1
	}
	if p.Total == 0 {
		return 0
	}
	return min(float64(p.Done)/float64(p.Total), 1)
}

func scrubMeta(pass string) string { return "healer/scrub/" + pass }

func passName(deep bool) string {
	if deep {
		return "deep"
	}
	return "light"
}

// Scrub walks every stripe once and checks its shards (see ScrubOptions).
// Shards found missing or corrupt are forgotten (their locations cleared,
// the bad copies handed to garbage collection) and their stripes queued;
// stripes breaking the placement invariant, or otherwise short of shards,
// are queued too. Progress is saved every few seconds, so a resumed pass
// redoes little.
func (h *Healer) Scrub(ctx context.Context, o ScrubOptions) (ScrubProgress, error) {
	pass := passName(o.Deep)
	p := ScrubProgress{Pass: pass, Started: h.now()}
	var after [16]byte
	if o.Resume {
		if raw, err := h.meta.GetMeta(ctx, scrubMeta(pass)); err == nil {
			var saved ScrubProgress
			if json.Unmarshal(raw, &saved) == nil && saved.Finished.IsZero() {
				p = saved
				if b, err := hex.DecodeString(saved.Cursor); err == nil && len(b) == 16 {
					copy(after[:], b)
				}
			}
		}
	}
	// The total is what is done plus what is left after the cursor,
	// counted anew when a pass resumes: the store may have grown or shrunk
	// since it started, and a total kept from then showed a pass under way
	// as "8/4 stripes".
	n := 0
	if err := h.meta.ScanStripes(ctx, after, func(*metastore.Stripe) error { n++; return nil }); err != nil {
		return p, err
	}
	p.Total = p.Done + n
	var pace time.Duration
	if o.Period > 0 && p.Total > 0 {
		pace = o.Period / time.Duration(p.Total)
	}
	h.setScrub(pass, p)
	lastSave := time.Now()
	save := func() {
		raw, _ := json.Marshal(p)
		if err := h.meta.PutMeta(context.WithoutCancel(ctx), scrubMeta(pass), raw); err != nil {
			h.log.Warn("save scrub progress", "err", err)
		}
		lastSave = time.Now()
	}
	// Stripes are collected in chunks so no metastore iterator stays open
	// while shards are read (and while the pass sleeps).
	for {
		var chunk []*metastore.Stripe
		err := h.meta.ScanStripes(ctx, after, func(st *metastore.Stripe) error {
			chunk = append(chunk, st)
			if len(chunk) >= 128 {
				return metastore.ErrStop
			}
			return nil
		})
		if err != nil {
			return p, err
		}
		if len(chunk) == 0 {
			break
		}
		for _, st := range chunk {
			t0 := time.Now()
			if err := h.scrubStripe(ctx, st, o.Deep, &p); err != nil {
				if ctx.Err() != nil {
					save()
					return p, ctx.Err()
				}
				h.log.Warn("scrub stripe", "stripe", hex.EncodeToString(st.ID[:]), "err", err)
			}
			p.Done++
			// Stripes written after the cursor since the count are
			// checked too.
			p.Total = max(p.Total, p.Done)
			p.Cursor = hex.EncodeToString(st.ID[:])
			after = st.ID
			h.setScrub(pass, p)
			h.metrics.scrubbed.WithLabelValues(pass).Inc()
			if o.Progress != nil {
				o.Progress(p)
			}
			if time.Since(lastSave) > 5*time.Second {
				save()
			}
			if pace > 0 {
				if !sleep(ctx, pace-time.Since(t0)) {
					save()
					return p, ctx.Err()
				}
			}
		}
	}
	if o.Deep {
		n, err := h.checkInline(ctx)
		if err != nil {
			save()
			return p, err
		}
		p.InlineDamaged = n
	}
	n, err := h.sweepOrphans(ctx)
	if err != nil {
		save()
		return p, err
	}
	p.Orphans += n
	p.Finished = h.now()
	p.Total = max(p.Total, p.Done)
	h.setScrub(pass, p)
	save()
	if o.Progress != nil {
		o.Progress(p)
	}
	return p, nil
}

func (h *Healer) setScrub(pass string, p ScrubProgress) {
	h.mu.Lock()
	cp := p
	h.scrubs[pass] = &cp
	h.mu.Unlock()
	h.metrics.scrubProgress.WithLabelValues(pass).Set(p.Fraction())
}

// scrubStripe checks one stripe's shards and acts on what it finds.
func (h *Healer) scrubStripe(ctx context.Context, st *metastore.Stripe, deep bool, p *ScrubProgress) error {
	views := h.views()
	var verify func(int, []byte, []byte) error
	if deep {
		codec, err := h.codec(st)
		if err != nil {
			return fmt.Errorf("codec: %w", err)
		}
		verify = func(i int, b, sum []byte) error { return codec.VerifyShard(encoder.StripeID(st.ID), i, b, sum) }
	}
	var mu sync.Mutex
	var missing, corrupt []int
	var wg sync.WaitGroup
	for i, loc := range st.Shards {
		v, ok := views[loc.Backend]
		if loc.Backend == "" || !ok || !v.Reachable || (v.State != plan.Up && v.State != plan.Draining) {
			continue
		}
		b, ok := h.pool.Backend(loc.Backend)
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			kind, n, err := h.checkShard(ctx, b, st.ID, i, loc, verify)
			mu.Lock()
			defer mu.Unlock()
			p.Bytes += n
			switch kind {
			case shardMissing:
				missing = append(missing, i)
				p.Missing++
				h.metrics.scrubFindings.WithLabelValues("missing").Inc()
			case shardCorrupt:
				corrupt = append(corrupt, i)
				p.Corrupt++
				h.metrics.scrubFindings.WithLabelValues("corrupt").Inc()
			case shardUnreachable:
				p.Unreachable++
				h.Report(loc.Backend, err)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	bad := append(slices.Clone(missing), corrupt...)
	if len(bad) > 0 {
		reason := fmt.Sprintf("scrub: shards %v missing, %v corrupt", missing, corrupt)
		// Only the very locations checked are cleared: a rebuild that
		// moved a shard meanwhile is left alone.
		match := func(i int, loc metastore.ShardLoc) bool {
			return slices.Contains(bad, i) && loc.Backend == st.Shards[i].Backend && loc.Key == st.Shards[i].Key
		}
		if err := h.clearShards(ctx, st.ID, match, true, reason); err != nil {
			return err
		}
		p.Queued++
		h.kick()
		return nil
	}
	d := plan.Stripe(view(st), views)
	if len(d.Misplaced) > 0 {
		p.Misplaced++
		h.metrics.scrubFindings.WithLabelValues("misplaced").Inc()
	}
	if len(d.Rebuild) > 0 {
		reason := "scrub: stripe short of shards"
		if len(d.Misplaced) > 0 {
			reason = fmt.Sprintf("scrub: shards %v break the placement invariant", d.Misplaced)
		}
		// Joined: an entry's cause only its reason records (a wiped
		// backend, a reader's finding) stays for the rebuilder.
		if err := h.meta.EnqueueJoin(ctx, metastore.RepairItem{Stripe: st.ID, Margin: d.Margin, Reason: reason}); err != nil {
			return err
		}
		p.Queued++
		h.kick()
	}
	return nil
}

// sweepOrphans lists the shards on every answering backend and hands to
// garbage collection (after the orphan delay) those that no stripe, write
// intent or garbage entry names. Shards of a rebuild still in flight may
// be among them; the collector's reference check keeps any that a commit
// names by the time they are due, so the sweep never costs a live shard.
func (h *Healer) sweepOrphans(ctx context.Context) (int, error) {
	known := map[string]bool{}
	key := func(backend, k string) string { return backend + "\x00" + k }
	if err := h.meta.ListIntents(ctx, func(in metastore.Intent) error {
		for _, l := range in.Shards {
			known[key(l.Backend, l.Key)] = true
		}
		return nil
	}); err != nil {
		return 0, err
	}
	if err := h.meta.ListGarbage(ctx, func(g metastore.Garbage) error {
		known[key(g.Backend, g.Key)] = true
		return nil
	}); err != nil {
		return 0, err
	}
	views := h.views()
	var names []string
	for name, v := range views {
		if v.Reachable && (v.State == plan.Up || v.State == plan.Draining) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	total := 0
	for _, name := range names {
		b, ok := h.pool.Backend(name)
		if !ok {
			continue
		}
		var orphans []metastore.Garbage
		err := b.List(ctx, shardio.ShardPrefix, func(k string, _ int64) error {
			if known[key(name, k)] {
				return nil
			}
			id, idx, ok := shardio.ParseShardKey(k)
			if !ok {
				return nil
			}
			st, err := h.meta.GetStripe(ctx, id)
			switch {
			case err == nil:
				if idx < len(st.Shards) && st.Shards[idx].Backend == name && st.Shards[idx].Key == k {
					return nil
				}
			case !errors.Is(err, metastore.ErrNotFound):
				return err
			}
			orphans = append(orphans, metastore.Garbage{Backend: name, Key: k})
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return total, ctx.Err()
			}
			h.Report(name, err)
			continue
		}
		// Due one orphan delay after the listing, not after the sweep
		// began: a write whose intent the sweep did not see (it began
		// after ListIntents) placed its shards before they were listed,
		// so its intent expires (and its commit becomes impossible)
		// before these entries are due, however long the listing took.
		after := h.now().Add(h.cfg.OrphanDelay.D())
		for i := range orphans {
			orphans[i].After = after
		}
		for len(orphans) > 0 {
			chunk := orphans[:min(len(orphans), 256)]
			if err := h.meta.AddGarbage(ctx, chunk...); err != nil {
				return total, err
			}
			total += len(chunk)
			orphans = orphans[len(chunk):]
		}
	}
	if total > 0 {
		h.log.Info("orphan shards handed to garbage collection", "count", total)
	}
	return total, nil
}

type shardFinding int

const (
	shardOK shardFinding = iota
	shardMissing
	shardCorrupt
	shardUnreachable
)

// checkShard checks one shard: light (Stat, size) when verify is nil,
// deep (read and verify) otherwise. It returns bytes read.
func (h *Healer) checkShard(ctx context.Context, b backends.Backend, id [16]byte, i int, loc metastore.ShardLoc, verify func(int, []byte, []byte) error) (shardFinding, int64, error) {
	if verify == nil {
		size, err := b.Stat(ctx, loc.Key)
		switch {
		case errors.Is(err, backends.ErrNotFound):
			return shardMissing, 0, err
		case err != nil:
			return shardUnreachable, 0, err
		case loc.Size > 0 && size != loc.Size:
			return shardCorrupt, 0, fmt.Errorf("shard %d of %x on %s: size %d, recorded %d", i, id, loc.Backend, size, loc.Size)
		}
		return shardOK, 0, nil
	}
	if err := h.scrubLimiter.Wait(ctx, int(loc.Size)); err != nil {
		return shardUnreachable, 0, err
	}
	data, err := b.Get(ctx, loc.Key)
	switch {
	case errors.Is(err, backends.ErrNotFound):
		return shardMissing, 0, err
	case err != nil:
		return shardUnreachable, 0, err
	}
	if err := verify(i, data, loc.Sum); err != nil {
		return shardCorrupt, int64(len(data)), err
	}
	return shardOK, int64(len(data)), nil
}

// scrubLoop runs paced passes back to back; a restarted daemon resumes the
// unfinished one.
func (h *Healer) scrubLoop(ctx context.Context, deep bool) {
	period := h.cfg.LightScrubPeriod.D()
	if deep {
		period = h.cfg.ScrubPeriod.D()
	}
	for ctx.Err() == nil {
		start := time.Now()
		p, err := h.Scrub(ctx, ScrubOptions{Deep: deep, Period: period, Resume: true})
		if err != nil && ctx.Err() == nil {
			h.log.Warn("scrub pass failed", "pass", passName(deep), "err", err)
		}
		if err == nil {
			h.log.Info("scrub pass finished", "pass", p.Pass, "stripes", p.Done, "missing", p.Missing,
				"corrupt", p.Corrupt, "misplaced", p.Misplaced, "took", time.Since(start))
		}
		// An empty store or a failed pass must not spin.
		if time.Since(start) < time.Minute && !sleep(ctx, time.Minute) {
			return
		}
	}
}

// inlineSound reports whether an inline object's data matches the checksum
// kept beside it in its record (no key needed).
func inlineSound(obj *metastore.Object) bool {
	sum := encoder.Sum(obj.Policy.Checksum, obj.Inline)
	return sum != nil && bytes.Equal(sum, obj.InlineSum)
}

// checkInline verifies every inline object's checksum and returns how
// many failed, each logged by name: the metastore (and its snapshots) is
// their only copy, so a damaged one must be found while a snapshot still
// holds it intact.
func (h *Healer) checkInline(ctx context.Context) (int, error) {
	damaged := 0
	after := ""
	for {
		objs, err := h.meta.ListObjects(ctx, "", after, 512)
		if err != nil {
			return damaged, err
		}
		if len(objs) == 0 {
			return damaged, nil
		}
		for i := range objs {
			if objs[i].IsInline() && !inlineSound(&objs[i]) {
				damaged++
				h.log.Error("inline object damaged: its data in the metadata record fails its checksum; restore the record from a metadata snapshot",
					"object", objs[i].Name)
			}
		}
		after = objs[len(objs)-1].Name
	}
}

// HealObject checks every stripe of one object deeply (read and verify
// each shard) and repairs what it finds, now.
func (h *Healer) HealObject(ctx context.Context, name string) (RepairReport, error) {
	obj, err := h.meta.GetObject(ctx, name)
	if err != nil {
		return RepairReport{}, err
	}
	if obj.IsInline() {
		// No shards to check or rebuild: the content is in the record,
		// protected by the metastore and its snapshots. Its checksum
		// needs no key; a mismatch is reported, never passed as healthy.
		if !inlineSound(obj) {
			return RepairReport{}, fmt.Errorf("heal %q: inline object: the data kept in its metadata record does not match its %s checksum (restore the record from a metadata snapshot): %w",
				name, obj.Policy.Checksum, encoder.ErrCorrupt)
		}
		return RepairReport{}, nil
	}
	var rep RepairReport
	before := h.totals()
	for _, id := range obj.Stripes {
		st, err := h.meta.GetStripe(ctx, id)
		if errors.Is(err, metastore.ErrNotFound) {
			continue
		}
		if err != nil {
			return rep, err
		}
		var p ScrubProgress
		if err := h.scrubStripe(ctx, st, true, &p); err != nil {
			return rep, err
		}
		it, err := h.meta.GetRepair(ctx, id)
		if errors.Is(err, metastore.ErrNotFound) {
			continue
		}
		if err != nil {
			return rep, err
		}
		o, err := h.Repair(ctx, *it)
		switch o {
		case Repaired:
			rep.Repaired++
		case NoOp:
			rep.NoOp++
		case Failed:
			rep.Failed++
			if len(rep.Errors) < 10 {
				rep.Errors = append(rep.Errors, errString(err))
			}
		}
	}
	after := h.totals()
	rep.BytesWritten = after.bytesWritten - before.bytesWritten
	rep.BytesRead = after.bytesRead - before.bytesRead
	rep.Remaining, err = h.meta.QueueLen(ctx)
	return rep, err
}
