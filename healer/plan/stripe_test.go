package plan

import (
	"slices"
	"strings"
	"testing"
)

// world builds backend views from a compact spec: name -> "state[,unreach][@domain]".
func world(spec map[string]string) map[string]BackendView {
	out := map[string]BackendView{}
	for name, s := range spec {
		v := BackendView{Reachable: true, Domain: "node:" + name}
		if at := strings.IndexByte(s, '@'); at >= 0 {
			v.Domain = "node:" + s[at+1:]
			s = s[:at]
		}
		if st, ok := strings.CutSuffix(s, ",unreach"); ok {
			v.Reachable = false
			s = st
		}
		v.State = State(s)
		out[name] = v
	}
	return out
}

func shards(names ...string) []Shard {
	out := make([]Shard, len(names))
	for i, n := range names {
		if b, ok := strings.CutSuffix(n, "!"); ok {
			out[i] = Shard{Backend: b, Bad: true}
			continue
		}
		out[i] = Shard{Backend: n}
	}
	return out
}

func TestStripe(t *testing.T) {
	six := map[string]string{"a": "up", "b": "up", "c": "up", "d": "up", "e": "up", "f": "up"}
	with := func(over map[string]string) map[string]BackendView {
		m := map[string]string{}
		for k, v := range six {
			m[k] = v
		}
		for k, v := range over {
			m[k] = v
		}
		return world(m)
	}
	all := shards("a", "b", "c", "d", "e", "f")
	cases := []struct {
		name     string
		shards   []Shard
		backends map[string]BackendView
		margin   int
		rebuild  []int
		sources  []int
		avoid    []string
		unrec    bool
		full     bool
	}{
		{name: "healthy", shards: all, backends: with(nil), margin: 2, sources: []int{0, 1, 2, 3, 4, 5},
			avoid: []string{"node:a", "node:b", "node:c", "node:d", "node:e", "node:f"}, full: true},
		{name: "one down", shards: all, backends: with(map[string]string{"c": "down,unreach"}), margin: 1,
			rebuild: []int{2}, sources: []int{0, 1, 3, 4, 5}, avoid: []string{"node:a", "node:b", "node:d", "node:e", "node:f"}},
		{name: "one suspect waits out the grace", shards: all, backends: with(map[string]string{"c": "suspect,unreach"}), margin: 1,
			sources: []int{0, 1, 3, 4, 5}, avoid: []string{"node:a", "node:b", "node:c", "node:d", "node:e", "node:f"}},
		{name: "unreachable up (not yet suspect) waits too", shards: all, backends: with(map[string]string{"c": "up,unreach"}), margin: 1,
			sources: []int{0, 1, 3, 4, 5}, avoid: []string{"node:a", "node:b", "node:c", "node:d", "node:e", "node:f"}},
		{name: "margin 0 from two suspects: rebuild one at once", shards: all,
			backends: with(map[string]string{"c": "suspect,unreach", "e": "suspect,unreach"}), margin: 0,
			rebuild: []int{2}, sources: []int{0, 1, 3, 5}, avoid: []string{"node:a", "node:b", "node:d", "node:e", "node:f"}},
		{name: "margin 0, one down one suspect: rebuild only the lost one", shards: all,
			backends: with(map[string]string{"c": "down,unreach", "e": "suspect,unreach"}), margin: 0,
			rebuild: []int{2}, sources: []int{0, 1, 3, 5}, avoid: []string{"node:a", "node:b", "node:d", "node:e", "node:f"}},
		{name: "missing location and bad shard", shards: shards("a", "", "c", "d!", "e", "f"), backends: with(nil), margin: 0,
			rebuild: []int{1, 3}, sources: []int{0, 2, 4, 5}, avoid: []string{"node:a", "node:c", "node:e", "node:f"}},
		{name: "unknown backend is missing", shards: shards("a", "b", "c", "d", "e", "zz"), backends: with(nil), margin: 1,
			rebuild: []int{5}, sources: []int{0, 1, 2, 3, 4}, avoid: []string{"node:a", "node:b", "node:c", "node:d", "node:e"}},
		{name: "retired and replaced are missing", shards: all, backends: with(map[string]string{"a": "retired", "b": "replaced"}), margin: 0,
			rebuild: []int{0, 1}, sources: []int{2, 3, 4, 5}, avoid: []string{"node:c", "node:d", "node:e", "node:f"}},
		{name: "draining: move, read it last", shards: all, backends: with(map[string]string{"a": "draining"}), margin: 2,
			rebuild: []int{0}, sources: []int{1, 2, 3, 4, 5, 0}, avoid: []string{"node:b", "node:c", "node:d", "node:e", "node:f"}},
		{name: "draining and unreachable counts as missing", shards: all, backends: with(map[string]string{"a": "draining,unreach"}), margin: 1,
			rebuild: []int{0}, sources: []int{1, 2, 3, 4, 5}, avoid: []string{"node:b", "node:c", "node:d", "node:e", "node:f"}},
		{name: "misplaced: later shard in a shared domain moves", shards: all, backends: with(map[string]string{"e": "up@b"}), margin: 2,
			rebuild: []int{4}, sources: []int{0, 1, 2, 3, 5, 4}, avoid: []string{"node:a", "node:b", "node:c", "node:d", "node:f"}},
		{name: "too few readable: nothing rebuilt", shards: all,
			backends: with(map[string]string{"a": "down", "b": "suspect,unreach", "c": "suspect,unreach"}), margin: -1,
			sources: []int{3, 4, 5}, avoid: []string{"node:b", "node:c", "node:d", "node:e", "node:f"}, unrec: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := Stripe(StripeView{K: 4, M: 2, Shards: tc.shards}, tc.backends)
			if d.Margin != tc.margin {
				t.Errorf("margin %d, want %d", d.Margin, tc.margin)
			}
			if !slices.Equal(d.Rebuild, tc.rebuild) {
				t.Errorf("rebuild %v, want %v", d.Rebuild, tc.rebuild)
			}
			if !slices.Equal(d.Sources, tc.sources) {
				t.Errorf("sources %v, want %v", d.Sources, tc.sources)
			}
			if !slices.Equal(d.AvoidDomains, tc.avoid) {
				t.Errorf("avoid %v, want %v", d.AvoidDomains, tc.avoid)
			}
			if d.Unrecoverable != tc.unrec {
				t.Errorf("unrecoverable %v", d.Unrecoverable)
			}
			if d.Full(2) != tc.full {
				t.Errorf("full %v", d.Full(2))
			}
			if d.Degraded(2) != (tc.margin < 2) {
				t.Errorf("degraded %v with margin %d", d.Degraded(2), d.Margin)
			}
			// Invariants whatever the case: rebuild targets never reuse a
			// kept domain, and a plan never rebuilds from fewer than K.
			for _, i := range d.Rebuild {
				if slices.Contains(d.Sources, i) && !slices.Contains(d.Draining, i) && !slices.Contains(d.Misplaced, i) {
					t.Errorf("shard %d is both a plain source and rebuilt", i)
				}
			}
			if len(d.Rebuild) > 0 && len(d.Sources) < 4 {
				t.Errorf("rebuild planned with %d sources", len(d.Sources))
			}
			if d.Describe() == "" {
				t.Error("empty description")
			}
		})
	}
}
