package s3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/backendtest"
	"github.com/minio/minio-go/v7"
)

// server is an S3 endpoint to test against.
type server struct {
	endpoint, access, secret, region string
}

// testServer returns the S3 server named by HEALSTORE_S3_ENDPOINT (and
// _ACCESS_KEY, _SECRET_KEY, _REGION). Without it the test is skipped, or
// fails under HEALSTORE_REQUIRE_COMPONENTS=1.
func testServer(t *testing.T) server { return serverFor(t) }

func benchServer(b *testing.B) server { return serverFor(b) }

func serverFor(t testing.TB) server {
	t.Helper()
	s := server{
		endpoint: os.Getenv("HEALSTORE_S3_ENDPOINT"),
		access:   os.Getenv("HEALSTORE_S3_ACCESS_KEY"),
		secret:   os.Getenv("HEALSTORE_S3_SECRET_KEY"),
		region:   os.Getenv("HEALSTORE_S3_REGION"),
	}
	if s.endpoint == "" {
		if os.Getenv("HEALSTORE_REQUIRE_COMPONENTS") == "1" {
			t.Fatal("HEALSTORE_S3_ENDPOINT is not set and HEALSTORE_REQUIRE_COMPONENTS=1: the S3 server (versitygw) is required")
		}
		t.Skip("HEALSTORE_S3_ENDPOINT not set: no S3 server (start versitygw, see scripts/services.sh)")
	}
	return s
}

func randName(prefix string) string {
	var b [5]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func (s server) spec(bucket, prefix string, quota int64) backends.Spec {
	return backends.Spec{Name: "s3-" + bucket, Kind: backends.KindS3, Address: s.endpoint, Bucket: bucket,
		Prefix: prefix, Region: s.region, AccessKey: s.access, SecretRef: "s3", Quota: quota}
}

func (s server) openB(b *testing.B, spec backends.Spec) *Backend { return s.open(b, spec) }

func (s server) open(t testing.TB, spec backends.Spec) *Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := Open(ctx, spec, s.secret)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const testBucket = "hs-backends-test"

func (s server) factory() backendtest.Factory {
	f := backendtest.Factory{
		// Each backend gets its own prefix in a shared bucket, so the
		// prefix handling is under test too.
		Open: func(t *testing.T) backends.Backend {
			return s.open(t, s.spec(testBucket, randName("p-")+"/sub", 0))
		},
		OpenLimited: func(t *testing.T, limit int64) backends.Backend {
			return s.open(t, s.spec(testBucket, randName("q-"), limit))
		},
		MaxValueSize:  MaxValueSize,
		CapacityKnown: false,
		OpenWrongCredentials: func(t *testing.T) (backends.Backend, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			b, err := Open(ctx, s.spec(testBucket, "x", 0), "wrong-"+s.secret)
			if err != nil {
				return nil, err
			}
			return b, nil
		},
		OpenUnreachable: func(t *testing.T) (backends.Backend, error) {
			sp := s.spec(testBucket, "x", 0)
			sp.Address = backendtest.ClosedAddr(t)
			return s.open(t, sp), nil
		},
		OpenHanging: func(t *testing.T) (backends.Backend, error) {
			sp := s.spec(testBucket, "x", 0)
			sp.Address = backendtest.HangingServer(t)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			b, err := Open(ctx, sp, s.secret)
			if err != nil {
				return nil, err
			}
			return b, nil
		},
		Secrets: []string{s.secret},
	}
	if bin := gatewayBinary(); bin != "" {
		f.OpenWithOutage = func(t *testing.T) (backends.Backend, func(), func()) {
			return privateGateway(t, bin, s)
		}
	}
	return f
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, testServer(t).factory())
}

// gatewayBinary finds versitygw: HEALSTORE_VERSITYGW (set by
// scripts/services.sh), else PATH; "" when there is none.
func gatewayBinary() string {
	if bin := os.Getenv("HEALSTORE_VERSITYGW"); bin != "" {
		if _, err := os.Stat(bin); err == nil {
			return bin
		}
	}
	bin, _ := exec.LookPath("versitygw")
	return bin
}

// privateGateway starts a versitygw of the test's own on a free port, so the
// outage test can stop and start it.
func privateGateway(t *testing.T, bin string, s server) (backends.Backend, func(), func()) {
	dir := t.TempDir()
	addr := backendtest.ClosedAddr(t)
	var cmd *exec.Cmd
	start := func() {
		cmd = exec.Command(bin, "--port", addr, "--quiet", "posix", dir)
		cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY=outage", "ROOT_SECRET_KEY=outage-secret")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("versitygw did not listen on %s: %v", addr, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	start()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			stop()
		}
	})
	sp := backends.Spec{Name: "s3-outage", Kind: backends.KindS3, Address: addr, Bucket: "outage", AccessKey: "outage"}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := Open(ctx, sp, "outage-secret")
	if err != nil {
		t.Fatal(err)
	}
	return b, stop, start
}

