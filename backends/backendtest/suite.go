package backendtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
)

// Factory describes how the suite gets backends of one kind.
type Factory struct {
	// Open returns a new, empty backend. Required. The suite closes it.
	Open func(t *testing.T) backends.Backend

	// MaxValueSize is the largest value the kind takes. The suite
	// round-trips a value of min(MaxValueSize, 8 MiB) bytes and expects
	// ErrTooLarge for MaxValueSize+1. Required.
	MaxValueSize int

	// CapacityKnown says whether Probe on an Open backend reports a known
	// capacity (S3 without a quota cannot).
	CapacityKnown bool

	// OpenLimited returns a new, empty backend that holds at most limit
	// bytes of values (a namespace maxsize, a quota). Required.
	OpenLimited func(t *testing.T, limit int64) backends.Backend

	// OpenWrongCredentials returns a backend configured with a wrong
	// password or secret key, or the error opening it gave (which must
	// then match ErrAuth). nil for kinds without credentials.
	OpenWrongCredentials func(t *testing.T) (backends.Backend, error)

	// OpenUnreachable returns a backend whose server is not there (nothing
	// listens on its address), or the error opening it gave (which must
	// then match ErrUnavailable). nil for kinds without a server.
	OpenUnreachable func(t *testing.T) (backends.Backend, error)

	// OpenHanging returns a backend whose server accepts connections and
	// then never answers. nil for kinds without a server.
	OpenHanging func(t *testing.T) (backends.Backend, error)

	// OpenWithOutage returns a new backend on a server of its own, with
	// functions that stop that server and start it again at the same
	// address, data kept. nil when the kind's server cannot be controlled.
	OpenWithOutage func(t *testing.T) (b backends.Backend, stop, start func())

	// Secrets are strings (passwords, secret keys) that must never appear
	// in an error message.
	Secrets []string
}

const eightMiB = 8 << 20

// Run runs the whole suite against f.
func Run(t *testing.T, f Factory) {
	if f.Open == nil || f.OpenLimited == nil || f.MaxValueSize <= 0 {
		t.Fatal("backendtest: Factory needs Open, OpenLimited and MaxValueSize")
	}
	s := &suite{f: f}
	t.Run("RoundTrip", s.testRoundTrip)
	t.Run("Keys", s.testKeys)
	t.Run("NotFound", s.testNotFound)
	t.Run("Overwrite", s.testOverwrite)
	t.Run("Delete", s.testDelete)
	t.Run("List", s.testList)
	t.Run("ListMany", s.testListMany)
	t.Run("TooLarge", s.testTooLarge)
	t.Run("InvalidKey", s.testInvalidKey)
	t.Run("Concurrent", s.testConcurrent)
	t.Run("CanceledContext", s.testCanceled)
	t.Run("Probe", s.testProbe)
	t.Run("Full", s.testFull)
	s.optional(t, "Deadline", f.OpenHanging != nil, s.testDeadline)
	s.optional(t, "Unreachable", f.OpenUnreachable != nil, s.testUnreachable)
	s.optional(t, "Outage", f.OpenWithOutage != nil, s.testOutage)
	s.optional(t, "WrongCredentials", f.OpenWrongCredentials != nil, s.testWrongCredentials)
}

type suite struct{ f Factory }

func (s *suite) optional(t *testing.T, name string, have bool, fn func(*testing.T)) {
	if !have {
		t.Logf("backendtest: %s not applicable to this kind (no Factory hook)", name)
		return
	}
	t.Run(name, fn)
}

func (s *suite) open(t *testing.T) backends.Backend {
	t.Helper()
	b := s.f.Open(t)
	t.Cleanup(func() { b.Close() })
	return b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Seed returns a seed for the suite's random data, from
// HEALSTORE_TEST_SEED when set, and logs it so a failure replays.
func Seed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("HEALSTORE_TEST_SEED"); v != "" {
		fmt.Sscan(v, &seed)
	}
	t.Logf("seed %d (set HEALSTORE_TEST_SEED to replay)", seed)
	return seed
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// expectKind fails unless err is a *backends.Error of kind naming b, free of
// secrets.
func (s *suite) expectKind(t *testing.T, b backends.Backend, err, kind error, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got nil error, want %v", what, kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("%s: got %v, want kind %v", what, err, kind)
	}
	var be *backends.Error
	if !errors.As(err, &be) {
		t.Fatalf("%s: error %v (%T) is not a *backends.Error", what, err, err)
	}
	if b != nil && be.Backend != b.Name() {
		t.Fatalf("%s: error names backend %q, want %q", what, be.Backend, b.Name())
	}
	s.noSecret(t, err, what)
}

