package fuse

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"sort"
	"testing"
)

// TestMountInlineBlocks: the mount keeps file blocks as store objects, so
// a block of at most inline_max_size bytes (a small file, or the short
// last block of a larger one) is stored inline in its object's record.
// Such files read back whole after a remount (cold caches), next to files
// whose blocks are striped.
func TestMountInlineBlocks(t *testing.T) {
	const bs = 64 << 10
	e := newMount(t, nil, Options{BlockSize: bs})
	limit := int(e.st.cfg.InlineMaxSize)
	if limit != 4096 {
		t.Fatalf("the store's inline_max_size is %d, want the default 4096", limit)
	}
	rnd := rand.New(rand.NewPCG(5, 6))
	files := map[string][]byte{
		"small":    make([]byte, 100),       // one inline block
		"at-limit": make([]byte, limit),     // one inline block
		"above":    make([]byte, limit+1),   // one striped block
		"tail":     make([]byte, 2*bs+1000), // two striped blocks, an inline tail
	}
	for name, b := range files {
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		if err := os.WriteFile(e.path(name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.remount() // flushes every block to the store; reads below come from it

	for name, want := range files {
		got, err := os.ReadFile(e.path(name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: read back %d bytes, differ from the %d written", name, len(got), len(want))
		}
	}
	infos, _, err := e.st.s.List(context.Background(), "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var inline, striped []int64
	for _, in := range infos {
		if in.Inline {
			inline = append(inline, in.Size)
		} else {
			striped = append(striped, in.Size)
		}
	}
	sort.Slice(inline, func(i, j int) bool { return inline[i] < inline[j] })
	sort.Slice(striped, func(i, j int) bool { return striped[i] < striped[j] })
	if len(inline) != 3 || inline[0] != 100 || inline[1] != 1000 || inline[2] != int64(limit) {
		t.Fatalf("inline block objects of sizes %v, want [100 1000 %d]", inline, limit)
	}
	if len(striped) != 3 || striped[0] != int64(limit+1) || striped[1] != bs || striped[2] != bs {
		t.Fatalf("striped block objects of sizes %v, want [%d %d %d]", striped, limit+1, bs, bs)
	}
}
