package healer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/metastore"
)

// gauge reads one sample from the healer's registry.
func gauge(t *testing.T, h *Healer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := h.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				if !hasLabel(m, k, v) {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			}
		}
	}
	return 0, false
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}

// The metrics and the status agree with the state counted independently
// from the metastore and the backends.
func TestMetricsAndStatusMatchState(t *testing.T) {
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: Duration(time.Hour), SuspectAfter: 1}})
	ctx := context.Background()
	e.fill(20, 40<<10)
	e.probe()
	e.kill("b1")
	e.probe()
	// Forget one shard of a stripe not on b1, so one stripe sits at margin 1
	// for another reason too.
	var other *metastore.Stripe
	for _, st := range e.stripes() {
		on := false
		for _, l := range st.Shards {
			on = on || l.Backend == "b1"
		}
		if !on {
			other = st
			break
		}
	}
	if other == nil {
		t.Fatal("every stripe touches b1")
	}
	if err := e.h.clearShards(ctx, other.ID, func(i int, _ metastore.ShardLoc) bool { return i == 0 }, true, "test"); err != nil {
		t.Fatal(err)
	}

	// Count by hand.
	margins := map[int]int{}
	degraded := 0
	var atRisk int64
	perBackend := map[string]int{}
	all := e.stripes()
	for _, st := range all {
		ok := 0
		for _, l := range st.Shards {
			if l.Backend != "" {
				perBackend[l.Backend]++
			}
			if l.Backend != "" && l.Backend != "b1" {
				ok++
			}
		}
		margins[ok-st.K]++
		if ok < st.K+st.M {
			degraded++
			atRisk += int64(st.DataLen)
		}
	}
	if degraded == 0 {
		t.Fatal("nothing degraded")
	}

	s, err := e.h.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Stripes != len(all) || s.DegradedStripes != degraded || s.BytesAtRisk != atRisk || s.WorstMargin != 1 {
		t.Fatalf("status stripes %d degraded %d risk %d worst %d; counted %d %d %d", s.Stripes, s.DegradedStripes, s.BytesAtRisk, s.WorstMargin, len(all), degraded, atRisk)
	}
	for m, n := range margins {
		if s.Margins[strconv.Itoa(m)] != n {
			t.Fatalf("status margins %v, counted %v", s.Margins, margins)
		}
		if g, _ := gauge(t, e.h, "healstore_stripes", map[string]string{"margin": strconv.Itoa(m)}); int(g) != n {
			t.Fatalf("healstore_stripes{margin=%d} = %v, counted %d", m, g, n)
		}
	}
	if g, _ := gauge(t, e.h, "healstore_degraded_stripes", nil); int(g) != degraded {
		t.Fatalf("degraded gauge %v, counted %d", g, degraded)
	}
	if g, _ := gauge(t, e.h, "healstore_bytes_at_risk", nil); int64(g) != atRisk {
		t.Fatalf("bytes at risk gauge %v, counted %d", g, atRisk)
	}
	if q := e.queue(); len(q) != s.Queue.Depth || len(q) != 1 {
		t.Fatalf("queue depth %d, status says %d", len(q), s.Queue.Depth)
	}
	if g, _ := gauge(t, e.h, "healstore_repair_queue_depth", nil); int(g) != 1 {
		t.Fatalf("queue depth gauge %v", g)
	}
	if s.Queue.RemainingBytes != other.Shards[0].Size || s.Queue.ETASeconds != -1 {
		t.Fatalf("remaining %d eta %v, want %d and unknown", s.Queue.RemainingBytes, s.Queue.ETASeconds, other.Shards[0].Size)
	}
	for _, b := range s.Backends {
		want := "up"
		if b.Name == "b1" {
			want = "suspect"
		}
		if b.State != want || b.Shards != perBackend[b.Name] {
			t.Fatalf("backend %+v, want state %s and %d shards", b, want, perBackend[b.Name])
		}
		if g, _ := gauge(t, e.h, "healstore_backend_state", map[string]string{"backend": b.Name, "state": want}); g != 1 {
			t.Fatalf("state gauge of %s/%s = %v", b.Name, want, g)
		}
		if g, _ := gauge(t, e.h, "healstore_backend_state", map[string]string{"backend": b.Name, "state": "down"}); g != 0 {
			t.Fatalf("%s reported down", b.Name)
		}
	}

	// Repairs move the counters by what the backends saw.
	r0, w0 := e.io()
	rep := e.repairAll()
	r1, w1 := e.io()
	if rep.Repaired != 1 {
		t.Fatalf("repair %+v", rep)
	}
	if g, _ := gauge(t, e.h, "healstore_rebuild_written_bytes_total", nil); int64(g) != w1-w0 {
		t.Fatalf("written counter %v, backends saw %d", g, w1-w0)
	}
	if g, _ := gauge(t, e.h, "healstore_rebuild_read_bytes_total", nil); int64(g) != r1-r0 {
		t.Fatalf("read counter %v, backends saw %d", g, r1-r0)
	}
	if g, _ := gauge(t, e.h, "healstore_repairs_total", map[string]string{"outcome": "repaired"}); g != 1 {
		t.Fatalf("repairs counter %v", g)
	}
	if g, _ := gauge(t, e.h, "healstore_rebuild_bytes_per_second", nil); g <= 0 {
		t.Fatalf("rate gauge %v after a repair", g)
	}
}

