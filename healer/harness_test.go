package healer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/faulty"
	"github.com/healstore/healstore/backends/local"
	"github.com/healstore/healstore/backends/placement"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer/plan"
	"github.com/healstore/healstore/healer/provision"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
	"github.com/healstore/healstore/metastore/memkv"
)

// switchable wraps a backend so a test can stop it (every call fails as
// unavailable) and count the bytes read from and written to it.
type switchable struct {
	backends.Backend
	down          atomic.Bool
	read, written atomic.Int64
}

func (s *switchable) fail(op, key string) error {
	return backends.Errorf(s.Name(), op, key, backends.ErrUnavailable, "stopped by the test")
}

func (s *switchable) Put(ctx context.Context, key string, v []byte) error {
	if s.down.Load() {
		return s.fail("put", key)
	}
	err := s.Backend.Put(ctx, key, v)
	if err == nil && strings.HasPrefix(key, shardio.ShardPrefix) {
		s.written.Add(int64(len(v)))
	}
	return err
}

func (s *switchable) Get(ctx context.Context, key string) ([]byte, error) {
	if s.down.Load() {
		return nil, s.fail("get", key)
	}
	v, err := s.Backend.Get(ctx, key)
	if strings.HasPrefix(key, shardio.ShardPrefix) {
		s.read.Add(int64(len(v)))
	}
	return v, err
}

func (s *switchable) GetRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	if s.down.Load() {
		return nil, s.fail("get", key)
	}
	return s.Backend.GetRange(ctx, key, off, n)
}

func (s *switchable) Stat(ctx context.Context, key string) (int64, error) {
	if s.down.Load() {
		return 0, s.fail("stat", key)
	}
	return s.Backend.Stat(ctx, key)
}

func (s *switchable) Delete(ctx context.Context, key string) error {
	if s.down.Load() {
		return s.fail("delete", key)
	}
	return s.Backend.Delete(ctx, key)
}

func (s *switchable) List(ctx context.Context, prefix string, fn func(string, int64) error) error {
	if s.down.Load() {
		return s.fail("list", prefix)
	}
	return s.Backend.List(ctx, prefix, fn)
}

func (s *switchable) Probe(ctx context.Context) (backends.ProbeResult, error) {
	if s.down.Load() {
		return backends.ProbeResult{}, s.fail("probe", "")
	}
	return s.Backend.Probe(ctx)
}

// env is a small store built from the lower layers: local backends, an
// in-memory metastore and the encoder, with a healer on top.
type env struct {
	t    *testing.T
	dir  string
	meta *metastore.Store
	pol  encoder.Policy
	enc  *encoder.Codec
	rnd  *rand.Rand

	mu     sync.Mutex
	bs     map[string]*switchable
	faults map[string]*faulty.Backend // when envOpts.faulty

	faultCfg *faulty.Config
	h        *Healer
}

type envOpts struct {
	backends int
	k, m     int
	block    int
	cfg      Config
	provs    func(e *env) []provision.Provisioner
	seed     uint64
	// faulty, when set, puts a backends/faulty decorator (with this
	// config, zero rates by default) between each backend and the pool.
	faulty *faulty.Config
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	if o.k == 0 {
		o.k, o.m = 4, 2
	}
	if o.backends == 0 {
		o.backends = o.k + o.m
	}
	if o.block == 0 {
		o.block = 16 << 10
	}
	pol := encoder.Policy{K: o.k, M: o.m, BlockSize: o.block, Compression: encoder.CompressionNone,
		Encryption: encoder.EncryptionNone, Checksum: encoder.ChecksumXXH3}
	enc, err := encoder.NewCodec(pol, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		t: t, dir: t.TempDir(), pol: pol, enc: enc, bs: map[string]*switchable{},
		meta:   metastore.New(memkv.New(), metastore.WithGarbageDelay(0)),
		rnd:    rand.New(rand.NewPCG(o.seed, 7)),
		faults: map[string]*faulty.Backend{}, faultCfg: o.faulty,
	}
	ctx := context.Background()
	for i := range o.backends {
		name := fmt.Sprintf("b%d", i)
		spec := backends.Spec{Name: name, Kind: backends.KindLocal, Path: filepath.Join(e.dir, name), Node: name}
		if err := e.register(ctx, spec, ""); err != nil {
			t.Fatal(err)
		}
	}
	var provs []provision.Provisioner
	if o.provs != nil {
		provs = o.provs(e)
	}
	e.newHealer(o.cfg, provs)
	return e
}

