package fuse

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// Fuzz targets for everything the fuse package parses from disk (the
// write-back cache journal and the cache's block file names) and from the
// metastore (inode records and directory entries). scripts/fuzz.sh runs
// them; the seeds come from the package's own encoders.

// seedRecs are journal records of every kind, with small and extreme
// values.
var seedRecs = []jrec{
	{kind: recDirty, ino: 5, a: 1, b: 10},
	{kind: recSize, ino: 5, a: 12345},
	{kind: recDirty, ino: 5, a: 2, b: 11},
	{kind: recClean, ino: 5, a: 1, b: 10},
	{kind: recDrop, ino: 5, a: 2},
	{kind: recSizeSync, ino: 5},
	{kind: recForget, ino: 7},
	{kind: recDirty, ino: ^uint64(0), a: ^uint64(0), b: ^uint64(0)},
	{kind: recSize, ino: 1 << 63, a: 1<<63 + 1},
}

func encodeRecs(recs []jrec) []byte {
	out := make([]byte, len(recs)*recLen)
	for i, r := range recs {
		r.encode(out[i*recLen:])
	}
	return out
}

// replayRecs applies recs to a fresh state, as replay does.
func replayRecs(recs []jrec) *journalState {
	st := newJournalState()
	for _, r := range recs {
		st.apply(r)
	}
	return st
}

func sameState(a, b *journalState) bool {
	return maps.Equal(a.dirty, b.dirty) && maps.Equal(a.sizes, b.sizes)
}

// checkCompaction checks what openJournal and rewriteLocked rely on:
// records() is minimal, sorted, and replays to the same state.
func checkCompaction(t *testing.T, st *journalState) {
	t.Helper()
	recs := st.records()
	if len(recs) != len(st.dirty)+len(st.sizes) {
		t.Fatalf("records(): %d records for %d dirty blocks and %d sizes", len(recs), len(st.dirty), len(st.sizes))
	}
	for i := 1; i < len(recs); i++ {
		a, b := recs[i-1], recs[i]
		if a.ino > b.ino || a.ino == b.ino && (a.kind > b.kind || a.kind == b.kind && a.a >= b.a) {
			t.Fatalf("records() out of order at %d: %+v then %+v", i, a, b)
		}
	}
	if got := replayRecs(recs); !sameState(got, st) {
		t.Fatalf("compacted journal replays to %+v, want %+v", got, st)
	}
}

// TestDecodersDoNotAllocate: the fixed-size decoders read in place. (A
// check per fuzz input would stop the world twice an exec.)
func TestDecodersDoNotAllocate(t *testing.T) {
	var rec [recLen]byte
	seedRecs[0].encode(rec[:])
	garbage := bytes.Repeat([]byte{0xa5}, recLen)
	de := dirent{ino: 42, mode: syscall.S_IFREG}.encode()
	for name, fn := range map[string]func(){
		"decodeRec":         func() { decodeRec(rec[:]) },
		"decodeRec garbage": func() { decodeRec(garbage) },
		"decodeDirent":      func() { decodeDirent(de) },
	} {
		if allocs := testing.AllocsPerRun(100, fn); allocs != 0 {
			t.Errorf("%s: %v allocations", name, allocs)
		}
	}
}

// FuzzDecodeRec: a 32-byte record decodes only if the encoder could have
// written it, and then re-encodes to the same bytes; every record the
// encoder writes decodes to itself; one flipped bit anywhere is rejected.
func FuzzDecodeRec(f *testing.F) {
	for _, r := range seedRecs {
		var buf [recLen]byte
		r.encode(buf[:])
		f.Add(buf[:], uint16(0))
		f.Add(buf[:], uint16(100))
	}
	f.Add(make([]byte, recLen), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, bit uint16) {
		if len(data) < recLen {
			return // callers hand decodeRec exactly recLen bytes
		}
		buf := data[:recLen]
		r, ok := decodeRec(buf)
		if ok {
			if r.kind < recDirty || r.kind > recDrop {
				t.Fatalf("decoded unknown kind %d", r.kind)
			}
			var again [recLen]byte
			r.encode(again[:])
			if !bytes.Equal(again[:], buf) {
				t.Fatalf("record %x decodes to %+v, which encodes to %x", buf, r, again)
			}
		} else if r != (jrec{}) {
			t.Fatalf("rejected record decodes to %+v", r)
		}

		// The encoder side: any record of a known kind round-trips, and
		// no single-bit error gets through.
		w := jrec{
			kind: recDirty + buf[0]%recDrop,
			ino:  binary.LittleEndian.Uint64(buf[8:]),
			a:    binary.LittleEndian.Uint64(buf[16:]),
			b:    binary.LittleEndian.Uint64(buf[24:]),
		}
		var enc [recLen]byte
		w.encode(enc[:])
		got, ok := decodeRec(enc[:])
		if !ok || got != w {
			t.Fatalf("%+v encodes to %x, which decodes to %+v, %v", w, enc, got, ok)
		}
		i := int(bit) % (recLen * 8)
		enc[i/8] ^= 1 << (i % 8)
		if got, ok := decodeRec(enc[:]); ok {
			t.Fatalf("%+v with bit %d flipped decodes to %+v", w, i, got)
		}
	})
}

