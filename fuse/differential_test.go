package fuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDifferential runs one seeded random sequence of file-system calls
// both through a mount and in a directory on the local disk, and compares
// every result: the errno (exactly), the bytes a read returns, and at
// checkpoints the whole tree. A POSIX program sees the local disk's answer
// as the right one, so any difference is a bug of the mount unless an
// exemption below says why it is not.
//
// HEALSTORE_DIFF_SEED replays a sequence (the seed is logged);
// HEALSTORE_DIFF_OPS changes its length.
//
// Exemptions, each because POSIX leaves the answer to the filesystem:
//   - inode numbers, times, st_blocks and st_blksize (allocation);
//   - the size of a directory (ext4 reports its allocated blocks);
//   - SEEK_DATA and SEEK_HOLE: the mount reports a whole file as data
//     (the kernel's answer when a FUSE filesystem has no lseek), which
//     POSIX allows; the test checks the answer is a correct one for the
//     file's contents and that both fail alike (ENXIO past the end);
//   - lseek on a directory other than a rewind: its offsets are cookies
//     each filesystem makes up.
//
// Not called at all: fallocate's hole punching and extended attributes,
// which the mount does not offer (EOPNOTSUPP), as documented.
func TestDifferential(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("HEALSTORE_DIFF_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("HEALSTORE_DIFF_SEED: %v", err)
		}
		seed = v
	}
	nops := 500
	if s := os.Getenv("HEALSTORE_DIFF_OPS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("HEALSTORE_DIFF_OPS: %v", err)
		}
		nops = v
	}
	t.Logf("seed %d (replay with HEALSTORE_DIFF_SEED=%d), %d operations", seed, seed, nops)
	// With the kernel's write-back cache most reads and writes never
	// reach the mount; without it they all do.
	t.Run("kernel-writeback", func(t *testing.T) {
		runDifferential(t, seed, nops, Options{BlockSize: 64 << 10, CacheSize: 4 << 20})
	})
	t.Run("no-kernel-writeback", func(t *testing.T) {
		runDifferential(t, seed, nops, Options{BlockSize: 64 << 10, CacheSize: 4 << 20, NoKernelWriteback: true})
	})
}

