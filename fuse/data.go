package fuse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// extentHeadroom is how many blocks past the one being uploaded an Extent
// bump reserves, so a sequential writer commits the inode once per this
// many blocks rather than once per block.
const extentHeadroom = 64

type fetchCall struct {
	done chan struct{}
	ver  uint64 // the file's data version when the fetch started
	data []byte
	err  error
}

// charge is what one cached block costs the dirty budget.
func (f *filesystem) charge(bs uint32) int64 {
	return max(int64(bs), f.opts.CacheSize/maxCacheBlocks)
}

// fetchBlock returns the stored content of block k (empty for a block that
// was never written), from the read cache or from healstore; concurrent
// callers for one block share one fetch. The result must not be modified.
// A fetch made from healstore is handed to fill (if not nil) before other
// callers can miss it: fill puts it in the read cache when the file did
// not change meanwhile (see fillLocked).
//
// ver is the file's data version the caller read (st.dataVer): a caller
// joins only a fetch started at that version or later. A fetch started
// before a write may return the bytes from before it, which a read that
// began after the write (and its fsync) must never see; such a caller
// fetches for itself, and its fetch takes the older one's place.
func (f *filesystem) fetchBlock(ctx context.Context, k blockKey, bs uint32, ver uint64, fill func([]byte)) ([]byte, error) {
	if d, ok := f.rcache.get(k); ok {
		return d, nil
	}
	f.fetchMu.Lock()
	if c := f.fetches[k]; c != nil && c.ver >= ver {
		f.fetchMu.Unlock()
		select {
		case <-c.done:
			return c.data, c.err
		case <-ctx.Done():
			return nil, fmt.Errorf("read block %d of inode %d: %w", k.idx, k.ino, ctx.Err())
		}
	}
	// A fetch that ended between the look above and taking fetchMu has
	// filled the cache already (fills happen before the call is removed):
	// look again rather than fetch the block twice.
	if d, ok := f.rcache.get(k); ok {
		f.fetchMu.Unlock()
		return d, nil
	}
	c := &fetchCall{done: make(chan struct{}), ver: ver}
	f.fetches[k] = c
	f.fetchMu.Unlock()

	c.data, c.err = f.getStored(ctx, k, bs)
	if c.err == nil && fill != nil {
		fill(c.data)
	}
	f.fetchMu.Lock()
	if f.fetches[k] == c { // not replaced by a newer version's fetch
		delete(f.fetches, k)
	}
	f.fetchMu.Unlock()
	close(c.done)
	return c.data, c.err
}

// fetchLocked returns the stored content of block k (empty for a block
// never written) for a caller that holds the inode's mutex, to load it
// into the write-back cache. It never joins a fetch in flight: such a
// fetch (a reader's, or read-ahead) fills the read cache under that mutex
// before it completes, so waiting for it while holding the mutex would
// stall both until the caller's timeout (and the write would fail). Two
// fetches of one block at once cost only the bytes.
func (f *filesystem) fetchLocked(ctx context.Context, k blockKey, bs uint32) ([]byte, error) {
	if d, ok := f.rcache.get(k); ok {
		return d, nil
	}
	return f.getStored(ctx, k, bs)
}

// getStored reads block k from healstore: its content, empty for a block
// never written.
func (f *filesystem) getStored(ctx context.Context, k blockKey, bs uint32) ([]byte, error) {
	data, err := f.blobs.GetBlock(ctx, f.blockName(k), int(bs))
	switch {
	case errors.Is(err, errNoBlock):
		return []byte{}, nil
	case err != nil:
		return nil, fmt.Errorf("read block %d of inode %d: %w", k.idx, k.ino, err)
	}
	return data, nil
}

// filler returns the fill function for fetchBlock on st's file as of
// version ver.
func (f *filesystem) filler(st *inodeState, k blockKey, ver uint64) func([]byte) {
	return func(data []byte) {
		st.mu.Lock()
		f.fillLocked(st, k, ver, data)
		st.mu.Unlock()
	}
}

// fillLocked puts fetched data in the read cache unless the file changed
// since ver was read. Called with st.mu held.
func (f *filesystem) fillLocked(st *inodeState, k blockKey, ver uint64, data []byte) {
	if st.dataVer == ver && st.blocks[k.idx] == nil && !st.gone {
		f.rcache.put(k, data)
	}
}

