package fuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// A truncate that fails (the cut block cannot be fetched) must leave the
// file as it was: in particular the dirty blocks past the new end, which
// a successful truncate would discard, must keep their unsynced writes.
func TestCoreFailedTruncateKeepsDirtyBlocks(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "ft")
	defer f.put(st)
	writeT(t, f, st, bytes.Repeat([]byte{1}, 4*testBS), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	// Block 3 is rewritten and not yet uploaded; block 2 is only in the store.
	newer := bytes.Repeat([]byte{2}, testBS)
	writeT(t, f, st, newer, 3*testBS)
	bad := fmt.Errorf("backends down")
	e.blobs.getErr.Store(&bad)
	in := &gofuse.SetAttrIn{}
	in.Valid, in.Size = gofuse.FATTR_SIZE, 2*testBS+100
	if err := f.setattr(st, in); err == nil {
		t.Fatal("truncate succeeded while the cut block could not be read")
	}
	e.blobs.getErr.Store(nil)
	if got := sizeOf(st); got != 4*testBS {
		t.Fatalf("size %d after a failed truncate, want %d", got, 4*testBS)
	}
	got := make([]byte, testBS)
	if _, err := f.read(st, got, 3*testBS); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, newer) {
		t.Fatalf("a failed truncate lost the unsynced write of block 3 (reads %d)", got[0])
	}
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.blobs.get(f.blockName(blockKey{st.ino, 3})); !bytes.Equal(v, newer) {
		t.Fatal("block 3 in the store is not the last write after fsync")
	}
}

// A setattr whose truncate fails changes none of the other attributes it
// carried: a mode, owner or time and a size in one setattr either all
// happen or none does.
func TestCoreFailedTruncateKeepsModeAndTimes(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "fm")
	defer f.put(st)
	writeT(t, f, st, bytes.Repeat([]byte{1}, 3*testBS), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	before := st.rec
	st.mu.Unlock()
	bad := fmt.Errorf("backends down")
	e.blobs.getErr.Store(&bad)
	in := &gofuse.SetAttrIn{}
	in.Valid = gofuse.FATTR_SIZE | gofuse.FATTR_MODE | gofuse.FATTR_UID | gofuse.FATTR_MTIME
	in.Size, in.Mode, in.Uid, in.Mtime = testBS+100, 0o600, before.Uid+1, 12345
	if err := f.setattr(st, in); err == nil {
		t.Fatal("setattr succeeded while the cut block could not be read")
	}
	e.blobs.getErr.Store(nil)
	st.mu.Lock()
	after := st.rec
	st.mu.Unlock()
	if after.Mode != before.Mode || after.Uid != before.Uid || after.Mtime != before.Mtime || after.Ctime != before.Ctime || after.Size != before.Size {
		t.Fatalf("a failed setattr changed the inode: mode %o uid %d mtime %d ctime %d size %d, was mode %o uid %d mtime %d ctime %d size %d",
			after.Mode, after.Uid, after.Mtime, after.Ctime, after.Size, before.Mode, before.Uid, before.Mtime, before.Ctime, before.Size)
	}
}

var _ = errors.New

// breakJournal makes every later journal write fail, as a full cache disk
// would.
func breakJournal(t *testing.T, f *filesystem) {
	t.Helper()
	f.journal.mu.Lock()
	defer f.journal.mu.Unlock()
	ro, err := os.Open(f.journal.path)
	if err != nil {
		t.Fatal(err)
	}
	f.journal.f.Close()
	f.journal.f = ro
}

// Records a journal could not write must not be replaced by older ones
// at the next mount: a size the journal recorded before it broke, since
// committed and then changed, must not come back as the file's size.
func TestCoreBrokenJournalDoesNotReplayStaleSize(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	st := newFile(t, f, rootIno, "j")
	writeT(t, f, st, bytes.Repeat([]byte{5}, 3*testBS), 0) // size record: 3 blocks
	breakJournal(t, f)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	truncateT(t, f, st, 10)
	if err := f.flush(st); err != nil {
		t.Logf("fsync after the journal broke: %v", err)
	}
	f.put(st)
	if err := f.shutdown(context.Background()); err != nil {
		t.Logf("unmount after the journal broke: %v", err)
	}
	f2 := e.open()
	defer shutdown(t, f2)
	st2 := lookupT(t, f2, rootIno, "j")
	defer f2.put(st2)
	if got := sizeOf(st2); got != 10 {
		t.Fatalf("size %d after remount, want 10 (a stale journal record came back)", got)
	}
}

