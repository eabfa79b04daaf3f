package metastore

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ReadFindingReason is the queue reason of a read that found shards of a
// stripe missing or corrupt (heal on read), such as
// "read found shards missing [0 2], corrupt [1]". The rebuilder reads the
// indices back with ReadFindingShards: those shards are checked, as the
// metastore does not know them bad.
func ReadFindingReason(missing, corrupt []int) string {
	return fmt.Sprintf("read found shards missing %v, corrupt %v", missing, corrupt)
}

// ReadFindingShards names the shards the read findings in a queue reason
// found missing or corrupt (several causes may be joined by "; ").
func ReadFindingShards(reason string) []int {
	var out []int
	for _, part := range strings.Split(reason, "; ") {
		rest, ok := strings.CutPrefix(part, "read found shards ")
		for ok {
			var list string
			if _, rest, ok = strings.Cut(rest, "["); !ok {
				break
			}
			if list, rest, ok = strings.Cut(rest, "]"); !ok {
				break
			}
			for _, f := range strings.Fields(list) {
				if i, err := strconv.Atoi(f); err == nil && !slices.Contains(out, i) {
					out = append(out, i)
				}
			}
		}
	}
	return out
}

// The repair queue is two sets of keys:
//
//	queue/<margin>/<queued>/<stripe> -> repair record   (the order)
//	qidx/<stripe>                    -> its queue key     (one entry per stripe)
//
// A prefix scan of queue/ yields the entries by margin, then age. qidx makes
// enqueueing idempotent per stripe and lets a change of margin move the
// entry; both are always changed together, with qidx as the condition.

type mergeMode int

const (
	// mergeEnqueue: keep the lowest margin and the earliest queue time; a
	// lower margin clears back-off and takes the new reason.
	mergeEnqueue mergeMode = iota
	// mergeRequeue: record an attempt (Attempts, LastError, NotBefore from
	// the new item), keeping the lowest margin and the original queue time.
	mergeRequeue
	// mergeRecause: mergeEnqueue, but the new item's reason (when not
	// empty) replaces the entry's whatever the margins, and the back-off
	// is cleared: what was found makes the entry due now.
	mergeRecause
	// mergeJoin: mergeEnqueue, but each of the new item's "; "-separated
	// causes that is not already one of the entry's is joined to the
	// entry's reason whatever the margins, never replacing it.
	mergeJoin
)

func merge(old *RepairItem, it RepairItem, mode mergeMode) RepairItem {
	if old == nil {
		return it
	}
	out := *old
	if it.Queued.Before(out.Queued) {
		out.Queued = it.Queued
	}
	lower := it.Margin < out.Margin
	if mode == mergeJoin {
		// Cause by cause: an item's reason may join several itself
		// (a sweep's for two backends, a recovery survey's detail),
		// and compared whole it never matched one of the entry's, so
		// each queueing appended it again.
		causes := strings.Split(out.Reason, "; ")
		for _, c := range strings.Split(it.Reason, "; ") {
			if !slices.Contains(causes, c) {
				causes = append(causes, c)
			}
		}
		out.Reason = strings.Join(slices.DeleteFunc(causes, func(c string) bool { return c == "" }), "; ")
		if lower {
			out.Margin = it.Margin
			if it.NotBefore.Before(out.NotBefore) {
				out.NotBefore = it.NotBefore
			}
		}
		return out
	}
	if lower {
		out.Margin = it.Margin
		// An item without a reason (a failed attempt's requeue) keeps
		// the entry's: the census reads lost shards from it.
		if it.Reason != "" && it.Reason != out.Reason && mode == mergeEnqueue {
			// A new finding: the repair starts over (attempt 0, so
			// the rebuilder checks the shards again rather than
			// trusting what the old reason said).
			out.Attempts = 0
		}
		if it.Reason != "" {
			out.Reason = it.Reason
		}
	}
	switch mode {
	case mergeEnqueue:
		if lower && it.NotBefore.Before(out.NotBefore) {
			out.NotBefore = it.NotBefore
		}
	case mergeRecause:
		if it.Reason != "" {
			out.Reason = it.Reason
		}
		if it.NotBefore.Before(out.NotBefore) {
			out.NotBefore = it.NotBefore
		}
	case mergeRequeue:
		out.Attempts = it.Attempts
		out.LastError = it.LastError
		out.NotBefore = it.NotBefore
		if it.Reason != "" && !lower {
			out.Reason = it.Reason
		}
	}
	return out
}

