package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore"
)

// holdEnv makes the test binary, run again with it set to a config path,
// a stand-in for another healstore process: it opens that store, says
// "ready", and holds it until its stdin closes. Its command line is
// whatever the test gives (such as healstore mount --with-healer /mnt).
const holdEnv = "HEALSTORE_TEST_HOLD_STORE"

func init() {
	path := os.Getenv(holdEnv)
	if path == "" {
		// Tests that hold a store in this process (TestMetastoreInUse)
		// wait lockWait for it: keep them quick. Tests of the wait set
		// it themselves.
		lockWait = 2 * time.Second
		return
	}
	cfg, err := healstore.LoadConfig(path)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	s, err := healstore.Open(context.Background(), cfg)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	s.Close()
	os.Exit(0)
}

// holdStore starts another process holding the store at cfg, with the
// command line args; release ends it.
func holdStore(t *testing.T, cfg string, args ...string) (pid int, release func()) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Args = args
	cmd.Env = append(os.Environ(), holdEnv+"="+cfg)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		stdin.Close()
		cmd.Wait()
		t.Fatalf("holder %q: %q", args, line)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			stdin.Close()
			cmd.Wait()
		})
	}
	t.Cleanup(release)
	return cmd.Process.Pid, release
}

func setLockWait(t *testing.T, d time.Duration) {
	old := lockWait
	lockWait = d
	t.Cleanup(func() { lockWait = old })
}

// TestParallelPutsWaitForTheMetadata: commands run together take turns
// with the store's metadata instead of failing.
func TestParallelPutsWaitForTheMetadata(t *testing.T) {
	setLockWait(t, 10*time.Second)
	newStore(t)
	data := strings.Repeat("parallel ", 2000) // not inline
	var wg sync.WaitGroup
	errs := make([]string, 4)
	codes := make([]int, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i], codes[i] = cli(t, data, "put", fmt.Sprintf("p%d", i), "-")
		}()
	}
	wg.Wait()
	for i := range 4 {
		if codes[i] != 0 {
			t.Errorf("put p%d: exit %d, stderr %q", i, codes[i], errs[i])
		}
	}
	if out, errs, code := cli(t, "", "ls"); code != 0 || out != "p0\np1\np2\np3\n" {
		t.Fatalf("ls: %d %q %s", code, out, errs)
	}
}

// TestCommandWaitsForAnotherCommand: a command started while another
// holds the metadata runs once it is done, says it is waiting, and gives
// up after lockWait with a short message naming the holder.
func TestCommandWaitsForAnotherCommand(t *testing.T) {
	setLockWait(t, 10*time.Second)
	_, cfg := newStore(t)
	pid, release := holdStore(t, cfg, "healstore", "put", "slow", "-")
	go func() {
		time.Sleep(1500 * time.Millisecond)
		release()
	}()
	_, errs, code := cli(t, "", "ls")
	if code != 0 {
		t.Fatalf("ls while a put holds the store for 1.5s: exit %d, stderr %q", code, errs)
	}
	if !strings.Contains(errs, "waiting") || !strings.Contains(errs, fmt.Sprintf("pid %d: healstore put slow -", pid)) {
		t.Errorf("ls said %q; want that it waits, for pid %d", errs, pid)
	}

	setLockWait(t, 500*time.Millisecond)
	pid, _ = holdStore(t, cfg, "healstore", "put", "slow", "-")
	start := time.Now()
	_, errs, code = cli(t, "", "get", "x")
	if code != exitError || time.Since(start) > 5*time.Second {
		t.Fatalf("get while a put holds the store: exit %d after %s; want 1 after about lockWait", code, time.Since(start))
	}
	for _, want := range []string{"healstore get: ", "in use by", fmt.Sprintf("pid %d", pid), "Try again when it has finished"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr %q lacks %q", errs, want)
		}
	}
	if last := errs[strings.LastIndex(strings.TrimSuffix(errs, "\n"), "\n")+1:]; len(last) > 300 || strings.Contains(errs, "healstore: healstore") {
		t.Errorf("error line %q: want one prefix and at most 300 characters", last)
	}
}