// The HTTP handler serves metrics, status (with the fields scripts rely
// on) and the operator's actions.
func TestHTTPHandler(t *testing.T) {
	e, _, srv, _ := servedEnv(t, 8, 30<<10)
	do := func(method, path, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set(ClientHeader, "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	e.kill("b6")
	if code, _ := do("POST", "/v1/probe", ""); code != 200 {
		t.Fatalf("probe %d", code)
	}
	code, body := do("GET", "/status", "")
	if code != 200 {
		t.Fatalf("status %d %s", code, body)
	}
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	bs, _ := raw["backends"].([]any)
	if len(bs) != 7 {
		t.Fatalf("backends %v", raw["backends"])
	}
	for _, b := range bs {
		m := b.(map[string]any)
		if m["name"] == "b6" && m["state"] != "down" {
			t.Fatalf("b6 state %v", m["state"])
		}
	}
	degraded, ok := raw["degraded_stripes"].(float64)
	if !ok || degraded != float64(e.onBackend("b6")) {
		t.Fatalf("degraded_stripes %v, b6 holds %d", raw["degraded_stripes"], e.onBackend("b6"))
	}
	code, body = do("GET", "/metrics", "")
	if code != 200 || !bytes.Contains(body, []byte(`healstore_backend_state{backend="b6",state="down"} 1`)) {
		t.Fatalf("metrics %d:\n%s", code, body)
	}
	code, body = do("PUT", "/v1/settings", `{"workers":3,"rate_limit":1000000}`)
	if code != 200 || e.h.Config().Workers != 3 || e.h.Config().RateLimit != 1000000 {
		t.Fatalf("settings %d %s", code, body)
	}
	if code, _ := do("PUT", "/v1/settings", `{"rate_limit":-1}`); code != 400 {
		t.Fatalf("negative rate accepted: %d", code)
	}
	code, body = do("POST", "/v1/heal", "")
	var rep RepairReport
	if code != 200 || json.Unmarshal(body, &rep) != nil || rep.Repaired == 0 || rep.Remaining != 0 {
		t.Fatalf("heal %d %s", code, body)
	}
	code, body = do("POST", "/v1/scrub?deep=1", "")
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	var last ScrubProgress
	if code != 200 || json.Unmarshal([]byte(lines[len(lines)-1]), &last) != nil || last.Finished.IsZero() || last.Pass != "deep" {
		t.Fatalf("scrub %d %s", code, body)
	}
	if code, body = do("POST", "/v1/heal?object=obj-001", ""); code != 200 {
		t.Fatalf("heal object %d %s", code, body)
	}
	if code, _ = do("POST", "/v1/heal?object=nope", ""); code != 404 {
		t.Fatalf("heal of a missing object: %d", code)
	}
	if code, body = do("POST", "/v1/gc", ""); code != 200 {
		t.Fatalf("gc %d %s", code, body)
	}
	spec := backends.Spec{Name: "added", Kind: backends.KindLocal, Path: e.dir + "/added", Node: "added"}
	sb, _ := json.Marshal(map[string]any{"spec": spec})
	if code, body = do("POST", "/v1/backends", string(sb)); code != 200 || e.state("added") != metastore.StateUp {
		t.Fatalf("add %d %s", code, body)
	}
	if code, body = do("POST", "/v1/backends/b0/drain", ""); code != 200 || e.state("b0") != metastore.StateDraining {
		t.Fatalf("drain %d %s", code, body)
	}
	// An operator's mistake, not the server's: 409 saying to drain first.
	if code, body = do("DELETE", "/v1/backends/b1", ""); code != 409 || !strings.Contains(string(body), "backend_not_empty") {
		t.Fatalf("removing a backend with shards: %d %s; want 409 backend_not_empty", code, body)
	}
}

// The queue survives a restart (invariant 5): a new healer on the same
// metastore picks the work up where the old one left it.
func TestRestartResumesQueue(t *testing.T) {
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: 0, SuspectAfter: 1}})
	objs := e.fill(20, 30<<10)
	e.probe()
	e.kill("b3")
	e.probe()
	queued := len(e.queue())
	if queued == 0 {
		t.Fatal("nothing queued")
	}
	// The first healer repairs a few, then "dies".
	items := e.queue()
	for _, it := range items[:3] {
		if o, err := e.h.Repair(context.Background(), it); o != Repaired {
			t.Fatalf("repair: %v %v", o, err)
		}
	}
	id, _ := e.meta.StoreID(context.Background())
	h2, err := New(context.Background(), Config{Grace: 0, SuspectAfter: 1}, Deps{
		Meta: e.meta, Pool: e, Codec: StripeCodecs(), Register: e.register, StoreID: id,
	})
	if err != nil {
		t.Fatal(err)
	}
	if h2.views()["b3"].State != "down" {
		t.Fatal("restarted healer forgot b3 is down")
	}
	rep, err := h2.RepairAll(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Repaired != queued-3 || rep.NoOp != 0 {
		t.Fatalf("restarted healer did %+v, want the %d left", rep, queued-3)
	}
	e.checkObjects(objs)
}

