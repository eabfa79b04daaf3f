package tfgrid

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/healer/provision"
)

// Defaults for Config fields left zero.
const (
	DefaultNetwork         = "main"
	DefaultTfcmd           = "tfcmd"
	DefaultDisk            = "hdd"
	DefaultSizeGB          = 100
	DefaultMaxSizeGB       = 1000
	DefaultMaxBackends     = 10
	DefaultProjectPrefix   = "hs"
	DefaultAttempts        = 3
	DefaultCandidates      = 100
	DefaultDeployTimeout   = 10 * time.Minute
	DefaultProbeTimeout    = 2 * time.Minute
	DefaultFailureCooldown = time.Hour
)

// Config configures the tfgrid provisioner. Every field has a usable zero
// value except that tfcmd must be logged in (`tfcmd login`) to the same
// network as Network.
type Config struct {
	// Network is "main", "test", "dev" or "qa"; it picks the grid proxy.
	Network string `toml:"network,omitempty" json:"network,omitempty"`
	// ProxyURL overrides the network's public grid proxy.
	ProxyURL string `toml:"proxy_url,omitempty" json:"proxy_url,omitempty"`
	// Tfcmd is the path of the tfcmd binary (default: "tfcmd" in PATH).
	Tfcmd string `toml:"tfcmd,omitempty" json:"tfcmd,omitempty"`
	// TfcmdEnv adds NAME=value entries to tfcmd's environment (e.g. HOME,
	// where tfcmd keeps its login).
	TfcmdEnv []string `toml:"tfcmd_env,omitempty" json:"tfcmd_env,omitempty"`
	// TwinID is the deploying account's twin; nodes it rents are usable.
	// 0 means only nodes nobody rents.
	TwinID uint64 `toml:"twin_id,omitempty" json:"twin_id,omitempty"`
	// Farms limits deployments to these farm ids; empty means any farm.
	Farms []uint64 `toml:"farms,omitempty" json:"farms,omitempty"`
	// Disk is "hdd" (default; what 0-db is meant for) or "ssd".
	Disk string `toml:"disk,omitempty" json:"disk,omitempty"`
	// SizeGB is the size of a new namespace, raised to the constraint's
	// MinSize when that is larger. Default 100.
	SizeGB int `toml:"size_gb,omitempty" json:"size_gb,omitempty"`
	// MaxSizeGB refuses requests for more. Default 1000.
	MaxSizeGB int `toml:"max_size_gb,omitempty" json:"max_size_gb,omitempty"`
	// MaxBackends caps the deployments this provisioner holds at once
	// (counted in the ledger, including ones still being cancelled).
	// Default 10.
	MaxBackends int `toml:"max_backends,omitempty" json:"max_backends,omitempty"`
	// AddressFamily is the preferred way to reach a namespace: "ipv6",
	// "mycelium" or "ygg". Others are used when it is not offered; empty
	// means ipv6, then mycelium, then ygg.
	AddressFamily string `toml:"address_family,omitempty" json:"address_family,omitempty"`
	// ProjectPrefix starts every project (and backend) name when the
	// request has no name hint. Default "hs".
	ProjectPrefix string `toml:"project_prefix,omitempty" json:"project_prefix,omitempty"`
	// Ledger is the file recording deployments across restarts (no
	// secrets in it). Empty keeps them in memory only, so the cap resets
	// and an interrupted deployment is not cancelled after a restart.
	Ledger string `toml:"ledger,omitempty" json:"ledger,omitempty"`
	// Attempts is how many nodes one Provision tries. Default 3.
	Attempts int `toml:"attempts,omitempty" json:"attempts,omitempty"`
	// Candidates is how many nodes one proxy query asks for. Default 100.
	Candidates int `toml:"candidates,omitempty" json:"candidates,omitempty"`
	// DeployTimeout bounds one tfcmd run. Default 10 min.
	DeployTimeout time.Duration `toml:"-" json:"-"`
	// ProbeTimeout is how long a new namespace may take to answer and
	// accept a write. Default 2 min.
	ProbeTimeout time.Duration `toml:"-" json:"-"`
	// FailureCooldown keeps a node whose deployment failed out of the
	// candidates this long. Default 1 h.
	FailureCooldown time.Duration `toml:"-" json:"-"`
}

// VerifyFunc checks that a new backend answers and takes writes.
type VerifyFunc func(ctx context.Context, spec backends.Spec, secret string) error

