package plan

import "fmt"

// BackendView is what the planner needs to know of one backend.
type BackendView struct {
	State State
	// Reachable: the last probe (or data-path call) got an answer.
	Reachable bool
	// Domain is the failure domain at the store's placement level.
	Domain string
}

// Shard is one shard location of a stripe.
type Shard struct {
	// Backend holding the shard; "" means the shard is known missing.
	Backend string
	// Bad marks a shard found missing or corrupt by a read, a scrub or a
	// verify pass although its location is still recorded.
	Bad bool
}

// StripeView is a stripe as the planner sees it.
type StripeView struct {
	K, M   int
	Shards []Shard // len K+M, index = shard index
}

// Decision is the plan for one stripe.
type Decision struct {
	// Margin is available shards minus K: how many more losses the stripe
	// survives right now. Negative means it cannot be read until a waiting
	// backend answers again.
	Margin int
	// Rebuild lists the shard indices to rebuild now, ascending.
	Rebuild []int
	// Sources lists readable shards in the order to read them: shards that
	// stay where they are first, then misplaced ones, draining ones last, so
	// a drain reads from the other backends rather than the leaving one.
	Sources []int
	// Missing lists shards that are gone for good (no location, known bad,
	// or on a down, replaced, retired or unknown backend).
	Missing []int
	// Waiting lists shards on backends that do not answer but are still
	// within their grace period; they are rebuilt only at margin 0.
	Waiting []int
	// Draining lists shards on draining backends (moved off, not lost).
	Draining []int
	// Misplaced lists shards that share a failure domain with an earlier
	// shard of the stripe (the placement invariant is broken).
	Misplaced []int
	// AvoidDomains are the domains of the shards that stay; rebuild targets
	// must lie outside them.
	AvoidDomains []string
	// Unrecoverable: fewer than K shards are readable now, so nothing can be
	// rebuilt until a waiting backend returns.
	Unrecoverable bool
}

// Full reports whether the stripe is at full redundancy with nothing to do.
func (d Decision) Full(m int) bool {
	return d.Margin == m && len(d.Rebuild) == 0 && len(d.Waiting) == 0
}

// Degraded reports whether the stripe is below full redundancy (some shard
// is not readable right now).
func (d Decision) Degraded(m int) bool { return d.Margin < m }

// Describe names the shards by class, for failed-repair records and logs.
func (d Decision) Describe() string {
	return fmt.Sprintf("readable %v, missing %v, waiting %v, draining %v, misplaced %v",
		d.Sources, d.Missing, d.Waiting, d.Draining, d.Misplaced)
}

type class int

const (
	healthy class = iota
	missing
	waiting
	draining // and reachable
)

// Stripe decides what to do about one stripe.
//
// Shards on down, replaced or retired backends, on backends the store does
// not know, with no location, or marked Bad are missing and always rebuilt.
// Shards on draining backends are moved (rebuilt elsewhere from the other
// shards); if the draining backend does not answer they count as missing.
// Shards on suspect or unanswering up backends wait out the grace period:
// they are rebuilt only when the stripe has no margin left and nothing else
// to rebuild would restore one, and then only enough of them to bring the
// margin back to 1, so a short outage costs no rebuild bytes except where
// one more loss would lose data. A shard sharing its failure
// domain with an earlier kept shard is moved too.
func Stripe(v StripeView, backends map[string]BackendView) Decision {
	n := len(v.Shards)
	cls := make([]class, n)
	var d Decision
	for i, s := range v.Shards {
		b, known := backends[s.Backend]
		switch {
		case s.Backend == "" || s.Bad || !known:
			cls[i] = missing
		case b.State == Down || b.State == Replaced || b.State == Retired:
			cls[i] = missing
		case b.State == Draining && b.Reachable:
			cls[i] = draining
		case b.State == Draining:
			cls[i] = missing
		case b.State == Suspect || !b.Reachable:
			cls[i] = waiting
		default:
			cls[i] = healthy
		}
	}

	// Placement: the first shard in each domain keeps it; later ones move.
	// Missing shards hold no domain (they are rebuilt anyway).
	misplaced := make([]bool, n)
	seen := map[string]bool{}
	for i, s := range v.Shards {
		if cls[i] == missing {
			continue
		}
		dom := backends[s.Backend].Domain
		if seen[dom] {
			misplaced[i] = true
			continue
		}
		seen[dom] = true
	}

	available := 0
	for i := range n {
		switch cls[i] {
		case missing:
			d.Missing = append(d.Missing, i)
		case waiting:
			d.Waiting = append(d.Waiting, i)
		case draining:
			d.Draining = append(d.Draining, i)
			available++
		case healthy:
			available++
		}
		if misplaced[i] {
			d.Misplaced = append(d.Misplaced, i)
		}
	}
	d.Margin = available - v.K

	// Sources: stay-put healthy, then misplaced healthy, then draining.
	for pass := 0; pass < 3; pass++ {
		for i := range n {
			switch {
			case pass == 0 && cls[i] == healthy && !misplaced[i],
				pass == 1 && cls[i] == healthy && misplaced[i],
				pass == 2 && cls[i] == draining:
				d.Sources = append(d.Sources, i)
			}
		}
	}

	rebuild := make([]bool, n)
	gain := 0 // shards that raise the margin when rebuilt
	for i := range n {
		switch {
		case cls[i] == missing:
			rebuild[i] = true
			gain++
		case cls[i] == draining, misplaced[i]:
			rebuild[i] = true
			if cls[i] == waiting {
				gain++
			}
		}
	}
	// At margin 0 one more loss destroys data: if rebuilding what is lost
	// anyway does not restore a margin, rebuild waiting shards too, but
	// only as many as bring the margin back to 1 (the outage may yet end).
	for i := 0; i < n && d.Margin+gain < 1; i++ {
		if cls[i] == waiting && !rebuild[i] {
			rebuild[i] = true
			gain++
		}
	}
	if available < v.K {
		d.Unrecoverable = true
		rebuild = make([]bool, n)
	}
	for i := range n {
		if rebuild[i] {
			d.Rebuild = append(d.Rebuild, i)
			continue
		}
		if cls[i] != missing {
			d.AvoidDomains = append(d.AvoidDomains, backends[v.Shards[i].Backend].Domain)
		}
	}
	return d
}
