package healstore

import (
	"bytes"
	"context"
	"io"
	"testing"
)

// BenchmarkInlineGet opens and reads a 4 KiB inline object (the record
// served from pebble's memtable or cache): the CPU cost of an inline read.
func BenchmarkInlineGet(b *testing.B) {
	ctx := context.Background()
	s := newTestStore(b, testOpts{})
	data := bytes.Repeat([]byte{1, 2, 3, 4}, 1024)
	if _, err := s.Put(ctx, "x", bytes.NewReader(data)); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, len(data))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		r, err := s.Open(ctx, "x")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}
