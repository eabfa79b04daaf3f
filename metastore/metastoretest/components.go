package metastoretest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdEndpoints returns the endpoints in HEALSTORE_ETCD_ENDPOINTS (comma
// separated). When unset it skips the test, or fails it when
// HEALSTORE_REQUIRE_COMPONENTS=1, so a CI run cannot pass by testing
// nothing.
func EtcdEndpoints(t testing.TB) []string {
	t.Helper()
	var eps []string
	for _, e := range strings.Split(os.Getenv("HEALSTORE_ETCD_ENDPOINTS"), ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	if len(eps) == 0 {
		if os.Getenv("HEALSTORE_REQUIRE_COMPONENTS") == "1" {
			t.Fatal("etcd required (HEALSTORE_REQUIRE_COMPONENTS=1) but HEALSTORE_ETCD_ENDPOINTS is not set; start it with scripts/services.sh")
		}
		t.Skip("etcd not configured: set HEALSTORE_ETCD_ENDPOINTS (scripts/services.sh start) to run the etcd metastore tests")
	}
	return eps
}

// EtcdPrefix returns a fresh key prefix (tag names what uses it) on the
// test etcd at eps and deletes everything under it when the test ends, so
// tests share one etcd without seeing each other's keys.
func EtcdPrefix(t testing.TB, eps []string, tag string) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	prefix := tag + "-" + hex.EncodeToString(b[:]) + "/"
	t.Cleanup(func() {
		cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
		if err != nil {
			return
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cli.Delete(ctx, prefix, clientv3.WithPrefix())
	})
	return prefix
}