func runDifferential(t *testing.T, seed uint64, nops int, opts Options) {
	e := newMount(t, nil, opts)
	// The calls work two levels below the top of each side, so that
	// symlinks with ".." in their targets resolve inside it (to the two
	// sides' own files): a top-level symlink to "../../c" in a temporary
	// directory names the same file on both sides.
	d := &differ{
		t:       t,
		rnd:     rand.New(rand.NewPCG(seed, 0x5eed)),
		seed:    seed,
		m:       e,
		mntTop:  e.dir,
		diskTop: t.TempDir(),
	}
	d.mnt, d.disk = filepath.Join(d.mntTop, "r1", "r2"), filepath.Join(d.diskTop, "r1", "r2")
	// Descriptors left open by a failure must close before the unmount.
	t.Cleanup(func() {
		for _, p := range d.fds {
			unix.Close(p.mnt)
			unix.Close(p.disk)
		}
	})
	// The tops' own modes differ (t.TempDir makes 0700): start alike.
	if err := os.Chmod(d.diskTop, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{d.mnt, d.disk} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d.regressions()
	for i := range nops {
		d.step(i)
		if i%50 == 49 {
			d.compareTrees("checkpoint")
		}
		if i == nops/3 || i == 2*nops/3 {
			d.closeAll()
			d.compareTrees("before remount")
			e.remount()
			d.log("--- remount ---")
			d.compareTrees("after remount")
		}
	}
	d.closeAll()
	d.compareTrees("end")
	e.remount()
	d.compareTrees("after the last remount")
}

// regressions replays, before the random calls, the sequences that once
// diverged, so each stays fixed whatever the seed. It leaves the working
// directories empty and no file open.
func (d *differ) regressions() {
	d.t.Helper()
	d.log("--- regressions ---")
	// SEEK_DATA and SEEK_HOLE right after a write, while the data sits in
	// the kernel's write-back cache: the mount answered from the size it
	// knew (ENXIO for data the program had just written, or a hole at the
	// old end).
	d.openPath("a", unix.O_RDWR|unix.O_CREAT, 0o644)
	p := d.fds[len(d.fds)-1]
	data := bytes.Repeat([]byte("healstore"), 20_000)
	d.sameFD(fmt.Sprintf("write %d bytes", len(data)), p, func(fd int) (string, error) {
		n, err := unix.Write(fd, data)
		return strconv.Itoa(n), err
	})
	d.seekTo(p, 14, unix.SEEK_DATA)
	d.seekTo(p, 100, unix.SEEK_HOLE)
	d.closeAll()
	d.same("unlink a", func(root string) (string, error) {
		return "", unix.Unlink(filepath.Join(root, "a"))
	})

	// A FIFO unlinked while open: the mount deleted its inode at once (a
	// special file has no FUSE handle to keep it), so fchmod, fchown and
	// fstat through the descriptor failed with ENOENT.
	d.same("mkfifo f 644", func(root string) (string, error) {
		return "", unix.Mkfifo(filepath.Join(root, "f"), 0o644)
	})
	d.openPath("f", unix.O_RDWR|unix.O_NONBLOCK, 0)
	p = d.fds[len(d.fds)-1]
	d.same("unlink f", func(root string) (string, error) {
		return "", unix.Unlink(filepath.Join(root, "f"))
	})
	d.sameFD("fchmod 600, fchown 1000", p, func(fd int) (string, error) {
		if err := unix.Fchmod(fd, 0o600); err != nil {
			return "", err
		}
		return "", unix.Fchown(fd, 1000, -1)
	})
	d.sameFD("fstat", p, func(fd int) (string, error) {
		var st unix.Stat_t
		err := unix.Fstat(fd, &st)
		return statString(&st), err
	})
	var fifo unix.Stat_t
	if err := unix.Fstat(p.mnt, &fifo); err != nil {
		d.fail("fstat: %v", err)
	}
	d.closeAll()
	// Once closed, the kernel forgets it and the mount deletes it; so
	// too a symlink unlinked while nothing holds it.
	d.same("symlink s -> nowhere", func(root string) (string, error) {
		return "", unix.Symlink("nowhere", filepath.Join(root, "s"))
	})
	var link unix.Stat_t
	if err := unix.Lstat(filepath.Join(d.mnt, "s"), &link); err != nil {
		d.fail("lstat: %v", err)
	}
	d.same("unlink s", func(root string) (string, error) {
		return "", unix.Unlink(filepath.Join(root, "s"))
	})
	for _, ino := range []uint64{fifo.Ino, link.Ino} {
		if !waitFor(10*time.Second, func() bool {
			_, err := d.m.m.f.kv.Get(context.Background(), inodeKey(ino))
			return errors.Is(err, errNoKey)
		}) {
			d.fail("the record of unlinked inode %d remains", ino)
		}
	}
	d.log("--- random calls ---")
}

// differ holds the two trees and the file descriptors open in both.
type differ struct {
	t    *testing.T
	rnd  *rand.Rand
	seed uint64
	m    *mountEnv
	// mntTop is the mount, diskTop a directory on the local disk; the
	// calls work in mnt and disk below them.
	mntTop, diskTop string
	mnt, disk       string
	fds             []fdPair
	nfds            int
	hist            []string
}

// fdPair is one open file, as a descriptor on each side.
type fdPair struct {
	id        int // counts opens, to tell descriptors of one path apart
	mnt, disk int
	path      string
	flags     int
}

// maxFDs bounds the descriptors kept open across operations.
const maxFDs = 4

// outcome is what one call returned on one side: a value to compare (a
// size, the bytes read, a target) and its errno.
type outcome struct {
	val   string
	errno syscall.Errno
}

func (o outcome) String() string {
	if o.errno != 0 {
		return fmt.Sprintf("%v (%s)", o.errno, errnoName(o.errno))
	}
	if len(o.val) > 80 {
		return fmt.Sprintf("%d bytes %q...", len(o.val), o.val[:80])
	}
	return fmt.Sprintf("ok %q", o.val)
}

func errnoName(e syscall.Errno) string {
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return strconv.Itoa(int(e))
}

// result turns a call's value and error into an outcome; an error that is
// not an errno fails the test (it would say nothing a program sees).
func (d *differ) result(val string, err error) outcome {
	d.t.Helper()
	if err == nil {
		return outcome{val: val}
	}
	var en syscall.Errno
	if !errors.As(err, &en) {
		d.fail("error without an errno: %v", err)
	}
	return outcome{errno: en}
}

func (d *differ) log(format string, args ...any) {
	d.hist = append(d.hist, fmt.Sprintf(format, args...))
}

// fail stops the test with the operations so far, so the divergence can
// be read off (and replayed with the seed).
func (d *differ) fail(format string, args ...any) {
	d.t.Helper()
	h := d.hist
	if len(h) > 60 {
		h = h[len(h)-60:]
	}
	d.t.Fatalf("seed %d: %s\nlast operations (mount = healstore, disk = ext4 or whatever t.TempDir is on):\n  %s",
		d.seed, fmt.Sprintf(format, args...), strings.Join(h, "\n  "))
}

// same runs call on both sides and compares the outcomes.
func (d *differ) same(desc string, call func(root string) (string, error)) outcome {
	d.t.Helper()
	m := d.result(call(d.mnt))
	k := d.result(call(d.disk))
	d.log("%s -> %v", desc, k)
	if m != k {
		d.fail("%s: mount %v, disk %v", desc, m, k)
	}
	return k
}

// sameFD runs call on both descriptors of p and compares the outcomes.
func (d *differ) sameFD(desc string, p fdPair, call func(fd int) (string, error)) outcome {
	d.t.Helper()
	desc = fmt.Sprintf("fd%d(%s) %s", p.id, p.path, desc)
	m := d.result(call(p.mnt))
	k := d.result(call(p.disk))
	d.log("%s -> %v", desc, k)
	if m != k {
		d.fail("%s: mount %v, disk %v", desc, m, k)
	}
	return k
}

// names are the path components: few, so calls collide.
var names = []string{"a", "b", "c"}

// entries lists the paths on the disk side (they are the same on the
// mount, or the test has failed), all and by type.
func (d *differ) entries() (all []string, byType map[fs.FileMode][]string) {
	byType = map[fs.FileMode][]string{}
	filepath.WalkDir(d.disk, func(p string, de fs.DirEntry, err error) error {
		if err != nil || p == d.disk {
			return nil
		}
		rel, _ := filepath.Rel(d.disk, p)
		all = append(all, rel)
		byType[de.Type()] = append(byType[de.Type()], rel)
		return nil
	})
	return all, byType
}

// path picks a path: mostly one that exists (of type want, unless that is
// anyType, when there are some), otherwise a new name in an existing
// directory or a random path up to three levels deep (whose parents may
// be missing or not be directories).
func (d *differ) pathOf(want fs.FileMode) string {
	p := d.pickPath(want)
	if d.rnd.IntN(25) == 0 {
		p += "/" // only a directory (or a symlink to one) may have it
	}
	return p
}

func (d *differ) pickPath(want fs.FileMode) string {
	all, byType := d.entries()
	if want != anyType && len(byType[want]) > 0 && d.rnd.IntN(3) > 0 {
		return byType[want][d.rnd.IntN(len(byType[want]))]
	}
	dirs := byType[fs.ModeDir]
	switch r := d.rnd.IntN(10); {
	case r < 5 && len(all) > 0:
		return all[d.rnd.IntN(len(all))]
	case r < 8:
		name := names[d.rnd.IntN(len(names))]
		if len(dirs) == 0 || d.rnd.IntN(3) == 0 {
			return name
		}
		return dirs[d.rnd.IntN(len(dirs))] + "/" + name
	default:
		n := 1 + d.rnd.IntN(3)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = names[d.rnd.IntN(len(names))]
		}
		return strings.Join(parts, "/")
	}
}

