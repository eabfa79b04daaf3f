package fuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// The core tests drive the filesystem without a mount, over in-memory
// metadata and blocks, so faults and crashes are easy to stage.

const testBS = 64 << 10

type coreEnv struct {
	t     *testing.T
	kv    *memKV
	blobs *memBlobs
	opts  Options
	boot  []byte
}

func newCoreEnv(t *testing.T) *coreEnv {
	t.Helper()
	return &coreEnv{
		t: t, kv: newMemKV(), blobs: newMemBlobs(), boot: []byte("boot-1"),
		opts: Options{
			CacheDir:       t.TempDir(),
			BlockSize:      testBS,
			CacheSize:      64 * testBS,
			WritebackDelay: time.Hour, // only fsync, full blocks and pressure upload
			OpTimeout:      10 * time.Second,
			Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		},
	}
}

// open starts a filesystem on the env; it is shut down at test end unless
// the test abandons it (a crash).
func (e *coreEnv) open() *filesystem {
	e.t.Helper()
	f, err := newFilesystem(e.kv, e.blobs, e.opts)
	if err != nil {
		e.t.Fatal(err)
	}
	f.bootID = func() []byte { return e.boot }
	if err := f.start(context.Background(), 0, 0); err != nil {
		e.t.Fatal(err)
	}
	return f
}

func shutdown(t *testing.T, f *filesystem) {
	t.Helper()
	if err := f.shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// crash stops f's background work without flushing, as a killed process
// would leave things: the cache files and journal stay as they are.
func crash(f *filesystem) {
	f.stopBg()
	f.up.wait()
	f.bgWG.Wait()
	f.mu.Lock()
	for _, st := range f.inodes {
		for _, b := range st.blocks {
			b.f.Close()
		}
	}
	f.mu.Unlock()
	f.journal.mu.Lock()
	f.journal.f.Close()
	f.journal.mu.Unlock()
}

func newFile(t *testing.T, f *filesystem, parent uint64, name string) *inodeState {
	t.Helper()
	st, err := f.create(parent, name, inode{Mode: syscall.S_IFREG | 0o644, Nlink: 1, BlockSize: uint32(f.opts.BlockSize)})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return st
}

func lookupT(t *testing.T, f *filesystem, parent uint64, name string) *inodeState {
	t.Helper()
	st, err := f.lookup(context.Background(), parent, name)
	if err != nil {
		t.Fatalf("lookup %s: %v", name, err)
	}
	return st
}

func writeT(t *testing.T, f *filesystem, st *inodeState, data []byte, off int64) {
	t.Helper()
	n, err := f.write(st, data, off)
	if err != nil || n != len(data) {
		t.Fatalf("write %d bytes at %d: n=%d err=%v", len(data), off, n, err)
	}
}

// setattrT applies in to st and fails the test on an error.
func setattrT(t *testing.T, f *filesystem, st *inodeState, in *gofuse.SetAttrIn) {
	t.Helper()
	if err := f.setattr(st, in); err != nil {
		t.Fatalf("setattr (valid %#x): %v", in.Valid, err)
	}
}

// truncateT truncates st to size as truncate(2) does.
func truncateT(t *testing.T, f *filesystem, st *inodeState, size uint64) {
	t.Helper()
	in := &gofuse.SetAttrIn{}
	in.Valid, in.Size = gofuse.FATTR_SIZE, size
	setattrT(t, f, st, in)
}

func readAll(t *testing.T, f *filesystem, st *inodeState) []byte {
	t.Helper()
	st.mu.Lock()
	size := st.rec.Size
	st.mu.Unlock()
	buf := make([]byte, size)
	// Read in odd-sized pieces so block edges fall inside reads.
	for off := 0; off < len(buf); {
		end := min(off+50_000, len(buf))
		n, err := f.read(st, buf[off:end], int64(off))
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if n != end-off {
			t.Fatalf("read at %d: %d bytes, want %d", off, n, end-off)
		}
		off = end
	}
	return buf
}

func sizeOf(st *inodeState) uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.rec.Size
}

func TestCoreRandomWritesMatchModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, seed))
	e := newCoreEnv(t)
	f := e.open()
	st := newFile(t, f, rootIno, "model")
	var model []byte
	for i := range 200 {
		off := rnd.IntN(12 * testBS)
		n := 1 + rnd.IntN(3*testBS)
		if i%7 == 0 {
			n = 1 + rnd.IntN(100)
		}
		data := make([]byte, n)
		for j := range data {
			data[j] = byte(rnd.Uint32())
		}
		writeT(t, f, st, data, int64(off))
		if off+n > len(model) {
			model = append(model, make([]byte, off+n-len(model))...)
		}
		copy(model[off:], data)
		if i%50 == 49 {
			if err := f.flush(st); err != nil {
				t.Fatalf("flush: %v", err)
			}
		}
	}
	if got := readAll(t, f, st); !bytes.Equal(got, model) {
		t.Fatalf("content differs from model (seed %d)", seed)
	}
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	f.put(st)
	shutdown(t, f)

	// A fresh mount with an empty cache reads everything from the store.
	e.opts.CacheDir = t.TempDir()
	f2 := e.open()
	defer shutdown(t, f2)
	st2 := lookupT(t, f2, rootIno, "model")
	defer f2.put(st2)
	if got := readAll(t, f2, st2); !bytes.Equal(got, model) {
		t.Fatalf("content after remount differs (seed %d)", seed)
	}
	// One object per block, none past the end.
	if got, want := len(e.blobs.names(f2.inodePrefix(st2.ino))), int(blocksFor(uint64(len(model)), testBS)); got > want {
		t.Fatalf("%d block objects for %d blocks", got, want)
	}
}

func TestCoreSmallWriteRewritesOneBlock(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "f")
	defer f.put(st)
	writeT(t, f, st, bytes.Repeat([]byte("a"), 8*testBS), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	before := e.blobs.puts.Load()
	writeT(t, f, st, []byte("xyz"), 3*testBS+10)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	if got := e.blobs.puts.Load() - before; got != 1 {
		t.Fatalf("a 3-byte write uploaded %d blocks, want 1", got)
	}
	obj, _ := e.blobs.get(f.blockName(blockKey{st.ino, 3}))
	if !bytes.Equal(obj[10:13], []byte("xyz")) || obj[9] != 'a' || len(obj) != testBS {
		t.Fatalf("block 3 was not rewritten in place")
	}
}

