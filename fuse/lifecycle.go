package fuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"syscall"
)

// start replays what an earlier mount left in the write-back cache,
// creates the filesystem when it is new, and starts the uploader and the
// reclaiming of orphans.
func (f *filesystem) start(ctx context.Context, uid, gid uint32) error {
	if err := f.format(ctx, uid, gid); err != nil {
		return err
	}
	if err := f.replay(ctx); err != nil {
		return err
	}
	return f.reapOrphans(ctx)
}

// bootID identifies the running kernel boot; it changes when the machine
// restarts.
func bootID() []byte {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return nil
	}
	return bytes.TrimSpace(b)
}

// replay reads the journal and puts the blocks and sizes it lists back
// into the cache as dirty, to be uploaded again. The cache is trusted only
// on the boot that wrote it: a process crash leaves the page cache intact,
// a machine crash does not.
func (f *filesystem) replay(ctx context.Context) error {
	js, _, err := readJournal(filepath.Join(f.cacheDir, "journal"))
	if err != nil {
		return err
	}
	boot := f.bootID()
	bootFile := filepath.Join(f.cacheDir, "boot-id")
	prev, _ := os.ReadFile(bootFile)
	prev = bytes.TrimSpace(prev)
	switch {
	case len(js.dirty) == 0 && len(js.sizes) == 0:
	case len(boot) == 0:
		// Unknown boot (no boot_id): a crash of this process cannot be
		// told from a restart of the machine, so the cache is not trusted.
		f.log.Warn("healstore fuse: the last mount ended without unmounting and the boot id is unknown; dropping writes that were never fsynced",
			"blocks", len(js.dirty), "files", len(js.sizes))
		js = newJournalState()
	case !bytes.Equal(prev, boot):
		f.log.Warn("healstore fuse: the machine restarted since the last mount ended without unmounting; dropping writes that were never fsynced",
			"blocks", len(js.dirty), "files", len(js.sizes))
		js = newJournalState()
	}
	if err := os.WriteFile(bootFile, append(boot, '\n'), 0o600); err != nil {
		return fmt.Errorf("cache dir: %w", err)
	}
	blocksDir := filepath.Join(f.cacheDir, "blocks")
	ents, err := os.ReadDir(blocksDir)
	if err != nil {
		return fmt.Errorf("cache dir: %w", err)
	}
	have := map[blockKey]bool{}
	for _, e := range ents {
		k, ok := parseBlockName(e.Name())
		if _, dirty := js.dirty[k]; ok && dirty {
			have[k] = true
			continue
		}
		os.Remove(filepath.Join(blocksDir, e.Name()))
	}
	for k := range js.dirty {
		if !have[k] {
			f.log.Warn("healstore fuse: write-back cache file missing; its unsynced writes are lost", "inode", k.ino, "block", k.idx)
			delete(js.dirty, k)
		}
	}
	// The journal's mirror changes as soon as uploads start: work on copies.
	dirty, sizes := maps.Clone(js.dirty), maps.Clone(js.sizes)
	if f.journal, err = openJournal(f.cacheDir, js); err != nil {
		return err
	}
	f.up = newUploader(f, f.opts.UploadWorkers, f.opts.WritebackDelay)

	// Sizes first: they bound the blocks.
	for ino, size := range sizes {
		st, err := f.get(ctx, ino)
		if errors.Is(err, syscall.ENOENT) {
			f.noteJournalErr(f.journal.sizeSynced(ino))
			continue
		}
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		st.mu.Lock()
		if st.rec.isReg() && st.rec.Nlink > 0 {
			st.rec.Size = size
			st.attrDirty, st.sizePending = true, true
			st.staleBeyond = st.rec.Extent > blocksFor(size, st.rec.BlockSize)
		} else {
			f.noteJournalErr(f.journal.sizeSynced(ino))
		}
		st.mu.Unlock()
		f.put(st)
	}
	var maxGen uint64
	n := 0
	for k, gen := range dirty {
		maxGen = max(maxGen, gen)
		ok, err := f.replayBlock(ctx, k, gen)
		if err != nil {
			return err
		}
		if ok {
			n++
		}
	}
	f.gen.Store(maxGen)
	if n > 0 || len(sizes) > 0 {
		f.log.Info("healstore fuse: replaying the write-back cache of an earlier mount", "blocks", n, "files", len(sizes))
	}
	return nil
}

func (f *filesystem) replayBlock(ctx context.Context, k blockKey, gen uint64) (bool, error) {
	path := blockPath(f.cacheDir, k)
	drop := func() (bool, error) {
		os.Remove(path)
		f.noteJournalErr(f.journal.drop(k.ino, k.idx))
		return false, nil
	}
	st, err := f.get(ctx, k.ino)
	if errors.Is(err, syscall.ENOENT) {
		return drop()
	}
	if err != nil {
		return false, fmt.Errorf("replay: %w", err)
	}
	defer f.put(st)
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.rec.isReg() || st.rec.Nlink == 0 {
		return drop()
	}
	bs := uint64(st.rec.BlockSize)
	start := k.idx * bs
	if start >= st.rec.Size {
		return drop()
	}
	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Errorf("replay: %w", err)
	}
	fi, err := file.Stat()
	if err != nil {
		file.Close()
		return false, fmt.Errorf("replay: %w", err)
	}
	length := fi.Size()
	if limit := int64(min(bs, st.rec.Size-start)); length > limit {
		if err := file.Truncate(limit); err != nil {
			file.Close()
			return false, fmt.Errorf("replay: %w", err)
		}
		length = limit
	}
	b := &cblock{f: file, path: path, length: length, gen: gen, charge: f.charge(st.rec.BlockSize)}
	f.budget.take(b.charge)
	st.blocks[k.idx] = b
	f.up.add(k, true)
	return true, nil
}

// shutdown uploads everything pending, stops the background work and
// closes the cache. Whatever could not be uploaded stays in the cache for
// the next mount.
func (f *filesystem) shutdown(ctx context.Context) error {
	err := f.flushAll(ctx)
	f.bgWG.Wait()
	f.stopBg()
	if f.up != nil {
		f.up.wait()
	}
	f.mu.Lock()
	for _, st := range f.inodes {
		st.mu.Lock()
		for _, b := range st.blocks {
			b.f.Close()
		}
		st.mu.Unlock()
	}
	f.mu.Unlock()
	if f.journal != nil {
		if jerr := f.journal.close(); jerr != nil && err == nil {
			err = jerr
		}
	}
	return err
}
