package main

// This file holds what a command does when another process holds the
// store's embedded (pebble) metastore, which one process at a time can
// open: a short command (put, get, ls, ...) holding it is waited for, a
// daemon or mount is named, with advice that fits it.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/metastore"
)

// lockWait is how long a command waits for the store's metadata while
// another command holds it; lockPoll is about how often it tries.
var (
	lockWait = 10 * time.Second
	lockPoll = 100 * time.Millisecond
)

// lockNotice is how long a command waits quietly before it says it waits.
const lockNotice = time.Second

// lockHolder describes the process holding the metadata lock, as far as
// /proc tells.
type lockHolder struct {
	pid        int    // 0: unknown
	self       bool   // this process holds it (a library user, a test)
	cmdline    string // shortened, "" if unknown
	command    string // the holder's healstore command: "daemon", "mount", ...; "" if unknown
	withHealer bool   // a mount running the healer
	mountpoint string // a mount's MOUNTPOINT
	stopped    bool   // stopped by a signal (SIGSTOP, Ctrl-Z) or a debugger
}

// longRunning reports whether waiting for the holder is pointless: it
// serves until it is stopped.
func (h lockHolder) longRunning() bool {
	return h.command == "daemon" || h.command == "mount"
}

// who names the holder in a message.
func (h lockHolder) who() string {
	switch {
	case h.self:
		return "another healstore process (an earlier open in this process)"
	case h.pid == 0:
		return "another healstore process"
	case h.command == "daemon":
		return fmt.Sprintf("the healstore daemon (pid %d: %s)", h.pid, h.cmdline)
	case h.command == "mount":
		return fmt.Sprintf("a healstore mount (pid %d: %s)", h.pid, h.cmdline)
	case h.cmdline != "":
		return fmt.Sprintf("another healstore process (pid %d: %s)", h.pid, h.cmdline)
	}
	return fmt.Sprintf("another healstore process (pid %d)", h.pid)
}

// lockedError is the error of a command that could not open the store's
// metadata because another process holds it: metastore.ErrLocked, or
// ctx's error when the wait was stopped. Its text names the command.
type lockedError struct {
	msg string
	err error // the open's error
}

func (e *lockedError) Error() string { return e.msg }
func (e *lockedError) Unwrap() error { return e.err }

// openWaiting opens the store described by cfg with open
// (healstore.Open, or healstore.OpenCatalog for the metadata alone).
// While another short command holds its metadata it tries again, up to
// lockWait, and says after lockNotice that it waits; a daemon or mount
// holding it is reported at once. ctx ends the wait (Ctrl-C). hint is
// added to the message when the wait fails ("" for none).
func openWaiting[T any](ctx context.Context, g *globalOptions, cmdPath string, cfg *healstore.Config, hint string,
	open func(context.Context, *healstore.Config) (T, error)) (T, error) {
	start := time.Now()
	noticed := false
	var none T
	for {
		s, err := open(ctx, cfg)
		if !errors.Is(err, metastore.ErrLocked) {
			return s, err
		}
		h := findLockHolder(cfg.MetadataDir)
		waited := time.Since(start)
		if h.longRunning() || waited >= lockWait {
			return none, &lockedError{msg: lockedMessage(cmdPath, cfg, h, waited, hint), err: err}
		}
		if !noticed && waited >= lockNotice {
			fmt.Fprintf(g.stderr, "healstore: waiting up to %s for the store's metadata, in use by %s\n", lockWait, h.who())
			noticed = true
		}
		// Jitter, so commands waiting together do not try in step.
		d := lockPoll/2 + rand.N(lockPoll)
		select {
		case <-ctx.Done():
			return none, &lockedError{msg: fmt.Sprintf("%s: stopped while waiting for the store's metadata, in use by %s", cmdPath, h.who()), err: ctx.Err()}
		case <-time.After(d):
		}
	}
}

// lockedMessage says who holds the metadata and what the user can do.
func lockedMessage(cmdPath string, cfg *healstore.Config, h lockHolder, waited time.Duration, hint string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: the store's metadata (%s) is in use by %s", cmdPath, cfg.MetadataDir, h.who())
	if !h.longRunning() {
		fmt.Fprintf(&b, ", still after %s", waited.Round(100*time.Millisecond))
	}
	if h.command == "" {
		b.WriteString("; only one process at a time can open the embedded (pebble) metastore")
	}
	b.WriteString(". ")
	umount := "healstore umount MOUNTPOINT"
	if h.mountpoint != "" {
		umount = "healstore umount " + h.mountpoint
	}
	switch {
	case h.command == "mount" && h.withHealer:
		fmt.Fprintf(&b, "That mount already runs the healer (status, heal, scrub and backend talk to it): "+
			"use the data through the mount, or unmount it (%s) to run this command", umount)
	case h.command == "mount":
		fmt.Fprintf(&b, "Use the data through the mount, or unmount it (%s) to run this command", umount)
	case h.command == "daemon":
		b.WriteString("Stop it to run this command, or run the healer inside a mount (healstore mount --with-healer) " +
			"instead of a separate daemon; ")
		if _, err := os.Stat(filepath.Join(cfg.MetadataDir, healstore.ObjectsSocketName)); err == nil {
			b.WriteString("put, get, ls, stat and rm reach a running daemon through its socket (" +
				healstore.ObjectsSocketName + " in the metadata directory)")
		} else {
			// The command would have used it: the daemon is starting,
			// stopping, or could not make it.
			b.WriteString("put, get, ls, stat and rm reach a daemon through its socket (" +
				healstore.ObjectsSocketName + " in the metadata directory), but this one serves no socket now: " +
				"it is starting or stopping, or could not make it (its log says why)")
		}
	case h.command != "":
		b.WriteString("Try again when it has finished")
	default:
		b.WriteString("Try again when it has finished; if it is a daemon or a mount, stop it first, " +
			"or run the healer inside the mount (healstore mount --with-healer) instead of a separate daemon")
	}
	b.WriteString(hint)
	if h.command == "" || h.longRunning() {
		b.WriteString(`; or keep the metadata in etcd ([metastore] kind = "etcd"), which processes share`)
	}
	return b.String()
}

