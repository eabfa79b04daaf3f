package metastoretest

import (
	"os"
	"strings"
	"testing"
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