// fuzzRecs turns fuzz bytes into journal records, 4 bytes a record, up
// to 512. Inode numbers and block indexes are small so records hit the
// same keys.
func fuzzRecs(data []byte) []jrec {
	var recs []jrec
	// Past a few hundred records nothing new happens (at most 8 inodes
	// of 16 blocks), so long inputs would only slow the fuzzer down.
	for ; len(data) >= 4 && len(recs) < 512; data = data[4:] {
		r := jrec{
			kind: recDirty + data[0]%recDrop,
			ino:  uint64(data[1] % 8),
			a:    uint64(data[2] % 16),
			b:    uint64(data[3]),
		}
		if data[0]&0x80 != 0 {
			r.a |= 1 << 63
			r.b |= 1 << 63
		}
		recs = append(recs, r)
	}
	return recs
}

// FuzzReadJournal: readJournal returns the state of the good prefix of
// any file (good records, then garbage or a torn record) without error:
// exactly the records before the first one that does not decode, applied
// in order, and never fewer than the good records the file starts with.
func FuzzReadJournal(f *testing.F) {
	// What readJournal promises for files that are not journals. dir
	// also holds the journal of every input (see FuzzJournalApply).
	dir := fuzzDir(f)
	if st, n, err := readJournal(filepath.Join(dir, "missing")); err != nil || n != 0 || len(st.dirty)+len(st.sizes) != 0 {
		f.Fatalf("missing journal: %+v, %d, %v", st, n, err)
	}
	if _, _, err := readJournal(dir); err == nil || !strings.Contains(err.Error(), "journal") {
		f.Fatalf("reading a directory as a journal: %v", err)
	}

	spec := make([]byte, 4*150) // crosses readJournal's 64-record reads
	for i := range spec {
		spec[i] = byte(i * 7)
	}
	f.Add(encodeRecs(seedRecs), []byte(nil), uint32(1<<31))
	f.Add([]byte(nil), encodeRecs(seedRecs), uint32(5*recLen-5))
	f.Add([]byte{0, 1, 2, 3, 1, 1, 2, 9}, []byte("garbage after the good records"), uint32(1<<31))
	f.Add(spec, encodeRecs(seedRecs[:1]), uint32(100*recLen+7))
	f.Fuzz(func(t *testing.T, spec, tail []byte, cut uint32) {
		good := fuzzRecs(spec)
		file := append(encodeRecs(good), tail...)
		file = file[:min(int(cut), len(file))]
		path := filepath.Join(dir, "journal")
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		st, n, err := readJournal(path)
		if err != nil {
			t.Fatalf("readJournal: %v", err)
		}
		// The records readJournal should have used: whole records up to
		// the first that does not decode.
		var want []jrec
		for off := 0; off+recLen <= len(file); off += recLen {
			r, ok := decodeRec(file[off : off+recLen])
			if !ok {
				break
			}
			want = append(want, r)
		}
		if n != len(want) {
			t.Fatalf("readJournal used %d records, the file starts with %d good ones", n, len(want))
		}
		if intact := min(len(good), len(file)/recLen); n < intact {
			t.Fatalf("readJournal used %d records of %d intact ones", n, intact)
		}
		if m := min(n, len(good)); !slices.Equal(want[:m], good[:m]) {
			t.Fatalf("records decode to %+v, were written as %+v", want[:m], good[:m])
		}
		if exp := replayRecs(want); !sameState(st, exp) {
			t.Fatalf("readJournal state %+v, want %+v", st, exp)
		}
		checkCompaction(t, st)
	})
}