func TestCoreTruncateAndSparse(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	st := newFile(t, f, rootIno, "t")
	full := bytes.Repeat([]byte{7}, 3*testBS+testBS/2)
	writeT(t, f, st, full, 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	// Shrink into block 1: blocks 2 and 3 are deleted, block 1 is cut.
	trunc := func(size uint64) { t.Helper(); truncateT(t, f, st, size) }
	trunc(testBS + 100)
	if names := e.blobs.names(f.inodePrefix(st.ino)); len(names) != 2 {
		t.Fatalf("after truncate: objects %v, want blocks 0 and 1", names)
	}
	// Grow again: the bytes past the cut must read as zeros, not the old 7s.
	trunc(4 * testBS)
	got := readAll(t, f, st)
	want := append(bytes.Repeat([]byte{7}, testBS+100), make([]byte, 3*testBS-100)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("after shrink and grow the tail is not zero")
	}
	// A write far past the end leaves a hole with no objects.
	writeT(t, f, st, []byte("end"), 100*testBS)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	for idx := uint64(4); idx < 100; idx++ {
		if _, ok := e.blobs.get(f.blockName(blockKey{st.ino, idx})); ok {
			t.Fatalf("hole block %d has an object", idx)
		}
	}
	f.put(st)
	shutdown(t, f)
	e.opts.CacheDir = t.TempDir()
	f2 := e.open()
	defer shutdown(t, f2)
	st2 := lookupT(t, f2, rootIno, "t")
	defer f2.put(st2)
	if sizeOf(st2) != 100*testBS+3 {
		t.Fatalf("size %d after remount", sizeOf(st2))
	}
	got = readAll(t, f2, st2)
	if !bytes.Equal(got[:len(want)], want) || !bytes.Equal(got[100*testBS:], []byte("end")) ||
		!bytes.Equal(got[len(want):100*testBS], make([]byte, 100*testBS-len(want))) {
		t.Fatalf("content after remount is wrong")
	}
}

// An object past the committed size, uploaded before a crash whose size
// never reached the metastore, must not reappear when the file grows.
func TestCoreStaleObjectsPastEndAreTrimmed(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	st := newFile(t, f, rootIno, "s")
	writeT(t, f, st, []byte("committed"), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	// Fill block 2 (uploaded at once, being full) but never fsync.
	writeT(t, f, st, bytes.Repeat([]byte{9}, testBS), 2*testBS)
	if !waitFor(5*time.Second, func() bool { _, ok := e.blobs.get(f.blockName(blockKey{st.ino, 2})); return ok }) {
		t.Fatal("full block was not uploaded")
	}
	crash(f)
	e.boot = []byte("boot-2") // the machine restarted: the cache is dropped
	e.opts.CacheDir = t.TempDir()
	f2 := e.open()
	defer shutdown(t, f2)
	st2 := lookupT(t, f2, rootIno, "s")
	defer f2.put(st2)
	if sizeOf(st2) != 9 {
		t.Fatalf("size %d, want the committed 9", sizeOf(st2))
	}
	truncateT(t, f2, st2, 3*testBS)
	got := readAll(t, f2, st2)
	if !bytes.Equal(got[:9], []byte("committed")) || !bytes.Equal(got[9:], make([]byte, 3*testBS-9)) {
		t.Fatal("stale data past the committed end reappeared")
	}
}

func TestCoreReplayAfterCrash(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	st := newFile(t, f, rootIno, "r")
	synced := bytes.Repeat([]byte("s"), testBS/2)
	writeT(t, f, st, synced, 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	unsynced := bytes.Repeat([]byte("u"), testBS+500)
	writeT(t, f, st, unsynced, testBS/2)
	ino := st.ino
	crash(f)
	puts := e.blobs.puts.Load()

	// Same boot: the cache is replayed and uploaded.
	f2 := e.open()
	st2 := lookupT(t, f2, rootIno, "r")
	if st2.ino != ino {
		t.Fatal("inode changed")
	}
	want := append(append([]byte{}, synced...), unsynced...)
	if got := readAll(t, f2, st2); !bytes.Equal(got, want) {
		t.Fatalf("replayed content differs: %d bytes, want %d", len(got), len(want))
	}
	if err := f2.flush(st2); err != nil {
		t.Fatal(err)
	}
	if e.blobs.puts.Load() == puts {
		t.Fatal("replay uploaded nothing")
	}
	f2.put(st2)
	shutdown(t, f2)
	if blocks, sizes := f2.journal.pending(); blocks != 0 || sizes != 0 {
		t.Fatalf("journal still holds %d blocks, %d sizes after a clean shutdown", blocks, sizes)
	}
	e.opts.CacheDir = t.TempDir()
	f3 := e.open()
	defer shutdown(t, f3)
	st3 := lookupT(t, f3, rootIno, "r")
	defer f3.put(st3)
	if got := readAll(t, f3, st3); !bytes.Equal(got, want) {
		t.Fatal("content after replay and remount differs")
	}
}

func TestCoreMachineRestartDropsUnsyncedOnly(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	st := newFile(t, f, rootIno, "m")
	synced := bytes.Repeat([]byte("s"), 2*testBS)
	writeT(t, f, st, synced, 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	// An overwrite and an append, never fsynced. The overwrite may have
	// been uploaded before the crash (a queued upload of the block can
	// pick it up); the append's size was never committed.
	writeT(t, f, st, []byte("lost"), 10)
	writeT(t, f, st, []byte("lost"), 2*testBS)
	crash(f)
	e.boot = []byte("boot-2")
	f2 := e.open()
	defer shutdown(t, f2)
	st2 := lookupT(t, f2, rootIno, "m")
	defer f2.put(st2)
	got := readAll(t, f2, st2)
	overwritten := bytes.Clone(synced)
	copy(overwritten[10:], "lost")
	if !bytes.Equal(got, synced) && !bytes.Equal(got, overwritten) {
		t.Fatalf("fsynced data changed after a machine restart (%d bytes, want %d)", len(got), len(synced))
	}
}

func TestCoreTornJournalRecordEndsReplay(t *testing.T) {
	dir := t.TempDir()
	j, err := openJournal(dir, newJournalState())
	if err != nil {
		t.Fatal(err)
	}
	j.dirty(5, 1, 10)
	j.setSize(5, 12345)
	j.dirty(5, 2, 11)
	j.clean(5, 1, 10)
	j.f.Close()
	path := filepath.Join(dir, "journal")
	raw, _ := os.ReadFile(path)
	// Tear the last record.
	os.WriteFile(path, raw[:len(raw)-5], 0o600)
	st, n, err := readJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("read %d records, want 3", n)
	}
	if st.dirty[blockKey{5, 1}] != 10 || st.dirty[blockKey{5, 2}] != 11 || st.sizes[5] != 12345 {
		t.Fatalf("state %+v", st)
	}
	// Flip a bit in record 2: replay stops before it.
	raw[recLen+20] ^= 1
	os.WriteFile(path, raw, 0o600)
	st, n, _ = readJournal(path)
	if n != 1 || len(st.sizes) != 0 {
		t.Fatalf("corrupt record accepted: n=%d", n)
	}
}

func TestCoreUploadFailureFailsFsyncThenRecovers(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "u")
	defer f.put(st)
	bad := fmt.Errorf("insufficient backends")
	e.blobs.putErr.Store(&bad)
	writeT(t, f, st, []byte("data"), 0)
	start := time.Now()
	if err := f.flush(st); err == nil {
		t.Fatal("fsync succeeded while uploads fail")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("failing fsync took %v", d)
	}
	e.blobs.putErr.Store(nil)
	// The data stayed in the cache and is retried.
	if !waitFor(10*time.Second, func() bool { return f.flush(st) == nil }) {
		t.Fatal("fsync never succeeded after the store recovered")
	}
	if v, ok := e.blobs.get(f.blockName(blockKey{st.ino, 0})); !ok || string(v) != "data" {
		t.Fatalf("stored block %q", v)
	}
}

func TestCoreStuckBackendTimesOut(t *testing.T) {
	e := newCoreEnv(t)
	e.opts.OpTimeout = 300 * time.Millisecond
	f := e.open()
	st := newFile(t, f, rootIno, "stuck")
	writeT(t, f, st, bytes.Repeat([]byte("x"), 2*testBS), 0)
	// 300ms is short for a loaded machine even when the backend answers:
	// an fsync that ran out of time is retried, as a user would.
	if !waitFor(10*time.Second, func() bool { return f.flush(st) == nil }) {
		t.Fatal("fsync never succeeded with the backend answering")
	}
	f.rcache = newReadCache(1 << 20) // forget what the upload cached
	e.blobs.stuck.Store(true)
	writeT(t, f, st, bytes.Repeat([]byte("y"), testBS), 0) // a whole block: no read needed
	start := time.Now()
	if err := f.flush(st); err == nil {
		t.Fatal("fsync succeeded against a stuck backend")
	}
	if _, err := f.read(st, make([]byte, 10), testBS); err == nil {
		t.Fatal("read of an uncached block succeeded against a stuck backend")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stuck calls took %v; the timeout is 300ms", d)
	}
	e.blobs.stuck.Store(false)
	if !waitFor(10*time.Second, func() bool { return f.flush(st) == nil }) {
		t.Fatal("fsync never succeeded after the backend came back")
	}
	f.put(st)
	shutdown(t, f)
}

func TestCoreCacheFullWritersWaitForUploads(t *testing.T) {
	e := newCoreEnv(t)
	e.opts.CacheSize = 4 * testBS
	e.blobs.putWait = make(chan struct{})
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "big")
	defer f.put(st)
	done := make(chan error, 1)
	go func() {
		for i := range 40 {
			if _, err := f.write(st, bytes.Repeat([]byte{byte(i)}, testBS), int64(i)*testBS); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	// Uploads are held: the writer must stall with the cache full.
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("40 blocks written into a 4-block cache with uploads stalled (err %v)", err)
	default:
	}
	if used := f.budget.inUse(); used > e.opts.CacheSize+2*testBS {
		t.Fatalf("cache holds %d bytes, limit %d", used, e.opts.CacheSize)
	}
	close(e.blobs.putWait) // let uploads through
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, f, st)
	for i := range 40 {
		if got[i*testBS] != byte(i) || got[(i+1)*testBS-1] != byte(i) {
			t.Fatalf("block %d wrong", i)
		}
	}
}

func TestCoreUnlinkWhileOpenThenReap(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "o")
	f.open(st)
	writeT(t, f, st, bytes.Repeat([]byte("o"), 3*testBS), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	if err := f.unlinkEntry(rootIno, "o", false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.lookup(context.Background(), rootIno, "o"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("lookup after unlink: %v", err)
	}
	if got := readAll(t, f, st); len(got) != 3*testBS {
		t.Fatal("open file lost its data at unlink")
	}
	f.release(st)
	prefix := f.inodePrefix(st.ino)
	if !waitFor(5*time.Second, func() bool { return len(e.blobs.names(prefix)) == 0 }) {
		t.Fatalf("blocks of the deleted file remain: %v", e.blobs.names(prefix))
	}
	if !waitFor(5*time.Second, func() bool {
		_, err := e.kv.Get(context.Background(), inodeKey(st.ino))
		return errors.Is(err, errNoKey)
	}) {
		t.Fatal("inode record of the deleted file remains")
	}
	f.put(st)
}

func TestCoreOrphanReapedAtNextMount(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	st := newFile(t, f, rootIno, "o")
	f.open(st)
	writeT(t, f, st, []byte("data"), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	if err := f.unlinkEntry(rootIno, "o", false); err != nil {
		t.Fatal(err)
	}
	crash(f) // dies with the file still open
	f2 := e.open()
	defer shutdown(t, f2)
	if !waitFor(5*time.Second, func() bool {
		_, err := e.kv.Get(context.Background(), orphanKey(st.ino))
		return errors.Is(err, errNoKey) && len(e.blobs.names(f2.inodePrefix(st.ino))) == 0
	}) {
		t.Fatal("orphan not reclaimed at the next mount")
	}
}

func TestCoreNamespace(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	ctx := context.Background()
	mkdir := func(parent uint64, name string) *inodeState {
		t.Helper()
		st, err := f.create(parent, name, inode{Mode: syscall.S_IFDIR | 0o755, Nlink: 2})
		if err != nil {
			t.Fatalf("mkdir %s: %v", name, err)
		}
		return st
	}
	nlink := func(st *inodeState) uint32 {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.rec.Nlink
	}
	root, _ := f.get(ctx, rootIno)
	a, b := mkdir(rootIno, "a"), mkdir(rootIno, "b")
	if nlink(root) != 4 {
		t.Fatalf("root nlink %d, want 4", nlink(root))
	}
	x := newFile(t, f, a.ino, "x")
	y := newFile(t, f, b.ino, "y")
	writeT(t, f, y, []byte("old y"), 0)
	if _, err := f.create(a.ino, "x", inode{Mode: syscall.S_IFREG, Nlink: 1, BlockSize: testBS}); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("create over existing: %v", err)
	}
	// Rename across directories, replacing the target; its data goes.
	if err := f.rename(a.ino, "x", b.ino, "y", 0); err != nil {
		t.Fatal(err)
	}
	if got := lookupT(t, f, b.ino, "y"); got.ino != x.ino {
		t.Fatal("b/y is not the renamed file")
	}
	if nlink(y) != 0 {
		t.Fatal("replaced target keeps links")
	}
	if err := f.rename(b.ino, "y", a.ino, "z", renameNoReplace); err != nil {
		t.Fatal(err)
	}
	newFile(t, f, b.ino, "w")
	if err := f.rename(a.ino, "z", b.ino, "w", renameNoReplace); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("NOREPLACE over existing: %v", err)
	}
	if err := f.rename(a.ino, "z", b.ino, "w", renameExchange); err != nil {
		t.Fatal(err)
	}
	if got := lookupT(t, f, b.ino, "w"); got.ino != x.ino {
		t.Fatal("exchange did not swap")
	}
	// Directories: rename a non-empty directory over an empty one, rmdir.
	c := mkdir(a.ino, "c")
	newFile(t, f, c.ino, "inner")
	if err := f.unlinkEntry(a.ino, "c", true); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir non-empty: %v", err)
	}
	mkdir(b.ino, "empty")
	if err := f.rename(a.ino, "c", b.ino, "empty", 0); err != nil {
		t.Fatal(err)
	}
	if nlink(a) != 2 || nlink(b) != 3 {
		t.Fatalf("nlink a=%d b=%d, want 2 and 3", nlink(a), nlink(b))
	}
	if err := f.rename(b.ino, "w", b.ino, "empty", 0); !errors.Is(err, syscall.EISDIR) {
		t.Fatalf("file over dir: %v", err)
	}
	if err := f.unlinkEntry(b.ino, "empty", false); !errors.Is(err, syscall.EISDIR) {
		t.Fatalf("unlink of a dir: %v", err)
	}
	// Hard links.
	if _, err := f.link(b.ino, "w2", x.ino); err != nil {
		t.Fatal(err)
	}
	if nlink(x) != 2 {
		t.Fatalf("nlink after link %d", nlink(x))
	}
	ents, err := f.readdir(b.ino)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	if fmt.Sprint(names) != "[empty w w2]" {
		t.Fatalf("readdir b: %v", names)
	}
	// Everything survives a remount from the metastore alone.
	f.put(root)
	shutdown(t, f)
	e.opts.CacheDir = t.TempDir()
	f2 := e.open()
	defer shutdown(t, f2)
	b2 := lookupT(t, f2, rootIno, "b")
	if got := lookupT(t, f2, b2.ino, "w2"); got.ino != x.ino {
		t.Fatal("hard link lost")
	}
	if inner := lookupT(t, f2, lookupT(t, f2, b2.ino, "empty").ino, "inner"); inner == nil {
		t.Fatal("moved directory lost its child")
	}
}

