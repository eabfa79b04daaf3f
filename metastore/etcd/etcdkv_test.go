package etcdkv_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/healstore/healstore/metastore"
	etcdkv "github.com/healstore/healstore/metastore/etcd"
	"github.com/healstore/healstore/metastore/metastoretest"
)

// uniquePrefix gives each test its own key space in the shared etcd and
// deletes it afterwards.
func uniquePrefix(t *testing.T) string {
	eps := metastoretest.EtcdEndpoints(t)
	var r [8]byte
	rand.Read(r[:])
	prefix := "healstore-test/" + hex.EncodeToString(r[:]) + "/"
	t.Cleanup(func() {
		cli := adminClient(t, eps)
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cli.Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
			t.Errorf("cleanup of %s: %v", prefix, err)
		}
	})
	return prefix
}

func adminClient(t *testing.T, eps []string) *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

func open(t *testing.T, prefix string, opts ...etcdkv.Option) *etcdkv.KV {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := etcdkv.Open(ctx, metastoretest.EtcdEndpoints(t), prefix, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	return kv
}

func factory(t *testing.T) metastore.KV { return open(t, uniquePrefix(t)) }

func TestKV(t *testing.T)    { metastoretest.RunKV(t, factory) }
func TestStore(t *testing.T) { metastoretest.RunStore(t, factory) }

func TestUnavailable(t *testing.T) {
	// Nothing listens on port 1: Open must give up within its deadline
	// with ErrUnavailable, not hang. Runs without etcd.
	ctx := context.Background()
	start := time.Now()
	_, err := etcdkv.Open(ctx, []string{"127.0.0.1:1"}, "x", etcdkv.WithRequestTimeout(time.Second), etcdkv.WithDialTimeout(time.Second))
	if !errors.Is(err, metastore.ErrUnavailable) {
		t.Fatalf("Open against a dead endpoint: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("Open took %v to give up", d)
	}
}

func TestBadArguments(t *testing.T) {
	ctx := context.Background()
	if _, err := etcdkv.Open(ctx, nil, "x"); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("no endpoints: %v", err)
	}
	if _, err := etcdkv.Open(ctx, []string{"127.0.0.1:1"}, ""); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("empty prefix: %v", err)
	}
}

func TestSchema(t *testing.T) {
	eps := metastoretest.EtcdEndpoints(t)
	cli := adminClient(t, eps)
	defer cli.Close()
	ctx := context.Background()

	t.Run("foreign keys", func(t *testing.T) {
		p := uniquePrefix(t)
		if _, err := cli.Put(ctx, p+"someone/else", "x"); err != nil {
			t.Fatal(err)
		}
		_, err := etcdkv.Open(ctx, eps, p)
		if !errors.Is(err, metastore.ErrSchema) || !strings.Contains(err.Error(), "not healstore metadata") {
			t.Fatalf("prefix with foreign keys: %v", err)
		}
	})
	t.Run("newer schema", func(t *testing.T) {
		p := uniquePrefix(t)
		kv := open(t, p)
		kv.Close()
		if _, err := cli.Put(ctx, p+"schema", fmt.Sprintf(`{"format":"healstore-metastore","schema":%d}`, etcdkv.SchemaVersion+1)); err != nil {
			t.Fatal(err)
		}
		_, err := etcdkv.Open(ctx, eps, p)
		if !errors.Is(err, metastore.ErrSchema) || !strings.Contains(err.Error(), "newer healstore") {
			t.Fatalf("newer schema: %v", err)
		}
	})
	t.Run("schema written once", func(t *testing.T) {
		p := uniquePrefix(t)
		open(t, p)
		resp, err := cli.Get(ctx, p+"schema")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("schema key: %v, %v", resp, err)
		}
		rev := resp.Kvs[0].ModRevision
		open(t, p) // a second process opening the same prefix
		resp, _ = cli.Get(ctx, p+"schema")
		if resp.Kvs[0].ModRevision != rev {
			t.Fatal("second open rewrote the schema key")
		}
	})
}

