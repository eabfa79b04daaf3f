package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/healstore/healstore/backends"
)

// TestPacksSharedRandom: two instances of one directory (as two processes
// would have it: each its own descriptors and locks), each with two
// writers at once, so appends end out of order and leave holes a scan of
// the other instance steps over. Every Put, overwrite and Delete is read
// back through the other instance as soon as it returns: what one instance
// acknowledged, the other sees, while both keep writing. Then a fresh
// instance must find exactly what was last written. Seeded
// (HEALSTORE_SHARED_SEED replays one).
func TestPacksSharedRandom(t *testing.T) {
	seed := rand.Uint64()
	if s := getenvUint(t, "HEALSTORE_SHARED_SEED"); s != 0 {
		seed = s
	}
	t.Logf("seed %d", seed)
	dir := t.TempDir()
	ctx := context.Background()
	inst := make([]*Backend, 2)
	for i := range inst {
		b, err := Open(specFor(dir))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		inst[i] = b
	}
	var mu sync.Mutex
	want := map[string][]byte{} // nil: deleted
	check := func(b *Backend, key string, val []byte, what string) error {
		got, err := b.Get(ctx, key)
		switch {
		case val == nil && !errors.Is(err, backends.ErrNotFound):
			return fmt.Errorf("%s: the other instance's Get %s: %d bytes, %v; want not found", what, key, len(got), err)
		case val == nil:
			return nil
		case err != nil:
			return fmt.Errorf("%s: the other instance's Get %s: %v", what, key, err)
		case !bytes.Equal(got, val):
			return fmt.Errorf("%s: the other instance's Get %s: %d bytes, want %d (equal prefix %d)", what, key, len(got), len(val), commonLen(got, val))
		}
		if n, err := b.Stat(ctx, key); err != nil || n != int64(len(val)) {
			return fmt.Errorf("%s: the other instance's Stat %s: %d, %v; want %d", what, key, n, err, len(val))
		}
		return nil
	}
	// Two phases; between them the disk is wiped (every file removed
	// behind both instances), and the second phase writes the same keys
	// again while both still index them in the removed packs.
	for phase := range 2 {
		if phase == 1 {
			wipeDir(t, dir)
			for key := range want {
				want[key] = nil
			}
		}
		runSharedPhase(t, ctx, inst, seed+uint64(phase), want, &mu, check)
		if t.Failed() {
			return
		}
	}
	fresh, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	live := 0
	for key, val := range want {
		for _, b := range append(inst, fresh) {
			if err := check(b, key, val, "at the end"); err != nil {
				t.Fatal(err)
			}
		}
		if val != nil {
			live++
		}
	}
	listed := 0
	if err := fresh.List(ctx, "s/", func(string, int64) error { listed++; return nil }); err != nil || listed != live {
		t.Fatalf("a fresh instance lists %d keys (%v), want %d", listed, err, live)
	}
}

// runSharedPhase runs the four writers of TestPacksSharedRandom once.
func runSharedPhase(t *testing.T, ctx context.Context, inst []*Backend, seed uint64, want map[string][]byte, mu *sync.Mutex,
	check func(b *Backend, key string, val []byte, what string) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		self, other := inst[w%2], inst[1-w%2]
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(seed, uint64(w)))
			value := func() []byte {
				n := 1 + rnd.IntN(24<<10)
				if rnd.IntN(25) == 0 {
					n = defaultPackMax + 1 + rnd.IntN(64<<10) // a file of its own
				}
				v := make([]byte, n)
				for i := range v {
					v[i] = byte(rnd.Uint32())
				}
				return v
			}
			for j := range 60 {
				key := fmt.Sprintf("s/%d/%d", w, j)
				steps := []string{"put"}
				if rnd.IntN(3) == 0 {
					steps = append(steps, "overwrite")
				}
				if rnd.IntN(3) == 0 {
					steps = append(steps, "overwrite by the other")
				}
				if rnd.IntN(4) == 0 {
					steps = append(steps, "delete")
				}
				for _, step := range steps {
					by, reader := self, other
					if step == "overwrite by the other" {
						by, reader = other, self
					}
					var val []byte
					var err error
					if step == "delete" {
						err = by.Delete(ctx, key)
					} else if val = value(); rnd.IntN(2) == 0 {
						err = by.Put(ctx, key, val)
					} else {
						// The store's write path: written, then made
						// durable in a sync round.
						if err = by.PutNoSync(ctx, key, val); err == nil {
							err = by.Sync(ctx, []string{key})
						}
					}
					if err == nil {
						err = check(reader, key, val, step)
					}
					if err != nil {
						errs <- fmt.Errorf("writer %d, key %s: %w", w, key, err)
						return
					}
					mu.Lock()
					want[key] = val
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// wipeDir removes every file under a backend's data directory, as a disk
// replaced by a blank one would leave it (directories stay).
func wipeDir(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join(dir, "data"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			return os.Remove(p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// getenvUint reads a seed from the environment, 0 when unset.
func getenvUint(t *testing.T, name string) uint64 {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return 0
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, s, err)
	}
	return v
}