// Option adjusts a Provisioner beyond its Config (mostly for tests).
type Option func(*Provisioner)

// WithVerify replaces the check run on every new namespace (default
// VerifyZDB).
func WithVerify(v VerifyFunc) Option { return func(p *Provisioner) { p.verify = v } }

// WithHTTPClient sets the client for grid proxy queries.
func WithHTTPClient(hc *http.Client) Option { return func(p *Provisioner) { p.proxy.HTTP = hc } }

// WithRand sets the random source for node choice (default: seeded from
// the system).
func WithRand(r *mrand.Rand) Option { return func(p *Provisioner) { p.rnd = r } }

// WithBackoff sets the first wait between retries of proxy queries, tfcmd
// get/cancel and probes; it doubles per retry. Default 1 s.
func WithBackoff(d time.Duration) Option {
	return func(p *Provisioner) { p.backoff = d; p.proxy.Backoff = d }
}

// WithClock replaces time.Now (for the failure cooldown).
func WithClock(now func() time.Time) Option { return func(p *Provisioner) { p.now = now } }

// Provisioner deploys 0-db namespaces on ThreeFold Grid nodes. Provision
// calls run one at a time; Release may run alongside.
type Provisioner struct {
	cfg     Config
	log     *slog.Logger
	proxy   *ProxyClient
	tf      tfcmd
	verify  VerifyFunc
	backoff time.Duration
	now     func() time.Time

	provMu sync.Mutex // one Provision at a time: node choice and cap checks assume it

	mu     sync.Mutex // guards the fields below
	rnd    *mrand.Rand
	ledger *ledger
	failed map[uint64]time.Time // node id -> when its deployment failed
}

var _ provision.Provisioner = (*Provisioner)(nil)

// ErrNotOurs: Release was asked to cancel a backend this provisioner did
// not deploy. healstore never cancels deployments it did not make.
var ErrNotOurs = errors.New("backend was not deployed by this tfgrid provisioner")

// New checks cfg, fills defaults and opens the ledger. log may be nil.
func New(cfg Config, log *slog.Logger, opts ...Option) (*Provisioner, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l, err := openLedger(cfg.Ledger)
	if err != nil {
		return nil, err
	}
	p := &Provisioner{
		cfg:     cfg,
		log:     log.With("provisioner", "tfgrid", "network", cfg.Network),
		proxy:   &ProxyClient{BaseURL: cfg.ProxyURL, Backoff: time.Second},
		tf:      tfcmd{path: cfg.Tfcmd, env: cfg.TfcmdEnv, timeout: cfg.DeployTimeout},
		verify:  VerifyZDB,
		backoff: time.Second,
		now:     time.Now,
		rnd:     mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64())),
		ledger:  l,
		failed:  map[uint64]time.Time{},
	}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

func (c *Config) fill() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("tfgrid provisioner: %s", fmt.Sprintf(format, args...))
	}
	if c.Network == "" {
		c.Network = DefaultNetwork
	}
	if c.ProxyURL == "" {
		u, err := ProxyURL(c.Network)
		if err != nil {
			return bad("%v", err)
		}
		c.ProxyURL = u
	}
	if c.Tfcmd == "" {
		c.Tfcmd = DefaultTfcmd
	}
	for _, e := range c.TfcmdEnv {
		if name, _, ok := strings.Cut(e, "="); !ok || name == "" {
			return bad("tfcmd_env entry is not NAME=value")
		}
	}
	c.Disk = strings.ToLower(c.Disk)
	switch c.Disk {
	case "":
		c.Disk = DefaultDisk
	case "hdd", "ssd":
	default:
		return bad("disk %q: want hdd or ssd", c.Disk)
	}
	switch c.AddressFamily {
	case "", FamilyIPv6, FamilyMycelium, FamilyYgg:
	default:
		return bad("address_family %q: want ipv6, mycelium or ygg", c.AddressFamily)
	}
	for name, v := range map[string]int{"size_gb": c.SizeGB, "max_size_gb": c.MaxSizeGB, "max_backends": c.MaxBackends,
		"attempts": c.Attempts, "candidates": c.Candidates} {
		if v < 0 {
			return bad("%s %d is negative", name, v)
		}
	}
	for name, v := range map[string]time.Duration{"deploy_timeout": c.DeployTimeout, "probe_timeout": c.ProbeTimeout,
		"failure_cooldown": c.FailureCooldown} {
		if v < 0 {
			return bad("%s %v is negative", name, v)
		}
	}
	setDefault := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	setDefault(&c.SizeGB, DefaultSizeGB)
	setDefault(&c.MaxSizeGB, DefaultMaxSizeGB)
	setDefault(&c.MaxBackends, DefaultMaxBackends)
	setDefault(&c.Attempts, DefaultAttempts)
	setDefault(&c.Candidates, DefaultCandidates)
	if c.SizeGB > c.MaxSizeGB {
		return bad("size_gb %d is above max_size_gb %d", c.SizeGB, c.MaxSizeGB)
	}
	if c.ProjectPrefix == "" {
		c.ProjectPrefix = DefaultProjectPrefix
	}
	if sanitize(c.ProjectPrefix) != c.ProjectPrefix {
		return bad("project_prefix %q: use 1-20 of a-z and 0-9", c.ProjectPrefix)
	}
	if c.DeployTimeout == 0 {
		c.DeployTimeout = DefaultDeployTimeout
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.FailureCooldown == 0 {
		c.FailureCooldown = DefaultFailureCooldown
	}
	c.Farms = slices.Clone(c.Farms)
	c.TfcmdEnv = slices.Clone(c.TfcmdEnv)
	return nil
}

