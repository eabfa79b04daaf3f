package fuse

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Mounted is a mounted healstore filesystem.
type Mounted struct {
	f     *filesystem
	srv   *gofuse.Server
	dir   string
	lockF *os.File
	lease []byte

	done chan struct{}
	err  error
	once sync.Once
}

// keyLease is the metastore record naming the mount that serves the
// filesystem, so a second mount elsewhere is refused.
const keyLease = "M"

type leaseRec struct {
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	Start    uint64    `json:"start"` // process start time (clock ticks since boot)
	Boot     string    `json:"boot"`
	CacheDir string    `json:"cache_dir"`
	Since    time.Time `json:"since"`
}

// mountFS mounts the filesystem kept in kv and blobs at dir.
func mountFS(ctx context.Context, kv kvStore, blobs blobStore, dir string, opts Options) (*Mounted, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if opts.CacheDir, err = filepath.Abs(opts.CacheDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("cache dir: %w", err)
	}
	lockF, err := lockCacheDir(opts.CacheDir)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			lockF.Close()
		}
	}()
	if err := cleanStaleMount(dir, opts.Logger); err != nil {
		return nil, err
	}
	f, err := newFilesystem(kv, blobs, opts)
	if err != nil {
		return nil, err
	}
	m := &Mounted{f: f, dir: dir, lockF: lockF, done: make(chan struct{})}
	if m.lease, err = f.acquireLease(ctx, opts.Force); err != nil {
		return nil, err
	}
	defer func() {
		if !ok {
			f.shutdown(context.Background())
			f.releaseLease(m.lease)
		}
	}()
	if err := f.start(ctx, uint32(os.Getuid()), uint32(os.Getgid())); err != nil {
		return nil, err
	}
	sec := time.Second
	mo := gofuse.MountOptions{
		FsName:        "healstore:" + opts.Name,
		Name:          "healstore",
		DirectMount:   os.Geteuid() == 0,
		MaxWrite:      1 << 20,
		MaxReadAhead:  1 << 20,
		MaxBackground: 64,
		AllowOther:    opts.AllowOther,
		// The kernel checks permissions against the modes we report.
		Options: []string{"default_permissions"},
		// Extended attributes are not stored; answering ENOSYS once makes
		// the kernel stop asking (it would otherwise look up
		// security.capability on every write).
		DisableXAttrs: true,
		// Reads answer from memory (ReadResultData), never from a file
		// descriptor, so go-fuse's splice path has nothing to splice: it
		// took a pipe, resized it and wrote the reply header into it for
		// every read before falling back to writev, and for a 1 MiB read
		// (more than the default pipe-max-size with the header) logged
		// "trySplice: ... max pipe size" to stderr each time.
		DisableSplice: true,
		Debug:         opts.Debug,
		Logger:        log.New(os.Stderr, "healstore fuse: ", log.LstdFlags),
	}
	if !opts.NoKernelWriteback {
		mo.ExtraCapabilities = gofuse.CAP_WRITEBACK_CACHE
	}
	root := &node{f: f, ino: rootIno}
	srv, err := fs.Mount(dir, root, &fs.Options{
		MountOptions:    mo,
		EntryTimeout:    &sec,
		AttrTimeout:     &sec,
		NegativeTimeout: &sec,
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: rootIno},
	})
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	m.srv = srv
	ok = true
	if opts.ReadAhead > 0 {
		setKernelReadAhead(dir, min(opts.ReadAhead, maxKernelReadAhead), opts.Logger)
	}
	if err := writePidFile(dir); err != nil {
		opts.Logger.Warn("healstore fuse: cannot record the mount process; healstore umount will unmount without flushing through it", "err", err)
	}
	go m.serve()
	return m, nil
}

// maxKernelReadAhead bounds the kernel's read-ahead on the mount.
const maxKernelReadAhead = 16 << 20

// setKernelReadAhead raises the kernel's read-ahead for the mount (its
// backing device's read_ahead_kb) to n bytes. FUSE starts every mount at
// 128 KiB, so a sequential reader has one or two 128 KiB reads in flight
// and waits for a round trip through the mount per 128 KiB; a deeper
// window keeps several 1 MiB reads in flight. Random reads are not
// enlarged by it. Only root may change it; otherwise the mount keeps the
// kernel's default.
func setKernelReadAhead(dir string, n int64, logger *slog.Logger) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		logger.Debug("healstore fuse: kernel read-ahead left at its default", "err", err)
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(strconv.FormatInt(n>>10, 10)), 0o644); err != nil {
		logger.Debug("healstore fuse: kernel read-ahead left at its default", "err", err)
	}
}

// serve waits for the kernel to let go of the mount, then uploads what is
// left and releases the cache and the lease.
func (m *Mounted) serve() {
	m.srv.Wait()
	removePidFile(m.dir)
	ctx, cancel := context.WithTimeout(context.Background(), m.f.opts.OpTimeout)
	defer cancel()
	err := m.f.shutdown(ctx)
	if err != nil {
		err = fmt.Errorf("unmount %s: data not yet in healstore stays in the write-back cache for the next mount: %w", m.dir, err)
	} else {
		m.f.releaseLease(m.lease)
	}
	m.lockF.Close()
	m.err = err
	close(m.done)
}

// Dir is the mount point.
func (m *Mounted) Dir() string { return m.dir }

// Wait blocks until the filesystem is unmounted (by Unmount, umount(8) or
// fusermount3 -u) and everything written is in healstore, and returns the
// error of that final upload, if any.
func (m *Mounted) Wait() error {
	<-m.done
	return m.err
}

