package healer

import (
	"context"
	"errors"
	"time"

	"github.com/healstore/healstore/healer/plan"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

// GCReport sums up one garbage collection pass.
type GCReport struct {
	// Deleted shards.
	Deleted int `json:"deleted"`
	// Referenced entries dropped without deleting: a committed stripe
	// references the location again (a rebuild put the shard back there).
	Referenced int `json:"referenced"`
	// Deferred entries whose backend did not answer; tried again later.
	Deferred int `json:"deferred"`
	// Dropped entries on backends that are gone (retired, replaced,
	// unknown), or whose key is not a shard key.
	Dropped int `json:"dropped"`
	// Orphans: shards of write intents older than the orphan delay,
	// handed to garbage collection in this pass.
	Orphans int `json:"orphans"`
}

func (h *Healer) gcLoop(ctx context.Context) {
	for sleep(ctx, h.cfg.GCInterval.D()) {
		rep, err := h.GC(ctx)
		if err != nil && ctx.Err() == nil {
			h.log.Warn("garbage collection failed", "err", err)
		}
		if rep.Deleted+rep.Orphans > 0 {
			h.log.Info("garbage collected", "deleted", rep.Deleted, "orphans", rep.Orphans, "deferred", rep.Deferred)
		}
	}
}

// GC runs one pass: intents older than the orphan delay (crashed writes
// and rebuilds) become garbage, then every garbage entry past its safety
// delay is deleted from its backend. Before each delete, under the
// stripe's lock, the stripe is read again: a shard a committed stripe
// references is never deleted.
func (h *Healer) GC(ctx context.Context) (GCReport, error) {
	var rep GCReport
	now := h.now()
	var old [][16]byte
	err := h.meta.ListIntents(ctx, func(in metastore.Intent) error {
		if in.Created.Before(now.Add(-h.cfg.OrphanDelay.D())) {
			old = append(old, in.ID)
			rep.Orphans += len(in.Shards)
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	for _, id := range old {
		if err := h.meta.IntentToGarbage(ctx, id, now); err != nil {
			return rep, err
		}
	}
	var due []metastore.Garbage
	err = h.meta.DueGarbage(ctx, now, func(g metastore.Garbage) error {
		due = append(due, g)
		if len(due) >= 10000 {
			return metastore.ErrStop
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	views := h.views()
	// Settled entries are removed in batches: one synced commit per
	// hundred, not per shard.
	var settled []metastore.Garbage
	flush := func() error {
		err := h.meta.RemoveGarbage(ctx, settled...)
		settled = settled[:0]
		return err
	}
	defer func() { h.metrics.gcDeleted.Add(float64(rep.Deleted)) }()
	for _, g := range due {
		if err := ctx.Err(); err != nil {
			return rep, errors.Join(err, flush())
		}
		v, known := views[g.Backend]
		id, idx, ok := shardio.ParseShardKey(g.Key)
		if !known || v.State == plan.Retired || v.State == plan.Replaced || !ok {
			settled = append(settled, g)
			rep.Dropped++
		} else {
			done, err := h.collect(ctx, g, id, idx, v, &rep)
			if err != nil {
				return rep, errors.Join(err, flush())
			}
			if done {
				settled = append(settled, g)
			}
		}
		if len(settled) >= 100 {
			if err := flush(); err != nil {
				return rep, err
			}
		}
	}
	return rep, flush()
}

// collect deletes one garbage shard unless a stripe references it. It
// reports whether the entry is settled.
func (h *Healer) collect(ctx context.Context, g metastore.Garbage, id [16]byte, idx int, v plan.BackendView, rep *GCReport) (bool, error) {
	unlock := h.lockStripe(id)
	defer unlock()
	st, err := h.meta.GetStripe(ctx, id)
	switch {
	case err == nil:
		if idx < len(st.Shards) && st.Shards[idx].Backend == g.Backend && st.Shards[idx].Key == g.Key {
			rep.Referenced++
			return true, nil
		}
	case !isNotFound(err):
		return false, err
	}
	if !v.Reachable || v.State == plan.Down {
		rep.Deferred++
		return false, nil
	}
	b, ok := h.pool.Backend(g.Backend)
	if !ok {
		rep.Deferred++
		return false, nil
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := b.Delete(dctx, g.Key); err != nil {
		h.Report(g.Backend, err)
		rep.Deferred++
		return false, nil
	}
	rep.Deleted++
	return true, nil
}
