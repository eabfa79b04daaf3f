package healstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"github.com/healstore/healstore/healer"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/metastore"
)

// shardCount counts the values on the store's backends, identity markers
// aside: the shards ever written there.
func shardCount(t *testing.T, s *Store) int {
	t.Helper()
	n := 0
	for _, spec := range s.Config().Backends {
		b, ok := s.Backend(spec.Name)
		if !ok {
			t.Fatalf("backend %s of the config is not open", spec.Name)
		}
		err := b.List(context.Background(), "", func(key string, _ int64) error {
			if key != MarkerKey {
				n++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func TestInlineLimitBoundary(t *testing.T) {
	ctx := context.Background()
	const limit = 1000
	s := newTestStore(t, testOpts{edit: func(c *Config) { c.InlineMaxSize = limit }})
	rnd := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		size   int
		inline bool
	}{{0, true}, {1, true}, {limit - 1, true}, {limit, true}, {limit + 1, false}, {3 * limit, false}} {
		before := shardCount(t, s)
		data := randBytes(rnd, tc.size)
		name := "obj-" + strings.Repeat("x", tc.size%7)
		info, err := s.Put(ctx, name, bytes.NewReader(data))
		if err != nil {
			t.Fatalf("size %d: %v", tc.size, err)
		}
		o, err := s.Meta().GetObject(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		made := shardCount(t, s) - before
		if tc.inline {
			if !info.Inline || !o.IsInline() || len(o.Stripes) != 0 || made != 0 {
				t.Fatalf("size %d: want inline (info %v, record %v, %d stripes, %d shards made)", tc.size, info.Inline, o.IsInline(), len(o.Stripes), made)
			}
			// Only ciphertext: the plaintext must not appear in the record.
			if tc.size >= 16 && bytes.Contains(o.Inline, data[:16]) {
				t.Fatalf("size %d: plaintext found in the inline record", tc.size)
			}
		} else if info.Inline || o.IsInline() || len(o.Stripes) == 0 || made < 6 {
			t.Fatalf("size %d: want shards (info %v, record %v, %d stripes, %d shards made)", tc.size, info.Inline, o.IsInline(), len(o.Stripes), made)
		}
		if got := readAll(t, s, name); !bytes.Equal(got, data) {
			t.Fatalf("size %d: read back %d bytes, differ", tc.size, len(got))
		}
		st, err := s.Stat(ctx, name)
		if err != nil || st.Size != int64(tc.size) || st.Inline != tc.inline || (st.Redundancy == nil) != tc.inline {
			t.Fatalf("size %d: stat %+v, %v", tc.size, st, err)
		}
	}
	if problems, err := s.Meta().Check(ctx); err != nil || len(problems) > 0 {
		t.Fatalf("check: %v %v", problems, err)
	}
}

func TestInlineDisabled(t *testing.T) {
	s := newTestStore(t, testOpts{edit: func(c *Config) { c.InlineMaxSize = 0 }})
	if _, err := s.Put(context.Background(), "a", strings.NewReader("small")); err != nil {
		t.Fatal(err)
	}
	o, err := s.Meta().GetObject(context.Background(), "a")
	if err != nil || o.IsInline() || len(o.Stripes) != 1 {
		t.Fatalf("inline_max_size 0 still stored inline: %+v %v", o, err)
	}
}

func TestInlineConfigCaps(t *testing.T) {
	for _, tc := range []struct {
		kind string
		size int64
		ok   bool
	}{{"pebble", MaxInlineSize, true}, {"pebble", MaxInlineSize + 1, false}, {"pebble", -1, false},
		{"etcd", MaxInlineSizeEtcd, true}, {"etcd", MaxInlineSizeEtcd + 1, false}} {
		cfg := testConfig(t, testOpts{})
		cfg.InlineMaxSize = tc.size
		if tc.kind == "etcd" {
			cfg.Metastore = MetastoreConfig{Kind: "etcd", Endpoints: []string{"127.0.0.1:2379"}}
		}
		err := cfg.Validate()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBadConfig)) {
			t.Errorf("%s inline_max_size %d: %v", tc.kind, tc.size, err)
		}
	}
	if DefaultConfig().InlineMaxSize != 4096 {
		t.Fatal("default inline_max_size is not 4096")
	}
}

func TestInlineSurvivesReopenRenameDelete(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, testOpts{})
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(strings.Repeat("inline object ", 200)) // 2800 bytes
	if _, err := s.Put(ctx, "a", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	// Overwriting a striped object with an inline one makes the old
	// stripes garbage in the same commit.
	big := bytes.Repeat([]byte{7}, 100<<10)
	if _, err := s.Put(ctx, "b", bytes.NewReader(big)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "b", bytes.NewReader(data[:10])); err != nil {
		t.Fatal(err)
	}
	garbage := 0
	if err := s.Meta().ListGarbage(ctx, func(metastore.Garbage) error { garbage++; return nil }); err != nil || garbage == 0 {
		t.Fatalf("replaced stripes left no garbage: %d %v", garbage, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, testConfig(t, testOpts{dir: cfg.Dir}))
	if got := readAll(t, s, "a"); !bytes.Equal(got, data) {
		t.Fatal("inline object differs after reopen")
	}
	if got := readAll(t, s, "b"); !bytes.Equal(got, data[:10]) {
		t.Fatal("inline object replacing a striped one differs after reopen")
	}
	if err := s.Rename(ctx, "a", "c"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, "c"); !bytes.Equal(got, data) {
		t.Fatal("inline object differs after rename")
	}
	infos, _, err := s.List(ctx, "", "", 0)
	if err != nil || len(infos) != 2 || infos[0].Name != "b" || infos[1].Name != "c" || !infos[1].Inline || infos[1].Size != int64(len(data)) {
		t.Fatalf("list: %+v %v", infos, err)
	}
	if err := s.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(ctx, "c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted inline object: %v", err)
	}
	// A striped object replacing an inline one.
	if _, err := s.Put(ctx, "b", bytes.NewReader(big)); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, "b"); !bytes.Equal(got, big) {
		t.Fatal("striped object replacing an inline one differs")
	}
	if problems, err := s.Meta().Check(ctx); err != nil || len(problems) > 0 {
		t.Fatalf("check: %v %v", problems, err)
	}
}

// TestInlineWriter: Create decides at Close; a write that grows past the
// limit spills to shards with its first bytes intact.
func TestInlineWriter(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, testOpts{edit: func(c *Config) { c.InlineMaxSize = 4096 }})
	rnd := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{100, 4096, 4097, 70 << 10} {
		data := randBytes(rnd, size)
		w, err := s.Create(ctx, "w")
		if err != nil {
			t.Fatal(err)
		}
		for p := data; len(p) > 0; {
			n := min(len(p), 1000)
			if _, err := w.Write(p[:n]); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if w.Info().Inline != (size <= 4096) {
			t.Fatalf("size %d: inline %v", size, w.Info().Inline)
		}
		if got := readAll(t, s, "w"); !bytes.Equal(got, data) {
			t.Fatalf("size %d: read back differs", size)
		}
	}
	// Abort before Close commits nothing.
	w, err := s.Create(ctx, "aborted")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("small"))
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "aborted"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("aborted inline write is visible: %v", err)
	}
}

