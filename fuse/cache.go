package fuse

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// cblock is one block held in the write-back cache: a file under
// CacheDir/blocks holding the block's current content (never past the
// file's size). A cblock exists only while its content is not yet in
// healstore, or is being uploaded; once uploaded and unchanged it leaves
// the disk cache. Guarded by the inode's mutex.
type cblock struct {
	f      *os.File
	path   string
	length int64  // bytes of content
	gen    uint64 // generation of the content (global counter)
	upGen  uint64 // newest generation known to be in healstore
	// inflight is the generation an upload is carrying, 0 if none.
	inflight uint64
	// removed: the block left the cache while an upload read it; the
	// upload closes the file when it ends.
	removed bool
	charge  int64 // bytes charged to the dirty budget
	fails   int   // failed uploads in a row
	since   time.Time
	// written holds the byte ranges writes covered since the block
	// entered the cache, merged and sorted; dropped once they cover the
	// block, or once there are too many to track.
	written   [][2]int64
	untracked bool
}

func (b *cblock) dirty() bool { return b.gen > b.upGen }

// maxWrittenRanges bounds the ranges cover keeps per block; a block
// written in more scattered pieces waits for the write-back delay.
const maxWrittenRanges = 32

// cover records that [lo, hi) was written and reports whether writes now
// cover the whole block of size bs (once: later calls report false).
func (b *cblock) cover(lo, hi, bs int64) bool {
	if b.untracked {
		return false
	}
	r := b.written
	i := 0
	for i < len(r) && r[i][1] < lo {
		i++
	}
	j := i
	for j < len(r) && r[j][0] <= hi {
		lo, hi = min(lo, r[j][0]), max(hi, r[j][1])
		j++
	}
	merged := append(append(append([][2]int64{}, r[:i]...), [2]int64{lo, hi}), r[j:]...)
	b.written = merged
	switch {
	case len(merged) == 1 && merged[0][0] == 0 && merged[0][1] >= bs:
		b.written, b.untracked = nil, true
		return true
	case len(merged) > maxWrittenRanges:
		b.written, b.untracked = nil, true
	}
	return false
}

// dirtyBudget bounds the bytes of dirty blocks on local disk. Writers
// reserve before they create cache blocks and wait when it is full; the
// uploader treats waiting writers as pressure to upload the oldest blocks
// first.
type dirtyBudget struct {
	mu      sync.Mutex
	cond    *sync.Cond
	limit   int64
	used    int64
	waiters int
}

func newDirtyBudget(limit int64) *dirtyBudget {
	d := &dirtyBudget{limit: limit}
	d.cond = sync.NewCond(&d.mu)
	return d
}

// reserve takes n bytes, waiting until they fit or ctx ends. When nothing
// is in use a reservation always succeeds, so one write larger than the
// whole budget still makes progress. kick is called while waiting, to ask
// the uploader to make room.
func (d *dirtyBudget) reserve(ctx context.Context, n int64, kick func()) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.used+n <= d.limit || d.used == 0 {
		d.used += n
		return nil
	}
	d.waiters++
	defer func() { d.waiters-- }()
	stop := context.AfterFunc(ctx, func() {
		d.mu.Lock()
		d.cond.Broadcast()
		d.mu.Unlock()
	})
	defer stop()
	fits := func() bool { return d.used+n <= d.limit || d.used == 0 }
	for !fits() {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("write-back cache full (%d of %d bytes not yet uploaded): %w", d.used, d.limit, err)
		}
		d.mu.Unlock()
		kick()
		d.mu.Lock()
		if !fits() && ctx.Err() == nil {
			d.cond.Wait()
		}
	}
	d.used += n
	return nil
}

// take charges n bytes without waiting (blocks replayed at mount).
func (d *dirtyBudget) take(n int64) {
	d.mu.Lock()
	d.used += n
	d.mu.Unlock()
}

func (d *dirtyBudget) release(n int64) {
	if n == 0 {
		return
	}
	d.mu.Lock()
	d.used -= n
	if d.used < 0 {
		panic("fuse: dirty budget below zero")
	}
	d.cond.Broadcast()
	d.mu.Unlock()
}

// pressure reports whether uploads should not wait for the write-back
// delay: writers are waiting, or the budget is three quarters full.
func (d *dirtyBudget) pressure() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.waiters > 0 || d.used*4 > d.limit*3
}

func (d *dirtyBudget) inUse() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.used
}

// blockPath is where block idx of inode ino is cached.
func blockPath(dir string, k blockKey) string {
	return filepath.Join(dir, "blocks", fmt.Sprintf("%016x-%016x", k.ino, k.idx))
}

// parseBlockName is the inverse of blockPath's file name. It accepts only
// the name blockPath gives: Sscanf alone also takes upper case hex, a
// leading space and junk after a shorter number, so other files would map
// onto a block's key.
func parseBlockName(name string) (blockKey, bool) {
	var k blockKey
	if len(name) != 33 || name[16] != '-' {
		return k, false
	}
	if _, err := fmt.Sscanf(name, "%016x-%016x", &k.ino, &k.idx); err != nil {
		return k, false
	}
	if fmt.Sprintf("%016x-%016x", k.ino, k.idx) != name {
		return blockKey{}, false
	}
	return k, true
}