// silentDaemonMessage says that the store's metadata is held by h, whose
// healer API at healer.metrics_addr did not answer within wait, and what
// the user can do: the command cannot open the store, nor talk to the
// process holding it.
func silentDaemonMessage(cmdPath string, cfg *healstore.Config, h lockHolder, wait time.Duration) string {
	var b strings.Builder
	addr := cfg.Healer.MetricsAddr
	fmt.Fprintf(&b, "%s: the store's metadata (%s) is held by %s", cmdPath, cfg.MetadataDir, h.who())
	if h.longRunning() {
		fmt.Fprintf(&b, ", whose healer API at %s (healer.metrics_addr) does not answer within %s", addr, wait)
	} else {
		fmt.Fprintf(&b, ", and the healer API at %s (healer.metrics_addr) does not answer within %s", addr, wait)
	}
	switch {
	case h.stopped:
		fmt.Fprintf(&b, ": the process is stopped (SIGSTOP, Ctrl-Z or a debugger). Resume it (kill -CONT %d); "+
			"to stop it instead, kill %d and then kill -CONT %d, so that it sees the signal", h.pid, h.pid, h.pid)
	case h.pid != 0 && !h.self:
		fmt.Fprintf(&b, ": the daemon may be stuck. Check it (`systemctl status` of its unit, or ps -p %d); "+
			"if it stays silent, stop it (kill %d; kill -9 %d if it does not end) and start it again", h.pid, h.pid, h.pid)
	default:
		b.WriteString(": the daemon may be stuck. Check it (`systemctl status` of its unit, or ps aux | grep healstore); " +
			"if it stays silent, stop it (kill PID; kill -9 PID if it does not end) and start it again")
	}
	return b.String()
}

// findLockHolder finds the process holding the pebble LOCK file in dir
// (Linux: /proc/locks) and which healstore command it runs.
func findLockHolder(dir string) lockHolder {
	var h lockHolder
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "LOCK"), &st); err != nil {
		return h
	}
	h.pid = lockOwner(uint64(st.Dev), st.Ino)
	if h.pid == 0 {
		return h
	}
	if h.pid == os.Getpid() {
		h.self = true
		return h
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", h.pid))
	if err != nil {
		return h
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if len(args) == 0 || args[0] == "" {
		return h
	}
	args[0] = filepath.Base(args[0])
	h.cmdline = strings.Join(args, " ")
	if len(h.cmdline) > 100 {
		h.cmdline = h.cmdline[:97] + "..."
	}
	h.command, h.withHealer, h.mountpoint = healstoreCommand(args[1:])
	h.stopped = processStopped(h.pid)
	return h
}

// processStopped reports whether the process pid is stopped (state T or
// t in /proc/PID/stat): it holds its locks and its listening socket, the
// kernel accepts connections for it, and it answers none of them.
func processStopped(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...; comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(raw), ')')
	if i < 0 || i+2 >= len(raw) {
		return false
	}
	return raw[i+2] == 'T' || raw[i+2] == 't'
}

// lockOwner returns the pid holding a POSIX lock on the file with device
// dev and inode ino, from /proc/locks; 0 if none is found. A lock on the
// same inode of another device is taken when none matches both: on btrfs
// /proc/locks names the file system's device, stat the subvolume's.
func lockOwner(dev, ino uint64) int {
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), ino)
	inoSuffix := ":" + strconv.FormatUint(ino, 10)
	byIno := 0
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 1: POSIX  ADVISORY  WRITE 12345 fd:01:5678 0 EOF
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "POSIX" {
			continue // "->" lines are waiters; OFD and flock locks are not pebble's
		}
		pid, err := strconv.Atoi(fields[4])
		if err != nil || pid <= 0 {
			continue
		}
		switch {
		case fields[5] == want:
			return pid
		case strings.HasSuffix(fields[5], inoSuffix) && byIno == 0:
			byIno = pid
		}
	}
	return byIno
}

// healstoreCommand parses a healstore command line (without argv[0]) as
// this CLI would: the command's name ("" if it is not one), and for a
// mount whether it runs the healer and its mount point.
func healstoreCommand(args []string) (name string, withHealer bool, mountpoint string) {
	g := &globalOptions{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	root := newRootCmd(g)
	c, rest, err := root.Find(args)
	if err != nil || c == root || c.ParseFlags(rest) != nil {
		return "", false, ""
	}
	name = c.Name()
	if name == "mount" {
		withHealer, _ = c.Flags().GetBool("with-healer")
		mountpoint = c.Flags().Arg(0)
	}
	return name, withHealer, mountpoint
}