// anyType asks pathOf for a path of any type.
const anyType = fs.ModeIrregular

func (d *differ) path() string { return d.pathOf(anyType) }

// file picks a path, preferring regular files.
func (d *differ) file() string { return d.pathOf(0) }

// renameTarget picks where to rename src: often a path that makes a
// special case (itself, inside itself, its parent, an existing entry).
func (d *differ) renameTarget(src string) string {
	switch d.rnd.IntN(8) {
	case 0:
		return src
	case 1:
		return src + "/" + names[d.rnd.IntN(len(names))]
	case 2:
		if dir := filepath.Dir(src); dir != "." {
			return dir
		}
	}
	return d.path()
}

func (d *differ) data(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('A' + d.rnd.IntN(26))
	}
	return b
}

// size picks a length or offset: small, around a 64 KiB block boundary,
// or far (a sparse gap of several blocks).
func (d *differ) size() int64 {
	switch d.rnd.IntN(6) {
	case 0:
		return int64(d.rnd.IntN(16))
	case 1, 2:
		return int64(d.rnd.IntN(200))
	case 3:
		return int64(64<<10*(1+d.rnd.IntN(3)) - 50 + d.rnd.IntN(100))
	case 4:
		return int64(d.rnd.IntN(300 << 10))
	default:
		return int64(1<<20 + d.rnd.IntN(2<<20))
	}
}

