package healstore

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/healstore/healstore/healer/shardio"
)

// storeMetrics count what the data path does: objects written and read,
// and every shard call per backend (the healer's rebuilds included, as
// they go through the same pool). The healer's own metrics say what state
// the store is in; these say how it is being served, and which backend is
// slow or failing before the monitor declares it down. They are the
// store's own collectors (no global registry): Store.Metrics hands them
// to whoever serves /metrics (the daemon, or the application).
type storeMetrics struct {
	shardCalls   *prometheus.CounterVec
	shardSeconds *prometheus.HistogramVec
	shardBytes   *prometheus.CounterVec
	corrupt      *prometheus.CounterVec

	objectWrites     *prometheus.CounterVec
	objectWriteBytes prometheus.Counter
	objectWriteSecs  prometheus.Histogram
	objectReadBytes  prometheus.Counter
	blockReads       *prometheus.CounterVec
	hedges           prometheus.Counter
	readRepairs      prometheus.Counter
}

// Latency buckets from 250 µs (a local shard in the page cache) to 32 s
// (past the default backend call timeout of 30 s).
var latencyBuckets = prometheus.ExponentialBuckets(0.00025, 2, 18)

func newStoreMetrics() *storeMetrics {
	m := &storeMetrics{
		shardCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "healstore_backend_requests_total",
			Help: "Shard calls to each backend (put, get, sync) by result: ok, not_found, canceled (the caller gave up, as on a hedged read's laggard), error."},
			[]string{"backend", "op", "result"}),
		shardSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "healstore_backend_request_seconds",
			Help: "Time of each shard call to a backend, by op.", Buckets: latencyBuckets},
			[]string{"backend", "op"}),
		shardBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "healstore_backend_bytes_total",
			Help: "Shard bytes stored on (put) and read from (get) each backend."},
			[]string{"backend", "op"}),
		corrupt: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "healstore_backend_corrupt_shards_total",
			Help: "Shards a backend returned that failed verification against the metastore's checksum."},
			[]string{"backend"}),
		objectWrites: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "healstore_object_writes_total",
			Help: "Object writes (Put, Create and Close) by result: ok or error."}, []string{"result"}),
		objectWriteBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "healstore_object_written_bytes_total",
			Help: "Bytes of objects written and committed."}),
		objectWriteSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "healstore_object_write_seconds",
			Help: "Time from the start of an object write to its commit, or its failure.", Buckets: latencyBuckets}),
		objectReadBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "healstore_object_read_bytes_total",
			Help: "Object bytes handed to readers."}),
		blockReads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "healstore_block_reads_total",
			Help: "Blocks fetched from the backends by how: direct (the data shards) or decoded (parity stood in for a data shard missing, slow, unreachable or corrupt)."},
			[]string{"how"}),
		hedges: prometheus.NewCounter(prometheus.CounterOpts{Name: "healstore_read_hedges_total",
			Help: "Extra shard requests sent because a backend lagged (hedge_after)."}),
		readRepairs: prometheus.NewCounter(prometheus.CounterOpts{Name: "healstore_read_repairs_queued_total",
			Help: "Stripes a read found short (a shard missing or corrupt) and put on the repair queue."}),
	}
	for _, r := range []string{"ok", "error"} {
		m.objectWrites.WithLabelValues(r)
	}
	for _, h := range []string{"direct", "decoded"} {
		m.blockReads.WithLabelValues(h)
	}
	return m
}

// Describe implements prometheus.Collector.
func (m *storeMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *storeMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

func (m *storeMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.shardCalls, m.shardSeconds, m.shardBytes, m.corrupt, m.objectWrites,
		m.objectWriteBytes, m.objectWriteSecs, m.objectReadBytes, m.blockReads, m.hedges, m.readRepairs}
}

// Metrics returns the collector of the store's data path metrics (objects
// written and read, shard calls per backend: see docs/healer.md), for
// an application that serves Prometheus itself:
//
//	reg.MustRegister(store.Metrics())
//
// The daemon (and a mount run with its healer) serves them on
// healer.metrics_addr beside the healer's.
func (s *Store) Metrics() prometheus.Collector { return s.metrics }

// ObserveShard implements shardio.Observer: the pool counts every shard
// call made through it.
func (s *Store) ObserveShard(c shardio.Call) {
	m := s.metrics
	if c.Result == shardio.ResultCorrupt {
		// Its get was told already, as a good one: the backend answered.
		m.corrupt.WithLabelValues(c.Backend).Inc()
		return
	}
	m.shardCalls.WithLabelValues(c.Backend, c.Op, c.Result).Inc()
	if c.Result != shardio.ResultCanceled {
		// A call cut short by its caller says nothing of the backend's
		// speed: a hedged read's laggard would read as fast.
		m.shardSeconds.WithLabelValues(c.Backend, c.Op).Observe(c.Took.Seconds())
	}
	if c.Bytes > 0 {
		m.shardBytes.WithLabelValues(c.Backend, c.Op).Add(float64(c.Bytes))
	}
}

// objectWritten counts one object write that started at start.
func (m *storeMetrics) objectWritten(start time.Time, info *ObjectInfo, err error) {
	m.objectWriteSecs.Observe(time.Since(start).Seconds())
	if err != nil {
		m.objectWrites.WithLabelValues("error").Inc()
		return
	}
	m.objectWrites.WithLabelValues("ok").Inc()
	if info != nil {
		m.objectWriteBytes.Add(float64(info.Size))
	}
}