func (s *suite) noSecret(t *testing.T, err error, what string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, sec := range s.f.Secrets {
		if sec != "" && strings.Contains(err.Error(), sec) {
			t.Fatalf("%s: error message contains a secret: %q", what, err.Error())
		}
	}
}

func (s *suite) mustPut(t *testing.T, ctx context.Context, b backends.Backend, key string, v []byte) {
	t.Helper()
	if err := b.Put(ctx, key, v); err != nil {
		t.Fatalf("Put %s (%d bytes): %v", key, len(v), err)
	}
}

func (s *suite) mustGet(t *testing.T, ctx context.Context, b backends.Backend, key string, want []byte) {
	t.Helper()
	got, err := b.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get %s: %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get %s: got %d bytes, want %d bytes (equal prefix %d)", key, len(got), len(want), commonPrefix(got, want))
	}
	n, err := b.Stat(ctx, key)
	if err != nil {
		t.Fatalf("Stat %s: %v", key, err)
	}
	if n != int64(len(want)) {
		t.Fatalf("Stat %s: %d, want %d", key, n, len(want))
	}
}

func commonPrefix(a, b []byte) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

func (s *suite) testRoundTrip(t *testing.T) {
	b := s.open(t)
	ctx := ctxT(t)
	r := rand.New(rand.NewPCG(Seed(t), 1))
	big := s.f.MaxValueSize
	if big > eightMiB {
		big = eightMiB
	}
	allBytes := make([]byte, 512)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	cases := []struct {
		key string
		v   []byte
	}{
		{"rt/empty", []byte{}},
		{"rt/one", []byte{0}},
		{"rt/small", randBytes(r, 1000)},
		{"rt/binary", append(allBytes, []byte("\r\n\x00\xff$-1\r\n*2\r\n")...)},
		{"rt/crlf", []byte("\r\n")},
		{"rt/big", randBytes(r, big)},
	}
	for _, c := range cases {
		s.mustPut(t, ctx, b, c.key, c.v)
	}
	for _, c := range cases {
		s.mustGet(t, ctx, b, c.key, c.v)
	}
	// Ranges: inside, crossing the end, at the end, past the end.
	v := cases[2].v
	ranges := []struct{ off, n int64 }{{0, 10}, {10, 100}, {990, 100}, {1000, 5}, {5000, 5}, {0, 0}, {0, 1000}}
	for _, rg := range ranges {
		got, err := b.GetRange(ctx, "rt/small", rg.off, rg.n)
		if err != nil {
			t.Fatalf("GetRange(%d,%d): %v", rg.off, rg.n, err)
		}
		lo, hi := rg.off, rg.off+rg.n
		if lo > int64(len(v)) {
			lo = int64(len(v))
		}
		if hi > int64(len(v)) {
			hi = int64(len(v))
		}
		if !bytes.Equal(got, v[lo:hi]) {
			t.Fatalf("GetRange(%d,%d): got %d bytes, want %d", rg.off, rg.n, len(got), hi-lo)
		}
	}
	got, err := b.GetRange(ctx, "rt/big", int64(big)-3, 10)
	if err != nil || !bytes.Equal(got, cases[5].v[big-3:]) {
		t.Fatalf("GetRange of the big value's tail: %d bytes, %v", len(got), err)
	}
	got, err = b.GetRange(ctx, "rt/empty", 0, 10)
	if err != nil || len(got) != 0 {
		t.Fatalf("GetRange of an empty value: %q, %v", got, err)
	}
}

