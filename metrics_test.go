package healstore

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// metricSum gathers s's data path metrics and adds up the samples of the
// family name whose labels include every pair of want ("k=v").
func metricSum(t *testing.T, s *Store, name string, want ...string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Metrics())
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			ok := true
			for _, w := range want {
				k, v, _ := strings.Cut(w, "=")
				ok = ok && have[k] == v
			}
			if ok {
				total += value(m)
			}
		}
	}
	return total
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return m.GetGauge().GetValue()
}

// The store counts what its data path does: objects written (ok or not)
// and read, every shard call per backend with its outcome and time, the
// blocks that needed parity, the shards that failed verification, and
// the stripes a read queued for repair.
func TestStoreMetricsCountTheDataPath(t *testing.T) {
	s := newTestStore(t, testOpts{}) // 4+2 over 6 backends, 64 KiB blocks
	ctx := context.Background()
	const blocks = 3
	data := putRandom(t, s, "obj", blocks*testBS)
	check := func(what string, got, want float64) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	check("ok writes", metricSum(t, s, "healstore_object_writes_total", "result=ok"), 1)
	check("written bytes", metricSum(t, s, "healstore_object_written_bytes_total"), blocks*testBS)
	check("write times", metricSum(t, s, "healstore_object_write_seconds"), 1)
	check("shard puts", metricSum(t, s, "healstore_backend_requests_total", "op=put", "result=ok"), blocks*6)
	check("timed shard puts", metricSum(t, s, "healstore_backend_request_seconds", "op=put"), blocks*6)
	if n := metricSum(t, s, "healstore_backend_requests_total", "op=sync", "result=ok"); n < 6 {
		t.Errorf("%v syncs for a write to 6 backends", n)
	}
	var shardBytes float64
	for _, st := range stripesOf(t, s, "obj") {
		for _, sh := range st.Shards {
			b, _ := s.Backend(sh.Backend)
			n, err := b.Stat(ctx, sh.Key)
			if err != nil {
				t.Fatal(err)
			}
			shardBytes += float64(n)
		}
	}
	check("put shard bytes", metricSum(t, s, "healstore_backend_bytes_total", "op=put"), shardBytes)

	if !bytes.Equal(readAll(t, s, "obj"), data) {
		t.Fatal("read back differs")
	}
	check("read bytes", metricSum(t, s, "healstore_object_read_bytes_total"), blocks*testBS)
	check("direct block reads", metricSum(t, s, "healstore_block_reads_total", "how=direct"), blocks)
	check("decoded block reads", metricSum(t, s, "healstore_block_reads_total", "how=decoded"), 0)
	check("shard gets", metricSum(t, s, "healstore_backend_requests_total", "op=get", "result=ok"), blocks*4)

	// A flipped data shard: its block is decoded from parity, the shard
	// counts as corrupt on its backend, the stripe goes on the queue.
	flipShard(t, s, "obj", 1, 2)
	bad := stripesOf(t, s, "obj")[1].Shards[2].Backend
	if !bytes.Equal(readAll(t, s, "obj"), data) {
		t.Fatal("read back differs")
	}
	check("decoded block reads", metricSum(t, s, "healstore_block_reads_total", "how=decoded"), 1)
	check("direct block reads", metricSum(t, s, "healstore_block_reads_total", "how=direct"), 2*blocks-1)
	check("corrupt shards on "+bad, metricSum(t, s, "healstore_backend_corrupt_shards_total", "backend="+bad), 1)
	check("corrupt shards", metricSum(t, s, "healstore_backend_corrupt_shards_total"), 1)
	check("read repairs", metricSum(t, s, "healstore_read_repairs_queued_total"), 1)

	// A lost shard: its get is not found.
	st := stripesOf(t, s, "obj")[0]
	b, _ := s.Backend(st.Shards[0].Backend)
	if err := b.Delete(ctx, st.Shards[0].Key); err != nil {
		t.Fatal(err)
	}
	readAll(t, s, "obj")
	check("not found on "+st.Shards[0].Backend, metricSum(t, s, "healstore_backend_requests_total",
		"backend="+st.Shards[0].Backend, "op=get", "result=not_found"), 1)

	// A failed write counts as one, and adds no bytes.
	cctx, cancel := context.WithCancelCause(ctx)
	cancel(errors.New("the caller gave up"))
	if _, err := s.Put(cctx, "never", bytes.NewReader(make([]byte, 2*testBS))); err == nil {
		t.Fatal("put under a cancelled context succeeded")
	}
	check("failed writes", metricSum(t, s, "healstore_object_writes_total", "result=error"), 1)
	check("written bytes", metricSum(t, s, "healstore_object_written_bytes_total"), blocks*testBS)
}
