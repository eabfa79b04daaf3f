package healstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

// testOpts describe a store of local backends for one test.
type testOpts struct {
	k, m      int
	backends  int // default k+m
	nodes     int // distinct node labels, assigned round-robin (default: one per backend)
	spares    int // extra spare backends, each on its own node
	blockSize int // default 64 KiB
	quorum    int
	dir       string // default t.TempDir()
	edit      func(*Config)
}

func testConfig(t testing.TB, o testOpts) *Config {
	t.Helper()
	if o.k == 0 {
		o.k, o.m = 4, 2
	}
	if o.backends == 0 {
		o.backends = o.k + o.m
	}
	if o.nodes == 0 {
		o.nodes = o.backends
	}
	if o.blockSize == 0 {
		o.blockSize = 64 << 10
	}
	dir := o.dir
	if dir == "" {
		dir = t.TempDir()
	}
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.MasterKeyFile = filepath.Join(dir, "healstore.key")
	if err := GenerateMasterKey(cfg.MasterKeyFile); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	cfg.SecretsFile = filepath.Join(dir, "secrets.toml")
	cfg.Policy.K, cfg.Policy.M, cfg.Policy.BlockSize = o.k, o.m, o.blockSize
	cfg.WriteQuorum = o.quorum
	cfg.HedgeAfter = Duration(200 * time.Millisecond)
	for i := range o.backends + o.spares {
		spec := backends.Spec{
			Name: fmt.Sprintf("b%d", i), Kind: backends.KindLocal,
			Path: filepath.Join(dir, "backends", fmt.Sprintf("b%d", i)),
			Node: fmt.Sprintf("n%d", i%o.nodes),
		}
		if i >= o.backends {
			spec.Node = fmt.Sprintf("spare%d", i)
			spec.Spare = true
		}
		cfg.Backends = append(cfg.Backends, spec)
	}
	if o.edit != nil {
		o.edit(cfg)
	}
	return cfg
}

