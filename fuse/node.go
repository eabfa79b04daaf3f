package fuse

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// node is one inode as go-fuse sees it; every operation goes to the
// filesystem core by inode number.
type node struct {
	fs.Inode
	f   *filesystem
	ino uint64
}

var (
	_ fs.NodeLookuper    = (*node)(nil)
	_ fs.NodeGetattrer   = (*node)(nil)
	_ fs.NodeSetattrer   = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeCreater     = (*node)(nil)
	_ fs.NodeReader      = (*node)(nil)
	_ fs.NodeWriter      = (*node)(nil)
	_ fs.NodeFlusher     = (*node)(nil)
	_ fs.NodeFsyncer     = (*node)(nil)
	_ fs.NodeReleaser    = (*node)(nil)
	_ fs.NodeAllocater   = (*node)(nil)
	_ fs.NodeMkdirer     = (*node)(nil)
	_ fs.NodeMknoder     = (*node)(nil)
	_ fs.NodeSymlinker   = (*node)(nil)
	_ fs.NodeReadlinker  = (*node)(nil)
	_ fs.NodeLinker      = (*node)(nil)
	_ fs.NodeUnlinker    = (*node)(nil)
	_ fs.NodeRmdirer     = (*node)(nil)
	_ fs.NodeRenamer     = (*node)(nil)
	_ fs.NodeReaddirer   = (*node)(nil)
	_ fs.NodeStatfser    = (*node)(nil)
	_ fs.NodeLseeker     = (*node)(nil)
	_ fs.NodeOnForgetter = (*node)(nil)
)

// handle is an open file.
type handle struct {
	st *inodeState
	mu sync.Mutex
	// last is the highest block the reader touched; streak counts reads
	// in or next to it, which turn read-ahead on.
	last   int64
	streak int
	// closed stops read-ahead from refilling for a released handle.
	closed bool
}

func caller(ctx context.Context) (uid, gid uint32) {
	if c, ok := gofuse.FromContext(ctx); ok {
		return c.Uid, c.Gid
	}
	return 0, 0
}

// child wraps st in a go-fuse inode and fills out.
func (n *node) child(ctx context.Context, st *inodeState, out *gofuse.EntryOut) *fs.Inode {
	st.mu.Lock()
	n.f.fillAttr(st, &out.Attr)
	mode := st.rec.Mode
	st.mu.Unlock()
	return n.NewInode(ctx, &node{f: n.f, ino: st.ino}, fs.StableAttr{Mode: mode & syscall.S_IFMT, Ino: st.ino})
}

func (n *node) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	lctx, cancel := n.f.opCtx()
	defer cancel()
	st, err := n.f.lookup(lctx, n.ino, name)
	if err != nil {
		return nil, n.f.errno("lookup", err)
	}
	defer n.f.put(st)
	return n.child(ctx, st, out), 0
}

// state returns this node's inode state with a reference.
func (n *node) state() (*inodeState, syscall.Errno) {
	ctx, cancel := n.f.opCtx()
	defer cancel()
	st, err := n.f.get(ctx, n.ino)
	if err != nil {
		return nil, n.f.errno("getattr", err)
	}
	return st, 0
}

func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	if h, ok := fh.(*handle); ok {
		h.st.mu.Lock()
		n.f.fillAttr(h.st, &out.Attr)
		h.st.mu.Unlock()
		return 0
	}
	st, errno := n.state()
	if errno != 0 {
		return errno
	}
	defer n.f.put(st)
	st.mu.Lock()
	n.f.fillAttr(st, &out.Attr)
	st.mu.Unlock()
	return 0
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *gofuse.SetAttrIn, out *gofuse.AttrOut) syscall.Errno {
	st, errno := n.state()
	if errno != 0 {
		return errno
	}
	defer n.f.put(st)
	if err := n.f.setattr(st, in); err != nil {
		return n.f.errno("setattr", err)
	}
	st.mu.Lock()
	n.f.fillAttr(st, &out.Attr)
	st.mu.Unlock()
	return 0
}