// Name implements provision.Provisioner.
func (p *Provisioner) Name() string { return "tfgrid" }

// Config returns the effective configuration (defaults filled in).
func (p *Provisioner) Config() Config { return p.cfg }

// Deployments lists the ledger: every deployment made and not yet
// cancelled.
func (p *Provisioner) Deployments() []Deployment {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ledger.list()
}

// sizeFor returns the namespace size in GB (tfcmd's unit, 2^30 bytes).
func (p *Provisioner) sizeFor(minSize int64) (int, error) {
	size := p.cfg.SizeGB
	if minSize > 0 {
		need := int((minSize + (1 << 30) - 1) >> 30)
		size = max(size, need)
	}
	if size > p.cfg.MaxSizeGB {
		return 0, &provision.NoCapacityError{Provisioner: "tfgrid",
			Reason: fmt.Sprintf("%d GB asked for, max_size_gb is %d", size, p.cfg.MaxSizeGB)}
	}
	return size, nil
}

// Provision implements provision.Provisioner: it picks a node outside the
// avoided failure domains, deploys a namespace there, reads it back and
// checks it takes writes. A deployment that fails at any step is cancelled
// and the next candidate node is tried, up to Config.Attempts nodes.
func (p *Provisioner) Provision(ctx context.Context, c provision.Constraints) (backends.Spec, string, error) {
	p.provMu.Lock()
	defer p.provMu.Unlock()
	p.retryCancels(ctx)

	sizeGB, err := p.sizeFor(c.MinSize)
	if err != nil {
		return backends.Spec{}, "", err
	}
	if err := p.checkCap(); err != nil {
		return backends.Spec{}, "", err
	}
	f := p.filterFor(sizeGB, parseAvoid(c.AvoidDomains))
	nodes, err := p.candidates(ctx, f)
	if err != nil {
		return backends.Spec{}, "", err
	}
	var lastErr error
	for attempt := 0; attempt < p.cfg.Attempts && len(nodes) > 0; attempt++ {
		if attempt > 0 {
			if err := p.checkCap(); err != nil {
				return backends.Spec{}, "", err
			}
		}
		p.mu.Lock()
		i := pickWeighted(nodes, f.free, p.rnd)
		p.mu.Unlock()
		n := nodes[i]
		nodes = slices.Delete(nodes, i, i+1)
		spec, secret, err := p.deployOn(ctx, n, sizeGB, c.NameHint, c.Level)
		if err == nil {
			return spec, secret, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
		p.mu.Lock()
		p.failed[n.NodeID] = p.now()
		p.mu.Unlock()
	}
	return backends.Spec{}, "", fmt.Errorf("tfgrid: no namespace deployed: %w", lastErr)
}

func (p *Provisioner) checkCap() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.ledger.count(); n >= p.cfg.MaxBackends {
		return &provision.NoCapacityError{Provisioner: "tfgrid",
			Reason: fmt.Sprintf("max_backends reached: %d deployments held, cap %d", n, p.cfg.MaxBackends)}
	}
	return nil
}

