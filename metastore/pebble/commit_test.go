package pebblekv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// collidingKeys returns two distinct keys that share one of kv's key
// locks, so a test can commit a batch that names the same lock twice.
func collidingKeys(t testing.TB, kv *KV, prefix string) ([]byte, []byte) {
	first := map[int][]byte{}
	for i := 0; i < 100*commitStripes; i++ {
		key := fmt.Appendf(nil, "%s/%d", prefix, i)
		s := kv.keyStripe(key)
		if other, ok := first[s]; ok {
			return other, key
		}
		first[s] = key
	}
	t.Fatal("no two keys share a lock")
	return nil, nil
}

// withDeadline ends the test binary, printing every goroutine's stack,
// when run does not return in time: a commit that waits on a lock forever
// (a cycle, or a lock taken twice) shows up at once instead of as a hung
// binary. Neither t.Fatal nor a panic would do: both run the cleanup's
// Close, which waits for the stuck Commit.
func withDeadline(t *testing.T, d time.Duration, run func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		run()
	}()
	select {
	case <-done:
	case <-time.After(d):
		stacks := make([]byte, 1<<20)
		stacks = stacks[:runtime.Stack(stacks, true)]
		fmt.Fprintf(os.Stderr, "--- FAIL: %s: commits did not finish within %v (deadlock?)\n%s", t.Name(), d, stacks)
		os.Exit(1)
	}
}

// widenWindow is the tests' checkedHook: pebble makes a write visible
// microseconds after the conditions were checked, too soon for goroutines
// on two cores to slip in between; a short sleep there lets a commit that
// the locks failed to exclude run its own checks inside the window.
func widenWindow() { time.Sleep(200 * time.Microsecond) }

// increment adds one to each counter in keys with one conditional batch,
// retrying on conflict, and returns how many conflicts it met.
func increment(ctx context.Context, kv *KV, keys ...[]byte) (int, error) {
	for conflicts := 0; ; conflicts++ {
		var b metastore.Batch
		for _, key := range keys {
			n := 0
			v, err := kv.Get(ctx, key)
			switch {
			case err == nil:
				if n, err = strconv.Atoi(string(v)); err != nil {
					return conflicts, fmt.Errorf("counter %q: %w", key, err)
				}
				b.ExpectValue(key, v)
			case errors.Is(err, metastore.ErrNotFound):
				b.ExpectMissing(key)
			default:
				return conflicts, err
			}
			b.Put(key, []byte(strconv.Itoa(n+1)))
		}
		err := kv.Commit(ctx, &b)
		if err == nil {
			return conflicts, nil
		}
		if !errors.Is(err, metastore.ErrConflict) {
			return conflicts, err
		}
	}
}

