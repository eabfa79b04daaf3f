package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"golang.org/x/sys/unix"
)

func packFiles(t *testing.T, b *Backend) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(b.Path(), "packs", "*"+packSuffix))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// valueFiles counts the values stored in files of their own.
func valueFiles(t *testing.T, b *Backend) int {
	t.Helper()
	n := 0
	if err := b.walk(func(string, string, fs.FileInfo) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func reopen(t *testing.T, b *Backend) *Backend {
	t.Helper()
	b.Close()
	return openAgain(t, b)
}

func mustGetLocal(t *testing.T, b *Backend, key string, want []byte) {
	t.Helper()
	got, err := b.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get %s: %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get %s: %d bytes, want %d (equal prefix %d)", key, len(got), len(want), commonLen(got, want))
	}
}

func commonLen(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// TestPacksHoldSmallValues checks the layout: values of at most packs.max
// bytes share pack files (no file each), larger ones get their own file,
// and everything reads back, lists and stats the same after a reopen,
// which rebuilds the index from the packs alone.
func TestPacksHoldSmallValues(t *testing.T) {
	b := openT(t, 1<<30)
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(1, 2))
	want := map[string][]byte{}
	var total int64
	for i := range 40 {
		n := rnd.IntN(200 << 10)
		if i%10 == 0 {
			n = b.packs.max + 1 + rnd.IntN(1000) // a file
		}
		if i == 1 {
			n = 0
		}
		v := make([]byte, n)
		for j := range v {
			v[j] = byte(rnd.Uint32())
		}
		key := fmt.Sprintf("shards/%032x.%d", i, i%14)
		put := b.Put
		if i%2 == 0 {
			put = b.PutNoSync
		}
		if err := put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
		want[key] = v
		total += int64(n)
	}
	if err := b.Sync(ctx, keysOf(want)); err != nil {
		t.Fatal(err)
	}
	if n := valueFiles(t, b); n != 4 {
		t.Fatalf("%d values in files of their own, want the 4 larger than %d bytes", n, b.packs.max)
	}
	if p := packFiles(t, b); len(p) != 1 {
		t.Fatalf("pack files %v, want one", p)
	}
	check := func(b *Backend) {
		t.Helper()
		for k, v := range want {
			mustGetLocal(t, b, k, v)
			if n, err := b.Stat(ctx, k); err != nil || n != int64(len(v)) {
				t.Fatalf("Stat %s: %d, %v; want %d", k, n, err, len(v))
			}
			if len(v) > 10 {
				r, err := b.GetRange(ctx, k, 3, 7)
				if err != nil || !bytes.Equal(r, v[3:10]) {
					t.Fatalf("GetRange %s 3+7: %q, %v", k, r, err)
				}
			}
		}
		listed := map[string]int64{}
		err := b.List(ctx, "shards/", func(k string, n int64) error {
			if _, dup := listed[k]; dup {
				t.Fatalf("List named %s twice", k)
			}
			listed[k] = n
			return nil
		})
		if err != nil || len(listed) != len(want) {
			t.Fatalf("List: %d keys, %v; want %d", len(listed), err, len(want))
		}
		for k, n := range listed {
			if n != int64(len(want[k])) {
				t.Fatalf("List: %s is %d bytes, want %d", k, n, len(want[k]))
			}
		}
		r, err := b.Probe(ctx)
		if err != nil || r.Capacity.Used != total {
			t.Fatalf("Probe: used %d, %v; want %d (value bytes)", r.Capacity.Used, err, total)
		}
	}
	check(b)
	check(reopen(t, b))
}

func keysOf(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// allocated is the disk space a file takes (st_blocks), not its size.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestPackSpaceComesBack checks that overwrites and deletes give their
// records' space back to the file system at once, and that a full pack
// whose records are all gone is removed.
func TestPackSpaceComesBack(t *testing.T) {
	b := openT(t, 0)
	b.packs.limit = 1 << 20
	ctx := context.Background()
	v := bytes.Repeat([]byte{7}, 100<<10)
	for range 20 {
		if err := b.Put(ctx, "same", v); err != nil {
			t.Fatal(err)
		}
	}
	packs := packFiles(t, b)
	var space int64
	for _, p := range packs {
		space += allocated(t, p)
	}
	// 20 records of 104 KiB were written, over two packs of 1 MiB; one
	// record is live.
	if space > 2*recordSize(4, len(v)) {
		t.Fatalf("packs take %d bytes after 20 overwrites of one %d-byte value, want at most two records", space, len(v))
	}
	if len(packs) != 1 {
		t.Fatalf("packs %v after the overwrites, want only the one holding the live record", packs)
	}
	for i := range 30 {
		if err := b.Put(ctx, fmt.Sprintf("k%d", i), v); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(packFiles(t, b)); n < 3 {
		t.Fatalf("%d packs for 31 records of 104 KiB with 1 MiB packs, want at least 3", n)
	}
	for i := range 30 {
		if err := b.Delete(ctx, fmt.Sprintf("k%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Delete(ctx, "same"); err != nil {
		t.Fatal(err)
	}
	packs = packFiles(t, b)
	if len(packs) != 1 {
		t.Fatalf("packs %v after every value was deleted, want only the one appended to", packs)
	}
	if a := allocated(t, packs[0]); a != 0 {
		t.Fatalf("the last pack takes %d bytes with no value in it", a)
	}
	if _, err := b.Get(ctx, "k3"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Get of a deleted value: %v", err)
	}
	b = reopen(t, b)
	if _, err := b.Get(ctx, "same"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Get of a deleted value after reopen: %v", err)
	}
}

// writePack writes a pack file of the given records (nil: a 4 KiB block of
// zeros, as a crash can leave) for a backend at dir.
func writePack(t *testing.T, dir string, id int, recs ...[]byte) string {
	t.Helper()
	pd := filepath.Join(dir, "data", "packs")
	if err := os.MkdirAll(pd, 0o755); err != nil {
		t.Fatal(err)
	}
	var all []byte
	for _, r := range recs {
		if r == nil {
			r = make([]byte, recAlign)
		}
		all = append(all, r...)
	}
	p := filepath.Join(pd, fmt.Sprintf("%08x%s", id, packSuffix))
	if err := os.WriteFile(p, all, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func record(key string, v []byte, seq uint64) []byte {
	buf := make([]byte, recordSize(len(key), len(v)))
	encodeRecord(buf, key, v, seq)
	return buf
}

// torn is a record whose value did not all reach the disk.
func torn(key string, v []byte, seq uint64) []byte {
	r := record(key, v, seq)
	clear(r[recHeader+len(key)+len(v)/2 : recHeader+len(key)+len(v)])
	return r
}

// TestPackRecovery builds the packs a crash can leave and checks what Open
// makes of them: the later of two records of a key wins unless it is
// torn; a torn record of a key with no other reads as not found (never
// as wrong bytes); zeros and a torn record do not hide the records after
// them; records in a later pack beat earlier ones.
func TestPackRecovery(t *testing.T) {
	dir := t.TempDir()
	v := func(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }
	writePack(t, dir, 1,
		record("a", v('1', 5000), 1),
		record("b", v('1', 9000), 2),
		record("c", v('1', 100), 3),
		nil,
		record("a", v('2', 7000), 4), // a later, whole: wins
		torn("b", v('2', 9000), 5),   // b later, torn: the earlier wins
		torn("d", v('1', 20000), 6),  // d only torn
		nil, nil,
		record("e", v('1', 10), 7),
	)
	writePack(t, dir, 2, record("c", v('2', 300), 8))
	b, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	mustGetLocal(t, b, "a", v('2', 7000))
	mustGetLocal(t, b, "b", v('1', 9000))
	mustGetLocal(t, b, "c", v('2', 300))
	mustGetLocal(t, b, "e", v('1', 10))
	_, err = b.Get(context.Background(), "d")
	if !errors.Is(err, backends.ErrNotFound) || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("Get of a torn value: %v, want not found naming the checksum", err)
	}
	// New records get sequence numbers after every one found, so they
	// beat them after the next reopen too.
	if err := b.Put(context.Background(), "a", v('3', 10)); err != nil {
		t.Fatal(err)
	}
	b = reopen(t, b)
	mustGetLocal(t, b, "a", v('3', 10))
	mustGetLocal(t, b, "b", v('1', 9000))
}

// TestPackRemovedBehindTheBackend checks that a pack file removed while
// the backend is open (a wiped disk) takes its values with it, as files
// would, although the open descriptor could still read them, and that
// the next Put starts a new pack.
func TestPackRemovedBehindTheBackend(t *testing.T) {
	b := openT(t, 0)
	ctx := context.Background()
	if err := b.Put(ctx, "k", []byte("value")); err != nil {
		t.Fatal(err)
	}
	for _, p := range packFiles(t, b) {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Get(ctx, "k"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Get from a removed pack: %v", err)
	}
	if _, err := b.Stat(ctx, "k"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Stat in a removed pack: %v", err)
	}
	if err := b.List(ctx, "", func(k string, _ int64) error { return fmt.Errorf("listed %s", k) }); err != nil {
		t.Fatalf("List: %v", err)
	}
	if err := b.Put(ctx, "k2", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if len(packFiles(t, b)) != 1 {
		t.Fatal("no new pack after the old one was removed")
	}
	mustGetLocal(t, reopen(t, b), "k2", []byte("v2"))
}

// TestValueMovesBetweenFileAndPack checks that a key rewritten across the
// size limit (or first stored before packs) keeps one value: the new one,
// with the old one's space released.
func TestValueMovesBetweenFileAndPack(t *testing.T) {
	b := openT(t, 64<<20)
	ctx := context.Background()
	max := b.packs.max
	b.packs.max = -1
	if err := b.Put(ctx, "k", []byte("in a file")); err != nil {
		t.Fatal(err)
	}
	b.packs.max = max
	if err := b.Put(ctx, "k", []byte("in a pack")); err != nil {
		t.Fatal(err)
	}
	if n := valueFiles(t, b); n != 0 {
		t.Fatalf("%d value files after the value moved to a pack", n)
	}
	mustGetLocal(t, b, "k", []byte("in a pack"))
	big := bytes.Repeat([]byte{1}, max+1)
	if err := b.Put(ctx, "k", big); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.packs.get("k"); ok {
		t.Fatal("the packed value is still indexed after a larger one replaced it")
	}
	b = reopen(t, b)
	mustGetLocal(t, b, "k", big)
	r, err := b.Probe(ctx)
	if err != nil || r.Capacity.Used != int64(len(big)) {
		t.Fatalf("Probe: used %d, %v; want %d", r.Capacity.Used, err, len(big))
	}
}

// FuzzParseHeader feeds record headers read from disk to the parser: it
// must never panic, and a header it accepts must name a valid key and a
// value within the limit, and encode back to the same bytes.
func FuzzParseHeader(f *testing.F) {
	f.Add(record("shards/abc.3", []byte("value"), 9)[:recAlign])
	f.Add(make([]byte, recAlign))
	f.Add([]byte("HSP1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHeader(b, defaultPackMax)
		if err != nil {
			return
		}
		if backends.CheckKey(h.key) != nil || h.n > defaultPackMax {
			t.Fatalf("accepted a header with key %q and a %d-byte value", h.key, h.n)
		}
		re := make([]byte, recHeader+len(h.key))
		encodeHeader(re, h)
		if !bytes.Equal(re, b[:len(re)]) {
			t.Fatalf("header %x parsed as %+v encodes as %x", b[:len(re)], h, re)
		}
	})
}

// TestPacksSharedBetweenInstances opens one directory twice, as a tool
// beside the store or two processes sharing it do: each appends to packs
// of its own (never into the other's), sees the other's new values,
// overwrites and deletes, and the packs one instance emptied and left are
// removed by the other.
func TestPacksSharedBetweenInstances(t *testing.T) {
	dir := t.TempDir()
	open := func() *Backend {
		b, err := Open(specFor(dir))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	a, b := open(), open()
	ctx := context.Background()
	v := func(s string) []byte { return bytes.Repeat([]byte(s), 3000) }
	if err := a.Put(ctx, "k1", v("a1")); err != nil {
		t.Fatal(err)
	}
	mustGetLocal(t, b, "k1", v("a1"))
	if err := b.Put(ctx, "k2", v("b2")); err != nil {
		t.Fatal(err)
	}
	if p := packFiles(t, a); len(p) != 2 {
		t.Fatalf("packs %v: want one per instance", p)
	}
	mustGetLocal(t, a, "k2", v("b2"))
	if err := b.Put(ctx, "k1", v("b1")); err != nil {
		t.Fatal(err)
	}
	mustGetLocal(t, a, "k1", v("b1"))
	if err := a.Delete(ctx, "k2"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "k2"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Get of a value the other instance deleted: %v", err)
	}
	// Both write at once; nothing one writes may land on the other's.
	want := map[string][]byte{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, inst := range []*Backend{a, b} {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(i), 9))
			for j := range 150 {
				key := fmt.Sprintf("c/%d/%d", i, j)
				val := make([]byte, 1+rnd.IntN(40<<10))
				for x := range val {
					val[x] = byte(rnd.Uint32())
				}
				if err := inst.PutNoSync(ctx, key, val); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				want[key] = val
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	c := open()
	for k, val := range want {
		mustGetLocal(t, a, k, val)
		mustGetLocal(t, b, k, val)
		mustGetLocal(t, c, k, val)
	}
	listed := 0
	if err := a.List(ctx, "c/", func(string, int64) error { listed++; return nil }); err != nil || listed != len(want) {
		t.Fatalf("List on one instance: %d keys, %v; want the %d both wrote", listed, err, len(want))
	}
	// b leaves; a deletes everything b wrote, and b's pack goes.
	bPacks := len(packFiles(t, a))
	b.Close()
	c.Close()
	for k := range want {
		if strings.HasPrefix(k, "c/1/") {
			if err := a.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := a.Delete(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	if n := len(packFiles(t, a)); n >= bPacks {
		t.Fatalf("%d packs after every value of the instance that left was deleted, %d before", n, bPacks)
	}
	d := open()
	for k, val := range want {
		if strings.HasPrefix(k, "c/0/") {
			mustGetLocal(t, d, k, val)
		} else if _, err := d.Get(ctx, k); !errors.Is(err, backends.ErrNotFound) {
			t.Fatalf("Get %s after it was deleted: %v", k, err)
		}
	}
}

// BenchmarkOpenPacks measures what Open costs per packed value, from the
// index a Close left ("index") and by reading every record's header
// ("scan"), with the page cache warm (drop the caches first for cold
// figures), and the memory the index takes.
func BenchmarkOpenPacks(b *testing.B) {
	dir := b.TempDir()
	be, err := Open(specFor(dir))
	if err != nil {
		b.Fatal(err)
	}
	const n = 5000
	ctx := context.Background()
	v := make([]byte, 105<<10)
	for i := range n {
		if err := be.PutNoSync(ctx, fmt.Sprintf("shards/%032x.%d", i, i%14), v); err != nil {
			b.Fatal(err)
		}
	}
	be.Close()
	for _, mode := range []string{"index", "scan"} {
		b.Run(mode, func(b *testing.B) {
			var heap int64
			for range b.N {
				if mode == "scan" {
					b.StopTimer()
					os.Remove(filepath.Join(dir, "data", "packs", indexName))
					b.StartTimer()
				}
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				be, err := Open(specFor(dir))
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				heap = int64(after.HeapAlloc) - int64(before.HeapAlloc)
				if len(be.packs.index) != n || be.packs.fromIndex != (mode == "index") {
					b.Fatalf("%d values indexed (from the index: %v), want %d", len(be.packs.index), be.packs.fromIndex, n)
				}
				b.StopTimer()
				be.Close() // writes the index
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/value")
			b.ReportMetric(float64(heap)/n, "heap-bytes/value")
		})
	}
}

// TestPacksMadeAtOnce starts several instances on one new directory that
// all make their first pack at the same moment: none may take another's
// number, nor find another's new pack empty and remove it under its
// writer (two frontends starting together did).
func TestPacksMadeAtOnce(t *testing.T) {
	for round := range 30 {
		dir := t.TempDir()
		var insts []*Backend
		for range 3 {
			b, err := Open(specFor(dir))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			insts = append(insts, b)
		}
		ctx := context.Background()
		var wg sync.WaitGroup
		for i, b := range insts {
			wg.Go(func() {
				key := fmt.Sprintf("k%d", i)
				if err := b.PutNoSync(ctx, key, []byte(key)); err != nil {
					t.Errorf("round %d: %v", round, err)
					return
				}
				if err := b.Sync(ctx, []string{key}); err != nil {
					t.Errorf("round %d: sync: %v", round, err)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		check, err := Open(specFor(dir))
		if err != nil {
			t.Fatal(err)
		}
		for i := range insts {
			key := fmt.Sprintf("k%d", i)
			mustGetLocal(t, check, key, []byte(key))
		}
		check.Close()
	}
}

// TestAbandonedPackRemoved checks that Open removes a pack its maker left
// under its temporary name (it stopped before numbering it), and only an
// old one: a new one may be about to be locked by its maker.
func TestAbandonedPackRemoved(t *testing.T) {
	dir := t.TempDir()
	pd := filepath.Join(dir, "data", "packs")
	if err := os.MkdirAll(pd, 0o755); err != nil {
		t.Fatal(err)
	}
	old, fresh := filepath.Join(pd, tmpPrefix+"1"+packSuffix), filepath.Join(pd, tmpPrefix+"2"+packSuffix)
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, record("k", []byte("v"), 1), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-time.Hour)
	if err := os.Chtimes(old, long, long); err != nil {
		t.Fatal(err)
	}
	b, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("an hour-old abandoned pack is still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatalf("a pack just made was removed: %v", err)
	}
	if _, err := b.Get(context.Background(), "k"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("a record of an unnumbered pack was read: %v", err)
	}
}

// TestPackReadsWhileRewritten has many goroutines rewrite one key and
// read it back at once: a Put punches the record it replaced at once, so
// a reader often finds the record it looked up gone, and must then read
// a newer one, never fail nor return a mix.
func TestPackReadsWhileRewritten(t *testing.T) {
	b := deferredView{openT(t, 0)} // with sync rounds, as the store writes
	defer b.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for range 16 {
				if err := b.Put(ctx, "hot", bytes.Repeat([]byte{byte(w)}, 1000)); err != nil {
					t.Error(err)
					return
				}
				got, err := b.Get(ctx, "hot")
				if err != nil || len(got) != 1000 || !bytes.Equal(got, bytes.Repeat(got[:1], 1000)) {
					t.Errorf("Get of a key being rewritten: %d bytes, %v", len(got), err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestPacksComeBackWithTheirDirectory moves a backend's data directory
// away and back, as an unmounted and remounted volume does: meanwhile its
// values are not found and writes fail as unavailable; afterwards the
// values read again, and new writes work.
func TestPacksComeBackWithTheirDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	b, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	if err := b.Put(ctx, "k1", []byte("one")); err != nil {
		t.Fatal(err)
	}
	// The packs directory unchanged for an hour, and seen so: coming back
	// the same, it must still be looked at again.
	long := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "data", "packs"), long, long); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "nothing"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Rename(data, data+".away"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "k1"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Get while the directory is away: %v", err)
	}
	if err := b.Put(ctx, "k2", []byte("two")); !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("Put while the directory is away: %v", err)
	}
	if err := os.Rename(data+".away", data); err != nil {
		t.Fatal(err)
	}
	mustGetLocal(t, b, "k1", []byte("one"))
	if err := b.Put(ctx, "k2", []byte("two")); err != nil {
		t.Fatal(err)
	}
	mustGetLocal(t, reopen(t, b), "k2", []byte("two"))
}

// crashClose lets go of b as a killed process would: its descriptors and
// locks, without the checkpoint Close writes.
func crashClose(b *Backend) {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	s := b.packs
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.ckptWG.Wait()
	s.mu.Lock()
	s.closeAllLocked()
	s.mu.Unlock()
}

// openAgain opens the backend at b's path anew.
func openAgain(t *testing.T, b *Backend) *Backend {
	t.Helper()
	nb, err := Open(backends.Spec{Name: b.name, Kind: backends.KindLocal, Path: filepath.Dir(b.root), Quota: b.quota})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nb.Close() })
	return nb
}

// TestPackIndexAtClose checks the checkpoint Close leaves: the next Open
// reads it and no record header, sees exactly what a reading of the packs
// would, and a session that only reads leaves it as it is. After changes
// and a crash (no Close), Open takes the checkpoint and reads only the
// records appended since, and drops the ones deleted since.
func TestPackIndexAtClose(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(backends.Spec{Name: "loc", Kind: backends.KindLocal, Path: dir, Quota: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := map[string][]byte{}
	for i := range 60 {
		key := fmt.Sprintf("k%02d", i)
		v := bytes.Repeat([]byte{byte(i)}, 100+i*1000)
		if err := b.Put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
		want[key] = v
	}
	for i := 0; i < 60; i += 3 {
		key := fmt.Sprintf("k%02d", i)
		if err := b.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		delete(want, key)
	}
	want["k01"] = []byte("rewritten")
	if err := b.Put(ctx, "k01", want["k01"]); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, v := range want {
		total += int64(len(v))
	}
	index := filepath.Join(dir, "data", "packs", indexName)
	b = reopen(t, b)
	if !b.packs.fromIndex || b.packs.headersRead != 0 {
		t.Fatalf("Open after a Close: from the index %v, %d headers read; want the index alone", b.packs.fromIndex, b.packs.headersRead)
	}
	// A session that only reads leaves the index as it is.
	before, err := os.Stat(index)
	if err != nil {
		t.Fatal(err)
	}
	mustGetLocal(t, b, "k01", want["k01"])
	b = reopen(t, b)
	if !b.packs.fromIndex || b.packs.headersRead != 0 {
		t.Fatal("a session that only read lost the index")
	}
	if after, err := os.Stat(index); err != nil || !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("a session that only read rewrote the index: %v", err)
	}
	check := func(b *Backend) {
		t.Helper()
		for k, v := range want {
			mustGetLocal(t, b, k, v)
		}
		n := 0
		if err := b.List(ctx, "", func(k string, size int64) error {
			if int64(len(want[k])) != size {
				t.Fatalf("List: %s of %d bytes, want %d", k, size, len(want[k]))
			}
			n++
			return nil
		}); err != nil || n != len(want) {
			t.Fatalf("List: %d keys, %v; want %d", n, err, len(want))
		}
		if r, err := b.Probe(ctx); err != nil || r.Capacity.Used != total {
			t.Fatalf("Probe: used %d, %v; want %d", r.Capacity.Used, err, total)
		}
	}
	check(b)
	// Changes after the checkpoint, then a crash: new records number
	// after the old ones, and the next Open reads only them.
	want["new"] = []byte("first")
	if err := b.PutNoSync(ctx, "new", want["new"]); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, []string{"new"}); err != nil {
		t.Fatal(err)
	}
	total += int64(len(want["new"]))
	total += int64(len("again")) - int64(len(want["k02"]))
	want["k02"] = []byte("again")
	if err := b.Put(ctx, "k02", want["k02"]); err != nil {
		t.Fatal(err)
	}
	total -= int64(len(want["k05"]))
	delete(want, "k05")
	if err := b.Delete(ctx, "k05"); err != nil {
		t.Fatal(err)
	}
	crashClose(b)
	crashed := openAgain(t, b)
	if !crashed.packs.fromIndex || crashed.packs.headersRead != 2 {
		t.Fatalf("Open after a crash: from the index %v, %d headers read; want the index and the 2 records appended since",
			crashed.packs.fromIndex, crashed.packs.headersRead)
	}
	if _, err := crashed.Get(ctx, "k05"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Get of a key deleted after the checkpoint: %v", err)
	}
	check(crashed)
	check(reopen(t, crashed))
}

// TestPackCheckpointWhileOpen checks that an open backend writes
// checkpoints as it appends, so a crash after many appends costs the
// next Open only the records since the last.
func TestPackCheckpointWhileOpen(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	b.packs.mu.Lock()
	b.packs.ckptMin = 8
	b.packs.mu.Unlock()
	ctx := context.Background()
	want := map[string][]byte{}
	for i := range 100 {
		key := fmt.Sprintf("k%03d", i)
		want[key] = bytes.Repeat([]byte{byte(i), 'v'}, 50+i*37)
		if err := b.Put(ctx, key, want[key]); err != nil {
			t.Fatal(err)
		}
		if i%7 == 3 {
			old := fmt.Sprintf("k%03d", i-3)
			if err := b.Delete(ctx, old); err != nil {
				t.Fatal(err)
			}
			delete(want, old)
		}
	}
	crashClose(b)
	nb := openAgain(t, b)
	// Checkpoints come every 8 appends, one at a time: one running when
	// 8 more were appended leaves up to about 16.
	if !nb.packs.fromIndex || nb.packs.headersRead > 16 {
		t.Fatalf("Open after a crash: from a checkpoint %v, %d headers read of 100 records; want at most 16",
			nb.packs.fromIndex, nb.packs.headersRead)
	}
	n := 0
	nb.List(ctx, "", func(string, int64) error { n++; return nil })
	if n != len(want) {
		t.Fatalf("List: %d keys, want %d", n, len(want))
	}
	for k, v := range want {
		mustGetLocal(t, nb, k, v)
	}
}

// TestPackIndexNotTrusted checks what Open must not take from a
// checkpoint, and what it must read beyond it: a pack that grew since (its
// new records), a damaged index, records another instance punched after
// the index was taken, a pack made again under the same number, and a
// pack cut short.
func TestPackIndexNotTrusted(t *testing.T) {
	ctx := context.Background()
	fill := func(t *testing.T) (string, *Backend) {
		dir := t.TempDir()
		b, err := Open(specFor(dir))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			if err := b.Put(ctx, fmt.Sprintf("k%d", i), []byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
		return dir, b
	}
	index := func(dir string) string { return filepath.Join(dir, "data", "packs", indexName) }
	notFound := func(t *testing.T, b *Backend, keys ...string) {
		t.Helper()
		for _, k := range keys {
			if _, err := b.Get(ctx, k); !errors.Is(err, backends.ErrNotFound) {
				t.Fatalf("Get %s: %v, want not found", k, err)
			}
		}
	}
	t.Run("pack grew", func(t *testing.T) {
		_, b := fill(t)
		b.Close()
		p := packFiles(t, b)[0]
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(record("late", []byte("appended after the index"), 1<<62))
		f.Write(record("k3", []byte("k3 again"), 1<<62+1))
		f.Close()
		nb := openAgain(t, b)
		if !nb.packs.fromIndex || nb.packs.headersRead != 2 {
			t.Fatalf("from the index %v, %d headers read; want the index and the 2 records after it", nb.packs.fromIndex, nb.packs.headersRead)
		}
		mustGetLocal(t, nb, "late", []byte("appended after the index"))
		mustGetLocal(t, nb, "k3", []byte("k3 again"))
		mustGetLocal(t, nb, "k4", []byte{4})
	})
	t.Run("damaged", func(t *testing.T) {
		dir, b := fill(t)
		b.Close()
		raw, err := os.ReadFile(index(dir))
		if err != nil {
			t.Fatal(err)
		}
		raw[len(raw)/2] ^= 1
		if err := os.WriteFile(index(dir), raw, 0o644); err != nil {
			t.Fatal(err)
		}
		nb := openAgain(t, b)
		if nb.packs.fromIndex {
			t.Fatal("a damaged index was read")
		}
		mustGetLocal(t, nb, "k7", []byte{7})
	})
	t.Run("another instance deleted", func(t *testing.T) {
		dir, a := fill(t)
		b, err := Open(specFor(dir))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Delete(ctx, "k4"); err != nil {
			t.Fatal(err)
		}
		c, err := Open(specFor(dir))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, "k5"); err != nil { // a and b still index k5
			t.Fatal(err)
		}
		c.Close()
		crashClose(b)
		a.Close() // the last index written: a's, which still names k4 and k5
		nb := openAgain(t, a)
		if !nb.packs.fromIndex {
			t.Fatal("no index left")
		}
		n := 0
		nb.List(ctx, "", func(string, int64) error { n++; return nil })
		if n != 8 {
			t.Fatalf("List: %d keys, want 8", n)
		}
		notFound(t, nb, "k4", "k5")
	})
	t.Run("pack made again", func(t *testing.T) {
		dir, b := fill(t)
		b.Close()
		p := packFiles(t, b)
		if len(p) != 1 {
			t.Fatalf("%d packs, want 1", len(p))
		}
		id, _ := packID(filepath.Base(p[0]))
		os.Remove(p[0])
		// Another file under the same number, with a record where the
		// index has k0's and as long as the old pack.
		writePack(t, dir, int(id), record("other", []byte{0}, 1), record("more", bytes.Repeat([]byte{1}, 50000), 2))
		nb := openAgain(t, b)
		if nb.packs.fromIndex {
			t.Fatal("the index's records were taken for another file under the pack's number")
		}
		mustGetLocal(t, nb, "other", []byte{0})
		notFound(t, nb, "k0", "k9")
	})
	t.Run("pack cut short", func(t *testing.T) {
		_, b := fill(t)
		b.Close()
		p := packFiles(t, b)[0]
		if err := os.Truncate(p, 5*recAlign); err != nil {
			t.Fatal(err)
		}
		nb := openAgain(t, b)
		if nb.packs.fromIndex {
			t.Fatal("the index's records were taken for a pack shorter than it says")
		}
		for i := range 5 {
			mustGetLocal(t, nb, fmt.Sprintf("k%d", i), []byte{byte(i)})
		}
		notFound(t, nb, "k5", "k9")
	})
}

// FuzzReadIndex feeds pack indexes read from disk to the parser: it must
// never panic, and what it accepts must name valid keys inside their
// packs.
func FuzzReadIndex(f *testing.F) {
	p := &pack{id: 3}
	var good bytes.Buffer
	writeIndex(&good, map[uint32]indexPack{3: {upto: 1 << 20, ident: packIdent{ino: 12, btimeSec: 1796293996, btimeNsec: 5}}}, 99, []indexEntry{
		{"shards/a.1", packLoc{p: p, off: 4096, keyLen: 10, n: 100, crc: 7, seq: 5}},
	})
	f.Add(good.Bytes())
	f.Add([]byte(indexMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ix, err := readIndex(bytes.NewReader(b), defaultPackMax)
		if err != nil {
			return
		}
		for key, r := range ix.records {
			ip, ok := ix.packs[r.pack]
			if backends.CheckKey(key) != nil || !ok || r.loc.off+r.loc.size() > alignUp(ip.upto)+recAlign || r.loc.seq > ix.seq {
				t.Fatalf("accepted record %q %+v in packs %v", key, r, ix.packs)
			}
		}
	})
}

// TestPackRecordOfRemovedPackNeverWins: an instance still indexes keys of
// a pack removed behind it (a wiped disk) until it looks them up. A record
// of such a key found in a pack made since, by another instance, must win
// over the removed one whatever their sequence numbers say: those are
// clock readings, and a clock set back (or another machine's, on a shared
// file system) gives the new record the lower one. Taking the removed
// record for the later, the instance punched the only copy of the value.
func TestPackRecordOfRemovedPackNeverWins(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	writer, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := writer.Put(ctx, "k", []byte("before the wipe")); err != nil {
		t.Fatal(err)
	}
	old := packFiles(t, writer)
	writer.Close()
	reader, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	mustGetLocal(t, reader, "k", []byte("before the wipe"))
	// The disk is wiped; the key is written again by an instance whose
	// clock is behind (sequence number 1).
	for _, p := range old {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	writePack(t, dir, 9, record("k", []byte("after the wipe"), 1))
	// Another key's miss makes the reader read the new pack while it
	// still indexes k in the removed one.
	if _, err := reader.Stat(ctx, "other"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Stat of a key never written: %v", err)
	}
	mustGetLocal(t, reader, "k", []byte("after the wipe"))
	fresh, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	mustGetLocal(t, fresh, "k", []byte("after the wipe"))
}
