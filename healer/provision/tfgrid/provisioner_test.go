package tfgrid

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/zdb/zdbtest"
	"github.com/healstore/healstore/healer/provision"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// harness wires a Provisioner to an httptest grid proxy, the fake tfcmd
// and a zdbtest server standing in for the 0-db on every grid node.
type harness struct {
	t    *testing.T
	p    *Provisioner
	dir  string // fake tfcmd state
	zdb  *zdbtest.Server
	logs *syncBuf

	mu       sync.Mutex
	nodes    []byte       // what the proxy serves
	queries  []url.Values // what the proxy was asked
	verifies int
	now      time.Time
	// ready decides, per verify call, whether the "grid" has created the
	// namespace by now and with which password.
	ready func(call int, password string) (create bool, withPassword string)
}

type harnessOpts struct {
	cfg  Config
	env  []string
	opts []Option
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), logs: &syncBuf{}, nodes: nodesJSON(t), now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	h.ready = func(int, string) (bool, string) { return true, "" }
	h.zdb = zdbtest.New(t, zdbtest.Options{})
	proxy, _ := proxyServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		h.mu.Lock()
		h.queries = append(h.queries, r.URL.Query())
		body := h.nodes
		h.mu.Unlock()
		w.Write(body)
	})
	host, port, err := net.SplitHostPort(h.zdb.Addr())
	if err != nil {
		t.Fatal(err)
	}
	cfg := o.cfg
	cfg.ProxyURL = proxy.URL
	cfg.Tfcmd = fakeTfcmd(t)
	cfg.TfcmdEnv = append([]string{"FAKE_TFCMD_DIR=" + h.dir, "FAKE_TFCMD_IPS=" + host, "FAKE_TFCMD_PORT=" + port}, o.env...)
	if cfg.DeployTimeout == 0 {
		cfg.DeployTimeout = 20 * time.Second
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = 5 * time.Second
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("node choice seed %d", seed)
	opts := append([]Option{
		WithBackoff(5 * time.Millisecond),
		WithRand(rand.New(rand.NewPCG(seed, 1))),
		WithClock(func() time.Time { h.mu.Lock(); defer h.mu.Unlock(); return h.now }),
		WithVerify(h.verify),
	}, o.opts...)
	h.p, err = New(cfg, slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.checkNoSecretsLeaked)
	return h
}

// verify plays the grid (creating the namespace the deployment promised,
// when h.ready says it is time) and then runs the real check.
func (h *harness) verify(ctx context.Context, spec backends.Spec, secret string) error {
	h.mu.Lock()
	h.verifies++
	call := h.verifies
	h.mu.Unlock()
	if _, exists := h.zdb.Namespace(spec.Namespace); !exists {
		if create, pw := h.ready(call, secret); create {
			if pw == "" {
				pw = secret
			}
			if err := h.zdb.CreateNamespace(spec.Namespace, pw, 0); err != nil {
				return err
			}
		}
	}
	return VerifyZDB(ctx, spec, secret)
}

func (h *harness) advance(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.now = h.now.Add(d)
}

func (h *harness) setNodes(b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nodes = b
}

func (h *harness) lastQuery() url.Values {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.queries) == 0 {
		h.t.Fatal("the grid proxy was never asked")
	}
	return h.queries[len(h.queries)-1]
}