// TestConcurrentCASLosesNoUpdate runs goroutines that increment counters
// with conditional commits: counters all of them share, counters of their
// own, two counters that share one key lock, and batches that name
// several of these in varying order. Every acknowledged increment must
// show in the final counts, and the commits must not deadlock.
func TestConcurrentCASLosesNoUpdate(t *testing.T) {
	kv := factory(t).(*KV)
	kv.checkedHook = widenWindow
	ctx := context.Background()
	const workers, rounds = 8, 12
	shared := [][]byte{[]byte("shared/a"), []byte("shared/b")}
	c1, c2 := collidingKeys(t, kv, "same-lock")
	var (
		mu        sync.Mutex
		want      = map[string]int{}
		conflicts atomic.Int64
		failures  = make(chan error, workers)
	)
	withDeadline(t, 2*time.Minute, func() {
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				own := fmt.Appendf(nil, "own/%d", w)
				for r := 0; r < rounds; r++ {
					var keys [][]byte
					switch (r + w) % 5 {
					case 0:
						keys = [][]byte{shared[0]}
					case 1:
						keys = [][]byte{own}
					case 2:
						// Two shared keys, half the workers naming them
						// in the other order.
						keys = [][]byte{shared[0], shared[1]}
						if w%2 == 1 {
							keys = [][]byte{shared[1], shared[0]}
						}
					case 3:
						keys = [][]byte{own, shared[1]}
					case 4:
						keys = [][]byte{c1, c2}
						if w%2 == 1 {
							keys = [][]byte{c2, own, c1}
						}
					}
					n, err := increment(ctx, kv, keys...)
					conflicts.Add(int64(n))
					if err != nil {
						failures <- err
						return
					}
					mu.Lock()
					for _, key := range keys {
						want[string(key)]++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	})
	close(failures)
	for err := range failures {
		t.Fatal(err)
	}
	for key, n := range want {
		v, err := kv.Get(ctx, []byte(key))
		if err != nil {
			t.Fatalf("counter %q: %v", key, err)
		}
		if string(v) != strconv.Itoa(n) {
			t.Errorf("counter %q = %s after %d acknowledged increments (lost update)", key, v, n)
		}
	}
	if conflicts.Load() == 0 {
		// Without conflicts the test proved nothing about exclusion.
		t.Errorf("no commit conflicted: the workers never raced")
	}
	t.Logf("%d conflicts retried", conflicts.Load())
}

// TestExpectMissingRaceHasOneWinner starts workers at once on commits
// that each create the same key (and a key of their own, so the batches
// span several locks): exactly one may win each race, and the key must
// hold the winner's value.
func TestExpectMissingRaceHasOneWinner(t *testing.T) {
	kv := factory(t).(*KV)
	kv.checkedHook = widenWindow
	ctx := context.Background()
	const workers, races = 8, 12
	withDeadline(t, 2*time.Minute, func() {
		for r := 0; r < races; r++ {
			key := fmt.Appendf(nil, "race/%d", r)
			start := make(chan struct{})
			errs := make([]error, workers)
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var b metastore.Batch
					b.ExpectMissing(key)
					b.Put(key, []byte(strconv.Itoa(w)))
					if w%2 == 0 {
						mine := fmt.Appendf(nil, "mine/%d/%d", r, w)
						b.ExpectMissing(mine)
						b.Put(mine, []byte("x"))
					}
					<-start
					errs[w] = kv.Commit(ctx, &b)
				}()
			}
			close(start)
			wg.Wait()
			winner := -1
			for w, err := range errs {
				switch {
				case err == nil:
					if winner >= 0 {
						t.Errorf("race %d: workers %d and %d both created %s", r, winner, w, key)
					}
					winner = w
				case !errors.Is(err, metastore.ErrConflict):
					t.Errorf("race %d worker %d: %v", r, w, err)
				}
			}
			if winner < 0 {
				t.Fatalf("race %d: nobody created %s", r, key)
			}
			v, err := kv.Get(ctx, key)
			if err != nil || string(v) != strconv.Itoa(winner) {
				t.Errorf("race %d: %s = %q, %v; the winner was %d", r, key, v, err, winner)
			}
			// A loser wrote nothing, its own key included.
			for w, err := range errs {
				if err == nil || w%2 != 0 {
					continue
				}
				if _, err := kv.Get(ctx, fmt.Appendf(nil, "mine/%d/%d", r, w)); !errors.Is(err, metastore.ErrNotFound) {
					t.Errorf("race %d: loser %d's own key: %v, want not found", r, w, err)
				}
			}
		}
	})
}

// TestSameLockTwiceInOneBatch commits batches whose keys share a lock:
// the lock is taken once, not twice (which would hang).
func TestSameLockTwiceInOneBatch(t *testing.T) {
	kv := factory(t).(*KV)
	ctx := context.Background()
	a, b := collidingKeys(t, kv, "twice")
	withDeadline(t, 10*time.Second, func() {
		var batch metastore.Batch
		batch.ExpectMissing(a)
		batch.Put(a, []byte("1"))
		batch.Put(b, []byte("2"))
		if err := kv.Commit(ctx, &batch); err != nil {
			t.Error(err)
		}
	})
	for key, want := range map[string]string{string(a): "1", string(b): "2"} {
		if v, err := kv.Get(ctx, []byte(key)); err != nil || string(v) != want {
			t.Errorf("%s = %q, %v; want %q", key, v, err, want)
		}
	}
}

// BenchmarkCommitParallel measures synced conditional commits of disjoint
// keys from 1 and 8 goroutines, under the one global commit lock healstore
// had before (serial) and under the key locks (keys). With key locks, 8
// goroutines share WAL syncs; the commits/s of keys/8 over keys/1 is the
// gain concurrent writers (rebuild and upload workers) see.
//
//	go test -run '^$' -bench CommitParallel -count 3 ./metastore/pebble/
func BenchmarkCommitParallel(b *testing.B) {
	for _, mode := range []struct {
		name   string
		serial bool
	}{{"serial", true}, {"keys", false}} {
		for _, goroutines := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/%d", mode.name, goroutines), func(b *testing.B) {
				kv, err := Open(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				defer kv.Close()
				kv.serialCommits = mode.serial
				ctx := context.Background()
				value := make([]byte, 500)
				var next atomic.Int64
				var wg sync.WaitGroup
				errs := make(chan error, goroutines)
				b.ResetTimer()
				start := time.Now()
				for g := 0; g < goroutines; g++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := next.Add(1)
							if i > int64(b.N) {
								return
							}
							var batch metastore.Batch
							key := fmt.Appendf(nil, "bench/%d", i)
							batch.ExpectMissing(key)
							batch.Put(key, value)
							if err := kv.Commit(ctx, &batch); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commits/s")
			})
		}
	}
}
