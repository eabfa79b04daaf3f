package healer

import (
	"context"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/placement"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

// hooked runs a test's function around one backend's calls.
type hooked struct {
	backends.Backend
	afterPut   func(key string)
	beforeList func()
}

func (b *hooked) Put(ctx context.Context, key string, v []byte) error {
	err := b.Backend.Put(ctx, key, v)
	if err == nil && b.afterPut != nil {
		b.afterPut(key)
	}
	return err
}

func (b *hooked) List(ctx context.Context, prefix string, fn func(string, int64) error) error {
	if b.beforeList != nil {
		b.beforeList()
	}
	return b.Backend.List(ctx, prefix, fn)
}

// hook puts a hooked wrapper under a backend's switchable (so kill and
// revive still work above it).
func (e *env) hook(name string) *hooked {
	e.mu.Lock()
	defer e.mu.Unlock()
	h := &hooked{Backend: e.bs[name].Backend}
	e.bs[name] = &switchable{Backend: h}
	return h
}

// stagedWrite is a put stopped just before its commit: its intent is
// recorded and its shards are uploaded, one of them on a chosen backend.
type stagedWrite struct {
	obj     *metastore.Object
	stripes []*metastore.Stripe
	intents [][16]byte
}

// stageWrite does what the store's write path does up to the commit, for
// an object of one block, placing one shard on backend `on`.
func (e *env) stageWrite(name string, data []byte, on string, created time.Time) *stagedWrite {
	e.t.Helper()
	ctx := context.Background()
	obj := &metastore.Object{Name: name, ID: encoder.NewObjectID(), Size: int64(len(data)),
		Created: time.Now(), Modified: time.Now(),
		Policy: metastore.Policy{K: e.pol.K, M: e.pol.M, BlockSize: e.pol.BlockSize,
			Compression: e.pol.Compression, Encryption: e.pol.Encryption, Checksum: e.pol.Checksum}}
	st, err := e.enc.EncodeBlock(encoder.ObjectID(obj.ID), 0, encoder.NewStripeID(), data)
	if err != nil {
		e.t.Fatal(err)
	}
	n := e.pol.K + e.pol.M
	var first placement.Candidate
	cands := e.h.candidates()
	for _, c := range cands {
		if c.Name == on {
			first = c
		}
	}
	if first.Name == "" {
		e.t.Fatalf("%s is not a candidate", on)
	}
	rest, err := placement.Choose(cands, n-1, map[string]bool{first.Name: true, first.Domain: true}, false, e.rnd)
	if err != nil {
		e.t.Fatal(err)
	}
	targets := append([]placement.Candidate{first}, rest...)
	in := metastore.Intent{ID: st.ID, Created: created}
	for i, t := range targets {
		in.Shards = append(in.Shards, metastore.ShardLoc{Backend: t.Name, Key: shardio.ShardKey(st.ID, i)})
	}
	if err := e.meta.AddIntent(ctx, in); err != nil {
		e.t.Fatal(err)
	}
	res := shardio.Upload(ctx, e, st.ID, st.Shards, targets, shardio.UploadOptions{Attempts: 1})
	ms := &metastore.Stripe{ID: st.ID, Object: obj.ID, K: e.pol.K, M: e.pol.M, DataLen: st.DataLen,
		Shards: make([]metastore.ShardLoc, n)}
	for i, b := range res.Landed {
		if b == "" {
			e.t.Fatalf("shard %d did not land: %v", i, res.Errs[i])
		}
		ms.Shards[i] = metastore.ShardLoc{Backend: b, Key: shardio.ShardKey(st.ID, i), Size: int64(len(st.Shards[i])), Sum: st.Sums[i]}
	}
	obj.Stripes = [][16]byte{st.ID}
	return &stagedWrite{obj: obj, stripes: []*metastore.Stripe{ms}, intents: [][16]byte{st.ID}}
}

// commit finishes a staged write as the store's commit does: the object,
// its stripes and the removal of its intents in one batch.
func (w *stagedWrite) commit(t *testing.T, meta *metastore.Store) {
	t.Helper()
	if _, err := meta.PutObject(context.Background(), w.obj, w.stripes, nil, w.intents); err != nil {
		t.Fatalf("commit of the staged write: %v", err)
	}
}

// patterned returns n bytes of a pattern that mul varies, so the objects
// of one test differ.
func patterned(n, mul int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * mul)
	}
	return b
}