// TestLongRunningHolderNamed: a daemon or a mount is not waited for; the
// message names it and gives advice that fits it.
func TestLongRunningHolderNamed(t *testing.T) {
	setLockWait(t, 10*time.Second)
	_, cfg := newStore(t)
	cases := []struct {
		holder   []string
		want     []string
		dontWant []string
	}{
		{[]string{"healstore", "--log-level", "info", "mount", "--cache-size", "2G", "--with-healer", "/mnt/data"},
			[]string{"a healstore mount", "already runs the healer", "healstore umount /mnt/data"},
			[]string{"run the healer inside", "mount --with-healer)"}},
		{[]string{"healstore", "mount", "/mnt/plain"},
			[]string{"a healstore mount", "healstore umount /mnt/plain"},
			[]string{"already runs the healer", "run the healer inside"}},
		{[]string{"healstore", "daemon"},
			[]string{"the healstore daemon", "Stop it", "healstore mount --with-healer", "daemon.sock"},
			nil},
	}
	for _, c := range cases {
		pid, release := holdStore(t, cfg, c.holder...)
		start := time.Now()
		_, errs, code := cli(t, "x", "put", "x", "-")
		release()
		if code != exitError || time.Since(start) > 3*time.Second {
			t.Errorf("put while %q holds the store: exit %d after %s; want 1 at once", c.holder, code, time.Since(start))
		}
		if !strings.Contains(errs, fmt.Sprintf("pid %d", pid)) || strings.Contains(errs, "waiting") {
			t.Errorf("holder %q: stderr %q; want its pid, no wait", c.holder, errs)
		}
		for _, w := range c.want {
			if !strings.Contains(errs, w) {
				t.Errorf("holder %q: stderr %q lacks %q", c.holder, errs, w)
			}
		}
		for _, w := range c.dontWant {
			if strings.Contains(errs, w) {
				t.Errorf("holder %q: stderr %q has %q", c.holder, errs, w)
			}
		}
	}
}

// TestLockWaitStopsOnCtrlC: the wait ends when the command's context
// does (SIGINT, SIGTERM).
func TestLockWaitStopsOnCtrlC(t *testing.T) {
	setLockWait(t, 30*time.Second)
	_, cfg := newStore(t)
	holdStore(t, cfg, "healstore", "put", "slow", "-")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var out, errb strings.Builder
	start := time.Now()
	code := run(ctx, []string{"--config", cfg, "ls"}, strings.NewReader(""), &out, &errb)
	if code == 0 || time.Since(start) > 5*time.Second || !strings.Contains(errb.String(), "stopped while waiting") {
		t.Fatalf("ls stopped after 500ms: exit %d after %s, stderr %q", code, time.Since(start), errb.String())
	}
}

// TestLockedByDaemonNamesTheSocketOnlyWhenServed: the message for a
// command locked out by the daemon points put, get, ls, stat and rm at
// the daemon's socket. A daemon starting, stopping or unable to make it
// serves none: the message says so rather than send the user to a socket
// that is not there (the command would have used it).
func TestLockedByDaemonNamesTheSocketOnlyWhenServed(t *testing.T) {
	cfg := &healstore.Config{MetadataDir: t.TempDir()}
	h := lockHolder{pid: 42, command: "daemon", cmdline: "healstore daemon"}
	msg := lockedMessage("healstore put", cfg, h, 0, "")
	if !strings.Contains(msg, "serves no socket") || strings.Contains(msg, "reach a running daemon through its socket") {
		t.Fatalf("without a socket: %s", msg)
	}
	sock := filepath.Join(cfg.MetadataDir, healstore.ObjectsSocketName)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	msg = lockedMessage("healstore put", cfg, h, 0, "")
	if !strings.Contains(msg, "reach a running daemon through its socket") || strings.Contains(msg, "serves no socket") {
		t.Fatalf("with a socket: %s", msg)
	}
}