func TestCBlockCover(t *testing.T) {
	b := &cblock{}
	steps := []struct {
		lo, hi int64
		full   bool
	}{{100, 200, false}, {300, 400, false}, {0, 100, false}, {200, 300, false}, {400, 999, false}, {990, 1000, true}, {0, 1000, false}}
	for i, s := range steps {
		if got := b.cover(s.lo, s.hi, 1000); got != s.full {
			t.Fatalf("step %d [%d,%d): full=%v, want %v (ranges %v)", i, s.lo, s.hi, got, s.full, b.written)
		}
	}
	// Too scattered to track: never reported full.
	b = &cblock{}
	for i := range int64(maxWrittenRanges + 1) {
		b.cover(i*10, i*10+5, 1000)
	}
	if b.cover(0, 1000, 1000) {
		t.Fatal("untracked block reported full")
	}
}

// A block that leaves the cache (truncated away, or its file deleted)
// while an upload reads it must not fail that upload, nor an fsync
// waiting for the file: the block's file stays open until the upload
// ends. (Closing it at once made shutdown fail at random with "file
// already closed" when a deleted file's reclaim met its final flush.)
func TestCoreBlockRemovedDuringUpload(t *testing.T) {
	for _, how := range []string{"truncate", "unlink"} {
		t.Run(how, func(t *testing.T) {
			e := newCoreEnv(t)
			f := e.open()
			defer shutdown(t, f)
			st := newFile(t, f, rootIno, "f")
			defer f.put(st)
			writeT(t, f, st, bytes.Repeat([]byte("a"), 2*testBS), 0)
			if err := f.flush(st); err != nil {
				t.Fatal(err)
			}
			started, release := make(chan string, 1), make(chan struct{})
			hook := func(name string) {
				select {
				case started <- name:
				default:
				}
				<-release
			}
			e.blobs.putHook.Store(&hook)
			writeT(t, f, st, []byte("b"), testBS+5) // block 1 dirty again
			flushed := make(chan error, 1)
			go func() { flushed <- f.flush(st) }()
			select {
			case <-started:
			case <-time.After(10 * time.Second):
				t.Fatal("the flush started no upload within 10s")
			}
			removed := make(chan error, 1)
			go func() {
				if how == "truncate" {
					in := &gofuse.SetAttrIn{}
					in.Valid, in.Size = gofuse.FATTR_SIZE, testBS
					removed <- f.setattr(st, in)
				} else {
					removed <- f.unlinkEntry(rootIno, "f", false)
				}
			}()
			// Let the block leave the cache while its upload is held.
			if !waitFor(10*time.Second, func() bool {
				st.mu.Lock()
				defer st.mu.Unlock()
				return st.blocks[1] == nil
			}) {
				t.Fatal("the block never left the cache")
			}
			e.blobs.putHook.Store(nil)
			close(release)
			for name, ch := range map[string]chan error{"flush": flushed, how: removed} {
				select {
				case err := <-ch:
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("%s did not return within 10s of the upload's release", name)
				}
			}
			want := 1
			if how == "unlink" {
				want = 0
			}
			if !waitFor(10*time.Second, func() bool { return len(e.blobs.names(f.inodePrefix(st.ino))) == want }) {
				t.Fatalf("objects %v, want %d", e.blobs.names(f.inodePrefix(st.ino)), want)
			}
		})
	}
}

