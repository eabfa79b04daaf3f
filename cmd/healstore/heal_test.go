package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/healstore/healstore/healer"
)

// The healer's commands as an operator types them, without a daemon:
// status (table and JSON), heal after a backend is lost, scrub, and the
// backend subcommands.
func TestHealerCommands(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	if _, errs, code := cli(t, "", "init", "--k", "2", "--m", "1", "--backends", "4", store); code != 0 {
		t.Fatalf("init: %s", errs)
	}
	cfg := filepath.Join(store, "healstore.toml")
	raw, _ := os.ReadFile(cfg)
	// Declare a failing backend down at once, and serve nothing (no daemon).
	raw = []byte(strings.Replace(string(raw), `grace_period = "10m"`, `grace_period = "0s"`, 1))
	if err := os.WriteFile(cfg, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HEALSTORE_CONFIG", cfg)
	src := filepath.Join(dir, "src")
	data := []byte(strings.Repeat("heal me ", 200000))
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := cli(t, "", "put", "obj", src); code != 0 {
		t.Fatalf("put: %s", errs)
	}

	status := func() *healer.Status {
		t.Helper()
		out, errs, code := cli(t, "", "status", "--json")
		if code != 0 {
			t.Fatalf("status: %d %s", code, errs)
		}
		var st healer.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		return &st
	}
	st := status()
	if len(st.Backends) != 4 || st.Stripes == 0 || st.DegradedStripes != 0 {
		t.Fatalf("fresh status %+v", st)
	}
	out, _, code := cli(t, "", "status")
	if code != 0 || !strings.Contains(out, "BACKEND") || !strings.Contains(out, "full redundancy") || !strings.Contains(out, "repair queue: 0") {
		t.Fatalf("status table (%d):\n%s", code, out)
	}

	// Lose b2: a plain file where its directory was.
	b2 := filepath.Join(store, "backends", "b2")
	if err := os.Rename(b2, b2+".gone"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b2, []byte("gone"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errs, code := cli(t, "", "heal", "--workers", "3", "--rate", "100MiB")
	if code != 0 || !strings.Contains(out, "0 failed") || !strings.Contains(out, "0 left in the queue") {
		t.Fatalf("heal (%d): %s %s", code, out, errs)
	}
	st = status()
	states := map[string]string{}
	for _, b := range st.Backends {
		states[b.Name] = b.State
	}
	if st.DegradedStripes != 0 || (states["b2"] != "down" && states["b2"] != "replaced") {
		t.Fatalf("after heal: degraded %d, states %v", st.DegradedStripes, states)
	}
	if got, _, code := cli(t, "", "get", "obj"); code != 0 || got != string(data) {
		t.Fatal("object changed after healing")
	}
	if _, _, code := cli(t, "", "heal", "nope"); code != 3 {
		t.Fatalf("heal of a missing object exited %d, want 3", code)
	}

	out, errs, code = cli(t, "", "scrub", "--json")
	var sp healer.ScrubProgress
	if code != 0 || json.Unmarshal([]byte(out), &sp) != nil || sp.Pass != "deep" || sp.Done != st.Stripes || sp.Missing+sp.Corrupt != 0 {
		t.Fatalf("scrub (%d): %s %s", code, out, errs)
	}

	// backend add / ls / drain / rm.
	extra := filepath.Join(dir, "extra")
	if _, errs, code := cli(t, "", "backend", "add", "x1", "--kind", "local", "--path", extra, "--node", "nx"); code != 0 {
		t.Fatalf("backend add: %s", errs)
	}
	out, _, _ = cli(t, "", "backend", "ls")
	if !strings.Contains(out, "x1") || !strings.Contains(out, "node:nx") {
		t.Fatalf("backend ls:\n%s", out)
	}
	if _, errs, code := cli(t, "", "backend", "add", "bad", "--kind", "local"); code != 2 {
		t.Fatalf("add without path exited %d: %s", code, errs)
	}
	out, errs, code = cli(t, "", "backend", "drain", "b1")
	if code != 0 || !strings.Contains(out, "b1 is retired") {
		t.Fatalf("drain (%d): %s %s", code, out, errs)
	}
	if _, errs, code := cli(t, "", "backend", "rm", "b1"); code == 0 || !strings.Contains(errs, "listed in") {
		t.Fatalf("rm of a config backend: %d %s", code, errs)
	}
	if _, errs, code := cli(t, "", "backend", "drain", "x1"); code != 0 {
		t.Fatalf("drain x1: %s", errs)
	}
	if _, errs, code := cli(t, "", "backend", "rm", "x1"); code != 0 {
		t.Fatalf("rm x1: %s", errs)
	}
	if got, _, code := cli(t, "", "get", "obj"); code != 0 || got != string(data) {
		t.Fatal("object changed after draining")
	}
}

// The demo runs end to end, fast, with no set-up.
func TestDemo(t *testing.T) {
	out, errs, code := cli(t, "", "demo", "--size", "4MiB", "--objects", "4", "--grace", "500ms", "--timeout", "2m")
	if code != 0 {
		t.Fatalf("demo (%d):\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"DISASTER", "reads still work", "-> suspect", "-> down", "provisioned replacement",
		"full redundancy restored", "verified: all 4 objects byte-identical", "time to full redundancy", "read amplification"} {
		if !strings.Contains(out, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
}
