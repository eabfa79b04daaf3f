package healstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestFSMetaGetScanCommit(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, testOpts{})
	m, err := s.FSMeta("vol1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(ctx, []byte("a")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of a missing key: %v", err)
	}
	var b FSBatch
	for _, k := range []string{"d/2", "d/1", "d/3", "e", "c"} {
		b.Put([]byte(k), []byte("v"+k))
	}
	b.ExpectMissing([]byte("d/1"))
	if err := m.Commit(ctx, &b); err != nil {
		t.Fatal(err)
	}
	if v, err := m.Get(ctx, []byte("d/2")); err != nil || string(v) != "vd/2" {
		t.Fatalf("get: %q %v", v, err)
	}
	// Scan: in order, relative keys, within the prefix, from start.
	var got []string
	err = m.Scan(ctx, []byte("d/"), []byte("d/2"), func(k, v []byte) error {
		got = append(got, string(k)+"="+string(v))
		return nil
	})
	if err != nil || strings.Join(got, ",") != "d/2=vd/2,d/3=vd/3" {
		t.Fatalf("scan: %v %v", got, err)
	}
	got = nil
	err = m.Scan(ctx, nil, nil, func(k, v []byte) error {
		got = append(got, string(k))
		if len(got) == 2 {
			return ErrStopScan
		}
		return nil
	})
	if err != nil || strings.Join(got, ",") != "c,d/1" {
		t.Fatalf("scan with stop: %v %v", got, err)
	}
	boom := errors.New("boom")
	if err := m.Scan(ctx, nil, nil, func(k, v []byte) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("scan callback error: %v", err)
	}

	// A failed condition writes nothing of the batch.
	b = FSBatch{}
	b.Put([]byte("new"), []byte("1"))
	b.Delete([]byte("e"))
	b.ExpectValue([]byte("c"), []byte("wrong"))
	if err := m.Commit(ctx, &b); !errors.Is(err, ErrConflict) {
		t.Fatalf("commit with a false condition: %v", err)
	}
	if _, err := m.Get(ctx, []byte("new")); !errors.Is(err, ErrNotFound) {
		t.Fatal("a conflicting batch wrote a key")
	}
	if _, err := m.Get(ctx, []byte("e")); err != nil {
		t.Fatal("a conflicting batch deleted a key")
	}
	b = FSBatch{}
	b.ExpectValue([]byte("c"), []byte("vc"))
	b.ExpectMissing([]byte("new"))
	b.Put([]byte("new"), []byte("1"))
	b.Delete([]byte("e"))
	if err := m.Commit(ctx, &b); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(ctx, []byte("e")); !errors.Is(err, ErrNotFound) {
		t.Fatal("delete not applied")
	}
	if b.Len() != 2 {
		t.Fatalf("Len %d", b.Len())
	}
}

func TestFSMetaAreasAreIsolated(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, testOpts{})
	a, _ := s.FSMeta("a")
	ab, _ := s.FSMeta("ab")
	var b FSBatch
	b.Put([]byte("k"), []byte("in a"))
	if err := a.Commit(ctx, &b); err != nil {
		t.Fatal(err)
	}
	// An object of the same name, and a key in an area whose name has a's
	// name as prefix, do not show up in a.
	if _, err := s.Put(ctx, "k", strings.NewReader("object")); err != nil {
		t.Fatal(err)
	}
	b = FSBatch{}
	b.Put([]byte("/k"), []byte("in ab"))
	if err := ab.Commit(ctx, &b); err != nil {
		t.Fatal(err)
	}
	var keys []string
	a.Scan(ctx, nil, nil, func(k, v []byte) error { keys = append(keys, string(k)+"="+string(v)); return nil })
	if strings.Join(keys, ",") != "k=in a" {
		t.Fatalf("area a sees %v", keys)
	}
	if _, err := ab.Get(ctx, []byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatal("area ab sees a's key")
	}
	if objs, _, _ := s.List(ctx, "", "", 0); len(objs) != 1 {
		t.Fatalf("area keys show up as objects: %v", objs)
	}
	for _, bad := range []string{"", "a/b", ".x", strings.Repeat("x", 65), "a b"} {
		if _, err := s.FSMeta(bad); err == nil {
			t.Errorf("FSMeta(%q) accepted", bad)
		}
	}
}

// Concurrent compare-and-swap increments of one counter lose no update.
func TestFSMetaCompareAndSwap(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, testOpts{})
	m, _ := s.FSMeta("cas")
	key := []byte("counter")
	const workers, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				for {
					old, err := m.Get(ctx, key)
					var b FSBatch
					var n uint64
					switch {
					case errors.Is(err, ErrNotFound):
						b.ExpectMissing(key)
					case err != nil:
						errs <- err
						return
					default:
						n = binary.BigEndian.Uint64(old)
						b.ExpectValue(key, old)
					}
					b.Put(key, binary.BigEndian.AppendUint64(nil, n+1))
					err = m.Commit(ctx, &b)
					if err == nil {
						break
					}
					if !errors.Is(err, ErrConflict) {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	v, err := m.Get(ctx, key)
	if err != nil || binary.BigEndian.Uint64(v) != workers*each {
		t.Fatalf("counter %x, want %d: %v", v, workers*each, err)
	}
}

func TestFSMetaSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, testOpts{})
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := s.FSMeta("p")
	var b FSBatch
	for i := range 10 {
		b.Put([]byte(fmt.Sprintf("k%d", i)), bytes.Repeat([]byte{byte(i)}, i))
	}
	if err := m.Commit(ctx, &b); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := m.Get(ctx, []byte("k1")); !errors.Is(err, ErrClosed) {
		t.Fatalf("get on a closed store: %v", err)
	}
	s = openTest(t, cfg)
	m, _ = s.FSMeta("p")
	n := 0
	m.Scan(ctx, nil, nil, func(k, v []byte) error {
		if len(v) != n || string(k) != fmt.Sprintf("k%d", n) {
			t.Errorf("key %q value %d bytes", k, len(v))
		}
		n++
		return nil
	})
	if n != 10 {
		t.Fatalf("%d keys after reopen", n)
	}
}