// A commit that is not an fsync (chmod, utimes, rename, link, truncate)
// must not commit a size that covers writes not yet in healstore: after a
// machine restart (the cache dropped) the file would be longer than its
// durable data, reading zeros where the unsynced writes were, or even the
// bytes a truncate cut away. On the same boot the journal brings the
// unsynced writes and their size back.
func TestCoreMetadataCommitKeepsDurableSize(t *testing.T) {
	ops := map[string]func(t *testing.T, f *filesystem, st *inodeState){
		"chmod": func(t *testing.T, f *filesystem, st *inodeState) {
			in := &gofuse.SetAttrIn{}
			in.Valid, in.Mode = gofuse.FATTR_MODE, 0o600
			setattrT(t, f, st, in)
		},
		"utimes": func(t *testing.T, f *filesystem, st *inodeState) {
			in := &gofuse.SetAttrIn{}
			in.Valid, in.Mtime = gofuse.FATTR_MTIME, 1_700_000_000
			setattrT(t, f, st, in)
		},
		"rename": func(t *testing.T, f *filesystem, st *inodeState) {
			if err := f.rename(rootIno, "f", rootIno, "g", 0); err != nil {
				t.Fatal(err)
			}
			if err := f.rename(rootIno, "g", rootIno, "f", 0); err != nil {
				t.Fatal(err)
			}
		},
		"link": func(t *testing.T, f *filesystem, st *inodeState) {
			l, err := f.link(rootIno, "l", st.ino)
			if err != nil {
				t.Fatal(err)
			}
			f.put(l)
		},
		"truncate": func(t *testing.T, f *filesystem, st *inodeState) {
			truncateT(t, f, st, 12)
		},
	}
	for name, op := range ops {
		for _, reboot := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/reboot=%v", name, reboot), func(t *testing.T) {
				e := newCoreEnv(t)
				f := e.open()
				st := newFile(t, f, rootIno, "f")
				writeT(t, f, st, []byte("committed"), 0)
				if err := f.flush(st); err != nil {
					t.Fatal(err)
				}
				writeT(t, f, st, []byte("+unsynced"), 9) // grows the file, not uploaded
				op(t, f, st)
				crash(f)
				if reboot {
					e.boot = []byte("boot-2")
				}
				f2 := e.open()
				defer shutdown(t, f2)
				st2 := lookupT(t, f2, rootIno, "f")
				defer f2.put(st2)
				want := "committed"
				if !reboot {
					want = "committed+unsynced"
					if name == "truncate" {
						want = want[:12]
					}
				}
				if got := readAll(t, f2, st2); string(got) != want {
					t.Fatalf("after %s and a crash (reboot %v) the file reads %q, want %q", name, reboot, got, want)
				}
			})
		}
	}
}

