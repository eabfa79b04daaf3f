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
// connections and never answers) does not hold them up for the 10 s every
// command that opens the store waits for it, nor are they warned about it.
func TestLsAndRmOpenNoBackend(t *testing.T) {
	dir := newCLIStore(t)
	for _, name := range []string{"a", "b"} {
		if _, errs, code := cli(t, "data of "+name, "put", name, "-"); code != 0 {
			t.Fatalf("put %s: %d %s", name, code, errs)
		}
	}
	addr, accepted := backendtest.CountingHangingServer(t)
	cfgPath := filepath.Join(dir, "store", "healstore.toml")
	f, err := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[[backends]]\nname = \"hung\"\nkind = \"zdb\"\naddress = %q\nnamespace = \"hs\"\nnode = \"hung-node\"\n", addr)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

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
}
