package tfgrid

import (
	"math/rand/v2"
	"strconv"
	"strings"
)

// avoidSet is the failure domains a new backend must stay out of, parsed
// from Constraints.AvoidDomains ("node:<id>", "farm:<id>"). Domains of
// other forms (a local backend's "backend:<name>", a node label that is not
// a grid node id) cannot collide with a grid node and are ignored.
type avoidSet struct {
	nodes map[uint64]bool
	farms map[uint64]bool
}

func parseAvoid(domains []string) avoidSet {
	a := avoidSet{nodes: map[uint64]bool{}, farms: map[uint64]bool{}}
	for _, d := range domains {
		kind, id, ok := strings.Cut(d, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			continue
		}
		switch kind {
		case "node":
			a.nodes[n] = true
		case "farm":
			a.farms[n] = true
		}
	}
	return a
}

// filter holds everything that decides whether a node may take a new
// namespace. It is pure so the rules can be tested without a proxy.
type filter struct {
	ssd    bool            // need free SRU, not HRU
	need   uint64          // bytes
	twin   uint64          // our twin; nodes it rents are fine
	farms  map[uint64]bool // allowed farms; empty = any
	avoid  avoidSet
	failed map[uint64]bool // nodes whose deployment failed recently
}

// reject returns why n cannot be used, or "" when it can.
func (f filter) reject(n Node) string {
	switch {
	case n.Status != "up":
		return "status " + n.Status
	case f.avoid.nodes[n.NodeID]:
		return "node already holds a shard domain"
	case f.avoid.farms[n.FarmID]:
		return "farm already holds a shard domain"
	case len(f.farms) > 0 && !f.farms[n.FarmID]:
		return "farm not allowed"
	case f.failed[n.NodeID]:
		return "deployment failed recently"
	case n.Rented && (f.twin == 0 || n.RentedByTwinID != f.twin):
		return "rented by another twin"
	case (n.Dedicated || n.InDedicatedFarm) && !(n.Rented && f.twin != 0 && n.RentedByTwinID == f.twin):
		// Dedicated nodes take deployments only from the twin renting
		// them; renting a whole node is not what a 0-db needs.
		return "dedicated node not rented by us"
	case f.free(n) < f.need:
		return "not enough free disk"
	}
	return ""
}

func (f filter) free(n Node) uint64 {
	if f.ssd {
		return n.Free().SRU
	}
	return n.Free().HRU
}

// pickWeighted picks one index at random, each node weighted by its free
// disk, so capacity fills evenly and no single roomy node takes every
// replacement. It returns -1 for an empty list.
func pickWeighted(nodes []Node, weight func(Node) uint64, rnd *rand.Rand) int {
	if len(nodes) == 0 {
		return -1
	}
	// Weights in GiB keep the sum far from overflow on any real grid.
	var total uint64
	w := make([]uint64, len(nodes))
	for i, n := range nodes {
		w[i] = weight(n)>>30 + 1
		total += w[i]
	}
	r := rnd.Uint64N(total)
	for i, wi := range w {
		if r < wi {
			return i
		}
		r -= wi
	}
	return len(nodes) - 1
}