// FuzzJournalApply drives a journal through appends and compactions and
// checks what apply does with each record (it only touches the entries
// the record names, as its kind says), that the file always replays to the
// mirror, and that compaction keeps the state.
func FuzzJournalApply(f *testing.F) {
	spec := make([]byte, 4*100)
	for i := range spec {
		spec[i] = byte(i*13 + i/4)
	}
	f.Add([]byte{0, 1, 2, 3, 1, 1, 2, 9, 1, 1, 2, 3, 2, 1, 2, 3, 4, 1, 0, 0}, uint16(0))
	f.Add(spec, uint16(3))
	f.Add(spec, uint16(0))
	// One directory for all inputs: t.TempDir per input spends most of
	// the time removing directories (synchronous discards on some disks).
	dir := fuzzDir(f)
	f.Fuzz(func(t *testing.T, spec []byte, compact uint16) {
		recs := fuzzRecs(spec)
		j, err := openJournal(dir, newJournalState())
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if j.f != nil {
				j.f.Close()
			}
		}()
		if compact != 0 {
			j.compact = int64(compact%64) * recLen // compact often
		}
		want := newJournalState()
		for _, r := range recs {
			if err := j.append(r); err != nil {
				t.Fatal(err)
			}
			modelApply(want, r)
			if !sameState(j.mirror, want) {
				t.Fatalf("after %+v the state is %+v, want %+v", r, j.mirror, want)
			}
		}
		st, _, err := readJournal(j.path)
		if err != nil {
			t.Fatal(err)
		}
		if !sameState(st, j.mirror) {
			t.Fatalf("journal file replays to %+v, mirror is %+v", st, j.mirror)
		}
		if b, s := j.pending(); b != len(st.dirty) || s != len(st.sizes) {
			t.Fatalf("pending() = %d, %d for %+v", b, s, st)
		}
		checkCompaction(t, st)
		if err := j.close(); err != nil {
			t.Fatal(err)
		}
		if st, _, err = readJournal(j.path); err != nil || !sameState(st, j.mirror) {
			t.Fatalf("closed journal replays to %+v, %v; mirror is %+v", st, err, j.mirror)
		}
	})
}

// modelApply is what each record kind means, written out on its own:
// apply touches only the entries r names.
func modelApply(st *journalState, r jrec) {
	k := blockKey{r.ino, r.a}
	switch r.kind {
	case recDirty:
		// The newest generation written wins; an older one arriving late
		// does not roll it back.
		if g, ok := st.dirty[k]; !ok || r.b > g {
			st.dirty[k] = r.b
		}
	case recClean:
		// Only an upload of the newest (or a newer) generation cleans.
		if g, ok := st.dirty[k]; ok && r.b >= g {
			delete(st.dirty, k)
		}
	case recDrop:
		delete(st.dirty, k)
	case recSize:
		st.sizes[r.ino] = r.a
	case recSizeSync:
		delete(st.sizes, r.ino)
	case recForget:
		delete(st.sizes, r.ino)
		maps.DeleteFunc(st.dirty, func(k blockKey, _ uint64) bool { return k.ino == r.ino })
	}
}

// seedInodes are records of every kind of inode.
var seedInodes = []inode{
	{Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Atime: 1, Mtime: 2, Ctime: 3},
	{Mode: syscall.S_IFREG | 0o644, Uid: 1000, Gid: 1000, Nlink: 1, Size: 12345, BlockSize: 1 << 20, Extent: 3},
	{Mode: syscall.S_IFLNK | 0o777, Nlink: 1, Size: 11, Target: "../some/file"},
	{Mode: syscall.S_IFCHR | 0o600, Nlink: 1, Rdev: 0x0501, Atime: -1, Mtime: -1 << 62, Ctime: 1<<63 - 1},
	{Mode: syscall.S_IFREG, Size: ^uint64(0), BlockSize: ^uint32(0), Extent: ^uint64(0)},
}