func (s *suite) testKeys(t *testing.T) {
	b := s.open(t)
	ctx := ctxT(t)
	long := strings.Repeat("k", backends.MaxKeyLen-2) + "/z"
	keys := []string{
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
		"shards/0123456789abcdef0123456789abcdef.0",
		"shards/0123456789abcdef0123456789abcdef.10",
		".hidden", "..", ".", "-", "_", "a.b", "x/.y", "x/..z", "deep/a/b/c/d", long,
	}
	for i, k := range keys {
		s.mustPut(t, ctx, b, k, []byte(fmt.Sprintf("value %d", i)))
	}
	for i, k := range keys {
		s.mustGet(t, ctx, b, k, []byte(fmt.Sprintf("value %d", i)))
	}
	seen := map[string]bool{}
	err := b.List(ctx, "", func(k string, _ int64) error {
		if seen[k] {
			t.Errorf("List reported %q twice", k)
		}
		seen[k] = true
		return nil
	})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, k := range keys {
		if !seen[k] {
			t.Errorf("List missed %q", k)
		}
	}
	if len(seen) != len(keys) {
		t.Errorf("List reported %d keys, want %d", len(seen), len(keys))
	}
}

func (s *suite) testNotFound(t *testing.T) {
	b := s.open(t)
	ctx := ctxT(t)
	_, err := b.Get(ctx, "missing/key")
	s.expectKind(t, b, err, backends.ErrNotFound, "Get missing")
	var be *backends.Error
	if errors.As(err, &be) && be.Key != "missing/key" {
		t.Errorf("Get missing: error names key %q", be.Key)
	}
	_, err = b.GetRange(ctx, "missing/key", 0, 10)
	s.expectKind(t, b, err, backends.ErrNotFound, "GetRange missing")
	_, err = b.Stat(ctx, "missing/key")
	s.expectKind(t, b, err, backends.ErrNotFound, "Stat missing")
}

