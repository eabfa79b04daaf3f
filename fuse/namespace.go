package fuse

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// fillAttr reports st as the kernel sees it. Called with st.mu held.
func (f *filesystem) fillAttr(st *inodeState, a *gofuse.Attr) {
	r := &st.rec
	a.Ino = st.ino
	a.Mode = r.Mode
	a.Size = r.Size
	a.Nlink = r.Nlink
	a.Uid, a.Gid = r.Uid, r.Gid
	a.Rdev = r.Rdev
	a.Atime, a.Atimensec = uint64(r.Atime/1e9), uint32(r.Atime%1e9)
	a.Mtime, a.Mtimensec = uint64(r.Mtime/1e9), uint32(r.Mtime%1e9)
	a.Ctime, a.Ctimensec = uint64(r.Ctime/1e9), uint32(r.Ctime%1e9)
	a.Blksize = 1 << 20
	switch {
	case r.isDir():
		a.Size = 4096
		a.Blocks = 8
	default:
		a.Blocks = (r.Size + 511) / 512
	}
}

// lookup finds name in directory parent and returns its state with a
// reference.
func (f *filesystem) lookup(ctx context.Context, parent uint64, name string) (*inodeState, error) {
	if len(name) > maxName {
		return nil, syscall.ENAMETOOLONG
	}
	d, ok, err := f.entry(ctx, parent, name)
	if err != nil {
		return nil, fmt.Errorf("lookup: %w", err)
	}
	if !ok {
		return nil, syscall.ENOENT
	}
	return f.get(ctx, d.ino)
}

// txn changes several inodes and directory entries in one metastore
// commit. It locks the inodes involved in ascending order (metaMu must be
// held), remembers their records so a failed commit leaves memory as it
// was, and stages each changed inode once.
type txn struct {
	f       *filesystem
	b       kvBatch
	sts     []*inodeState
	saved   map[*inodeState]inode
	changed map[*inodeState]bool
	removed map[*inodeState]bool
}

func (f *filesystem) lockTxn(sts ...*inodeState) *txn {
	t := &txn{f: f, saved: map[*inodeState]inode{}, changed: map[*inodeState]bool{}, removed: map[*inodeState]bool{}}
	for _, st := range sts {
		if st != nil && !slices.Contains(t.sts, st) {
			t.sts = append(t.sts, st)
		}
	}
	slices.SortFunc(t.sts, func(a, b *inodeState) int {
		switch {
		case a.ino < b.ino:
			return -1
		case a.ino > b.ino:
			return 1
		}
		return 0
	})
	for _, st := range t.sts {
		st.mu.Lock()
		t.saved[st] = st.rec
	}
	return t
}

func (t *txn) unlock() {
	for i := len(t.sts) - 1; i >= 0; i-- {
		t.sts[i].mu.Unlock()
	}
}

// touch marks st changed and returns its record to modify.
func (t *txn) touch(st *inodeState) *inode {
	t.changed[st] = true
	return &st.rec
}

// remove deletes st's record in the commit.
func (t *txn) remove(st *inodeState) {
	t.removed[st] = true
	t.b.expect(inodeKey(st.ino), st.raw)
	t.b.del(inodeKey(st.ino))
}

func (t *txn) commit(ctx context.Context) error {
	type staged struct {
		rec inode
		raw []byte
	}
	raws := map[*inodeState]staged{}
	for _, st := range t.sts {
		if t.changed[st] && !t.removed[st] {
			rec, raw := t.f.stageLocked(&t.b, st, 0)
			raws[st] = staged{rec, raw}
		}
	}
	if err := t.f.kv.Commit(ctx, &t.b); err != nil {
		for _, st := range t.sts {
			st.rec = t.saved[st]
		}
		return err
	}
	for st, sg := range raws {
		t.f.committedLocked(st, sg.rec, sg.raw)
	}
	for st := range t.removed {
		st.gone = true
		st.attrDirty, st.sizePending = false, false
	}
	return nil
}

// checkDirLocked says whether d can receive a new entry.
func checkDirLocked(d *inodeState) error {
	if !d.rec.isDir() {
		return syscall.ENOTDIR
	}
	if d.gone || d.rec.Nlink == 0 {
		return syscall.ENOENT
	}
	return nil
}

