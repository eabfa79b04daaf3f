package metastoretest

import (
	"context"
	"fmt"
	"testing"

	"github.com/healstore/healstore/metastore"
)

// BenchPutObject measures PutObject of an object of `stripes` stripes with
// k+m shards each, replacing the previous version (so every iteration also
// drops stripes and writes garbage), on a KV from newKV.
func BenchPutObject(b *testing.B, kv metastore.KV, stripes, k, m int) {
	s := metastore.New(kv)
	ctx := context.Background()
	c := NewClock()
	backends := make([]string, k+m)
	for i := range backends {
		backends[i] = fmt.Sprintf("backend-%02d", i)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sts := make([]*metastore.Stripe, stripes)
		for j := range sts {
			sts[j] = mkStripe([16]byte{}, uint64(j), k, backends...)
		}
		o := mkObject(c, "bench/object", sts...)
		if _, err := s.PutObject(ctx, o, sts, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
}
