package tfgrid

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func testNodes(t *testing.T) map[uint64]Node {
	t.Helper()
	var list []Node
	if err := json.Unmarshal(nodesJSON(t), &list); err != nil {
		t.Fatal(err)
	}
	m := map[uint64]Node{}
	for _, n := range list {
		m[n.NodeID] = n
	}
	return m
}

func TestParseAvoid(t *testing.T) {
	a := parseAvoid([]string{"node:11", "farm:4", "backend:local-1", "node:host-a", "garbage", "farm:x"})
	if !a.nodes[11] || !a.farms[4] || len(a.nodes) != 1 || len(a.farms) != 1 {
		t.Errorf("parsed %+v", a)
	}
}

func TestFilterRejects(t *testing.T) {
	nodes := testNodes(t)
	base := func() filter {
		return filter{need: 100 << 30, farms: map[uint64]bool{}, avoid: parseAvoid(nil), failed: map[uint64]bool{}}
	}
	cases := []struct {
		name   string
		mod    func(*filter)
		usable []uint64
	}{
		{"defaults", func(*filter) {}, []uint64{11, 16}},
		{"avoid node", func(f *filter) { f.avoid = parseAvoid([]string{"node:11"}) }, []uint64{16}},
		{"avoid farm", func(f *filter) { f.avoid = parseAvoid([]string{"farm:4"}) }, []uint64{11}},
		{"allowed farms", func(f *filter) { f.farms = map[uint64]bool{4: true, 3: true} }, []uint64{16}},
		{"failed recently", func(f *filter) { f.failed = map[uint64]bool{16: true} }, []uint64{11}},
		{"rented by us", func(f *filter) { f.twin = 99 }, []uint64{11, 14, 16}},
		{"rented by someone else", func(f *filter) { f.twin = 7 }, []uint64{11, 16}},
		{"large HDD", func(f *filter) { f.need = 3000 << 30 }, []uint64{11}},
		// Node 16 has 1 TB SSD with 500 GiB used; 11 and 12 (whose HDD
		// is full) 1 TB with 100 GiB used.
		{"ssd", func(f *filter) { f.ssd = true; f.need = 600 << 30 }, []uint64{11, 12}},
		{"nothing fits", func(f *filter) { f.need = 1 << 50 }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := base()
			tc.mod(&f)
			var got []uint64
			for id, n := range nodes {
				if f.reject(n) == "" {
					got = append(got, id)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.usable) {
				t.Errorf("usable nodes %v, want %v", got, tc.usable)
			}
		})
	}
	f := base()
	for id, why := range map[uint64]string{
		12: "not enough free disk", 13: "status down", 14: "rented by another twin",
		15: "dedicated node not rented by us", 17: "status standby",
	} {
		if got := f.reject(nodes[id]); got != why {
			t.Errorf("node %d rejected for %q, want %q", id, got, why)
		}
	}
}

func TestFreeNeverNegative(t *testing.T) {
	n := Node{Total: Resources{HRU: 10}, Used: Resources{HRU: 20}}
	if n.Free().HRU != 0 {
		t.Errorf("free = %d", n.Free().HRU)
	}
}

// TestPickWeighted checks that picks follow free capacity: a node with
// three times the free disk is picked about three times as often.
func TestPickWeighted(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	nodes := []Node{{NodeID: 1}, {NodeID: 2}, {NodeID: 3}}
	free := map[uint64]uint64{1: 100 << 30, 2: 300 << 30, 3: 0}
	weight := func(n Node) uint64 { return free[n.NodeID] }
	counts := map[uint64]int{}
	const draws = 20000
	for range draws {
		counts[nodes[pickWeighted(nodes, weight, rnd)].NodeID]++
	}
	// Expected shares: 101/402, 301/402, 1/402 (weights in GiB plus one).
	ratio := float64(counts[2]) / float64(counts[1])
	if ratio < 2.6 || ratio > 3.4 {
		t.Errorf("node 2 picked %.2f times as often as node 1, want about 3 (counts %v)", ratio, counts)
	}
	if counts[3] > draws/100 {
		t.Errorf("a full node was picked %d times of %d", counts[3], draws)
	}
	if pickWeighted(nil, weight, rnd) != -1 {
		t.Error("empty list should give -1")
	}
}
