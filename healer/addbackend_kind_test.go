package healer

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/metastore"
)

// TestAddBackendRefusesFieldOfAnotherKind: an operator's spec with a field
// its kind does not read (bucket on a local backend) is refused by
// AddBackend, in process and through the daemon's API, naming the field,
// the backend and its kind, and nothing is recorded or made. Before, the
// backend was added without the setting the operator believed took effect.
func TestAddBackendRefusesFieldOfAnotherKind(t *testing.T) {
	e := newEnv(t, envOpts{backends: 6})
	ctx := context.Background()
	spec := backends.Spec{Name: "n1", Kind: backends.KindLocal, Path: filepath.Join(e.dir, "n1"), Node: "n1", Bucket: "healstore"}
	const want = "backend n1: bucket does not apply to a local backend (only to s3)"
	err := e.h.AddBackend(ctx, spec, "")
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("AddBackend: %v; want %q", err, want)
	}
	srv := httptest.NewServer(e.h.Handler())
	defer srv.Close()
	c := &Client{Addr: strings.TrimPrefix(srv.URL, "http://")}
	var de *DaemonError
	if err := c.AddBackend(ctx, spec, ""); !errors.As(err, &de) || de.Status != http.StatusBadRequest || !strings.Contains(err.Error(), want) {
		t.Fatalf("AddBackend through the daemon: %v; want 400 and %q", err, want)
	}
	if _, err := e.meta.GetBackend(ctx, "n1"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("refused backend recorded: %v", err)
	}
	if _, err := os.Stat(spec.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused backend's directory made: %v", err)
	}
	// Without the stray field it is added: what was refused was the field.
	spec.Bucket = ""
	if err := e.h.AddBackend(ctx, spec, ""); err != nil || e.state("n1") != metastore.StateUp {
		t.Fatalf("AddBackend of the same spec without bucket: %v", err)
	}
}
