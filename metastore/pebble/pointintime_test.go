package pebblekv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// pitKeys is more than scanPage, so a walk reads several pages with
// fresh iterators and commits can land between them.
const pitKeys = 3*scanPage + 17

func pitKey(i int) []byte { return fmt.Appendf(nil, "m/%05d", i) }

// openPIT opens a KV holding pitKeys keys, every value "v0", written in a
// few commits.
func openPIT(t *testing.T) *KV {
	t.Helper()
	kv, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	var b metastore.Batch
	for i := range pitKeys {
		b.Put(pitKey(i), []byte("v0"))
		if b.Len() == 100 {
			if err := kv.Commit(context.Background(), &b); err != nil {
				t.Fatal(err)
			}
			b = metastore.Batch{}
		}
	}
	if err := kv.Commit(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	return kv
}

// rewriteAll is one commit that changes every existing key, deletes some
// keys ahead of any cursor, and adds keys before, inside and after the
// range.
func rewriteAll(ctx context.Context, kv *KV, gen int) error {
	var b metastore.Batch
	v := fmt.Appendf(nil, "v%d", gen)
	for i := range pitKeys {
		if i%50 == 49 {
			b.Delete(pitKey(i))
			continue
		}
		b.Put(pitKey(i), v)
	}
	b.Put(fmt.Appendf(nil, "a/new-%d", gen), v)
	b.Put(fmt.Appendf(nil, "m/%05d-new-%d", pitKeys/2, gen), v)
	b.Put(fmt.Appendf(nil, "z/new-%d", gen), v)
	return kv.Commit(ctx, &b)
}

// TestScanPointInTimeIgnoresWritesDuringScan commits, between the pages of
// a walk, changes to every key, deletions and new keys on both sides of
// the cursor. ScanPointInTime must see exactly the database as it was when
// it started; the same writes during a plain Scan are seen, which shows
// the commits really landed mid-walk.
func TestScanPointInTimeIgnoresWritesDuringScan(t *testing.T) {
	ctx := context.Background()
	kv := openPIT(t)

	gen := 0
	write := func(n int) error {
		// Write when the walk enters a new page, and once at its start.
		if n%scanPage != 1 {
			return nil
		}
		gen++
		return rewriteAll(ctx, kv, gen)
	}
	var got []string
	err := kv.ScanPointInTime(ctx, func(k, v []byte) error {
		got = append(got, string(k)+"="+string(v))
		return write(len(got))
	})
	if err != nil {
		t.Fatal(err)
	}
	if gen < 3 {
		t.Fatalf("only %d commits landed during the walk", gen)
	}
	if len(got) != pitKeys {
		t.Fatalf("point-in-time walk saw %d keys, want the %d that existed when it began", len(got), pitKeys)
	}
	for i, e := range got {
		if want := string(pitKey(i)) + "=v0"; e != want {
			t.Fatalf("entry %d: %q, want %q (a commit made during the walk leaked into it)", i, e, want)
		}
	}

	// The same kind of commit at the start of a plain Scan is seen by the
	// rest of the walk: the commits above really landed mid-walk.
	gen++
	sawNew, n := false, 0
	err = kv.Scan(ctx, nil, nil, func(k, v []byte) error {
		n++
		if n == 1 {
			return rewriteAll(ctx, kv, gen)
		}
		sawNew = sawNew || string(v) == fmt.Sprintf("v%d", gen)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sawNew {
		t.Fatal("a commit during a plain Scan was not seen: the test does not exercise writes during a walk")
	}

	// A new view holds the last commit, whole.
	view := map[string]string{}
	if err := kv.ScanPointInTime(ctx, func(k, v []byte) error {
		view[string(k)] = string(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for g := 1; g <= gen; g++ {
		v := fmt.Sprintf("v%d", g)
		want[fmt.Sprintf("a/new-%d", g)] = v
		want[fmt.Sprintf("m/%05d-new-%d", pitKeys/2, g)] = v
		want[fmt.Sprintf("z/new-%d", g)] = v
	}
	for i := range pitKeys {
		if i%50 != 49 {
			want[string(pitKey(i))] = fmt.Sprintf("v%d", gen)
		}
	}
	if len(view) != len(want) {
		t.Fatalf("view after the writes: %d keys, want %d", len(view), len(want))
	}
	for k, v := range want {
		if view[k] != v {
			t.Fatalf("view after the writes: %s=%q, want %q", k, view[k], v)
		}
	}
	// Every snapshot was released: pebble refuses to close a database
	// with open snapshots.
	if err := kv.Close(); err != nil {
		t.Fatalf("close after point-in-time walks: %v", err)
	}
}

// TestScanPointInTimeConcurrentCommits: commits from another goroutine
// write the same generation to a pair of keys at both ends of the key
// space; every walk waits mid-way for at least one of them, and sees both
// halves of one commit, never a mix.
func TestScanPointInTimeConcurrentCommits(t *testing.T) {
	ctx := context.Background()
	kv := openPIT(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var commits atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for gen := 1; ; gen++ {
			select {
			case <-stop:
				return
			default:
			}
			var b metastore.Batch
			v := fmt.Appendf(nil, "gen-%d", gen)
			b.Put([]byte("a/pair"), v)
			b.Put([]byte("z/pair"), v)
			if err := kv.Commit(ctx, &b); err != nil {
				t.Error(err)
				return
			}
			commits.Add(1)
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()
	const walks = 10
	for walk := range walks {
		var a, z string
		n := 0
		err := kv.ScanPointInTime(ctx, func(k, v []byte) error {
			n++
			switch string(k) {
			case "a/pair":
				a = string(v)
			case "z/pair":
				z = string(v)
			}
			if n == scanPage {
				// Between pages: let a commit land before reading on.
				c0 := commits.Load()
				deadline := time.Now().Add(30 * time.Second)
				for commits.Load() == c0 {
					if time.Now().After(deadline) {
						return errors.New("no commit in 30s")
					}
					time.Sleep(time.Millisecond)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if a != z {
			t.Fatalf("walk %d saw half a commit: a/pair=%q z/pair=%q", walk, a, z)
		}
		if a != "" && n != pitKeys+2 {
			t.Fatalf("walk %d saw %d keys, want %d", walk, n, pitKeys+2)
		}
	}
	t.Logf("%d commits during %d walks", commits.Load(), walks)
}

func TestScanPointInTimeStopAndErrors(t *testing.T) {
	ctx := context.Background()
	kv := openPIT(t)
	n := 0
	if err := kv.ScanPointInTime(ctx, func(k, v []byte) error {
		n++
		if n == 3 {
			return metastore.ErrStop
		}
		return nil
	}); err != nil || n != 3 {
		t.Fatalf("ErrStop: %v after %d keys", err, n)
	}
	boom := errors.New("boom")
	if err := kv.ScanPointInTime(ctx, func(k, v []byte) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("fn's error: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	n = 0
	err := kv.ScanPointInTime(cctx, func(k, v []byte) error {
		n++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || n > scanPage {
		t.Fatalf("cancelled walk: %v after %d keys", err, n)
	}
	if err := kv.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := kv.ScanPointInTime(ctx, func(k, v []byte) error { return nil }); !errors.Is(err, metastore.ErrClosed) {
		t.Fatalf("walk after close: %v", err)
	}
}

// TestCloseDuringScanPointInTime: Close while a walk is between pages
// releases its snapshot (else pebble's Close fails) and the walk ends
// with ErrClosed.
func TestCloseDuringScanPointInTime(t *testing.T) {
	ctx := context.Background()
	kv := openPIT(t)
	var closeErr error
	n := 0
	err := kv.ScanPointInTime(ctx, func(k, v []byte) error {
		n++
		if n == 10 {
			closeErr = kv.Close()
		}
		return nil
	})
	if closeErr != nil {
		t.Fatalf("close during a point-in-time walk: %v", closeErr)
	}
	if !errors.Is(err, metastore.ErrClosed) || n != scanPage {
		t.Fatalf("walk after close: %v after %d keys (want ErrClosed after the first page of %d)", err, n, scanPage)
	}
}