func (p *Provisioner) filterFor(sizeGB int, avoid avoidSet) filter {
	f := filter{ssd: p.cfg.Disk == "ssd", need: uint64(sizeGB) << 30, twin: p.cfg.TwinID,
		avoid: avoid, farms: map[uint64]bool{}, failed: map[uint64]bool{}}
	for _, id := range p.cfg.Farms {
		f.farms[id] = true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for id, at := range p.failed {
		if now.Sub(at) < p.cfg.FailureCooldown {
			f.failed[id] = true
		} else {
			delete(p.failed, id)
		}
	}
	return f
}

// candidates asks the proxy for nodes and keeps those f accepts. The
// proxy filters most; f re-checks everything, since an older proxy may
// ignore a parameter and a wrong node costs a failed deployment.
func (p *Provisioner) candidates(ctx context.Context, f filter) ([]Node, error) {
	q := NodeQuery{Status: "up", Size: p.cfg.Candidates, Randomize: true}
	if f.ssd {
		q.FreeSRU = f.need
	} else {
		q.FreeHRU = f.need
	}
	if p.cfg.TwinID != 0 {
		q.AvailableFor = p.cfg.TwinID
	} else {
		no := false
		q.Rented = &no
	}
	for _, id := range p.cfg.Farms {
		if !f.avoid.farms[id] {
			q.FarmIDs = append(q.FarmIDs, id)
		}
	}
	if len(p.cfg.Farms) > 0 && len(q.FarmIDs) == 0 {
		return nil, &provision.NoCapacityError{Provisioner: "tfgrid",
			Reason: "every allowed farm already holds a shard of the stripe set"}
	}
	for id := range f.avoid.nodes {
		q.Excluded = append(q.Excluded, id)
	}
	for id := range f.failed {
		q.Excluded = append(q.Excluded, id)
	}
	slices.Sort(q.Excluded)

	p.log.Debug("querying grid proxy for nodes", "free_gb", f.need>>30, "disk", p.cfg.Disk, "farms", q.FarmIDs, "excluded", len(q.Excluded))
	all, err := p.proxy.Nodes(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("tfgrid: listing nodes: %w", err)
	}
	var ok []Node
	reasons := map[string]int{}
	for _, n := range all {
		if why := f.reject(n); why != "" {
			reasons[why]++
			continue
		}
		ok = append(ok, n)
	}
	p.log.Debug("grid proxy answered", "offered", len(all), "usable", len(ok))
	if len(ok) == 0 {
		return nil, &provision.NoCapacityError{Provisioner: "tfgrid", Reason: noNodeReason(f, len(all), reasons)}
	}
	return ok, nil
}

func noNodeReason(f filter, offered int, reasons map[string]int) string {
	disk := "HDD"
	if f.ssd {
		disk = "SSD"
	}
	s := fmt.Sprintf("no node is up with %d GB free %s outside the used failure domains", f.need>>30, disk)
	if offered == 0 {
		return s + " (the grid proxy offered none)"
	}
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", reasons[k], k)
	}
	return fmt.Sprintf("%s (%d offered, rejected: %s)", s, offered, strings.Join(parts, ", "))
}