// entry reads and decodes the entry name of parent; ok is false when
// there is none.
func (f *filesystem) entry(ctx context.Context, parent uint64, name string) (d dirent, ok bool, err error) {
	raw, err := f.kv.Get(ctx, direntKey(parent, name))
	if errors.Is(err, errNoKey) {
		return dirent{}, false, nil
	}
	if err == nil {
		d, err = decodeDirent(raw)
	}
	if err != nil {
		return dirent{}, false, fmt.Errorf("entry %q in %d: %w", name, parent, err)
	}
	return d, true, nil
}

// create adds a new inode rec under name in parent (a file, directory,
// symlink or special file) and returns its state with a reference.
func (f *filesystem) create(parent uint64, name string, rec inode) (*inodeState, error) {
	if len(name) > maxName {
		return nil, syscall.ENAMETOOLONG
	}
	ctx, cancel := f.opCtx()
	defer cancel()
	f.metaMu.Lock()
	defer f.metaMu.Unlock()
	pst, err := f.get(ctx, parent)
	if err != nil {
		return nil, err
	}
	defer f.put(pst)
	t := f.lockTxn(pst)
	defer t.unlock()
	if err := checkDirLocked(pst); err != nil {
		return nil, err
	}
	if _, ok, err := f.entry(ctx, parent, name); err != nil {
		return nil, err
	} else if ok {
		return nil, syscall.EEXIST
	}
	ino, err := f.allocIno(ctx)
	if err != nil {
		return nil, err
	}
	now := nowNs()
	rec.Atime, rec.Mtime, rec.Ctime = now, now, now
	if pst.rec.Mode&syscall.S_ISGID != 0 {
		rec.Gid = pst.rec.Gid
		if rec.isDir() {
			rec.Mode |= syscall.S_ISGID
		}
	}
	raw := rec.encode()
	t.b.expectMissing(inodeKey(ino))
	t.b.put(inodeKey(ino), raw)
	dk := direntKey(parent, name)
	t.b.expectMissing(dk)
	t.b.put(dk, dirent{ino: ino, mode: rec.Mode & syscall.S_IFMT}.encode())
	p := t.touch(pst)
	p.Mtime, p.Ctime = now, now
	if rec.isDir() {
		p.Nlink++
	}
	if err := t.commit(ctx); err != nil {
		return nil, fmt.Errorf("create %q in %d: %w", name, parent, err)
	}
	return f.installNew(ino, &rec, raw), nil
}

// link adds name in parent for the existing inode ino.
func (f *filesystem) link(parent uint64, name string, ino uint64) (*inodeState, error) {
	if len(name) > maxName {
		return nil, syscall.ENAMETOOLONG
	}
	ctx, cancel := f.opCtx()
	defer cancel()
	f.metaMu.Lock()
	defer f.metaMu.Unlock()
	pst, err := f.get(ctx, parent)
	if err != nil {
		return nil, err
	}
	defer f.put(pst)
	st, err := f.get(ctx, ino)
	if err != nil {
		return nil, err
	}
	t := f.lockTxn(pst, st)
	defer t.unlock()
	if err := checkDirLocked(pst); err != nil {
		f.put(st)
		return nil, err
	}
	if st.rec.isDir() {
		f.put(st)
		return nil, syscall.EPERM
	}
	if st.gone || st.rec.Nlink == 0 {
		f.put(st)
		return nil, syscall.ENOENT
	}
	if _, ok, err := f.entry(ctx, parent, name); err != nil {
		f.put(st)
		return nil, err
	} else if ok {
		f.put(st)
		return nil, syscall.EEXIST
	}
	now := nowNs()
	dk := direntKey(parent, name)
	t.b.expectMissing(dk)
	t.b.put(dk, dirent{ino: ino, mode: st.rec.Mode & syscall.S_IFMT}.encode())
	r := t.touch(st)
	r.Nlink++
	r.Ctime = now
	p := t.touch(pst)
	p.Mtime, p.Ctime = now, now
	if err := t.commit(ctx); err != nil {
		f.put(st)
		return nil, fmt.Errorf("link %q in %d: %w", name, parent, err)
	}
	return st, nil
}

