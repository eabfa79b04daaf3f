package fuse

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A serving mount records its process id in a small file named after the
// mount point, so `healstore umount DIR` can ask that process to flush and
// unmount (SIGTERM) and wait for it, instead of cutting the mount away
// under it.

// runtimeDir holds the pid files: /run/healstore for root, else
// $XDG_RUNTIME_DIR/healstore, else a per-user directory in /tmp.
func runtimeDir() string {
	if os.Geteuid() == 0 {
		return "/run/healstore"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "healstore")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("healstore-%d", os.Getuid()))
}

func pidFile(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return filepath.Join(runtimeDir(), "mount-"+hex.EncodeToString(sum[:8])+".pid")
}

// writePidFile records this process as the server of mount point dir.
func writePidFile(dir string) error {
	p := pidFile(dir)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	pid := os.Getpid()
	return os.WriteFile(p, []byte(fmt.Sprintf("%d\n%s\n%d\n", pid, dir, procStart(pid))), 0o600)
}

// removePidFile removes the pid file if it still names this process.
func removePidFile(dir string) {
	if pid, _ := readPidFile(dir); pid == os.Getpid() {
		os.Remove(pidFile(dir))
	}
}

func readPidFile(dir string) (int, error) {
	b, err := os.ReadFile(pidFile(dir))
	if err != nil {
		return 0, err
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 3 || lines[1] != dir {
		return 0, fmt.Errorf("pid file %s names another mount point", pidFile(dir))
	}
	pid, err := strconv.Atoi(lines[0])
	if err != nil {
		return 0, fmt.Errorf("pid file %s: %w", pidFile(dir), err)
	}
	// A pid reused by a later process is not the mount's.
	if start, _ := strconv.ParseUint(lines[2], 10, 64); start == 0 || procStart(pid) != start {
		return 0, fmt.Errorf("mount process %d is gone", pid)
	}
	return pid, nil
}

// alive reports whether pid runs; a zombie (exited, not yet reaped by its
// parent) has finished.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// Unmount unmounts the healstore filesystem at dir. When the process
// serving it is known and alive, it gets SIGTERM, which makes it unmount
// and upload what it still holds; Unmount waits for it to exit until ctx
// ends. Otherwise (a mount whose process died, or one started elsewhere)
// the mount is unmounted directly. With lazy, a busy mount is detached
// (umount -l) instead of failing with EBUSY.
func Unmount(ctx context.Context, dir string, lazy bool) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if pid, err := readPidFile(dir); err == nil && pid != os.Getpid() && alive(pid) {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			return fmt.Errorf("signal mount process %d: %w", pid, err)
		}
		for alive(pid) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("mount process %d is still flushing %s: %w", pid, dir, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
		os.Remove(pidFile(dir))
		return nil
	}
	if !isFuseMount(dir) {
		return fmt.Errorf("%s is not a FUSE mount", dir)
	}
	os.Remove(pidFile(dir))
	if lazy {
		return detach(dir)
	}
	if os.Geteuid() == 0 {
		if err := unix.Unmount(dir, 0); err != nil {
			return fmt.Errorf("umount %s: %w", dir, err)
		}
		return nil
	}
	for _, bin := range []string{"fusermount3", "fusermount"} {
		if path, err := exec.LookPath(bin); err == nil {
			out, err := exec.Command(path, "-u", dir).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s -u %s: %v: %s", bin, dir, err, strings.TrimSpace(string(out)))
			}
			return nil
		}
	}
	return fmt.Errorf("unmount %s: not root and no fusermount3 found", dir)
}

// NotifyReady tells systemd (Type=notify units) that the mount serves, by
// sending READY=1 to $NOTIFY_SOCKET. Without the variable it does nothing.
func NotifyReady() error {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return nil
	}
	if strings.HasPrefix(sock, "@") {
		sock = "\x00" + sock[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("READY=1")); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return nil
}
