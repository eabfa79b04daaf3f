package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// makeFiles writes n small files spread over a few directories and returns
// their paths and the directories'.
func makeFiles(t *testing.T, n int) (files, dirs []string) {
	t.Helper()
	root := t.TempDir()
	for d := range 4 {
		dir := filepath.Join(root, fmt.Sprint(d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
	}
	for i := range n {
		p := filepath.Join(dirs[i%len(dirs)], fmt.Sprintf("f%d", i))
		if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	return files, dirs
}

// syncPaths fsyncs files and directories, more than one AIO context holds
// at once, and reports a path it cannot open at its own index only.
func TestSyncPaths(t *testing.T) {
	if aioEngineOrNil() == nil {
		t.Log("AIO is not available here: testing the fallback")
	}
	files, dirs := makeFiles(t, aioDepth+100)
	missing := filepath.Join(dirs[0], "missing")
	paths := append(append(append([]string{}, files...), missing), dirs...)
	errs := syncPaths(paths)
	if len(errs) != len(paths) {
		t.Fatalf("%d errors for %d paths", len(errs), len(paths))
	}
	for i, err := range errs {
		if paths[i] == missing {
			if !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("missing path: %v, want ErrNotExist", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", paths[i], err)
		}
	}
}

// Concurrent callers share the engine; every request is accounted for.
func TestSyncPathsConcurrent(t *testing.T) {
	files, _ := makeFiles(t, 400)
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, err := range syncPaths(files[g*50 : (g+1)*50]) {
				if err != nil {
					errc <- fmt.Errorf("%s: %w", files[g*50+i], err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if e := aioEngineOrNil(); e != nil {
		e.mu.Lock()
		n := len(e.reqs)
		e.mu.Unlock()
		if n != 0 || len(e.slots) != 0 {
			t.Fatalf("after all batches: %d requests and %d slots still held", n, len(e.slots))
		}
	}
}

// Each descriptor gets its own fsync result: one that cannot be fsynced
// (a pipe) or is not open fails alone.
func TestAIOFsyncErrors(t *testing.T) {
	e := aioEngineOrNil()
	if e == nil {
		t.Skip("AIO is not available here")
	}
	files, _ := makeFiles(t, 2)
	var fds []int
	for _, p := range files {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		fds = append(fds, fd)
	}
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])
	closed, err := unix.Dup(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(closed)
	errs := e.fsync([]int{fds[0], pipe[0], fds[1], closed})
	if errs[0] != nil || errs[2] != nil {
		t.Fatalf("fsync of files: %v, %v", errs[0], errs[2])
	}
	if !errors.Is(errs[1], syscall.EINVAL) {
		t.Fatalf("fsync of a pipe: %v, want EINVAL", errs[1])
	}
	if !errors.Is(errs[3], syscall.EBADF) {
		t.Fatalf("fsync of a closed descriptor: %v, want EBADF", errs[3])
	}
	// Refused from the first: everything is fsynced without AIO.
	errs = e.fsync([]int{pipe[1], fds[0], fds[1]})
	if !errors.Is(errs[0], syscall.EINVAL) || errs[1] != nil || errs[2] != nil {
		t.Fatalf("fsync of a pipe then two files: %v", errs)
	}
	if n := len(e.slots); n != 0 {
		t.Fatalf("%d slots still held", n)
	}
}

// A caller never waits for a slot: with every slot held (by rounds on a
// disk whose fsyncs hang) a round on another disk still completes, by
// fsync system calls, and leaves the held slots alone.
func TestAIOSlotsExhausted(t *testing.T) {
	e := aioEngineOrNil()
	if e == nil {
		t.Skip("AIO is not available here")
	}
	for range cap(e.slots) {
		e.slots <- struct{}{}
	}
	defer func() {
		for range cap(e.slots) {
			<-e.slots
		}
	}()
	files, dirs := makeFiles(t, 3)
	done := make(chan []error, 1)
	go func() { done <- syncPaths(append(files, dirs...)) }()
	select {
	case errs := <-done:
		for i, err := range errs {
			if err != nil {
				t.Fatalf("path %d: %v", i, err)
			}
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a round waited for an AIO slot while all were held")
	}
	if n := len(e.slots); n != cap(e.slots) {
		t.Fatalf("%d of %d slots held after the round, want all (the test's)", n, cap(e.slots))
	}
}

// A round longer than syncChunk keeps each path's error at its index.
func TestSyncPathsChunks(t *testing.T) {
	files, dirs := makeFiles(t, 2*syncChunk+7)
	missing := filepath.Join(dirs[1], "missing")
	at := syncChunk + 3
	paths := append(append(append([]string{}, files[:at]...), missing), files[at:]...)
	errs := syncPaths(paths)
	for i, err := range errs {
		if i == at {
			if !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("missing path at %d: %v, want ErrNotExist", i, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", paths[i], err)
		}
	}
}
