package metastoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// Factory returns a fresh, empty KV for one test and arranges its cleanup
// (t.Cleanup); the cleanup must tolerate a KV the test already closed.
type Factory func(t *testing.T) metastore.KV

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func put(t *testing.T, kv metastore.KV, kvs ...string) {
	t.Helper()
	var b metastore.Batch
	for i := 0; i+1 < len(kvs); i += 2 {
		b.Put([]byte(kvs[i]), []byte(kvs[i+1]))
	}
	if err := kv.Commit(ctxT(t), &b); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

func mustGet(t *testing.T, kv metastore.KV, key string) string {
	t.Helper()
	v, err := kv.Get(ctxT(t), []byte(key))
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	return string(v)
}

func wantMissing(t *testing.T, kv metastore.KV, key string) {
	t.Helper()
	_, err := kv.Get(ctxT(t), []byte(key))
	if !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("get %q: got %v, want ErrNotFound", key, err)
	}
}

type pair struct{ k, v string }

func scanAll(t *testing.T, kv metastore.KV, prefix, start string) []pair {
	t.Helper()
	var out []pair
	var s []byte
	if start != "" {
		s = []byte(start)
	}
	err := kv.Scan(ctxT(t), []byte(prefix), s, func(k, v []byte) error {
		out = append(out, pair{string(k), string(v)})
		return nil
	})
	if err != nil {
		t.Fatalf("scan %q from %q: %v", prefix, start, err)
	}
	return out
}

