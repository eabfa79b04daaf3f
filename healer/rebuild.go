package healer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/placement"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer/plan"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

// Outcome is what one repair attempt did.
type Outcome string

// Outcomes.
const (
	// Repaired: shards were rebuilt and committed.
	Repaired Outcome = "repaired"
	// NoOp: nothing to rebuild (the backend came back, the object is gone).
	NoOp Outcome = "noop"
	// Failed: the attempt failed; the entry stays queued with the reason.
	Failed Outcome = "failed"
)

// RepairFailure records one failed repair attempt.
type RepairFailure struct {
	Stripe string    `json:"stripe"`
	Time   time.Time `json:"time"`
	Error  string    `json:"error"`
}

// repairStats are the rebuilder's running totals (guarded by Healer.mu).
type repairStats struct {
	repaired, noop, failed  int64
	bytesWritten, bytesRead int64
	lastFailures            []RepairFailure
}

const keepFailures = 20

// RepairError says why a repair failed, naming the shards by class. It is
// what the queue entry's LastError holds.
type RepairError struct {
	Stripe   [16]byte
	Present  []int // readable shards
	Missing  []int // gone (no location, down backend, not found)
	Corrupt  []int // failed verification
	Waiting  []int // on backends inside their grace period
	Margin   int   // readable shards minus K when the attempt ended
	Cause    error
	Decision string // the planner's classification
}

func (e *RepairError) Error() string {
	return fmt.Sprintf("repair stripe %x: %v (present %v, missing %v, corrupt %v, waiting %v)",
		e.Stripe, e.Cause, e.Present, e.Missing, e.Corrupt, e.Waiting)
}

func (e *RepairError) Unwrap() error { return e.Cause }

// ErrUnrecoverable means fewer than K shards of a stripe are readable now.
var ErrUnrecoverable = errors.New("fewer than k shards readable")

// ErrUnchecked means shards the entry says may be lost could not be
// checked (their backend did not answer): the entry stays queued.
var ErrUnchecked = errors.New("shards that may be lost could not be checked")

// ErrNoTarget means no backend outside the stripe's failure domains could
// take a rebuilt shard; the healer provisions capacity and retries.
var ErrNoTarget = errors.New("no rebuild target outside the stripe's failure domains")

func (h *Healer) workerCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.workers
}

// rebuildLoop dispatches queued repairs to up to Workers goroutines,
// lowest margin first.
func (h *Healer) rebuildLoop(ctx context.Context) {
	inflight := map[[16]byte]bool{}
	done := make(chan [16]byte, 2048)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		for len(done) > 0 {
			delete(inflight, <-done)
		}
		workers := h.workerCount()
		if len(inflight) < workers {
			items, err := h.meta.QueueDue(ctx, h.now(), workers+len(inflight))
			if err != nil && ctx.Err() == nil {
				h.log.Warn("read repair queue", "err", err)
			}
			for _, it := range items {
				if len(inflight) >= workers {
					break
				}
				if inflight[it.Stripe] {
					continue
				}
				inflight[it.Stripe] = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					h.Repair(ctx, it)
					done <- it.Stripe
				}()
			}
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case id := <-done:
			delete(inflight, id)
		case <-h.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// RepairReport sums up a RepairAll call.
type RepairReport struct {
	Repaired     int   `json:"repaired"`
	NoOp         int   `json:"noop"`
	Failed       int   `json:"failed"`
	Remaining    int   `json:"remaining"`
	BytesWritten int64 `json:"bytes_written"`
	BytesRead    int64 `json:"bytes_read"`
	// Errors holds up to 10 failures' messages.
	Errors []string `json:"errors,omitempty"`
}

// RepairAll works the whole queue now, ignoring back-off, with the
// configured workers, until it is empty or a round repairs nothing more
// (every remaining entry failed in this call). progress, if set, hears each
// outcome.
func (h *Healer) RepairAll(ctx context.Context, progress func(it metastore.RepairItem, o Outcome, err error)) (RepairReport, error) {
	var rep RepairReport
	var mu sync.Mutex
	failed := map[[16]byte]bool{}
	before := h.totals()
	for round := 0; ; round++ {
		items, err := h.meta.Queue(ctx, 0)
		if err != nil {
			return rep, err
		}
		var todo []metastore.RepairItem
		for _, it := range items {
			if !failed[it.Stripe] {
				todo = append(todo, it)
			}
		}
		if len(todo) == 0 {
			break
		}
		progressMade := false
		sem := make(chan struct{}, h.workerCount())
		var wg sync.WaitGroup
		for _, it := range todo {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				o, err := h.Repair(ctx, it)
				mu.Lock()
				defer mu.Unlock()
				switch o {
				case Repaired:
					rep.Repaired++
					progressMade = true
				case NoOp:
					rep.NoOp++
					progressMade = true
				case Failed:
					rep.Failed++
					failed[it.Stripe] = true
					if len(rep.Errors) < 10 && err != nil {
						rep.Errors = append(rep.Errors, err.Error())
					}
				}
				if progress != nil {
					progress(it, o, err)
				}
			}()
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if !progressMade {
			break
		}
	}
	n, err := h.meta.QueueLen(ctx)
	if err != nil {
		return rep, err
	}
	rep.Remaining = n
	after := h.totals()
	rep.BytesWritten = after.bytesWritten - before.bytesWritten
	rep.BytesRead = after.bytesRead - before.bytesRead
	return rep, nil
}

func (h *Healer) totals() repairStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stats
}