// copyBlock copies the part of a block's content starting at boff into dst
// and zeroes what the content does not cover (a hole or the part of the
// last block past the data).
func copyBlock(dst, data []byte, boff int64) {
	n := 0
	if boff < int64(len(data)) {
		n = copy(dst, data[boff:])
	}
	clear(dst[n:])
}

// readCached reads from a cached block file at boff into dst.
func readCached(b *cblock, dst []byte, boff int64) error {
	n := 0
	if boff < b.length {
		want := min(int64(len(dst)), b.length-boff)
		m, err := b.f.ReadAt(dst[:want], boff)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read cache %s: %w", b.path, err)
		}
		n = m
	}
	clear(dst[n:])
	return nil
}

// read fills dest from the file at off and returns how many bytes the file
// had there.
func (f *filesystem) read(st *inodeState, dest []byte, off int64) (int, error) {
	data, err := f.readView(st, dest, off)
	if err != nil {
		return 0, err
	}
	if len(data) > 0 && &data[0] != &dest[0] {
		copy(dest, data)
	}
	return len(data), nil
}

// readView returns the file's bytes at off, at most len(dest) of them.
// When they all lie in the stored content of one block that is not in the
// write-back cache, the result is a slice of the fetched block itself:
// fetched blocks are never modified, so the FUSE reply can carry it
// without a copy. Otherwise the bytes are copied into dest and the result
// is a prefix of dest.
func (f *filesystem) readView(st *inodeState, dest []byte, off int64) ([]byte, error) {
	ctx, cancel := f.opCtx()
	defer cancel()
	st.mu.Lock()
	size := int64(st.rec.Size)
	if off >= size || len(dest) == 0 {
		st.mu.Unlock()
		return dest[:0], nil
	}
	n := min(int64(len(dest)), size-off)
	dest = dest[:n]
	bs := int64(st.rec.BlockSize)
	if idx, boff := off/bs, off%bs; boff+n <= bs && st.blocks[uint64(idx)] == nil {
		k := blockKey{st.ino, uint64(idx)}
		d, ok := f.rcache.get(k)
		ver := st.dataVer
		st.mu.Unlock()
		if !ok {
			var err error
			if d, err = f.fetchBlock(ctx, k, uint32(bs), ver, f.filler(st, k, ver)); err != nil {
				return nil, err
			}
		}
		if boff+n <= int64(len(d)) {
			return d[boff : boff+n], nil
		}
		copyBlock(dest, d, boff) // runs past the stored content: zeros
		return dest, nil
	}
	type miss struct {
		k    blockKey
		dst  []byte
		boff int64
	}
	var misses []miss
	for pos := off; pos < off+n; {
		idx := uint64(pos / bs)
		boff := pos % bs
		chunk := min(bs-boff, off+n-pos)
		dst := dest[pos-off : pos-off+chunk]
		k := blockKey{st.ino, idx}
		if b := st.blocks[idx]; b != nil {
			if err := readCached(b, dst, boff); err != nil {
				st.mu.Unlock()
				return nil, err
			}
		} else if d, ok := f.rcache.get(k); ok {
			copyBlock(dst, d, boff)
		} else {
			misses = append(misses, miss{k, dst, boff})
		}
		pos += chunk
	}
	ver := st.dataVer
	st.mu.Unlock()
	for _, m := range misses {
		data, err := f.fetchBlock(ctx, m.k, uint32(bs), ver, f.filler(st, m.k, ver))
		if err != nil {
			return nil, err
		}
		copyBlock(m.dst, data, m.boff)
	}
	return dest, nil
}