// openFlags keep the kernel's page cache across opens: this mount is the
// only writer, so what the kernel cached is still what the file holds.
const openFlags = gofuse.FOPEN_KEEP_CACHE

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	st, errno := n.state()
	if errno != 0 {
		return nil, 0, errno
	}
	st.mu.Lock()
	reg := st.rec.isReg()
	st.mu.Unlock()
	if !reg {
		n.f.put(st)
		return nil, 0, syscall.EINVAL
	}
	n.f.open(st)
	return &handle{st: st}, openFlags, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *gofuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	uid, gid := caller(ctx)
	rec := inode{Mode: syscall.S_IFREG | mode&0o7777, Uid: uid, Gid: gid, Nlink: 1, BlockSize: uint32(n.f.opts.BlockSize)}
	st, err := n.f.create(n.ino, name, rec)
	if err != nil {
		return nil, nil, 0, n.f.errno("create", err)
	}
	n.f.open(st)
	return n.child(ctx, st, out), &handle{st: st}, openFlags, 0
}

func (n *node) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (gofuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*handle)
	if !ok {
		return nil, syscall.EBADF
	}
	if n.f.opts.ReadAhead > 0 && len(dest) > 0 {
		// Sequential at block granularity: the kernel's own read-ahead
		// sends several reads at once, which arrive out of order.
		bs := int64(h.st.blockSize())
		first, last := off/bs, (off+int64(len(dest))-1)/bs
		h.mu.Lock()
		if off == 0 || (first >= h.last-1 && first <= h.last+1) {
			h.streak++
			h.last = max(h.last, last)
		} else {
			h.streak = 0
			h.last = last
		}
		seq := h.streak >= 2
		h.mu.Unlock()
		if seq {
			// Ask before reading, so the next blocks come in while this
			// one is fetched.
			n.f.readAhead(h)
			// A block well behind a sequential reader is done with (the
			// kernel's page cache has it): make room for read-ahead. The
			// kernel's read-ahead sends reads out of order up to its
			// window ahead of the reader, so the block kept behind the
			// furthest read covers that window too.
			if behind := first - 2 - roundUp(min(n.f.opts.ReadAhead, maxKernelReadAhead), bs)/bs; behind >= 0 {
				n.f.rcache.drop(blockKey{h.st.ino, uint64(behind)})
			}
		}
	}
	data, err := n.f.readView(h.st, dest, off)
	if err != nil {
		return nil, n.f.errno("read", err)
	}
	return gofuse.ReadResultData(data), 0
}

func (n *node) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	h, ok := fh.(*handle)
	if !ok {
		return 0, syscall.EBADF
	}
	cnt, err := n.f.write(h.st, data, off)
	if err != nil {
		return 0, n.f.errno("write", err)
	}
	return uint32(cnt), 0
}

// Flush runs at every close(2): the data written so far is in healstore
// when close returns.
func (n *node) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	h, ok := fh.(*handle)
	if !ok {
		return 0
	}
	return n.f.errno("close", n.f.flush(h.st))
}

func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if h, ok := fh.(*handle); ok {
		return n.f.errno("fsync", n.f.flush(h.st))
	}
	st, errno := n.state()
	if errno != 0 {
		return errno
	}
	defer n.f.put(st)
	return n.f.errno("fsync", n.f.flush(st))
}

func (n *node) Release(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	if h, ok := fh.(*handle); ok {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		n.f.release(h.st)
		n.f.put(h.st)
	}
	return 0
}

