package healstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/zdb/zdbtest"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer"
)

// e2eProvisionScript is the user's provisioning program in this test: it
// hands out the 0-db namespace the test prepared on a second server, as a
// grid deployment would, reading the password from a private file, and
// records every request it gets.
const e2eProvisionScript = `#!/bin/sh
set -eu
cat > "$RECORD/$1.json"
case "$1" in
provision)
	if [ -e "$RECORD/handed-out" ]; then
		echo "the only namespace is already in use" >&2
		exit 1
	fi
	touch "$RECORD/handed-out"
	printf '{"name":"zdb-new","kind":"zdb","address":"%s","namespace":"ns-new","node":"node-new","quota":1073741824,"secret":"%s"}\n' \
		"$ZDB_ADDR" "$(cat "$PASSWORD_FILE")"
	;;
release)
	rm -f "$RECORD/handed-out"
	;;
esac
`

type e2eLogs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *e2eLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *e2eLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// e2eStore is a store on five local directories and one 0-db namespace
// (on a server the test can kill), holding a few objects, with the
// provisioner settings the test chose.
type e2eStore struct {
	t       *testing.T
	dir     string
	cfgPath string
	s       *healstore.Store
	h       *healstore.Healer
	oldZDB  *zdbtest.Server
	objects map[string][]byte
	stripes int
	logs    *e2eLogs
}

const e2eOldPassword = "old-namespace-pw-7f3a9c"