// Bytes a truncate cut away must not come back when the file grows again
// and the machine restarts before the cut block was uploaded.
func TestCoreTruncatedBytesNeverReappear(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	st := newFile(t, f, rootIno, "t")
	writeT(t, f, st, bytes.Repeat([]byte{7}, 3*testBS), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	for _, size := range []uint64{testBS + 100, 4 * testBS} { // cut, then grow
		truncateT(t, f, st, size)
	}
	crash(f)
	e.boot = []byte("boot-2")
	f2 := e.open()
	defer shutdown(t, f2)
	st2 := lookupT(t, f2, rootIno, "t")
	defer f2.put(st2)
	got := readAll(t, f2, st2)
	if len(got) < testBS+100 || !bytes.Equal(got[:testBS+100], bytes.Repeat([]byte{7}, testBS+100)) {
		t.Fatalf("size %d: the data before the cut changed", len(got))
	}
	if i := bytes.IndexByte(got[testBS+100:], 7); i >= 0 {
		t.Fatalf("size %d: truncated bytes reappeared at %d", len(got), testBS+100+i)
	}
}

// fsync commits the size the file had when it started, the part its
// uploads made durable, even when writes grow the file meanwhile.
func TestCoreFlushCommitsSizeOfItsStart(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "f")
	defer f.put(st)
	writeT(t, f, st, bytes.Repeat([]byte("a"), 100), 0)
	// The first upload waits for release, later ones for later.
	started, release, later := make(chan string, 1), make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	hook := func(name string) {
		if calls.Add(1) > 1 {
			<-later
			return
		}
		started <- name
		<-release
	}
	e.blobs.putHook.Store(&hook)
	flushed := make(chan error, 1)
	go func() { flushed <- f.flush(st) }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the flush started no upload within 10s")
	}
	writeT(t, f, st, bytes.Repeat([]byte("b"), 100), 100) // while the upload runs
	close(release)
	select {
	case err := <-flushed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("flush did not return within 10s of the upload's release")
	}
	if rec := committedInode(t, e, st.ino); rec.Size != 100 {
		t.Fatalf("fsync committed size %d, want the 100 bytes it made durable", rec.Size)
	}
	close(later)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	if rec := committedInode(t, e, st.ino); rec.Size != 200 {
		t.Fatalf("second fsync committed size %d, want 200", rec.Size)
	}
}

