package healstore

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/metastore"
)

// untouchedReader fails the test when read: the write should have been
// refused before reading any data.
type untouchedReader struct{ t *testing.T }

func (u untouchedReader) Read(p []byte) (int, error) {
	u.t.Error("the data was read although the write had to be refused")
	return 0, errors.New("read")
}

// Attributes the metastore cannot store are refused before any data is
// read or uploaded: the check ran only at the commit, after every shard
// of a possibly huge object was written (and then left as garbage).
func TestWriteRefusesBadAttrsUpFront(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	for _, attrs := range []map[string]string{{"k": "v\xff"}, {"\xfe": "v"}} {
		_, err := s.Put(ctx, "a", untouchedReader{t}, WithAttrs(attrs))
		if err == nil || !strings.Contains(err.Error(), "attribute") || !strings.Contains(err.Error(), "UTF-8") {
			t.Errorf("put with attrs %q: %v, want an error naming the attribute", attrs, err)
		}
		w, err := s.Create(ctx, "a", WithAttrs(attrs))
		if err == nil || !strings.Contains(err.Error(), "UTF-8") {
			t.Errorf("create with attrs %q: %v, want an error naming the attribute", attrs, err)
		}
		if w != nil {
			w.Abort()
		}
	}
	n := 0
	s.meta.ListGarbage(ctx, func(metastore.Garbage) error { n++; return nil })
	if n != 0 {
		t.Errorf("%d garbage entries: shards were uploaded for a write that had to fail", n)
	}
	if _, err := s.Put(ctx, "a", bytes.NewReader([]byte("x")), WithAttrs(map[string]string{"ok": "ü"})); err != nil {
		t.Fatal(err)
	}
}

// Reads after Reader.Close fail with ErrClosed wherever the position is:
// at the end of the object (or on an empty object) they reported io.EOF,
// so io.ReadAll after Close returned an empty object and no error.
func TestReaderClosedAtEOF(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	for _, data := range []string{"", "hello"} {
		if _, err := s.Put(ctx, "o", strings.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		r, err := s.Open(ctx, "o")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Seek(0, io.SeekEnd); err != nil {
			t.Fatal(err)
		}
		r.Close()
		if b, err := io.ReadAll(r); !errors.Is(err, ErrClosed) {
			t.Errorf("%d-byte object: ReadAll after Close: %q, %v; want ErrClosed", len(data), b, err)
		}
		if _, err := r.ReadAt(make([]byte, 1), int64(len(data))); !errors.Is(err, ErrClosed) {
			t.Errorf("%d-byte object: ReadAt at the end after Close: %v; want ErrClosed", len(data), err)
		}
		var buf bytes.Buffer
		if _, err := r.WriteTo(&buf); !errors.Is(err, ErrClosed) {
			t.Errorf("%d-byte object: WriteTo after Close: %v; want ErrClosed", len(data), err)
		}
	}
}

// Readers and writers left open when the Store closes fail with ErrClosed.
// They failed with what the closing looked like from below: a read with
// "metastore closed" (not ErrClosed), a write with ErrInsufficientBackends
// ("0 usable"), which sends an operator after healthy backends; a reader
// of an inline object went on reading.
func TestStoreCloseFailsOpenReadersAndWriters(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	if _, err := s.Put(ctx, "small", strings.NewReader("inline")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "big", bytes.NewReader(make([]byte, 300<<10))); err != nil {
		t.Fatal(err)
	}
	small, err := s.Open(ctx, "small")
	if err != nil {
		t.Fatal(err)
	}
	big, err := s.Open(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	ws, _ := s.Create(ctx, "w-small")
	ws.Write([]byte("abc"))
	wb, _ := s.Create(ctx, "w-big")
	wb.Write(make([]byte, 100<<10))
	s.Close()

	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrClosed) || errors.Is(err, ErrInsufficientBackends) {
			t.Errorf("%s after the store closed: %v; want ErrClosed (and not ErrInsufficientBackends)", what, err)
		}
	}
	_, err = io.ReadAll(small)
	check("read of an inline object", err)
	_, err = io.ReadAll(big)
	check("read", err)
	_, err = big.WriteTo(io.Discard)
	check("WriteTo", err)
	check("close of a small write", ws.Close())
	wb.Write(make([]byte, 100<<10))
	check("close of a large write", wb.Close())
}

// hookKV runs before once, just before the first Get of key (before may
// read key itself).
type hookKV struct {
	metastore.KV
	key    string
	before func()
	done   atomic.Bool
}

func (h *hookKV) Get(ctx context.Context, key []byte) ([]byte, error) {
	if string(key) == h.key && !h.done.Swap(true) {
		h.before()
	}
	return h.KV.Get(ctx, key)
}

