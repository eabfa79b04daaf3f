package fuse

import (
	"bytes"
	"context"
	"testing"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// committedInode reads the inode record the metastore holds for ino.
func committedInode(t *testing.T, e *coreEnv, ino uint64) *inode {
	t.Helper()
	raw, err := e.kv.Get(context.Background(), inodeKey(ino))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := decodeInode(ino, raw)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// The kernel's write-back of cached times (mtime and ctime through a file
// handle) is not committed on its own: it goes in with the data at fsync.
// A user's utimes (no file handle) still commits before it returns.
func TestCoreKernelTimeFlushCommitsWithData(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "times")
	defer f.put(st)
	writeT(t, f, st, []byte("data"), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	commits := e.kv.commits.Load()

	mtime := time.Unix(1_700_000_000, 42)
	flushIn := &gofuse.SetAttrIn{}
	flushIn.Valid = gofuse.FATTR_MTIME | gofuse.FATTR_CTIME | gofuse.FATTR_FH
	flushIn.Mtime, flushIn.Mtimensec = uint64(mtime.Unix()), uint32(mtime.Nanosecond())
	flushIn.Ctime, flushIn.Ctimensec = uint64(mtime.Unix()), uint32(mtime.Nanosecond())
	setattrT(t, f, st, flushIn)
	if got := e.kv.commits.Load(); got != commits {
		t.Fatalf("time flush made %d metastore commits, want none", got-commits)
	}
	st.mu.Lock()
	inMem := st.rec.Mtime
	st.mu.Unlock()
	if inMem != mtime.UnixNano() {
		t.Fatalf("mtime in memory %d, want %d", inMem, mtime.UnixNano())
	}
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	if rec := committedInode(t, e, st.ino); rec.Mtime != mtime.UnixNano() || rec.Ctime != mtime.UnixNano() {
		t.Fatalf("after fsync the metastore has mtime %d ctime %d, want %d", rec.Mtime, rec.Ctime, mtime.UnixNano())
	}

	// utimes from a user: no file handle, committed at once.
	later := mtime.Add(time.Hour)
	userIn := &gofuse.SetAttrIn{}
	userIn.Valid = gofuse.FATTR_MTIME | gofuse.FATTR_CTIME
	userIn.Mtime, userIn.Mtimensec = uint64(later.Unix()), uint32(later.Nanosecond())
	userIn.Ctime, userIn.Ctimensec = uint64(later.Unix()), uint32(later.Nanosecond())
	setattrT(t, f, st, userIn)
	if rec := committedInode(t, e, st.ino); rec.Mtime != later.UnixNano() {
		t.Fatalf("utimes left mtime %d in the metastore, want %d", rec.Mtime, later.UnixNano())
	}
	// ftruncate passes a file handle too, with a size: committed at once.
	truncIn := &gofuse.SetAttrIn{}
	truncIn.Valid = gofuse.FATTR_SIZE | gofuse.FATTR_FH | gofuse.FATTR_MTIME | gofuse.FATTR_CTIME
	truncIn.Size = 2
	setattrT(t, f, st, truncIn)
	if rec := committedInode(t, e, st.ino); rec.Size != 2 {
		t.Fatalf("ftruncate left size %d in the metastore, want 2", rec.Size)
	}
}

// readView hands out a slice of a fetched block only when the range lies
// in its stored content; a write after the read does not change what an
// earlier reply carried, and the next read sees the write.
func TestCoreReadViewSharesFetchedBlocks(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "view")
	defer f.put(st)
	data := bytes.Repeat([]byte("0123456789abcdef"), testBS/16)
	data = append(data, []byte("tail")...) // block 1 holds 4 bytes
	writeT(t, f, st, data, 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	// Uploaded blocks left the write-back cache: reads fetch them.
	dest := make([]byte, 100)
	got, err := f.readView(st, dest, 16)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data[16:116]) {
		t.Fatal("view of block 0 differs")
	}
	if &got[0] == &dest[0] {
		t.Fatal("a range inside a fetched block was copied")
	}
	// A range crossing the block edge is copied into dest.
	got, err = f.readView(st, dest, testBS-50)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 54 || &got[0] != &dest[0] || !bytes.Equal(got, data[testBS-50:]) {
		t.Fatalf("read across the block edge: %d bytes, copied %v", len(got), &got[0] == &dest[0])
	}
	// Past the end of the file: nothing.
	if got, err = f.readView(st, dest, int64(len(data))); err != nil || len(got) != 0 {
		t.Fatalf("read at the end: %d bytes, %v", len(got), err)
	}
	view, err := f.readView(st, make([]byte, 8), 0)
	if err != nil {
		t.Fatal(err)
	}
	keep := bytes.Clone(view)
	writeT(t, f, st, []byte("XXXXXXXX"), 0)
	if !bytes.Equal(view, keep) {
		t.Fatal("a write changed the bytes of an earlier reply")
	}
	if got, err := f.readView(st, make([]byte, 8), 0); err != nil || string(got) != "XXXXXXXX" {
		t.Fatalf("read after write: %q, %v", got, err)
	}
}

// Read-ahead keeps its window full: each fetch that ends starts the next,
// so more blocks than fetch slots come in without another read asking.
func TestCoreReadAheadRefillsWindow(t *testing.T) {
	e := newCoreEnv(t)
	e.opts.ReadAhead = 10 * testBS // more than the 4 fetches at once
	e.opts.ReadCacheSize = 16 * testBS
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "ahead")
	defer f.put(st)
	writeT(t, f, st, bytes.Repeat([]byte("r"), 12*testBS), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	h := &handle{st: st, last: 0, streak: 2}
	gets := e.blobs.gets.Load()
	f.readAhead(h)
	cached := func() int {
		n := 0
		for idx := uint64(1); idx <= 10; idx++ {
			if f.rcache.has(blockKey{st.ino, idx}) {
				n++
			}
		}
		return n
	}
	if !waitFor(5*time.Second, func() bool { return cached() == 10 }) {
		t.Fatalf("read-ahead cached %d of the 10 blocks of its window", cached())
	}
	if n := e.blobs.gets.Load() - gets; n != 10 {
		t.Fatalf("read-ahead fetched %d blocks, want 10", n)
	}
	if f.rcache.has(blockKey{st.ino, 11}) {
		t.Fatal("read-ahead fetched past its window")
	}

	// A released handle starts nothing more.
	h.mu.Lock()
	h.closed, h.last = true, 10
	h.mu.Unlock()
	f.readAhead(h)
	time.Sleep(50 * time.Millisecond)
	if f.rcache.has(blockKey{st.ino, 11}) {
		t.Fatal("read-ahead ran for a released handle")
	}
}