// newHealer builds the env's healer on its metastore and pool, as the
// daemon does at start. It starts nothing: tests drive ProbeAll and
// RepairAll themselves.
func (e *env) newHealer(cfg Config, provs []provision.Provisioner) {
	e.t.Helper()
	ctx := context.Background()
	id, err := e.meta.StoreID(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	e.h, err = New(ctx, cfg, Deps{
		Meta: e.meta, Pool: e, Codec: StripeCodecs(), Register: e.register,
		StoreID: id, Provisioners: provs, Logger: testLogger(e.t),
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// Backend implements shardio.Pool.
func (e *env) Backend(name string) (backends.Backend, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	b, ok := e.bs[name]
	return b, ok
}

func (e *env) sw(name string) *switchable {
	e.mu.Lock()
	defer e.mu.Unlock()
	b := e.bs[name]
	if b == nil {
		e.t.Fatalf("no backend %s", name)
	}
	return b
}

// register is the Register dependency: open, add to the pool, record.
func (e *env) register(ctx context.Context, spec backends.Spec, secret string) error {
	if spec.Kind != backends.KindLocal {
		return fmt.Errorf("test pool opens local backends only, not %s", spec.Kind)
	}
	if err := os.MkdirAll(spec.Path, 0o700); err != nil {
		return err
	}
	b, err := local.Open(spec)
	if err != nil {
		return err
	}
	raw, _ := json.Marshal(spec)
	err = e.meta.PutBackend(ctx, &metastore.BackendRecord{
		Name: spec.Name, SpecJSON: raw, State: metastore.StateUp, Since: time.Now(),
		Domain: spec.Domain("node"), Spare: spec.Spare,
	})
	if err != nil {
		return err
	}
	var inner backends.Backend = b
	e.mu.Lock()
	if e.faultCfg != nil {
		fc := *e.faultCfg
		fc.Seed += uint64(len(e.faults)) * 7919 // a stream of its own per backend
		f := faulty.New(b, fc)
		e.faults[spec.Name] = f
		inner = f
	}
	e.bs[spec.Name] = &switchable{Backend: inner}
	e.mu.Unlock()
	return nil
}

func (e *env) kill(names ...string) {
	for _, n := range names {
		e.sw(n).down.Store(true)
	}
}

func (e *env) revive(names ...string) {
	for _, n := range names {
		e.sw(n).down.Store(false)
	}
}

// wipe deletes everything a backend holds, marker included.
func (e *env) wipe(name string) {
	b := e.sw(name)
	var keys []string
	ctx := context.Background()
	if err := b.Backend.List(ctx, "", func(k string, _ int64) error { keys = append(keys, k); return nil }); err != nil {
		e.t.Fatal(err)
	}
	for _, k := range keys {
		if err := b.Backend.Delete(ctx, k); err != nil {
			e.t.Fatal(err)
		}
	}
}

// shardBytes sums the bytes read and written through the pool.
func (e *env) io() (read, written int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range e.bs {
		read += b.read.Load()
		written += b.written.Load()
	}
	return read, written
}

// put writes an object through the lower layers, the way the store does:
// one stripe per block, shards on k+m up backends in distinct domains.
func (e *env) put(name string, data []byte) *metastore.Object {
	e.t.Helper()
	ctx := context.Background()
	obj := &metastore.Object{Name: name, ID: encoder.NewObjectID(), Size: int64(len(data)),
		Created: time.Now(), Modified: time.Now(),
		Policy: metastore.Policy{K: e.pol.K, M: e.pol.M, BlockSize: e.pol.BlockSize,
			Compression: e.pol.Compression, Encryption: e.pol.Encryption, Checksum: e.pol.Checksum}}
	var stripes []*metastore.Stripe
	for block := uint64(0); ; block++ {
		off := int(block) * e.pol.BlockSize
		if off >= len(data) && block > 0 {
			break
		}
		chunk := data[off:min(off+e.pol.BlockSize, len(data))]
		st, err := e.enc.EncodeBlock(encoder.ObjectID(obj.ID), block, encoder.NewStripeID(), chunk)
		if err != nil {
			e.t.Fatal(err)
		}
		n := e.pol.K + e.pol.M
		targets, err := placement.Choose(e.h.candidates(), n, nil, false, e.rnd)
		if err != nil {
			e.t.Fatalf("place block %d: %v", block, err)
		}
		res := shardio.Upload(ctx, e, st.ID, st.Shards, targets, shardio.UploadOptions{Attempts: 1})
		ms := &metastore.Stripe{ID: st.ID, Object: obj.ID, Block: block, K: e.pol.K, M: e.pol.M,
			DataLen: st.DataLen, Shards: make([]metastore.ShardLoc, n)}
		for i, b := range res.Landed {
			if b == "" {
				e.t.Fatalf("shard %d did not land: %v", i, res.Errs[i])
			}
			ms.Shards[i] = metastore.ShardLoc{Backend: b, Key: shardio.ShardKey(st.ID, i), Size: int64(len(st.Shards[i])), Sum: st.Sums[i]}
		}
		obj.Stripes = append(obj.Stripes, ms.ID)
		stripes = append(stripes, ms)
		if off+e.pol.BlockSize >= len(data) {
			break
		}
	}
	if _, err := e.meta.PutObject(ctx, obj, stripes, nil, nil); err != nil {
		e.t.Fatal(err)
	}
	return obj
}

// get reads an object back from any k verified shards of each stripe.
func (e *env) get(name string) ([]byte, error) {
	ctx := context.Background()
	obj, err := e.meta.GetObject(ctx, name)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for block, id := range obj.Stripes {
		st, err := e.meta.GetStripe(ctx, id)
		if err != nil {
			return nil, err
		}
		locs := make([]shardio.Loc, len(st.Shards))
		sums := make([][]byte, len(st.Shards))
		for i, l := range st.Shards {
			locs[i] = shardio.Loc{Backend: l.Backend, Key: l.Key, Sum: l.Sum}
			sums[i] = l.Sum
		}
		res, err := shardio.Fetch(ctx, e, shardio.FetchRequest{Stripe: st.ID, Locs: locs, Need: st.K,
			Verify: func(i int, b, sum []byte) error { return e.enc.VerifyShard(encoder.StripeID(st.ID), i, b, sum) }})
		if err != nil {
			return nil, fmt.Errorf("block %d: %w", block, err)
		}
		data, err := e.enc.DecodeBlock(encoder.ObjectID(obj.ID), uint64(block), encoder.StripeID(st.ID), res.Shards, sums)
		if err != nil {
			return nil, fmt.Errorf("block %d: %w", block, err)
		}
		out.Write(data)
	}
	return out.Bytes(), nil
}

// fill writes n objects of random sizes up to max bytes and returns them.
func (e *env) fill(n, maxSize int) map[string][]byte {
	objs := map[string][]byte{}
	for i := range n {
		data := make([]byte, 1+e.rnd.IntN(maxSize))
		for j := range data {
			data[j] = byte(e.rnd.Uint32())
		}
		name := fmt.Sprintf("obj-%03d", i)
		e.put(name, data)
		objs[name] = data
	}
	return objs
}

func (e *env) checkObjects(objs map[string][]byte) {
	e.t.Helper()
	for name, want := range objs {
		got, err := e.get(name)
		if err != nil {
			e.t.Fatalf("read %s: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			e.t.Fatalf("%s reads back different bytes", name)
		}
	}
}

// stripes returns every stripe record.
func (e *env) stripes() []*metastore.Stripe {
	var out []*metastore.Stripe
	if err := e.meta.ScanStripes(context.Background(), [16]byte{}, func(st *metastore.Stripe) error {
		out = append(out, st)
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// checkFull asserts every stripe has all k+m shards on up backends in
// distinct domains, each present with the recorded checksum.
func (e *env) checkFull() {
	e.t.Helper()
	ctx := context.Background()
	recs := map[string]metastore.BackendRecord{}
	list, err := e.meta.ListBackends(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, r := range list {
		recs[r.Name] = r
	}
	for _, st := range e.stripes() {
		domains := map[string]bool{}
		for i, l := range st.Shards {
			if l.Backend == "" {
				e.t.Fatalf("stripe %x shard %d has no location", st.ID, i)
			}
			r, ok := recs[l.Backend]
			if !ok || r.State != metastore.StateUp {
				e.t.Fatalf("stripe %x shard %d on %s (state %s)", st.ID, i, l.Backend, r.State)
			}
			if domains[r.Domain] {
				e.t.Fatalf("stripe %x: two shards in domain %s", st.ID, r.Domain)
			}
			domains[r.Domain] = true
			b, _ := e.Backend(l.Backend)
			data, err := b.(*switchable).Backend.Get(ctx, l.Key)
			if err != nil {
				e.t.Fatalf("stripe %x shard %d: %v", st.ID, i, err)
			}
			if err := e.enc.VerifyShard(encoder.StripeID(st.ID), i, data, l.Sum); err != nil {
				e.t.Fatalf("stripe %x shard %d: %v", st.ID, i, err)
			}
		}
	}
}

// state returns a backend's recorded state.
func (e *env) state(name string) metastore.BackendState {
	r, err := e.meta.GetBackend(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return r.State
}

// onBackend lists the stripes with a shard on the backend (by index).
func (e *env) onBackend(name string) int {
	n, err := e.meta.CountStripesOnBackend(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) probe() {
	e.t.Helper()
	if err := e.h.ProbeAll(context.Background()); err != nil && !errors.Is(err, ErrNoProvisioner) && !errors.Is(err, provision.ErrNoCapacity) {
		e.t.Fatal(err)
	}
}

func (e *env) repairAll() RepairReport {
	e.t.Helper()
	rep, err := e.h.RepairAll(context.Background(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return rep
}

func (e *env) queue() []metastore.RepairItem {
	q, err := e.meta.Queue(context.Background(), 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return q
}

func names(bs map[string]*switchable) []string {
	var out []string
	for n := range bs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

var _ = plan.Up

// testLogger sends the healer's logs to the test log (shown with -v or on
// failure).
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