// readAhead fetches the blocks of the read-ahead window past the furthest
// block h's sequential reader touched into the read cache, in the
// background, skipping blocks already cached, being fetched or being
// written. Each fetch that ends calls it again, so the window refills
// while the reader consumes cached blocks, not only when its next read
// arrives (the kernel sends none while its page cache serves the reader).
func (f *filesystem) readAhead(h *handle) {
	h.mu.Lock()
	from, seq := uint64(h.last)+1, h.streak >= 2 && !h.closed
	h.mu.Unlock()
	if !seq {
		return
	}
	st := h.st
	st.mu.Lock()
	bs := st.rec.BlockSize
	count := uint64(max(f.opts.ReadAhead/int64(bs), 2))
	nb := blocksFor(st.rec.Size, bs)
	ver := st.dataVer
	var todo []blockKey
	for idx := from; idx < nb && idx < from+count; idx++ {
		k := blockKey{st.ino, idx}
		if st.blocks[idx] != nil || f.rcache.has(k) {
			continue
		}
		todo = append(todo, k)
	}
	st.mu.Unlock()
	for _, k := range todo {
		f.fetchMu.Lock()
		busy := f.fetches[k] != nil
		f.fetchMu.Unlock()
		if busy {
			continue
		}
		select {
		case f.prefetchSem <- struct{}{}:
		default:
			return // enough fetches in flight; the next to end asks again
		}
		f.mu.Lock()
		st.refs++
		f.mu.Unlock()
		f.bgWG.Add(1)
		go func() {
			defer f.bgWG.Done()
			defer f.put(st)
			ctx, cancel := f.opCtx()
			// An error is not kept: the reader fetches again and sees it.
			_, err := f.fetchBlock(ctx, k, bs, ver, f.filler(st, k, ver))
			cancel()
			<-f.prefetchSem
			// Refill only after a fetch the cache kept: one the file
			// changed under (not cached) would be fetched again at once.
			if err == nil && f.rcache.has(k) {
				f.readAhead(h)
			}
		}()
	}
}

// waitLocked waits on st.cond until done() holds or ctx ends. Called with
// st.mu held; the mutex is released while waiting.
func waitLocked(ctx context.Context, st *inodeState, done func() bool) error {
	if done() {
		return nil
	}
	stop := context.AfterFunc(ctx, func() {
		st.mu.Lock()
		st.cond.Broadcast()
		st.mu.Unlock()
	})
	defer stop()
	for !done() {
		if err := ctx.Err(); err != nil {
			return err
		}
		st.cond.Wait()
	}
	return nil
}

// loadLocked brings block idx into the write-back cache. With fetch, the
// stored content (cut to the file size, so the cache never holds bytes
// past the end of the file) is copied in; otherwise the block starts
// empty, for a write that replaces all of it. The caller has reserved the
// block's charge. Called with st.mu held.
func (f *filesystem) loadLocked(ctx context.Context, st *inodeState, idx uint64, fetch bool) (*cblock, error) {
	k := blockKey{st.ino, idx}
	bs := st.rec.BlockSize
	var data []byte
	start := idx * uint64(bs)
	if fetch && start < st.rec.Size && idx < st.rec.Extent {
		d, err := f.fetchLocked(ctx, k, bs)
		if err != nil {
			return nil, err
		}
		data = d[:min(uint64(len(d)), st.rec.Size-start)]
	}
	path := blockPath(f.cacheDir, k)
	file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("write-back cache: %w", err)
	}
	if len(data) > 0 {
		if _, err := file.WriteAt(data, 0); err != nil {
			file.Close()
			os.Remove(path)
			return nil, fmt.Errorf("write-back cache: %w", err)
		}
	}
	b := &cblock{f: file, path: path, length: int64(len(data)), charge: f.charge(bs)}
	st.blocks[idx] = b
	f.rcache.drop(k)
	return b, nil
}

// markDirtyLocked records that b's content changed: a new generation when
// the block was clean or its current generation is being uploaded.
func (f *filesystem) markDirtyLocked(st *inodeState, idx uint64, b *cblock) {
	if !b.dirty() || b.inflight == b.gen {
		b.gen = f.gen.Add(1)
		f.noteJournalErr(f.journal.dirty(st.ino, idx, b.gen))
	}
	if b.since.IsZero() {
		b.since = time.Now()
	}
	f.up.add(blockKey{st.ino, idx}, false)
}

// removeBlockLocked takes a block out of the cache (a truncate cut it
// away, its file was deleted, or its upload finished). A block an upload
// is reading keeps its file open until that upload ends, which closes it:
// closing it here would fail the upload with "file already closed" and,
// through the inode's error sequence, any fsync waiting on the file.
func (f *filesystem) removeBlockLocked(st *inodeState, idx uint64, b *cblock) {
	if b.inflight != 0 {
		b.removed = true
	} else {
		b.f.Close()
	}
	os.Remove(b.path)
	delete(st.blocks, idx)
	f.budget.release(b.charge)
}

// setSizeLocked changes the file size in memory and journals it until the
// metastore has it.
func (f *filesystem) setSizeLocked(st *inodeState, size uint64) {
	if st.rec.Size == size {
		return
	}
	st.rec.Size = size
	st.attrDirty = true
	st.sizePending = true
	f.noteJournalErr(f.journal.setSize(st.ino, size))
}