func TestNoPrefixAndBucketCreation(t *testing.T) {
	s := testServer(t)
	bucket := randName("hs-b-")
	b := s.open(t, s.spec(bucket, "", 0))
	defer b.Close()
	ctx := context.Background()
	if err := b.Put(ctx, "k/1", []byte("v")); err != nil {
		t.Fatal(err)
	}
	// The object sits at the bucket root under its own name.
	info, err := b.cl.StatObject(ctx, bucket, "k/1", minio.StatObjectOptions{})
	if err != nil || info.Size != 1 {
		t.Fatalf("object k/1 at the bucket root: %+v, %v", info, err)
	}
	// A bucket removed behind the backend's back comes back on Put.
	if err := b.cl.RemoveObject(ctx, bucket, "k/1", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.cl.RemoveBucket(ctx, bucket); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "k/1"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Get from a removed bucket: %v", err)
	}
	if err := b.Put(ctx, "k/2", []byte("w")); err != nil {
		t.Fatalf("Put into a removed bucket: %v", err)
	}
	if got, err := b.Get(ctx, "k/2"); err != nil || string(got) != "w" {
		t.Fatalf("Get after the bucket came back: %q, %v", got, err)
	}
}

func TestKeyEscaping(t *testing.T) {
	for k, want := range map[string]string{
		"a/b": "a/b", ".": "%2E", "..": "%2E%2E", "x/./y": "x/%2E/y", "a//b": "a/%/b",
		"/lead": "%/lead", "trail/": "trail/%", ".hidden/..x": ".hidden/..x",
	} {
		if got := encodeKey(k); got != want {
			t.Errorf("encodeKey(%q) = %q, want %q", k, got, want)
		}
		if back := decodeKey(encodeKey(k)); back != k {
			t.Errorf("decodeKey(encodeKey(%q)) = %q", k, back)
		}
	}
}

func TestErrorKinds(t *testing.T) {
	for _, c := range []struct {
		err  error
		kind error
	}{
		{minio.ErrorResponse{Code: "NoSuchKey", StatusCode: 404}, backends.ErrNotFound},
		{minio.ErrorResponse{Code: "AccessDenied", StatusCode: 403}, backends.ErrAuth},
		{minio.ErrorResponse{Code: "InvalidAccessKeyId", StatusCode: 403}, backends.ErrAuth},
		{minio.ErrorResponse{Code: "SignatureDoesNotMatch", StatusCode: 403}, backends.ErrAuth},
		{minio.ErrorResponse{Code: "XMinioAdminBucketQuotaExceeded", StatusCode: 400}, backends.ErrFull},
		{minio.ErrorResponse{Code: "SomeQuotaExceededError", StatusCode: 400}, backends.ErrFull},
		{minio.ErrorResponse{StatusCode: 507}, backends.ErrFull},
		{minio.ErrorResponse{Code: "SlowDown", StatusCode: 503}, backends.ErrUnavailable},
		{minio.ErrorResponse{StatusCode: 502}, backends.ErrUnavailable},
		{minio.ErrorResponse{Code: "EntityTooLarge", StatusCode: 400}, backends.ErrTooLarge},
		{minio.ErrorResponse{Code: "WeirdThing", StatusCode: 400}, backends.ErrCorruptReply},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, backends.ErrUnavailable},
		{context.DeadlineExceeded, backends.ErrUnavailable},
	} {
		if got := kindOf(c.err); got != c.kind {
			t.Errorf("kindOf(%v) = %v, want %v", c.err, got, c.kind)
		}
	}
}

func TestQuotaCountsExistingObjects(t *testing.T) {
	s := testServer(t)
	prefix := randName("quota-")
	b := s.open(t, s.spec(testBucket, prefix, 0))
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if err := b.Put(ctx, "k"+strings.Repeat("x", i), make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	b.Close()
	q := s.open(t, s.spec(testBucket, prefix, 5000))
	defer q.Close()
	r, err := q.Probe(ctx)
	if err != nil || r.Capacity != (backends.Capacity{Known: true, Used: 3000, Limit: 5000, Free: 2000}) {
		t.Fatalf("Probe with a quota over existing objects: %+v, %v", r, err)
	}
	if err := q.Put(ctx, "big", make([]byte, 2001)); !errors.Is(err, backends.ErrFull) {
		t.Fatalf("Put past the quota: %v", err)
	}
}

// The server's listing must ascend in byte order with our key encoding, so
// the walk's order check never fires on a correct server: versitygw's
// posix back end lists a directory's entries around its subdirectories,
// and "%", "-" and "." sort before the "/" that follows a directory name.
// Pages of two keys so the continuation token is followed many times.
func TestListOrderOnServer(t *testing.T) {
	s := testServer(t)
	b := s.open(t, s.spec(testBucket, randName("order-"), 0))
	defer b.Close()
	b.listPage = 2
	ctx := context.Background()
	keys := []string{
		"shards/00ff.1", "shards/00ff.10", "shards/00ff.2", "shards/00fe.1",
		"healstore-snap/0001-ab-0001.1", "healstore-snap/0001-ab-0001.10",
		"x/a-b/1", "x/a.b/1", "x/a/1", "x/a/2", "x/a0", "x/a.c", "x/a-", "x/a_",
		"x//y", "x/./z", "x/../w", "x/.hidden", "x/-", "x/..x", "x/A", "x/Z/1",
		"x/a/b/c", "x/a/b.c", "x/a/b-c", "x/a/b/", "x/t/", "x/t/a", "x/t-/a", "x/t.",
	}
	for _, k := range keys {
		if err := b.Put(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	want := slices.Clone(keys)
	slices.SortFunc(want, func(x, y string) int { return strings.Compare(b.object(x), b.object(y)) })
	var got []string
	if err := b.List(ctx, "", func(k string, n int64) error { got = append(got, k); return nil }); err != nil {
		t.Fatalf("List in pages of 2: %v (after %d keys)", err, len(got))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("List in pages of 2:\n got %q\nwant %q", got, want)
	}
}
