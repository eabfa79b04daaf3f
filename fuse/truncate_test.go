package fuse

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"syscall"
	"testing"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// crashState is what a crash of the mount process at one step leaves: the
// cache directory as the process had written it (the journal and the
// cache files outlive the process), and the metastore and the store as
// they were at that moment.
type crashState struct {
	step  string
	cache string
	kv    map[string][]byte
	blobs map[string][]byte
}

// copyTree copies the regular files under src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o600)
	})
	if err != nil {
		t.Fatalf("copy cache dir: %v", err)
	}
}

// takeCrashState records the state a crash of f's process would leave now.
// Stored values are never changed in place, so copies of the maps do.
func takeCrashState(t *testing.T, e *coreEnv, f *filesystem, step string) crashState {
	t.Helper()
	c := crashState{step: step, cache: t.TempDir()}
	copyTree(t, f.cacheDir, c.cache)
	e.kv.mu.Lock()
	c.kv = maps.Clone(e.kv.m)
	e.kv.mu.Unlock()
	e.blobs.mu.Lock()
	c.blobs = maps.Clone(e.blobs.m)
	e.blobs.mu.Unlock()
	return c
}

// remount returns an env over a copy of c, its cache dir and stores, on
// the given boot.
func (c crashState) remount(t *testing.T, base *coreEnv, boot string) *coreEnv {
	t.Helper()
	e := &coreEnv{t: t, kv: newMemKV(), blobs: newMemBlobs(), opts: base.opts, boot: []byte(boot)}
	e.kv.m, e.blobs.m = maps.Clone(c.kv), maps.Clone(c.blobs)
	e.opts.CacheDir = t.TempDir()
	copyTree(t, c.cache, e.opts.CacheDir)
	return e
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// checkCrashState mounts c (on the boot that took it, or after a machine
// restart) and requires file "f" to read old or cut (old truncated), never
// a mix; then that an fsync makes that state durable (a mount with an
// empty cache reads the same), and that growing a cut file back shows
// zeros, never the bytes the truncate cut away.
func checkCrashState(t *testing.T, base *coreEnv, c crashState, reboot bool, old, cut []byte) {
	t.Helper()
	boot := string(base.boot)
	if reboot {
		boot += "-restarted"
	}
	e := c.remount(t, base, boot)
	f := e.open()
	st := lookupT(t, f, rootIno, "f")
	got := readAll(t, f, st)
	var which string
	switch {
	case bytes.Equal(got, old):
		which = "old"
	case bytes.Equal(got, cut):
		which = "new"
	default:
		t.Errorf("crash at %q (machine restart %v): the file reads %d bytes, differing from the old %d bytes at %d and from the new %d at %d",
			c.step, reboot, len(got), len(old), firstDiff(got, old), len(cut), firstDiff(got, cut))
		f.put(st)
		shutdown(t, f)
		return
	}
	if err := f.flush(st); err != nil {
		t.Fatalf("crash at %q: fsync after the remount: %v", c.step, err)
	}
	f.put(st)
	shutdown(t, f)

	e.opts.CacheDir = t.TempDir()
	f2 := e.open()
	defer shutdown(t, f2)
	st2 := lookupT(t, f2, rootIno, "f")
	defer f2.put(st2)
	if again := readAll(t, f2, st2); !bytes.Equal(again, got) {
		t.Errorf("crash at %q (machine restart %v): the %s content the remount showed did not last an fsync and a mount with an empty cache (%d bytes, differs at %d)",
			c.step, reboot, which, len(again), firstDiff(again, got))
		return
	}
	if which == "new" {
		truncateT(t, f2, st2, uint64(len(old)))
		want := append(bytes.Clone(cut), make([]byte, len(old)-len(cut))...)
		if grown := readAll(t, f2, st2); !bytes.Equal(grown, want) {
			t.Errorf("crash at %q (machine restart %v): grown back, the file differs from the cut one padded with zeros at %d",
				c.step, reboot, firstDiff(grown, want))
		}
	}
}

// pattern is n bytes that differ from block to block and from zero.
func pattern(n int, seed byte) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = byte(i/testBS)*16 + byte(i%13) + seed
	}
	return out
}

