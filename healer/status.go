package healer

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/healstore/healstore/healer/plan"
	"github.com/healstore/healstore/metastore"
)

// Census is one full pass over the stripes: how healthy they are, counted
// from the metastore and the monitor's view of the backends.
type Census struct {
	Time    time.Time `json:"time"`
	Stripes int       `json:"stripes"`
	// Margins counts stripes by margin (healthy shards minus k; a shard
	// the repair queue records lost is not healthy).
	Margins map[int]int `json:"margins"`
	// Degraded counts stripes below full redundancy; BytesAtRisk is their
	// data bytes.
	Degraded    int   `json:"degraded"`
	BytesAtRisk int64 `json:"bytes_at_risk"`
	// Unreadable counts stripes below margin 0 (fewer than k healthy
	// shards): their data cannot be read until a shard comes back.
	Unreadable int `json:"unreadable"`
	// WorstMargin is the lowest margin seen (the policy's m when all is well,
	// 0 for an empty store).
	WorstMargin int `json:"worst_margin"`
	// Misplaced counts stripes with two shards in one failure domain.
	Misplaced int `json:"misplaced"`
	// Shards counts shard locations per backend.
	Shards map[string]int `json:"shards"`
	// QueueDepth and QueueOldest describe the repair queue;
	// RemainingBytes estimates the shard bytes its entries still need
	// rebuilt.
	QueueDepth     int           `json:"queue_depth"`
	QueueOldest    time.Duration `json:"queue_oldest"`
	RemainingBytes int64         `json:"remaining_bytes"`
}