func (s *Store) enqueueInto(ctx context.Context, b *Batch, items []RepairItem, mode mergeMode) error {
	now := s.now()
	merged := make(map[[16]byte]RepairItem, len(items))
	var order [][16]byte
	for _, it := range items {
		if it.Queued.IsZero() {
			it.Queued = now
		}
		it.Queued = it.Queued.UTC()
		if !it.NotBefore.IsZero() {
			it.NotBefore = it.NotBefore.UTC()
		}
		if prev, ok := merged[it.Stripe]; ok {
			merged[it.Stripe] = merge(&prev, it, mode)
			continue
		}
		merged[it.Stripe] = it
		order = append(order, it.Stripe)
	}
	for _, id := range order {
		it := merged[id]
		qi := qindexKey(id)
		oldKey, found, err := s.get(ctx, qi)
		if err != nil {
			return err
		}
		var old *RepairItem
		var oldRaw []byte
		if found {
			b.ExpectValue(qi, oldKey)
			raw, ok, err := s.get(ctx, oldKey)
			if err != nil {
				return err
			}
			if ok {
				b.ExpectValue(oldKey, raw)
				if old, err = decodeRepair(oldKey, raw); err != nil {
					return err
				}
				oldRaw = raw
			}
		} else {
			b.ExpectMissing(qi)
		}
		next := merge(old, it, mode)
		rec, err := encodeRepair(&next)
		if err != nil {
			return err
		}
		newKey := queueKey(&next)
		if found && bytes.Equal(newKey, oldKey) && bytes.Equal(rec, oldRaw) {
			continue // nothing changes; the conditions alone cost nothing
		}
		if found {
			b.Delete(oldKey)
		}
		b.Put(newKey, rec)
		b.Put(qi, newKey)
	}
	return nil
}

// dequeueInto removes a stripe's queue entry; when done is non-nil only if
// the entry still sits at done's queue position.
func (s *Store) dequeueInto(ctx context.Context, b *Batch, id [16]byte, done *RepairItem) error {
	qi := qindexKey(id)
	qk, found, err := s.get(ctx, qi)
	if err != nil || !found {
		return err
	}
	if done != nil {
		d := *done
		d.Stripe = id
		if !bytes.Equal(qk, queueKey(&d)) {
			return nil
		}
		// Same position, but a new cause recorded since the repair
		// read the entry (a backend found wiped): the entry stays for
		// the next attempt to see it.
		raw, found, err := s.get(ctx, qk)
		if err != nil || !found {
			return err
		}
		cur, err := decodeRepair(qk, raw)
		if err != nil {
			return err
		}
		if cur.Reason != done.Reason {
			return nil
		}
		b.ExpectValue(qk, raw)
	}
	b.ExpectValue(qi, qk)
	b.Delete(qi)
	b.Delete(qk)
	return nil
}

// Enqueue adds stripes to the repair queue in one batch. It is idempotent
// per stripe: a stripe already queued keeps the lowest margin and the
// earliest queue time (so it does not lose its place), and a lower margin
// clears its back-off. A zero Queued means now.
func (s *Store) Enqueue(ctx context.Context, items ...RepairItem) error {
	if len(items) == 0 {
		return nil
	}
	return s.update(ctx, "enqueue", func(b *Batch) error {
		return s.enqueueInto(ctx, b, items, mergeEnqueue)
	})
}

// EnqueueJoin is Enqueue that never drops a cause: a stripe already queued
// for another cause keeps that cause and gains this one ("cause; finding"),
// whatever the margins, so the rebuilder sees both; and an entry whose
// reason changes while a repair runs stays queued after it
// (CompleteRepair). Margin, queue time and back-off merge as in Enqueue.
// It is for a finding only the item's reason records (a reader found a
// shard gone or corrupt that the stripe record still lists), and for any
// queueing of a stripe that may already be queued for such a cause (the
// healer's sweeps: a backend found wiped is named only in the reason).
func (s *Store) EnqueueJoin(ctx context.Context, items ...RepairItem) error {
	if len(items) == 0 {
		return nil
	}
	return s.update(ctx, "enqueue", func(b *Batch) error {
		return s.enqueueInto(ctx, b, items, mergeJoin)
	})
}