// A crash of the mount process at any step of a truncate down (cutting the
// block the new end falls in, dropping the cached blocks past it,
// journaling and committing the new size, deleting the objects past it)
// comes back, on the same boot, as the file before the truncate or after
// it, never a mix: not the old size with the cut block's tail zeroed (data
// that was fsynced, lost), nor the old size with blocks past the new end
// gone. After a restart of the machine the same holds for the data that
// was fsynced.
func TestCoreTruncateCrashAtEveryStep(t *testing.T) {
	cases := []struct {
		name string
		// setup writes the file and returns what it reads before the
		// truncate; durable says whether all of it was fsynced.
		setup   func(t *testing.T, f *filesystem, st *inodeState) []byte
		size    uint64
		durable bool
	}{
		{
			name: "fsynced/into a block",
			setup: func(t *testing.T, f *filesystem, st *inodeState) []byte {
				data := pattern(4*testBS+testBS/2, 1)
				writeT(t, f, st, data, 0)
				if err := f.flush(st); err != nil {
					t.Fatal(err)
				}
				return data
			},
			size:    testBS + testBS/2,
			durable: true,
		},
		{
			name: "fsynced/at a block edge",
			setup: func(t *testing.T, f *filesystem, st *inodeState) []byte {
				data := pattern(3*testBS+100, 2)
				writeT(t, f, st, data, 0)
				if err := f.flush(st); err != nil {
					t.Fatal(err)
				}
				return data
			},
			size:    testBS,
			durable: true,
		},
		{
			// Unsynced writes (none fills a block, so none is uploaded
			// before the truncate): across the new end in block 1, in
			// block 3, and past the committed end in block 5.
			name: "unsynced",
			setup: func(t *testing.T, f *filesystem, st *inodeState) []byte {
				data := pattern(4*testBS, 3)
				writeT(t, f, st, data, 0)
				if err := f.flush(st); err != nil {
					t.Fatal(err)
				}
				for _, w := range []struct {
					off int
					n   int
				}{{testBS + testBS/2 - 50, 100}, {3*testBS + 7, 300}, {5*testBS + 20, 500}} {
					p := pattern(w.n, 9)
					writeT(t, f, st, p, int64(w.off))
					data = append(data, make([]byte, max(w.off+w.n-len(data), 0))...)
					copy(data[w.off:], p)
				}
				return data
			},
			size: testBS + testBS/2,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newCoreEnv(t)
			f := e.open()
			st := newFile(t, f, rootIno, "f")
			old := tc.setup(t, f, st)
			if got := readAll(t, f, st); !bytes.Equal(got, old) {
				t.Fatal("the file does not read what was written")
			}
			states := []crashState{takeCrashState(t, e, f, "before the truncate")}
			f.crashPoint = func(step string) {
				states = append(states, takeCrashState(t, e, f, step))
			}
			truncateT(t, f, st, tc.size)
			f.crashPoint = nil
			states = append(states, takeCrashState(t, e, f, "after the truncate"))
			cut := old[:tc.size]
			if got := readAll(t, f, st); !bytes.Equal(got, cut) {
				t.Fatal("the truncated file does not read the old content cut")
			}
			f.put(st)
			shutdown(t, f)
			if len(states) < 5 {
				t.Fatalf("the truncate passed %d crash points, want at least 3", len(states)-2)
			}
			var steps []string
			for _, c := range states {
				steps = append(steps, c.step)
				checkCrashState(t, e, c, false, old, cut)
				if tc.durable {
					checkCrashState(t, e, c, true, old, cut)
				}
			}
			t.Logf("crash points: %q", steps)
		})
	}
}