// calls returns every tfcmd invocation, in order.
func (h *harness) calls() []string {
	b, err := os.ReadFile(filepath.Join(h.dir, "calls"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// callsOf returns the invocations of one subcommand.
func (h *harness) callsOf(sub string) []string {
	var out []string
	for _, c := range h.calls() {
		if strings.HasPrefix(c, sub+" ") {
			out = append(out, c)
		}
	}
	return out
}

// live lists projects that exist on the fake grid (deployed, not cancelled).
func (h *harness) live() []string {
	ents, err := os.ReadDir(filepath.Join(h.dir, "projects"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// deployedPasswords returns the passwords given to tfcmd deploy.
func (h *harness) deployedPasswords() []string {
	var out []string
	for _, c := range h.callsOf("deploy") {
		f := strings.Fields(c)
		if i := slices.Index(f, "--password"); i >= 0 && i+1 < len(f) {
			out = append(out, f[i+1])
		}
	}
	return out
}

func (h *harness) checkNoSecretsLeaked() {
	logs := h.logs.String()
	for _, pw := range h.deployedPasswords() {
		if strings.Contains(logs, pw) {
			h.t.Errorf("a namespace password reached the logs:\n%s", logs)
		}
		if h.p.cfg.Ledger != "" {
			if b, err := os.ReadFile(h.p.cfg.Ledger); err == nil && bytes.Contains(b, []byte(pw)) {
				h.t.Error("a namespace password reached the ledger")
			}
		}
	}
}

func flagOf(call, flag string) string {
	f := strings.Fields(call)
	if i := slices.Index(f, flag); i >= 0 && i+1 < len(f) {
		return f[i+1]
	}
	return ""
}

func TestProvisionDeploysProbesAndLabels(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: Config{Ledger: filepath.Join(t.TempDir(), "ledger.json")}})
	spec, secret, err := h.p.Provision(context.Background(), provision.Constraints{Level: "node", NameHint: "hs-data"})
	if err != nil {
		t.Fatalf("Provision: %v\nlogs:\n%s", err, h.logs.String())
	}

	deploys := h.callsOf("deploy")
	if len(deploys) != 1 {
		t.Fatalf("deploy calls %v", deploys)
	}
	d := deploys[0]
	project := flagOf(d, "--project_name")
	if !strings.HasPrefix(d, "deploy zdb ") || flagOf(d, "--size") != "100" || flagOf(d, "--mode") != "user" {
		t.Errorf("deploy call %q", d)
	}
	if !strings.HasPrefix(project, "hsdata") || len(project) != len("hsdata")+8 {
		t.Errorf("project %q: want hint reduced to [a-z0-9] plus 8 hex digits", project)
	}
	if len(secret) != 48 || flagOf(d, "--password") != secret {
		t.Errorf("secret %q is not the 48-hex-digit password deployed", secret)
	}
	node := flagOf(d, "--node")
	if node != "11" && node != "16" {
		t.Errorf("deployed on node %s; only 11 and 16 are eligible", node)
	}
	if got := h.callsOf("get"); !slices.Equal(got, []string{"get zdb " + project}) {
		t.Errorf("get calls %v", got)
	}
	if len(h.callsOf("cancel")) != 0 {
		t.Errorf("a good deployment was cancelled: %v", h.calls())
	}

	farm := map[string]string{"11": "1", "16": "4"}[node]
	want := backends.Spec{
		Name: project, Kind: "zdb", Address: h.zdb.Addr(), Namespace: spec.Namespace,
		SecretRef: project, Quota: 100 << 30, Node: node, Farm: farm,
	}
	if spec != want {
		t.Errorf("spec = %+v\nwant   %+v", spec, want)
	}
	if !strings.HasPrefix(spec.Namespace, node+"-") || !strings.HasSuffix(spec.Namespace, "-"+project+"0") {
		t.Errorf("namespace %q is not the one tfcmd reported", spec.Namespace)
	}
	if spec.Domain("node") != "node:"+node || spec.Domain("farm") != "farm:"+farm {
		t.Errorf("domains %s %s", spec.Domain("node"), spec.Domain("farm"))
	}
	// The probe key was written and removed again.
	if info, ok := h.zdb.Namespace(spec.Namespace); !ok || info.Entries != 0 || !info.Password {
		t.Errorf("namespace after probe: %+v %v", info, ok)
	}

	q := h.lastQuery()
	for k, v := range map[string]string{"status": "up", "free_hru": "107374182400", "rented": "false", "randomize": "true", "size": "100"} {
		if q.Get(k) != v {
			t.Errorf("proxy query %s = %q, want %q", k, q.Get(k), v)
		}
	}

	deps := h.p.Deployments()
	if len(deps) != 1 || deps[0].Project != project || deps[0].State != StateActive || deps[0].SizeGB != 100 {
		t.Errorf("ledger %+v", deps)
	}
	st, err := os.Stat(h.p.cfg.Ledger)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("ledger file: %v %v", st, err)
	}
	for _, want := range []string{"deploying zdb namespace", "zdb namespace ready", "project=" + project, "node=" + node} {
		if !strings.Contains(h.logs.String(), want) {
			t.Errorf("logs lack %q", want)
		}
	}
}

func TestProvisionAvoidsUsedDomains(t *testing.T) {
	cases := []struct {
		c    provision.Constraints
		node string
	}{
		{provision.Constraints{Level: "node", AvoidDomains: []string{"node:11", "backend:local-a"}}, "16"},
		{provision.Constraints{Level: "node", AvoidDomains: []string{"node:16"}}, "11"},
		{provision.Constraints{Level: "farm", AvoidDomains: []string{"farm:1"}}, "16"},
		{provision.Constraints{Level: "farm", AvoidDomains: []string{"farm:4"}}, "11"},
	}
	for _, tc := range cases {
		h := newHarness(t, harnessOpts{})
		for range 3 {
			spec, _, err := h.p.Provision(context.Background(), tc.c)
			if err != nil {
				t.Fatal(err)
			}
			if spec.Node != tc.node {
				t.Errorf("avoid %v: got node %s, want %s", tc.c.AvoidDomains, spec.Node, tc.node)
			}
		}
		if tc.c.Level == "node" {
			if ex := h.lastQuery().Get("excluded"); !strings.Contains(ex, strings.TrimPrefix(tc.c.AvoidDomains[0], "node:")) {
				t.Errorf("avoided node not excluded in the proxy query: %q", ex)
			}
		}
	}
}

func TestProvisionFarmsConfig(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: Config{Farms: []uint64{4, 9}}})
	spec, _, err := h.p.Provision(context.Background(), provision.Constraints{})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Farm != "4" || h.lastQuery().Get("farm_ids") != "4,9" {
		t.Errorf("farm %s, query farm_ids %q", spec.Farm, h.lastQuery().Get("farm_ids"))
	}
	// Every allowed farm already used: nothing to ask the proxy.
	_, _, err = h.p.Provision(context.Background(), provision.Constraints{Level: "farm", AvoidDomains: []string{"farm:4", "farm:9"}})
	if !errors.Is(err, provision.ErrNoCapacity) {
		t.Fatalf("err = %v, want ErrNoCapacity", err)
	}
}

func TestFailedDeployIsCancelledAndAnotherNodeTried(t *testing.T) {
	h := newHarness(t, harnessOpts{env: []string{"FAKE_TFCMD_FAIL_DEPLOY=11"}})
	spec, _, err := h.p.Provision(context.Background(), provision.Constraints{})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Node != "16" {
		t.Fatalf("got node %s; deploys on 11 fail", spec.Node)
	}
	// Whatever was deployed on 11 (if it was tried first) was cancelled.
	for _, d := range h.callsOf("deploy") {
		p := flagOf(d, "--project_name")
		cancelled := slices.Contains(h.callsOf("cancel"), "cancel "+p)
		if flagOf(d, "--node") == "11" && !cancelled {
			t.Errorf("failed deployment %s on node 11 was not cancelled", p)
		}
		if p == spec.Name && cancelled {
			t.Errorf("the returned deployment %s was cancelled", p)
		}
	}
	if live := h.live(); !slices.Equal(live, []string{spec.Name}) {
		t.Errorf("projects left on the grid: %v, want only %s", live, spec.Name)
	}
}

func TestAllDeploysFailNoContractLeftAndCooldown(t *testing.T) {
	h := newHarness(t, harnessOpts{env: []string{"FAKE_TFCMD_FAIL_DEPLOY=11 16"}, cfg: Config{FailureCooldown: time.Hour}})
	_, _, err := h.p.Provision(context.Background(), provision.Constraints{})
	if err == nil || !strings.Contains(err.Error(), "deploy of") || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err = %v", err)
	}
	if n := len(h.callsOf("deploy")); n != 2 {
		t.Errorf("%d deploys, want one per eligible node", n)
	}
	if len(h.callsOf("cancel")) != 2 || len(h.live()) != 0 || len(h.p.Deployments()) != 0 {
		t.Errorf("contracts left: cancels %v, live %v, ledger %v", h.callsOf("cancel"), h.live(), h.p.Deployments())
	}
	for _, pw := range h.deployedPasswords() {
		if strings.Contains(err.Error(), pw) {
			t.Error("error leaks the password")
		}
	}

	// Both nodes failed just now: they are skipped (and excluded in the
	// query) until the cooldown ends.
	_, _, err = h.p.Provision(context.Background(), provision.Constraints{})
	if !errors.Is(err, provision.ErrNoCapacity) || !strings.Contains(err.Error(), "deployment failed recently") {
		t.Fatalf("err = %v, want ErrNoCapacity naming the recent failures", err)
	}
	if ex := h.lastQuery().Get("excluded"); ex != "11,16" {
		t.Errorf("excluded = %q", ex)
	}
	h.advance(2 * time.Hour)
	h.p.Provision(context.Background(), provision.Constraints{})
	if ex := h.lastQuery().Get("excluded"); ex != "" {
		t.Errorf("after the cooldown excluded = %q", ex)
	}
}

