package healstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer"
)

// TestE2ELocalProvisionerReleasedNameNotReused: a store with the local
// provisioner loses backends one after another. A replacement that is lost
// in turn is replaced, and once replaced its directory is released; its
// record stays in the metastore (state replaced). The next loss must get a
// replacement under a new name: reusing the released one's name would hit
// that record, which never opens again, and no lost backend would ever be
// replaced again.
func TestE2ELocalProvisionerReleasedNameNotReused(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfgPath, err := healstore.Init(dir, healstore.InitOptions{Backends: 6, Policy: encoder.Policy{
		K: 4, M: 2, BlockSize: 64 << 10, Compression: encoder.CompressionNone,
		Encryption: encoder.EncryptionAESGCM, Checksum: encoder.ChecksumXXH3}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := healstore.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Healer.Provisioner = healstore.ProvisionerConfig{Kind: "local", Settings: map[string]any{"dir": "prov"}}
	logs := &e2eLogs{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := healstore.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, seed>>1))
	objects := map[string][]byte{}
	for i := range 3 {
		data := make([]byte, 100<<10+rnd.IntN(100<<10))
		for j := range data {
			data[j] = byte(rnd.Uint32())
		}
		name := "obj-" + string(rune('a'+i))
		if _, err := s.Put(ctx, name, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		objects[name] = data
	}
	h, err := s.NewHealer(ctx, healstore.HealerOptions{Tune: func(c *healer.Config) {
		c.Grace = 0
		c.SuspectAfter = 1
		c.ProvisionBackoff = healer.Duration(20 * time.Millisecond)
		// Release a replaced backend at the first round that sees it.
		c.ReleaseReplacedAfter = healer.Duration(time.Nanosecond)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	st, err := h.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stripes := st.Stripes
	if stripes == 0 || st.WorstMargin != 2 {
		t.Fatalf("before any loss: %d stripes, worst margin %d", stripes, st.WorstMargin)
	}
	// backendDir is where a backend of the config or of the provisioner
	// keeps its data.
	backendDir := func(name string) string {
		for _, b := range cfg.Backends {
			if b.Name == name {
				if filepath.IsAbs(b.Path) {
					return b.Path
				}
				return filepath.Join(dir, b.Path)
			}
		}
		return filepath.Join(dir, "prov", name)
	}
	heal := func(what string, done func(st *healer.Status) bool) {
		t.Helper()
		deadline := time.Now().Add(45 * time.Second)
		var lastErrs []error
		for round := 1; ; round++ {
			lastErrs = lastErrs[:0]
			if err := h.ProbeAll(ctx); err != nil {
				lastErrs = append(lastErrs, err)
			}
			if _, err := h.RepairAll(ctx, nil); err != nil {
				lastErrs = append(lastErrs, err)
			}
			st, err := h.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if done(st) {
				t.Logf("%s: done after %d healer rounds", what, round)
				return
			}
			if time.Now().After(deadline) {
				j, _ := json.MarshalIndent(st.Backends, "", "  ")
				t.Fatalf("%s: not done in time; last errors %v\nbackends %s", what, lastErrs, j)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// lose makes a backend's directory vanish and heals until the store is
	// back at full redundancy with nothing on the lost backend and every
	// stripe's lost shard on the named replacement.
	lose := func(name, replacement string) {
		t.Helper()
		d := backendDir(name)
		if err := os.Rename(d, d+".lost"); err != nil {
			t.Fatal(err)
		}
		heal("lose "+name, func(st *healer.Status) bool {
			return st.WorstMargin == 2 && st.DegradedStripes == 0 && shardsOn(st, name) == 0 &&
				shardsOn(st, replacement) == stripes && stateOf(st, name) == "replaced"
		})
	}

	lose("b3", "repl-1")
	lose("repl-1", "repl-2")
	// repl-1 is replaced: its capacity goes back to the provisioner.
	heal("release repl-1", func(*healer.Status) bool {
		_, err := os.Stat(backendDir("repl-1"))
		return os.IsNotExist(err)
	})
	// The next loss gets a replacement whose name no record has.
	lose("b4", "repl-3")
	st, err = h.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := stateOf(st, "repl-1"); got != "replaced" {
		t.Errorf("repl-1 is %q after the next loss, want replaced", got)
	}
	if shardsOn(st, "repl-1") != 0 {
		t.Errorf("%d shards on released repl-1", shardsOn(st, "repl-1"))
	}
	for name, want := range objects {
		r, err := s.Open(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		_, err = got.ReadFrom(r)
		r.Close()
		if err != nil || !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("%s reads back wrong after healing: %v", name, err)
		}
	}
}
