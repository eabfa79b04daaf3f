package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/healstore/healstore/backends/backendtest"
)

// ls and rm read and change only the metadata: with no daemon running they
// open no backend, so a backend that hangs (a node that accepts
// connections and never answers) does not hold them up for the seconds
// every command that opens the store waits for it, nor are they warned
// about it.
func TestLsAndRmOpenNoBackend(t *testing.T) {
	dir := newCLIStore(t)
	for _, name := range []string{"a", "b"} {
		if _, errs, code := cli(t, "data of "+name, "put", name, "-"); code != 0 {
			t.Fatalf("put %s: %d %s", name, code, errs)
		}
	}
	addr, accepted := backendtest.CountingHangingServer(t)
	addZDBBackend(t, dir, "hung", addr)

	out, errs, code := cli(t, "", "ls")
	if code != 0 || out != "a\nb\n" || errs != "" {
		t.Fatalf("ls: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if _, errs, code := cli(t, "", "rm", "a"); code != 0 || errs != "" {
		t.Fatalf("rm: exit %d, stderr %q", code, errs)
	}
	if _, errs, code := cli(t, "", "rm", "a"); code != exitNotFound || !strings.Contains(errs, `"a"`) {
		t.Fatalf("rm of a deleted object: exit %d, stderr %q; want exit %d naming it", code, errs, exitNotFound)
	}
	if out, _, code := cli(t, "", "ls"); code != 0 || out != "b\n" {
		t.Fatalf("ls after rm: exit %d, stdout %q", code, out)
	}
	if n := accepted(); n != 0 {
		t.Fatalf("ls and rm connected to the hung backend %d times", n)
	}

	// stat needs the backends: it waits for the hung one, warns, and says
	// how not to wait.
	_, errs, code = cli(t, "", "stat", "b")
	if code != 0 || !strings.Contains(errs, "warning: backend hung is unreachable") ||
		!strings.Contains(errs, "waiting for backends that do not answer") || !strings.Contains(errs, "healstore daemon") {
		t.Fatalf("stat with a hung backend: exit %d, stderr %q; want the warning and the hint", code, errs)
	}
	if accepted() == 0 {
		t.Fatal("stat did not reach for the hung backend")
	}
}

// A backend that refuses connections is warned about, but opening the
// store did not wait for it: no hint about a daemon.
func TestNoWaitNoDaemonHint(t *testing.T) {
	dir := newCLIStore(t)
	if _, errs, code := cli(t, "data", "put", "a", "-"); code != 0 {
		t.Fatalf("put: %d %s", code, errs)
	}
	addZDBBackend(t, dir, "gone", backendtest.ClosedAddr(t))
	_, errs, code := cli(t, "", "stat", "a")
	if code != 0 || !strings.Contains(errs, "warning: backend gone is unreachable") || strings.Contains(errs, "healstore daemon") {
		t.Fatalf("stat with a refusing backend: exit %d, stderr %q; want the warning alone", code, errs)
	}
}

// addZDBBackend adds a 0-db backend at addr, on a node of its own, to the
// config of the store newCLIStore made in dir.
func addZDBBackend(t *testing.T, dir, name, addr string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "store", "healstore.toml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[[backends]]\nname = %q\nkind = \"zdb\"\naddress = %q\nnamespace = \"hs\"\nnode = %q\n", name, addr, name+"-node")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