// RunKV runs the KV conformance suite.
func RunKV(t *testing.T, newKV Factory) {
	t.Run("GetMissing", func(t *testing.T) {
		kv := newKV(t)
		wantMissing(t, kv, "nope")
	})

	t.Run("PutGetCopies", func(t *testing.T) {
		kv := newKV(t)
		ctx := ctxT(t)
		key, val := []byte("k1"), []byte("value-1")
		var b metastore.Batch
		b.Put(key, val)
		key[0], val[0] = 'X', 'X' // the batch must have copied
		if err := kv.Commit(ctx, &b); err != nil {
			t.Fatal(err)
		}
		got, err := kv.Get(ctx, []byte("k1"))
		if err != nil || string(got) != "value-1" {
			t.Fatalf("get = %q, %v; want value-1", got, err)
		}
		got[0] = 'Z' // the returned slice must be the caller's
		if v := mustGet(t, kv, "k1"); v != "value-1" {
			t.Fatalf("stored value changed through returned slice: %q", v)
		}
		put(t, kv, "k1", "value-2")
		if v := mustGet(t, kv, "k1"); v != "value-2" {
			t.Fatalf("overwrite: got %q", v)
		}
	})

	t.Run("EmptyValueIsPresent", func(t *testing.T) {
		kv := newKV(t)
		put(t, kv, "empty", "")
		if v := mustGet(t, kv, "empty"); v != "" {
			t.Fatalf("got %q", v)
		}
		var b metastore.Batch
		b.ExpectMissing([]byte("empty"))
		if err := kv.Commit(ctxT(t), &b); !errors.Is(err, metastore.ErrConflict) {
			t.Fatalf("ExpectMissing on empty value: %v, want ErrConflict", err)
		}
		b = metastore.Batch{}
		b.ExpectValue([]byte("empty"), nil)
		b.Put([]byte("after"), []byte("1"))
		if err := kv.Commit(ctxT(t), &b); err != nil {
			t.Fatalf("ExpectValue(empty) on empty value: %v", err)
		}
		if got := scanAll(t, kv, "", ""); len(got) != 2 {
			t.Fatalf("scan sees %v, want 2 keys", got)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		kv := newKV(t)
		put(t, kv, "a", "1", "b", "2")
		var b metastore.Batch
		b.Delete([]byte("a"))
		b.Delete([]byte("never-there"))
		if err := kv.Commit(ctxT(t), &b); err != nil {
			t.Fatal(err)
		}
		wantMissing(t, kv, "a")
		if v := mustGet(t, kv, "b"); v != "2" {
			t.Fatalf("b = %q", v)
		}
	})

	t.Run("LastWriteInBatchWins", func(t *testing.T) {
		kv := newKV(t)
		var b metastore.Batch
		b.Put([]byte("x"), []byte("1"))
		b.Put([]byte("x"), []byte("2"))
		b.Put([]byte("y"), []byte("1"))
		b.Delete([]byte("y"))
		b.Delete([]byte("z"))
		b.Put([]byte("z"), []byte("3"))
		if b.Len() != 3 {
			t.Fatalf("batch len %d, want 3 distinct keys", b.Len())
		}
		if err := kv.Commit(ctxT(t), &b); err != nil {
			t.Fatal(err)
		}
		if v := mustGet(t, kv, "x"); v != "2" {
			t.Fatalf("x = %q", v)
		}
		wantMissing(t, kv, "y")
		if v := mustGet(t, kv, "z"); v != "3" {
			t.Fatalf("z = %q", v)
		}
	})

	t.Run("Conditions", func(t *testing.T) {
		kv := newKV(t)
		ctx := ctxT(t)
		put(t, kv, "c", "old")
		cases := []struct {
			name string
			cond func(b *metastore.Batch)
			ok   bool
		}{
			{"value matches", func(b *metastore.Batch) { b.ExpectValue([]byte("c"), []byte("old")) }, true},
			{"value differs", func(b *metastore.Batch) { b.ExpectValue([]byte("c"), []byte("ol")) }, false},
			{"value on missing key", func(b *metastore.Batch) { b.ExpectValue([]byte("gone"), []byte("")) }, false},
			{"missing holds", func(b *metastore.Batch) { b.ExpectMissing([]byte("gone")) }, true},
			{"missing fails", func(b *metastore.Batch) { b.ExpectMissing([]byte("c")) }, false},
			{"one of two fails", func(b *metastore.Batch) {
				b.ExpectMissing([]byte("gone"))
				b.ExpectValue([]byte("c"), []byte("new"))
			}, false},
		}
		for i, tc := range cases {
			var b metastore.Batch
			tc.cond(&b)
			key := fmt.Sprintf("w%d", i)
			b.Put([]byte(key), []byte("written"))
			b.Delete([]byte("c-never"))
			err := kv.Commit(ctx, &b)
			if tc.ok {
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if v := mustGet(t, kv, key); v != "written" {
					t.Fatalf("%s: write missing", tc.name)
				}
			} else {
				if !errors.Is(err, metastore.ErrConflict) {
					t.Fatalf("%s: got %v, want ErrConflict", tc.name, err)
				}
				wantMissing(t, kv, key) // nothing of a failed batch is applied
			}
		}
		// A condition-only batch checks without writing.
		var b metastore.Batch
		b.ExpectValue([]byte("c"), []byte("old"))
		if err := kv.Commit(ctx, &b); err != nil {
			t.Fatalf("condition-only batch: %v", err)
		}
		b = metastore.Batch{}
		b.ExpectMissing([]byte("c"))
		if err := kv.Commit(ctx, &b); !errors.Is(err, metastore.ErrConflict) {
			t.Fatalf("failing condition-only batch: %v", err)
		}
	})

	t.Run("FailedBatchAppliesNothing", func(t *testing.T) {
		kv := newKV(t)
		put(t, kv, "a", "1", "b", "2")
		var b metastore.Batch
		b.Put([]byte("a"), []byte("changed"))
		b.Delete([]byte("b"))
		b.Put([]byte("c"), []byte("new"))
		b.ExpectValue([]byte("b"), []byte("not-2"))
		if err := kv.Commit(ctxT(t), &b); !errors.Is(err, metastore.ErrConflict) {
			t.Fatalf("got %v, want ErrConflict", err)
		}
		if got := scanAll(t, kv, "", ""); fmt.Sprint(got) != "[{a 1} {b 2}]" {
			t.Fatalf("state after failed batch: %v", got)
		}
	})

	t.Run("EmptyKeyRefused", func(t *testing.T) {
		kv := newKV(t)
		var b metastore.Batch
		b.Put(nil, []byte("v"))
		if err := kv.Commit(ctxT(t), &b); !errors.Is(err, metastore.ErrInvalid) {
			t.Fatalf("empty key: got %v, want ErrInvalid", err)
		}
	})

	t.Run("ScanOrderAndBounds", func(t *testing.T) {
		kv := newKV(t)
		keys := []string{"a", "a/1", "a/2", "a/10", "a0", "a\xff", "a\xff\xff", "a\xff\x00", "b", "\x00x", "\xff", "\xff\xff"}
		var b metastore.Batch
		for _, k := range keys {
			b.Put([]byte(k), []byte("v:"+k))
		}
		if err := kv.Commit(ctxT(t), &b); err != nil {
			t.Fatal(err)
		}
		ks := func(ps []pair) []string {
			var out []string
			for _, p := range ps {
				if p.v != "v:"+p.k {
					t.Fatalf("value of %q is %q", p.k, p.v)
				}
				out = append(out, p.k)
			}
			return out
		}
		for _, tc := range []struct {
			prefix, start string
			want          []string
		}{
			{"", "", []string{"\x00x", "a", "a/1", "a/10", "a/2", "a0", "a\xff", "a\xff\x00", "a\xff\xff", "b", "\xff", "\xff\xff"}},
			{"a/", "", []string{"a/1", "a/10", "a/2"}},
			{"a/", "a/10", []string{"a/10", "a/2"}},
			{"a/", "a/100", []string{"a/2"}},
			{"a/", "0", []string{"a/1", "a/10", "a/2"}}, // start before the prefix
			{"a/", "b", nil},                            // start after the prefix
			{"a\xff", "", []string{"a\xff", "a\xff\x00", "a\xff\xff"}},
			{"\xff", "", []string{"\xff", "\xff\xff"}},
			{"\xff\xff", "", []string{"\xff\xff"}},
			{"", "a\xff\x01", []string{"a\xff\xff", "b", "\xff", "\xff\xff"}},
			{"zz", "", nil},
		} {
			got := ks(scanAll(t, kv, tc.prefix, tc.start))
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
				t.Errorf("scan(%q, %q) = %q, want %q", tc.prefix, tc.start, got, tc.want)
			}
		}
	})

	t.Run("ScanStopAndError", func(t *testing.T) {
		kv := newKV(t)
		put(t, kv, "p/1", "1", "p/2", "2", "p/3", "3")
		n := 0
		err := kv.Scan(ctxT(t), []byte("p/"), nil, func(k, v []byte) error {
			n++
			if n == 2 {
				return metastore.ErrStop
			}
			return nil
		})
		if err != nil || n != 2 {
			t.Fatalf("ErrStop: err=%v after %d keys, want nil after 2", err, n)
		}
		boom := errors.New("boom")
		err = kv.Scan(ctxT(t), []byte("p/"), nil, func(k, v []byte) error { return boom })
		if !errors.Is(err, boom) {
			t.Fatalf("fn error: got %v", err)
		}
	})

	t.Run("ScanManyKeysWhileWriting", func(t *testing.T) {
		kv := newKV(t)
		ctx := ctxT(t)
		const n = 1200 // several pages in every engine
		var b metastore.Batch
		for i := 0; i < n; i++ {
			b.Put(fmt.Appendf(nil, "m/%05d", i*2), []byte("x"))
		}
		if err := kv.Commit(ctx, &b); err != nil {
			t.Fatal(err)
		}
		retained := map[string][]byte{}
		var last []byte
		seen := 0
		err := kv.Scan(ctx, []byte("m/"), nil, func(k, v []byte) error {
			if last != nil && bytes.Compare(k, last) <= 0 {
				return fmt.Errorf("key %q after %q: not ascending", k, last)
			}
			last = k
			retained[string(k)] = k // fn may keep k
			var i int
			fmt.Sscanf(string(k), "m/%05d", &i)
			if i%2 == 0 {
				seen++
			}
			// Writing from inside the walk must neither deadlock nor make
			// a key appear twice; new odd keys may or may not be seen.
			if seen%100 == 0 && i%2 == 0 {
				var w metastore.Batch
				w.Put(fmt.Appendf(nil, "m/%05d", i+1), []byte("new"))
				w.Put([]byte("other/key"), []byte("x"))
				if err := kv.Commit(ctx, &w); err != nil {
					return err
				}
				if _, err := kv.Get(ctx, []byte("other/key")); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if seen != n {
			t.Fatalf("saw %d of the %d keys present for the whole walk", seen, n)
		}
		for s, k := range retained {
			if string(k) != s {
				t.Fatalf("retained key changed to %q (was %q)", k, s)
			}
		}
	})

	t.Run("LargeBatch", func(t *testing.T) {
		kv := newKV(t)
		ctx := ctxT(t)
		const n = 3000
		val := bytes.Repeat([]byte("v"), 1000) // ~3 MB in one commit
		var b metastore.Batch
		for i := 0; i < n; i++ {
			b.Put(fmt.Appendf(nil, "big/%05d", i), val)
		}
		b.ExpectMissing([]byte("big/never"))
		if err := kv.Commit(ctx, &b); err != nil {
			t.Fatalf("commit of %d ops: %v", n, err)
		}
		if got := len(scanAll(t, kv, "big/", "")); got != n {
			t.Fatalf("scan sees %d keys, want %d", got, n)
		}
	})

	t.Run("ConcurrentCompareAndSwap", func(t *testing.T) {
		kv := newKV(t)
		ctx := ctxT(t)
		put(t, kv, "counter", "0")
		const workers, each = 4, 12
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for done := 0; done < each; {
					cur, err := kv.Get(ctx, []byte("counter"))
					if err != nil {
						errs <- err
						return
					}
					var n int
					fmt.Sscan(string(cur), &n)
					var b metastore.Batch
					b.ExpectValue([]byte("counter"), cur)
					b.Put([]byte("counter"), fmt.Append(nil, n+1))
					b.Put(fmt.Appendf(nil, "inc/%05d", n+1), nil) // each value claimed once
					err = kv.Commit(ctx, &b)
					if errors.Is(err, metastore.ErrConflict) {
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					done++
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if v := mustGet(t, kv, "counter"); v != fmt.Sprint(workers*each) {
			t.Fatalf("counter = %s, want %d: a compare-and-swap was lost", v, workers*each)
		}
		if got := len(scanAll(t, kv, "inc/", "")); got != workers*each {
			t.Fatalf("%d increments recorded, want %d", got, workers*each)
		}
	})

	t.Run("ConcurrentCreateOnce", func(t *testing.T) {
		kv := newKV(t)
		ctx := ctxT(t)
		const workers = 8
		var wg sync.WaitGroup
		results := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var b metastore.Batch
				b.ExpectMissing([]byte("once"))
				b.Put([]byte("once"), fmt.Append(nil, w))
				results <- kv.Commit(ctx, &b)
			}()
		}
		wg.Wait()
		close(results)
		wins := 0
		for err := range results {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, metastore.ErrConflict):
				t.Fatalf("unexpected error: %v", err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d creators won, want exactly 1", wins)
		}
	})

	t.Run("CanceledContext", func(t *testing.T) {
		kv := newKV(t)
		put(t, kv, "k", "v")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := kv.Get(ctx, []byte("k")); err == nil {
			t.Fatal("Get with a canceled context succeeded")
		}
		var b metastore.Batch
		b.Put([]byte("k2"), []byte("v"))
		if err := kv.Commit(ctx, &b); err == nil {
			t.Fatal("Commit with a canceled context succeeded")
		}
		wantMissing(t, kv, "k2")
	})

	t.Run("Close", func(t *testing.T) {
		kv := newKV(t)
		put(t, kv, "k", "v")
		const closers = 4
		var wg sync.WaitGroup
		results := make(chan error, closers)
		for i := 0; i < closers; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); results <- kv.Close() }()
		}
		wg.Wait()
		close(results)
		nils := 0
		for err := range results {
			switch {
			case err == nil:
				nils++
			case !errors.Is(err, metastore.ErrClosed):
				t.Fatalf("Close: %v", err)
			}
		}
		if nils != 1 {
			t.Fatalf("%d Close calls returned nil, want 1 (others ErrClosed)", nils)
		}
		ctx := ctxT(t)
		if _, err := kv.Get(ctx, []byte("k")); !errors.Is(err, metastore.ErrClosed) {
			t.Fatalf("Get after Close: %v", err)
		}
		if err := kv.Scan(ctx, nil, nil, func(k, v []byte) error { return nil }); !errors.Is(err, metastore.ErrClosed) {
			t.Fatalf("Scan after Close: %v", err)
		}
		var b metastore.Batch
		b.Put([]byte("k"), []byte("v"))
		if err := kv.Commit(ctx, &b); !errors.Is(err, metastore.ErrClosed) {
			t.Fatalf("Commit after Close: %v", err)
		}
	})

	t.Run("CloseDuringUse", func(t *testing.T) {
		kv := newKV(t)
		ctx := ctxT(t)
		put(t, kv, "k", "v")
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					var err error
					if i%2 == 0 {
						_, err = kv.Get(ctx, []byte("k"))
					} else {
						var b metastore.Batch
						b.Put(fmt.Appendf(nil, "w%d", w), fmt.Append(nil, i))
						err = kv.Commit(ctx, &b)
					}
					if errors.Is(err, metastore.ErrClosed) {
						return
					}
				}
			}()
		}
		time.Sleep(20 * time.Millisecond)
		if err := kv.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		close(stop)
		wg.Wait() // no panic, every goroutine sees ErrClosed or stops
	})
}
