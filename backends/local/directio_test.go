package local

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// alignedBytes returns n random bytes starting on a dioAlign boundary,
// or one byte past one when off is set.
func alignedBytes(rnd *rand.Rand, n int, off bool) []byte {
	b := make([]byte, n+2*dioAlign)
	s := dioAlign - int(uintptr(unsafe.Pointer(&b[0]))%dioAlign)
	if off {
		s++
	}
	b = b[s : s+n]
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	return b
}

// cachedPages counts the pages of the file at p that are in the page cache.
func cachedPages(t *testing.T, p string) (cached, total int) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	// x/sys has no Mincore wrapper for Linux.
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	for _, v := range vec {
		cached += int(v & 1)
	}
	return cached, len(vec)
}

// directSupported says whether the file system under dir takes O_DIRECT.
func directSupported(t *testing.T, dir string) bool {
	f, err := os.OpenFile(filepath.Join(dir, "probe"), os.O_CREATE|os.O_RDWR|unix.O_DIRECT, 0o600)
	if err != nil {
		t.Logf("no O_DIRECT under %s: %v", dir, err)
		return false
	}
	f.Close()
	return true
}

// TestDirectIO stores values of sizes around the direct I/O threshold and
// alignment, from aligned and unaligned memory, durably and through a sync
// round, and reads them back whole and in ranges. Aligned large values
// must be written past the page cache (all but the tail page), the others
// through it.
func TestDirectIO(t *testing.T) {
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(3, 4))
	for _, forceBuffered := range []bool{false, true} {
		b := openT(t, 0)
		direct := !forceBuffered && directSupported(t, t.TempDir())
		b.noDirect.Store(forceBuffered)
		for _, size := range []int{dioMin - 1, dioMin, dioMin + 1, 1 << 20, 1<<20 + dioAlign - 1, 3<<20 + 123} {
			for _, off := range []bool{false, true} {
				for _, durable := range []bool{false, true} {
					name := fmt.Sprintf("buffered=%v/size=%d/unaligned=%v/durable=%v", forceBuffered, size, off, durable)
					key := fmt.Sprintf("k/%d-%v-%v", size, off, durable)
					v := alignedBytes(rnd, size, off)
					want := bytes.Clone(v)
					if durable {
						if err := b.Put(ctx, key, v); err != nil {
							t.Fatal(name, err)
						}
					} else {
						if err := b.PutNoSync(ctx, key, v); err != nil {
							t.Fatal(name, err)
						}
						if err := b.Sync(ctx, []string{key}); err != nil {
							t.Fatal(name, err)
						}
					}
					cached, total := cachedPages(t, b.pathOf(key))
					if direct && !off && size >= dioMin {
						tail := 0
						if size%dioAlign != 0 {
							tail = 1
						}
						if cached > tail {
							t.Errorf("%s: %d of %d pages in the page cache after the put, want at most %d (direct I/O)", name, cached, total, tail)
						}
					} else if cached < total {
						t.Errorf("%s: %d of %d pages in the page cache after a buffered put", name, cached, total)
					}
					got, err := b.Get(ctx, key)
					if err != nil || !bytes.Equal(got, want) {
						t.Fatalf("%s: Get = %d bytes (equal %v), %v", name, len(got), bytes.Equal(got, want), err)
					}
					if len(got) != size || cap(got) < size {
						t.Fatalf("%s: Get returned len %d", name, len(got))
					}
					r, err := b.GetRange(ctx, key, int64(size/3), int64(size/3)+5)
					if err != nil || !bytes.Equal(r, want[size/3:size/3+size/3+5]) {
						t.Fatalf("%s: GetRange = %d bytes, %v", name, len(r), err)
					}
				}
			}
		}
		if got := b.noDirect.Load(); got != forceBuffered && direct {
			t.Errorf("noDirect = %v after the puts, want %v: the file system takes O_DIRECT", got, forceBuffered)
		}
	}
}

// TestDirectRefused stands in for a file system that refuses O_DIRECT:
// the first large put takes the page cache path with the same result, and
// the backend stops trying.
func TestDirectRefused(t *testing.T) {
	ctx := context.Background()
	b := openT(t, 0)
	v := alignedBytes(rand.New(rand.NewPCG(8, 9)), 1<<20+10, false)
	tries := 0
	b.setDirect = func(*os.File, bool) error { tries++; return syscall.EINVAL }
	for _, key := range []string{"k1", "k2", "k3"} {
		if err := b.Put(ctx, key, v); err != nil {
			t.Fatalf("put with O_DIRECT refused: %v", err)
		}
		if cached, total := cachedPages(t, b.pathOf(key)); cached < total {
			t.Errorf("%d of %d pages cached after a put without direct I/O", cached, total)
		}
		got, err := b.Get(ctx, key)
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("Get after a put with O_DIRECT refused: %d bytes (equal %v), %v", len(got), bytes.Equal(got, v), err)
		}
	}
	if !b.noDirect.Load() || tries != 1 {
		t.Errorf("noDirect %v after %d refusals, want true after 1", b.noDirect.Load(), tries)
	}
}