func (d *differ) mode(dir bool) uint32 {
	modes := []uint32{0o644, 0o600, 0o755, 0o700, 0o640, 0o444, 0o777, 0o4755, 0o2755, 0o1777}
	if dir {
		modes = []uint32{0o755, 0o700, 0o777, 0o1777, 0o2755, 0o555}
	}
	return modes[d.rnd.IntN(len(modes))]
}

var symlinkTargets = []string{"a", "b", "c", "a/b", "../a", "../../c", "nowhere", ".", "b/../a"}

// openFlags picks an access mode and creation flags.
func (d *differ) openFlags() int {
	fl := []int{unix.O_RDONLY, unix.O_WRONLY, unix.O_RDWR, unix.O_RDWR}[d.rnd.IntN(4)]
	for _, f := range []int{unix.O_CREAT, unix.O_EXCL, unix.O_TRUNC, unix.O_APPEND} {
		if d.rnd.IntN(3) == 0 {
			fl |= f
		}
	}
	if d.rnd.IntN(2) == 0 {
		fl |= unix.O_CREAT
	}
	switch d.rnd.IntN(20) {
	case 0:
		fl |= unix.O_NOFOLLOW
	case 1:
		fl |= unix.O_DIRECTORY
	}
	// O_NONBLOCK: opening a FIFO must not wait for the other end.
	return fl | unix.O_CLOEXEC | unix.O_NONBLOCK
}

func flagString(fl int) string {
	s := []string{"RDONLY", "WRONLY", "RDWR"}[fl&unix.O_ACCMODE]
	for _, f := range []struct {
		v int
		n string
	}{{unix.O_CREAT, "CREAT"}, {unix.O_EXCL, "EXCL"}, {unix.O_TRUNC, "TRUNC"}, {unix.O_APPEND, "APPEND"}, {unix.O_NOFOLLOW, "NOFOLLOW"}, {unix.O_DIRECTORY, "DIRECTORY"}} {
		if fl&f.v != 0 {
			s += "|" + f.n
		}
	}
	return s
}

