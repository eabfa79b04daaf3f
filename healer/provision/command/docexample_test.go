package command

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/healstore/healstore/healer/provision"
)

// docScript extracts the shell script of docs/provisioning.md whose first
// comment line names file.
func docScript(t *testing.T, file string) string {
	t.Helper()
	doc, err := os.ReadFile("../../../docs/provisioning.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile("(?s)```sh\n(#!/bin/sh\n.*?)```").FindAllSubmatch(doc, -1) {
		if strings.Contains(strings.SplitN(string(m[1]), "\n", 3)[1], file) {
			path := filepath.Join(t.TempDir(), file)
			if err := os.WriteFile(path, m[1], 0o755); err != nil {
				t.Fatal(err)
			}
			return path
		}
	}
	t.Fatalf("docs/provisioning.md has no script %s", file)
	return ""
}

// TestDocGridScript runs the tfcmd-wrapping example of the docs through
// the command provisioner, against the fake tfcmd, so the example keeps
// working as the protocol evolves.
func TestDocGridScript(t *testing.T) {
	if _, err := exec.LookPath("jq"); err != nil {
		if os.Getenv("HEALSTORE_REQUIRE_COMPONENTS") == "1" {
			t.Fatal("jq is not installed; the documented example needs it (scripts/services.sh install adds it)")
		}
		t.Skip("jq is not installed; the documented example needs it")
	}
	script := docScript(t, "provision-grid.sh")
	bin := t.TempDir()
	fake, err := filepath.Abs("../tfgrid/testdata/tfcmd")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(fake, filepath.Join(bin, "tfcmd")); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	p, err := New(Config{Command: []string{script}, Env: []string{
		"PATH=" + bin + ":" + os.Getenv("PATH"),
		"FAKE_TFCMD_DIR=" + state,
		"FAKE_TFCMD_IPS=2a10:b600:1::1,302:9e63::1",
		"FARMS=1 79",
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	live := func() int {
		ents, _ := os.ReadDir(filepath.Join(state, "projects"))
		return len(ents)
	}

	// Farm 1 is used: the script deploys in farm 79 (the fake's node 791).
	spec, secret, err := p.Provision(context.Background(), provision.Constraints{
		AvoidDomains: []string{"farm:1"}, Level: "farm", MinSize: 150 << 30, NameHint: "repl"})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Kind != "zdb" || spec.Farm != "79" || spec.Node != "791" || spec.Address != "[2a10:b600:1::1]:9900" ||
		spec.Quota != 150<<30 || !strings.HasPrefix(spec.Name, "hsrepl") || spec.SecretRef != spec.Name || len(secret) != 48 {
		t.Errorf("spec %+v secret len %d", spec, len(secret))
	}

	// The node tfcmd picks is already used: the script cancels and fails.
	_, _, err = p.Provision(context.Background(), provision.Constraints{AvoidDomains: []string{"node:11"}, Level: "node"})
	if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "landed on node '11'") {
		t.Fatalf("err = %v", err)
	}
	if live() != 1 {
		t.Errorf("%d deployments live, want only the first", live())
	}
	if err := p.Release(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	if live() != 0 {
		t.Errorf("release left %d deployments", live())
	}
}
