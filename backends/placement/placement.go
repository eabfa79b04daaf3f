package placement

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
)

// Candidate is one backend that may receive a shard.
type Candidate struct {
	// Name is the backend's unique name.
	Name string
	// Domain is its failure domain at the store's level (backends.Spec.Domain).
	Domain string
	// Free is the free space in bytes, meaningful when FreeKnown.
	Free int64
	// FreeKnown is false when the backend cannot report capacity (S3 without
	// a quota); such a backend is weighted like an average known one.
	FreeKnown bool
	// Spare backends take shards only as retry or rebuild targets.
	Spare bool
}

// ErrNotEnough is matched (errors.Is) by every *NotEnoughError.
var ErrNotEnough = errors.New("not enough failure domains")

// NotEnoughError says how many distinct failure domains were usable and how
// many were needed.
type NotEnoughError struct {
	Needed int
	Usable int
	// Avoided counts usable-looking candidates left out because their name
	// or domain was in the avoid set.
	Avoided int
	// Full counts candidates left out because they report no free space.
	Full int
	// Spares counts spare candidates left out because spares were not allowed.
	Spares int
}

func (e *NotEnoughError) Error() string {
	s := fmt.Sprintf("placement: need %d distinct failure domains, only %d usable", e.Needed, e.Usable)
	var why []string
	if e.Avoided > 0 {
		why = append(why, fmt.Sprintf("%d already used by the stripe or excluded", e.Avoided))
	}
	if e.Full > 0 {
		why = append(why, fmt.Sprintf("%d full", e.Full))
	}
	if e.Spares > 0 {
		why = append(why, fmt.Sprintf("%d spares not allowed here", e.Spares))
	}
	for i, w := range why {
		if i == 0 {
			s += " ("
		} else {
			s += ", "
		}
		s += w
	}
	if len(why) > 0 {
		s += ")"
	}
	return s
}

// Is makes errors.Is(err, ErrNotEnough) true.
func (e *NotEnoughError) Is(target error) bool { return target == ErrNotEnough }

// Choose picks n candidates in n distinct domains.
//
// A candidate is skipped when its Name or its Domain is a key of avoid (the
// map may mix both: backend names never contain ':' while domains always
// do), or when it reports FreeKnown with Free <= 0. Non-spares are always
// preferred; spares are used only when allowSpares is set and the non-spares
// do not cover n domains. Within that order the pick is random, weighted by
// free space, so fuller backends fill more slowly; with rnd == nil the pick
// is deterministic (most free first, then by name), which tests rely on.
//
// Choose never returns two candidates of one domain. When fewer than n
// domains are usable it returns *NotEnoughError and no candidates.
func Choose(cands []Candidate, n int, avoid map[string]bool, allowSpares bool, rnd *rand.Rand) ([]Candidate, error) {
	if n <= 0 {
		return nil, nil
	}
	var primary, spares []Candidate
	ne := &NotEnoughError{Needed: n}
	for _, c := range cands {
		switch {
		case avoid[c.Name] || avoid[c.Domain]:
			ne.Avoided++
		case c.FreeKnown && c.Free <= 0:
			ne.Full++
		case c.Spare && !allowSpares:
			ne.Spares++
		case c.Spare:
			spares = append(spares, c)
		default:
			primary = append(primary, c)
		}
	}
	used := make(map[string]bool, n)
	out := make([]Candidate, 0, n)
	out = pick(out, primary, n, used, rnd)
	if len(out) < n {
		out = pick(out, spares, n, used, rnd)
	}
	if len(out) < n {
		ne.Usable = len(out)
		return nil, ne
	}
	return out, nil
}

// pick appends candidates from pool in domains not yet used until out holds n.
func pick(out, pool []Candidate, n int, used map[string]bool, rnd *rand.Rand) []Candidate {
	if len(pool) == 0 {
		return out
	}
	w := weights(pool)
	if rnd == nil {
		order := make([]int, len(pool))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool {
			i, j := order[a], order[b]
			if w[i] != w[j] {
				return w[i] > w[j]
			}
			return pool[i].Name < pool[j].Name
		})
		for _, i := range order {
			if len(out) == n {
				break
			}
			if c := pool[i]; !used[c.Domain] {
				used[c.Domain] = true
				out = append(out, c)
			}
		}
		return out
	}
	for len(out) < n {
		var total float64
		for i, c := range pool {
			if !used[c.Domain] {
				total += w[i]
			}
		}
		if total <= 0 {
			break
		}
		x := rnd.Float64() * total
		chosen := -1
		for i, c := range pool {
			if used[c.Domain] {
				continue
			}
			chosen = i
			x -= w[i]
			if x < 0 {
				break
			}
		}
		used[pool[chosen].Domain] = true
		out = append(out, pool[chosen])
	}
	return out
}

// weights gives each candidate a positive weight: its free space, or the
// mean free space of the candidates that know theirs when it does not.
func weights(pool []Candidate) []float64 {
	var sum float64
	var known int
	for _, c := range pool {
		if c.FreeKnown {
			sum += float64(c.Free)
			known++
		}
	}
	unknown := 1.0
	if known > 0 && sum > 0 {
		unknown = sum / float64(known)
	}
	w := make([]float64, len(pool))
	for i, c := range pool {
		if c.FreeKnown {
			w[i] = float64(c.Free)
		} else {
			w[i] = unknown
		}
		if w[i] <= 0 {
			w[i] = 1
		}
	}
	return w
}
