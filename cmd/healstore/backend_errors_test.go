package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/healstore/healstore/backends/backendtest"
	"github.com/healstore/healstore/healer"
)

// useDaemon points the store's healer.metrics_addr at a free address and
// runs its daemon there until the test ends.
func useDaemon(t *testing.T, cfg string) {
	t.Helper()
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(raw), "127.0.0.1:9310", freeAddr(t), 1)
	if edited == string(raw) {
		t.Fatal("no metrics_addr to edit")
	}
	if err := os.WriteFile(cfg, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	runDaemon(t, cfg)
}

// TestBackendMistakesThroughDaemon: an operator's mistake with backends,
// made through a daemon, prints the daemon's message saying what was
// wrong and exits as in process: a taken name with the CLI's own "already
// exists" (exit 2), a backend that does not work, draining a retired
// backend and removing one that holds shards with exit 1. Before, the
// daemon answered all but the first 500, and backend add read every 409
// as a taken name.
func TestBackendMistakesThroughDaemon(t *testing.T) {
	dir, cfg := newStore(t)
	// b7 gets shards of the objects put below (6 of its 7 backends hold
	// a shard of each stripe); b8 is drained empty, so retired.
	for _, args := range [][]string{
		{"backend", "add", "b7", "--kind", "local", "--path", filepath.Join(dir, "b7"), "--node", "n7"},
		{"backend", "add", "b8", "--kind", "local", "--path", filepath.Join(dir, "b8"), "--node", "n8"},
		{"backend", "drain", "b8"},
	} {
		if _, errs, code := cli(t, "", args...); code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, errs)
		}
	}
	for i := range 8 {
		if _, errs, code := cli(t, strings.Repeat("not inline ", 20000), "put", fmt.Sprintf("obj%d", i), "-"); code != 0 {
			t.Fatalf("put: %d %s", code, errs)
		}
	}
	out, errs, code := cli(t, "", "backend", "ls", "--json")
	var bs []struct {
		Name   string
		State  string
		Shards int
	}
	if code != 0 || json.Unmarshal([]byte(out), &bs) != nil {
		t.Fatalf("backend ls: exit %d: %s %s", code, errs, out)
	}
	for _, b := range bs {
		if (b.Name == "b7" && b.Shards == 0) || (b.Name == "b8" && b.State != "retired") {
			t.Fatalf("setup: %+v", bs)
		}
	}
	useDaemon(t, cfg)

	for _, c := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"backend", "add", "b1", "--kind", "local", "--path", filepath.Join(dir, "other"), "--node", "n9"}, exitUsage,
			[]string{"backend b1 already exists; choose another name"}},
		{[]string{"backend", "add", "z1", "--kind", "zdb", "--address", backendtest.ClosedAddr(t), "--namespace", "ns", "--node", "n9"}, exitError,
			[]string{"daemon: backend z1 does not work, so it was not added"}},
		{[]string{"backend", "drain", "b8"}, exitError, []string{"daemon: drain b8: backend b8 is retired"}},
		{[]string{"backend", "rm", "b7"}, exitError, []string{"daemon: backend b7 still holds shards", "backend drain b7` first"}},
	} {
		_, errs, code := cli(t, "", c.args...)
		ok := code == c.code && !strings.Contains(errs, "already exists") == (c.code != exitUsage)
		for _, w := range c.want {
			ok = ok && strings.Contains(errs, w)
		}
		if !ok {
			t.Errorf("%q through the daemon: exit %d, stderr %q; want exit %d and %q", c.args, code, errs, c.code, c.want)
		}
	}
}

// TestBackendAddTellsConflictsApart: of the daemon's 409s, backend add
// words only a taken name as "already exists"; a secret ref holding
// another secret keeps the daemon's message. Both are usage errors, and
// a 422 (the backend does not work) is an error. Before, every 409 read
// as "backend NAME already exists".
func TestBackendAddTellsConflictsApart(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
		want string
	}{
		{&healer.DaemonError{Status: http.StatusConflict, Code: "backend_exists", Msg: "backend b1: a backend of that name already exists"}, exitUsage, "backend b1 already exists; choose another name"},
		{&healer.DaemonError{Status: http.StatusConflict, Msg: "backend b1: a backend of that name already exists"}, exitUsage, "backend b1 already exists; choose another name"},
		{&healer.DaemonError{Status: http.StatusConflict, Code: "secret_in_use", Msg: `backend b1: secret ref "s3/a" already holds another secret`}, exitUsage, `daemon: backend b1: secret ref "s3/a" already holds another secret`},
		{&healer.DaemonError{Status: http.StatusUnprocessableEntity, Code: "backend_unusable", Msg: "backend b1 does not work, so it was not added: connection refused"}, exitError, "connection refused"},
	} {
		err := backendAddError("b1", c.err)
		if exitCode(err) != c.code || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v (exit %d); want exit %d and %q", c.err, err, exitCode(err), c.code, c.want)
		}
	}
}
