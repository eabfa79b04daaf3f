package healstore

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/metastore"
)

// TestStoredSpecWithFieldOfAnotherKindOpens: a backend record an older
// build stored with a field its kind does not read (bucket on a local
// backend, which backend add and the config then took) still opens, and
// the store with it: only new input refuses such a field.
func TestStoredSpecWithFieldOfAnotherKindOpens(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, testOpts{})
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	old := backends.Spec{Name: "old1", Kind: backends.KindLocal, Path: filepath.Join(cfg.Dir, "old1"), Node: "old1", Bucket: "legacy", TLS: true}
	if old.ValidateInput() == nil {
		t.Fatal("the spec is no longer one that new input refuses; the test tests nothing")
	}
	// Registered (marked) without the field, then its record rewritten
	// with it, as the older build stored it.
	clean := old
	clean.Bucket, clean.TLS = "", false
	if err := s.registerBackend(ctx, clean); err != nil {
		t.Fatal(err)
	}
	specJSON, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.meta.UpdateBackend(ctx, old.Name, func(r *metastore.BackendRecord) error {
		r.SpecJSON = specJSON
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, cfg)
	b, ok := s.Backend("old1")
	if !ok {
		t.Fatal("the old record's backend is not open")
	}
	if _, err := b.Probe(ctx); err != nil {
		t.Fatalf("probe the old record's backend: %v", err)
	}
	if u := s.Unreachable(); len(u) != 0 {
		t.Fatalf("unreachable after open: %+v", u)
	}
}