func TestGetFailureCancels(t *testing.T) {
	h := newHarness(t, harnessOpts{env: []string{"FAKE_TFCMD_GET_GARBAGE=1"}, cfg: Config{Attempts: 1}})
	_, _, err := h.p.Provision(context.Background(), provision.Constraints{})
	if err == nil || !strings.Contains(err.Error(), "get of") {
		t.Fatalf("err = %v", err)
	}
	if len(h.callsOf("get")) != 3 {
		t.Errorf("get tried %d times, want 3", len(h.callsOf("get")))
	}
	if len(h.callsOf("cancel")) != 1 || len(h.live()) != 0 {
		t.Errorf("cancels %v live %v", h.callsOf("cancel"), h.live())
	}
}

func TestProbeWaitsForNamespace(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.ready = func(call int, _ string) (bool, string) { return call >= 3, "" }
	if _, _, err := h.p.Provision(context.Background(), provision.Constraints{}); err != nil {
		t.Fatal(err)
	}
	if h.verifies != 3 || len(h.callsOf("cancel")) != 0 {
		t.Errorf("verifies %d, cancels %v", h.verifies, h.callsOf("cancel"))
	}
}

func TestProbeFailureCancels(t *testing.T) {
	cases := map[string]func(int, string) (bool, string){
		"never reachable": func(int, string) (bool, string) { return false, "" },
		"wrong password":  func(int, string) (bool, string) { return true, "not-the-deployed-one" },
	}
	for name, ready := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{cfg: Config{ProbeTimeout: 300 * time.Millisecond, Attempts: 1}})
			h.ready = ready
			_, _, err := h.p.Provision(context.Background(), provision.Constraints{})
			if err == nil || !strings.Contains(err.Error(), "probe of") {
				t.Fatalf("err = %v", err)
			}
			if len(h.callsOf("cancel")) != 1 || len(h.live()) != 0 || len(h.p.Deployments()) != 0 {
				t.Errorf("cancels %v live %v ledger %v", h.callsOf("cancel"), h.live(), h.p.Deployments())
			}
		})
	}
}