// A truncate down whose cut of the cache file fails (os.File.Truncate,
// injected here through a read-only handle, on which ftruncate fails)
// leaves the file as it was: its size in memory and in the journal, its
// content, its cached blocks and the budget, and a crash then comes back
// at the old file. The truncate fails with EIO and a log line naming the
// cache file; once the file can be cut, the truncate works.
func TestCoreTruncateFailedCacheCutChangesNothing(t *testing.T) {
	for _, dirty := range []bool{true, false} {
		name := "block loaded for the cut"
		if dirty {
			name = "dirty block"
		}
		t.Run(name, func(t *testing.T) {
			e := newCoreEnv(t)
			logs := &syncBuffer{}
			e.opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
			f := e.open()
			defer shutdown(t, f)
			st := newFile(t, f, rootIno, "f")
			defer f.put(st)
			old := pattern(3*testBS, 4)
			writeT(t, f, st, old, 0)
			if err := f.flush(st); err != nil {
				t.Fatal(err)
			}
			if dirty {
				// Unsynced: in the block the cut falls in, in one past
				// it, and past the committed end (a pending size).
				for _, off := range []int{testBS + 10, 2*testBS + 10, 3 * testBS} {
					p := pattern(100, 7)
					writeT(t, f, st, p, int64(off))
					old = append(old, make([]byte, max(off+100-len(old), 0))...)
					copy(old[off:], p)
				}
			}
			type snapshot struct {
				size    uint64
				pending bool
				sizes   map[uint64]uint64
				dirty   map[blockKey]uint64
				blocks  int
				budget  int64
			}
			snap := func() snapshot {
				st.mu.Lock()
				defer st.mu.Unlock()
				f.journal.mu.Lock()
				defer f.journal.mu.Unlock()
				return snapshot{st.rec.Size, st.sizePending, maps.Clone(f.journal.mirror.sizes),
					maps.Clone(f.journal.mirror.dirty), len(st.blocks), f.budget.inUse()}
			}
			before := snap()

			size := uint64(testBS + testBS/2)
			var rw, ro *os.File
			var path string
			f.crashPoint = func(step string) {
				if step != "truncate: size journaled" || rw != nil {
					return
				}
				b := st.blocks[1]
				if b == nil {
					t.Errorf("at %q block 1 is not in the cache", step)
					return
				}
				var err error
				if ro, err = os.Open(b.path); err != nil {
					t.Errorf("open %s read-only: %v", b.path, err)
					return
				}
				rw, path, b.f = b.f, b.path, ro
			}
			in := &gofuse.SetAttrIn{}
			in.Valid, in.Size = gofuse.FATTR_SIZE, size
			err := f.setattr(st, in)
			f.crashPoint = nil
			if rw == nil {
				t.Fatal("the truncate never reached the point where the cache file is cut")
			}
			if err == nil {
				t.Fatal("the truncate succeeded though its cache file could not be cut")
			}
			if got := f.errno("setattr", err); got != syscall.EIO {
				t.Errorf("the failed truncate returns %v, want EIO", got)
			}
			if !bytes.Contains(logs.bytes(), []byte(path)) {
				t.Errorf("no log line names the cache file %s: %s", path, logs.bytes())
			}
			after := snap()
			if dirty && !reflect.DeepEqual(after, before) {
				// The flush above may have left block 1 queued (queued
				// again while its upload ran), and a worker taking that
				// entry uploads the block dirty again now: it leaves the
				// cache clean, its content in the store (read below).
				uploaded := before
				uploaded.dirty = maps.Clone(before.dirty)
				delete(uploaded.dirty, blockKey{st.ino, 1})
				uploaded.blocks--
				uploaded.budget -= f.charge(uint32(testBS))
				if reflect.DeepEqual(after, uploaded) {
					after = before
				}
			}
			if !reflect.DeepEqual(after, before) {
				t.Errorf("a failed truncate changed the file's state: %+v, was %+v", after, before)
			}
			if got := readAll(t, f, st); !bytes.Equal(got, old) {
				t.Errorf("after a failed truncate the file reads %d bytes, differing from its %d at %d", len(got), len(old), firstDiff(got, old))
			}
			if dirty {
				st.mu.Lock()
				if b := st.blocks[1]; b != nil && b.f == ro {
					b.f.Close()
					b.f = rw // the writable file back, for what follows
				} else {
					// Uploaded in the background meanwhile and dropped
					// from the cache, which closed ro.
					rw.Close()
				}
				st.mu.Unlock()
			} else {
				rw.Close()
				if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the block loaded for the failed cut is still cached at %s (err %v)", path, err)
				}
			}
			// A crash now comes back at the old file too.
			checkCrashState(t, e, takeCrashState(t, e, f, "after the failed truncate"), false, old, old)

			truncateT(t, f, st, size)
			if got := readAll(t, f, st); !bytes.Equal(got, old[:size]) {
				t.Fatalf("the truncate retried reads %d bytes, differing from the old content cut at %d", len(got), firstDiff(got, old[:size]))
			}
			if err := f.flush(st); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A truncate down commits its size before it deletes the objects past it,
// and only its size: when a deletion then fails, the setattr fails and
// restores the mode it carried, which must not be in the metastore. The
// file keeps its new size (the truncate took effect), and the objects
// are deleted before it grows again.
func TestCoreTruncateFailedTrimCommitsOnlyTheSize(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "f")
	defer f.put(st)
	old := pattern(3*testBS, 5)
	writeT(t, f, st, old, 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	mode := committedInode(t, e, st.ino).Mode
	bad := errors.New("backends down")
	e.blobs.putErr.Store(&bad) // fails DeleteBlock too
	in := &gofuse.SetAttrIn{}
	in.Valid, in.Size, in.Mode = gofuse.FATTR_SIZE|gofuse.FATTR_MODE, testBS, 0o600
	if err := f.setattr(st, in); err == nil {
		t.Fatal("the truncate succeeded though the objects past the new end could not be deleted")
	}
	e.blobs.putErr.Store(nil)
	rec := committedInode(t, e, st.ino)
	if rec.Mode != mode {
		t.Errorf("a failed setattr committed mode %o, want the old %o", rec.Mode, mode)
	}
	if rec.Size != testBS || sizeOf(st) != testBS {
		t.Errorf("after a truncate whose trim failed: committed size %d, size %d, want %d for both", rec.Size, sizeOf(st), testBS)
	}
	truncateT(t, f, st, 3*testBS)
	want := append(bytes.Clone(old[:testBS]), make([]byte, 2*testBS)...)
	if got := readAll(t, f, st); !bytes.Equal(got, want) {
		t.Errorf("grown back after a failed trim, the file differs from the cut one padded with zeros at %d", firstDiff(got, want))
	}
}

// storedBlobs tells, after each PutBlock that stored its object, which.
type storedBlobs struct {
	blobStore
	stored func(name string)
}

func (b storedBlobs) PutBlock(ctx context.Context, name string, r io.Reader) error {
	err := b.blobStore.PutBlock(ctx, name, r)
	if err == nil {
		b.stored(name)
	}
	return err
}

// A truncate down does not cut the cache file of a block whose upload is
// reading it: the upload would store the block cut while the metastore
// still has the old size, and a crash of the machine before the new size
// is committed would come back at the old size with the cut block's tail,
// fsynced, reading as zeros. Here the upload of block 1 (an unsynced
// overwrite of its head) has started when the truncate to the middle of
// block 1 comes; the state a machine restart would find once the upload
// stored its object, the old size still committed, must read as the old
// file (with or without the overwrite) or the cut one.
func TestCoreTruncateWaitsForTheCutBlocksUpload(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	st := newFile(t, f, rootIno, "f")
	target := f.blockName(blockKey{st.ino, 1})
	stored := make(chan struct{}, 1)
	f.blobs = storedBlobs{f.blobs, func(name string) {
		if name == target {
			select {
			case stored <- struct{}{}:
			default:
			}
		}
	}}
	old := pattern(4*testBS+testBS/2, 1)
	writeT(t, f, st, old, 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	<-stored // from the flush

	// Hooked before the overwrite: a queue entry the flush left may have
	// a worker upload the block as soon as it is dirty, before the call
	// below; either upload holds here.
	started, release := make(chan struct{}), make(chan struct{})
	var once, releaseOnce sync.Once
	hook := func(name string) {
		if name == target {
			once.Do(func() { close(started) })
			<-release
		}
	}
	e.blobs.putHook.Store(&hook)
	over := pattern(100, 9)
	writeT(t, f, st, over, testBS)
	withOver := bytes.Clone(old)
	copy(withOver[testBS:], over)
	uploaded := make(chan struct{})
	go func() {
		defer close(uploaded)
		f.upload(blockKey{st.ino, 1})
	}()
	<-started

	size := uint64(testBS + testBS/2)
	var states []crashState
	f.crashPoint = func(step string) {
		switch step {
		case "truncate: waiting for the cut block's upload":
			releaseOnce.Do(func() { close(release) })
		case "truncate: cache file cut":
			releaseOnce.Do(func() { close(release) })
			<-stored
			states = append(states, takeCrashState(t, e, f, step))
		}
	}
	truncateT(t, f, st, size)
	f.crashPoint = nil
	<-uploaded
	e.blobs.putHook.Store(nil)
	cut := withOver[:size]
	if got := readAll(t, f, st); !bytes.Equal(got, cut) {
		t.Fatal("the truncated file does not read the old content cut")
	}
	f.put(st)
	shutdown(t, f)
	if len(states) != 1 {
		t.Fatalf("the truncate passed the cut of the cache file %d times, want once", len(states))
	}

	e2 := states[0].remount(t, e, string(e.boot)+"-restarted")
	f2 := e2.open()
	defer shutdown(t, f2)
	st2 := lookupT(t, f2, rootIno, "f")
	defer f2.put(st2)
	got := readAll(t, f2, st2)
	if !bytes.Equal(got, old) && !bytes.Equal(got, withOver) && !bytes.Equal(got, cut) {
		t.Errorf("after a machine restart while the cut block's upload landed, the file reads %d bytes, differing from the old %d bytes at %d (%d with the overwrite) and from the cut %d at %d",
			len(got), len(old), firstDiff(got, old), firstDiff(got, withOver), len(cut), firstDiff(got, cut))
	}
}

// A truncate that waited (for a trim, or for the upload of the block it
// cuts) while the file was unlinked and reclaimed fails with ENOENT, as
// one that comes after does, and leaves nothing of the file behind: no
// cache file, budget or journal record for an inode that is gone.
func TestCoreTruncateOfAFileReclaimedWhileItWaits(t *testing.T) {
	e := newCoreEnv(t)
	f := e.open()
	defer shutdown(t, f)
	st := newFile(t, f, rootIno, "f")
	defer f.put(st)
	writeT(t, f, st, pattern(4*testBS+testBS/2, 1), 0)
	if err := f.flush(st); err != nil {
		t.Fatal(err)
	}
	// The upload of block 1 is in flight and a trim holds data changes
	// off when the truncate into block 1 comes; it waits for both. Hooked
	// before the overwrite: a queue entry the flush left may have a
	// worker upload the block as soon as it is dirty; either upload holds.
	target := f.blockName(blockKey{st.ino, 1})
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func(name string) {
		if name == target {
			once.Do(func() { close(started) })
			<-release
		}
	}
	e.blobs.putHook.Store(&hook)
	defer e.blobs.putHook.Store(nil)
	writeT(t, f, st, pattern(100, 9), testBS)
	uploaded := make(chan struct{})
	go func() {
		defer close(uploaded)
		f.upload(blockKey{st.ino, 1})
	}()
	<-started
	st.mu.Lock()
	st.trimming = true // the reap below ends it
	st.mu.Unlock()

	// While it waits, the file is unlinked; nothing holds it open, so its
	// data and record are reclaimed.
	unlinked := make(chan error, 1)
	f.crashPoint = func(step string) {
		if step == "truncate: waiting for the cut block's upload" {
			go func() {
				unlinked <- f.unlinkEntry(rootIno, "f", false)
				close(release)
			}()
		}
	}
	in := &gofuse.SetAttrIn{}
	in.Valid, in.Size = gofuse.FATTR_SIZE, testBS+testBS/2
	err := f.setattr(st, in)
	f.crashPoint = nil
	<-uploaded
	select {
	case uerr := <-unlinked:
		if uerr != nil {
			t.Fatalf("unlink: %v", uerr)
		}
	default:
		t.Fatal("the truncate did not wait for the upload of the block it cuts")
	}
	f.bgWG.Wait() // the reap
	if got := f.errno("setattr", err); got != syscall.ENOENT {
		t.Errorf("a truncate of a file reclaimed while it waited returns %v (%v), want ENOENT", got, err)
	}
	st.mu.Lock()
	blocks := len(st.blocks)
	st.mu.Unlock()
	if blocks != 0 {
		t.Errorf("the reclaimed file has %d blocks in the write-back cache", blocks)
	}
	if n := f.budget.inUse(); n != 0 {
		t.Errorf("%d bytes of cache budget still held after the file was reclaimed", n)
	}
	f.journal.mu.Lock()
	_, size := f.journal.mirror.sizes[st.ino]
	var dirty []blockKey
	for k := range f.journal.mirror.dirty {
		if k.ino == st.ino {
			dirty = append(dirty, k)
		}
	}
	f.journal.mu.Unlock()
	if size || len(dirty) > 0 {
		t.Errorf("the journal holds a size (%v) or dirty blocks %v of the reclaimed file", size, dirty)
	}
}
