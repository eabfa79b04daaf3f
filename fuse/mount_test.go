package fuse

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/encoder"
)

// The mount tests run real FUSE mounts over a real store (local backends
// in temporary directories, pebble metadata).

// requireFUSE skips the test when FUSE mounts are impossible here, or
// fails it when HEALSTORE_REQUIRE_COMPONENTS=1 says they must work.
func requireFUSE(t testing.TB) {
	t.Helper()
	must := os.Getenv("HEALSTORE_REQUIRE_COMPONENTS") == "1"
	miss := func(msg string) {
		t.Helper()
		if must {
			t.Fatalf("FUSE is required (HEALSTORE_REQUIRE_COMPONENTS=1) but %s", msg)
		}
		t.Skipf("FUSE not available: %s", msg)
	}
	if testing.Short() {
		t.Skip("mount tests are not short")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		miss("/dev/fuse is missing")
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			miss("not root and no fusermount3 in PATH")
		}
	}
}

// requireTool does the same for a command the test runs.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("HEALSTORE_REQUIRE_COMPONENTS") == "1" {
			t.Fatalf("%s is required (HEALSTORE_REQUIRE_COMPONENTS=1) but not installed (make tools)", name)
		}
		t.Skipf("%s not installed (make tools)", name)
	}
	return p
}

// storeEnv is a store on local backends in a temporary directory.
type storeEnv struct {
	dir     string
	cfgPath string
	edit    func(*healstore.Config)
	cfg     *healstore.Config
	s       *healstore.Store
}

// newStore creates a store with k+m local backends and the given store
// block size (0: 1 MiB). Compression and encryption are off: the tests
// are about the filesystem, and both cost CPU the 2-core CI machine lacks.
func newStore(t testing.TB, k, m, blockSize int) *storeEnv {
	t.Helper()
	return newStoreWith(t, k, m, blockSize, nil)
}

// newStoreWith is newStore with edit applied to the config at every open.
func newStoreWith(t testing.TB, k, m, blockSize int, edit func(*healstore.Config)) *storeEnv {
	t.Helper()
	if blockSize == 0 {
		blockSize = 1 << 20
	}
	dir := t.TempDir()
	pol := encoder.DefaultPolicy()
	pol.K, pol.M, pol.BlockSize = k, m, blockSize
	pol.Compression, pol.Encryption = "none", "none"
	cfgPath, err := healstore.Init(dir, healstore.InitOptions{Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	e := &storeEnv{dir: dir, cfgPath: cfgPath, edit: edit}
	e.open(t)
	t.Cleanup(func() { e.s.Close() })
	return e
}

func (e *storeEnv) open(t testing.TB) {
	t.Helper()
	cfg, err := healstore.LoadConfig(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if e.edit != nil {
		e.edit(cfg)
	}
	e.cfg = cfg
	s, err := healstore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.s = s
}

// mountEnv is one mount of a store.
type mountEnv struct {
	t    testing.TB
	st   *storeEnv
	dir  string
	opts Options
	m    *Mounted
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newMount mounts a fresh store (4+2 unless st is given) in a temporary
// directory; the mount is unmounted at test end.
func newMount(t testing.TB, st *storeEnv, opts Options) *mountEnv {
	t.Helper()
	requireFUSE(t)
	if st == nil {
		st = newStore(t, 4, 2, 0)
	}
	if opts.CacheDir == "" {
		opts.CacheDir = t.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	e := &mountEnv{t: t, st: st, dir: t.TempDir(), opts: opts}
	e.mount()
	t.Cleanup(func() {
		if e.m != nil {
			e.unmount()
		}
	})
	return e
}

func (e *mountEnv) mount() {
	e.t.Helper()
	m, err := Mount(context.Background(), e.st.s, e.dir, e.opts)
	if err != nil {
		e.t.Fatalf("mount: %v", err)
	}
	e.m = m
	liveMounts.Store(e.dir, true)
}

func (e *mountEnv) unmount() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := e.m.Unmount(ctx)
	e.m = nil
	liveMounts.Delete(e.dir)
	if err != nil {
		e.t.Fatalf("unmount: %v", err)
	}
}

// remount unmounts and mounts again with an empty cache, so everything
// read afterwards comes from the store.
func (e *mountEnv) remount() {
	e.t.Helper()
	e.unmount()
	e.opts.CacheDir = e.t.TempDir()
	e.mount()
}

func (e *mountEnv) path(p ...string) string {
	return filepath.Join(append([]string{e.dir}, p...)...)
}

// sh runs a shell command with the mount as working directory. The
// command changes directory itself: a child process whose working
// directory is set by exec would touch the mount between fork and exec,
// which can deadlock against the in-process FUSE server.
func (e *mountEnv) sh(script string) string {
	e.t.Helper()
	cmd := exec.Command("bash", "-c", "set -euo pipefail; cd \"$MNT\"; "+script)
	cmd.Env = append(os.Environ(), "MNT="+e.dir, "HOME="+e.t.TempDir(), "GIT_CONFIG_NOSYSTEM=1")
	out, err := runBounded(e.t, cmd, 5*time.Minute)
	if err != nil {
		e.t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return strings.TrimSpace(string(out))
}

// runBounded runs cmd and returns its combined output. A command still
// running after limit, or a minute before the test's deadline, is killed
// with its whole process group (its children may be the ones stuck in the
// mount) and the error says so: the test fails with the command's output
// instead of hanging the package until go test's timeout.
func runBounded(t testing.TB, cmd *exec.Cmd, limit time.Duration) ([]byte, error) {
	t.Helper()
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			limit = min(limit, max(time.Until(dl)-time.Minute, 10*time.Second))
		}
	}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.bytes(), err
	case <-time.After(limit):
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
	return out.bytes(), fmt.Errorf("%s still running after %v: killed", filepath.Base(cmd.Path), limit)
}

// syncBuffer collects a command's output; it can be read while the
// command still writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