// deployOn deploys one namespace on n and returns it verified. Any failure
// after `tfcmd deploy` started cancels the project again.
func (p *Provisioner) deployOn(ctx context.Context, n Node, sizeGB int, hint, level string) (backends.Spec, string, error) {
	project, err := p.newProject(hint)
	if err != nil {
		return backends.Spec{}, "", err
	}
	password, err := newPassword()
	if err != nil {
		return backends.Spec{}, "", err
	}
	log := p.log.With("project", project, "node", n.NodeID, "farm", n.FarmID)

	// Record before deploying: if healstore dies during tfcmd deploy, the
	// next start finds the entry and cancels the contract.
	dep := Deployment{Project: project, Node: n.NodeID, Farm: n.FarmID, SizeGB: sizeGB, State: StateDeploying, Created: p.now().UTC()}
	p.mu.Lock()
	err = p.ledger.put(dep)
	p.mu.Unlock()
	if err != nil {
		return backends.Spec{}, "", fmt.Errorf("tfgrid: not deploying on node %d: %w", n.NodeID, err)
	}

	fail := func(step string, err error) (backends.Spec, string, error) {
		log.Warn("zdb deployment failed, cancelling it", "step", step, "err", err)
		p.cancel(ctx, project, log)
		return backends.Spec{}, "", fmt.Errorf("tfgrid: %s of %s on node %d: %w", step, project, n.NodeID, err)
	}

	log.Info("deploying zdb namespace", "size_gb", sizeGB, "free_gb", p.filterFree(n)>>30)
	start := p.now()
	if _, err := p.tf.run(ctx, "deploy zdb "+project, deployArgs(project, sizeGB, n.NodeID, password), password); err != nil {
		return fail("deploy", err)
	}
	log.Info("zdb deployed, reading it back", "elapsed", p.now().Sub(start).Round(time.Second))

	z, err := p.getZDB(ctx, project, password)
	if err != nil {
		return fail("get", err)
	}
	if z.node != 0 && z.node != n.NodeID {
		return fail("get", fmt.Errorf("deployment reports node %d", z.node))
	}
	addr, fam, fellBack, err := chooseAddress(z.w.IPs, z.w.Port, p.cfg.AddressFamily)
	if err != nil {
		return fail("get", err)
	}
	if fellBack {
		log.Warn("preferred address family not offered, using another", "want", p.cfg.AddressFamily, "using", fam)
	}
	spec := backends.Spec{
		Name:      project,
		Kind:      backends.KindZDB,
		Address:   addr,
		Namespace: z.w.Namespace,
		SecretRef: project,
		Quota:     int64(sizeGB) << 30,
		Node:      strconv.FormatUint(n.NodeID, 10),
		Farm:      strconv.FormatUint(n.FarmID, 10),
	}
	if err := spec.Validate(); err != nil {
		return fail("get", err)
	}
	log = log.With("address", addr, "namespace", spec.Namespace)
	log.Info("probing new namespace", "family", fam)
	if err := p.probe(ctx, spec, password); err != nil {
		return fail("probe", err)
	}

	dep.State = StateActive
	p.mu.Lock()
	err = p.ledger.put(dep)
	p.mu.Unlock()
	if err != nil {
		// Handing out a backend the ledger cannot track would break the
		// cap and the no-leak promise.
		return fail("ledger", err)
	}
	log.Info("zdb namespace ready", "domain", spec.Domain(level), "elapsed", p.now().Sub(start).Round(time.Second))
	return spec, password, nil
}

func (p *Provisioner) filterFree(n Node) uint64 {
	if p.cfg.Disk == "ssd" {
		return n.Free().SRU
	}
	return n.Free().HRU
}

type gotZDB struct {
	node uint64
	w    zdbWorkload
}

// getZDB runs `tfcmd get zdb` until it yields the namespace (the grid may
// need a moment to report a fresh workload) or the retries run out.
func (p *Provisioner) getZDB(ctx context.Context, project, password string) (gotZDB, error) {
	var lastErr error
	for i := range 3 {
		if i > 0 {
			if err := sleep(ctx, p.backoff<<(i-1)); err != nil {
				return gotZDB{}, errors.Join(err, lastErr)
			}
		}
		out, err := p.tf.run(ctx, "get zdb "+project, []string{"get", "zdb", project}, password)
		if err != nil {
			lastErr = err
			continue
		}
		d, err := parseGetZDB(out)
		if err != nil {
			lastErr = err
			continue
		}
		w := d.Zdbs[0]
		if w.Password != password {
			// Never a transient state: the name belongs to another
			// deployment. Say so without printing either password.
			return gotZDB{}, errors.New("deployment reports a different namespace password")
		}
		if w.Namespace == "" {
			lastErr = errors.New("zdb has no namespace yet")
			continue
		}
		return gotZDB{node: d.NodeID, w: w}, nil
	}
	return gotZDB{}, lastErr
}

// probe runs the verify function until it passes or ProbeTimeout ends: a
// namespace on a fresh deployment can take a while to become reachable.
func (p *Provisioner) probe(ctx context.Context, spec backends.Spec, password string) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ProbeTimeout)
	defer cancel()
	wait := p.backoff
	var real error // the newest failure the namespace gave before ctx ended
	for {
		err := p.verify(ctx, spec, password)
		if err == nil {
			return nil
		}
		if dl, _ := ctx.Deadline(); ctx.Err() == nil && time.Now().Before(dl) {
			real = err
		}
		if serr := sleep(ctx, wait); serr != nil {
			if real != nil && real != err {
				// ProbeTimeout ended in the middle of a try: say what
				// the namespace answered before that as well.
				return fmt.Errorf("not ready within %v: %w (then: %w)", p.cfg.ProbeTimeout, real, err)
			}
			return fmt.Errorf("not ready within %v: %w", p.cfg.ProbeTimeout, err)
		}
		wait = min(wait*2, 10*time.Second)
	}
}

