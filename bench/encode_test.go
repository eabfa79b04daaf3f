package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/encoder"
)

func TestEncodeBenchmark(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	var progress bytes.Buffer
	res, err := Encode(context.Background(), EncodeOptions{
		K: 4, M: 2, BlockSize: 256 << 10, Compression: "zstd", Encryption: "aes-256-gcm",
		Duration: 600 * time.Millisecond, Threads: 1, WorkingSet: 2 << 20,
	}, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOMAXPROCS(0) != procs {
		t.Fatalf("GOMAXPROCS left at %d, was %d", runtime.GOMAXPROCS(0), procs)
	}
	if res.Policy.K != 4 || res.Threads != 1 || res.Rounds < 3 || res.WorkingSet < 2<<20 {
		t.Fatalf("result %+v", res)
	}
	for name, p := range map[string]PathResult{"raw": res.Raw, "encode": res.Encode, "encode_from_slice": res.EncodeFromSlice, "decode": res.Decode, "decode_missing": res.DecodeMissing} {
		if p.Blocks == 0 || p.GBps <= 0 || p.RatioToRaw <= 0 || p.CPURatioToRaw <= 0 || p.RatioMin > p.RatioToRaw || p.RatioMax < p.RatioToRaw {
			t.Errorf("%s: %+v", name, p)
		}
	}
	if res.RatioToRaw != res.Encode.RatioToRaw || res.Raw.RatioToRaw != 1 {
		t.Errorf("ratio_to_raw %v, encode's %v, raw's %v", res.RatioToRaw, res.Encode.RatioToRaw, res.Raw.RatioToRaw)
	}
	if res.ChecksumGBps[encoder.ChecksumXXH3] <= 0 || res.ChecksumGBps[encoder.ChecksumSHA256] <= 0 {
		t.Errorf("checksum speeds %v", res.ChecksumGBps)
	}
	if !strings.Contains(progress.String(), "round 3/") {
		t.Errorf("progress:\n%s", progress.String())
	}

	// The JSON a script reads: ratio_to_raw is a top-level number.
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]any
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	if _, ok := top["ratio_to_raw"].(float64); !ok {
		t.Fatalf("no numeric ratio_to_raw in %s", b)
	}
	var text strings.Builder
	if err := res.WriteText(&text); err != nil || !strings.Contains(text.String(), "decode, 2 missing") {
		t.Fatalf("text: %v\n%s", err, text.String())
	}
}

func TestEncodeBenchmarkRejects(t *testing.T) {
	ctx := context.Background()
	if _, err := Encode(ctx, EncodeOptions{K: 300, M: 4}, nil); err == nil {
		t.Error("k=300 accepted")
	}
	if _, err := Encode(ctx, EncodeOptions{Threads: -1}, nil); err == nil {
		t.Error("threads=-1 accepted")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Encode(cctx, EncodeOptions{K: 2, M: 1, BlockSize: 64 << 10, WorkingSet: 1 << 20, Duration: time.Second}, nil); err == nil {
		t.Error("cancelled context: no error")
	}
}
