package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healstore/healstore/metastore"
	etcdkv "github.com/healstore/healstore/metastore/etcd"
	"github.com/healstore/healstore/metastore/memkv"
	"github.com/healstore/healstore/metastore/metastoretest"
)

// TestEtcdPointInTimeUnderWrites: on etcd a view is one revision, so
// snapshots succeed under constant writes (no settling) and never hold
// half a commit; the revision counts the changes.
func TestEtcdPointInTimeUnderWrites(t *testing.T) {
	eps := metastoretest.EtcdEndpoints(t)
	ctx := context.Background()
	var b [6]byte
	rand.Read(b[:])
	prefix := "hs-snaptest-" + hex.EncodeToString(b[:]) + "/"
	kv, err := etcdkv.Open(ctx, eps, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		kv.Client().Delete(context.Background(), prefix, clientv3.WithPrefix())
		kv.Close()
	})
	keys, _ := testKeys(t)
	f := newFixture(t, 6)
	s := newSnapshotter(t, keys, 3)

	pos0, ctr0, ok, err := Changes(ctx, kv)
	if !ok || err != nil || !strings.HasPrefix(ctr0, "etcd:") {
		t.Fatalf("etcd change counter: %d %q %v %v", pos0, ctr0, ok, err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for gen := 0; ; gen++ {
			select {
			case <-stop:
				return
			default:
			}
			var b metastore.Batch
			for i := range 5 {
				v := fmt.Appendf(nil, "gen-%d", gen)
				b.Put(fmt.Appendf(nil, "a/%d", i), v)
				b.Put(fmt.Appendf(nil, "z/%d", i), v)
			}
			kv.Commit(ctx, &b)
		}
	}()
	for range 2 {
		time.Sleep(100 * time.Millisecond)
		res, err := s.Take(ctx, kv, f.members, TakeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Uploaded || res.Newest.Consistency != PointInTime || res.Counter != ctr0 || res.Position <= pos0 {
			t.Fatalf("take under writes: uploaded %v, %s, counter %s at %d (start %d)", res.Uploaded, res.Newest.Consistency, res.Counter, res.Position, pos0)
		}
		dst := memkv.New()
		if _, err := Restore(ctx, keys, &res.Newest, f.opener(), dst); err != nil {
			t.Fatal(err)
		}
		got := dump(t, dst)
		for i := range 5 {
			if a, z := got[fmt.Sprintf("a/%d", i)], got[fmt.Sprintf("z/%d", i)]; a != z || a == "" {
				t.Fatalf("snapshot at revision %d holds half a commit: %q vs %q", res.Position, a, z)
			}
		}
	}
	close(stop)
	wg.Wait()
}