// TakeCensus scans every stripe and the repair queue, and updates the
// census metrics. A shard counts as healthy only if its backend is usable
// and the queue does not record it lost (see QueueLosses). The queue is
// read once and looked up per stripe: the cost is one pass over each.
func (h *Healer) TakeCensus(ctx context.Context) (*Census, error) {
	views := h.views()
	c := &Census{Time: h.now(), Margins: map[int]int{}, Shards: map[string]int{}}
	items, err := h.meta.Queue(ctx, 0)
	if err != nil {
		return nil, err
	}
	losses := NewQueueLosses()
	for _, it := range items {
		losses.Add(it)
	}
	first := true
	err = h.meta.ScanStripes(ctx, [16]byte{}, func(st *metastore.Stripe) error {
		c.Stripes++
		v := view(st)
		for i, lost := range losses.Lost(st) {
			if lost {
				v.Shards[i].Bad = true
			}
		}
		d := plan.Stripe(v, views)
		c.Margins[d.Margin]++
		if d.Degraded(st.M) {
			c.Degraded++
			c.BytesAtRisk += int64(st.DataLen)
		}
		if d.Margin < 0 {
			c.Unreadable++
		}
		if len(d.Misplaced) > 0 {
			c.Misplaced++
		}
		if first || d.Margin < c.WorstMargin {
			c.WorstMargin = d.Margin
			first = false
		}
		var size int64
		for _, l := range st.Shards {
			if l.Backend != "" {
				c.Shards[l.Backend]++
			}
			size = max(size, l.Size)
		}
		if losses.Queued(st.ID) {
			// Shards known missing or corrupt are estimated alike: each
			// costs one shard of the stripe's size to rebuild.
			c.RemainingBytes += size * int64(len(d.Rebuild))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.QueueDepth = len(items)
	for _, it := range items {
		if age := c.Time.Sub(it.Queued); age > c.QueueOldest {
			c.QueueOldest = age
		}
	}
	h.mu.Lock()
	h.census = c
	h.mu.Unlock()
	h.metrics.observeCensus(c)
	h.metrics.observeBackends(h)
	return c, nil
}

// QueueLosses gathers what repair queue entries know about lost shards
// that the stripe records still name: shards a read, a write or a failed
// repair found missing or corrupt, and backends found wiped (an entry
// names the backend; its shards stay recorded until rebuilt). The census
// and the store's Stat count those shards as lost, so neither claims more
// redundancy than the queue knows of.
//
// An entry names every backend found wiped under the stripe (the monitor
// joins them); a backend any added entry names wiped also counts as wiped
// for every other queued stripe, in case a finding is not yet recorded.
// What an entry knows holds until the stripe is repaired (and dequeued);
// until the next attempt it may count a shard rebuilt by a partial repair
// as still lost.
type QueueLosses struct {
	entries map[[16]byte][]int // stripe -> shard indices found lost
	wiped   map[string]bool
}

// NewQueueLosses returns an empty set; Add the entries to consult.
func NewQueueLosses() *QueueLosses {
	return &QueueLosses{entries: map[[16]byte][]int{}, wiped: map[string]bool{}}
}

// Add takes in one queue entry.
func (q *QueueLosses) Add(it metastore.RepairItem) {
	q.entries[it.Stripe] = append(q.entries[it.Stripe], lostShards(it)...)
	for _, name := range wipedBackends(it.Reason) {
		q.wiped[name] = true
	}
}

// Queued reports whether an added entry is for the stripe.
func (q *QueueLosses) Queued(id [16]byte) bool {
	_, ok := q.entries[id]
	return ok
}

// Lost reports, by shard index, which shards of st the added entries
// record as lost: named missing or corrupt by its entry, or placed on a
// backend found wiped. It is nil for a stripe with no entry.
func (q *QueueLosses) Lost(st *metastore.Stripe) []bool {
	idx, ok := q.entries[st.ID]
	if !ok {
		return nil
	}
	lost := make([]bool, len(st.Shards))
	for _, i := range idx {
		if i >= 0 && i < len(lost) {
			lost[i] = true
		}
	}
	for i, l := range st.Shards {
		if l.Backend != "" && q.wiped[l.Backend] {
			lost[i] = true
		}
	}
	return lost
}

// lostShards returns the shard indices a queue entry records as missing
// or corrupt. They are spelled in its reason by the writer ("written
// degraded: shards [1 4] did not land"), the reader ("read found shards
// missing [2], corrupt [0]") and the scrubber ("scrub: shards [1] missing,
// [3] corrupt"), and in the last failed attempt's error by the rebuilder
// (RepairError, shardio.TooFewError: "missing [..]", "corrupt [..]").
// A failure after a partial commit ("shards [..] did not land") names
// shards as they were before it, so its lists are left out.
func lostShards(it metastore.RepairItem) []int {
	var out []int
	// A reason may join several causes with "; " (healer.wiped).
	for _, r := range strings.Split(it.Reason, "; ") {
		if rest, ok := strings.CutPrefix(r, "written degraded: shards "); ok {
			out = append(out, leadingList(rest)...)
		}
		if rest, ok := strings.CutPrefix(r, "scrub: shards "); ok && strings.Contains(rest, " missing, ") {
			out = append(out, leadingList(rest)...)
			if _, after, ok := strings.Cut(rest, " missing, "); ok {
				out = append(out, leadingList(after)...)
			}
		}
		out = append(out, listsAfter(r, "missing ", "corrupt ")...)
	}
	if !strings.Contains(it.LastError, " did not land: ") {
		out = append(out, listsAfter(it.LastError, "missing ", "corrupt ")...)
	}
	return out
}

// listsAfter parses every "<word>[1 2 3]" in s for each word.
func listsAfter(s string, words ...string) []int {
	var out []int
	for _, w := range words {
		for rest := s; ; {
			i := strings.Index(rest, w+"[")
			if i < 0 {
				break
			}
			rest = rest[i+len(w):]
			out = append(out, leadingList(rest)...)
		}
	}
	return out
}

// leadingList parses the "[1 2 3]" s starts with (as fmt prints an
// []int); nil when s does not start with one.
func leadingList(s string) []int {
	if !strings.HasPrefix(s, "[") {
		return nil
	}
	end := strings.IndexByte(s, ']')
	if end < 0 {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(s[1:end]) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil
		}
		out = append(out, n)
	}
	return out
}

func (h *Healer) censusLoop(ctx context.Context) {
	for {
		if _, err := h.TakeCensus(ctx); err != nil && ctx.Err() == nil {
			h.log.Warn("census failed", "err", err)
		}
		if !sleep(ctx, h.cfg.CensusInterval.D()) {
			return
		}
	}
}

// Status is the healer's report: what `healstore status --json` prints and
// the daemon's /status serves.
type Status struct {
	StoreID  string          `json:"store_id"`
	Time     time.Time       `json:"time"`
	Backends []BackendStatus `json:"backends"`
	Stripes  int             `json:"stripes"`
	// DegradedStripes counts stripes below full redundancy.
	DegradedStripes int `json:"degraded_stripes"`
	// UnreadableStripes counts stripes with fewer than k healthy shards.
	UnreadableStripes int `json:"unreadable_stripes"`
	// Margins counts stripes by margin; keys are decimal margins.
	Margins     map[string]int           `json:"margins"`
	WorstMargin int                      `json:"worst_margin"`
	BytesAtRisk int64                    `json:"bytes_at_risk"`
	Misplaced   int                      `json:"misplaced_stripes"`
	Queue       QueueStatus              `json:"queue"`
	Repairs     RepairStatus             `json:"repairs"`
	Scrub       map[string]ScrubProgress `json:"scrub"`
	Settings    Settings                 `json:"settings"`
}

// BackendStatus is one backend's line in the status.
type BackendStatus struct {
	Name          string    `json:"name"`
	Kind          string    `json:"kind"`
	State         string    `json:"state"`
	Domain        string    `json:"domain"`
	Spare         bool      `json:"spare"`
	Since         time.Time `json:"since"`
	LastProbe     time.Time `json:"last_probe,omitzero"`
	ProbeFailures int       `json:"probe_failures"`
	LastError     string    `json:"last_error,omitempty"`
	CapacityKnown bool      `json:"capacity_known"`
	Used          int64     `json:"used"`
	Free          int64     `json:"free"`
	Limit         int64     `json:"limit"`
	// Device names the file system the capacity is of, when backends may
	// share one (see backends.Capacity): count each Device's Free once.
	// With a quota there, DeviceFree and DeviceTotal are the file
	// system's figures (backends.SpaceSum).
	Device      string `json:"device,omitempty"`
	DeviceFree  int64  `json:"device_free,omitempty"`
	DeviceTotal int64  `json:"device_total,omitempty"`
	// Shards held, as the metastore records them.
	Shards int `json:"shards"`
}

// QueueStatus describes the repair queue.
type QueueStatus struct {
	Depth            int     `json:"depth"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	RemainingBytes   int64   `json:"remaining_bytes"`
	// RateBytesPerSec is the rebuild rate over the last 10 s.
	RateBytesPerSec float64 `json:"rate_bytes_per_sec"`
	// ETASeconds is RemainingBytes at that rate; -1 when there is work but
	// no measured rate yet.
	ETASeconds float64      `json:"eta_seconds"`
	Head       []QueueEntry `json:"head,omitempty"`
}

// QueueEntry is one repair queue entry.
type QueueEntry struct {
	Stripe    string    `json:"stripe"`
	Margin    int       `json:"margin"`
	Reason    string    `json:"reason"`
	Queued    time.Time `json:"queued"`
	Attempts  int       `json:"attempts,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
}

// RepairStatus totals the rebuilder's work since the healer started.
type RepairStatus struct {
	Repaired     int64 `json:"repaired"`
	NoOp         int64 `json:"noop"`
	Failed       int64 `json:"failed"`
	BytesWritten int64 `json:"bytes_written"`
	BytesRead    int64 `json:"bytes_read"`
	// ReadAmplification is bytes read per byte rebuilt (k for a classic
	// Reed-Solomon repair of one shard).
	ReadAmplification float64         `json:"read_amplification"`
	LastFailures      []RepairFailure `json:"last_failures,omitempty"`
}

// Settings are the healer's knobs that change at run time.
type Settings struct {
	Workers   int    `json:"workers"`
	RateLimit int64  `json:"rate_limit"`
	Grace     string `json:"grace"`
}

// Repairs returns the rebuilder's running totals, cheaply (no census).
func (h *Healer) Repairs() RepairStatus {
	h.mu.Lock()
	st := h.stats
	h.mu.Unlock()
	r := RepairStatus{Repaired: st.repaired, NoOp: st.noop, Failed: st.failed,
		BytesWritten: st.bytesWritten, BytesRead: st.bytesRead, LastFailures: append([]RepairFailure(nil), st.lastFailures...)}
	if st.bytesWritten > 0 {
		r.ReadAmplification = float64(st.bytesRead) / float64(st.bytesWritten)
	}
	return r
}

// memberStatus describes member m, which holds shards. Called with h.mu
// held.
func (h *Healer) memberStatus(name string, m *member, shards int) BackendStatus {
	return BackendStatus{
		Name: name, Kind: m.spec.Kind, State: string(m.health.State), Domain: m.spec.Domain(h.cfg.Level),
		Spare: m.rec.Spare, Since: m.health.Since, LastProbe: m.rec.LastProbe,
		ProbeFailures: m.health.Failures, LastError: m.rec.LastError,
		CapacityKnown: m.rec.Capacity.Known, Used: m.rec.Capacity.Used, Free: m.rec.Capacity.Free,
		Limit: m.rec.Capacity.Limit, Device: m.probed.Device, DeviceFree: m.probed.DeviceFree, DeviceTotal: m.probed.DeviceTotal, Shards: shards,
	}
}

// Backend returns what Status says of one backend, with its shards
// counted from the metastore's index of that backend (the stripes holding
// a shard there) rather than a census of every stripe of the store: cheap
// enough to follow a drain by. An unknown name is metastore.ErrNotFound.
func (h *Healer) Backend(ctx context.Context, name string) (*BackendStatus, error) {
	shards, err := h.meta.CountStripesOnBackend(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("backend %s: count its shards: %w", name, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.members[name]
	if !ok {
		return nil, fmt.Errorf("backend %s: %w", name, metastore.ErrNotFound)
	}
	bs := h.memberStatus(name, m, shards)
	return &bs, nil
}

// Status takes a fresh census and reports backends, stripes by margin, the
// queue with rate and ETA, repair totals and scrub progress.
func (h *Healer) Status(ctx context.Context) (*Status, error) {
	c, err := h.TakeCensus(ctx)
	if err != nil {
		return nil, err
	}
	head, err := h.meta.Queue(ctx, 10)
	if err != nil {
		return nil, err
	}
	s := &Status{
		StoreID: h.id, Time: c.Time, Stripes: c.Stripes, DegradedStripes: c.Degraded, UnreadableStripes: c.Unreadable,
		Margins: map[string]int{}, WorstMargin: c.WorstMargin, BytesAtRisk: c.BytesAtRisk,
		Misplaced: c.Misplaced, Scrub: map[string]ScrubProgress{},
	}
	for m, n := range c.Margins {
		s.Margins[strconv.Itoa(m)] = n
	}
	h.mu.Lock()
	for name, m := range h.members {
		s.Backends = append(s.Backends, h.memberStatus(name, m, c.Shards[name]))
	}
	rate := h.rates.rate(h.now())
	for pass, p := range h.scrubs {
		s.Scrub[pass] = *p
	}
	s.Settings = Settings{Workers: h.workers, Grace: h.cfg.Grace.String()}
	h.mu.Unlock()
	s.Settings.RateLimit = h.limiter.Rate()
	for pass := range map[string]bool{"light": true, "deep": true} {
		if _, ok := s.Scrub[pass]; ok {
			continue
		}
		// Not run in this process: report the saved progress, if any.
		if raw, err := h.meta.GetMeta(ctx, scrubMeta(pass)); err == nil {
			var p ScrubProgress
			if json.Unmarshal(raw, &p) == nil {
				s.Scrub[pass] = p
			}
		}
	}
	sort.Slice(s.Backends, func(i, j int) bool { return s.Backends[i].Name < s.Backends[j].Name })
	s.Queue = QueueStatus{Depth: c.QueueDepth, OldestAgeSeconds: c.QueueOldest.Seconds(),
		RemainingBytes: c.RemainingBytes, RateBytesPerSec: rate}
	switch {
	case c.RemainingBytes == 0:
		s.Queue.ETASeconds = 0
	case rate > 0:
		s.Queue.ETASeconds = float64(c.RemainingBytes) / rate
	default:
		s.Queue.ETASeconds = -1
	}
	for _, it := range head {
		s.Queue.Head = append(s.Queue.Head, QueueEntry{
			Stripe: hex.EncodeToString(it.Stripe[:]), Margin: it.Margin, Reason: it.Reason, Queued: it.Queued,
			Attempts: it.Attempts, LastError: it.LastError, NotBefore: it.NotBefore,
		})
	}
	s.Repairs = h.Repairs()
	return s, nil
}