func TestProbeRefusedWrite(t *testing.T) {
	// The first try must get as far as the write before ProbeTimeout:
	// 300ms was little for a dial, a login and a PING on a loaded machine.
	h := newHarness(t, harnessOpts{cfg: Config{ProbeTimeout: time.Second, Attempts: 1}})
	h.zdb.Fail("SET", "ERR read-only namespace")
	_, _, err := h.p.Provision(context.Background(), provision.Constraints{})
	if err == nil || !strings.Contains(err.Error(), "probe write") {
		t.Fatalf("err = %v", err)
	}
	if len(h.live()) != 0 {
		t.Errorf("unwritable namespace left deployed: %v", h.live())
	}
}

// When ProbeTimeout ends in the middle of a try (on a loaded machine it
// often does), the error still names the last failure the namespace itself
// gave, not only the interrupted try's deadline.
func TestProbeTimeoutKeepsLastRealFailure(t *testing.T) {
	var h *harness
	var mu sync.Mutex
	calls := 0
	verify := func(ctx context.Context, spec backends.Spec, secret string) error {
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if first {
			return h.verify(ctx, spec, secret)
		}
		<-ctx.Done() // the deadline falls inside this try
		return fmt.Errorf("probe: %w", ctx.Err())
	}
	h = newHarness(t, harnessOpts{cfg: Config{ProbeTimeout: 300 * time.Millisecond, Attempts: 1}, opts: []Option{WithVerify(verify)}})
	h.zdb.Fail("SET", "ERR read-only namespace")
	_, _, err := h.p.Provision(context.Background(), provision.Constraints{})
	if err == nil || !strings.Contains(err.Error(), "probe write") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the refused write and the deadline", err)
	}
	if len(h.live()) != 0 {
		t.Errorf("unwritable namespace left deployed: %v", h.live())
	}
}