// TestInlineCorruptRecord flips one byte of the stored ciphertext in the
// KV: the read must fail as corrupt, never return data.
func TestInlineCorruptRecord(t *testing.T) {
	for _, enc := range []string{encoder.EncryptionAESGCM, encoder.EncryptionNone} {
		t.Run(enc, func(t *testing.T) {
			ctx := context.Background()
			s := newTestStore(t, testOpts{edit: func(c *Config) { c.Policy.Encryption = enc }})
			data := bytes.Repeat([]byte("abc"), 500)
			if _, err := s.Put(ctx, "x", bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			kv := s.Meta().KV()
			key := []byte("obj/x")
			raw, err := kv.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			var rec map[string]any
			if err := json.Unmarshal(raw, &rec); err != nil {
				t.Fatal(err)
			}
			sealed, err := base64.StdEncoding.DecodeString(rec["inline"].(string))
			if err != nil {
				t.Fatal(err)
			}
			sealed[len(sealed)-20] ^= 0x01
			rec["inline"] = base64.StdEncoding.EncodeToString(sealed)
			raw, _ = json.Marshal(rec)
			var b metastore.Batch
			b.Put(key, raw)
			if err := kv.Commit(ctx, &b); err != nil {
				t.Fatal(err)
			}
			r, err := s.Open(ctx, "x")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if !errors.Is(err, encoder.ErrCorrupt) || len(got) != 0 {
				t.Fatalf("corrupt inline record: read %d bytes, err %v", len(got), err)
			}
			if !strings.Contains(err.Error(), "metadata record is damaged") {
				t.Fatalf("error does not say what is damaged: %v", err)
			}
			// healstore heal NAME checks it too, and does not call it
			// healthy.
			h, err := s.NewHealer(ctx, HealerOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			if _, err := h.HealObject(ctx, "x"); !errors.Is(err, encoder.ErrCorrupt) || !strings.Contains(err.Error(), "metadata snapshot") {
				t.Fatalf("heal of a damaged inline object: %v, want ErrCorrupt naming the way out", err)
			}
			if _, err := s.Put(ctx, "y", bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			if _, err := h.HealObject(ctx, "y"); err != nil {
				t.Fatalf("heal of a sound inline object: %v", err)
			}
			// The deep scrub finds it too (and only it).
			p, err := h.Scrub(ctx, healer.ScrubOptions{Deep: true})
			if err != nil || p.InlineDamaged != 1 {
				t.Fatalf("deep scrub: %d damaged inline objects, %v; want 1", p.InlineDamaged, err)
			}
		})
	}
}

// TestInlineRecoveredFromSnapshot: an inline object lives only in the
// metadata, so the metadata snapshots on the backends must bring it back
// when the frontend is lost, exactly like every object's metadata.
func TestInlineRecoveredFromSnapshot(t *testing.T) {
	ctx := context.Background()
	f := newRecoverFixture(t)
	s := f.open(t)
	small := []byte(strings.Repeat("kept in the record ", 100))
	if _, err := s.Put(ctx, "small", bytes.NewReader(small)); err != nil {
		t.Fatal(err)
	}
	if o, err := s.Meta().GetObject(ctx, "small"); err != nil || !o.IsInline() {
		t.Fatalf("not inline: %v", err)
	}
	sn, err := s.NewSnapshotter(SnapshotConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Take(ctx, false); err != nil {
		t.Fatal(err)
	}
	s.Close()
	f.destroyFrontend(t)

	rep, err := Recover(ctx, RecoverOptions{KeyFile: f.keyFile, Backends: f.specs[:1], Dir: filepath.Join(t.TempDir(), "recovered")})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Objects != 1 || len(rep.Damaged) != 0 {
		t.Fatalf("recovered %d objects, damaged %v", rep.Objects, rep.Damaged)
	}
	cfg, err := LoadConfig(rep.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	r := openTest(t, cfg)
	if got := readAll(t, r, "small"); !bytes.Equal(got, small) {
		t.Fatal("inline object differs after recovery from a snapshot")
	}
}

// TestEtcdInlineObject: on etcd, an inline object at the etcd cap is one
// transaction well within etcd's request limit, and reads back; one byte
// more goes to shards.
func TestEtcdInlineObject(t *testing.T) {
	ctx := context.Background()
	f := etcdFixture(t)
	f.cfg.InlineMaxSize = MaxInlineSizeEtcd
	s := f.open(t)
	defer s.Close()
	rnd := rand.New(rand.NewPCG(7, 8))
	for _, size := range []int{MaxInlineSizeEtcd, MaxInlineSizeEtcd + 1} {
		data := randBytes(rnd, size)
		info, err := s.Put(ctx, "e", bytes.NewReader(data))
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if info.Inline != (size <= MaxInlineSizeEtcd) {
			t.Fatalf("size %d: inline %v", size, info.Inline)
		}
		if got := readAll(t, s, "e"); !bytes.Equal(got, data) {
			t.Fatalf("size %d: read back differs", size)
		}
	}
	if problems, err := s.Meta().Check(ctx); err != nil || len(problems) > 0 {
		t.Fatalf("check: %v %v", problems, err)
	}
}