func TestPrefixIsolation(t *testing.T) {
	ctx := context.Background()
	base := uniquePrefix(t)
	a := open(t, strings.TrimSuffix(base, "/")+"-a") // normalized to end in '/'
	a2 := open(t, strings.TrimSuffix(base, "/")+"-a/")
	b := open(t, strings.TrimSuffix(base, "/")+"-ab")
	t.Cleanup(func() {
		for _, kv := range []*etcdkv.KV{a, b} {
			var del metastore.Batch
			kv.Scan(ctx, nil, nil, func(k, _ []byte) error { del.Delete(k); return nil })
			kv.Commit(ctx, &del)
			kv.Client().Delete(ctx, kv.Prefix()+"schema")
		}
	})
	if a.Prefix() != strings.TrimSuffix(base, "/")+"-a/" {
		t.Fatalf("prefix %q not normalized", a.Prefix())
	}
	var batch metastore.Batch
	batch.Put([]byte("k"), []byte("from a"))
	if err := a.Commit(ctx, &batch); err != nil {
		t.Fatal(err)
	}
	if v, err := a2.Get(ctx, []byte("k")); err != nil || string(v) != "from a" {
		t.Fatalf("same prefix with and without '/': %q, %v", v, err)
	}
	n := 0
	if err := b.Scan(ctx, nil, nil, func(k, v []byte) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("prefix -ab sees %d keys of prefix -a (%v)", n, err)
	}
}

func TestTwoProcessesShareOneTruth(t *testing.T) {
	// Two clients on one prefix stand for two healstore machines: each
	// sees the other's commits, and a compare-and-swap from one fails
	// against a change by the other.
	ctx := context.Background()
	p := uniquePrefix(t)
	s1, s2 := metastore.New(open(t, p)), metastore.New(open(t, p))
	st := &metastore.Stripe{ID: [16]byte{1}, Object: [16]byte{2}, K: 1, M: 1, Shards: []metastore.ShardLoc{{Backend: "a", Key: "k0"}, {Backend: "b", Key: "k1"}}}
	o := &metastore.Object{Name: "shared", ID: [16]byte{2}, Stripes: [][16]byte{st.ID}}
	if _, err := s1.PutObject(ctx, o, []*metastore.Stripe{st}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s2.GetObject(ctx, "shared"); err != nil || got.ID != o.ID {
		t.Fatalf("second machine: %+v, %v", got, err)
	}
	v1, _ := s1.GetStripe(ctx, st.ID)
	v2, _ := s2.GetStripe(ctx, st.ID)
	v1.Shards[0].Backend = "c"
	v2.Shards[0].Backend = "d"
	if err := s2.UpdateStripe(ctx, v2, nil); err != nil {
		t.Fatal(err)
	}
	if err := s1.UpdateStripe(ctx, v1, nil); !errors.Is(err, metastore.ErrConflict) {
		t.Fatalf("stale update from the other machine: %v", err)
	}
	id1, err := s1.StoreID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id2, err := s2.StoreID(ctx); err != nil || id2 != id1 {
		t.Fatalf("store ids differ: %q %q (%v)", id1, id2, err)
	}
}

func TestOversizedBatch(t *testing.T) {
	// healstore's test etcd runs with --max-txn-ops 10000. A batch over
	// the server's limit must fail whole, as ErrTooLarge naming the flag,
	// and write nothing.
	ctx := context.Background()
	kv := open(t, uniquePrefix(t))
	var b metastore.Batch
	const n = 10001
	for i := 0; i < n; i++ {
		b.Put(fmt.Appendf(nil, "op/%05d", i), nil)
	}
	err := kv.Commit(ctx, &b)
	if err == nil {
		t.Logf("server accepts %d ops in one transaction (--max-txn-ops above 10000)", n)
		return
	}
	if !errors.Is(err, metastore.ErrTooLarge) || !strings.Contains(err.Error(), "--max-txn-ops") {
		t.Fatalf("oversized batch: %v, want ErrTooLarge naming --max-txn-ops", err)
	}
	if _, err := kv.Get(ctx, []byte("op/00000")); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("a refused batch wrote: %v", err)
	}
}

