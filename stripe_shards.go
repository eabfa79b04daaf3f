package healstore

import (
	"fmt"
	"strings"

	"github.com/healstore/healstore/metastore"
)

// maxShardsNamed bounds the shard indices one message names per kind; the
// rest are counted ("and 3 more"), so a wide stripe on a lost rack still
// gives a readable line.
const maxShardsNamed = 8

// shardsWhere names shard indices of st with the backend the stripe record
// placed each on, such as "1 (b2), 4 (b5)", or "(no location)" for a shard
// never placed. Backend names only: a backend's spec may hold credentials
// (addresses, access keys), its name does not.
func shardsWhere(st *metastore.Stripe, idx []int) string {
	var b strings.Builder
	for n, i := range idx {
		if n == maxShardsNamed {
			fmt.Fprintf(&b, " and %d more", len(idx)-n)
			break
		}
		if n > 0 {
			b.WriteString(", ")
		}
		where := "no location"
		if i >= 0 && i < len(st.Shards) && st.Shards[i].Backend != "" {
			where = st.Shards[i].Backend
		}
		fmt.Fprintf(&b, "%d (%s)", i, where)
	}
	return b.String()
}

// stripeShardsText says which shards of a stripe are absent, where the
// record placed them, and how many are present of the k a read needs, for
// errors and repair reasons, such as
//
//	object "logs/a" stripe 0f3c…: 3 present, 4 needed; missing 1 (b2), 4 (b5)
//
// object is left out when "" (not known, or already named by the caller);
// a kind with no indices is left out.
func stripeShardsText(object string, st *metastore.Stripe, present int, missing, unreachable, corrupt []int) string {
	var b strings.Builder
	if object != "" {
		fmt.Fprintf(&b, "object %q ", object)
	}
	fmt.Fprintf(&b, "stripe %x: %d present, %d needed", st.ID, present, st.K)
	for _, kind := range []struct {
		what string
		idx  []int
	}{{"missing", missing}, {"unreachable", unreachable}, {"corrupt", corrupt}} {
		if len(kind.idx) > 0 {
			fmt.Fprintf(&b, "; %s %s", kind.what, shardsWhere(st, kind.idx))
		}
	}
	return b.String()
}
