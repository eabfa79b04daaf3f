package fuse

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/healstore/healstore"
)

// The test binary doubles as a mount process: with HEALSTORE_FUSE_CHILD=1
// it opens the store of HEALSTORE_FUSE_CONFIG, mounts it at
// HEALSTORE_FUSE_DIR with the cache HEALSTORE_FUSE_CACHE, prints "ready",
// and serves until SIGTERM (clean unmount) or SIGKILL.
func TestMain(m *testing.M) {
	if os.Getenv("HEALSTORE_FUSE_CHILD") == "1" {
		os.Exit(childMount())
	}
	flag.Parse()
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 0 {
			watchdog(d)
		}
	}
	os.Exit(m.Run())
}

// watchdog fails the run shortly before go test's timeout would, in a way
// that says more and that can end: it prints every goroutine (what the
// stuck test waits for), then force-unmounts the mounts this process
// serves and panics. Without the unmount, a process that dies with dirty
// pages in its own mount hangs in exit, waiting for a write-back only it
// could have served, and go test reports only that it killed it.
func watchdog(timeout time.Duration) {
	at := timeout - min(timeout/10, time.Minute)
	time.AfterFunc(at, func() {
		fmt.Fprintf(os.Stderr, "fuse tests: still running after %v (timeout %v); the goroutines:\n", at, timeout)
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
		abortMounts()
		panic(fmt.Sprintf("fuse tests: still running after %v of the %v timeout (goroutines above); in-process mounts aborted", at, timeout))
	})
}

// liveMounts holds the mount points this process serves (in-process
// mounts of the tests).
var liveMounts sync.Map

// abortMounts force-unmounts every mount this process serves: the kernel
// aborts the connection, so requests waiting on it fail at once and
// dirty pages are dropped, and the process can exit.
func abortMounts() {
	liveMounts.Range(func(k, _ any) bool {
		dir := k.(string)
		unix.Unmount(dir, unix.MNT_FORCE)
		unix.Unmount(dir, unix.MNT_DETACH)
		return true
	})
}

func childMount() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg, err := healstore.LoadConfig(os.Getenv("HEALSTORE_FUSE_CONFIG"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	cfg.Logger = log
	ctx := context.Background()
	s, err := healstore.Open(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	defer s.Close()
	opts := Options{
		CacheDir:          os.Getenv("HEALSTORE_FUSE_CACHE"),
		BlockSize:         64 << 10,
		CacheSize:         16 << 20,
		NoKernelWriteback: os.Getenv("HEALSTORE_FUSE_NOWB") == "1",
		WritebackDelay:    time.Hour, // only fsync, close and full blocks upload
		Logger:            log,
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	m, err := Mount(ctx, s, os.Getenv("HEALSTORE_FUSE_DIR"), opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	fmt.Println("ready")
	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	select {
	case <-sig:
		uctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := m.Unmount(uctx); err != nil {
			fmt.Fprintln(os.Stderr, "child: unmount:", err)
			return 1
		}
	case err := <-done:
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 1
		}
	}
	return 0
}

// child is a mount process started from the test binary.
type child struct {
	cmd    *exec.Cmd
	stderr *strings.Builder
}

// startChild mounts the store of cfgPath at dir in a child process and
// waits until the mount serves.
func startChild(t *testing.T, cfgPath, dir, cache string, noKernelWriteback bool) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "HEALSTORE_FUSE_CHILD=1", "HEALSTORE_FUSE_CONFIG="+cfgPath,
		"HEALSTORE_FUSE_DIR="+dir, "HEALSTORE_FUSE_CACHE="+cache)
	if noKernelWriteback {
		cmd.Env = append(cmd.Env, "HEALSTORE_FUSE_NOWB=1")
	}
	c := &child{cmd: cmd, stderr: &strings.Builder{}}
	cmd.Stderr = c.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
			detach(dir)
		}
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
		io.Copy(io.Discard, out)
	}()
	select {
	case s := <-line:
		if strings.TrimSpace(s) != "ready" {
			cmd.Wait()
			t.Fatalf("mount process did not start: %q\n%s", s, c.stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("mount process not ready after 60s\n%s", c.stderr)
	}
	return c
}

// stop sends sig and waits for the process to exit: at most 3 minutes
// (a SIGTERM makes it upload what its cache holds, bounded by the
// mount's own timeouts), then it is killed and the test fails.
func (c *child) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	c.cmd.Process.Signal(sig)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	const limit = 3 * time.Minute
	select {
	case err := <-done:
		if sig == syscall.SIGTERM && err != nil {
			t.Fatalf("mount process after SIGTERM: %v\n%s", err, c.stderr)
		}
	case <-time.After(limit):
		c.cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
		t.Fatalf("mount process did not exit within %v of %v; killed\n%s", limit, sig, c.stderr)
	}
}
