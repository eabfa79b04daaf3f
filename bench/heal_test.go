package bench

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// A small run of the heal benchmark: the wiped backend is detected, every
// stripe rebuilt with k bytes read per byte written (plus the margin-0
// stripes, rebuilt with two shards from k), reads never fail, and the
// figures are consistent with each other.
func TestHealBenchmark(t *testing.T) {
	var progress bytes.Buffer
	rep, err := Heal(context.Background(), HealOptions{Size: 24 << 20, ObjectSize: 1 << 20, BlockSize: 256 << 10,
		ProbeInterval: 200 * time.Millisecond, MarginZero: 4, Progress: io.MultiWriter(&progress, os.Stderr)})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	t.Logf("\n%s", progress.String())
	if rep.LostStripes != rep.Stripes || rep.LostBytes == 0 {
		t.Fatalf("with 6 backends for 4+2 every stripe has a shard on the wiped one: %+v", rep)
	}
	if rep.Detected <= 0 || rep.WipeNoticed < rep.Detected || rep.HealingStarted < rep.Detected || rep.FullRedundancy < rep.HealingStarted || rep.FullRedundancy < rep.WipeNoticed {
		t.Fatalf("timeline out of order: %+v", rep)
	}
	if rep.ReadErrors != 0 || rep.Reads == 0 {
		t.Fatalf("reads during healing: %d, %d failed", rep.Reads, rep.ReadErrors)
	}
	// Every lost byte was rebuilt, plus the margin-0 stripes' second shard.
	if rep.BytesWritten < rep.LostBytes {
		t.Fatalf("rebuilt %d bytes, lost %d", rep.BytesWritten, rep.LostBytes)
	}
	if rep.ReadAmplification > 4*1.05 || rep.ReadAmplification < 1 {
		t.Fatalf("read amplification %.3f", rep.ReadAmplification)
	}
	if rep.MarginZeroStripes == 0 || rep.MarginZeroMax <= 0 {
		t.Fatalf("margin-0 measurement missing: %+v", rep)
	}
	if rep.RebuildMBps <= 0 || rep.BaselineMBps <= 0 || rep.Ratio <= 0 {
		t.Fatalf("rates %+v", rep)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil || !strings.Contains(text.String(), "full redundancy") {
		t.Fatalf("text report: %v\n%s", err, text.String())
	}
}
