package local

import (
	"context"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Prefetch brings an evicted value back into the page cache without a
// read, and is a no-op for keys that are bad or absent.
func TestPrefetchLoadsPageCache(t *testing.T) {
	b := filesOnly(openT(t, 0))
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
	if in, _ := cachedPages(t, p); in != 0 {
		// Some file systems (tmpfs) cannot evict; the hint cannot be
		// told from nothing there. make test's temp directories are on
		// a disk.
		if os.Getenv("HEALSTORE_REQUIRE_COMPONENTS") == "1" {
			t.Fatalf("%d pages still cached after eviction", in)
		}
		t.Skipf("%d pages still cached after eviction on this file system", in)
	}
	b.Prefetch(ctx, "shard")
	deadline := time.Now().Add(10 * time.Second)
	for {
		in, all := cachedPages(t, p)
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
	b := filesOnly(openT(t, 0))
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
