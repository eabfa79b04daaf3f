package healer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/metastore"
)

// TestOperatorMistakesAre4xx: the API answers an operator's mistake with
// backends as the request's fault, with a status and a code that say
// which, and the healer's message; a real failure stays a 500. Before,
// all but a taken name were 500s, read as the daemon failing.
func TestOperatorMistakesAre4xx(t *testing.T) {
	e := newEnv(t, envOpts{backends: 6})
	ctx := context.Background()
	srv := httptest.NewServer(e.h.Handler())
	defer srv.Close()
	c := &Client{Addr: strings.TrimPrefix(srv.URL, "http://")}
	local := func(name string) backends.Spec {
		return backends.Spec{Name: name, Kind: backends.KindLocal, Path: filepath.Join(e.dir, name), Node: name}
	}
	check := func(what string, err error, status int, code string, kind error, want string) {
		t.Helper()
		var de *DaemonError
		if !errors.As(err, &de) || de.Status != status || de.Code != code || !strings.Contains(de.Msg, want) {
			t.Errorf("%s: %#v (%v); want %d, code %q, message with %q", what, de, err, status, code, want)
			return
		}
		if kind != nil && !errors.Is(err, kind) {
			t.Errorf("%s: %v is not %v through the client", what, err, kind)
		}
	}

	check("add a taken name", c.AddBackend(ctx, local("b1"), ""), http.StatusConflict, "backend_exists", ErrBackendExists, "b1")

	// The store's Register refuses a secret ref that holds another secret.
	reg := e.h.reg
	e.h.reg = func(ctx context.Context, spec backends.Spec, secret string) error {
		return fmt.Errorf("backend %s: %w", spec.Name, fmt.Errorf("secret ref %q already holds another secret: %w", spec.Name, ErrSecretInUse))
	}
	check("secret ref in use", c.AddBackend(ctx, local("n1"), ""), http.StatusConflict, "secret_in_use", ErrSecretInUse, "already holds another secret")
	if errors.Is(&DaemonError{Status: http.StatusConflict, Code: "secret_in_use"}, ErrBackendExists) {
		t.Error("a secret ref in use reads as a taken name")
	}

	// A failure of the daemon's own is still a 500, without a code.
	e.h.reg = func(ctx context.Context, spec backends.Spec, secret string) error {
		return errors.New("metastore: disk full")
	}
	check("register fails", c.AddBackend(ctx, local("n1"), ""), http.StatusInternalServerError, "", nil, "disk full")
	e.h.reg = reg

	e.h.try = func(ctx context.Context, spec backends.Spec, secret string) error {
		return errors.New("dial tcp 127.0.0.1:1: connection refused")
	}
	check("add a backend that does not work", c.AddBackend(ctx, local("n1"), ""), http.StatusUnprocessableEntity, "backend_unusable", ErrBackendUnusable, "connection refused")
	e.h.try = nil
	if _, err := e.meta.GetBackend(ctx, "n1"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("a refused backend was recorded: %v", err)
	}

	e.put("obj", []byte("some data"))
	check("remove a backend holding shards", c.RemoveBackend(ctx, "b1"), http.StatusConflict, "backend_not_empty", ErrBackendNotEmpty, "backend drain b1")

	if err := e.meta.UpdateBackend(ctx, "b2", func(r *metastore.BackendRecord) error {
		r.State = metastore.StateRetired
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	check("drain a retired backend", c.Drain(ctx, "b2"), http.StatusConflict, "backend_retired", ErrBackendRetired, "b2 is retired")
	check("drain a missing backend", c.Drain(ctx, "nope"), http.StatusNotFound, "not_found", metastore.ErrNotFound, "nope")
}

// TestErrorReplyCodeOptional: a reply without a code (a daemon before
// codes, a 500) decodes to a DaemonError that matches no sentinel.
func TestErrorReplyCodeOptional(t *testing.T) {
	var e errorReply
	if err := json.Unmarshal([]byte(`{"error":"x"}`), &e); err != nil || e.Code != "" {
		t.Fatalf("%+v %v", e, err)
	}
	if errors.Is(&DaemonError{Status: http.StatusConflict, Msg: "x"}, ErrBackendExists) {
		t.Fatal("a DaemonError without a code matched ErrBackendExists")
	}
}