// EnqueueRecause is Enqueue for a finding that changes why stripes need a
// repair (a backend found wiped): a stripe already queued takes the item's
// reason whatever the margins, and its back-off is cleared (the item's
// NotBefore, zero for now). Margin and queue time merge as in Enqueue.
func (s *Store) EnqueueRecause(ctx context.Context, items ...RepairItem) error {
	if len(items) == 0 {
		return nil
	}
	return s.update(ctx, "enqueue", func(b *Batch) error {
		return s.enqueueInto(ctx, b, items, mergeRecause)
	})
}

// Requeue records a failed repair attempt: the entry takes it.Attempts,
// it.LastError and it.NotBefore, keeps its queue time and the lower of the
// two margins. A stripe not queued any more is queued again.
func (s *Store) Requeue(ctx context.Context, it RepairItem) error {
	return s.update(ctx, "requeue", func(b *Batch) error {
		return s.enqueueInto(ctx, b, []RepairItem{it}, mergeRequeue)
	})
}

// Dequeue removes a stripe from the repair queue; absent is not an error.
func (s *Store) Dequeue(ctx context.Context, stripe [16]byte) error {
	return s.update(ctx, "dequeue "+hexID(stripe), func(b *Batch) error {
		return s.dequeueInto(ctx, b, stripe, nil)
	})
}

// DequeueIf removes the stripe's entry only if it is still at it's queue
// position (same margin and queue time), and reports whether it did. A
// repair that ran while a lower margin was queued leaves the new entry.
func (s *Store) DequeueIf(ctx context.Context, it RepairItem) (bool, error) {
	removed := false
	err := s.update(ctx, "dequeue "+hexID(it.Stripe), func(b *Batch) error {
		if err := s.dequeueInto(ctx, b, it.Stripe, &it); err != nil {
			return err
		}
		removed = b.Len() > 0
		return nil
	})
	return removed && err == nil, err
}

// GetRepair returns a stripe's queue entry (ErrNotFound).
func (s *Store) GetRepair(ctx context.Context, stripe [16]byte) (*RepairItem, error) {
	qk, err := s.kv.Get(ctx, qindexKey(stripe))
	if err != nil {
		return nil, fmt.Errorf("repair %s: %w", hexID(stripe), err)
	}
	raw, err := s.kv.Get(ctx, qk)
	if err != nil {
		return nil, fmt.Errorf("repair %s: %w", hexID(stripe), err)
	}
	return decodeRepair(qk, raw)
}

// Queue returns up to limit entries (limit <= 0: all), lowest margin first,
// then oldest.
func (s *Store) Queue(ctx context.Context, limit int) ([]RepairItem, error) {
	return s.queue(ctx, time.Time{}, limit)
}

// QueueDue is Queue without the entries whose NotBefore is after now.
func (s *Store) QueueDue(ctx context.Context, now time.Time, limit int) ([]RepairItem, error) {
	return s.queue(ctx, now, limit)
}

func (s *Store) queue(ctx context.Context, due time.Time, limit int) ([]RepairItem, error) {
	var out []RepairItem
	err := s.scan(ctx, []byte(pQueue), nil, func(k, v []byte) error {
		it, err := decodeRepair(k, v)
		if err != nil {
			return err
		}
		if !due.IsZero() && it.NotBefore.After(due) {
			return nil
		}
		out = append(out, *it)
		if limit > 0 && len(out) >= limit {
			return ErrStop
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("repair queue: %w", err)
	}
	return out, nil
}

// QueueLen counts the queued stripes.
func (s *Store) QueueLen(ctx context.Context) (int, error) {
	n := 0
	err := s.scan(ctx, []byte(pQIndex), nil, func(_, _ []byte) error { n++; return nil })
	if err != nil {
		return 0, fmt.Errorf("repair queue length: %w", err)
	}
	return n, nil
}