// growLocked prepares a file of size old to grow: stale objects past the
// end are deleted, and a partial last block is loaded (cut to old) and
// marked dirty so the bytes past the old end, which a truncate may have
// left in the stored object, read back as zeros. *reserved is the budget
// the caller holds; a load takes its charge from it.
func (f *filesystem) growLocked(ctx context.Context, st *inodeState, old uint64, reserved *int64) error {
	bs := uint64(st.rec.BlockSize)
	if st.staleBeyond {
		if err := f.trimLocked(ctx, st, blocksFor(old, uint32(bs))); err != nil {
			return err
		}
	}
	if old%bs == 0 {
		return nil
	}
	idx := old / bs
	if st.blocks[idx] != nil || idx >= st.rec.Extent {
		return nil
	}
	// A stored block that ends at or before the old end already reads as
	// zeros past it: nothing to cut, and no dirty block, so a truncate up
	// commits its size at once (see commitSizeLocked). The fetch goes to
	// the read cache either way: for a write that may follow, or for
	// loadLocked below, which takes it from there.
	k := blockKey{st.ino, idx}
	d, err := f.fetchLocked(ctx, k, uint32(bs))
	if err != nil {
		return err
	}
	f.fillLocked(st, k, st.dataVer, d)
	if uint64(len(d)) <= old%bs {
		return nil
	}
	b, err := f.loadLocked(ctx, st, idx, true)
	if err != nil {
		return err
	}
	*reserved -= b.charge
	f.markDirtyLocked(st, idx, b)
	return nil
}

// write writes data at off.
func (f *filesystem) write(st *inodeState, data []byte, off int64) (int, error) {
	if len(data) == 0 {
		return 0, nil
	}
	ctx, cancel := f.opCtx()
	defer cancel()
	bs := int64(st.blockSize())
	end := off + int64(len(data))
	first, last := off/bs, (end-1)/bs
	charge := f.charge(uint32(bs))
	// Only blocks that enter the cache cost budget; most writes land in a
	// block already there. Reserve outside the inode's lock, so uploads of
	// this file can free room meanwhile, and look again after.
	var reserved int64
	defer func() { f.budget.release(max(reserved, 0)) }()
	st.mu.Lock()
	defer st.mu.Unlock()
	for {
		if err := waitLocked(ctx, st, func() bool { return !st.trimming }); err != nil {
			return 0, err
		}
		if st.gone {
			return 0, syscall.ESTALE
		}
		need := f.newBlocksLocked(st, first, last, end) * charge
		if need <= reserved {
			break
		}
		st.mu.Unlock()
		err := f.budget.reserve(ctx, need-reserved, f.up.kick)
		st.mu.Lock()
		if err != nil {
			return 0, err
		}
		reserved = need
	}
	size := int64(st.rec.Size)
	if end > size {
		if err := f.growLocked(ctx, st, uint64(size), &reserved); err != nil {
			return 0, err
		}
	}
	st.dataVer++
	done := false
	defer func() {
		if !done {
			f.unwriteTailLocked(st, first, last, size)
		}
	}()
	for idx := first; idx <= last; idx++ {
		bstart := idx * bs
		lo := max(off, bstart) - bstart
		hi := min(end, bstart+bs) - bstart
		b := st.blocks[uint64(idx)]
		loaded := b == nil
		if loaded {
			existing := max(min(bs, size-bstart), 0)
			fetch := !(lo == 0 && hi >= existing)
			var err error
			if b, err = f.loadLocked(ctx, st, uint64(idx), fetch); err != nil {
				return 0, err
			}
			reserved -= b.charge
		}
		if _, err := b.f.WriteAt(data[bstart+lo-off:bstart+hi-off], lo); err != nil {
			if loaded {
				// Not dirty, it would never be uploaded nor leave the
				// cache, holding its budget, and a block loaded empty
				// would read as zeros: the store still has the content.
				f.removeBlockLocked(st, uint64(idx), b)
			}
			return 0, fmt.Errorf("write-back cache %s: %w", b.path, err)
		}
		b.length = max(b.length, hi)
		f.markDirtyLocked(st, uint64(idx), b)
		if b.cover(lo, hi, bs) {
			// Writes filled the whole block (a sequential writer, or the
			// kernel flushing its pages in any order): send it now.
			f.up.add(blockKey{st.ino, uint64(idx)}, true)
		}
	}
	if end > size {
		f.setSizeLocked(st, uint64(end))
	}
	done = true
	now := nowNs()
	st.rec.Mtime, st.rec.Ctime = now, now
	st.attrDirty = true
	return len(data), nil
}