// FuzzDecodeInode: a record decodes to an inode the rest of the package
// can use (a regular file has a block size), which encodes to a record
// that decodes to the same inode; a record that does not decode gives an
// error naming the inode. Inodes the encoder writes decode to themselves.
func FuzzDecodeInode(f *testing.F) {
	for i, n := range seedInodes {
		rec := n.encode()
		f.Add(uint64(i+1), rec)
		f.Add(uint64(i+1), rec[:len(rec)/2])
	}
	f.Add(uint64(9), []byte(`{"mode":32768,"size":5}`))
	f.Add(uint64(9), []byte(`{"mode":40960,"target":"\u00e9\ud800x"}`))
	f.Add(uint64(9), []byte(`null`))
	f.Fuzz(func(t *testing.T, ino uint64, b []byte) {
		n, err := decodeInode(ino, b)
		if err != nil {
			if n != nil {
				t.Fatalf("error %v with an inode", err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("inode %d:", ino)) {
				t.Fatalf("error %q does not name inode %d", err, ino)
			}
			return
		}
		if n.isReg() && n.BlockSize == 0 {
			t.Fatalf("regular file without block size accepted: %+v", n)
		}
		if n.isReg() {
			blocksFor(n.Size, n.BlockSize) // must not divide by zero
		}
		// Nothing in a record is sized by a length it states; JSON can
		// at most turn one input byte into U+FFFD (3 bytes).
		if len(n.Target) > 3*len(b) {
			t.Fatalf("%d-byte record gives a %d-byte target", len(b), len(n.Target))
		}
		rec := n.encode()
		again, err := decodeInode(ino, rec)
		if err != nil {
			t.Fatalf("%q decodes to %+v, which encodes to %q, which does not decode: %v", b, n, rec, err)
		}
		if !reflect.DeepEqual(again, n) {
			t.Fatalf("%q decodes to %+v, which re-encodes and decodes to %+v", b, n, again)
		}
		if !bytes.Equal(again.encode(), rec) {
			t.Fatalf("encoding is not stable: %q then %q", rec, again.encode())
		}
	})
}

// FuzzInodeRoundTrip: every inode the filesystem can create encodes to a
// record that decodes to the same inode.
func FuzzInodeRoundTrip(f *testing.F) {
	for _, n := range seedInodes {
		f.Add(n.Mode, n.Uid, n.Gid, n.Nlink, n.Size, n.Atime, n.Mtime, n.Ctime, n.Rdev, n.Target, n.BlockSize, n.Extent)
	}
	f.Fuzz(func(t *testing.T, mode, uid, gid, nlink uint32, size uint64, atime, mtime, ctime int64, rdev uint32, target string, bs uint32, extent uint64) {
		n := inode{Mode: mode, Uid: uid, Gid: gid, Nlink: nlink, Size: size, Atime: atime, Mtime: mtime, Ctime: ctime,
			Rdev: rdev, Target: target, BlockSize: bs, Extent: extent}
		if (n.isReg() && n.BlockSize == 0) || !validType(n.Mode) {
			return // the filesystem never creates one; decodeInode refuses it
		}
		got, err := decodeInode(1, n.encode())
		if err != nil {
			t.Fatalf("%+v encodes to %q, which does not decode: %v", n, n.encode(), err)
		}
		if *got != n {
			t.Fatalf("%+v encodes to %q, which decodes to %+v", n, n.encode(), *got)
		}
	})
}

// FuzzDecodeDirent: exactly the 12-byte values whose mode is a file type
// decode, to the entry that encodes back to the same bytes; other lengths
// are an error that gives the length.
func FuzzDecodeDirent(f *testing.F) {
	f.Add(dirent{ino: rootIno, mode: syscall.S_IFDIR}.encode())
	f.Add(dirent{ino: 1 << 40, mode: syscall.S_IFREG}.encode())
	f.Add(dirent{ino: ^uint64(0), mode: syscall.S_IFLNK}.encode())
	f.Add(dirent{ino: 3, mode: syscall.S_IFREG}.encode()[:11])
	f.Add(append(dirent{ino: 3, mode: syscall.S_IFREG}.encode(), 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeDirent(b)
		if len(b) != 12 {
			if err == nil {
				t.Fatalf("%d-byte entry decoded to %+v", len(b), d)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("(%d bytes)", len(b))) {
				t.Fatalf("error %q does not give the length %d", err, len(b))
			}
			return
		}
		if mode := binary.BigEndian.Uint32(b[8:]); mode&^syscall.S_IFMT != 0 || !validType(mode) {
			if err == nil {
				t.Fatalf("entry %x with mode %#o decoded", b, mode)
			}
			return
		}
		if err != nil {
			t.Fatalf("12-byte entry %x: %v", b, err)
		}
		if enc := d.encode(); !bytes.Equal(enc, b) {
			t.Fatalf("%x decodes to %+v, which encodes to %x", b, d, enc)
		}
	})
}

// FuzzParseBlockName: parseBlockName accepts exactly the names blockPath
// gives, so every cache file maps to one block and every block to one
// file; replay deletes the rest.
func FuzzParseBlockName(f *testing.F) {
	for _, k := range []blockKey{{0, 0}, {5, 1}, {1 << 40, 12345}, {^uint64(0), ^uint64(0)}} {
		f.Add(filepath.Base(blockPath("/cache", k)), k.ino, k.idx)
	}
	f.Add("journal", uint64(1), uint64(2))
	f.Add("0000000000000005-0000000000000001.tmp", uint64(1), uint64(2))
	f.Fuzz(func(t *testing.T, name string, ino, idx uint64) {
		if k, ok := parseBlockName(name); ok {
			if base := filepath.Base(blockPath("/cache", k)); base != name {
				t.Fatalf("%q parses to %+v, whose cache file is %q", name, k, base)
			}
		}
		want := blockKey{ino, idx}
		name = filepath.Base(blockPath("/cache", want))
		if k, ok := parseBlockName(name); !ok || k != want {
			t.Fatalf("cache file %q of %+v parses to %+v, %v", name, want, k, ok)
		}
	})
}

// fuzzDir is a directory for a fuzz target's files, in memory when the
// machine has /dev/shm: the fuzzer counts an input that takes over 10 s as
// a hang and fails, and a disk that stalls for seconds turns a write and an
// fsync into one.
func fuzzDir(f *testing.F) string {
	dir, err := os.MkdirTemp("/dev/shm", "healstore-fuzz-")
	if err != nil {
		return f.TempDir()
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
