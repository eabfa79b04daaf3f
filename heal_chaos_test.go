package healstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/healer/provision"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

// fakeClock drives the healer's grace periods: real time plus an offset
// the test advances, so it never runs behind the metastore's own clock.
type fakeClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// chaosEnv is a store under attack and the healer defending it.
type chaosEnv struct {
	*healStore
	t     *testing.T
	rnd   *rand.Rand
	clock *fakeClock
	prov  *provision.Local
	h     *Healer
	objs  map[string][]byte
	dead  map[string]string // backend name -> its directory, while dead
	seq   int
}

const chaosGrace = 10 * time.Minute

func (c *chaosEnv) newHealer() {
	c.t.Helper()
	if c.h != nil {
		c.h.Close()
	}
	h, err := c.s.NewHealer(context.Background(), HealerOptions{
		Provisioners: []provision.Provisioner{c.prov},
		Now:          c.clock.now,
		Tune: func(hc *healer.Config) {
			hc.Grace = healer.Duration(chaosGrace)
			hc.SuspectAfter = 1
			hc.Workers = 3
		},
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.h = h
}

// members returns the recorded backends by state.
func (c *chaosEnv) members() map[string]metastore.BackendRecord {
	recs, err := c.s.meta.ListBackends(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string]metastore.BackendRecord{}
	for _, r := range recs {
		out[r.Name] = r
	}
	return out
}

func (c *chaosEnv) pathOf(rec metastore.BackendRecord) string {
	return c.specOf(rec).Path
}

func (c *chaosEnv) specOf(rec metastore.BackendRecord) backends.Spec {
	var spec backends.Spec
	if err := jsonUnmarshal(rec.SpecJSON, &spec); err != nil {
		c.t.Fatal(err)
	}
	return spec
}

// live lists up backends that are not dead, sorted.
func (c *chaosEnv) live() []metastore.BackendRecord {
	var out []metastore.BackendRecord
	for name, r := range c.members() {
		if r.State == metastore.StateUp && c.dead[name] == "" {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (c *chaosEnv) kill(rec metastore.BackendRecord) {
	p := c.pathOf(rec)
	if err := os.Rename(p, p+".dead"); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("dead\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
	c.dead[rec.Name] = p
}

func (c *chaosEnv) revive(name string) {
	p := c.dead[name]
	if err := os.Remove(p); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(p+".dead", p); err != nil {
		c.t.Fatal(err)
	}
	delete(c.dead, name)
}

func (c *chaosEnv) probe() {
	if err := c.h.ProbeAll(context.Background()); err != nil {
		c.t.Logf("probe: %v", err)
	}
}

// randomShard picks a shard of a random stripe on a live backend.
func (c *chaosEnv) randomShard() (*metastore.Stripe, int, backends.Backend) {
	var all []*metastore.Stripe
	_ = c.s.meta.ScanStripes(context.Background(), [16]byte{}, func(st *metastore.Stripe) error {
		all = append(all, st)
		return nil
	})
	live := map[string]metastore.BackendRecord{}
	for _, r := range c.live() {
		live[r.Name] = r
	}
	for range 50 {
		st := all[c.rnd.IntN(len(all))]
		i := c.rnd.IntN(len(st.Shards))
		r, ok := live[st.Shards[i].Backend]
		if !ok {
			continue
		}
		return st, i, c.raw(c.specOf(r))
	}
	return nil, 0, nil
}

func (c *chaosEnv) write() {
	c.seq++
	name := fmt.Sprintf("chaos-%d", c.seq)
	if c.rnd.IntN(4) == 0 && len(c.objs) > 0 {
		name = c.anyObject() // overwrite
	}
	data := healRandBytes(c.rnd, 1+c.rnd.IntN(64<<10))
	if _, err := c.s.Put(context.Background(), name, strings.NewReader(string(data))); err != nil {
		// With backends dead that the store has not yet learnt about, a
		// write may miss its quorum; it must then leave nothing behind
		// (the old version, if any, stays).
		if len(c.dead) > 0 && errors.Is(err, ErrInsufficientBackends) {
			c.t.Logf("put %s during an outage: %v", name, err)
			return
		}
		c.t.Fatalf("put %s: %v", name, err)
	}
	c.objs[name] = data
}

func (c *chaosEnv) anyObject() string {
	names := make([]string, 0, len(c.objs))
	for n := range c.objs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names[c.rnd.IntN(len(names))]
}

// settle lets the healer work until the store is whole again: probes,
// a deep scrub (silent loss and bit flips are only found that way), the
// repair queue, garbage collection.
func (c *chaosEnv) settle(round int, deep bool) {
	c.t.Helper()
	ctx := context.Background()
	var placed error
	for i := 0; i < 30; i++ {
		c.probe()
		if i == 0 && deep {
			if _, err := c.h.Scrub(ctx, healer.ScrubOptions{Deep: true}); err != nil {
				c.t.Fatalf("round %d: scrub: %v", round, err)
			}
		}
		if _, err := c.h.RepairAll(ctx, nil); err != nil {
			c.t.Fatalf("round %d: repair: %v", round, err)
		}
		n, err := c.s.meta.QueueLen(ctx)
		if err != nil {
			c.t.Fatal(err)
		}
		if placed = c.fullAndPlaced(); n == 0 && placed == nil {
			c.probe() // emptied down backends become replaced
			if _, err := c.h.GC(ctx); err != nil {
				c.t.Fatalf("round %d: gc: %v", round, err)
			}
			return
		}
	}
	q, _ := c.s.meta.Queue(ctx, 3)
	c.t.Fatalf("round %d: not settled: queue head %+v, placement: %v", round, q, placed)
}

// verify checks every object reads back identical.
func (c *chaosEnv) verify(round int) {
	c.t.Helper()
	for name, want := range c.objs {
		got, err := c.read(name)
		if err != nil {
			c.t.Fatalf("round %d: object %s lost: %v", round, name, err)
		}
		if string(got) != string(want) {
			c.t.Fatalf("round %d: object %s reads back different bytes", round, name)
		}
	}
}

func (c *chaosEnv) written() int64 {
	st, err := c.h.Status(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	return st.Repairs.BytesWritten
}

func chaosRounds(t *testing.T) int {
	n := 200
	if s := os.Getenv("HEALSTORE_CHAOS_ROUNDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("HEALSTORE_CHAOS_ROUNDS=%q", s)
		}
		n = v
	}
	return n
}

func chaosSeed(t *testing.T) uint64 {
	if s := os.Getenv("HEALSTORE_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("HEALSTORE_CHAOS_SEED=%q", s)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// TestChaos attacks a store for many seeded rounds: backends killed (never
// more than m at once) for outages shorter or longer than the grace
// period, revived, flapping; shards silently lost and bit-flipped; objects
// written, overwritten and deleted meanwhile; the healer restarted, some
// times in the middle of its work. After each round settles: no object
// lost, no stripe below full redundancy, the placement invariant holds,
// and a short single-backend outage cost no rebuild bytes.
//
// HEALSTORE_CHAOS_ROUNDS sets the rounds (default 200), HEALSTORE_CHAOS_SEED
// replays a failure. TestChaosSIGKILL kills a healer process for real.
func TestChaos(t *testing.T) {
	seed := chaosSeed(t)
	rounds := chaosRounds(t)
	t.Logf("chaos seed %d, %d rounds (replay: HEALSTORE_CHAOS_SEED=%d)", seed, rounds, seed)
	const k, m = 3, 2
	hs := newHealStore(t, 7, k, m, func(c *Config) { c.Policy.BlockSize = 32 << 10 })
	prov, err := provision.NewLocal(provision.LocalConfig{Dir: filepath.Join(hs.dir, "prov")})
	if err != nil {
		t.Fatal(err)
	}
	c := &chaosEnv{healStore: hs, t: t, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		clock: &fakeClock{}, prov: prov, objs: map[string][]byte{}, dead: map[string]string{}}
	c.newHealer()
	defer func() { c.h.Close() }()
	for range 16 {
		c.write()
	}
	c.settle(0, true)
	ctx := context.Background()
	counts := map[string]int{}
	timing := map[string]time.Duration{}
	defer func() { t.Logf("timing %v", timing) }()
	start := time.Now()
	for round := 1; round <= rounds; round++ {
		t0 := time.Now()
		action := []string{"flap", "short", "long", "long-revive", "loss", "flip", "restart", "crash", "delete"}[c.rnd.IntN(9)]
		counts[action]++
		switch action {
		case "flap":
			// One backend fails and returns inside the grace period,
			// several times: no rebuild bytes at all.
			before := c.written()
			live := c.live()
			victim := live[c.rnd.IntN(len(live))]
			for range 1 + c.rnd.IntN(3) {
				c.kill(victim)
				c.probe()
				c.verify(round) // reads keep working
				c.clock.advance(time.Duration(c.rnd.Int64N(int64(chaosGrace) - int64(time.Minute))))
				c.probe()
				if _, err := c.h.RepairAll(ctx, nil); err != nil {
					t.Fatal(err)
				}
				c.revive(victim.Name)
				c.probe()
			}
			if got := c.written() - before; got != 0 {
				t.Fatalf("round %d (seed %d): a flapping backend inside the grace period cost %d rebuild bytes", round, seed, got)
			}
		case "short", "long", "long-revive":
			live := c.live()
			n := 1 + c.rnd.IntN(m)
			c.rnd.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
			for _, r := range live[:n] {
				c.kill(r)
			}
			c.probe()
			if c.rnd.IntN(2) == 0 {
				c.write() // writes go on during the outage
			}
			c.verify(round)
			if action == "short" {
				c.clock.advance(chaosGrace / 2)
				c.probe()
				if _, err := c.h.RepairAll(ctx, nil); err != nil { // margin-0 stripes only
					t.Fatal(err)
				}
				for name := range c.dead {
					c.revive(name)
				}
				break
			}
			c.clock.advance(chaosGrace + time.Minute)
			c.probe() // declared down, replacements provisioned
			if action == "long-revive" {
				// Back after being declared down, before the rebuild.
				for name := range c.dead {
					c.revive(name)
				}
			}
		case "loss", "flip":
			// At most m shards of one stripe: more is data no code
			// could bring back (seed 1796231492405762980 lost three
			// of one 3+2 stripe in round 9).
			damaged := map[[16]byte]int{}
			for range 1 + c.rnd.IntN(3) {
				st, i, b := c.randomShard()
				if st == nil || damaged[st.ID] >= m {
					continue
				}
				damaged[st.ID]++
				key := st.Shards[i].Key
				if action == "loss" {
					if err := b.Delete(ctx, key); err != nil {
						t.Fatal(err)
					}
					continue
				}
				data, err := b.Get(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				data[c.rnd.IntN(len(data))] ^= byte(1 + c.rnd.IntN(255))
				if err := b.Put(ctx, key, data); err != nil {
					t.Fatal(err)
				}
			}
		case "restart":
			c.newHealer()
		case "crash":
			// Damage, then kill the healer in the middle of its repairs
			// (its context ends at a random moment) and start another.
			live := c.live()
			c.kill(live[c.rnd.IntN(len(live))])
			c.probe()
			c.clock.advance(chaosGrace + time.Minute)
			c.probe()
			cctx, cancel := context.WithTimeout(ctx, time.Duration(c.rnd.IntN(20))*time.Millisecond)
			_, _ = c.h.RepairAll(cctx, nil)
			cancel()
			c.newHealer()
		case "delete":
			for len(c.objs) > 20 {
				name := c.anyObject()
				if err := c.s.Delete(ctx, name); err != nil {
					t.Fatal(err)
				}
				delete(c.objs, name)
			}
			if len(c.objs) > 5 {
				name := c.anyObject()
				if err := c.s.Delete(ctx, name); err != nil {
					t.Fatal(err)
				}
				delete(c.objs, name)
			}
			c.write()
		}
		if len(c.dead) > m {
			t.Fatalf("test bug: %d backends dead at once", len(c.dead))
		}
		tAct := time.Since(t0)
		// Silent damage is only found by reading: deep-scrub after it,
		// and every tenth round anyway.
		c.settle(round, action == "loss" || action == "flip" || round%10 == 0)
		c.verify(round)
		timing[action] += tAct
		timing["settle"] += time.Since(t0) - tAct
		// Dead backends were replaced by now; forget them.
		for name := range c.dead {
			if c.members()[name].State == metastore.StateReplaced {
				delete(c.dead, name)
			}
		}
		if len(c.dead) != 0 {
			t.Fatalf("round %d: backends %v dead but not replaced", round, c.dead)
		}
	}
	t.Logf("chaos: %d rounds in %s: %v; %d backends ever, %d objects", rounds, time.Since(start).Round(time.Millisecond), counts, len(c.members()), len(c.objs))
	c.checkNoStrayShards()
}

// checkNoStrayShards: every shard file on a live backend is referenced by
// a stripe or known to garbage collection (garbage or an intent), so no
// crash leaked space the collector cannot find.
func (c *chaosEnv) checkNoStrayShards() {
	ctx := context.Background()
	// The sweep at the end of a scrub pass is what finds shards a crash
	// left between a rebuild's upload and its commit.
	if c.h != nil {
		if _, err := c.h.Scrub(ctx, healer.ScrubOptions{}); err != nil {
			c.t.Fatal(err)
		}
	}
	known := map[string]bool{}
	_ = c.s.meta.ScanStripes(ctx, [16]byte{}, func(st *metastore.Stripe) error {
		for _, l := range st.Shards {
			known[l.Backend+"/"+l.Key] = true
		}
		return nil
	})
	_ = c.s.meta.ListGarbage(ctx, func(g metastore.Garbage) error { known[g.Backend+"/"+g.Key] = true; return nil })
	_ = c.s.meta.ListIntents(ctx, func(in metastore.Intent) error {
		for _, l := range in.Shards {
			known[l.Backend+"/"+l.Key] = true
		}
		return nil
	})
	for _, r := range c.live() {
		b := c.raw(c.specOf(r))
		err := b.List(ctx, shardio.ShardPrefix, func(key string, _ int64) error {
			if !known[r.Name+"/"+key] {
				c.t.Errorf("stray shard %s on %s: referenced by nothing the collector knows", key, r.Name)
			}
			return nil
		})
		if err != nil {
			c.t.Fatal(err)
		}
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