// A truncate up of a file whose data is all in healstore commits its size
// before it returns, even when the old end falls inside a block: the
// stored block ends there, so nothing needs cutting or uploading first.
func TestCoreTruncateUpCommitsAtOnce(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "u")
	defer f.put(st)
	writeT(t, f, st, bytes.Repeat([]byte{7}, testBS+100), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	puts := e.blobs.puts.Load()
	truncateT(t, f, st, 3*testBS)
	if rec := committedInode(t, e, st.ino); rec.Size != 3*testBS {
		t.Fatalf("truncate up committed size %d, want %d", rec.Size, 3*testBS)
	}
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	if n := e.blobs.puts.Load() - puts; n != 0 {
		t.Fatalf("truncate up uploaded %d blocks, want none", n)
	}
	want := append(bytes.Repeat([]byte{7}, testBS+100), make([]byte, 2*testBS-100)...)
	if got := readAll(t, f, st); !bytes.Equal(got, want) {
		t.Fatal("content after truncate up differs")
	}
}

// A write into a block that a reader (or read-ahead) is fetching must not
// wait for that fetch: the fetch fills the read cache under the inode's
// mutex, which the write holds while it loads the block.
func TestCoreWriteIntoBlockBeingFetched(t *testing.T) {
	e := newCoreEnv(t)
	// A write that waits for the fetch fails at OpTimeout. The write loads
	// the block into the cache directory, and a stalled disk can hold that
	// for seconds, so the timeout and the bound below leave room for it.
	e.opts.OpTimeout = 15 * time.Second
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "w")
	defer f.put(st)
	writeT(t, f, st, bytes.Repeat([]byte("a"), 2*testBS), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	f.rcache = newReadCache(1 << 20) // forget what the upload cached
	started, release := make(chan string, 1), make(chan struct{})
	hook := func(name string) {
		select {
		case started <- name:
			<-release
		default:
		}
	}
	e.blobs.getHook.Store(&hook)
	k := blockKey{st.ino, 1}
	st.mu.Lock()
	ver := st.dataVer
	st.mu.Unlock()
	fetched := make(chan error, 1)
	go func() {
		_, err := f.fetchBlock(context.Background(), k, testBS, ver, f.filler(st, k, ver))
		fetched <- err
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the fetch did not start within 10s")
	}
	wrote := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := f.write(st, []byte("b"), testBS+10) // loads block 1 under the inode's mutex
		wrote <- err
	}()
	time.Sleep(100 * time.Millisecond) // let the write reach the fetch
	close(release)
	for name, ch := range map[string]chan error{"write": wrote, "fetch": fetched} {
		if err := <-ch; err != nil {
			t.Fatalf("%s: %v (after %v)", name, err, time.Since(start))
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the write took %v: it waited for the fetch's fill", d)
	}
	got := readAll(t, f, st)
	if got[testBS+10] != 'b' || got[testBS+9] != 'a' {
		t.Fatal("content after the write differs")
	}
}