func openTest(t testing.TB, cfg *Config) *Store {
	t.Helper()
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openConfigFile opens the store a config file describes, closed when the
// test ends.
func openConfigFile(t testing.TB, path string) *Store {
	t.Helper()
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return openTest(t, cfg)
}

func newTestStore(t testing.TB, o testOpts) *Store {
	t.Helper()
	return openTest(t, testConfig(t, o))
}

func randBytes(rnd *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	return b
}

func readAll(t testing.TB, s *Store, name string) []byte {
	t.Helper()
	r, err := s.Open(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}

// setBackend replaces the open backend name with wrap(old) in the pool.
func setBackend(t testing.TB, s *Store, name string, wrap func(backends.Backend) backends.Backend) {
	t.Helper()
	s.bmu.Lock()
	h := s.handles[name]
	s.bmu.Unlock()
	if h == nil {
		t.Fatalf("no backend %s", name)
	}
	h.mu.Lock()
	h.b = wrap(h.b)
	h.mu.Unlock()
}

// downBackend fails every call with ErrUnavailable, like a stopped server.
type downBackend struct{ backends.Backend }

func (d downBackend) err(op, key string) error {
	return backends.Errorf(d.Name(), op, key, backends.ErrUnavailable, "connection refused (stopped in test)")
}
func (d downBackend) Put(ctx context.Context, key string, v []byte) error { return d.err("put", key) }
func (d downBackend) Get(ctx context.Context, key string) ([]byte, error) {
	return nil, d.err("get", key)
}
func (d downBackend) GetRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	return nil, d.err("get", key)
}
func (d downBackend) Stat(ctx context.Context, key string) (int64, error) {
	return 0, d.err("stat", key)
}
func (d downBackend) Probe(ctx context.Context) (backends.ProbeResult, error) {
	return backends.ProbeResult{}, d.err("probe", "")
}

func TestPutGetRoundTrip(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 1))
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	bs := s.cfg.Policy.BlockSize
	for _, size := range []int{0, 1, 100, bs - 1, bs, bs + 1, 3*bs + bs/2} {
		name := fmt.Sprintf("obj-%d", size)
		data := randBytes(rnd, size)
		info, err := s.Put(ctx, name, bytes.NewReader(data))
		if err != nil {
			t.Fatalf("put %d: %v", size, err)
		}
		blocks, inline := (size+bs-1)/bs, size <= int(s.cfg.InlineMaxSize)
		if inline {
			blocks = 0 // kept in the object's record (inline.go)
		}
		if info.Size != int64(size) || info.Blocks != blocks || info.Inline != inline {
			t.Fatalf("size %d: info %+v", size, info)
		}
		if got := readAll(t, s, name); !bytes.Equal(got, data) {
			t.Fatalf("size %d: read back differs", size)
		}
		// Random ranges through ReadAt, and Seek+Read.
		r, err := s.Open(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r.Size() != int64(size) {
			t.Fatalf("Size %d", r.Size())
		}
		for range 20 {
			if size == 0 {
				break
			}
			off := rnd.IntN(size)
			n := rnd.IntN(size-off) + 1
			buf := make([]byte, n)
			got, err := r.ReadAt(buf, int64(off))
			if err != nil && !(err == io.EOF && off+n == size) {
				t.Fatalf("ReadAt(%d,%d): %v", off, n, err)
			}
			if got != n || !bytes.Equal(buf, data[off:off+n]) {
				t.Fatalf("ReadAt(%d,%d) wrong", off, n)
			}
		}
		if size > 10 {
			if _, err := r.Seek(-10, io.SeekEnd); err != nil {
				t.Fatal(err)
			}
			tail, _ := io.ReadAll(r)
			if !bytes.Equal(tail, data[size-10:]) {
				t.Fatal("seek end read wrong")
			}
		}
		// io.Copy goes through WriteTo, from the current position.
		half := int64(size / 2)
		if _, err := r.Seek(half, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if n, err := io.Copy(&buf, r); err != nil || n != int64(size)-half || !bytes.Equal(buf.Bytes(), data[half:]) {
			t.Fatalf("size %d: io.Copy from %d: %d bytes, %v", size, half, n, err)
		}
		if n, err := r.ReadAt(make([]byte, 1), int64(size)); n != 0 || err != io.EOF {
			t.Fatalf("read at end: %d %v", n, err)
		}
		r.Close()
		if _, err := r.ReadAt(make([]byte, 1), 0); size > 0 && !errors.Is(err, ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
	}
}

func TestWriterCommitsOnClose(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	if _, err := s.Put(ctx, "doc", strings.NewReader("old")); err != nil {
		t.Fatal(err)
	}
	w, err := s.Create(ctx, "doc")
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789"), 30000) // several blocks
	for i := 0; i < len(data); i += 7777 {
		if _, err := w.Write(data[i:min(i+7777, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if got := readAll(t, s, "doc"); string(got) != "old" {
		t.Fatal("new version visible before Close")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Info().Size != int64(len(data)) {
		t.Fatalf("info %+v", w.Info())
	}
	if got := readAll(t, s, "doc"); !bytes.Equal(got, data) {
		t.Fatal("new version not read back")
	}

	// Abort: the object stays as it was, and the uploaded shards become
	// garbage at once (they were never referenced).
	w, err = s.Create(ctx, "doc")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte{1}, 300000))
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, "doc"); !bytes.Equal(got, data) {
		t.Fatal("abort changed the object")
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after abort: %v", err)
	}
	intents := 0
	s.meta.ListIntents(ctx, func(metastore.Intent) error { intents++; return nil })
	if intents != 0 {
		t.Fatalf("%d intents left after abort", intents)
	}
	due := 0
	s.meta.DueGarbage(ctx, time.Now(), func(metastore.Garbage) error { due++; return nil })
	if due == 0 {
		t.Fatal("aborted write's shards not handed to garbage collection")
	}
}

func TestOverwriteDeleteRenameList(t *testing.T) {
	// Small objects in shards, not inline: the test follows their shards.
	s := newTestStore(t, testOpts{edit: func(c *Config) { c.InlineMaxSize = 0 }})
	ctx := context.Background()
	put := func(name, data string) {
		t.Helper()
		if _, err := s.Put(ctx, name, strings.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	put("a/1", "one")
	first, _ := s.meta.GetObject(ctx, "a/1")
	put("a/1", "uno")
	// The replaced version's shards are garbage, not yet deleted.
	var garbage []metastore.Garbage
	s.meta.ListGarbage(ctx, func(g metastore.Garbage) error { garbage = append(garbage, g); return nil })
	if len(garbage) != 6 {
		t.Fatalf("garbage after overwrite: %d entries, want 6", len(garbage))
	}
	for _, g := range garbage {
		b, _ := s.Backend(g.Backend)
		if _, err := b.Stat(ctx, g.Key); err != nil {
			t.Fatalf("old shard %s deleted before collection: %v", g.Key, err)
		}
		if id, _, ok := shardio.ParseShardKey(g.Key); !ok || id != first.Stripes[0] {
			t.Fatalf("garbage %s is not the old stripe's", g.Key)
		}
	}
	if got := readAll(t, s, "a/1"); string(got) != "uno" {
		t.Fatalf("got %q", got)
	}

	for i := range 25 {
		put(fmt.Sprintf("b/%02d", i), "x")
	}
	put("c", "see")
	var names []string
	after := ""
	for pages := 0; ; pages++ {
		objs, next, err := s.List(ctx, "b/", after, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			names = append(names, o.Name)
		}
		if next == "" {
			if pages != 2 {
				t.Fatalf("%d pages", pages+1)
			}
			break
		}
		after = next
	}
	if len(names) != 25 || names[0] != "b/00" || names[24] != "b/24" {
		t.Fatalf("listed %v", names)
	}

	if err := s.Rename(ctx, "c", "a/1"); !errors.Is(err, ErrExists) {
		t.Fatalf("rename onto existing: %v", err)
	}
	if err := s.Rename(ctx, "nope", "z"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rename missing: %v", err)
	}
	if err := s.Rename(ctx, "c", "d"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stat renamed-away: %v", err)
	}
	if got := readAll(t, s, "d"); string(got) != "see" {
		t.Fatalf("renamed content %q", got)
	}

	if err := s.Delete(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "d"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := s.Open(ctx, "d"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open deleted: %v", err)
	}
	n := 0
	s.meta.ListGarbage(ctx, func(metastore.Garbage) error { n++; return nil })
	if n != 12 {
		t.Fatalf("garbage after delete: %d, want 12", n)
	}
	info, err := s.Stat(ctx, "a/1")
	if err != nil {
		t.Fatal(err)
	}
	if info.Redundancy == nil || info.Redundancy.MinMargin != 2 || info.Redundancy.Degraded != 0 {
		t.Fatalf("redundancy %+v", info.Redundancy)
	}
}

func TestBadNames(t *testing.T) {
	s := newTestStore(t, testOpts{})
	for _, name := range []string{"", "a\x00b", string([]byte{0xff, 0xfe}), strings.Repeat("x", MaxNameLen+1)} {
		if _, err := s.Put(context.Background(), name, strings.NewReader("x")); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
}

func TestOpenRefusesTooFewDomains(t *testing.T) {
	// Eight backends, but on five nodes only: 4+2 cannot be placed.
	cfg := testConfig(t, testOpts{backends: 8, nodes: 5})
	_, err := Open(context.Background(), cfg)
	var ie *InsufficientBackendsError
	if !errors.As(err, &ie) || !errors.Is(err, ErrInsufficientBackends) {
		t.Fatalf("want InsufficientBackendsError, got %v", err)
	}
	if ie.Usable != 5 || ie.Needed != 6 || !strings.Contains(err.Error(), "node:n4") || !strings.Contains(err.Error(), "add 1 backend") {
		t.Fatalf("message does not say what is missing: %v", err)
	}
	// Spares do not count.
	cfg = testConfig(t, testOpts{backends: 5, spares: 3})
	if _, err := Open(context.Background(), cfg); !errors.Is(err, ErrInsufficientBackends) {
		t.Fatalf("spares counted as placement domains: %v", err)
	}
}

// TestPlacementInvariant writes many objects over backends that share
// nodes and checks that no stripe has two shards in one domain.
func TestPlacementInvariant(t *testing.T) {
	s := newTestStore(t, testOpts{backends: 12, nodes: 7, blockSize: 4096})
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(7, 7))
	for i := range 20 {
		if _, err := s.Put(ctx, fmt.Sprint(i), bytes.NewReader(randBytes(rnd, 20000))); err != nil {
			t.Fatal(err)
		}
	}
	domain := map[string]string{}
	for _, b := range s.cfg.Backends {
		domain[b.Name] = b.Domain("node")
	}
	used := map[string]int{}
	stripes := 0
	err := s.meta.ScanStripes(ctx, [16]byte{}, func(st *metastore.Stripe) error {
		stripes++
		seen := map[string]bool{}
		for i, sh := range st.Shards {
			if sh.Backend == "" {
				return fmt.Errorf("stripe %x shard %d missing on a healthy store", st.ID, i)
			}
			d := domain[sh.Backend]
			if seen[d] {
				return fmt.Errorf("stripe %x has two shards in %s", st.ID, d)
			}
			seen[d] = true
			used[sh.Backend]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if stripes != 100 || len(used) != 12 {
		t.Fatalf("%d stripes; backends used: %v", stripes, used)
	}
}

// TestWriterFailsPromptly: when the write fails in the background (here
// its context ends, then too few backends), the next Write and Close
// return the error at once, and nothing is committed.
func TestWriterFailsPromptly(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	w, err := s.Create(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 100000)); err != nil {
		t.Fatal(err)
	}
	cancel()
	done := make(chan error, 1)
	go func() {
		var err error
		for range 1000 {
			if _, err = w.Write(make([]byte, 100000)); err != nil {
				break
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("write after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Write still blocked after the write failed")
	}
	if err := w.Close(); !errors.Is(err, context.Canceled) {
		t.Fatalf("close: %v", err)
	}
	if _, err := s.Stat(context.Background(), "c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("failed write visible: %v", err)
	}

	for _, b := range []string{"b0", "b1"} {
		setBackend(t, s, b, func(b backends.Backend) backends.Backend { return downBackend{b} })
	}
	w, _ = s.Create(context.Background(), "d")
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		_, werr = w.Write(make([]byte, 64<<10))
	}
	if !errors.Is(werr, ErrInsufficientBackends) {
		t.Fatalf("write with two backends down: %v", werr)
	}
	if err := w.Close(); !errors.Is(err, ErrInsufficientBackends) {
		t.Fatalf("close: %v", err)
	}
}

func TestMarkersAndHealth(t *testing.T) {
	cfg := testConfig(t, testOpts{spares: 1})
	s := openTest(t, cfg)
	ctx := context.Background()
	for _, b := range cfg.Backends {
		be, _ := s.Backend(b.Name)
		raw, err := be.Get(ctx, MarkerKey)
		if err != nil {
			t.Fatalf("%s: marker: %v", b.Name, err)
		}
		var m Marker
		if err := json.Unmarshal(raw, &m); err != nil || m.StoreID != s.StoreID() || m.Backend != b.Name {
			t.Fatalf("%s: marker %s", b.Name, raw)
		}
		rec, _ := s.meta.GetBackend(ctx, b.Name)
		if rec.Marker != string(raw) || rec.Spare != b.Spare || rec.Domain != b.Domain("node") {
			t.Fatalf("%s: record %+v", b.Name, rec)
		}
	}
	rep, err := s.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Writable || !rep.FullRedundancy || rep.Domains != 7 || len(rep.Backends) != 7 || len(rep.Problems) != 0 {
		t.Fatalf("healthy store: %+v", rep)
	}
	// The spare stands in for a backend that is down, as writes use it.
	setBackend(t, s, "b3", func(b backends.Backend) backends.Backend { return downBackend{b} })
	rep, _ = s.Health(ctx)
	if !rep.Writable || !rep.FullRedundancy || rep.Domains != 6 || !strings.Contains(strings.Join(rep.Problems, "\n"), "backend b3 is unreachable") {
		t.Fatalf("one backend down: %+v", rep)
	}
	s.Close()

	// A backend wiped since it joined keeps its marker missing: Open does
	// not rewrite it (the healer must see the loss).
	// (An empty backend directory is not opened at all; a new disk has
	// its data directory made by hand.)
	be := cfg.Backends[2]
	os.RemoveAll(be.Path)
	os.MkdirAll(filepath.Join(be.Path, "data"), 0o700)
	s = openTest(t, cfg)
	b2, _ := s.Backend(be.Name)
	if _, err := b2.Get(ctx, MarkerKey); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("marker of a wiped backend rewritten: %v", err)
	}
	s.Close()

	// A directory holding another store's marker is refused on first sight.
	other := testConfig(t, testOpts{})
	other.Backends[0].Path = cfg.Backends[0].Path
	_, err = Open(ctx, other)
	if err == nil || !strings.Contains(err.Error(), "another store") {
		t.Fatalf("foreign backend accepted: %v", err)
	}
}

// A backend the store never marked (unreachable when it opened) that got
// shards and then lost them is not given a fresh marker at the next open,
// which would hide the loss from the healer; one whose shards are there
// is marked as usual.
func TestOpenDoesNotMarkAnUnmarkedWipedBackend(t *testing.T) {
	cfg := testConfig(t, testOpts{})
	s := openTest(t, cfg)
	ctx := context.Background()
	if _, err := s.Put(ctx, "obj", bytes.NewReader(bytes.Repeat([]byte("x"), 200<<10))); err != nil {
		t.Fatal(err)
	}
	unmark := func(name string) {
		t.Helper()
		if err := s.meta.UpdateBackend(ctx, name, func(r *metastore.BackendRecord) error { r.Marker = ""; return nil }); err != nil {
			t.Fatal(err)
		}
		be, _ := s.Backend(name)
		if err := be.Delete(ctx, MarkerKey); err != nil {
			t.Fatal(err)
		}
	}
	wiped, kept := cfg.Backends[2], cfg.Backends[3]
	unmark(wiped.Name)
	unmark(kept.Name)
	s.Close()
	os.RemoveAll(wiped.Path)
	os.MkdirAll(filepath.Join(wiped.Path, "data"), 0o700)

	s = openTest(t, cfg)
	defer s.Close()
	b, _ := s.Backend(wiped.Name)
	if _, err := b.Get(ctx, MarkerKey); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("an unmarked backend that lost its shards got a fresh marker at open: %v", err)
	}
	b, _ = s.Backend(kept.Name)
	if _, err := b.Get(ctx, MarkerKey); err != nil {
		t.Fatalf("an unmarked backend holding its shards was not marked at open: %v", err)
	}
}

// AddBackend with a spec that cannot work changes nothing: no backend
// record and no secret saved.
func TestAddBackendBadSpecSavesNothing(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	spec := backends.Spec{Name: "s3x", Kind: backends.KindS3, Address: "127.0.0.1:1", Bucket: "hs", SecretRef: "s3/s3x"}
	err := s.AddBackend(ctx, spec, "the-secret")
	if err == nil || !strings.Contains(err.Error(), `bucket "hs"`) {
		t.Fatalf("AddBackend with bucket hs: %v", err)
	}
	if _, err := s.Secrets().Lookup("s3/s3x"); err == nil {
		t.Fatal("the secret of a refused backend was saved")
	}
	if _, err := s.meta.GetBackend(ctx, "s3x"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("a refused backend was registered: %v", err)
	}
}
