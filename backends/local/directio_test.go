package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/healstore/healstore/backends"
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

// pageCacheProbe says whether the file system under dir takes O_DIRECT
// (direct) and whether page cache residency shows which way a file was
// written (residency): a direct write leaves none of its pages in the
// page cache and a buffered one leaves all of them. Some file systems
// take O_DIRECT and keep the pages anyway (tmpfs since Linux 6.6, whose
// data is its page cache; btrfs on compressed files; ext4 with
// data=journal), and some keep file data out of the page cache (ZFS):
// there the tests check the path the backend took, not the residency.
func pageCacheProbe(t *testing.T, dir string) (direct, residency bool) {
	t.Helper()
	v := alignedBytes(rand.New(rand.NewPCG(1, 1)), dioMin, false)
	p := filepath.Join(dir, "probe-direct")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|unix.O_DIRECT, 0o600)
	if err != nil {
		t.Logf("no O_DIRECT under %s: %v", dir, err)
		return false, false
	}
	_, err = f.Write(v)
	f.Close()
	if err != nil {
		t.Logf("O_DIRECT write refused under %s: %v", dir, err)
		return false, false
	}
	direct = true
	if cached, _ := cachedPages(t, p); cached != 0 {
		t.Logf("%s keeps direct writes in the page cache (%d pages): residency not checked", dir, cached)
		return direct, false
	}
	p = filepath.Join(dir, "probe-buffered")
	if err := os.WriteFile(p, v, 0o600); err != nil {
		t.Fatal(err)
	}
	if cached, total := cachedPages(t, p); cached != total {
		t.Logf("%s keeps buffered writes out of the page cache (%d of %d pages): residency not checked", dir, cached, total)
		return direct, false
	}
	return direct, true
}

// countDirect stands in for setDirect on b and counts the files O_DIRECT
// was turned on for.
func countDirect(b *Backend) *int {
	n := new(int)
	b.setDirect = func(f *os.File, on bool) error {
		err := setDirect(f, on)
		if on && err == nil {
			*n++
		}
		return err
	}
	return n
}

// TestDirectIO stores values of sizes around the direct I/O threshold and
// alignment, from aligned and unaligned memory, durably and through a sync
// round, and reads them back whole and in ranges. Aligned large values
// must be written with O_DIRECT and, where the file system shows it (see
// pageCacheProbe), past the page cache (all but the tail page); the
// others through it.
func TestDirectIO(t *testing.T) {
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(3, 4))
	for _, forceBuffered := range []bool{false, true} {
		b := filesOnly(openT(t, 0))
		direct, residency := pageCacheProbe(t, t.TempDir())
		direct = direct && !forceBuffered
		b.noDirect.Store(forceBuffered)
		directs := countDirect(b)
		for _, size := range []int{dioMin - 1, dioMin, dioMin + 1, 1 << 20, 1<<20 + dioAlign - 1, 3<<20 + 123} {
			for _, off := range []bool{false, true} {
				for _, durable := range []bool{false, true} {
					name := fmt.Sprintf("buffered=%v/size=%d/unaligned=%v/durable=%v", forceBuffered, size, off, durable)
					key := fmt.Sprintf("k/%d-%v-%v", size, off, durable)
					v := alignedBytes(rnd, size, off)
					want := bytes.Clone(v)
					wantDirect := direct && !off && size >= dioMin
					before := *directs
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
					if got := *directs - before; got != map[bool]int{false: 0, true: 1}[wantDirect] {
						t.Errorf("%s: O_DIRECT turned on %d times for the put, want direct %v", name, got, wantDirect)
					}
					if residency {
						cached, total := cachedPages(t, b.pathOf(key))
						if wantDirect {
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
	_, residency := pageCacheProbe(t, t.TempDir())
	v := alignedBytes(rand.New(rand.NewPCG(8, 9)), 1<<20+10, false)
	tries := 0
	b.setDirect = func(*os.File, bool) error { tries++; return syscall.EINVAL }
	for _, key := range []string{"k1", "k2", "k3"} {
		if err := b.Put(ctx, key, v); err != nil {
			t.Fatalf("put with O_DIRECT refused: %v", err)
		}
		if residency { // elsewhere the refusal count below shows the path
			if cached, total := cachedPages(t, b.pathOf(key)); cached < total {
				t.Errorf("%d of %d pages cached after a put without direct I/O", cached, total)
			}
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

// TestDirectOffFails checks a put whose turning O_DIRECT off fails after
// the value's aligned part was written: the put fails, leaves no value and
// no temporary file, and gives back its quota reservation.
func TestDirectOffFails(t *testing.T) {
	ctx := context.Background()
	b := openT(t, 64<<20)
	offs := 0
	b.setDirect = func(f *os.File, on bool) error {
		if on {
			setDirect(f, true) // refused or not, the write below takes a path
			return nil
		}
		offs++
		return syscall.EIO
	}
	v := alignedBytes(rand.New(rand.NewPCG(10, 11)), 1<<20+10, false)
	for _, durable := range []bool{true, false} {
		var err error
		if durable {
			err = b.Put(ctx, "k", v)
		} else {
			err = b.PutNoSync(ctx, "k", v)
		}
		if err == nil {
			t.Fatalf("durable %v: put succeeded though O_DIRECT could not be turned off", durable)
		}
	}
	if offs != 2 {
		t.Fatalf("O_DIRECT turned off %d times, want 2 (one per put)", offs)
	}
	if _, err := b.Get(ctx, "k"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Get after the failed puts: %v, want ErrNotFound", err)
	}
	filepath.WalkDir(b.Path(), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tmpPrefix) {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
	if b.used != 0 {
		t.Errorf("%d bytes of quota still reserved after the failed puts", b.used)
	}
}