// unlinkEntry removes the entry name of parent, which holds a non-directory
// (dir=false) or an empty directory (dir=true).
func (f *filesystem) unlinkEntry(parent uint64, name string, dir bool) error {
	ctx, cancel := f.opCtx()
	defer cancel()
	f.metaMu.Lock()
	defer f.metaMu.Unlock()
	pst, err := f.get(ctx, parent)
	if err != nil {
		return err
	}
	defer f.put(pst)
	d, ok, err := f.entry(ctx, parent, name)
	if err != nil {
		return err
	}
	if !ok {
		return syscall.ENOENT
	}
	cst, err := f.get(ctx, d.ino)
	if err != nil {
		return err
	}
	defer f.put(cst)
	if dir {
		empty, err := f.dirEmpty(ctx, d.ino)
		if err != nil {
			return err
		}
		if !empty {
			return syscall.ENOTEMPTY
		}
	}
	t := f.lockTxn(pst, cst)
	defer t.unlock()
	switch {
	case dir && !cst.rec.isDir():
		return syscall.ENOTDIR
	case !dir && cst.rec.isDir():
		return syscall.EISDIR
	}
	now := nowNs()
	dk := direntKey(parent, name)
	t.b.expect(dk, d.encode()) // what decodeDirent took is exactly its encoding
	t.b.del(dk)
	p := t.touch(pst)
	p.Mtime, p.Ctime = now, now
	orphan := false
	if dir {
		p.Nlink--
		t.remove(cst)
	} else {
		orphan = f.dropLinkLocked(t, cst, now)
	}
	if err := t.commit(ctx); err != nil {
		return fmt.Errorf("remove %q from %d: %w", name, parent, err)
	}
	if dir {
		cst.rec.Nlink = 0
	}
	// A special file or symlink has no FUSE handle to keep it: the
	// kernel may still hold it open (a FIFO), so it goes when the kernel
	// forgets it (node.OnForget).
	if orphan && cst.open == 0 && cst.rec.isReg() {
		f.reapAsync(cst.ino)
	}
	return nil
}

// dropLinkLocked takes one link from a non-directory in t; when the last
// goes, the inode becomes an orphan whose data is reclaimed once no handle
// holds it open. It reports whether that happened.
func (f *filesystem) dropLinkLocked(t *txn, st *inodeState, now int64) bool {
	r := t.touch(st)
	if r.Nlink > 0 {
		r.Nlink--
	}
	r.Ctime = now
	if r.Nlink == 0 {
		t.b.put(orphanKey(st.ino), nil)
		return true
	}
	return false
}

func (f *filesystem) dirEmpty(ctx context.Context, ino uint64) (bool, error) {
	empty := true
	err := f.kv.Scan(ctx, direntPrefix(ino), nil, func(k, v []byte) error {
		empty = false
		return errStop
	})
	if err != nil {
		return false, fmt.Errorf("list directory %d: %w", ino, err)
	}
	return empty, nil
}

// Rename flags (renameat2).
const (
	renameNoReplace = 1 // RENAME_NOREPLACE
	renameExchange  = 2 // RENAME_EXCHANGE
)

