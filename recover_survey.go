package healstore

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

// maxLaterReported bounds RecoverReport.Later; LaterShards still counts
// them all.
const maxLaterReported = 1000

// maxDamagedReported bounds RecoverReport.DamagedStripes;
// DamagedStripeCount still counts them all.
const maxDamagedReported = 1000

// survey compares the recovered metadata with the shards the backends
// hold: stripes with listed shards missing go on the repair queue, objects
// that cannot be read any more are named, and shards the metadata does not
// know are reported as written after the snapshot.
func (s *Store) survey(ctx context.Context, rep *RecoverReport) error {
	// List every reachable backend's shards.
	type listing struct {
		keys map[string]int64
		err  error
	}
	hs := s.handleList()
	lists := make([]listing, len(hs))
	var wg sync.WaitGroup
	for i, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, ok := s.Backend(h.name)
			if !ok {
				lists[i].err = fmt.Errorf("not reachable")
				return
			}
			keys := map[string]int64{}
			err := b.List(ctx, shardio.ShardPrefix, func(key string, size int64) error {
				keys[key] = size
				return nil
			})
			lists[i] = listing{keys: keys, err: err}
		}()
	}
	wg.Wait()
	listed := map[string]map[string]int64{}
	for i, h := range hs {
		if lists[i].err != nil {
			rep.Unlisted = append(rep.Unlisted, h.name)
			continue
		}
		listed[h.name] = lists[i].keys
	}
	sort.Strings(rep.Unlisted)

	// Walk the stripes: which of their shards are there. A stripe with
	// shards gone is kept (without its checksums) until its object's name
	// is known, so its repair reason and the report can name the object,
	// the missing indices and the backends they were on.
	type shortStripe struct {
		st      *metastore.Stripe
		present int
		missing []int
	}
	known := map[[16]byte]bool{}
	damagedObj := map[[16]byte]bool{}
	var short []shortStripe
	err := s.meta.ScanStripes(ctx, [16]byte{}, func(st *metastore.Stripe) error {
		known[st.ID] = true
		present, gone := 0, 0 // gone: missing on a listed backend
		var missing []int
		for i, loc := range st.Shards {
			if loc.Backend == "" {
				missing = append(missing, i) // never placed: already queued
				continue
			}
			keys, ok := listed[loc.Backend]
			if !ok {
				present++ // not listed: assume present
				continue
			}
			if _, ok := keys[loc.Key]; ok {
				present++
			} else {
				missing = append(missing, i)
				gone++
				if rep.MissingByBackend == nil {
					rep.MissingByBackend = map[string]int{}
				}
				rep.MissingByBackend[loc.Backend]++
			}
		}
		if present < st.K {
			damagedObj[st.Object] = true
		}
		if present < st.K || gone > 0 {
			for i := range st.Shards {
				st.Shards[i].Sum = nil
			}
			short = append(short, shortStripe{st: st, present: present, missing: missing})
		}
		return nil
	})
	if err != nil {
		return err
	}

	// Objects, the names of damaged ones, and of those with short stripes.
	names := map[[16]byte]string{}
	for _, sh := range short {
		names[sh.st.Object] = ""
	}
	after := ""
	for {
		objs, err := s.meta.ListObjects(ctx, "", after, 1000)
		if err != nil {
			return err
		}
		for _, o := range objs {
			rep.Objects++
			if damagedObj[o.ID] {
				rep.Damaged = append(rep.Damaged, o.Name)
			}
			if _, ok := names[o.ID]; ok {
				names[o.ID] = o.Name
			}
		}
		if len(objs) < 1000 {
			break
		}
		after = objs[len(objs)-1].Name
	}

	var repairs []metastore.RepairItem
	now := time.Now()
	for _, sh := range short {
		st := sh.st
		detail := stripeShardsText(names[st.Object], st, sh.present, sh.missing, nil, nil)
		if sh.present < st.K {
			rep.DamagedStripeCount++
			ds := DamagedStripe{Object: names[st.Object], Stripe: hex.EncodeToString(st.ID[:]), K: st.K,
				Present: sh.present, Missing: sh.missing, Detail: detail}
			for _, i := range sh.missing {
				ds.MissingShards = append(ds.MissingShards, ShardLocation{Backend: st.Shards[i].Backend, Key: st.Shards[i].Key, Index: i})
			}
			rep.DamagedStripes = append(rep.DamagedStripes, ds)
		}
		// Queued when shards are gone from listed backends; one short only
		// of never-placed shards is on the queue already. Joined to what a
		// queued entry says (a backend found wiped is named only there).
		if !slices.ContainsFunc(sh.missing, func(i int) bool { return st.Shards[i].Backend != "" }) {
			continue
		}
		repairs = append(repairs, metastore.RepairItem{Stripe: st.ID, Margin: sh.present - st.K, Queued: now,
			Reason: "recovery: " + detail})
	}
	for i := 0; i < len(repairs); i += 256 {
		if err := s.meta.EnqueueJoin(ctx, repairs[i:min(i+256, len(repairs))]...); err != nil {
			return err
		}
	}
	rep.Queued = len(repairs)
	sort.Slice(rep.DamagedStripes, func(i, j int) bool {
		a, b := rep.DamagedStripes[i], rep.DamagedStripes[j]
		if a.Object != b.Object {
			return a.Object < b.Object
		}
		return a.Stripe < b.Stripe
	})
	if len(rep.DamagedStripes) > maxDamagedReported {
		rep.DamagedStripes = rep.DamagedStripes[:maxDamagedReported]
	}

	// Shards the metadata does not know: written after the snapshot, or
	// left by writes that never committed. Shards awaiting garbage
	// collection are neither.
	garbage := map[string]bool{}
	if err := s.meta.ListGarbage(ctx, func(g metastore.Garbage) error {
		garbage[g.Backend+"\x00"+g.Key] = true
		return nil
	}); err != nil {
		return err
	}
	intents := map[string]bool{}
	if err := s.meta.ListIntents(ctx, func(in metastore.Intent) error {
		for _, l := range in.Shards {
			intents[l.Backend+"\x00"+l.Key] = true
		}
		return nil
	}); err != nil {
		return err
	}
	later := map[[16]byte]*LaterStripe{}
	for backend, keys := range listed {
		for key, size := range keys {
			id, idx, ok := shardio.ParseShardKey(key)
			if !ok || known[id] || garbage[backend+"\x00"+key] {
				continue
			}
			ls := later[id]
			if ls == nil {
				ls = &LaterStripe{Stripe: hex.EncodeToString(id[:])}
				later[id] = ls
			}
			ls.Shards = append(ls.Shards, ShardLocation{Backend: backend, Key: key, Index: idx})
			ls.Bytes += size
			ls.Intent = ls.Intent || intents[backend+"\x00"+key]
			rep.LaterShards++
		}
	}
	for _, ls := range later {
		sort.Slice(ls.Shards, func(i, j int) bool { return ls.Shards[i].Index < ls.Shards[j].Index })
		idx := map[int]bool{}
		for _, sh := range ls.Shards {
			idx[sh.Index] = true
		}
		for _, sh := range ls.Shards {
			b, ok := s.Backend(sh.Backend)
			if !ok {
				continue
			}
			head, err := b.GetRange(ctx, sh.Key, 0, encoder.HeaderSize)
			if err != nil {
				continue
			}
			if h, err := encoder.ParseHeader(head); err == nil {
				ls.K, ls.M = h.K, h.M
				break
			}
		}
		ls.Complete = ls.K > 0 && len(idx) >= ls.K
		rep.Later = append(rep.Later, *ls)
	}
	sort.Slice(rep.Later, func(i, j int) bool { return rep.Later[i].Stripe < rep.Later[j].Stripe })
	if len(rep.Later) > maxLaterReported {
		rep.Later = rep.Later[:maxLaterReported]
	}
	return nil
}
