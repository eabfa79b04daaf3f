package s3

import (
	"testing"

	"github.com/healstore/healstore/backends/backendtest"
)

// BenchmarkS3 measures the S3 server named by HEALSTORE_S3_ENDPOINT.
func BenchmarkS3(b *testing.B) {
	s := benchServer(b)
	bk := s.openB(b, s.spec(testBucket, randName("bench-"), 0))
	defer bk.Close()
	backendtest.Bench(b, bk)
}
