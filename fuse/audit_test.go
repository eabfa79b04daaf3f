package fuse

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

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

var _ = errors.New