// censusTruth counts each stripe's margin from what the backends really
// hold: a shard is healthy when its backend returns bytes that verify
// against the recorded checksum.
func censusTruth(t *testing.T, e *env) map[int]int {
	t.Helper()
	ctx := context.Background()
	margins := map[int]int{}
	for _, st := range e.stripes() {
		ok := 0
		for i, l := range st.Shards {
			if l.Backend == "" {
				continue
			}
			data, err := e.sw(l.Backend).Backend.Get(ctx, l.Key)
			if err == nil && e.enc.VerifyShard(encoder.StripeID(st.ID), i, data, l.Sum) == nil {
				ok++
			}
		}
		margins[ok-st.K]++
	}
	return margins
}

func checkCensus(t *testing.T, c *Census, want map[int]int, k, m int) {
	t.Helper()
	worst, degraded, unreadable := m, 0, 0
	for margin, n := range want {
		worst = min(worst, margin)
		if margin < m {
			degraded += n
		}
		if margin < 0 {
			unreadable += n
		}
	}
	if len(c.Margins) != len(want) || c.WorstMargin != worst || c.Degraded != degraded || c.Unreadable != unreadable {
		t.Fatalf("census margins %v worst %d degraded %d unreadable %d; the backends hold margins %v (worst %d, %d degraded, %d unreadable)",
			c.Margins, c.WorstMargin, c.Degraded, c.Unreadable, want, worst, degraded, unreadable)
	}
	for margin, n := range want {
		if c.Margins[margin] != n {
			t.Fatalf("census margins %v; the backends hold %v", c.Margins, want)
		}
	}
}

// More than m backends of a 4+2 store wiped at once: every stripe lost
// three shards and cannot be read. Once the rebuilder has tried the
// stripes, the census says so (it used to take one wiped backend per
// entry and report margin 1 for everything).
func TestCensusSeesSeveralWipedBackends(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour)}})
	e.fill(12, 64<<10)
	e.probe()
	for _, name := range []string{"b0", "b1", "b2"} {
		e.wipe(name)
	}
	e.probe()
	if rep := e.repairAll(); rep.Repaired != 0 {
		t.Fatalf("repaired %d stripes with three of six shards gone", rep.Repaired)
	}
	want := censusTruth(t, e)
	if len(want) != 1 || want[-1] == 0 {
		t.Fatalf("the backends hold margins %v, want all -1", want)
	}
	c, err := e.h.TakeCensus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkCensus(t, c, want, 4, 2)
	// Nothing can be rebuilt before a shard comes back.
	if c.RemainingBytes != 0 {
		t.Fatalf("%d bytes to rebuild for stripes that cannot be read", c.RemainingBytes)
	}
	s, err := e.h.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.WorstMargin != -1 || s.UnreadableStripes != want[-1] || s.Margins["-1"] != want[-1] || s.DegradedStripes != want[-1] {
		t.Fatalf("status worst %d unreadable %d margins %v degraded %d; the backends hold %v",
			s.WorstMargin, s.UnreadableStripes, s.Margins, s.DegradedStripes, want)
	}
}

