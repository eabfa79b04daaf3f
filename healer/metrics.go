package healer

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/healstore/healstore/healer/plan"
	"github.com/healstore/healstore/metastore"
)

func isNotFound(err error) bool { return errors.Is(err, metastore.ErrNotFound) }

// metrics are the healer's Prometheus collectors, on a private registry
// (no globals: several healers in one process, as tests run them, do not
// collide).
type metrics struct {
	reg *prometheus.Registry

	backendState *prometheus.GaugeVec
	stripes      *prometheus.GaugeVec
	degraded     prometheus.Gauge
	bytesAtRisk  prometheus.Gauge
	worstMargin  prometheus.Gauge
	misplaced    prometheus.Gauge
	queueDepth   prometheus.Gauge
	queueOldest  prometheus.Gauge

	writtenBytes prometheus.Counter
	readBytes    prometheus.Counter
	repairs      *prometheus.CounterVec

	scrubProgress *prometheus.GaugeVec
	scrubbed      *prometheus.CounterVec
	scrubFindings *prometheus.CounterVec

	provisioned       *prometheus.CounterVec
	provisionFailures prometheus.Counter
	replacements      *prometheus.CounterVec
	wiped             prometheus.Counter
	gcDeleted         prometheus.Counter
}

var allStates = []plan.State{plan.Up, plan.Suspect, plan.Down, plan.Draining, plan.Retired, plan.Replaced}

func newMetrics(reg *prometheus.Registry, h *Healer) *metrics {
	m := &metrics{reg: reg}
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m.backendState = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "healstore_backend_state",
		Help: "1 for the state each backend is in, 0 for the others."}, []string{"backend", "state"})
	m.stripes = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "healstore_stripes",
		Help: "Stripes by margin (readable shards minus k) at the last census."}, []string{"margin"})
	m.degraded = prometheus.NewGauge(prometheus.GaugeOpts{Name: "healstore_degraded_stripes",
		Help: "Stripes below full redundancy at the last census."})
	m.bytesAtRisk = prometheus.NewGauge(prometheus.GaugeOpts{Name: "healstore_bytes_at_risk",
		Help: "Data bytes in stripes below full redundancy at the last census."})
	m.worstMargin = prometheus.NewGauge(prometheus.GaugeOpts{Name: "healstore_worst_margin",
		Help: "Lowest stripe margin at the last census (m when all is well)."})
	m.misplaced = prometheus.NewGauge(prometheus.GaugeOpts{Name: "healstore_misplaced_stripes",
		Help: "Stripes with two shards in one failure domain at the last census."})
	m.queueDepth = prometheus.NewGauge(prometheus.GaugeOpts{Name: "healstore_repair_queue_depth",
		Help: "Stripes on the repair queue."})
	m.queueOldest = prometheus.NewGauge(prometheus.GaugeOpts{Name: "healstore_repair_queue_oldest_seconds",
		Help: "Age of the oldest repair queue entry."})
	m.writtenBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "healstore_rebuild_written_bytes_total",
		Help: "Bytes of rebuilt shards written."})
	m.readBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "healstore_rebuild_read_bytes_total",
		Help: "Bytes of shards read to rebuild others."})
	m.repairs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "healstore_repairs_total",
		Help: "Repair attempts by outcome (repaired, noop, failed)."}, []string{"outcome"})
	m.scrubProgress = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "healstore_scrub_progress_ratio",
		Help: "Part of the current scrub pass done, by pass (light, deep)."}, []string{"pass"})
	m.scrubbed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "healstore_scrub_stripes_total",
		Help: "Stripes scrubbed, by pass."}, []string{"pass"})
	m.scrubFindings = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "healstore_scrub_findings_total",
		Help: "Scrub findings by kind (missing, corrupt, misplaced)."}, []string{"kind"})
	m.provisioned = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "healstore_provisioned_backends_total",
		Help: "Backends provisioned, by provisioner."}, []string{"provisioner"})
	m.provisionFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "healstore_provision_failures_total",
		Help: "Provisioning rounds in which no provisioner could deliver."})
	m.replacements = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "healstore_replacements_total",
		Help: "Down backends replaced, by how (spare, provisioned)."}, []string{"how"})
	m.wiped = prometheus.NewCounter(prometheus.CounterOpts{Name: "healstore_backend_wipes_total",
		Help: "Backends found wiped (identity marker missing or foreign)."})
	m.gcDeleted = prometheus.NewCounter(prometheus.CounterOpts{Name: "healstore_gc_deleted_shards_total",
		Help: "Garbage shards deleted."})
	for _, c := range []prometheus.Collector{m.backendState, m.stripes, m.degraded, m.bytesAtRisk, m.worstMargin,
		m.misplaced, m.queueDepth, m.queueOldest, m.writtenBytes, m.readBytes, m.repairs, m.scrubProgress,
		m.scrubbed, m.scrubFindings, m.provisioned, m.provisionFailures, m.replacements, m.wiped, m.gcDeleted} {
		f(c)
	}
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "healstore_rebuild_bytes_per_second",
		Help: "Rebuilt bytes written per second over the last 10 s."}, func() float64 {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.rates.rate(h.now())
	}))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "healstore_rebuild_workers",
		Help: "Configured concurrent repairs."}, func() float64 { return float64(h.workerCount()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "healstore_rebuild_rate_limit_bytes",
		Help: "Rebuild I/O cap in bytes per second (0 = none)."}, func() float64 { return float64(h.limiter.Rate()) }))
	for _, o := range []Outcome{Repaired, NoOp, Failed} {
		m.repairs.WithLabelValues(string(o))
	}
	return m
}

// observeBackends sets the per-backend state gauges.
func (m *metrics) observeBackends(h *Healer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m.backendState.Reset()
	for name, mem := range h.members {
		for _, s := range allStates {
			v := 0.0
			if mem.health.State == s {
				v = 1
			}
			m.backendState.WithLabelValues(name, string(s)).Set(v)
		}
	}
}

// observeCensus sets the gauges a census feeds.
func (m *metrics) observeCensus(c *Census) {
	m.stripes.Reset()
	for margin, n := range c.Margins {
		m.stripes.WithLabelValues(strconv.Itoa(margin)).Set(float64(n))
	}
	m.degraded.Set(float64(c.Degraded))
	m.bytesAtRisk.Set(float64(c.BytesAtRisk))
	m.worstMargin.Set(float64(c.WorstMargin))
	m.misplaced.Set(float64(c.Misplaced))
	m.queueDepth.Set(float64(c.QueueDepth))
	m.queueOldest.Set(c.QueueOldest.Seconds())
}