func TestCancelFailureRetriedLater(t *testing.T) {
	// Deploys fail on both nodes; the first 6 cancels (3 tries each) fail
	// too, so both contracts stay pending.
	h := newHarness(t, harnessOpts{env: []string{"FAKE_TFCMD_FAIL_DEPLOY=11 16", "FAKE_TFCMD_FAIL_CANCEL=6"}})
	if _, _, err := h.p.Provision(context.Background(), provision.Constraints{}); err == nil {
		t.Fatal("Provision succeeded")
	}
	deps := h.p.Deployments()
	if len(deps) != 2 || deps[0].State != StateCancelling || deps[1].State != StateCancelling {
		t.Fatalf("ledger %+v, want two deployments being cancelled", deps)
	}
	if len(h.live()) != 2 {
		t.Fatalf("live %v", h.live())
	}
	if pending := h.p.Cleanup(context.Background()); pending != 0 {
		t.Errorf("%d still pending after Cleanup", pending)
	}
	if len(h.live()) != 0 || len(h.p.Deployments()) != 0 {
		t.Errorf("after cleanup: live %v ledger %v", h.live(), h.p.Deployments())
	}
}

func TestMaxBackendsAndRelease(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: Config{MaxBackends: 1, Ledger: filepath.Join(t.TempDir(), "ledger.json")}})
	spec, _, err := h.p.Provision(context.Background(), provision.Constraints{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = h.p.Provision(context.Background(), provision.Constraints{})
	if !errors.Is(err, provision.ErrNoCapacity) || !strings.Contains(err.Error(), "max_backends") {
		t.Fatalf("err = %v, want ErrNoCapacity naming max_backends", err)
	}
	if len(h.callsOf("deploy")) != 1 {
		t.Errorf("deployed past the cap: %v", h.callsOf("deploy"))
	}
	if err := h.p.Release(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(h.callsOf("cancel"), "cancel "+spec.Name) || len(h.live()) != 0 {
		t.Errorf("release did not cancel: %v", h.calls())
	}
	if _, _, err := h.p.Provision(context.Background(), provision.Constraints{}); err != nil {
		t.Errorf("after release: %v", err)
	}
}

func TestSizeFromConstraint(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: Config{SizeGB: 10, MaxSizeGB: 200}})
	spec, _, err := h.p.Provision(context.Background(), provision.Constraints{MinSize: 150<<30 + 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := flagOf(h.callsOf("deploy")[0], "--size"); got != "151" || spec.Quota != 151<<30 {
		t.Errorf("size %s quota %d, want 151 GB", got, spec.Quota)
	}
	if q := h.lastQuery().Get("free_hru"); q != "162135015424" {
		t.Errorf("free_hru = %s", q)
	}
	_, _, err = h.p.Provision(context.Background(), provision.Constraints{MinSize: 201 << 30})
	if !errors.Is(err, provision.ErrNoCapacity) || !strings.Contains(err.Error(), "max_size_gb") {
		t.Fatalf("err = %v", err)
	}
}

func TestReleaseRefusesForeignDeployments(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: Config{Ledger: filepath.Join(t.TempDir(), "ledger.json")}})
	err := h.p.Release(context.Background(), backends.Spec{Name: "hsmanual", Kind: "zdb", Address: "[::1]:9900", Namespace: "x"})
	if !errors.Is(err, ErrNotOurs) {
		t.Fatalf("err = %v, want ErrNotOurs", err)
	}
	if len(h.calls()) != 0 {
		t.Errorf("tfcmd was run: %v", h.calls())
	}
	// Without a ledger file the prefix identifies our projects.
	h2 := newHarness(t, harnessOpts{})
	if err := h2.p.Release(context.Background(), backends.Spec{Name: "mybackup", Kind: "zdb"}); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("err = %v, want ErrNotOurs", err)
	}
	if err := h2.p.Release(context.Background(), backends.Spec{Name: "hs0011aabb", Kind: "zdb"}); err != nil {
		t.Fatalf("release by prefix: %v", err)
	}
	if got := h2.callsOf("cancel"); !slices.Equal(got, []string{"cancel hs0011aabb"}) {
		t.Errorf("cancels %v", got)
	}
}