// rename moves oldName in oldParent to newName in newParent, replacing a
// target of the same kind (an empty directory, or a non-directory), or
// swapping the two with renameExchange.
func (f *filesystem) rename(oldParent uint64, oldName string, newParent uint64, newName string, flags uint32) error {
	if flags&^(renameNoReplace|renameExchange) != 0 || flags == renameNoReplace|renameExchange {
		return syscall.EINVAL
	}
	if len(newName) > maxName {
		return syscall.ENAMETOOLONG
	}
	ctx, cancel := f.opCtx()
	defer cancel()
	f.metaMu.Lock()
	defer f.metaMu.Unlock()
	opst, err := f.get(ctx, oldParent)
	if err != nil {
		return err
	}
	defer f.put(opst)
	npst, err := f.get(ctx, newParent)
	if err != nil {
		return err
	}
	defer f.put(npst)
	sd, ok, err := f.entry(ctx, oldParent, oldName)
	if err != nil {
		return err
	}
	if !ok {
		return syscall.ENOENT
	}
	dd, exists, err := f.entry(ctx, newParent, newName)
	if err != nil {
		return err
	}
	if exists {
		if dd.ino == sd.ino {
			return nil // two names of one inode: rename does nothing
		}
	}
	switch {
	case flags&renameNoReplace != 0 && exists:
		return syscall.EEXIST
	case flags&renameExchange != 0 && !exists:
		return syscall.ENOENT
	}
	if exists && flags&renameExchange == 0 {
		switch sdir, ddir := sd.mode == syscall.S_IFDIR, dd.mode == syscall.S_IFDIR; {
		case sdir && !ddir:
			return syscall.ENOTDIR
		case !sdir && ddir:
			return syscall.EISDIR
		}
	}
	sst, err := f.get(ctx, sd.ino)
	if err != nil {
		return err
	}
	defer f.put(sst)
	var dst *inodeState
	if exists {
		if dst, err = f.get(ctx, dd.ino); err != nil {
			return err
		}
		defer f.put(dst)
		if flags&renameExchange == 0 && dst.rec.isDir() {
			empty, err := f.dirEmpty(ctx, dd.ino)
			if err != nil {
				return err
			}
			if !empty {
				return syscall.ENOTEMPTY
			}
		}
	}
	t := f.lockTxn(opst, npst, sst, dst)
	defer t.unlock()
	if err := checkDirLocked(npst); err != nil {
		return err
	}
	sdir := sst.rec.isDir()
	now := nowNs()
	sk, dk := direntKey(oldParent, oldName), direntKey(newParent, newName)
	t.b.expect(sk, sd.encode())
	if exists {
		t.b.expect(dk, dd.encode())
	} else {
		t.b.expectMissing(dk)
	}
	op, np := t.touch(opst), t.touch(npst)
	op.Mtime, op.Ctime, np.Mtime, np.Ctime = now, now, now, now
	t.touch(sst).Ctime = now
	orphan := false
	if flags&renameExchange != 0 {
		t.b.put(sk, dd.encode())
		t.b.put(dk, sd.encode())
		t.touch(dst).Ctime = now
		if ddir := dst.rec.isDir(); sdir != ddir && opst != npst {
			if sdir {
				op.Nlink--
				np.Nlink++
			} else {
				np.Nlink--
				op.Nlink++
			}
		}
	} else {
		if exists {
			if dst.rec.isDir() {
				np.Nlink--
				t.remove(dst)
			} else {
				orphan = f.dropLinkLocked(t, dst, now)
			}
		}
		t.b.del(sk)
		t.b.put(dk, sd.encode())
		if sdir && opst != npst {
			op.Nlink--
			np.Nlink++
		}
	}
	if err := t.commit(ctx); err != nil {
		return fmt.Errorf("rename %q to %q: %w", oldName, newName, err)
	}
	if exists && t.removed[dst] {
		dst.rec.Nlink = 0
	}
	if orphan && dst.open == 0 && dst.rec.isReg() { // others: node.OnForget
		f.reapAsync(dst.ino)
	}
	return nil
}