func (s *suite) testOverwrite(t *testing.T) {
	b := s.open(t)
	ctx := ctxT(t)
	r := rand.New(rand.NewPCG(Seed(t), 2))
	v1, v2, v3 := randBytes(r, 5000), randBytes(r, 100), randBytes(r, 70000)
	s.mustPut(t, ctx, b, "ow/k", v1)
	s.mustPut(t, ctx, b, "ow/k", v2)
	s.mustGet(t, ctx, b, "ow/k", v2)
	// The same value again: 0-db replies nil ("unchanged"); it is success.
	s.mustPut(t, ctx, b, "ow/k", v2)
	s.mustGet(t, ctx, b, "ow/k", v2)
	s.mustPut(t, ctx, b, "ow/k", v3)
	s.mustGet(t, ctx, b, "ow/k", v3)
	s.mustPut(t, ctx, b, "ow/k", nil)
	s.mustGet(t, ctx, b, "ow/k", []byte{})
	s.mustPut(t, ctx, b, "ow/k", v1)
	n := 0
	if err := b.List(ctx, "ow/", func(k string, size int64) error {
		n++
		if size != int64(len(v1)) {
			t.Errorf("List after overwrite: %s size %d, want %d", k, size, len(v1))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("List after overwrites reported %d entries, want 1", n)
	}
}

func (s *suite) testDelete(t *testing.T) {
	b := s.open(t)
	ctx := ctxT(t)
	if err := b.Delete(ctx, "del/never"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	s.mustPut(t, ctx, b, "del/k", []byte("v"))
	s.mustPut(t, ctx, b, "del/keep", []byte("w"))
	if err := b.Delete(ctx, "del/k"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err := b.Get(ctx, "del/k")
	s.expectKind(t, b, err, backends.ErrNotFound, "Get after Delete")
	if err := b.Delete(ctx, "del/k"); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	s.mustGet(t, ctx, b, "del/keep", []byte("w"))
	// A deleted key can be written again.
	s.mustPut(t, ctx, b, "del/k", []byte("again"))
	s.mustGet(t, ctx, b, "del/k", []byte("again"))
}

func (s *suite) list(t *testing.T, ctx context.Context, b backends.Backend, prefix string) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	err := b.List(ctx, prefix, func(k string, size int64) error {
		if _, dup := got[k]; dup {
			t.Errorf("List(%q) reported %q twice", prefix, k)
		}
		got[k] = size
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return got
}

func (s *suite) testList(t *testing.T) {
	b := s.open(t)
	ctx := ctxT(t)
	if got := s.list(t, ctx, b, ""); len(got) != 0 {
		t.Fatalf("List of an empty backend: %v", got)
	}
	want := map[string]int64{"a/1": 1, "a/2": 22, "a/3x": 0, "ab/1": 3, "b/1": 4, "a.1": 5}
	for k, n := range want {
		s.mustPut(t, ctx, b, k, bytes.Repeat([]byte{'x'}, int(n)))
	}
	check := func(prefix string) {
		t.Helper()
		got := s.list(t, ctx, b, prefix)
		exp := map[string]int64{}
		for k, n := range want {
			if strings.HasPrefix(k, prefix) {
				exp[k] = n
			}
		}
		if fmt.Sprint(sorted(got)) != fmt.Sprint(sorted(exp)) {
			t.Fatalf("List(%q) = %v, want %v", prefix, sorted(got), sorted(exp))
		}
	}
	for _, p := range []string{"", "a", "a/", "a/3", "ab", "b/", "zz", "a/1"} {
		check(p)
	}
	if err := b.Delete(ctx, "a/2"); err != nil {
		t.Fatal(err)
	}
	delete(want, "a/2")
	check("a/")
	// An error from fn stops the walk and comes back unchanged.
	stop := errors.New("stop here")
	calls := 0
	err := b.List(ctx, "", func(string, int64) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("List with a failing fn: err %v after %d calls, want %v after 1", err, calls, stop)
	}
}

func sorted(m map[string]int64) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(out)
	return out
}

func (s *suite) testListMany(t *testing.T) {
	b := s.open(t)
	ctx := ctxT(t)
	const n = 600
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			p := "even"
			if i%2 == 1 {
				p = "odd"
			}
			if err := b.Put(ctx, fmt.Sprintf("many/%s/%04d", p, i), []byte(fmt.Sprint(i))); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	all := s.list(t, ctx, b, "many/")
	odd := s.list(t, ctx, b, "many/odd/")
	if len(all) != n || len(odd) != n/2 {
		t.Fatalf("List: %d keys under many/, %d under many/odd/; want %d and %d", len(all), len(odd), n, n/2)
	}
	for k, size := range odd {
		var i int
		fmt.Sscanf(k, "many/odd/%d", &i)
		if i%2 != 1 || size != int64(len(fmt.Sprint(i))) {
			t.Fatalf("List(many/odd/): unexpected %s size %d", k, size)
		}
	}
}

func (s *suite) testTooLarge(t *testing.T) {
	b := s.open(t)
	ctx := ctxT(t)
	err := b.Put(ctx, "big/over", make([]byte, s.f.MaxValueSize+1))
	s.expectKind(t, b, err, backends.ErrTooLarge, "Put of MaxValueSize+1 bytes")
	_, err = b.Get(ctx, "big/over")
	s.expectKind(t, b, err, backends.ErrNotFound, "Get after a refused Put")
	// The backend still works after the refusal (0-db would have dropped
	// the connection had the value been sent).
	s.mustPut(t, ctx, b, "big/after", []byte("ok"))
	s.mustGet(t, ctx, b, "big/after", []byte("ok"))
}

func (s *suite) testInvalidKey(t *testing.T) {
	b := s.open(t)
	ctx := ctxT(t)
	for _, k := range []string{"", strings.Repeat("k", backends.MaxKeyLen+1), "a b", "a\x00b", "a\r\nb", "ünï"} {
		err := b.Put(ctx, k, []byte("v"))
		s.expectKind(t, b, err, backends.ErrInvalidKey, fmt.Sprintf("Put(%q)", k))
		_, err = b.Get(ctx, k)
		s.expectKind(t, b, err, backends.ErrInvalidKey, fmt.Sprintf("Get(%q)", k))
	}
}

func (s *suite) testConcurrent(t *testing.T) {
	b := s.open(t)
	ctx := ctxT(t)
	seed := Seed(t)
	const workers, rounds = 32, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			for i := 0; i < rounds; i++ {
				key := fmt.Sprintf("conc/%02d/%d", w, i)
				v := randBytes(r, 1+r.IntN(64<<10))
				if err := b.Put(ctx, key, v); err != nil {
					errs <- fmt.Errorf("worker %d Put %s: %w", w, key, err)
					return
				}
				got, err := b.Get(ctx, key)
				if err != nil || !bytes.Equal(got, v) {
					errs <- fmt.Errorf("worker %d Get %s: %d bytes, %v", w, key, len(got), err)
					return
				}
				// Everybody also hammers one shared key; whatever wins
				// must be a whole value someone wrote.
				shared := bytes.Repeat([]byte{byte(w)}, 1000)
				if err := b.Put(ctx, "conc/shared", shared); err != nil {
					errs <- fmt.Errorf("worker %d Put shared: %w", w, err)
					return
				}
				got, err = b.Get(ctx, "conc/shared")
				if err != nil || len(got) != 1000 || !bytes.Equal(got, bytes.Repeat(got[:1], 1000)) {
					errs <- fmt.Errorf("worker %d Get shared: torn or failed (%d bytes, %v)", w, len(got), err)
					return
				}
				if i%2 == 0 {
					if err := b.Delete(ctx, key); err != nil {
						errs <- fmt.Errorf("worker %d Delete %s: %w", w, key, err)
						return
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	got := s.list(t, ctx, b, "conc/")
	if want := workers*rounds/2 + 1; len(got) != want {
		t.Fatalf("after the concurrent run List found %d keys, want %d", len(got), want)
	}
}

// callAll runs every Backend method once and returns the errors by name.
func callAll(ctx context.Context, b backends.Backend) map[string]error {
	out := map[string]error{}
	out["Put"] = b.Put(ctx, "call/k", []byte("v"))
	_, out["Get"] = b.Get(ctx, "call/k")
	_, out["GetRange"] = b.GetRange(ctx, "call/k", 0, 1)
	_, out["Stat"] = b.Stat(ctx, "call/k")
	out["Delete"] = b.Delete(ctx, "call/k")
	out["List"] = b.List(ctx, "call/", func(string, int64) error { return nil })
	_, out["Probe"] = b.Probe(ctx)
	return out
}

func (s *suite) testCanceled(t *testing.T) {
	b := s.open(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for name, err := range callAll(ctx, b) {
		s.expectKind(t, b, err, backends.ErrUnavailable, name+" with a canceled ctx")
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled ctx: %v does not match context.Canceled", name, err)
		}
	}
}

func (s *suite) checkCapacity(t *testing.T, c backends.Capacity, known bool) {
	t.Helper()
	if c.Known != known {
		t.Fatalf("Probe: capacity known %v, want %v (%+v)", c.Known, known, c)
	}
	if !known {
		if c.Used != 0 || c.Limit != 0 || c.Free != 0 {
			t.Fatalf("Probe: unknown capacity with figures %+v", c)
		}
		return
	}
	if c.Limit <= 0 || c.Used < 0 || c.Free < 0 || c.Free > c.Limit || c.Used > c.Limit {
		t.Fatalf("Probe: inconsistent capacity %+v", c)
	}
}

func (s *suite) testProbe(t *testing.T) {
	b := s.open(t)
	ctx := ctxT(t)
	r, err := b.Probe(ctx)
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if r.Latency <= 0 || r.Latency > time.Minute {
		t.Fatalf("Probe: latency %v", r.Latency)
	}
	s.checkCapacity(t, r.Capacity, s.f.CapacityKnown)
}

func (s *suite) testFull(t *testing.T) {
	const limit = 64 << 10
	b := s.f.OpenLimited(t, limit)
	t.Cleanup(func() { b.Close() })
	ctx := ctxT(t)
	probe := func(wantUsed int64) {
		t.Helper()
		r, err := b.Probe(ctx)
		if err != nil {
			t.Fatalf("Probe: %v", err)
		}
		s.checkCapacity(t, r.Capacity, true)
		c := r.Capacity
		if c.Limit != limit || c.Used != wantUsed || c.Free != limit-wantUsed {
			t.Fatalf("Probe of a %d-byte limited backend: %+v, want used %d free %d", limit, c, wantUsed, limit-wantUsed)
		}
	}
	probe(0)
	s.mustPut(t, ctx, b, "full/a", make([]byte, 40<<10))
	probe(40 << 10)
	err := b.Put(ctx, "full/b", make([]byte, 40<<10))
	s.expectKind(t, b, err, backends.ErrFull, "Put past the limit")
	_, err = b.Get(ctx, "full/b")
	s.expectKind(t, b, err, backends.ErrNotFound, "Get of a refused value")
	// Filling exactly to the limit is allowed; one byte more is not.
	s.mustPut(t, ctx, b, "full/c", make([]byte, 24<<10))
	probe(limit)
	err = b.Put(ctx, "full/d", []byte{1})
	s.expectKind(t, b, err, backends.ErrFull, "Put of one byte into a full backend")
	// An overwrite is credited with the old value's size.
	s.mustPut(t, ctx, b, "full/a", bytes.Repeat([]byte{1}, 30<<10))
	probe(54 << 10)
	s.mustPut(t, ctx, b, "full/d", make([]byte, 10<<10))
	probe(limit)
	// Deleting frees room.
	if err := b.Delete(ctx, "full/a"); err != nil {
		t.Fatal(err)
	}
	probe(34 << 10)
	s.mustPut(t, ctx, b, "full/b", make([]byte, 30<<10))
	probe(limit - 0)
}

func (s *suite) bounded(t *testing.T, b backends.Backend, timeout, bound time.Duration, what string) {
	t.Helper()
	for name, call := range map[string]func(context.Context) error{
		"Put":    func(ctx context.Context) error { return b.Put(ctx, "h/k", make([]byte, 1<<20)) },
		"Get":    func(ctx context.Context) error { _, err := b.Get(ctx, "h/k"); return err },
		"Stat":   func(ctx context.Context) error { _, err := b.Stat(ctx, "h/k"); return err },
		"Delete": func(ctx context.Context) error { return b.Delete(ctx, "h/k") },
		"List": func(ctx context.Context) error {
			return b.List(ctx, "h/", func(string, int64) error { return nil })
		},
		"Probe": func(ctx context.Context) error { _, err := b.Probe(ctx); return err },
	} {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		start := time.Now()
		err := call(ctx)
		took := time.Since(start)
		cancel()
		s.expectKind(t, b, err, backends.ErrUnavailable, what+" "+name)
		if took > bound {
			t.Errorf("%s %s took %v, want under %v", what, name, took, bound)
		}
	}
}

func (s *suite) testDeadline(t *testing.T) {
	b, err := s.f.OpenHanging(t)
	if err != nil {
		s.expectKind(t, nil, err, backends.ErrUnavailable, "opening a backend on a hanging server")
		return
	}
	t.Cleanup(func() { b.Close() })
	// The bound is generous for a noisy machine; a hang would blow it.
	s.bounded(t, b, 300*time.Millisecond, 15*time.Second, "hanging server:")
}

func (s *suite) testUnreachable(t *testing.T) {
	b, err := s.f.OpenUnreachable(t)
	if err != nil {
		s.expectKind(t, nil, err, backends.ErrUnavailable, "opening a backend on a stopped server")
		return
	}
	t.Cleanup(func() { b.Close() })
	s.bounded(t, b, 20*time.Second, 15*time.Second, "stopped server:")
}

func (s *suite) testOutage(t *testing.T) {
	b, stop, start := s.f.OpenWithOutage(t)
	t.Cleanup(func() { b.Close() })
	ctx := ctxT(t)
	s.mustPut(t, ctx, b, "out/k", []byte("before"))
	stop()
	for name, err := range callAll(ctx, b) {
		s.expectKind(t, b, err, backends.ErrUnavailable, name+" while the server is stopped")
	}
	start()
	// The first calls after a restart may still meet connections the
	// server closed; it must recover without a new Open.
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := b.Get(ctx, "out/k")
		if err == nil {
			if string(got) != "before" {
				t.Fatalf("after the restart Get returned %q", got)
			}
			break
		}
		if !errors.Is(err, backends.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("after the restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.mustPut(t, ctx, b, "out/k2", []byte("after"))
	s.mustGet(t, ctx, b, "out/k2", []byte("after"))
}

func (s *suite) testWrongCredentials(t *testing.T) {
	b, err := s.f.OpenWrongCredentials(t)
	if err != nil {
		s.expectKind(t, nil, err, backends.ErrAuth, "opening with wrong credentials")
		return
	}
	t.Cleanup(func() { b.Close() })
	ctx := ctxT(t)
	err = b.Put(ctx, "auth/k", []byte("v"))
	s.expectKind(t, b, err, backends.ErrAuth, "Put with wrong credentials")
	_, err = b.Get(ctx, "auth/k")
	s.expectKind(t, b, err, backends.ErrAuth, "Get with wrong credentials")
	_, err = b.Probe(ctx)
	s.expectKind(t, b, err, backends.ErrAuth, "Probe with wrong credentials")
}
