package healstore

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/metastore"
)

// TestAddBackendKeepsAnotherSecret: AddBackend with a secret under a ref
// that already holds another secret is refused, and the saved secret is
// kept. It was overwritten, so the backend already using that ref could
// no longer log in (and was taken for down and rebuilt elsewhere).
func TestAddBackendKeepsAnotherSecret(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	if err := s.Secrets().Set("zdb/z1", "z1-password"); err != nil {
		t.Fatal(err)
	}
	spec := backends.Spec{Name: "l9", Kind: backends.KindLocal, Path: filepath.Join(t.TempDir(), "l9"), Node: "n9", SecretRef: "zdb/z1"}
	err := s.AddBackend(ctx, spec, "another-password")
	if err == nil || !strings.Contains(err.Error(), `"zdb/z1"`) || strings.Contains(err.Error(), "password") {
		t.Fatalf("AddBackend under a ref holding another secret: %v", err)
	}
	if v, err := s.Secrets().Lookup("zdb/z1"); err != nil || v != "z1-password" {
		t.Fatalf("the saved secret was changed (lookup: %v)", err)
	}
	if _, err := s.meta.GetBackend(ctx, "l9"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("a refused backend was registered: %v", err)
	}
	// The same secret again is no conflict.
	spec.SecretRef = "zdb/z1"
	if err := s.AddBackend(ctx, spec, "z1-password"); err != nil {
		t.Fatalf("AddBackend with the ref's own secret: %v", err)
	}
}
