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
	"testing"

	"github.com/healstore/healstore/backends"
	"golang.org/x/sys/unix"
)

// smallFS mounts a tmpfs of size bytes for the test. Mounting needs root,
// which `make test` has (FUSE needs it too); elsewhere the test skips,
// unless HEALSTORE_REQUIRE_COMPONENTS=1 says it must run.
func smallFS(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		if os.Getenv("HEALSTORE_REQUIRE_COMPONENTS") == "1" {
			t.Fatalf("mount a %d-byte tmpfs (needs root): %v", size, err)
		}
		t.Skipf("cannot mount a small tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// TestFullDisk fills a real file system until it refuses a value, in both
// layouts (a file of its own for a value over defaultPackMax, written
// with direct I/O; packs for the others; tmpfs takes O_DIRECT only since
// Linux 6.6, so on older kernels both fall back to the page cache), and
// checks that the refusal is ErrFull, that it leaves nothing behind (no
// value, no temporary file), that every value stored before reads back
// intact, and that deleting makes room again.
func TestFullDisk(t *testing.T) {
	for _, size := range []int{defaultPackMax + 64<<10, 1 << 20, 20 << 10} {
		t.Run(fmt.Sprintf("values=%d", size), func(t *testing.T) {
			root := smallFS(t, 8<<20)
			b, err := Open(specFor(root))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			rnd := rand.New(rand.NewPCG(7, uint64(size)))
			stored := map[string][]byte{}
			var full string
			for i := range 10000 {
				key := fmt.Sprintf("shards/%032x.%d", i, i%14)
				v := alignedBytes(rnd, size, false)
				err := b.PutNoSync(ctx, key, v)
				if err == nil {
					err = b.Sync(ctx, []string{key})
				}
				if err != nil {
					if !errors.Is(err, backends.ErrFull) {
						t.Fatalf("put %d into a full file system: %v, want ErrFull", i, err)
					}
					full = key
					break
				}
				stored[key] = bytes.Clone(v)
			}
			if full == "" {
				t.Fatal("an 8 MiB file system never filled up")
			}
			if len(stored) == 0 {
				t.Fatal("not one value fit")
			}
			if _, err := b.Get(ctx, full); !errors.Is(err, backends.ErrNotFound) {
				t.Fatalf("the refused value %s: Get = %v, want ErrNotFound", full, err)
			}
			filepath.WalkDir(filepath.Join(root, "data"), func(p string, d os.DirEntry, err error) error {
				if err == nil && strings.HasPrefix(d.Name(), tmpPrefix) {
					t.Errorf("temporary file left behind: %s", p)
				}
				return nil
			})
			for k, v := range stored {
				got, err := b.Get(ctx, k)
				if err != nil || !bytes.Equal(got, v) {
					t.Fatalf("value %s after the disk filled: %d bytes (equal %v), %v", k, len(got), bytes.Equal(got, v), err)
				}
			}
			for k := range stored {
				if err := b.Delete(ctx, k); err != nil {
					t.Fatal(err)
				}
				break
			}
			if err := b.Put(ctx, full, alignedBytes(rnd, size, false)); err != nil {
				t.Fatalf("put after a delete made room: %v", err)
			}
		})
	}
}