// Unmount unmounts the filesystem, retrying while it is busy; when ctx
// ends first it detaches it lazily (it disappears from the namespace and
// is released when its last user goes). Then it waits for the final
// upload, as Wait.
func (m *Mounted) Unmount(ctx context.Context) error {
	for {
		err := m.srv.Unmount()
		if err == nil {
			break
		}
		select {
		case <-m.done:
			return m.err
		case <-ctx.Done():
			m.f.log.Warn("healstore fuse: mount still busy; detaching it lazily", "dir", m.dir, "err", err)
			if derr := detach(m.dir); derr != nil {
				return fmt.Errorf("unmount %s: %v; lazy detach: %w", m.dir, err, derr)
			}
			return m.Wait()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return m.Wait()
}

// DirtyBytes is how much written data waits in the write-back cache.
func (m *Mounted) DirtyBytes() int64 { return m.f.budget.inUse() }

// lockCacheDir takes an exclusive lock on the cache directory, so two
// mounts never share one write-back cache.
func lockCacheDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cache dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(path)
		f.Close()
		return nil, fmt.Errorf("cache dir %s is in use by process %s (another mount?): %w", dir, strings.TrimSpace(string(pid)), err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

// procStart is a process's start time in clock ticks since boot, which
// tells a live process from a later one that reused its pid.
func procStart(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(fields[19], 10, 64)
	return v
}

func (f *filesystem) acquireLease(ctx context.Context, force bool) ([]byte, error) {
	host, _ := os.Hostname()
	me := leaseRec{Host: host, PID: os.Getpid(), Start: procStart(os.Getpid()), Boot: string(f.bootID()),
		CacheDir: f.cacheDir, Since: time.Now().UTC()}
	raw, err := json.Marshal(me)
	if err != nil {
		return nil, err
	}
	var b kvBatch
	old, err := f.kv.Get(ctx, []byte(keyLease))
	switch {
	case errors.Is(err, errNoKey):
		b.expectMissing([]byte(keyLease))
	case err != nil:
		return nil, fmt.Errorf("read mount lease: %w", err)
	default:
		var o leaseRec
		if json.Unmarshal(old, &o) == nil && !force {
			stale := o.Host == me.Host && (o.Boot != me.Boot || procStart(o.PID) != o.Start || o.Start == 0)
			if !stale {
				return nil, fmt.Errorf("filesystem %q is mounted by process %d on %s (cache %s) since %s; if that mount is gone for good, mount with --force",
					f.opts.Name, o.PID, o.Host, o.CacheDir, o.Since.Format(time.RFC3339))
			}
			f.log.Info("healstore fuse: taking over the filesystem from a mount that ended without unmounting", "pid", o.PID, "since", o.Since)
		}
		b.expect([]byte(keyLease), old)
	}
	b.put([]byte(keyLease), raw)
	if err := f.kv.Commit(ctx, &b); err != nil {
		return nil, fmt.Errorf("take mount lease: %w", err)
	}
	return raw, nil
}

func (f *filesystem) releaseLease(raw []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b kvBatch
	b.expect([]byte(keyLease), raw)
	b.del([]byte(keyLease))
	if err := f.kv.Commit(ctx, &b); err != nil {
		f.log.Warn("healstore fuse: releasing the mount lease", "err", err)
	}
}

// cleanStaleMount detaches a dead FUSE mount left at dir by a mount
// process that was killed (its mount point answers ENOTCONN), and refuses
// a live one.
func cleanStaleMount(dir string, logger interface{ Info(string, ...any) }) error {
	var st unix.Stat_t
	err := unix.Stat(dir, &st)
	if err == nil && isFuseMount(dir) {
		// The kernel may answer stat from its attribute cache: listing
		// the directory tells a live server from a dead one.
		err = probeDir(dir)
		if err == nil {
			return fmt.Errorf("%s is already a FUSE mount; unmount it first (healstore umount %s)", dir, dir)
		}
	}
	switch {
	case err == nil:
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("mount point %s is not a directory", dir)
		}
		return nil
	case errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED):
		logger.Info("healstore fuse: detaching a stale mount left by a process that died", "dir", dir)
		if err := detach(dir); err != nil {
			return fmt.Errorf("stale mount at %s: %w", dir, err)
		}
		if err := unix.Stat(dir, &st); err != nil {
			return fmt.Errorf("mount point %s after detaching a stale mount: %w", dir, err)
		}
		return nil
	default:
		return fmt.Errorf("mount point %s: %w", dir, err)
	}
}

// probeDir reads one entry of dir.
func probeDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// detach lazily unmounts dir: umount2(MNT_DETACH) as root, else
// fusermount3 -uz.
func detach(dir string) error {
	if os.Geteuid() == 0 {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("umount -l %s: %w", dir, err)
		}
		return nil
	}
	for _, bin := range []string{"fusermount3", "fusermount"} {
		path, err := exec.LookPath(bin)
		if err != nil {
			continue
		}
		out, err := exec.Command(path, "-u", "-z", dir).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s -uz %s: %v: %s", bin, dir, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	return fmt.Errorf("unmount %s: not root and no fusermount3 found", dir)
}

// isFuseMount reports whether dir is the mount point of a FUSE mount.
func isFuseMount(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMount(fields[4]) != dir {
			continue
		}
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && strings.HasPrefix(fields[i+1], "fuse") {
				return true
			}
		}
	}
	return false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
