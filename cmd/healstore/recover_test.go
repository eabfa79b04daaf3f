package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/backends"
)

func TestParseSpec(t *testing.T) {
	good := map[string]backends.Spec{
		"name=b1,kind=local,path=/srv/b1,node=n1": {Name: "b1", Kind: "local", Path: "/srv/b1", Node: "n1"},
		"name=z1, kind=zdb, address=10.0.0.7:9900, namespace=hs1, secret_ref=zdb/z1, quota=1GiB": {
			Name: "z1", Kind: "zdb", Address: "10.0.0.7:9900", Namespace: "hs1", SecretRef: "zdb/z1", Quota: 1 << 30},
		`{"name":"s1","kind":"s3","address":"h:1","bucket":"healstore","tls":true,"spare":true}`: {
			Name: "s1", Kind: "s3", Address: "h:1", Bucket: "healstore", TLS: true, Spare: true},
	}
	for in, want := range good {
		got, err := parseSpec(in)
		if err != nil || got != want {
			t.Errorf("parseSpec(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{
		"name=b1,kind=local",                                       // no path
		"name=b1,kind=local,path=/x,colour=blue",                   // unknown key
		"name=z,kind=zdb,address=h:1,namespace=n,password=hunter2", // secrets never in a spec
		"name=b1 kind=local",
		`{"name":"b1","kind":"local","path":"/x","pass":"y"}`,
		"name=b1,kind=local,path=/x,bucket=b", // a key of another kind
		"name=b1,kind=local,path=/x,tls=true", //
		`{"name":"z","kind":"zdb","address":"h:1","namespace":"n","path":"/x"}`,
	} {
		if _, err := parseSpec(in); err == nil {
			t.Errorf("parseSpec(%q) accepted", in)
		}
	}
	if _, err := parseSpec("name=z,kind=zdb,address=h:1,namespace=n,password=hunter2"); err != nil && strings.Contains(err.Error(), "hunter2") {
		t.Errorf("the error repeats the password: %v", err)
	}
}

func TestRecoverCommand(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfgPath, err := healstore.Init(filepath.Join(dir, "store"), healstore.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := healstore.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	s, err := healstore.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("healstore recover "), 5000)
	if _, err := s.Put(ctx, "doc", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	sn, err := s.NewSnapshotter(healstore.SnapshotConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Take(ctx, false); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Keep the key and the backends; lose everything else.
	key := filepath.Join(dir, "backup.key")
	raw, _ := os.ReadFile(cfg.MasterKeyFile)
	os.WriteFile(key, raw, 0o600)
	b3 := cfg.Backends[2]
	os.RemoveAll(cfg.MetadataDir)
	os.Remove(cfgPath)

	run1 := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(ctx, args, strings.NewReader(""), &out, &errb)
		return code, out.String(), errb.String()
	}
	wrong := filepath.Join(dir, "wrong.key")
	if err := healstore.GenerateMasterKey(wrong); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "new")
	spec := "name=" + b3.Name + ",kind=local,path=" + b3.Path + ",node=" + b3.Node
	code, _, stderr := run1("recover", "--key", wrong, "--backend", spec, target)
	if code != exitError || !strings.Contains(stderr, "master key") {
		t.Fatalf("wrong key: exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("the wrong key left a directory behind")
	}
	if code, _, stderr := run1("recover", "--backend", spec, target); code != exitUsage {
		t.Fatalf("without --key: exit %d (%s)", code, stderr)
	}
	// A --secrets path that names no file (a typo) is refused before
	// anything is written, not read as an empty secrets file.
	for _, bad := range []string{filepath.Join(dir, "secrets.tmol"), dir, ""} {
		code, _, stderr := run1("recover", "--key", key, "--backend", spec, "--secrets", bad, target)
		if code != exitUsage || !strings.Contains(stderr, "--secrets "+bad) {
			t.Fatalf("--secrets %q: exit %d, stderr %q; want a usage error naming --secrets and the path", bad, code, stderr)
		}
		if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("--secrets %q left %s behind", bad, target)
		}
	}
	// A key of another kind (bucket on a local backend) is refused before
	// anything is written, naming the key, the backend and its kind.
	for _, bad := range []string{spec + ",bucket=healstore", `{"name":"` + b3.Name + `","kind":"local","path":"` + b3.Path + `","namespace":"ns"}`} {
		code, _, stderr := run1("recover", "--key", key, "--backend", bad, target)
		if code != exitUsage || !strings.Contains(stderr, "backend "+b3.Name+": ") || !strings.Contains(stderr, "does not apply to a local backend") {
			t.Fatalf("--backend %q: exit %d, stderr %q; want a usage error naming the key", bad, code, stderr)
		}
		if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("--backend %q left %s behind", bad, target)
		}
	}
	code, stdout, stderr := run1("recover", "--key", key, "--backend", spec, target)
	if code != exitOK || !strings.Contains(stdout, "recovered store") || !strings.Contains(stdout, "objects: 1;") {
		t.Fatalf("recover: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	code, stdout, stderr = run1("--config", filepath.Join(target, "healstore.toml"), "get", "doc", "-")
	if code != exitOK || stdout != string(data) {
		t.Fatalf("get after recover: exit %d, %d bytes, stderr %s", code, len(stdout), stderr)
	}
}

// The text report names each stripe with too few shards (its missing
// indices and their backends, as the library words it), at most 20 of
// them, and how many shards each backend lacks.
func TestPrintRecoverReportDamagedStripes(t *testing.T) {
	rep := &healstore.RecoverReport{ConfigPath: "/srv/hs/healstore.toml", Objects: 30, Queued: 25,
		Damaged: []string{"a"}, MissingByBackend: map[string]int{"b3": 25, "b1": 2}}
	for i := range 25 {
		rep.DamagedStripes = append(rep.DamagedStripes, healstore.DamagedStripe{
			Object: "a", Detail: fmt.Sprintf(`object "a" stripe %032x: 3 present, 4 needed; missing 1 (b3)`, i)})
	}
	rep.DamagedStripeCount = 30 // the report keeps fewer than it counts
	var out bytes.Buffer
	printRecoverReport(&globalOptions{stdout: &out}, rep)
	text := out.String()
	for _, want := range []string{
		"stripes with too few shards left (30):\n",
		fmt.Sprintf(`  object "a" stripe %032x: 3 present, 4 needed; missing 1 (b3)`+"\n", 19),
		"  ... 10 more (see --json)\n",
		"shards missing by backend: b1 2, b3 25\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, fmt.Sprintf("stripe %032x", 20)) {
		t.Errorf("report prints more than 20 stripes:\n%s", text)
	}
}

// The text report states the loss window even when recovery found no
// shard written after the snapshot: an inline object, a delete or a rename
// committed later leaves nothing on the backends, so "no later shards"
// must not read as "nothing lost".
func TestPrintRecoverReportStatesLossWindow(t *testing.T) {
	taken := time.Date(2026, 12, 1, 6, 53, 34, 0, time.UTC)
	rep := &healstore.RecoverReport{ConfigPath: "/srv/hs/healstore.toml", Objects: 3,
		Snapshot: healstore.SnapshotInfo{ID: "cf4b9dec375261a8e5a0ad53de495eaa", Seq: 1, Taken: taken}}
	var out bytes.Buffer
	printRecoverReport(&globalOptions{stdout: &out}, rep)
	want := "lost: every change committed after 2026-12-01 06:53:34 UTC"
	if !strings.Contains(out.String(), want) {
		t.Fatalf("report lacks %q:\n%s", want, out.String())
	}
}