func newE2EStore(t *testing.T, oldNode, oldFarm string, prov healstore.ProvisionerConfig) *e2eStore {
	t.Helper()
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, seed>>1))
	e := &e2eStore{t: t, dir: t.TempDir(), objects: map[string][]byte{}, logs: &e2eLogs{}}

	e.oldZDB = zdbtest.New(t, zdbtest.Options{})
	if err := e.oldZDB.CreateNamespace("ns-old", e2eOldPassword, 0); err != nil {
		t.Fatal(err)
	}
	// `healstore init` with six local backends, of which the sixth gives
	// way to the 0-db namespace on the server that will die.
	var err error
	e.cfgPath, err = healstore.Init(e.dir, healstore.InitOptions{Backends: 6, Policy: encoder.Policy{
		K: 4, M: 2, BlockSize: 64 << 10, Compression: encoder.CompressionNone,
		Encryption: encoder.EncryptionAESGCM, Checksum: encoder.ChecksumXXH3}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := healstore.LoadConfig(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Backends = append(cfg.Backends[:5], backends.Spec{Name: "zdb-old", Kind: backends.KindZDB,
		Address: e.oldZDB.Addr(), Namespace: "ns-old", SecretRef: "zdb-old", Node: oldNode, Farm: oldFarm})
	secrets, err := healstore.OpenSecrets(filepath.Join(e.dir, "secrets.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := secrets.Set("zdb-old", e2eOldPassword); err != nil {
		t.Fatal(err)
	}
	cfg.Healer.Provisioner = prov
	cfg.Logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	e.s, err = healstore.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.s.Close() })
	for i := range 4 {
		data := make([]byte, 200<<10+rnd.IntN(100<<10))
		for j := range data {
			data[j] = byte(rnd.Uint32())
		}
		name := "obj-" + string(rune('a'+i))
		if _, err := e.s.Put(ctx, name, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		e.objects[name] = data
	}

	e.h, err = e.s.NewHealer(ctx, healstore.HealerOptions{Tune: func(c *healer.Config) {
		// Declare a dead backend down at its first failed probe: the
		// grace period has its own tests; this one is about what follows.
		c.Grace = 0
		c.SuspectAfter = 1
		c.ProvisionBackoff = healer.Duration(50 * time.Millisecond)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.h.Close() })

	st, err := e.h.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.stripes = st.Stripes
	if e.stripes == 0 || st.WorstMargin != 2 || shardsOn(st, "zdb-old") != e.stripes {
		t.Fatalf("before the loss: %d stripes, worst margin %d, %d shards on zdb-old", e.stripes, st.WorstMargin, shardsOn(st, "zdb-old"))
	}
	return e
}

// heal runs the healer's rounds, as the daemon does, until done says the
// store is where it should be (generous deadline: CI machines are slow
// and busy).
func (e *e2eStore) heal(what string, done func(st *healer.Status) bool) *healer.Status {
	e.t.Helper()
	ctx := context.Background()
	start := time.Now()
	deadline := start.Add(90 * time.Second)
	var lastErrs []error
	for round := 1; ; round++ {
		lastErrs = lastErrs[:0]
		if err := e.h.ProbeAll(ctx); err != nil {
			lastErrs = append(lastErrs, err)
		}
		if _, err := e.h.RepairAll(ctx, nil); err != nil {
			lastErrs = append(lastErrs, err)
		}
		st, err := e.h.Status(ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		if done(st) {
			e.t.Logf("%s: %d stripes at margin %d after %d healer rounds (%v); %d shard bytes rebuilt so far",
				what, st.Stripes, st.WorstMargin, round, time.Since(start).Round(time.Millisecond), st.Repairs.BytesWritten)
			return st
		}
		if time.Now().After(deadline) {
			j, _ := json.MarshalIndent(st, "", "  ")
			e.t.Fatalf("%s: not done in time; last errors %v\nstatus %s", what, lastErrs, j)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// healedOnto is the goal after losing zdb-old: full redundancy, every
// lost shard on the named replacement.
func (e *e2eStore) healedOnto(name string) func(*healer.Status) bool {
	return func(st *healer.Status) bool {
		return st.WorstMargin == 2 && st.DegradedStripes == 0 && shardsOn(st, "zdb-old") == 0 && shardsOn(st, name) == e.stripes
	}
}

// checkAll reads every object back and checks that no password reached
// the logs or the config file, and that the secrets file is private.
func (e *e2eStore) checkAll(passwords ...string) {
	e.t.Helper()
	ctx := context.Background()
	for name, want := range e.objects {
		r, err := e.s.Open(ctx, name)
		if err != nil {
			e.t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, want) {
			e.t.Fatalf("%s reads back wrong after healing: %v", name, err)
		}
	}
	cfgRaw, _ := os.ReadFile(e.cfgPath)
	for _, pw := range append(passwords, e2eOldPassword) {
		if strings.Contains(e.logs.String(), pw) {
			e.t.Error("a namespace password reached the logs")
		}
		if bytes.Contains(cfgRaw, []byte(pw)) {
			e.t.Error("a namespace password reached the config file")
		}
	}
	if fi, err := os.Stat(filepath.Join(e.dir, "secrets.toml")); err != nil || fi.Mode().Perm() != 0o600 {
		e.t.Errorf("secrets file mode: %v %v", fi.Mode(), err)
	}
}

// TestE2ECommandProvisionerReplacesDeadBackend: the store loses its 0-db
// server. The healer declares it down, gets a replacement 0-db namespace
// from the user's provisioning program, rebuilds every lost shard there,
// and the store is back at full redundancy with every byte readable,
// without anyone touching it.
func TestE2ECommandProvisionerReplacesDeadBackend(t *testing.T) {
	const pwNew = "new-namespace-pw-41be0d"
	newZDB := zdbtest.New(t, zdbtest.Options{})
	if err := newZDB.CreateNamespace("ns-new", pwNew, 0); err != nil {
		t.Fatal(err)
	}
	// The provisioner: a program of the user's, configured as in
	// docs/provisioning.md.
	tools := t.TempDir()
	record := filepath.Join(tools, "record")
	script := filepath.Join(tools, "provision.sh")
	pwFile := filepath.Join(tools, "new-namespace.pw")
	for path, content := range map[string]string{script: e2eProvisionScript, pwFile: pwNew} {
		if err := os.WriteFile(path, []byte(content), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(record, 0o700); err != nil {
		t.Fatal(err)
	}
	e := newE2EStore(t, "node-old", "", healstore.ProvisionerConfig{Kind: "command", Settings: map[string]any{
		"command": []any{script},
		"env":     []any{"RECORD=" + record, "ZDB_ADDR=" + newZDB.Addr(), "PASSWORD_FILE=" + pwFile},
		"timeout": "30s",
	}})

	e.oldZDB.Stop()
	st := e.heal("replace zdb-old", e.healedOnto("zdb-new"))

	if st.Stripes != e.stripes || st.Misplaced != 0 {
		t.Errorf("after healing: %d stripes (want %d), %d misplaced", st.Stripes, e.stripes, st.Misplaced)
	}
	if got := stateOf(st, "zdb-old"); got != "down" && got != "replaced" {
		t.Errorf("zdb-old is %q, want down or replaced", got)
	}
	if got := stateOf(st, "zdb-new"); got != "up" {
		t.Errorf("zdb-new is %q, want up", got)
	}

	// What the program was asked: stay out of every domain in use,
	// including the dead backend's (its node may come back).
	var req struct {
		Action      string `json:"action"`
		Constraints struct {
			AvoidDomains []string `json:"avoid_domains"`
			Level        string   `json:"level"`
			NameHint     string   `json:"name_hint"`
		} `json:"constraints"`
	}
	raw, err := os.ReadFile(filepath.Join(record, "provision.json"))
	if err != nil {
		t.Fatalf("the provisioning program was not run: %v", err)
	}
	if err := json.Unmarshal(raw, &req); err != nil {
		t.Fatal(err)
	}
	slices.Sort(req.Constraints.AvoidDomains)
	wantAvoid := []string{"node:node-old", "node:node1", "node:node2", "node:node3", "node:node4", "node:node5"}
	if req.Action != "provision" || req.Constraints.Level != "node" || !slices.Equal(req.Constraints.AvoidDomains, wantAvoid) {
		t.Errorf("provision request %s; want avoid_domains %v", raw, wantAvoid)
	}

	// The shards really are on the new namespace (plus the identity marker),
	// and its password is in the secrets file.
	if info, ok := newZDB.Namespace("ns-new"); !ok || info.Entries < e.stripes {
		t.Errorf("new namespace holds %d entries, want at least %d shards", info.Entries, e.stripes)
	}
	if got, err := e.s.Secrets().Lookup("zdb-new"); err != nil || got != pwNew {
		t.Errorf("secrets file entry for zdb-new: %v", err)
	}
	e.checkAll(pwNew)
}

func shardsOn(st *healer.Status, backend string) int {
	for _, b := range st.Backends {
		if b.Name == backend {
			return b.Shards
		}
	}
	return 0
}

func stateOf(st *healer.Status, backend string) string {
	for _, b := range st.Backends {
		if b.Name == backend {
			return b.State
		}
	}
	return ""
}

// fakeGrid stands in for the ThreeFold Grid: a grid proxy serving the
// node list of the tfgrid package's test data, that package's fake tfcmd,
// and one 0-db server where each deployment's namespace appears shortly
// after `tfcmd deploy`, with the password it was deployed with.
type fakeGrid struct {
	proxy *httptest.Server
	zdb   *zdbtest.Server
	dir   string // fake tfcmd state
	tfcmd string
}

func newFakeGrid(t *testing.T) *fakeGrid {
	t.Helper()
	nodes, err := os.ReadFile("healer/provision/tfgrid/testdata/nodes.json")
	if err != nil {
		t.Fatal(err)
	}
	tfcmd, err := filepath.Abs("healer/provision/tfgrid/testdata/tfcmd")
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGrid{zdb: zdbtest.New(t, zdbtest.Options{}), dir: t.TempDir(), tfcmd: tfcmd}
	g.proxy = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/nodes" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(nodes)
	}))
	t.Cleanup(g.proxy.Close)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		created := map[string]bool{}
		for ctx.Err() == nil {
			ents, _ := os.ReadDir(filepath.Join(g.dir, "projects"))
			for _, e := range ents {
				if !created[e.Name()] {
					created[e.Name()] = g.createNamespace(e.Name())
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return g
}

// createNamespace makes the namespace of a deployed project, named as the
// fake tfcmd reports it. It returns false while the project file is still
// being written.
func (g *fakeGrid) createNamespace(project string) bool {
	raw, err := os.ReadFile(filepath.Join(g.dir, "projects", project))
	if err != nil {
		return false
	}
	kv := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	if kv["contract"] == "" {
		return false
	}
	ns := kv["node"] + "-" + kv["contract"] + "-" + project + "0"
	return g.zdb.CreateNamespace(ns, kv["password"], 0) == nil
}

func (g *fakeGrid) calls(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(g.dir, "calls"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(raw)), "\n")
}

// TestE2ETFGridProvisionerReplacesAndReleases: a store whose 0-db
// namespace sat on grid node 11 loses it. The healer has the tfgrid
// provisioner pick another node through the grid proxy, deploy a namespace
// there with tfcmd, and rebuilds onto it. Draining that backend later makes
// the healer deploy another one and, once it is empty, cancel its contract.
func TestE2ETFGridProvisionerReplacesAndReleases(t *testing.T) {
	ctx := context.Background()
	g := newFakeGrid(t)
	_, port, err := net.SplitHostPort(g.zdb.Addr())
	if err != nil {
		t.Fatal(err)
	}
	ledger := filepath.Join(t.TempDir(), "tfgrid-ledger.json")
	e := newE2EStore(t, "11", "1", healstore.ProvisionerConfig{Kind: "tfgrid", Settings: map[string]any{
		"network":   "test",
		"proxy_url": g.proxy.URL,
		"tfcmd":     g.tfcmd,
		"tfcmd_env": []any{"FAKE_TFCMD_DIR=" + g.dir, "FAKE_TFCMD_IPS=127.0.0.1", "FAKE_TFCMD_PORT=" + port},
		// 11 GiB: more than node 12 has free (10.7 GB), so the choices
		// below are certain rather than weighted draws.
		"size_gb":       11,
		"max_backends":  2,
		"ledger":        ledger,
		"probe_timeout": "30s",
	}})

	e.oldZDB.Stop()
	// Node 11 holds the dead backend: the only other eligible node of the
	// proxy's list is 16 (farm 4).
	var first string
	st := e.heal("replace zdb-old", func(st *healer.Status) bool {
		first = backendIn(st, "node:16")
		return first != "" && e.healedOnto(first)(st)
	})
	if !strings.HasPrefix(first, "hsrepl") || st.Misplaced != 0 {
		t.Errorf("replacement %q, %d misplaced stripes", first, st.Misplaced)
	}
	pw, err := e.s.Secrets().Lookup(first)
	if err != nil || len(pw) != 48 {
		t.Fatalf("secret of %s: %v", first, err)
	}
	calls := g.calls(t)
	if len(calls) != 2 || !strings.HasPrefix(calls[0], "deploy zdb --project_name "+first+" --size 11 --node 16 --password ") ||
		calls[1] != "get zdb "+first {
		t.Errorf("tfcmd calls %q", calls)
	}

	// Retire the replacement: its shards move to a new deployment (node 11
	// is free again, the dead backend there being replaced), then its own
	// contract is cancelled.
	if err := e.h.Drain(ctx, first); err != nil {
		t.Fatal(err)
	}
	var second string
	e.heal("drain "+first, func(st *healer.Status) bool {
		second = backendIn(st, "node:11")
		return second != "" && second != "zdb-old" && st.WorstMargin == 2 && st.DegradedStripes == 0 &&
			shardsOn(st, first) == 0 && shardsOn(st, second) == e.stripes && stateOf(st, first) == "retired"
	})
	if !slices.Contains(g.calls(t), "cancel "+first) {
		t.Errorf("retired backend's contract not cancelled: %q", g.calls(t))
	}
	raw, err := os.ReadFile(ledger)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(second)) || bytes.Contains(raw, []byte(first)) || bytes.Contains(raw, []byte(pw)) {
		t.Errorf("ledger after the drain:\n%s", raw)
	}
	e.checkAll(pw)
}

// backendIn returns the backend in domain dom that is not retired or
// replaced, if any.
func backendIn(st *healer.Status, dom string) string {
	for _, b := range st.Backends {
		if b.Domain == dom && b.State != "retired" && b.State != "replaced" && b.Name != "zdb-old" {
			return b.Name
		}
	}
	return ""
}
