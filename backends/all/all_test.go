package all

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/backendtest"
	"github.com/healstore/healstore/backends/zdb"
	"github.com/healstore/healstore/backends/zdb/zdbtest"
)

func secretsOf(m map[string]string) backends.SecretLookup {
	return func(ref string) (string, error) {
		s, ok := m[ref]
		if !ok {
			return "", fmt.Errorf("secret %q: %w", ref, backends.ErrNoSecret)
		}
		return s, nil
	}
}

func open(t *testing.T, spec backends.Spec, secrets backends.SecretLookup) backends.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := Open(ctx, spec, secrets)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The deadline decorator on top of a real backend keeps every contract.
func TestConformanceLocalThroughAll(t *testing.T) {
	mk := func(t *testing.T, quota int64) backends.Backend {
		return open(t, backends.Spec{Name: "l", Kind: backends.KindLocal, Path: t.TempDir(), Quota: quota}, nil)
	}
	backendtest.Run(t, backendtest.Factory{
		Open:          func(t *testing.T) backends.Backend { return mk(t, 0) },
		OpenLimited:   mk,
		MaxValueSize:  MaxValueSize(backends.KindLocal),
		CapacityKnown: true,
	})
}

func TestZDBThroughAll(t *testing.T) {
	s := zdbtest.New(t, zdbtest.Options{AdminPassword: "adm"})
	if err := s.CreateNamespace("ns", "the-ns-password", 0); err != nil {
		t.Fatal(err)
	}
	spec := backends.Spec{Name: "z", Kind: backends.KindZDB, Address: s.Addr(), Namespace: "ns", SecretRef: "z-pw"}
	b := open(t, spec, secretsOf(map[string]string{"z-pw": "the-ns-password"}))
	defer b.Close()
	ctx := context.Background()
	if err := b.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, "k"); err != nil || string(got) != "v" {
		t.Fatalf("Get: %q %v", got, err)
	}
	// The decorator bounds a call that would otherwise hang.
	s.SetHang(true)
	ctx2 := context.Background()
	bt, err := OpenWithTimeout(ctx2, spec, secretsOf(map[string]string{"z-pw": "the-ns-password"}), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer bt.Close()
	start := time.Now()
	if _, err := bt.Get(ctx2, "k"); !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("Get from a hanging server: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("the per-call timeout was not applied")
	}
	s.SetHang(false)

	// A wrong secret is refused and not repeated in the error.
	_, err = Open(ctx, spec, secretsOf(map[string]string{"z-pw": "not-the-password"}))
	if !errors.Is(err, backends.ErrAuth) || strings.Contains(err.Error(), "not-the-password") {
		t.Fatalf("Open with a wrong secret: %v", err)
	}
	// A missing secret names the ref.
	_, err = Open(ctx, spec, secretsOf(nil))
	if !errors.Is(err, backends.ErrNoSecret) || !strings.Contains(err.Error(), "z-pw") {
		t.Fatalf("Open with an unknown secret ref: %v", err)
	}
	_, err = Open(ctx, spec, nil)
	if !errors.Is(err, backends.ErrNoSecret) {
		t.Fatalf("Open with no secret store: %v", err)
	}
}

func TestS3ThroughAll(t *testing.T) {
	ep := os.Getenv("HEALSTORE_S3_ENDPOINT")
	if ep == "" {
		if os.Getenv("HEALSTORE_REQUIRE_COMPONENTS") == "1" {
			t.Fatal("HEALSTORE_S3_ENDPOINT is not set and HEALSTORE_REQUIRE_COMPONENTS=1")
		}
		t.Skip("HEALSTORE_S3_ENDPOINT not set: no S3 server")
	}
	spec := backends.Spec{Name: "s", Kind: backends.KindS3, Address: ep, Bucket: "hs-all-test", Prefix: "p",
		Region: os.Getenv("HEALSTORE_S3_REGION"), AccessKey: os.Getenv("HEALSTORE_S3_ACCESS_KEY"), SecretRef: "s3"}
	b := open(t, spec, secretsOf(map[string]string{"s3": os.Getenv("HEALSTORE_S3_SECRET_KEY")}))
	defer b.Close()
	ctx := context.Background()
	if err := b.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if got, err := b.GetRange(ctx, "k", 0, 1); err != nil || string(got) != "v" {
		t.Fatalf("GetRange: %q %v", got, err)
	}
}

func TestBadSpecs(t *testing.T) {
	ctx := context.Background()
	for _, spec := range []backends.Spec{
		{Name: "x", Kind: "ftp", Address: "h:1"},
		{Name: "", Kind: backends.KindLocal, Path: "/tmp"},
		{Name: "x", Kind: backends.KindS3, Address: "h:1"},
	} {
		if _, err := Open(ctx, spec, nil); err == nil {
			t.Errorf("Open(%+v) accepted a bad spec", spec)
		}
	}
}

func TestMaxValueSize(t *testing.T) {
	if got := MaxValueSize(backends.KindZDB); got != 8388608 || zdb.MaxValueSize != 8388608 {
		t.Errorf("zdb: %d", got)
	}
	for _, k := range []string{backends.KindLocal, backends.KindS3} {
		if got := MaxValueSize(k); got < 64<<20+128 {
			t.Errorf("%s: %d, want at least a 64 MiB block plus header", k, got)
		}
	}
	if MaxValueSize("ftp") != 0 {
		t.Error("unknown kind has a size")
	}
}
