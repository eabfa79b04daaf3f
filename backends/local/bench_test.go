package local

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/healstore/healstore/backends/backendtest"
)

// BenchmarkBaseline is the raw disk the x-disk ratios compare with: a 1 MiB
// file written with fsync, and read back.
func BenchmarkBaseline(b *testing.B) {
	dir := b.TempDir()
	v := make([]byte, backendtest.BenchValueSize)
	b.Run("WriteFsync1MiB", func(b *testing.B) {
		b.SetBytes(int64(len(v)))
		for i := 0; b.Loop(); i++ {
			if err := backendtest.WriteSync(filepath.Join(dir, fmt.Sprint(i%8)), v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Read1MiB", func(b *testing.B) {
		b.SetBytes(int64(len(v)))
		for i := 0; b.Loop(); i++ {
			if _, err := os.ReadFile(filepath.Join(dir, fmt.Sprint(i%8))); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkLocal(b *testing.B) {
	bk, err := Open(specFor(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer bk.Close()
	backendtest.Bench(b, bk)
}