// unwriteTailLocked cuts, after a write of blocks [first, last] failed
// part way, what it wrote past the file's size (which it did not move),
// and what a failed write to a cache file may have left past a block's
// content: a later truncate up or write further on would show those bytes
// where zeros belong. Blocks wholly past the end leave the cache. Called
// with st.mu held.
func (f *filesystem) unwriteTailLocked(st *inodeState, first, last, size int64) {
	bs := int64(st.rec.BlockSize)
	for idx := first; idx <= last; idx++ {
		b := st.blocks[uint64(idx)]
		if b == nil {
			continue
		}
		keep := min(max(size-idx*bs, 0), bs)
		if keep == 0 {
			f.removeBlockLocked(st, uint64(idx), b)
			f.noteJournalErr(f.journal.drop(st.ino, uint64(idx)))
			continue
		}
		keep = min(keep, b.length)
		if err := b.f.Truncate(keep); err != nil {
			f.log.Warn("healstore fuse: cutting a failed write from the write-back cache", "file", b.path, "err", err)
			continue
		}
		b.length = keep
	}
}

// newBlocksLocked counts the blocks a write of [first, last] ending at
// end must bring into the cache: those not there yet, and a partial last
// block that growing the file cuts.
func (f *filesystem) newBlocksLocked(st *inodeState, first, last, end int64) int64 {
	var n int64
	for idx := first; idx <= last; idx++ {
		if st.blocks[uint64(idx)] == nil {
			n++
		}
	}
	size := st.rec.Size
	bs := uint64(st.rec.BlockSize)
	if tail := int64(size / bs); uint64(end) > size && size%bs != 0 && (tail < first || tail > last) &&
		st.blocks[uint64(tail)] == nil && uint64(tail) < st.rec.Extent {
		n++
	}
	return n
}

func (st *inodeState) blockSize() uint32 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.rec.BlockSize
}

// truncateLocked sets the size of a regular file and commits it. Called
// with st.mu held and one block's charge reserved (released by the
// caller).
func (f *filesystem) truncateLocked(ctx context.Context, st *inodeState, size uint64, reserved *int64) error {
	// A truncate down does not cut the cache file of a block an upload is
	// reading either: the upload would store the block cut while the
	// metastore still holds the old size, and a crash of the machine
	// before the new size is committed would come back at the old size
	// with the block's tail past the new end, fsynced, reading as zeros.
	if cutUploadingLocked(st, size) {
		f.reached("truncate: waiting for the cut block's upload")
	}
	if err := waitLocked(ctx, st, func() bool { return !st.trimming && !cutUploadingLocked(st, size) }); err != nil {
		return fmt.Errorf("truncate inode %d to %d bytes: %w", st.ino, size, err)
	}
	// The file may have been unlinked and reclaimed meanwhile: a truncate
	// now would bring a block of it back into the cache, for good (nothing
	// uploads or drops the blocks of a gone inode), with its budget.
	if st.gone {
		return syscall.ENOENT
	}
	old := st.rec.Size
	st.dataVer++
	st.cuts++
	switch {
	case size < old:
		return f.shrinkLocked(ctx, st, size, reserved)
	case size > old:
		if err := f.growLocked(ctx, st, old, reserved); err != nil {
			return err
		}
		f.setSizeLocked(st, size)
	}
	return nil
}

// cutUploadingLocked says whether a truncate of st down to size would cut
// a cached block whose upload is in flight. Called with st.mu held.
func cutUploadingLocked(st *inodeState, size uint64) bool {
	bs := uint64(st.rec.BlockSize)
	if size >= st.rec.Size || size%bs == 0 {
		return false
	}
	b := st.blocks[size/bs]
	return b != nil && b.inflight != 0
}