func (d *differ) pickFD() (int, bool) {
	if len(d.fds) == 0 {
		return 0, false
	}
	return d.rnd.IntN(len(d.fds)), true
}

// step runs one random operation.
func (d *differ) step(i int) {
	d.t.Helper()
	d.log("#%d", i)
	j, haveFD := d.pickFD()
	var p fdPair
	if haveFD {
		p = d.fds[j]
	}
	switch r := d.rnd.IntN(100); {
	case r < 12 || (r < 50 && !haveFD):
		d.open()
	case r < 20:
		off, data := d.size(), d.data(int(d.size()%(150<<10))+1)
		d.sameFD(fmt.Sprintf("pwrite %d bytes at %d", len(data), off), p, func(fd int) (string, error) {
			n, err := unix.Pwrite(fd, data, off)
			return strconv.Itoa(n), err
		})
	case r < 25:
		data := d.data(int(d.size()%(100<<10)) + 1)
		d.sameFD(fmt.Sprintf("write %d bytes", len(data)), p, func(fd int) (string, error) {
			n, err := unix.Write(fd, data)
			return strconv.Itoa(n), err
		})
	case r < 31:
		off, n := d.size(), int(d.size()%(200<<10))+1
		d.sameFD(fmt.Sprintf("pread %d bytes at %d", n, off), p, func(fd int) (string, error) {
			buf := make([]byte, n)
			got, err := unix.Pread(fd, buf, off)
			if err != nil {
				return "", err
			}
			return string(buf[:got]), nil
		})
	case r < 35:
		n := int(d.size()%(100<<10)) + 1
		d.sameFD(fmt.Sprintf("read %d bytes", n), p, func(fd int) (string, error) {
			buf := make([]byte, n)
			got, err := unix.Read(fd, buf)
			if err != nil {
				return "", err
			}
			return string(buf[:got]), nil
		})
	case r < 38:
		d.seek(p)
	case r < 41:
		size := d.size()
		if d.rnd.IntN(10) == 0 {
			size = -1
		}
		d.sameFD(fmt.Sprintf("ftruncate %d", size), p, func(fd int) (string, error) {
			return "", unix.Ftruncate(fd, size)
		})
	case r < 42:
		d.sameFD("fsync", p, func(fd int) (string, error) { return "", unix.Fsync(fd) })
	case r < 43:
		// Modes 0 and KEEP_SIZE only: the mount does not punch holes
		// (EOPNOTSUPP, which callers of fallocate must handle anyway).
		mode := uint32([]int{0, unix.FALLOC_FL_KEEP_SIZE}[d.rnd.IntN(2)])
		off, n := d.size(), d.size()
		d.sameFD(fmt.Sprintf("fallocate mode %d %d+%d", mode, off, n), p, func(fd int) (string, error) {
			return "", unix.Fallocate(fd, mode, off, n)
		})
	case r < 44 && d.rnd.IntN(3) == 0:
		// Through the descriptor, which may be all that is left of the
		// file.
		mode, uid := d.mode(false), []int{0, 1000}[d.rnd.IntN(2)]
		d.sameFD(fmt.Sprintf("fchmod %o, fchown %d", mode, uid), p, func(fd int) (string, error) {
			if err := unix.Fchmod(fd, mode); err != nil {
				return "", err
			}
			return "", unix.Fchown(fd, uid, -1)
		})
	case r < 44:
		d.sameFD("fstat", p, func(fd int) (string, error) {
			var st unix.Stat_t
			err := unix.Fstat(fd, &st)
			return statString(&st), err
		})
	case r < 46:
		// The kernel drops the file's clean cached pages: the next reads
		// come from the mount's own cache and the store.
		d.sameFD("fadvise DONTNEED", p, func(fd int) (string, error) {
			return "", unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
		})
	case r < 50:
		d.closeFD(j)
	case r < 53:
		// Unlink a file that is open, then go on using the descriptor.
		d.same("unlink "+p.path, func(root string) (string, error) {
			return "", unix.Unlink(filepath.Join(root, p.path))
		})
	case r < 56:
		path, size := d.file(), d.size()
		d.same(fmt.Sprintf("truncate %s %d", path, size), func(root string) (string, error) {
			return "", unix.Truncate(filepath.Join(root, path), size)
		})
	case r < 64:
		path, mode := d.path(), d.mode(true)
		d.same(fmt.Sprintf("mkdir %s %o", path, mode), func(root string) (string, error) {
			return "", unix.Mkdir(filepath.Join(root, path), mode)
		})
	case r < 68:
		path := d.path()
		d.same("rmdir "+path, func(root string) (string, error) {
			return "", unix.Rmdir(filepath.Join(root, path))
		})
	case r < 72:
		path := d.file()
		d.same("unlink "+path, func(root string) (string, error) {
			return "", unix.Unlink(filepath.Join(root, path))
		})
	case r < 82:
		src := d.path()
		if d.rnd.IntN(2) == 0 {
			src = d.file()
		}
		dst := d.renameTarget(src)
		flags := uint(0)
		switch d.rnd.IntN(8) {
		case 0:
			flags = unix.RENAME_NOREPLACE
		case 1:
			flags = unix.RENAME_EXCHANGE
		}
		d.same(fmt.Sprintf("rename %s %s flags %d", src, dst, flags), func(root string) (string, error) {
			return "", unix.Renameat2(unix.AT_FDCWD, filepath.Join(root, src), unix.AT_FDCWD, filepath.Join(root, dst), flags)
		})
	case r < 86:
		target, path := symlinkTargets[d.rnd.IntN(len(symlinkTargets))], d.path()
		d.same(fmt.Sprintf("symlink %s -> %s", path, target), func(root string) (string, error) {
			return "", unix.Symlink(target, filepath.Join(root, path))
		})
	case r < 88:
		path := d.pathOf(fs.ModeSymlink)
		d.same("readlink "+path, func(root string) (string, error) {
			buf := make([]byte, 256)
			n, err := unix.Readlink(filepath.Join(root, path), buf)
			if err != nil {
				return "", err
			}
			return string(buf[:n]), nil
		})
	case r < 91:
		src, dst := d.file(), d.path()
		d.same(fmt.Sprintf("link %s %s", src, dst), func(root string) (string, error) {
			return "", unix.Link(filepath.Join(root, src), filepath.Join(root, dst))
		})
	case r < 94:
		path, mode := d.path(), d.mode(false)
		d.same(fmt.Sprintf("chmod %s %o", path, mode), func(root string) (string, error) {
			return "", unix.Chmod(filepath.Join(root, path), mode)
		})
	case r < 95:
		path := d.path()
		uid, gid := []int{0, 1000, 1234, -1}[d.rnd.IntN(4)], []int{0, 100, -1}[d.rnd.IntN(3)]
		if d.rnd.IntN(3) == 0 {
			d.same(fmt.Sprintf("lchown %s %d %d", path, uid, gid), func(root string) (string, error) {
				return "", unix.Lchown(filepath.Join(root, path), uid, gid)
			})
			break
		}
		d.same(fmt.Sprintf("chown %s %d %d", path, uid, gid), func(root string) (string, error) {
			return "", unix.Chown(filepath.Join(root, path), uid, gid)
		})
	case r < 96:
		path, mode := d.path(), d.mode(false)
		d.same(fmt.Sprintf("mkfifo %s %o", path, mode), func(root string) (string, error) {
			return "", unix.Mkfifo(filepath.Join(root, path), mode)
		})
	case r < 97:
		path := d.path()
		d.same("lstat "+path, func(root string) (string, error) {
			var st unix.Stat_t
			err := unix.Lstat(filepath.Join(root, path), &st)
			return statString(&st), err
		})
	default:
		path := d.path()
		d.same("readdir "+path, func(root string) (string, error) {
			ents, err := os.ReadDir(filepath.Join(root, path))
			var out []string
			for _, en := range ents {
				out = append(out, en.Name()+":"+en.Type().String())
			}
			return strings.Join(out, ","), err
		})
	}
}