// Rename refuses an existing target atomically: it checked that the
// target was free and then renamed in a separate commit that replaces any
// object there, so an object written under the target in between was
// dropped without a word (its shards given to garbage collection), and
// Rename reported success.
func TestRenameDoesNotReplaceAConcurrentWrite(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	if _, err := s.Put(ctx, "tmp", strings.NewReader("mine")); err != nil {
		t.Fatal(err)
	}
	// The rename reads "tmp" after its check found "final" free: another
	// writer commits "final" just then.
	hook := &hookKV{KV: s.meta.KV(), key: "obj/tmp"}
	s.meta = metastore.New(hook, metastore.WithGarbageDelay(s.meta.GarbageDelay()))
	hook.before = func() {
		if _, err := s.Put(ctx, "final", strings.NewReader("theirs")); err != nil {
			t.Error(err)
		}
	}
	// Rename's own reads of "tmp" come after its check of "final".
	if _, err := s.Stat(ctx, "final"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	err := s.Rename(ctx, "tmp", "final")
	if !errors.Is(err, ErrExists) {
		t.Errorf("rename onto an object written meanwhile: %v, want ErrExists", err)
	}
	if got := readAll(t, s, "final"); string(got) != "theirs" {
		t.Errorf("final holds %q; the object written there was replaced", got)
	}
}

// Health counts the spares' failure domains as the write path does: a
// write that finds too few regular backends places its shards on spares
// (Store.place). Health left them out, so with two of six backends down
// and two spares it said "writes fail" while every write landed at full
// redundancy.
func TestHealthCountsSparesAsWritesUseThem(t *testing.T) {
	s := newTestStore(t, testOpts{spares: 2})
	ctx := context.Background()
	for _, b := range []string{"b0", "b1"} {
		if err := s.meta.UpdateBackend(ctx, b, func(r *metastore.BackendRecord) error {
			r.State = metastore.StateDown
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := s.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Put(ctx, "x", bytes.NewReader(make([]byte, 200<<10)))
	if err != nil {
		t.Fatalf("write with two backends down and two spares: %v", err)
	}
	if info.Redundancy.Degraded != 0 {
		t.Fatalf("write not at full redundancy: %+v", info.Redundancy)
	}
	if !rep.Writable || !rep.FullRedundancy || rep.Domains != 6 {
		t.Errorf("health: writable %v, full redundancy %v, %d domains; want true, true, 6 (problems: %q)",
			rep.Writable, rep.FullRedundancy, rep.Domains, rep.Problems)
	}
	if p := strings.Join(rep.Problems, "\n"); !strings.Contains(p, "backend b0 is down") || strings.Contains(p, "writes") {
		t.Errorf("problems %q: want the down backends named and nothing about writes", rep.Problems)
	}
}

// Stat of an object replaced or deleted while Stat reads its stripes
// describes the new version, or says ErrNotFound. It failed with the
// metastore's "stripe ...: not found" (which errors.Is(err, ErrNotFound)
// does not match), for an object that existed all along.
func TestStatDuringOverwrite(t *testing.T) {
	for _, then := range []string{"overwrite", "delete"} {
		t.Run(then, func(t *testing.T) {
			s := newTestStore(t, testOpts{edit: func(c *Config) { c.InlineMaxSize = 0 }})
			ctx := context.Background()
			if _, err := s.Put(ctx, "x", strings.NewReader("old")); err != nil {
				t.Fatal(err)
			}
			old, err := s.meta.GetObject(ctx, "x")
			if err != nil {
				t.Fatal(err)
			}
			hook := &hookKV{KV: s.meta.KV(), key: "stripe/" + hex.EncodeToString(old.Stripes[0][:])}
			s.meta = metastore.New(hook, metastore.WithGarbageDelay(s.meta.GarbageDelay()))
			hook.before = func() {
				var err error
				if then == "overwrite" {
					_, err = s.Put(ctx, "x", strings.NewReader("newer"))
				} else {
					err = s.Delete(ctx, "x")
				}
				if err != nil {
					t.Error(err)
				}
			}
			info, err := s.Stat(ctx, "x")
			switch {
			case then == "overwrite" && (err != nil || info.Size != 5):
				t.Errorf("stat during an overwrite: %+v, %v; want the new version", info, err)
			case then == "delete" && !errors.Is(err, ErrNotFound):
				t.Errorf("stat during a delete: %+v, %v; want ErrNotFound", info, err)
			}
		})
	}
}

// stallBackend holds every Get until its context ends, saying so once on
// entered.
type stallBackend struct {
	backends.Backend
	entered chan struct{}
}

func (b stallBackend) Get(ctx context.Context, key string) ([]byte, error) {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (b stallBackend) GetRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	return b.Get(ctx, key)
}

// A read under way when its Reader is closed fails with ErrClosed, as
// reads after Close do; it failed with context.Canceled, which a caller
// takes for its own context ending.
func TestReaderClosedDuringRead(t *testing.T) {
	s := newTestStore(t, testOpts{edit: func(c *Config) { c.InlineMaxSize = 0 }})
	ctx := context.Background()
	if _, err := s.Put(ctx, "x", bytes.NewReader(make([]byte, 200<<10))); err != nil {
		t.Fatal(err)
	}
	for _, read := range []struct {
		name string
		fn   func(r *Reader) error
	}{
		{"ReadAt of whole blocks", func(r *Reader) error { _, err := r.ReadAt(make([]byte, 64<<10), 0); return err }},
		{"ReadAt in a block", func(r *Reader) error { _, err := r.ReadAt(make([]byte, 10), 5); return err }},
		{"WriteTo", func(r *Reader) error { _, err := r.WriteTo(io.Discard); return err }},
	} {
		// A channel of this read's own: a Get of the one before may
		// still be ending.
		entered := make(chan struct{}, 1)
		for _, b := range s.handleList() {
			setBackend(t, s, b.name, func(b backends.Backend) backends.Backend { return stallBackend{b, entered} })
		}
		r, err := s.Open(ctx, "x")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- read.fn(r) }()
		<-entered
		r.Close()
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Errorf("%s when the Reader closed: %v; want ErrClosed", read.name, err)
		}
	}
}

// A reader that fails with io.ErrUnexpectedEOF (a truncated HTTP request
// body says so) fails the Put. Put read it as the end of the data and
// stored the bytes before it as the whole object, for objects that fit
// the first block or the inline limit.
func TestPutRefusesTruncatedReader(t *testing.T) {
	for _, inline := range []bool{true, false} {
		s := newTestStore(t, testOpts{edit: func(c *Config) {
			if !inline {
				c.InlineMaxSize = 0
			}
		}})
		ctx := context.Background()
		for _, n := range []int{0, 100, 10 << 10} {
			r := io.MultiReader(bytes.NewReader(make([]byte, n)), iotest.ErrReader(io.ErrUnexpectedEOF))
			_, err := s.Put(ctx, "cut", r)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("inline %v, %d bytes then io.ErrUnexpectedEOF: put returned %v", inline, n, err)
			}
			if info, err := s.Stat(ctx, "cut"); !errors.Is(err, ErrNotFound) {
				t.Errorf("inline %v, %d bytes: the truncated object was stored: %+v, %v", inline, n, info, err)
				s.Delete(ctx, "cut")
			}
		}
	}
}

// Data that ends together with io.EOF in the read that fills Put's first
// buffer (one byte past the inline limit, or past the block size) is
// stored whole, as one more block or not inline.
func TestPutDataWithEOFAtBufferEnd(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	limit, bs := s.inlineLimit(), s.cfg.Policy.BlockSize
	for _, n := range []int{limit, limit + 1, bs, bs + 1, bs + 2} {
		data := bytes.Repeat([]byte{7}, n)
		if _, err := s.Put(ctx, "x", iotest.DataErrReader(bytes.NewReader(data))); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if got := readAll(t, s, "x"); !bytes.Equal(got, data) {
			t.Errorf("%d bytes put, %d read back", n, len(got))
		}
		info, err := s.Stat(ctx, "x")
		if err != nil || info.Inline != (n <= limit) || (!info.Inline && info.Blocks != (n+bs-1)/bs) {
			t.Errorf("%d bytes: %+v, %v", n, info, err)
		}
	}
}

// Health names a backend refused for carrying another store's identity
// marker and does not count its failure domain: writes place nothing on
// it (Store.candidates). Health reported full redundancy and no problem
// while every write was degraded.
func TestHealthNamesForeignBackend(t *testing.T) {
	cfg := testConfig(t, testOpts{})
	s := openTest(t, cfg)
	ctx := context.Background()
	b, _ := s.Backend("b0")
	if err := b.Put(ctx, MarkerKey, []byte(`{"store_id":"another","backend":"b0"}`)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, cfg)
	rep, err := s.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.FullRedundancy || rep.Domains != 5 || !strings.Contains(strings.Join(rep.Problems, "\n"), "backend b0 carries another store's identity marker") {
		t.Errorf("health with b0 foreign: full redundancy %v, %d domains, problems %q; want false, 5, b0 named",
			rep.FullRedundancy, rep.Domains, rep.Problems)
	}
}

// A nil WriteOption (one a caller builds conditionally and leaves unset)
// is skipped, by Put and by Create, instead of panicking inside the store;
// the options given beside it still apply.
func TestNilWriteOptionSkipped(t *testing.T) {
	s := newTestStore(t, testOpts{k: 2, m: 1})
	ctx := context.Background()
	var unset WriteOption
	if _, err := s.Put(ctx, "put", strings.NewReader("data"), unset, WithMode(0o640)); err != nil {
		t.Fatalf("Put with a nil option: %v", err)
	}
	w, err := s.Create(ctx, "create", unset)
	if err != nil {
		t.Fatalf("Create with a nil option: %v", err)
	}
	if _, err := w.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(ctx, "put")
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode != 0o640 {
		t.Errorf("mode %o, want 640: the option beside the nil one was lost", info.Mode)
	}
	if _, err := s.Stat(ctx, "create"); err != nil {
		t.Errorf("object written through Create with a nil option: %v", err)
	}
}