// proxy forwards TCP connections to target until cut.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	cutoff bool
}

func startProxy(t *testing.T, addr, target string) *proxy {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.cutoff { // accepted just as cut ran: must not survive it
				p.mu.Unlock()
				c.Close()
				u.Close()
				return
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

// cut closes the listener and every forwarded connection: etcd is gone.
func (p *proxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutoff = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func TestEtcdGoneThenBack(t *testing.T) {
	eps := metastoretest.EtcdEndpoints(t)
	target := eps[0]
	if i := strings.Index(target, "://"); i >= 0 {
		target = target[i+3:]
	}
	p := startProxy(t, "127.0.0.1:0", target)
	addr := p.ln.Addr().String()
	defer func() { p.cut() }()
	prefix := uniquePrefix(t)
	ctx := context.Background()
	kv, err := etcdkv.Open(ctx, []string{"http://" + addr}, prefix, etcdkv.WithRequestTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	var b metastore.Batch
	b.Put([]byte("k"), []byte("v"))
	if err := kv.Commit(ctx, &b); err != nil {
		t.Fatal(err)
	}
	p.cut()
	start := time.Now()
	_, err = kv.Get(ctx, []byte("k"))
	if !errors.Is(err, metastore.ErrUnavailable) {
		t.Fatalf("Get with etcd gone: %v, want ErrUnavailable", err)
	}
	if err := kv.Commit(ctx, &b); !errors.Is(err, metastore.ErrUnavailable) {
		t.Fatalf("Commit with etcd gone: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("calls took %v to give up", d)
	}
	// etcd comes back on the same address: the same KV works again.
	p = startProxy(t, addr, target)
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := kv.Get(ctx, []byte("k"))
		if err == nil {
			if string(v) != "v" {
				t.Fatalf("after reconnect: %q", v)
			}
			break
		}
		if !errors.Is(err, metastore.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("after etcd came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func BenchmarkPutObject1Stripe(b *testing.B)   { benchPut(b, 1) }
func BenchmarkPutObject64Stripes(b *testing.B) { benchPut(b, 64) }

func benchPut(b *testing.B, stripes int) {
	eps := metastoretest.EtcdEndpoints(b)
	var r [8]byte
	rand.Read(r[:])
	prefix := "healstore-bench/" + hex.EncodeToString(r[:]) + "/"
	kv, err := etcdkv.Open(context.Background(), eps, prefix)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		kv.Client().Delete(context.Background(), prefix, clientv3.WithPrefix())
		kv.Close()
	}()
	metastoretest.BenchPutObject(b, kv, stripes, 10, 4)
}

// lateTimer is a context whose deadline has passed while its timer has
// not fired yet (Err is nil), as happens for a moment on a loaded host.
type lateTimer struct {
	context.Context
	dl time.Time
}

func (c lateTimer) Deadline() (time.Time, bool) { return c.dl, true }

// A call that fails because the caller's deadline passed is reported as
// the deadline, not as etcd being unavailable, even when gRPC notices the
// deadline before ctx's own timer fires.
func TestDeadlineBeforeCtxTimer(t *testing.T) {
	kv := open(t, uniquePrefix(t))
	ctx := lateTimer{Context: context.Background(), dl: time.Now().Add(-time.Millisecond)}
	_, err := kv.Get(ctx, []byte("k"))
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, metastore.ErrUnavailable) {
		t.Fatalf("Get past the caller's deadline: %v, want context.DeadlineExceeded and not ErrUnavailable", err)
	}
}