// statString is what stat may be compared by: type, permissions, link
// count, owner, and the size of all but directories (ext4 reports the
// blocks a directory holds).
func statString(st *unix.Stat_t) string {
	s := fmt.Sprintf("mode %o nlink %d uid %d gid %d", st.Mode, st.Nlink, st.Uid, st.Gid)
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		s += fmt.Sprintf(" size %d", st.Size)
	}
	return s
}

// open opens a path on both sides and keeps the descriptors, closing the
// oldest pair when too many are open.
func (d *differ) open() {
	d.t.Helper()
	d.openPath(d.file(), d.openFlags(), d.mode(false))
}

// openPath opens path on both sides; when both succeed, the pair is the
// last of d.fds.
func (d *differ) openPath(path string, fl int, mode uint32) {
	d.t.Helper()
	desc := fmt.Sprintf("open %s %s %o", path, flagString(fl), mode)
	fm, errM := unix.Open(filepath.Join(d.mnt, path), fl, mode)
	fk, errK := unix.Open(filepath.Join(d.disk, path), fl, mode)
	m, k := d.result("", errM), d.result("", errK)
	d.log("%s -> %v (fd%d)", desc, k, d.nfds+1)
	if m != k {
		if errM == nil {
			unix.Close(fm)
		}
		if errK == nil {
			unix.Close(fk)
		}
		d.fail("%s: mount %v, disk %v", desc, m, k)
	}
	if errK != nil {
		return
	}
	if len(d.fds) == maxFDs {
		d.closeFD(0)
	}
	d.nfds++
	d.fds = append(d.fds, fdPair{id: d.nfds, mnt: fm, disk: fk, path: path, flags: fl})
}