// OnForget reclaims a special file or symlink unlinked while the kernel
// held it: a FIFO open in a process keeps working (fstat, fchmod) until
// closed, as on a local disk, and the kernel forgets it only after that.
// (Regular files go at their last release instead.) An orphan whose state
// left memory meanwhile is reclaimed at the next mount.
func (n *node) OnForget() {
	if m := n.StableAttr().Mode; m == syscall.S_IFREG || m == syscall.S_IFDIR {
		return
	}
	st := n.f.lookupLive(n.ino)
	if st == nil {
		return
	}
	st.mu.Lock()
	orphan := st.rec.Nlink == 0 && !st.gone
	st.mu.Unlock()
	n.f.put(st)
	if orphan {
		n.f.reapAsync(n.ino)
	}
}

// Lseek answers ENOSYS, so the kernel stops asking and answers SEEK_DATA
// and SEEK_HOLE itself from its own size (the whole file is data, the one
// hole is at the end; POSIX allows that). go-fuse's own answer uses the
// size this process knows, which lags the kernel's while writes sit in its
// write-back cache: a SEEK_DATA into data just written failed with ENXIO.
func (n *node) Lseek(ctx context.Context, fh fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	return 0, syscall.ENOSYS
}

func (n *node) Allocate(ctx context.Context, fh fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	st, errno := n.state()
	if errno != 0 {
		return errno
	}
	defer n.f.put(st)
	return n.f.errno("fallocate", n.f.allocate(st, off, size, mode))
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	uid, gid := caller(ctx)
	st, err := n.f.create(n.ino, name, inode{Mode: syscall.S_IFDIR | mode&0o7777, Uid: uid, Gid: gid, Nlink: 2})
	if err != nil {
		return nil, n.f.errno("mkdir", err)
	}
	defer n.f.put(st)
	return n.child(ctx, st, out), 0
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	uid, gid := caller(ctx)
	rec := inode{Mode: mode, Uid: uid, Gid: gid, Nlink: 1, Rdev: dev}
	if rec.isReg() {
		rec.BlockSize = uint32(n.f.opts.BlockSize)
	}
	if rec.isDir() || rec.isLink() {
		return nil, syscall.EINVAL
	}
	st, err := n.f.create(n.ino, name, rec)
	if err != nil {
		return nil, n.f.errno("mknod", err)
	}
	defer n.f.put(st)
	return n.child(ctx, st, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	uid, gid := caller(ctx)
	rec := inode{Mode: syscall.S_IFLNK | 0o777, Uid: uid, Gid: gid, Nlink: 1, Target: target, Size: uint64(len(target))}
	st, err := n.f.create(n.ino, name, rec)
	if err != nil {
		return nil, n.f.errno("symlink", err)
	}
	defer n.f.put(st)
	return n.child(ctx, st, out), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	st, errno := n.state()
	if errno != 0 {
		return nil, errno
	}
	defer n.f.put(st)
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.rec.isLink() {
		return nil, syscall.EINVAL
	}
	return []byte(st.rec.Target), 0
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	st, err := n.f.link(n.ino, name, t.ino)
	if err != nil {
		return nil, n.f.errno("link", err)
	}
	defer n.f.put(st)
	return n.child(ctx, st, out), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.f.errno("unlink", n.f.unlinkEntry(n.ino, name, false))
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.f.errno("rmdir", n.f.unlinkEntry(n.ino, name, true))
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	return n.f.errno("rename", n.f.rename(n.ino, name, np.ino, newName, flags))
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ents, err := n.f.readdir(n.ino)
	if err != nil {
		return nil, n.f.errno("readdir", err)
	}
	parent := n.ino
	if _, p := n.Parent(); p != nil {
		parent = p.StableAttr().Ino
	}
	dots := []gofuse.DirEntry{
		{Name: ".", Ino: n.ino, Mode: syscall.S_IFDIR},
		{Name: "..", Ino: parent, Mode: syscall.S_IFDIR},
	}
	return fs.NewListDirStream(append(dots, ents...)), 0
}

func (n *node) Statfs(ctx context.Context, out *gofuse.StatfsOut) syscall.Errno {
	n.f.statfs(out)
	return 0
}