// The same after a crash of the mount process: once the journal can be
// written again it is rewritten whole, so the replay sees the current
// state, not the records from before the failure.
func TestCoreJournalRepairedAfterWriteFailure(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	st := newFile(t, f, rootIno, "j")
	writeT(t, f, st, bytes.Repeat([]byte{5}, 3*testBS), 0) // size record: 3 blocks
	breakJournal(t, f)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	f.journal.mu.Lock()
	if f.journal.err == nil {
		t.Fatal("journal writes did not fail")
	}
	f.journal.retryAt = time.Time{} // the next record retries at once
	f.journal.mu.Unlock()
	truncateT(t, f, st, 10)
	writeT(t, f, st, []byte("unsynced"), 10)
	f.put(st)
	crash(f)
	f2 := e.open()
	defer shutdown(t, f2)
	st2 := lookupT(t, f2, rootIno, "j")
	defer f2.put(st2)
	if got := readAll(t, f2, st2); !bytes.Equal(got, append(bytes.Repeat([]byte{5}, 10), "unsynced"...)) {
		t.Fatalf("after the crash the file reads %d bytes %q..., want 10 fives and the unsynced write", len(got), got[:min(len(got), 20)])
	}
}

// Blocks read from a hole are cached as empty entries; the read cache
// must bound their number too, or reading a large sparse file (a VM
// disk) at random grows memory without limit.
func TestCoreReadCacheBoundsHoleEntries(t *testing.T) {
	e := newCoreEnv(t)
	e.opts.ReadCacheSize = 256 << 10
	e.opts.ReadAhead = -1
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "sparse")
	defer f.put(st)
	const blocks = 20000
	truncateT(t, f, st, blocks*testBS)
	buf := make([]byte, 1)
	for idx := range int64(blocks) {
		if _, err := f.read(st, buf, idx*testBS); err != nil {
			t.Fatal(err)
		}
	}
	f.rcache.mu.Lock()
	n := len(f.rcache.m)
	f.rcache.mu.Unlock()
	if n > 4096 {
		t.Fatalf("read cache of %d bytes holds %d hole entries", e.opts.ReadCacheSize, n)
	}
}

// A write whose cache file cannot be written (a full cache disk) must not
// leave the block it brought into the cache behind: it would hold the
// block's budget for good, and, empty, read as zeros where the stored
// content is, and be uploaded so with the next write to the block.
func TestCoreFailedCacheWriteLeavesNoBlock(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "full")
	defer f.put(st)
	old := bytes.Repeat([]byte{3}, 2*testBS)
	writeT(t, f, st, old, 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	if n := f.budget.inUse(); n != 0 {
		t.Fatalf("budget %d in use with nothing cached", n)
	}
	// The cache file of block 1 writes to a full disk.
	path := blockPath(f.cacheDir, blockKey{st.ino, 1})
	if err := os.Symlink("/dev/full", path); err != nil {
		t.Fatal(err)
	}
	if _, err := f.write(st, bytes.Repeat([]byte{4}, testBS), testBS); err == nil {
		t.Fatal("a write whose cache file is on a full disk (/dev/full) succeeded")
	}
	os.Remove(path)
	if n := f.budget.inUse(); n != 0 {
		t.Errorf("a failed write left %d bytes of budget in use", n)
	}
	if got := readAll(t, f, st); !bytes.Equal(got, old) {
		t.Errorf("after a failed write of block 1 the file no longer reads its old content")
	}
	writeT(t, f, st, []byte{5}, testBS+10)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(old)
	want[testBS+10] = 5
	if v, _ := e.blobs.get(f.blockName(blockKey{st.ino, 1})); !bytes.Equal(v, want[testBS:]) {
		t.Errorf("block 1 in the store lost its old content after a later small write")
	}
}

// A write past the end that fails part way leaves the size as it was; what
// it wrote into the cache past that size must not show when the file
// grows later: the grown part reads as zeros.
func TestCoreFailedExtendingWriteLeavesNoBytesPastEnd(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "x")
	defer f.put(st)
	writeT(t, f, st, bytes.Repeat([]byte{1}, 100), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	// Block 0 takes the write; the cache file of block 1 is on a full disk.
	path := blockPath(f.cacheDir, blockKey{st.ino, 1})
	if err := os.Symlink("/dev/full", path); err != nil {
		t.Fatal(err)
	}
	if _, err := f.write(st, bytes.Repeat([]byte{9}, 2*testBS), 100); err == nil {
		t.Fatal("a write whose cache file is on a full disk (/dev/full) succeeded")
	}
	os.Remove(path)
	if got := sizeOf(st); got != 100 {
		t.Fatalf("size %d after a failed write, want 100", got)
	}
	truncateT(t, f, st, 3*testBS)
	got := readAll(t, f, st)
	if !bytes.Equal(got[:100], bytes.Repeat([]byte{1}, 100)) {
		t.Fatal("the bytes before the old end changed")
	}
	if i := bytes.IndexFunc(got[100:], func(r rune) bool { return r != 0 }); i >= 0 {
		t.Fatalf("after growing, byte %d past the old end reads %d, not zero (the failed write's)", 100+i, got[100+i])
	}
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.blobs.get(f.blockName(blockKey{st.ino, 0})); !bytes.Equal(v, bytes.Repeat([]byte{1}, 100)) && !bytes.Equal(v, append(bytes.Repeat([]byte{1}, 100), make([]byte, len(v)-100)...)) {
		t.Fatal("block 0 in the store holds the failed write's bytes")
	}
}