// cancel runs `tfcmd cancel` with retries. It outlives ctx: a Provision
// that was cancelled or timed out must not leave a contract behind. If
// every try fails the ledger keeps the project as "cancelling" and later
// calls retry it.
func (p *Provisioner) cancel(ctx context.Context, project string, log *slog.Logger) bool {
	cctx := context.WithoutCancel(ctx)
	var err error
	for i := range 3 {
		if i > 0 {
			sleep(cctx, p.backoff<<(i-1))
		}
		if _, err = p.tf.run(cctx, "cancel "+project, []string{"cancel", project}, ""); err == nil {
			break
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		log.Error("cancelling deployment failed; will retry, contract still billed", "err", err)
		if d, ok := p.ledger.get(project); ok {
			d.State = StateCancelling
			if lerr := p.ledger.put(d); lerr != nil {
				log.Error("ledger update failed", "err", lerr)
			}
		}
		return false
	}
	log.Info("deployment cancelled")
	if lerr := p.ledger.remove(project); lerr != nil {
		log.Error("ledger update failed", "err", lerr)
	}
	return true
}

// retryCancels retries cancellations that failed before (or that an
// interrupted run left behind).
func (p *Provisioner) retryCancels(ctx context.Context) {
	p.mu.Lock()
	var pending []Deployment
	for _, d := range p.ledger.list() {
		if d.State == StateCancelling {
			pending = append(pending, d)
		}
	}
	p.mu.Unlock()
	for _, d := range pending {
		if ctx.Err() != nil {
			return
		}
		p.cancel(ctx, d.Project, p.log.With("project", d.Project, "node", d.Node, "farm", d.Farm))
	}
}

// Cleanup retries pending cancellations now (Provision and Release also do
// it on each call). It returns how many deployments are still pending.
func (p *Provisioner) Cleanup(ctx context.Context) int {
	p.retryCancels(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, d := range p.ledger.list() {
		if d.State == StateCancelling {
			n++
		}
	}
	return n
}

// Release implements provision.Provisioner: it cancels the backend's
// deployment. Only deployments in the ledger, or (without a ledger file)
// named with this provisioner's prefix, are cancelled; anything else is
// ErrNotOurs, so a mistaken call never removes a user's own deployment.
func (p *Provisioner) Release(ctx context.Context, spec backends.Spec) error {
	project := spec.Name
	p.mu.Lock()
	d, known := p.ledger.get(project)
	p.mu.Unlock()
	if !known && (p.cfg.Ledger != "" || !strings.HasPrefix(project, p.cfg.ProjectPrefix)) {
		return fmt.Errorf("tfgrid: release %s: %w", project, ErrNotOurs)
	}
	log := p.log.With("project", project, "node", spec.Node, "farm", spec.Farm)
	if known {
		log = p.log.With("project", project, "node", d.Node, "farm", d.Farm)
	}
	log.Info("releasing zdb deployment")
	if !p.cancel(ctx, project, log) {
		return fmt.Errorf("tfgrid: release %s: cancel failed; it stays in the ledger and is retried", project)
	}
	p.retryCancels(ctx)
	return nil
}

// newProject returns a fresh project name: the hint (or prefix) reduced to
// [a-z0-9], then 8 random hex digits. tfcmd names the zdb project+"0" and
// finds deployments by project, so names must be unique per account.
func (p *Provisioner) newProject(hint string) (string, error) {
	base := sanitize(hint)
	if base == "" {
		base = p.cfg.ProjectPrefix
	}
	if !strings.HasPrefix(base, p.cfg.ProjectPrefix) {
		// Release without a ledger recognises our projects by prefix.
		base = p.cfg.ProjectPrefix + base
	}
	if len(base) > 24 {
		base = base[:24]
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("tfgrid: project name: %w", err)
	}
	return base + hex.EncodeToString(b[:]), nil
}

// sanitize keeps a-z and 0-9 (lowercased), at most 20 of them.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			if b.Len() == 20 {
				break
			}
		}
	}
	return b.String()
}

// newPassword returns 192 random bits as hex: safe on a command line and
// in 0-db's AUTH/SELECT.
func newPassword() (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("tfgrid: password: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