// shrinkLocked is a truncate down to size. Its steps are ordered so that a
// crash of the process between any two of them comes back, at the next
// mount on the same boot, as the file before the truncate or as the file
// after it, never a mix of the two:
//
//  1. The block the new end falls in is brought into the cache. Its fetch
//     can fail; nothing has changed then, and a cache file the journal
//     does not list is deleted at the next mount.
//  2. The new size goes into the journal. A crash before this record
//     comes back at the old size with every cached block whole; one after
//     it at the new size, the replay cutting the cache files to it and
//     dropping those past it (replayBlock) whether or not step 3 ran.
//  3. That block's cache file is cut and the cached blocks past the new
//     end are dropped. Not before step 2: a crash would come back at the
//     old size with the cut block's tail reading as zeros (and uploaded
//     so, losing data that was fsynced) or the dropped blocks' unsynced
//     writes gone. A cut that fails undoes step 2 and fails the truncate.
//  4. The objects past the new end are deleted (trimLocked) once the new
//     size is committed, so that a crash of the machine, after which the
//     journal is not replayed, cannot come back at the old size over
//     deleted blocks either.
func (f *filesystem) shrinkLocked(ctx context.Context, st *inodeState, size uint64, reserved *int64) error {
	old, bs := st.rec.Size, uint64(st.rec.BlockSize)
	nb := blocksFor(size, uint32(bs))
	// The fallible step first: a truncate that fails must leave the file
	// as it was, not with the dirty blocks past the new end dropped
	// (their unsynced writes lost) under the old size.
	var cut *cblock
	loaded := false
	if size%bs != 0 {
		cut = st.blocks[nb-1]
		if cut == nil {
			var err error
			if cut, err = f.loadLocked(ctx, st, nb-1, true); err != nil {
				return err
			}
			*reserved -= cut.charge
			loaded = true
			f.reached("truncate: cut block loaded")
		}
	}
	wasPending, wasDirty := st.sizePending, st.attrDirty
	f.setSizeLocked(st, size)
	f.reached("truncate: size journaled")
	if cut != nil {
		if keep := int64(size % bs); cut.length > keep {
			if err := cut.f.Truncate(keep); err != nil {
				// Back to the old size, in memory and in the journal; a
				// block loaded only to be cut leaves the cache again
				// (clean, nothing would ever upload or remove it).
				st.rec.Size, st.sizePending, st.attrDirty = old, wasPending, wasDirty
				if wasPending {
					f.noteJournalErr(f.journal.setSize(st.ino, old))
				} else {
					f.noteJournalErr(f.journal.sizeSynced(st.ino))
				}
				if loaded {
					f.removeBlockLocked(st, nb-1, cut)
				}
				// %v, not %w: the errno of the cache disk (EINVAL, EIO,
				// ...) says nothing about the caller's truncate, which
				// gets EIO, and errno logs this line naming the file.
				return fmt.Errorf("truncate inode %d to %d bytes: cut write-back cache file %s: %v", st.ino, size, cut.path, err)
			}
			cut.length = keep
			f.reached("truncate: cache file cut")
		}
		f.markDirtyLocked(st, nb-1, cut)
	}
	for idx, b := range st.blocks {
		if idx >= nb {
			f.removeBlockLocked(st, idx, b)
			f.noteJournalErr(f.journal.drop(st.ino, idx))
		}
	}
	f.rcache.dropFrom(st.ino, nb)
	f.reached("truncate: blocks past the end dropped")
	if st.rec.Extent > nb || st.staleBeyond {
		st.staleBeyond = true
		return f.trimLocked(ctx, st, nb)
	}
	return nil
}

// trimLocked deletes the file's block objects at index >= from and lowers
// Extent to from, committing the inode (with its current size). Uploads of
// the file are drained first and held off meanwhile, so no object lands
// behind the deletion. Called with st.mu held; releases it while deleting.
func (f *filesystem) trimLocked(ctx context.Context, st *inodeState, from uint64) error {
	st.trimming = true
	defer func() {
		st.trimming = false
		st.cond.Broadcast()
		// Uploads passed over meanwhile may be ones a flush waits for.
		for idx, b := range st.blocks {
			if b.dirty() {
				f.up.add(blockKey{st.ino, idx}, st.flushing > 0)
			}
		}
	}()
	if err := waitLocked(ctx, st, func() bool { return st.uploads == 0 }); err != nil {
		return fmt.Errorf("truncate inode %d: waiting for uploads: %w", st.ino, err)
	}
	// The committed size must not reach into the objects about to go: a
	// crash of the machine meanwhile (the journal, which holds the new
	// size, is not replayed then) would come back at that size with some
	// of them deleted, reading zeros where its data was.
	if st.com.Size > from*uint64(st.rec.BlockSize) {
		if err := f.commitShrinkLocked(ctx, st); err != nil {
			return err
		}
		f.reached("trim: size committed")
	}
	st.mu.Unlock()
	err := f.deleteBlocksFrom(ctx, st.ino, from)
	st.mu.Lock()
	if err != nil {
		return err
	}
	st.rec.Extent = from
	if err := f.commitLocked(ctx, st, 0); err != nil {
		return err
	}
	st.staleBeyond = false
	f.reached("trim: extent committed")
	return nil
}