// gatedDeletes holds every DeleteBlock until gate is closed.
type gatedDeletes struct {
	*memBlobs
	gate chan struct{}
}

func (g gatedDeletes) DeleteBlock(ctx context.Context, name string) error {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.memBlobs.DeleteBlock(ctx, name)
}

// An fsync that waits for a block whose upload the uploader passed over
// because a truncate was deleting objects must not then wait for the
// write-back delay: the block is queued again as urgent when the
// truncate ends.
func TestCoreFsyncDuringTrimDoesNotWaitForWritebackDelay(t *testing.T) {
	e := newCoreEnv(t)
	e.opts.UploadWorkers = 1
	e.opts.OpTimeout = 5 * time.Second
	e.blobs.putWait = make(chan struct{}, 16)
	for range 3 {
		e.blobs.putWait <- struct{}{}
	}
	blobs := gatedDeletes{e.blobs, make(chan struct{})}
	f, err := newFilesystem(e.kv, blobs, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	f.bootID = func() []byte { return e.boot }
	if err := f.start(context.Background(), 0, 0); err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "d")
	defer f.put(st)
	writeT(t, f, st, bytes.Repeat([]byte{1}, 3*testBS), 0)
	if err := f.flush(st); err != nil { // uses the 3 tokens; Extent now past block 2
		t.Fatal(err)
	}
	writeT(t, f, st, []byte("a"), 0)
	writeT(t, f, st, []byte("b"), testBS)
	flushed := make(chan error, 1)
	go func() { flushed <- f.flush(st) }()
	// The one worker is held in the upload of one block; the other waits.
	if !waitFor(5*time.Second, func() bool { st.mu.Lock(); defer st.mu.Unlock(); return st.uploads == 1 }) {
		t.Fatal("no upload started")
	}
	truncated := make(chan error, 1)
	go func() {
		in := &gofuse.SetAttrIn{}
		in.Valid, in.Size = gofuse.FATTR_SIZE, 2*testBS
		truncated <- f.setattr(st, in)
	}()
	if !waitFor(5*time.Second, func() bool { st.mu.Lock(); defer st.mu.Unlock(); return st.trimming }) {
		t.Fatal("the truncate did not start trimming")
	}
	e.blobs.putWait <- struct{}{} // the held upload ends; the trim deletes (held)
	if !waitFor(5*time.Second, func() bool {
		f.up.mu.Lock()
		defer f.up.mu.Unlock()
		return len(f.up.items) == 0
	}) {
		t.Fatal("the worker did not take the second block")
	}
	time.Sleep(100 * time.Millisecond) // it passes over it: the trim holds uploads off
	close(blobs.gate)
	close(e.blobs.putWait)
	if err := <-truncated; err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case err := <-flushed:
		if err != nil {
			t.Fatalf("fsync: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("fsync still waits %v after the truncate ended (the block waits for the write-back delay)", time.Since(start))
	}
}

// Without a boot id (no /proc/sys/kernel/random/boot_id) the mount cannot
// tell a crash of its process from a restart of the machine, whose cache
// files were never fsynced and cannot be trusted: it must not replay them.
func TestCoreUnknownBootDoesNotReplay(t *testing.T) {
	e := newCoreEnv(t)
	e.boot = nil
	f := e.open()
	st := newFile(t, f, rootIno, "b")
	writeT(t, f, st, []byte("synced"), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	writeT(t, f, st, []byte("unsynced!"), 0)
	f.put(st)
	crash(f)
	puts := e.blobs.puts.Load()
	f2 := e.open()
	defer shutdown(t, f2)
	st2 := lookupT(t, f2, rootIno, "b")
	defer f2.put(st2)
	if blocks, sizes := f2.journal.pending(); blocks != 0 || sizes != 0 {
		t.Errorf("with no boot id the cache was replayed: %d blocks, %d sizes", blocks, sizes)
	}
	if got := readAll(t, f2, st2); string(got) != "synced" {
		t.Errorf("file reads %q, want the fsynced %q", got, "synced")
	}
	if e.blobs.puts.Load() != puts {
		t.Errorf("the untrusted cache was uploaded")
	}
}
