package provision

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/healstore/healstore/backends"
)

func TestLocalProvisionDirectories(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l, err := NewLocal(LocalConfig{Dir: dir, Quota: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var avoid []string
	for range 4 {
		spec, secret, err := l.Provision(ctx, Constraints{Level: "node", AvoidDomains: avoid})
		if err != nil {
			t.Fatal(err)
		}
		if err := spec.Validate(); err != nil {
			t.Fatalf("invalid spec: %v", err)
		}
		if secret != "" || spec.Kind != backends.KindLocal || spec.Quota != 1<<20 {
			t.Fatalf("spec %+v secret %q", spec, secret)
		}
		if filepath.Dir(spec.Path) != dir {
			t.Fatalf("path %s not under %s", spec.Path, dir)
		}
		if fi, err := os.Stat(spec.Path); err != nil || !fi.IsDir() {
			t.Fatalf("directory %s missing: %v", spec.Path, err)
		}
		if ents, err := os.ReadDir(filepath.Join(spec.Path, "data")); err != nil || len(ents) != 256 {
			t.Fatalf("backend %s laid out with %d fan-out directories (%v), want 256", spec.Name, len(ents), err)
		}
		d := spec.Domain("node")
		if seen[d] || seen[spec.Domain("farm")] {
			t.Fatalf("domain %s handed out twice", d)
		}
		seen[d], seen[spec.Domain("farm")] = true, true
		avoid = append(avoid, d)
	}

	// A hint names the backend; an avoided name's domain is skipped.
	spec, _, err := l.Provision(ctx, Constraints{Level: "node", NameHint: "repl/../x", AvoidDomains: []string{"node:repl..x-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Name != "repl..x-2" {
		t.Fatalf("name %q", spec.Name)
	}

	if err := l.Release(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(spec.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("release left %s: %v", spec.Path, err)
	}
	foreign := backends.Spec{Name: "x", Kind: backends.KindLocal, Path: t.TempDir()}
	if err := l.Release(ctx, foreign); err == nil {
		t.Fatal("released a directory Local did not create")
	}
	if _, err := os.Stat(foreign.Path); err != nil {
		t.Fatal("foreign directory was touched")
	}
}

func TestLocalNoCapacity(t *testing.T) {
	ctx := context.Background()
	l, err := NewLocal(LocalConfig{Dir: t.TempDir(), Farm: "home"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Provision(ctx, Constraints{Level: "farm", AvoidDomains: []string{"farm:home"}}); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("avoided farm: %v", err)
	}
	if _, _, err := l.Provision(ctx, Constraints{Level: "node", MinSize: 1 << 62}); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("huge MinSize: %v", err)
	}
	spec, _, err := l.Provision(ctx, Constraints{Level: "farm", AvoidDomains: []string{"farm:elsewhere"}})
	if err != nil || spec.Farm != "home" {
		t.Fatalf("got %+v %v", spec, err)
	}
	if _, err := NewLocal(LocalConfig{}); err == nil {
		t.Fatal("empty dir accepted")
	}
	if _, err := NewLocal(LocalConfig{Dir: t.TempDir(), S3: &LocalS3{}}); err == nil {
		t.Fatal("s3 without binary accepted")
	}
}

// versitygw finds the S3 gateway binary. Without it the test skips, unless
// HEALSTORE_REQUIRE_COMPONENTS=1 makes a missing component a failure.
func versitygw(t *testing.T) string {
	t.Helper()
	cands := []string{os.Getenv("HEALSTORE_VERSITYGW")}
	if p, err := exec.LookPath("versitygw"); err == nil {
		cands = append(cands, p)
	}
	if home, err := os.UserHomeDir(); err == nil {
		cands = append(cands, filepath.Join(home, ".cache/healstore-tools/bin/versitygw"))
	}
	for _, c := range cands {
		if c == "" {
			continue
		}
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return c
		}
	}
	if os.Getenv("HEALSTORE_REQUIRE_COMPONENTS") == "1" {
		t.Fatal("versitygw not found (set HEALSTORE_VERSITYGW or put it on PATH)")
	}
	t.Skip("versitygw not found; set HEALSTORE_VERSITYGW to run the local S3 provisioner test")
	return ""
}

func TestLocalProvisionS3Gateway(t *testing.T) {
	bin := versitygw(t)
	ctx := context.Background()
	dir := t.TempDir()
	l, err := NewLocal(LocalConfig{Dir: dir, S3: &LocalS3{Binary: bin}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	spec, secret, err := l.Provision(ctx, Constraints{Level: "node", NameHint: "gw"})
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	if spec.Kind != backends.KindS3 || spec.SecretRef == "" || secret == "" || spec.Bucket == "" {
		t.Fatalf("spec %+v", spec)
	}
	if strings.Contains(spec.SecretRef, secret) {
		t.Fatal("secret leaked into the spec")
	}
	if fi, err := os.Stat(filepath.Join(dir, spec.Name, "secret")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v %v", fi, err)
	}
	cl, err := minio.New(spec.Address, &minio.Options{Creds: credentials.NewStaticV4(spec.AccessKey, secret, ""), Region: spec.Region})
	if err != nil {
		t.Fatal(err)
	}
	put := func() {
		t.Helper()
		if _, err := cl.PutObject(ctx, spec.Bucket, "k", bytes.NewReader([]byte("hello")), 5, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	get := func() string {
		t.Helper()
		o, err := cl.GetObject(ctx, spec.Bucket, "k", minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer o.Close()
		var b bytes.Buffer
		if _, err := b.ReadFrom(o); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	put()
	if got := get(); got != "hello" {
		t.Fatalf("read %q", got)
	}

	// Stopped, the gateway is gone; Resume brings it back with its data.
	l.Stop(spec.Name)
	if dialable(spec.Address) {
		t.Fatal("gateway still listening after Stop")
	}
	if err := l.Resume(ctx, []backends.Spec{spec, {Name: "other", Kind: backends.KindLocal, Path: "/nope"}}); err != nil {
		t.Fatal(err)
	}
	if got := get(); got != "hello" {
		t.Fatalf("after resume read %q", got)
	}

	if err := l.Release(ctx, spec); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for dialable(spec.Address) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if dialable(spec.Address) {
		t.Fatal("gateway still listening after Release")
	}
	if _, err := os.Stat(filepath.Join(dir, spec.Name)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("release left the directory")
	}
}

// A released backend's directory is gone but its name stays taken: with
// the taken names given, Local never hands a name out again.
func TestLocalProvisionAvoidsTakenNames(t *testing.T) {
	ctx := context.Background()
	l, err := NewLocal(LocalConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	c := Constraints{Level: "node", NameHint: "repl"}
	first, _, err := l.Provision(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx, first); err != nil {
		t.Fatal(err)
	}
	c.TakenNames = []string{first.Name, "repl-2"}
	spec, _, err := l.Provision(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Name != "repl-3" || spec.Path != filepath.Join(l.Dir(), "repl-3") {
		t.Fatalf("got %s at %s, want repl-3 (repl-1 and repl-2 are taken)", spec.Name, spec.Path)
	}
	// An existing directory is skipped as before, taken or not.
	spec, _, err = l.Provision(ctx, c)
	if err != nil || spec.Name != "repl-4" {
		t.Fatalf("got %s (%v), want repl-4", spec.Name, err)
	}
}