// needsVerify reports whether an entry whose stripe looks whole to the
// planner should have its shards read and verified: entries queued by
// readers (heal on read) name shards the metastore does not know are bad.
// The monitor's own entries ("backend ...") never need it. Retries need it
// as much as the first attempt: a failed attempt records nothing of what
// its check found, so a retry that skipped the check would take the stripe
// for whole and drop the entry with the shard still lost.
func needsVerify(it metastore.RepairItem) bool {
	// A reason may join several causes ("backend b0 wiped; read found
	// ..."): any cause but a backend's state asks for the check.
	for _, part := range strings.Split(it.Reason, "; ") {
		if !strings.HasPrefix(part, "backend ") {
			return true
		}
	}
	return false
}

// Repair runs one repair attempt for a queue entry: read any K verified
// shards, rebuild only the missing ones, write them to targets that keep
// the placement invariant, commit (compare-and-swap on the stripe's
// version) and only then hand the old locations to garbage collection.
// A failure is recorded on the entry (Requeue) with the reason.
func (h *Healer) Repair(ctx context.Context, it metastore.RepairItem) (Outcome, error) {
	unlock := h.lockStripe(it.Stripe)
	defer unlock()
	o, err := h.repair(ctx, it)
	h.mu.Lock()
	switch o {
	case Repaired:
		h.stats.repaired++
	case NoOp:
		h.stats.noop++
	case Failed:
		h.stats.failed++
		h.stats.lastFailures = append(h.stats.lastFailures, RepairFailure{
			Stripe: fmt.Sprintf("%x", it.Stripe), Time: h.now(), Error: errString(err)})
		if len(h.stats.lastFailures) > keepFailures {
			h.stats.lastFailures = h.stats.lastFailures[1:]
		}
	}
	h.mu.Unlock()
	h.metrics.repairs.WithLabelValues(string(o)).Inc()
	if o != Failed {
		h.log.Debug("repair done", "stripe", fmt.Sprintf("%x", it.Stripe), "outcome", o, "reason", it.Reason)
	}
	if o == Failed && ctx.Err() == nil {
		h.requeue(ctx, it, err)
	}
	return o, err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// requeue records a failed attempt with exponential back-off.
func (h *Healer) requeue(ctx context.Context, it metastore.RepairItem, cause error) {
	attempts := it.Attempts + 1
	backoff := h.cfg.RetryBackoff.D()
	for i := 1; i < attempts && backoff < h.cfg.MaxBackoff.D(); i++ {
		backoff *= 2
	}
	backoff = min(backoff, h.cfg.MaxBackoff.D())
	next := metastore.RepairItem{
		Stripe: it.Stripe, Margin: it.Margin, Queued: it.Queued, Attempts: attempts,
		LastError: errString(cause), NotBefore: h.now().Add(backoff),
	}
	var re *RepairError
	if errors.As(cause, &re) {
		next.Margin = min(next.Margin, re.Margin)
	}
	if err := h.meta.Requeue(ctx, next); err != nil {
		h.log.Warn("record failed repair", "stripe", fmt.Sprintf("%x", it.Stripe), "err", err)
	}
	lvl := slog.LevelInfo
	if errors.Is(cause, ErrNoTarget) || errors.Is(cause, ErrUnrecoverable) {
		lvl = slog.LevelDebug // waiting for capacity or a backend: expected, and retried
	}
	h.log.Log(ctx, lvl, "repair failed", "stripe", fmt.Sprintf("%x", it.Stripe), "attempt", attempts, "err", cause)
}

func (h *Healer) repair(ctx context.Context, it metastore.RepairItem) (Outcome, error) {
	st, err := h.meta.GetStripe(ctx, it.Stripe)
	if errors.Is(err, metastore.ErrNotFound) {
		// The object was deleted or replaced: nothing to repair.
		if _, err := h.meta.DequeueIf(ctx, it); err != nil {
			return Failed, err
		}
		return NoOp, nil
	}
	if err != nil {
		return Failed, err
	}
	views := h.views()
	pv := view(st)
	codec, codecErr := h.codec(st)
	verify := func(i int, shard, sum []byte) error {
		return codec.VerifyShard(encoder.StripeID(st.ID), i, shard, sum)
	}
	// unchecked lists shards on wiped backends whose read got no answer:
	// they may be gone, so the entry stays until they are checked or
	// rebuilt.
	var unchecked []int
	if names := wipedBackends(it.Reason); len(names) > 0 && codecErr == nil {
		// Queued because those backends were found empty: their shards
		// of this stripe are gone unless rebuilt there since (a Stat
		// tells). One found there is read and verified too: it may be
		// a rebuild's upload that never committed, torn by a crash.
		var on []int
		for i, l := range st.Shards {
			if slices.Contains(names, l.Backend) {
				on = append(on, i)
			}
		}
		bad, unanswered := h.statSources(ctx, st, on)
		there := slices.DeleteFunc(slices.Clone(on), func(i int) bool {
			return slices.Contains(bad, i) || slices.Contains(unanswered, i)
		})
		if len(there) > 0 {
			_, vbad, _, vunanswered := h.verifyAll(ctx, st, there, verify)
			bad = append(bad, vbad...)
			unanswered = append(unanswered, vunanswered...)
		}
		for _, i := range bad {
			pv.Shards[i].Bad = true
		}
		unchecked = unanswered
	}
	d := plan.Stripe(pv, views)
	// A shard a reader found gone or corrupt whose backend has turned
	// suspect since is no source, so the check below skips it: unchecked
	// too, or the entry would be dropped and the shard stay lost when the
	// backend comes back. Bounded by the grace period: once the backend
	// is down its shards are rebuilt anyway.
	for _, i := range metastore.ReadFindingShards(it.Reason) {
		if slices.Contains(d.Waiting, i) && !slices.Contains(unchecked, i) {
			unchecked = append(unchecked, i)
		}
	}
	fail := func(cause error, corrupt []int) (Outcome, error) {
		return Failed, &RepairError{Stripe: st.ID, Present: d.Sources, Missing: d.Missing, Corrupt: corrupt,
			Waiting: d.Waiting, Margin: d.Margin, Cause: cause, Decision: d.Describe()}
	}
	if d.Unrecoverable {
		return fail(ErrUnrecoverable, nil)
	}
	if codecErr != nil {
		return fail(fmt.Errorf("codec: %w", codecErr), nil)
	}

	// Shards already read by a verify pass are reused as sources.
	var have [][]byte
	var corrupt []int
	if len(d.Rebuild) == 0 {
		if !needsVerify(it) {
			if len(unchecked) > 0 {
				return fail(fmt.Errorf("shards %v on a wiped backend: %w", unchecked, ErrUnchecked), nil)
			}
			if _, err := h.meta.DequeueIf(ctx, it); err != nil {
				return Failed, err
			}
			return NoOp, nil
		}
		// A reader found this stripe short although the metastore does
		// not know why: a cheap existence check first, a full read and
		// verify only if that finds nothing.
		bad, unanswered := h.statSources(ctx, st, d.Sources)
		if len(bad) == 0 && len(unanswered) == 0 {
			have, bad, corrupt, unanswered = h.verifyAll(ctx, st, d.Sources, verify)
		}
		if len(bad) == 0 {
			// A shard whose backend did not answer may be the one
			// the reader found gone: no answer is no all-clear.
			for _, i := range unchecked {
				if !slices.Contains(unanswered, i) {
					unanswered = append(unanswered, i)
				}
			}
			if len(unanswered) > 0 {
				slices.Sort(unanswered)
				return fail(fmt.Errorf("shards %v: %w", unanswered, ErrUnchecked), nil)
			}
			if _, err := h.meta.DequeueIf(ctx, it); err != nil {
				return Failed, err
			}
			return NoOp, nil
		}
		for _, i := range bad {
			pv.Shards[i].Bad = true
		}
		d = plan.Stripe(pv, views)
		if d.Unrecoverable {
			return fail(ErrUnrecoverable, corrupt)
		}
	}

	// Targets first: no point reading shards that cannot be placed.
	snap := h.now()
	cands := h.candidates()
	rnd := h.randSource()
	want, chosen, avoid, short, err := h.targets(st, d, pv, views, cands, rnd, snap)
	if err != nil {
		return fail(err, corrupt)
	}

	n := len(st.Shards)
	shards := make([][]byte, n)
	if have != nil {
		copy(shards, have)
	} else {
		locs := make([]shardio.Loc, n)
		var need int64
		for _, i := range d.Sources {
			l := st.Shards[i]
			locs[i] = shardio.Loc{Backend: l.Backend, Key: l.Key, Sum: l.Sum}
		}
		for _, i := range d.Sources[:min(st.K, len(d.Sources))] {
			need += st.Shards[i].Size
		}
		if err := h.limiter.Wait(ctx, int(need)); err != nil {
			return Failed, err
		}
		hedge := h.cfg.HedgeAfter.D()
		if hedge < 0 {
			hedge = 0
		}
		res, err := shardio.Fetch(ctx, h.pool, shardio.FetchRequest{
			Stripe: st.ID, Locs: locs, Need: st.K, Prefer: d.Sources,
			Verify: verify, HedgeAfter: hedge, OnError: h.Report,
		})
		grew := false
		if res != nil {
			var read int64
			for _, s := range res.Shards {
				read += int64(len(s))
			}
			h.addRead(read)
			copy(shards, res.Shards)
			// Shards that turned out gone or corrupt are rebuilt too.
			for _, i := range append(slices.Clone(res.Missing), res.Corrupt...) {
				if slices.Contains(d.Sources, i) {
					pv.Shards[i].Bad = true
					grew = true
				}
			}
			corrupt = append(corrupt, res.Corrupt...)
		}
		if err != nil {
			if grew {
				// The requeued entry carries the margin these
				// losses leave (its queue position), not the one
				// planned before the read.
				d = plan.Stripe(pv, views)
			}
			return fail(fmt.Errorf("read sources: %w", err), corrupt)
		}
		if grew {
			d = plan.Stripe(pv, views)
			if d.Unrecoverable {
				return fail(ErrUnrecoverable, corrupt)
			}
			if want, chosen, avoid, short, err = h.targets(st, d, pv, views, cands, rnd, snap); err != nil {
				return fail(err, corrupt)
			}
		}
	}
	if len(want) == 0 {
		if _, err := h.meta.DequeueIf(ctx, it); err != nil {
			return Failed, err
		}
		return NoOp, nil
	}

	// Reconstruct takes only what it needs; rebuilt-but-readable shards
	// (draining, misplaced) are still fine inputs.
	sums := make([][]byte, n)
	for i, l := range st.Shards {
		sums[i] = l.Sum
	}
	inputs := make([][]byte, n)
	for i := range shards {
		if shards[i] != nil && !pv.Shards[i].Bad {
			inputs[i] = shards[i]
		}
	}
	rebuilt, newSums, err := codec.Reconstruct(encoder.StripeID(st.ID), inputs, sums, want)
	if err != nil {
		return fail(fmt.Errorf("reconstruct %v: %w", want, err), corrupt)
	}
	up := make([][]byte, n)
	targets := make([]placement.Candidate, n)
	var out int64
	for j, i := range want {
		up[i] = rebuilt[j]
		targets[i] = chosen[j]
		out += int64(len(rebuilt[j]))
	}
	// No write intent is recorded for rebuilt shards: one synced metadata
	// commit per stripe (the CAS below) is the rebuild's whole metadata
	// cost. A crash between upload and commit leaves shards no record
	// names; the scrubber's orphan sweep finds them (see sweepOrphans).
	if err := h.limiter.Wait(ctx, int(out)); err != nil {
		return Failed, err
	}
	ur := shardio.Upload(ctx, h.pool, st.ID, up, targets, shardio.UploadOptions{
		Candidates: cands,
		Avoid:      avoid,
		OnError:    h.Report,
		Rand:       rnd,
		LagAfter:   shardio.LagFor(len(rebuilt[0])), // want is not empty
	})

	next := *st
	next.Shards = slices.Clone(st.Shards)
	var garbage []metastore.Garbage
	landed := map[string]bool{}
	var written int64
	var notLanded []int
	for j, i := range want {
		old := st.Shards[i]
		if ur.Landed[i] == "" {
			notLanded = append(notLanded, i)
			if pv.Shards[i].Bad && old.Backend != "" {
				// Known bad: forget it even though no copy landed.
				next.Shards[i] = metastore.ShardLoc{}
				garbage = append(garbage, metastore.Garbage{Backend: old.Backend, Key: old.Key})
			}
			continue
		}
		loc := metastore.ShardLoc{Backend: ur.Landed[i], Key: shardio.ShardKey(st.ID, i), Size: int64(len(rebuilt[j])), Sum: newSums[j]}
		landed[loc.Backend+"\x00"+loc.Key] = true
		if old.Backend != "" && (old.Backend != loc.Backend || old.Key != loc.Key) {
			garbage = append(garbage, metastore.Garbage{Backend: old.Backend, Key: old.Key})
		}
		next.Shards[i] = loc
		written += loc.Size
	}
	for _, t := range ur.Tried {
		if !landed[t.Backend+"\x00"+t.Key] {
			garbage = append(garbage, metastore.Garbage{Backend: t.Backend, Key: t.Key})
		}
	}
	// Unchecked shards (on a wiped backend, or a reader's finding on a
	// suspect one) that this repair did not move keep the entry.
	unchecked = slices.DeleteFunc(unchecked, func(i int) bool { return slices.Contains(want, i) })
	if len(notLanded) == 0 && short == nil && len(unchecked) == 0 {
		err = h.meta.CompleteRepair(ctx, &next, garbage, &it)
	} else {
		err = h.meta.UpdateStripe(ctx, &next, garbage)
	}
	if err != nil {
		// Not committed: what landed (and was tried) is unreferenced.
		// The collector checks references before deleting, so handing
		// all of it over is safe even if a later repair puts a shard back.
		var lost []metastore.Garbage
		for _, i := range want {
			if b := ur.Landed[i]; b != "" {
				lost = append(lost, metastore.Garbage{Backend: b, Key: shardio.ShardKey(st.ID, i)})
			}
		}
		for _, t := range ur.Tried {
			lost = append(lost, metastore.Garbage{Backend: t.Backend, Key: t.Key})
		}
		if gerr := h.meta.AddGarbage(context.WithoutCancel(ctx), lost...); gerr != nil {
			h.log.Warn("hand uncommitted rebuilt shards to garbage collection", "err", gerr)
		}
		return fail(fmt.Errorf("commit: %w", err), corrupt)
	}
	h.addWritten(written)
	h.checkLanded(ctx, &next, want, ur.Landed)
	if len(notLanded) > 0 {
		var why []string
		for _, i := range notLanded {
			why = append(why, errString(ur.Errs[i]))
		}
		return fail(fmt.Errorf("shards %v did not land: %s", notLanded, strings.Join(why, "; ")), corrupt)
	}
	if short != nil {
		d = plan.Stripe(view(&next), views)
		return fail(fmt.Errorf("rebuilt %v; the rest must wait: %w", want, short), corrupt)
	}
	if len(unchecked) > 0 {
		d = plan.Stripe(view(&next), views)
		return fail(fmt.Errorf("rebuilt %v; shards %v: %w", want, unchecked, ErrUnchecked), corrupt)
	}
	h.recheckTargets(ctx, &next, ur.Landed)
	return Repaired, nil
}

// checkLanded stats the shards a repair just committed and queues the
// stripe again for those gone from their target. A target wiped between
// the upload and the commit (a new disk under a running backend) and
// found so by the monitor in that window was scanned without this stripe
// (the backend index names it only from the commit on), and the monitor
// marked it again, so no probe would find the loss: only a scrub would.
// A wipe after this Stat is found by the monitor, whose scan then names
// the stripe. One Stat per rebuilt shard; a target that does not answer
// is the monitor's to judge (statSources reports it).
func (h *Healer) checkLanded(ctx context.Context, st *metastore.Stripe, want []int, landed []string) {
	var on []int
	for _, i := range want {
		if landed[i] != "" && st.Shards[i].Backend == landed[i] {
			on = append(on, i)
		}
	}
	if len(on) == 0 {
		return
	}
	gone, _ := h.statSources(ctx, st, on)
	if len(gone) == 0 {
		return
	}
	pv := view(st)
	for _, i := range gone {
		pv.Shards[i].Bad = true
	}
	d := plan.Stripe(pv, h.views())
	h.log.Warn("rebuilt shards gone from their targets right after the commit; queued again",
		"stripe", fmt.Sprintf("%x", st.ID), "shards", gone)
	// Joined, as a reader's finding: the entry (kept when the repair
	// left work) keeps its cause, and the next attempt checks these
	// shards, which the planner takes for whole on an up backend.
	it := metastore.RepairItem{Stripe: st.ID, Margin: d.Margin, Reason: metastore.ReadFindingReason(gone, nil)}
	if err := h.meta.EnqueueJoin(ctx, it); err != nil {
		h.log.Warn("queue repaired stripe whose rebuilt shards are gone", "stripe", fmt.Sprintf("%x", st.ID), "err", err)
		return
	}
	h.kick()
}

// recheckTargets queues a just repaired stripe again if a backend that
// received one of its shards is no longer up and the stripe needs work
// for it. The monitor queues a backend's stripes when it changes state,
// through the backend index, which names the new locations only since the
// commit: a target that went down (or was drained) between the upload and
// the commit was scanned without this stripe, and no later event would
// queue it. The monitor records a new state before it scans, so a scan
// that missed the commit left a state this check sees.
func (h *Healer) recheckTargets(ctx context.Context, st *metastore.Stripe, landed []string) {
	views := h.views()
	var left []string
	for _, b := range landed {
		if b != "" && views[b].State != plan.Up && !slices.Contains(left, b) {
			left = append(left, b)
		}
	}
	if len(left) == 0 {
		return
	}
	d := plan.Stripe(view(st), views)
	if len(d.Rebuild) == 0 {
		return
	}
	why := make([]string, len(left))
	for i, b := range left {
		why[i] = "backend " + b + " " + string(views[b].State)
	}
	// Joined: the entry, kept when the repair left work, may name a
	// wiped backend or a reader's finding the rebuilder still needs.
	if err := h.meta.EnqueueJoin(ctx, metastore.RepairItem{Stripe: st.ID, Margin: d.Margin, Reason: strings.Join(why, "; ")}); err != nil {
		h.log.Warn("queue repaired stripe whose target left", "stripe", fmt.Sprintf("%x", st.ID), "err", err)
		return
	}
	h.kick()
}

// targets picks a backend for each shard to rebuild, outside every domain
// a kept shard holds. When fewer fit than are wanted, the most urgent
// shards get targets now, short says why the rest wait, and the monitor is
// asked for capacity.
func (h *Healer) targets(st *metastore.Stripe, d plan.Decision, pv plan.StripeView, views map[string]plan.BackendView,
	cands []placement.Candidate, rnd *mrand.Rand, snap time.Time) (want []int, chosen []placement.Candidate, avoid map[string]bool, short, err error) {
	want = d.Rebuild
	avoid = make(map[string]bool, len(d.AvoidDomains))
	for _, dom := range d.AvoidDomains {
		avoid[dom] = true
	}
	if len(want) == 0 {
		return want, nil, avoid, nil, nil
	}
	chosen, err = placement.Choose(cands, len(want), avoid, true, rnd)
	if err == nil {
		return want, chosen, avoid, nil, nil
	}
	var ne *placement.NotEnoughError
	if errors.As(err, &ne) && ne.Usable > 0 {
		keep := urgentFirst(want, d)[:ne.Usable]
		for _, i := range want {
			if slices.Contains(keep, i) || pv.Shards[i].Bad {
				continue
			}
			if v, ok := views[st.Shards[i].Backend]; ok {
				avoid[v.Domain] = true // it stays where it is for now
			}
		}
		slices.Sort(keep)
		short = fmt.Errorf("%w: %w", ErrNoTarget, err)
		if chosen, err = placement.Choose(cands, len(keep), avoid, true, rnd); err == nil {
			h.needCapacity(snap)
			return keep, chosen, avoid, short, nil
		}
	}
	h.needCapacity(snap)
	return nil, nil, nil, nil, fmt.Errorf("%w: %w", ErrNoTarget, err)
}

// statSources checks that each source shard exists with its recorded size
// and returns those that do not, and those whose backend did not answer
// (or is not open): not known either way.
func (h *Healer) statSources(ctx context.Context, st *metastore.Stripe, sources []int) (bad, unanswered []int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, i := range sources {
		l := st.Shards[i]
		b, ok := h.pool.Backend(l.Backend)
		if !ok {
			// Goroutines of earlier shards append concurrently.
			mu.Lock()
			unanswered = append(unanswered, i)
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			size, err := b.Stat(ctx, l.Key)
			if err != nil && !errors.Is(err, backends.ErrNotFound) {
				h.Report(l.Backend, err)
				mu.Lock()
				unanswered = append(unanswered, i)
				mu.Unlock()
				return
			}
			if err != nil || (l.Size > 0 && size != l.Size) {
				mu.Lock()
				bad = append(bad, i)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(bad)
	slices.Sort(unanswered)
	return bad, unanswered
}

// urgentFirst orders shards to rebuild by how much they matter: lost ones
// first, then those waiting out a grace period, then moves.
func urgentFirst(want []int, d plan.Decision) []int {
	var out []int
	for _, class := range [][]int{d.Missing, d.Waiting, d.Draining, d.Misplaced} {
		for _, i := range class {
			if slices.Contains(want, i) && !slices.Contains(out, i) {
				out = append(out, i)
			}
		}
	}
	for _, i := range want {
		if !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	return out
}

// verifyAll reads and verifies every source shard; it returns the shards
// read (nil where bad), the indices found gone or corrupt, the corrupt
// ones alone, and those whose backend did not answer (or is not open).
func (h *Healer) verifyAll(ctx context.Context, st *metastore.Stripe, sources []int, verify func(int, []byte, []byte) error) (shards [][]byte, bad, corrupt, unanswered []int) {
	shards = make([][]byte, len(st.Shards))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, i := range sources {
		l := st.Shards[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, ok := h.pool.Backend(l.Backend)
			if !ok {
				mu.Lock()
				unanswered = append(unanswered, i)
				mu.Unlock()
				return
			}
			_ = h.limiter.Wait(ctx, int(l.Size))
			data, err := b.Get(ctx, l.Key)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, backends.ErrNotFound):
				bad = append(bad, i)
			case err != nil:
				h.Report(l.Backend, err)
				unanswered = append(unanswered, i)
			case verify(i, data, l.Sum) != nil:
				h.addReadLocked(int64(len(data)))
				bad = append(bad, i)
				corrupt = append(corrupt, i)
			default:
				h.addReadLocked(int64(len(data)))
				shards[i] = data
			}
		}()
	}
	wg.Wait()
	slices.Sort(bad)
	slices.Sort(corrupt)
	slices.Sort(unanswered)
	return shards, bad, corrupt, unanswered
}

func (h *Healer) addRead(n int64) {
	h.mu.Lock()
	h.stats.bytesRead += n
	h.mu.Unlock()
	h.metrics.readBytes.Add(float64(n))
}

// addReadLocked is addRead for callers holding their own lock (not h.mu).
func (h *Healer) addReadLocked(n int64) { h.addRead(n) }

func (h *Healer) addWritten(n int64) {
	h.mu.Lock()
	h.stats.bytesWritten += n
	h.rates.add(h.now(), n)
	h.mu.Unlock()
	h.metrics.writtenBytes.Add(float64(n))
}

// retrySoon lifts the back-off of every queued repair: new capacity (a
// provisioned backend) or a backend that answers again may let them all
// succeed now.
func (h *Healer) retrySoon(ctx context.Context) {
	h.mu.Lock()
	h.capacityAt = h.now()
	h.mu.Unlock()
	items, err := h.meta.Queue(ctx, 0)
	if err != nil {
		h.log.Warn("read repair queue", "err", err)
		return
	}
	now := h.now()
	for _, it := range items {
		if !it.NotBefore.After(now) {
			continue
		}
		it.NotBefore = now
		// No reason: the entry keeps its own, which a finding since the
		// queue was read (a backend found wiped) may have changed.
		it.Reason = ""
		if err := h.meta.Requeue(ctx, it); err != nil {
			h.log.Warn("lift repair back-off", "err", err)
			return
		}
	}
	h.kick()
}

// needCapacity asks the monitor for more capacity at its next round,
// unless capacity was added since the failed attempt looked (snap).
func (h *Healer) needCapacity(snap time.Time) {
	h.mu.Lock()
	if snap.After(h.wantedAt) {
		h.wantedAt = snap
	}
	h.mu.Unlock()
	select {
	case h.probeMe <- "":
	default:
	}
}

// rateWindow measures rebuilt bytes per second over the last ten seconds.
type rateWindow struct {
	buckets [10]int64
	stamps  [10]int64 // unix second each bucket holds
}

func (r *rateWindow) add(now time.Time, n int64) {
	s := now.Unix()
	i := int(s % int64(len(r.buckets)))
	if r.stamps[i] != s {
		r.stamps[i], r.buckets[i] = s, 0
	}
	r.buckets[i] += n
}

func (r *rateWindow) rate(now time.Time) float64 {
	s := now.Unix()
	var sum int64
	for i := range r.buckets {
		if s-r.stamps[i] < int64(len(r.buckets)) {
			sum += r.buckets[i]
		}
	}
	return float64(sum) / float64(len(r.buckets))
}