// Two backends of a larger store wiped: a stripe with shards on both is
// queued once, naming only the backend found first, yet lost two shards.
// The census counts the shards on every backend the queue knows was
// wiped, before any repair is tried, and what is left to rebuild.
func TestCensusWipedBackendsShareStripes(t *testing.T) {
	e := newEnv(t, envOpts{backends: 8, cfg: Config{Grace: Duration(time.Hour)}})
	e.fill(20, 64<<10)
	e.probe()
	e.wipe("b0")
	e.wipe("b1")
	e.probe()
	both := 0
	var rebuild int64
	for _, st := range e.stripes() {
		n := 0
		var size int64
		for _, l := range st.Shards {
			size = max(size, l.Size)
			if l.Backend == "b0" || l.Backend == "b1" {
				n++
			}
		}
		if n == 2 {
			both++
		}
		rebuild += size * int64(n)
	}
	if both == 0 {
		t.Fatal("no stripe on both wiped backends")
	}
	want := censusTruth(t, e)
	c, err := e.h.TakeCensus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkCensus(t, c, want, 4, 2)
	if c.RemainingBytes != rebuild {
		t.Fatalf("census: %d bytes to rebuild, the wiped backends held %d", c.RemainingBytes, rebuild)
	}
	// The queue itself names both backends for a stripe on both, at the
	// margin both losses leave, so the rebuilder checks both.
	ctx := context.Background()
	for _, st := range e.stripes() {
		var on []string
		for _, l := range st.Shards {
			if l.Backend == "b0" || l.Backend == "b1" {
				on = append(on, l.Backend)
			}
		}
		if len(on) < 2 {
			continue
		}
		it, err := e.h.meta.GetRepair(ctx, st.ID)
		if err != nil {
			t.Fatal(err)
		}
		names := wipedBackends(it.Reason)
		slices.Sort(names)
		if fmt.Sprint(names) != "[b0 b1]" || it.Margin != 0 {
			t.Fatalf("stripe on b0 and b1 queued at margin %d for %q", it.Margin, it.Reason)
		}
	}
}

// Shards a reader found missing or corrupt (heal on read) are lost to the
// census until repaired, and their bytes are still to rebuild.
func TestCensusCountsShardsReadersFound(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour)}})
	e.fill(6, 64<<10)
	e.probe()
	ctx := context.Background()
	var rebuild int64
	for n, st := range e.stripes() {
		var size int64
		for _, l := range st.Shards {
			size = max(size, l.Size)
		}
		// Damage shard 0 of every stripe, and lose shard 1 of every
		// other one, the way a reader then queues them.
		l := st.Shards[0]
		data, err := e.sw(l.Backend).Backend.Get(ctx, l.Key)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)-1] ^= 0xff
		if err := e.sw(l.Backend).Backend.Put(ctx, l.Key, data); err != nil {
			t.Fatal(err)
		}
		rebuild += size
		missing := []int{}
		if n%2 == 0 {
			if err := e.sw(st.Shards[1].Backend).Backend.Delete(ctx, st.Shards[1].Key); err != nil {
				t.Fatal(err)
			}
			missing = append(missing, 1)
			rebuild += size
		}
		// What Reader.queueRepair enqueues.
		if err := e.meta.Enqueue(ctx, metastore.RepairItem{Stripe: st.ID, Margin: st.M - len(missing) - 1,
			Reason: fmt.Sprintf("read found shards missing %v, corrupt %v", missing, []int{0})}); err != nil {
			t.Fatal(err)
		}
	}
	want := censusTruth(t, e)
	if want[0] == 0 || want[1] == 0 {
		t.Fatalf("the backends hold margins %v, want some at 0 and 1", want)
	}
	c, err := e.h.TakeCensus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkCensus(t, c, want, 4, 2)
	if c.RemainingBytes != rebuild {
		t.Fatalf("census: %d bytes to rebuild, want %d", c.RemainingBytes, rebuild)
	}
}

// Causes joined into one reason ("backend b0 wiped; ...") are each read.
func TestJoinedReasons(t *testing.T) {
	for reason, want := range map[string]string{
		"backend b0 wiped; written degraded: shards [1 4] did not land": "[1 4]",
		"backend b0 wiped; scrub: shards [1] missing, [3] corrupt":      "[1 3]",
		"backend b0 wiped; read found shards missing [2], corrupt [5]":  "[2 5]",
		"backend b0 wiped; backend b1 wiped":                            "[]",
	} {
		got := lostShards(metastore.RepairItem{Reason: reason})
		slices.Sort(got)
		if fmt.Sprint(got) != want {
			t.Errorf("lostShards(%q) = %v, want %s", reason, got, want)
		}
	}
	if needsVerify(metastore.RepairItem{Reason: "backend b0 wiped; backend b1 wiped"}) {
		t.Error("a reason of wiped backends only asks for a verify pass")
	}
	if !needsVerify(metastore.RepairItem{Reason: "backend b0 wiped; read found shards missing [2], corrupt []"}) {
		t.Error("a reader's finding joined to a wipe asks for no verify pass")
	}
}
