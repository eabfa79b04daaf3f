package zdb

import (
	"context"
	"os"
	"testing"

	"github.com/healstore/healstore/backends/backendtest"
	"github.com/healstore/healstore/backends/zdb/zdbtest"
)

// BenchmarkDouble measures the client against the in-process double (which
// keeps values in memory): the client's and the protocol's overhead.
func BenchmarkDouble(b *testing.B) {
	s, err := zdbtest.Start(zdbtest.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.CreateNamespace("bench", "pw", 0)
	bk, err := Open(context.Background(), spec(s.Addr(), "bench"), "pw")
	if err != nil {
		b.Fatal(err)
	}
	defer bk.Close()
	backendtest.Bench(b, bk)
}

// BenchmarkReal measures a real 0-db given HEALSTORE_ZDB_ADDR.
func BenchmarkReal(b *testing.B) {
	addr := os.Getenv("HEALSTORE_ZDB_ADDR")
	if addr == "" {
		b.Skip("HEALSTORE_ZDB_ADDR not set")
	}
	ctx := context.Background()
	a, err := DialAdmin(ctx, addr, os.Getenv("HEALSTORE_ZDB_ADMIN"))
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	const ns = "hs-bench"
	a.DeleteNamespace(ctx, ns)
	if err := a.CreateNamespace(ctx, ns, "pw", 0); err != nil {
		b.Fatal(err)
	}
	defer a.DeleteNamespace(ctx, ns)
	bk, err := Open(ctx, spec(addr, ns), "pw")
	if err != nil {
		b.Fatal(err)
	}
	defer bk.Close()
	backendtest.Bench(b, bk)
}
