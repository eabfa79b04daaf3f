package local

import (
	"context"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resident counts the pages of path in the page cache.
func resident(t *testing.T, path string) (in, all int) {
	t.Helper()
	f, err := os.Open(path)
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
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	for _, v := range vec {
		if v&1 != 0 {
			in++
		}
	}
	return in, len(vec)
}

// Prefetch brings an evicted value back into the page cache without a
// read, and is a no-op for keys that are bad or absent.
func TestPrefetchLoadsPageCache(t *testing.T) {
	b := openT(t, 0)
	ctx := context.Background()
	if err := b.Put(ctx, "shard", make([]byte, 256<<10)); err != nil {
		t.Fatal(err)
	}
	p := b.pathOf("shard")
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if in, _ := resident(t, p); in != 0 {
		// Some file systems (tmpfs) cannot evict; the hint cannot be
		// told from nothing there.
		t.Skipf("%d pages still cached after eviction on this file system", in)
	}
	b.Prefetch(ctx, "shard")
	deadline := time.Now().Add(10 * time.Second)
	for {
		in, all := resident(t, p)
		if in == all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d pages cached 10 s after Prefetch", in, all)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Hints for a bad key, an absent one, or on a closed backend do nothing.
	b.Prefetch(ctx, "../escape")
	b.Prefetch(ctx, "absent")
	if _, err := os.Stat(b.pathOf("absent")); !os.IsNotExist(err) {
		t.Fatalf("Prefetch of an absent key made something: %v", err)
	}
	b.Close()
	b.Prefetch(ctx, "shard")
}

// A file in the backend larger than any value (damaged, or not
// healstore's) reads back cut short, one byte past the limit: enough to
// fail its checksum, without reading it all into memory.
func TestGetOversizedFileIsCut(t *testing.T) {
	b := openT(t, 0)
	ctx := context.Background()
	if err := b.Put(ctx, "big", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(b.pathOf("big"), MaxValueSize+1<<20); err != nil {
		t.Fatal(err)
	}
	v, err := b.Get(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != MaxValueSize+1 || v[0] != 'x' {
		t.Fatalf("Get of an oversized file: %d bytes (first %q), want %d", len(v), v[:1], MaxValueSize+1)
	}
}