func (d *differ) closeFD(j int) {
	d.t.Helper()
	p := d.fds[j]
	d.fds = slices.Delete(d.fds, j, j+1)
	d.sameFD("close", p, func(fd int) (string, error) { return "", unix.Close(fd) })
}

func (d *differ) closeAll() {
	d.t.Helper()
	for len(d.fds) > 0 {
		d.closeFD(len(d.fds) - 1)
	}
}

// seek moves both descriptors. On a directory only a rewind is compared:
// its offsets are cookies each filesystem makes up (ext4 hashes names).
// SEEK_DATA and SEEK_HOLE before the end of a file may answer differently
// (see the exemption on TestDifferential): each side's answer must be a
// correct one for the file's bytes, and then the mount's descriptor moves
// to where the disk's is so they stay in step. At or past the end both
// must fail alike.
func (d *differ) seek(p fdPair) {
	d.t.Helper()
	whence := []int{unix.SEEK_SET, unix.SEEK_CUR, unix.SEEK_END, unix.SEEK_DATA, unix.SEEK_HOLE}[d.rnd.IntN(5)]
	off := d.size()
	if whence != unix.SEEK_SET && d.rnd.IntN(3) == 0 {
		off = -off
	}
	d.seekTo(p, off, whence)
}

func (d *differ) seekTo(p fdPair, off int64, whence int) {
	d.t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(p.disk, &st); err != nil {
		d.fail("fstat: %v", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		whence, off = unix.SEEK_SET, 0
	}
	if whence != unix.SEEK_DATA && whence != unix.SEEK_HOLE || off < 0 || off >= st.Size {
		d.sameFD(fmt.Sprintf("lseek %d whence %d", off, whence), p, func(fd int) (string, error) {
			n, err := unix.Seek(fd, off, whence)
			return strconv.FormatInt(n, 10), err
		})
		return
	}
	desc := fmt.Sprintf("fd%d(%s) lseek %d whence %d", p.id, p.path, off, whence)
	// (Through /proc: the descriptor may be write-only, the file unlinked.)
	content, err := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", p.disk))
	if err != nil || int64(len(content)) != st.Size {
		d.fail("%s: read the disk's file: %d bytes, %v", desc, len(content), err)
	}
	zeros := func(from, to int64) bool {
		return !slices.ContainsFunc(content[from:to], func(b byte) bool { return b != 0 })
	}
	// valid says whether r (or ENXIO) is a correct answer for the bytes.
	valid := func(r int64, err error) bool {
		if whence == unix.SEEK_DATA {
			if err == syscall.ENXIO {
				return zeros(off, st.Size) // only holes left
			}
			return err == nil && r >= off && r < st.Size && zeros(off, r)
		}
		return err == nil && r >= off && r <= st.Size && (r == st.Size || content[r] == 0)
	}
	pm, errM := unix.Seek(p.mnt, off, whence)
	pk, errK := unix.Seek(p.disk, off, whence)
	d.log("%s -> disk %d %v, mount %d %v", desc, pk, errK, pm, errM)
	switch {
	case !valid(pk, errK):
		d.fail("%s: disk %d, %v: not a correct answer (the test is wrong)", desc, pk, errK)
	case !valid(pm, errM):
		d.fail("%s: mount %d, %v; disk %d, %v", desc, pm, errM, pk, errK)
	}
	pos, err := unix.Seek(p.disk, 0, unix.SEEK_CUR)
	if err != nil {
		d.fail("%s: disk position: %v", desc, err)
	}
	if _, err := unix.Seek(p.mnt, pos, unix.SEEK_SET); err != nil {
		d.fail("%s: re-seek the mount: %v", desc, err)
	}
}

// treeEntry is what the tree comparison sees of one entry.
type treeEntry struct {
	stat   string // statString
	target string
	data   []byte
}

func (d *differ) tree(root string) map[string]treeEntry {
	d.t.Helper()
	out := map[string]treeEntry{}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		en := treeEntry{stat: statString(&st)}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			if en.data, err = os.ReadFile(p); err != nil {
				return err
			}
		case unix.S_IFLNK:
			if en.target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		out[rel] = en
		return nil
	})
	if err != nil {
		d.fail("walk %s: %v", root, err)
	}
	return out
}