// commitShrinkLocked commits st's current size, below the committed one
// (trimLocked's callers trim from past it), and nothing else: a setattr
// whose trim then fails restores the mode, owner and times it carried,
// which must not be in the metastore by then. Called with st.mu held.
func (f *filesystem) commitShrinkLocked(ctx context.Context, st *inodeState) error {
	rec := st.com
	rec.Size = st.rec.Size
	raw := rec.encode()
	var b kvBatch
	b.expect(inodeKey(st.ino), st.raw)
	b.put(inodeKey(st.ino), raw)
	if err := f.kv.Commit(ctx, &b); err != nil {
		return fmt.Errorf("commit size %d of inode %d: %w", rec.Size, st.ino, err)
	}
	st.raw, st.com = raw, rec
	if st.sizePending {
		st.sizePending = false
		f.noteJournalErr(f.journal.sizeSynced(st.ino))
	}
	return nil
}

// deleteBlocksFrom deletes the block objects of ino at index >= from.
func (f *filesystem) deleteBlocksFrom(ctx context.Context, ino, from uint64) error {
	prefix := f.inodePrefix(ino)
	after := ""
	if from > 0 {
		after = f.blockName(blockKey{ino, from - 1})
	}
	var names []string
	err := f.blobs.ListBlocks(ctx, prefix, after, func(name string) error {
		idx, err := strconv.ParseUint(strings.TrimPrefix(name, prefix), 16, 64)
		if err == nil && idx >= from {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list blocks of inode %d: %w", ino, err)
	}
	for _, name := range names {
		if err := f.blobs.DeleteBlock(ctx, name); err != nil {
			return fmt.Errorf("delete %s: %w", name, err)
		}
		f.reached("deleted " + name)
	}
	return nil
}

// bumpExtentLocked raises the committed Extent above idx before block idx
// is uploaded, so the object can always be found and trimmed. Only Extent
// changes in the metastore: an uncommitted size stays uncommitted.
func (f *filesystem) bumpExtentLocked(ctx context.Context, st *inodeState, idx uint64) error {
	ext := max(idx+1, blocksFor(st.rec.Size, st.rec.BlockSize)) + extentHeadroom
	rec := st.com
	rec.Extent = ext
	raw := rec.encode()
	var b kvBatch
	b.expect(inodeKey(st.ino), st.raw)
	b.put(inodeKey(st.ino), raw)
	if err := f.kv.Commit(ctx, &b); err != nil {
		return fmt.Errorf("commit extent of inode %d: %w", st.ino, err)
	}
	st.raw, st.com = raw, rec
	st.rec.Extent = ext
	return nil
}

// upload sends one dirty block to healstore.
func (f *filesystem) upload(k blockKey) {
	st := f.lookupLive(k.ino)
	if st == nil {
		return
	}
	defer f.put(st)
	st.mu.Lock()
	b := st.blocks[k.idx]
	if b == nil || !b.dirty() || b.inflight != 0 || st.trimming || st.gone {
		// Gone, clean, already on its way, or held off by a trim (which
		// queues it again when it ends).
		st.mu.Unlock()
		return
	}
	ctx, cancel := f.opCtx()
	defer cancel()
	var err error
	if k.idx >= st.rec.Extent {
		err = f.bumpExtentLocked(ctx, st, k.idx)
	}
	if err != nil {
		f.uploadFailedLocked(st, k, b, err)
		st.mu.Unlock()
		return
	}
	gen := b.gen
	b.inflight = gen
	b.written, b.untracked = nil, false // writes from now on make the next upload
	st.uploads++
	// The upload reads the cache file while writes may go on: bytes a
	// write changes meanwhile may or may not be in this upload, but any
	// such write moved the block to a newer generation, which goes up
	// next. What generation gen holds is in the upload either way.
	src := io.NewSectionReader(b.f, 0, b.length)
	st.mu.Unlock()

	err = f.blobs.PutBlock(ctx, f.blockName(k), src)

	st.mu.Lock()
	defer st.mu.Unlock()
	b.inflight = 0
	st.uploads--
	st.cond.Broadcast()
	if b.removed {
		// Truncated away or deleted meanwhile: the trim or reap that
		// removed it (waiting for this upload) deletes any object, so
		// the outcome does not matter, and a failure is no error of the
		// file's.
		b.f.Close()
		return
	}
	if err != nil {
		f.uploadFailedLocked(st, k, b, fmt.Errorf("upload block %d of inode %d: %w", k.idx, k.ino, err))
		return
	}
	b.fails = 0
	b.upGen = max(b.upGen, gen)
	f.noteJournalErr(f.journal.clean(k.ino, k.idx, gen))
	if st.blocks[k.idx] != b {
		return // truncated away meanwhile; the trim deletes the object
	}
	if b.dirty() {
		f.up.add(k, st.flushing > 0)
		return
	}
	f.removeBlockLocked(st, k.idx, b)
}

func (f *filesystem) uploadFailedLocked(st *inodeState, k blockKey, b *cblock, err error) {
	st.errSeq++
	st.lastErr = err
	st.cond.Broadcast()
	b.fails++
	f.log.Warn("healstore fuse: upload failed, will retry", "inode", k.ino, "block", k.idx, "attempt", b.fails, "err", err)
	if st.blocks[k.idx] == b {
		f.up.retry(k, min(time.Duration(b.fails)*time.Second, 30*time.Second))
	}
}

// flush makes everything written to the file so far durable in healstore:
// it uploads the file's dirty blocks, waits for them, and commits the
// inode. It fails when an upload fails or OpTimeout passes; the data then
// stays in the cache and is retried in the background.
func (f *filesystem) flush(st *inodeState) error {
	ctx, cancel := f.opCtx()
	defer cancel()
	st.mu.Lock()
	defer st.mu.Unlock()
	return f.flushLocked(ctx, st)
}

func (f *filesystem) flushLocked(ctx context.Context, st *inodeState) error {
	if err := waitLocked(ctx, st, func() bool { return !st.trimming }); err != nil {
		return err
	}
	if st.gone {
		return nil
	}
	// What the file holds up to this size now is in healstore once the
	// uploads below end, whatever writes come meanwhile; a truncate
	// meanwhile voids that (it may cut and regrow the range).
	size, cuts := st.rec.Size, st.cuts
	type want struct {
		b   *cblock
		gen uint64
	}
	wants := map[uint64]want{}
	for idx, b := range st.blocks {
		if b.dirty() {
			wants[idx] = want{b, b.gen}
		}
	}
	if len(wants) > 0 {
		st.flushing++
		defer func() { st.flushing-- }()
		for idx := range wants {
			f.up.add(blockKey{st.ino, idx}, true)
		}
		seq := st.errSeq
		var failed error
		done := func() bool {
			if st.errSeq != seq {
				failed = st.lastErr
				return true
			}
			for idx, w := range wants {
				if st.blocks[idx] == w.b && w.b.upGen < w.gen {
					return false
				}
			}
			return true
		}
		if err := waitLocked(ctx, st, done); err != nil {
			return fmt.Errorf("flush inode %d: %d blocks not uploaded: %w", st.ino, len(wants), err)
		}
		if failed != nil {
			return fmt.Errorf("flush inode %d: %w", st.ino, failed)
		}
	}
	if st.attrDirty || st.sizePending {
		if st.cuts != cuts {
			size = 0
		}
		return f.commitLocked(ctx, st, size)
	}
	return nil
}

// dirtyInodes returns the live states with anything not yet in healstore,
// each with a reference.
func (f *filesystem) dirtyInodes() []*inodeState {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*inodeState
	for _, st := range f.inodes {
		if !st.mu.TryLock() {
			st.refs++
			out = append(out, st) // busy: flush it to be sure
			continue
		}
		if len(st.blocks) > 0 || st.attrDirty || st.sizePending {
			st.refs++
			out = append(out, st)
		}
		st.mu.Unlock()
	}
	return out
}

// flushAll flushes every file with pending data, a few at a time, and
// returns the first error.
func (f *filesystem) flushAll(ctx context.Context) error {
	sts := f.dirtyInodes()
	sem := make(chan struct{}, f.opts.UploadWorkers)
	errs := make(chan error, len(sts))
	for _, st := range sts {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			defer f.put(st)
			st.mu.Lock()
			err := f.flushLocked(ctx, st)
			st.mu.Unlock()
			errs <- err
		}()
	}
	for range cap(sem) {
		sem <- struct{}{}
	}
	close(errs)
	var first error
	for err := range errs {
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}