// readdir lists a directory.
func (f *filesystem) readdir(ino uint64) ([]gofuse.DirEntry, error) {
	ctx, cancel := f.opCtx()
	defer cancel()
	var out []gofuse.DirEntry
	pfx := direntPrefix(ino)
	err := f.kv.Scan(ctx, pfx, nil, func(k, v []byte) error {
		d, err := decodeDirent(v)
		if err != nil {
			return fmt.Errorf("entry %q: %w", k[len(pfx):], err)
		}
		out = append(out, gofuse.DirEntry{Name: string(k[len(pfx):]), Ino: d.ino, Mode: d.mode})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list directory %d: %w", ino, err)
	}
	return out, nil
}

// setattr applies chmod, chown, truncate and utimes.
// isTimeFlush tells the kernel's write-back of a file's cached times (a
// SETATTR of mtime and ctime through an open file handle, sent while it
// writes back cached data, at fsync and before close) from a user's
// utimes or chmod, which come without a file handle (only ftruncate
// passes one, with a size).
func isTimeFlush(in *gofuse.SetAttrIn) bool {
	const want = gofuse.FATTR_MTIME | gofuse.FATTR_FH
	return in.Valid&want == want && in.Valid&^(want|gofuse.FATTR_CTIME) == 0
}

func (f *filesystem) setattr(st *inodeState, in *gofuse.SetAttrIn) error {
	ctx, cancel := f.opCtx()
	defer cancel()
	size, hasSize := in.GetSize()
	var reserved int64
	if hasSize {
		reserved = f.charge(st.blockSize())
		if err := f.budget.reserve(ctx, reserved, f.up.kick); err != nil {
			return err
		}
		defer func() { f.budget.release(max(reserved, 0)) }()
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.gone {
		return syscall.ENOENT
	}
	if isTimeFlush(in) && st.rec.isReg() {
		// With its write-back cache the kernel keeps the times of the
		// writes it caches and hands them over like this while it writes
		// the data back, many times during one long write. They belong to
		// that data: committed with it at fsync and close, as the times
		// a write sets itself are, not one metastore commit each (which
		// would hold the inode, and so every write, for the commit).
		t, _ := in.GetMTime()
		st.rec.Mtime = t.UnixNano()
		if t, ok := in.GetCTime(); ok {
			st.rec.Ctime = t.UnixNano()
		}
		st.attrDirty = true
		return nil
	}
	saved := st.rec
	now := nowNs()
	if mode, ok := in.GetMode(); ok {
		st.rec.Mode = st.rec.Mode&syscall.S_IFMT | mode&0o7777
	}
	if uid, ok := in.GetUID(); ok {
		st.rec.Uid = uid
	}
	if gid, ok := in.GetGID(); ok {
		st.rec.Gid = gid
	}
	if t, ok := in.GetATime(); ok {
		st.rec.Atime = t.UnixNano()
	}
	if t, ok := in.GetMTime(); ok {
		st.rec.Mtime = t.UnixNano()
	}
	st.rec.Ctime = now
	if t, ok := in.GetCTime(); ok {
		st.rec.Ctime = t.UnixNano()
	}
	if hasSize {
		switch {
		case st.rec.isDir():
			st.rec = saved
			return syscall.EISDIR
		case !st.rec.isReg():
			st.rec = saved
			return syscall.EINVAL
		}
		if _, ok := in.GetMTime(); !ok && size != st.rec.Size {
			st.rec.Mtime = now
		}
		if err := f.truncateLocked(ctx, st, size, &reserved); err != nil {
			// A failed setattr changes nothing: not the mode, owner or
			// times it also carried (a later commit of the inode would
			// have recorded them), whatever the truncate left of the size.
			st.rec.Mode, st.rec.Uid, st.rec.Gid = saved.Mode, saved.Uid, saved.Gid
			st.rec.Atime, st.rec.Mtime, st.rec.Ctime = saved.Atime, saved.Mtime, saved.Ctime
			return err
		}
	}
	st.attrDirty = true
	// The commit records a size only as far as the file's data is in
	// healstore (see commitSizeLocked): a chmod, chown or utimes of a
	// file with writes not yet uploaded past its committed size, or a
	// truncate that leaves such writes (or a cut block not yet uploaded)
	// below the new size, keeps the committed size; the new one stays
	// pending in memory and in the journal, and fsync or close commits
	// it. So neither a machine restart (the cache dropped) nor the loss
	// of the cache directory can leave a size whose blocks read as zeros
	// or as bytes a truncate cut away, and after a crash of the mount
	// process alone the journal replays the size with the cached blocks.
	if err := f.commitLocked(ctx, st, 0); err != nil {
		return err
	}
	return nil
}

// allocate implements fallocate for mode 0 (extend the size like a
// truncate up when the range passes the end) and FALLOC_FL_KEEP_SIZE (a
// no-op). Space is not reserved: healstore allocates at upload.
func (f *filesystem) allocate(st *inodeState, off, length uint64, mode uint32) error {
	const keepSize = 1 // FALLOC_FL_KEEP_SIZE
	if mode&^keepSize != 0 {
		return syscall.EOPNOTSUPP
	}
	if mode&keepSize != 0 {
		return nil
	}
	ctx, cancel := f.opCtx()
	defer cancel()
	reserved := f.charge(st.blockSize())
	if err := f.budget.reserve(ctx, reserved, f.up.kick); err != nil {
		return err
	}
	defer func() { f.budget.release(max(reserved, 0)) }()
	st.mu.Lock()
	defer st.mu.Unlock()
	if end := off + length; end > st.rec.Size {
		if err := f.truncateLocked(ctx, st, end, &reserved); err != nil {
			return err
		}
		st.rec.Ctime = nowNs()
		st.attrDirty = true
	}
	return nil
}

// open registers an open handle; release gives it back. The last release
// of an unlinked file reclaims its data.
func (f *filesystem) open(st *inodeState) {
	st.mu.Lock()
	st.open++
	st.mu.Unlock()
}

func (f *filesystem) release(st *inodeState) {
	st.mu.Lock()
	st.open--
	orphan := st.open == 0 && st.rec.Nlink == 0 && !st.gone && st.rec.isReg()
	st.mu.Unlock()
	if orphan {
		f.reapAsync(st.ino)
	}
}

func (f *filesystem) reapAsync(ino uint64) {
	f.bgWG.Add(1)
	go func() {
		defer f.bgWG.Done()
		ctx, cancel := f.opCtx()
		defer cancel()
		if err := f.reap(ctx, ino); err != nil {
			f.log.Warn("healstore fuse: reclaiming a deleted file failed; retried at the next mount", "inode", ino, "err", err)
		}
	}()
}

// reap deletes an orphan's blocks, then its record and orphan mark.
func (f *filesystem) reap(ctx context.Context, ino uint64) error {
	st, err := f.get(ctx, ino)
	if errors.Is(err, syscall.ENOENT) {
		var b kvBatch
		b.del(orphanKey(ino))
		return f.kv.Commit(ctx, &b)
	}
	if err != nil {
		return err
	}
	defer f.put(st)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.gone || st.open > 0 {
		return nil
	}
	if st.rec.Nlink > 0 {
		var b kvBatch
		b.del(orphanKey(ino))
		return f.kv.Commit(ctx, &b)
	}
	for idx, b := range st.blocks {
		f.removeBlockLocked(st, idx, b)
	}
	f.noteJournalErr(f.journal.forget(ino))
	f.rcache.dropFrom(ino, 0)
	st.trimming = true
	defer func() {
		st.trimming = false
		st.cond.Broadcast()
	}()
	if err := waitLocked(ctx, st, func() bool { return st.uploads == 0 }); err != nil {
		return err
	}
	st.mu.Unlock()
	err = f.deleteBlocksFrom(ctx, ino, 0)
	st.mu.Lock()
	if err != nil {
		return err
	}
	var b kvBatch
	b.expect(inodeKey(ino), st.raw)
	b.del(inodeKey(ino))
	b.del(orphanKey(ino))
	if err := f.kv.Commit(ctx, &b); err != nil {
		return fmt.Errorf("delete inode %d: %w", ino, err)
	}
	st.gone = true
	st.attrDirty, st.sizePending = false, false
	f.rcache.dropFrom(ino, 0)
	return nil
}

// reapOrphans reclaims every orphan left by an earlier mount (files
// deleted while open when it ended).
func (f *filesystem) reapOrphans(ctx context.Context) error {
	var inos []uint64
	err := f.kv.Scan(ctx, []byte{pOrphan}, nil, func(k, v []byte) error {
		if len(k) == 9 {
			inos = append(inos, beU64(k[1:]))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list orphans: %w", err)
	}
	for _, ino := range inos {
		f.reapAsync(ino)
	}
	return nil
}

// statfs reports capacity from the store's backends (after erasure
// coding), asking at most every few seconds.
func (f *filesystem) statfs(out *gofuse.StatfsOut) {
	f.capMu.Lock()
	defer f.capMu.Unlock()
	if time.Since(f.capAt) > 10*time.Second {
		ctx, cancel := context.WithTimeout(f.bg, 10*time.Second)
		c, err := f.blobs.Capacity(ctx)
		cancel()
		if err != nil {
			f.log.Warn("healstore fuse: statfs", "err", err)
		} else {
			f.capLast, f.capAt = c, time.Now()
		}
	}
	const unit = 4096
	out.Bsize, out.Frsize, out.NameLen = unit, unit, maxName
	if f.capLast.Known {
		out.Blocks = f.capLast.Total / unit
		out.Bfree = f.capLast.Free / unit
	} else {
		// Unknown (S3 without quota): say "plenty" rather than "full".
		out.Blocks, out.Bfree = 1<<40, 1<<40
	}
	out.Bavail = out.Bfree
	out.Files, out.Ffree = 1<<40, 1<<40
}
