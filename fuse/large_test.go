package fuse

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fillPattern fills buf with the 8-byte offsets of its words from off, so
// any misplaced or lost chunk is seen at once.
func fillPattern(buf []byte, off int64) {
	for i := 0; i+8 <= len(buf); i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], uint64(off+int64(i))^0x9e3779b97f4a7c15)
	}
}

// heapWatch samples the Go heap in use until stopped and keeps the peak.
type heapWatch struct {
	peak atomic.Uint64
	stop chan struct{}
	done chan struct{}
}

func watchHeap() *heapWatch {
	w := &heapWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > w.peak.Load() {
				w.peak.Store(ms.HeapInuse)
			}
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *heapWatch) end() uint64 {
	close(w.stop)
	<-w.done
	return w.peak.Load()
}

// progressWatch ends the test binary with a clear message when a long
// loop of file operations on the mount makes no progress for limit (a
// call stuck in the mount cannot be interrupted from the test; without
// this the run would hang until go test's timeout and say only that).
type progressWatch struct {
	pos  atomic.Int64
	stop chan struct{}
	once sync.Once
}

// watchProgress starts a watch; it ends with end or with the test.
func watchProgress(t *testing.T, what string, limit time.Duration) *progressWatch {
	p := &progressWatch{stop: make(chan struct{})}
	t.Cleanup(p.end)
	name := t.Name()
	go func() {
		last, since := int64(-1), time.Now()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			if pos := p.pos.Load(); pos != last {
				last, since = pos, time.Now()
			} else if time.Since(since) > limit {
				msg := fmt.Sprintf("%s: %s made no progress for %v, stuck at offset %d", name, what, limit, pos)
				fmt.Fprintf(os.Stderr, "%s; the goroutines:\n", msg)
				pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
				abortMounts() // so the process can exit (see watchdog)
				panic(msg)
			}
		}
	}()
	return p
}

func (p *progressWatch) end() { p.once.Do(func() { close(p.stop) }) }

// TestLargeFileBoundedMemory writes a 2 GiB file through the mount and
// reads it back after a remount, checking every byte, while the memory of
// the process (mount and test alike) stays bounded by the caches, not by
// the file. Large blocks keep the object count, and so the time, low.
func TestLargeFileBoundedMemory(t *testing.T) {
	const (
		size  = 2 << 30
		chunk = 1 << 20
		// Caches: 128 MiB dirty on disk, 80 MiB of blocks in memory, 8
		// uploads of 8 MiB in flight, plus the store's own buffers and
		// garbage not yet collected.
		heapLimit = 768 << 20
	)
	st := newStore(t, 4, 2, 8<<20)
	e := newMount(t, st, Options{BlockSize: 8 << 20, CacheSize: 128 << 20})
	path := e.path("big")
	runtime.GC()
	w := watchHeap()
	start := time.Now()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, chunk)
	pw := watchProgress(t, "the write", 3*time.Minute)
	for off := int64(0); off < size; off += chunk {
		pw.pos.Store(off)
		fillPattern(buf, off)
		if _, err := f.Write(buf); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	pw.end()
	wrote := time.Since(start)
	e.remount()
	start = time.Now()
	f, err = os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := make([]byte, chunk)
	var off int64
	pw = watchProgress(t, "the read", 3*time.Minute)
	defer pw.end()
	for {
		pw.pos.Store(off)
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			fillPattern(want, off)
			if string(buf[:n]) != string(want[:n]) {
				t.Fatalf("data differs in the MiB at %d", off)
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	read := time.Since(start)
	peak := w.end()
	if off != size {
		t.Fatalf("read %d bytes, want %d", off, size)
	}
	t.Logf("2 GiB: write+fsync %v (%.0f MB/s), read %v (%.0f MB/s), peak heap %d MiB",
		wrote.Round(time.Millisecond), size/wrote.Seconds()/1e6, read.Round(time.Millisecond), size/read.Seconds()/1e6, peak>>20)
	if peak > heapLimit {
		t.Fatalf("peak heap %d MiB for a 2 GiB file; the caches allow about %d MiB", peak>>20, heapLimit>>20)
	}
}
