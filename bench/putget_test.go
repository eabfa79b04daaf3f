package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/encoder"
)

func TestPutGetReport(t *testing.T) {
	dir := t.TempDir()
	pol := encoder.DefaultPolicy()
	pol.BlockSize = 64 << 10
	path, err := healstore.Init(dir, healstore.InitOptions{Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := healstore.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := healstore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var progress bytes.Buffer
	rep, err := PutGet(context.Background(), s, PutGetOptions{Mode: "putget", Sizes: []int64{4 << 10, 200 << 10}, Count: 3, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 || rep.K != 4 || rep.M != 2 {
		t.Fatalf("report %+v", rep)
	}
	for _, r := range rep.Results {
		if r.Put.Ops != 3 || r.Get.Ops != 3 || r.BasePut.Ops != 3 || r.BaseGet.Ops != 3 {
			t.Fatalf("size %d: ops %+v", r.Size, r)
		}
		// Stored bytes: k+m shards of at least size/k each, plus headers;
		// an inline object (4 KiB) its sealed block, at least its size.
		min := r.Size * 6 / 4
		if r.Size <= s.Config().InlineMaxSize {
			min = r.Size
		}
		if r.StoredBytes < min {
			t.Fatalf("size %d: stored %d bytes, below %d", r.Size, r.StoredBytes, min)
		}
		if r.Put.MBps <= 0 || r.PutRatio <= 0 || r.GetRatio <= 0 || r.Put.P99 < r.Put.P50 {
			t.Fatalf("size %d: figures %+v", r.Size, r)
		}
	}
	// The benchmark's objects are gone afterwards.
	if objs, _, err := s.List(context.Background(), "bench/", "", 0); err != nil || len(objs) != 0 {
		t.Fatalf("left %d objects (%v)", len(objs), err)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"4KiB", "200KiB", "put", "get", "ratio", "policy 4+2"} {
		if !strings.Contains(text.String(), want) {
			t.Fatalf("text report lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back PutGetReport
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Results) != 2 {
		t.Fatalf("json: %v", err)
	}
	if strings.Count(progress.String(), "\n") != 2 {
		t.Fatalf("progress %q", progress.String())
	}
	if _, err := PutGet(context.Background(), s, PutGetOptions{Mode: "sideways"}); err == nil {
		t.Fatal("bad mode accepted")
	}
}

func TestStats(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	st := stats(lat, 1e6)
	if st.P50 != 50*time.Millisecond || st.P99 != 99*time.Millisecond || st.Ops != 100 {
		t.Fatalf("%+v", st)
	}
	// 100 MB in 5.05 s.
	if st.MBps < 19.7 || st.MBps > 19.9 {
		t.Fatalf("MB/s %v", st.MBps)
	}
	if st := stats([]time.Duration{time.Second}, 1); st.P50 != time.Second || st.P99 != time.Second {
		t.Fatalf("one sample: %+v", st)
	}
}

func TestParseFormatSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "4k": 4096, "4KiB": 4096, "1MiB": 1 << 20, "64m": 64 << 20, "2GiB": 2 << 30, " 3 KB ": 3072} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "x", "-1k", "1.5MiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	if FormatSize(64<<20) != "64MiB" || FormatSize(4096) != "4KiB" || FormatSize(1000) != "1000B" {
		t.Fatal("FormatSize")
	}
}