func (d *differ) compareTrees(when string) {
	d.t.Helper()
	m, k := d.tree(d.mntTop), d.tree(d.diskTop)
	var diffs []string
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		seen := map[string]bool{}
		for n := range m {
			seen[n] = true
		}
		for n := range k {
			seen[n] = true
		}
		for n := range seen {
			if !yield(n) {
				return
			}
		}
	}) {
		em, okM := m[name]
		ek, okK := k[name]
		switch {
		case !okM:
			diffs = append(diffs, fmt.Sprintf("%s: missing on the mount", name))
		case !okK:
			diffs = append(diffs, fmt.Sprintf("%s: only on the mount", name))
		case em.stat != ek.stat || em.target != ek.target:
			diffs = append(diffs, fmt.Sprintf("%s: mount %s target %q; disk %s target %q", name, em.stat, em.target, ek.stat, ek.target))
		case !bytes.Equal(em.data, ek.data):
			at := 0
			for at < min(len(em.data), len(ek.data)) && em.data[at] == ek.data[at] {
				at++
			}
			diffs = append(diffs, fmt.Sprintf("%s: contents differ from byte %d (mount %d bytes, disk %d)", name, at, len(em.data), len(ek.data)))
		}
	}
	d.log("--- trees compared (%s): %d entries ---", when, len(k))
	if len(diffs) > 0 {
		d.fail("trees differ (%s):\n  %s", when, strings.Join(diffs, "\n  "))
	}
}
