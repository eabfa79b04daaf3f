package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/healer"
)

// stat and status never print more redundancy than the store counted: an
// object with stripes below k is called unreadable, not "can lose 0 more".
func TestRedundancyWording(t *testing.T) {
	for _, tc := range []struct {
		r    healstore.Redundancy
		want string
	}{
		{healstore.Redundancy{MinMargin: 2}, "full; can lose 2 more backend(s)"},
		{healstore.Redundancy{MinMargin: 1, Degraded: 3, MissingShards: 3}, "3 degraded stripe(s), 3 shard(s) missing; can lose 1 more backend(s)"},
		{healstore.Redundancy{MinMargin: -1, Degraded: 3, Unreadable: 3, MissingShards: 9},
			"UNREADABLE: 3 stripe(s) have fewer than k healthy shards; 3 degraded stripe(s), 9 shard(s) missing"},
	} {
		if got := redundancyLine(&tc.r); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.r, got, tc.want)
		}
	}

	var out bytes.Buffer
	st := &healer.Status{StoreID: "s", Stripes: 4, DegradedStripes: 4, UnreadableStripes: 4, WorstMargin: -1,
		Margins: map[string]int{"-1": 4}, Queue: healer.QueueStatus{Depth: 4}}
	if err := writeStatus(&out, st, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"worst margin -1; 4 stripe(s) UNREADABLE", "-1: 4", "ETA none: unreadable stripes wait"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
}