func TestLedgerCancelsInterruptedDeployment(t *testing.T) {
	ledgerPath := filepath.Join(t.TempDir(), "ledger.json")
	h := newHarness(t, harnessOpts{cfg: Config{Ledger: ledgerPath}})
	// A previous run died during `tfcmd deploy hsdead0001`: the grid has
	// the contract, the ledger says "deploying".
	os.MkdirAll(filepath.Join(h.dir, "projects"), 0o755)
	os.WriteFile(filepath.Join(h.dir, "projects", "hsdead0001"), []byte("node=11\n"), 0o644)
	os.WriteFile(ledgerPath, []byte(`{"version":1,"deployments":[{"project":"hsdead0001","node":11,"farm":1,"size_gb":100,"state":"deploying","created":"2025-01-01T00:00:00Z"}]}`), 0o600)

	p, err := New(h.p.cfg, nil, WithVerify(h.verify), WithBackoff(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if deps := p.Deployments(); len(deps) != 1 || deps[0].State != StateCancelling {
		t.Fatalf("reopened ledger %+v", deps)
	}
	spec, _, err := p.Provision(context.Background(), provision.Constraints{})
	if err != nil {
		t.Fatal(err)
	}
	if calls := h.calls(); calls[0] != "cancel hsdead0001" {
		t.Errorf("interrupted deployment not cancelled first: %v", calls)
	}
	if live := h.live(); !slices.Equal(live, []string{spec.Name}) {
		t.Errorf("live %v", live)
	}
	// A third process sees only the active deployment.
	p2, err := New(h.p.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if deps := p2.Deployments(); len(deps) != 1 || deps[0].Project != spec.Name || deps[0].State != StateActive {
		t.Errorf("ledger after restart %+v", deps)
	}
}

func TestLedgerRejectsForeignFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.json")
	os.WriteFile(path, []byte(`{"version":7}`), 0o600)
	if _, err := New(Config{Ledger: path}, nil); err == nil || !strings.Contains(err.Error(), "version 7") {
		t.Fatalf("err = %v", err)
	}
	os.WriteFile(path, []byte(`not json`), 0o600)
	if _, err := New(Config{Ledger: path}, nil); err == nil {
		t.Fatal("garbage ledger accepted")
	}
}

func TestNoCandidates(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.setNodes([]byte("[]"))
	_, _, err := h.p.Provision(context.Background(), provision.Constraints{})
	if !errors.Is(err, provision.ErrNoCapacity) || !strings.Contains(err.Error(), "offered none") {
		t.Fatalf("err = %v", err)
	}
	// Only unusable nodes (an older proxy that ignores filters): the
	// reason counts why each was rejected.
	h.setNodes([]byte(`[{"nodeId":13,"farmId":2,"status":"down"},{"nodeId":14,"farmId":3,"status":"up","rented":true,"rentedByTwinId":99}]`))
	_, _, err = h.p.Provision(context.Background(), provision.Constraints{})
	if !errors.Is(err, provision.ErrNoCapacity) || !strings.Contains(err.Error(), "1 rented by another twin") || !strings.Contains(err.Error(), "1 status down") {
		t.Fatalf("err = %v", err)
	}
	if len(h.calls()) != 0 {
		t.Errorf("tfcmd ran without a candidate: %v", h.calls())
	}
}

func TestDeployTimeoutCancels(t *testing.T) {
	h := newHarness(t, harnessOpts{env: []string{"FAKE_TFCMD_SLEEP=30"}, cfg: Config{DeployTimeout: 500 * time.Millisecond, Attempts: 1}})
	_, _, err := h.p.Provision(context.Background(), provision.Constraints{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if len(h.callsOf("cancel")) != 1 {
		t.Errorf("timed-out deployment not cancelled: %v", h.calls())
	}
}

func TestTwinRentedNodes(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: Config{TwinID: 99}})
	for range 5 {
		if _, _, err := h.p.Provision(context.Background(), provision.Constraints{Level: "node", AvoidDomains: []string{"node:11", "node:16"}}); err != nil {
			t.Fatal(err)
		}
	}
	if q := h.lastQuery(); q.Get("available_for") != "99" || q.Has("rented") {
		t.Errorf("query %v", q)
	}
	for _, d := range h.callsOf("deploy") {
		if flagOf(d, "--node") != "14" {
			t.Errorf("deployed on node %s; only 14 (rented by twin 99) was left", flagOf(d, "--node"))
		}
	}
}

func TestConfigDefaultsAndValidation(t *testing.T) {
	p, err := New(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := p.Config()
	if c.Network != "main" || c.ProxyURL != "https://gridproxy.grid.tf" || c.Tfcmd != "tfcmd" || c.Disk != "hdd" ||
		c.SizeGB != DefaultSizeGB || c.MaxSizeGB != DefaultMaxSizeGB || c.MaxBackends != DefaultMaxBackends || c.ProjectPrefix != "hs" {
		t.Errorf("defaults %+v", c)
	}
	if p, _ := New(Config{Network: "test"}, nil); p.Config().ProxyURL != "https://gridproxy.test.grid.tf" {
		t.Errorf("test network proxy %s", p.Config().ProxyURL)
	}
	for name, bad := range map[string]Config{
		"network":     {Network: "moon"},
		"disk":        {Disk: "tape"},
		"family":      {AddressFamily: "ipv5"},
		"size":        {SizeGB: 2000, MaxSizeGB: 1000},
		"negative":    {MaxBackends: -1},
		"prefix":      {ProjectPrefix: "HS-1"},
		"env":         {TfcmdEnv: []string{"NOVALUE"}},
		"neg timeout": {DeployTimeout: -time.Second},
	} {
		if _, err := New(bad, nil); err == nil {
			t.Errorf("%s: accepted %+v", name, bad)
		}
	}
}

var projectRE = regexp.MustCompile(`^hs[a-z0-9]{0,22}[0-9a-f]{8}$`)

func TestProjectNames(t *testing.T) {
	p, err := New(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, hint := range []string{"", "hs-data", "Data_Backend.7", "ÜBER-long-name-that-goes-on-and-on-forever"} {
		name, err := p.newProject(hint)
		if err != nil {
			t.Fatal(err)
		}
		if seen[name] || !projectRE.MatchString(name) {
			t.Errorf("hint %q: project %q", hint, name)
		}
		if err := (backends.Spec{Name: name, Kind: "zdb", Address: "a:1", Namespace: "n"}).Validate(); err != nil {
			t.Errorf("project %q is not a valid backend name: %v", name, err)
		}
		seen[name] = true
	}
}