// A read that starts after a write and its fsync returned sees the write,
// even while a fetch of the block that began before the write (a reader's
// or read-ahead's) is still under way with the old bytes: it must not
// join that fetch.
func TestCoreReadAfterFsyncNeverJoinsOlderFetch(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "f")
	defer f.put(st)
	writeT(t, f, st, bytes.Repeat([]byte("o"), testBS), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	f.rcache = newReadCache(1 << 20) // forget what the upload cached
	started, release := make(chan string, 1), make(chan struct{})
	var held atomic.Bool
	hook := func(name string) {
		if held.CompareAndSwap(false, true) {
			started <- name
			<-release // the old bytes are read; hold them
		}
	}
	e.blobs.gotHook.Store(&hook)
	defer close(release)
	k := blockKey{st.ino, 0}
	st.mu.Lock()
	ver := st.dataVer
	st.mu.Unlock()
	go f.fetchBlock(context.Background(), k, testBS, ver, f.filler(st, k, ver))
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the first fetch did not start within 10s")
	}
	writeT(t, f, st, bytes.Repeat([]byte("N"), testBS), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, testBS)
		n, err := f.read(st, buf, 0)
		if err != nil {
			t.Error(err)
		}
		got <- buf[:n]
	}()
	select {
	case d := <-got:
		if !bytes.Equal(d, bytes.Repeat([]byte("N"), testBS)) {
			t.Fatalf("read started after write+fsync returned %q..., want the written bytes", d[:min(len(d), 16)])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the read after write+fsync waited for the older fetch")
	}
}

// Reading a sparse file's hole (a block never written, inside the file)
// returns zeros without allocating memory for the block: on a VM image
// with large holes every hole block had cost a block of zeroed memory.
func TestCoreHoleReadAllocatesNoBlock(t *testing.T) {
	e := newCoreEnv(t)
	const bs = 4 << 20
	e.opts.BlockSize, e.opts.CacheSize = bs, 8*bs
	f := e.open()
	st := newFile(t, f, rootIno, "sparse")
	writeT(t, f, st, []byte("first"), 0)
	writeT(t, f, st, []byte("last"), 3*bs)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	f.rcache = newReadCache(1 << 20) // forget what the upload cached
	if _, ok := e.blobs.get(f.blockName(blockKey{st.ino, 1})); ok {
		t.Fatal("block 1 of the hole is stored")
	}
	buf := make([]byte, 64<<10)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, off := range []int64{bs, bs + 1<<20, 2 * bs, 2*bs + 3<<20} {
		n, err := f.read(st, buf, off)
		if err != nil || n != len(buf) {
			t.Fatalf("read of the hole at %d: %d bytes, %v", off, n, err)
		}
		if !bytes.Equal(buf, make([]byte, len(buf))) {
			t.Fatalf("read of the hole at %d returned non-zero bytes", off)
		}
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > bs/2 {
		t.Fatalf("reading two hole blocks allocated %d bytes; a block is %d", d, bs)
	}
	n, err := f.read(st, buf[:4], 3*bs)
	if err != nil || n != 4 || string(buf[:4]) != "last" {
		t.Fatalf("read after the hole: %q, %v", buf[:n], err)
	}
	f.put(st)
	shutdown(t, f)
}
