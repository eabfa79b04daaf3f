package healstore_test

// Tests of DESIGN.md's invariants through the public API only, as a
// user of the library would break them: secrets (6), checksums kept in the
// metastore (3), failure domains on rebuild targets (4) and a repair queue
// that outlives the process (5).

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/all"
	"github.com/healstore/healstore/backends/zdb/zdbtest"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/metastore"
)

// qaS3 returns the S3 server named by HEALSTORE_S3_ENDPOINT. Without one
// it returns ok=false, or fails the test under
// HEALSTORE_REQUIRE_COMPONENTS=1.
func qaS3(t *testing.T) (endpoint, access, secret, region string, ok bool) {
	t.Helper()
	endpoint = os.Getenv("HEALSTORE_S3_ENDPOINT")
	if endpoint == "" {
		if os.Getenv("HEALSTORE_REQUIRE_COMPONENTS") == "1" {
			t.Fatal("HEALSTORE_S3_ENDPOINT is not set and HEALSTORE_REQUIRE_COMPONENTS=1: the S3 server (versitygw) is required; start it with scripts/services.sh start")
		}
		return "", "", "", "", false
	}
	region = os.Getenv("HEALSTORE_S3_REGION")
	if region == "" {
		region = "us-east-1"
	}
	return endpoint, os.Getenv("HEALSTORE_S3_ACCESS_KEY"), os.Getenv("HEALSTORE_S3_SECRET_KEY"), region, true
}

func qaRandHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// qaProxy forwards TCP to a target until stopped, so a test can take one
// S3 backend away while the server keeps serving the others.
type qaProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	closed bool
}

func newQAProxy(t *testing.T, target string) *qaProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &qaProxy{ln: ln, target: target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *qaProxy) pipe(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns = append(p.conns, c, up)
	p.mu.Unlock()
	go func() { io.Copy(up, c); up.Close() }()
	io.Copy(c, up)
	c.Close()
}

func (p *qaProxy) addr() string { return p.ln.Addr().String() }

func (p *qaProxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	p.ln.Close()
	for _, c := range p.conns {
		c.Close()
	}
}

// syncBuffer is an io.Writer safe for the concurrent log handlers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// secretSet holds every secret of a test in the forms a leak could take:
// raw, hex and base64.
type secretSet struct {
	forms map[string][]byte // description -> bytes
}

func (s *secretSet) add(name string, secret []byte) {
	if s.forms == nil {
		s.forms = map[string][]byte{}
	}
	s.forms[name] = secret
	s.forms[name+" (hex)"] = []byte(hex.EncodeToString(secret))
	s.forms[name+" (base64)"] = []byte(base64.StdEncoding.EncodeToString(secret))
	s.forms[name+" (base64url)"] = []byte(base64.RawURLEncoding.EncodeToString(secret))
}

// check fails the test when b holds any form of any secret.
func (s *secretSet) check(t *testing.T, what string, b []byte) {
	t.Helper()
	for name, f := range s.forms {
		if len(f) >= 8 && bytes.Contains(b, f) {
			i := bytes.Index(b, f)
			lo, hi := max(0, i-80), min(len(b), i+len(f)+20)
			ctx := strings.ReplaceAll(string(b[lo:hi]), string(f), "<"+name+">")
			t.Errorf("%s holds the %s: ...%q...", what, name, ctx)
		}
	}
}

// TestQASecretsNeverAppear defends invariant 6 on a store that uses every
// kind of secret at once: an encrypted policy (master key), 0-db backends
// with namespace passwords on a server with an admin password, and S3
// backends with a secret key. It writes, reads, lists, takes a snapshot,
// runs the healer (probe, scrub, repair, status, metrics, GC), loses
// backends, reopens with a wrong zdb password and a wrong S3 secret, adds
// a backend with a wrong password through the daemon API, and recovers the
// store elsewhere. It then searches everything a user or an attacker with
// the backends could read: all logs (debug level), every error text, every
// JSON the API returns, the metastore (raw key/values and its dump), the
// files under the store directory other than the key and secrets files,
// and every key and value on every backend, shard headers included.
func TestQASecretsNeverAppear(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var logs syncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var secrets secretSet
	var texts []string // error texts and API output, searched at the end
	note := func(what string, v any) {
		switch x := v.(type) {
		case nil:
		case error:
			texts = append(texts, what+": "+x.Error())
		case string:
			texts = append(texts, what+": "+x)
		default:
			b, err := json.Marshal(x)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			texts = append(texts, what+": "+string(b))
		}
	}

	keyFile := filepath.Join(dir, "healstore.key")
	if err := healstore.GenerateMasterKey(keyFile); err != nil {
		t.Fatal(err)
	}
	key, err := healstore.LoadMasterKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	secrets.add("master key", key)
	secretsFile := filepath.Join(dir, "secrets.toml")
	sec, err := healstore.OpenSecrets(secretsFile)
	if err != nil {
		t.Fatal(err)
	}

	// Three 0-db backends, each on its own server so one can be stopped.
	adminPW := "admin-" + qaRandHex(t, 12)
	secrets.add("zdb admin password", []byte(adminPW))
	var specs []backends.Spec
	zdbs := map[string]*zdbtest.Server{}
	for i := 1; i <= 3; i++ {
		srv := zdbtest.New(t, zdbtest.Options{AdminPassword: adminPW})
		name := fmt.Sprintf("z%d", i)
		pw := "nspw-" + qaRandHex(t, 12)
		secrets.add("password of "+name, []byte(pw))
		if err := srv.CreateNamespace("hs-"+name, pw, 0); err != nil {
			t.Fatal(err)
		}
		ref := "zdb/" + name
		if err := sec.Set(ref, pw); err != nil {
			t.Fatal(err)
		}
		zdbs[name] = srv
		specs = append(specs, backends.Spec{Name: name, Kind: backends.KindZDB, Address: srv.Addr(),
			Namespace: "hs-" + name, SecretRef: ref, Node: "node-" + name})
	}
	// Three S3 backends (local directories when no S3 server is given and
	// none is required).
	endpoint, access, s3secret, region, haveS3 := qaS3(t)
	proxies := map[string]*qaProxy{}
	direct := map[string]backends.Spec{} // S3 specs without the proxy
	run := qaRandHex(t, 4)
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("s%d", i)
		if !haveS3 {
			p := filepath.Join(t.TempDir(), name)
			specs = append(specs, backends.Spec{Name: name, Kind: backends.KindLocal, Path: p, Node: "node-" + name})
			continue
		}
		ref := "s3/" + name
		if err := sec.Set(ref, s3secret); err != nil {
			t.Fatal(err)
		}
		px := newQAProxy(t, endpoint)
		proxies[name] = px
		spec := backends.Spec{Name: name, Kind: backends.KindS3, Address: px.addr(), Region: region,
			Bucket: "hs-qa-" + run + "-" + name, Prefix: "store", AccessKey: access, SecretRef: ref, Node: "node-" + name}
		specs = append(specs, spec)
		spec.Address = endpoint
		direct[name] = spec
	}
	if haveS3 {
		secrets.add("S3 secret key", []byte(s3secret))
	} else {
		t.Log("no S3 server: the S3 part runs on local directories (set HEALSTORE_S3_ENDPOINT, or HEALSTORE_REQUIRE_COMPONENTS=1 to require it)")
	}

	cfg := healstore.DefaultConfig()
	cfg.Dir = dir
	cfg.MasterKeyFile = keyFile
	cfg.SecretsFile = secretsFile
	cfg.Policy.K, cfg.Policy.M = 4, 2
	cfg.Policy.BlockSize = 64 << 10
	cfg.Policy.Compression = "zstd"
	cfg.Policy.Encryption = "aes-256-gcm"
	cfg.Healer.GracePeriod = 0
	cfg.Healer.GCDelay = 0
	cfg.Backends = specs
	cfg.Logger = logger

	tune := func(c *healer.Config) {
		c.Grace = 0
		c.SuspectAfter = 1
		c.ProbeTimeout = healer.Duration(3 * time.Second)
		c.RetryBackoff = healer.Duration(time.Millisecond)
	}

	s, err := healstore.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	data := make([]byte, 300<<10) // five blocks
	rand.Read(data)
	copy(data, "confidential contents: ")
	if _, err := s.Put(ctx, "docs/a", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	w, err := s.Create(ctx, "docs/b")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "small object %s", strings.Repeat("x", 1000))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	readBack := func(name string) []byte {
		t.Helper()
		r, err := s.Open(ctx, name)
		if err != nil {
			t.Fatalf("open %s: %v", name, err)
		}
		defer r.Close()
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		return b
	}
	if !bytes.Equal(readBack("docs/a"), data) {
		t.Fatal("docs/a reads back different")
	}
	info, err := s.Stat(ctx, "docs/a")
	note("stat", info)
	note("stat error", err)
	list, _, err := s.List(ctx, "", "", 0)
	note("list", list)
	note("list error", err)
	_, err = s.Open(ctx, "no such object")
	note("open missing", err)
	hr, err := s.Health(ctx)
	note("health", hr)
	note("health error", err)

	h, err := s.NewHealer(ctx, healstore.HealerOptions{Tune: tune})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	api := httptest.NewServer(h.Handler())
	defer api.Close()
	call := func(method, path, body string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, api.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(healer.ClientHeader, "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			note(method+" "+path, err)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		note(fmt.Sprintf("%s %s -> %d", method, path, resp.StatusCode), string(b))
	}
	note("probe", h.ProbeAll(ctx))
	p, err := h.Scrub(ctx, healer.ScrubOptions{Deep: true})
	note("scrub", p)
	note("scrub error", err)
	if err == nil && (p.Corrupt != 0 || p.Missing != 0) {
		t.Fatalf("scrub of a healthy store found damage: %+v", p)
	}
	sn, err := s.NewSnapshotter(healstore.DefaultSnapshotConfig())
	if err != nil {
		t.Fatal(err)
	}
	si, err := sn.Take(ctx, true)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	note("snapshot", si)
	call("GET", "/status", "")
	call("GET", "/metrics", "")

	// Lose one 0-db server and one S3 backend: a degraded write (5 of 6
	// is the quorum) fails, reads go on, the healer records why repairs
	// fail, status and health describe it.
	zdbs["z1"].Stop()
	if haveS3 {
		proxies["s1"].stop()
	}
	_, err = s.Put(ctx, "docs/c", bytes.NewReader(data[:100<<10]))
	note("put with two backends gone", err)
	if haveS3 && err == nil {
		t.Fatal("a put with two of six backends gone succeeded; quorum is 5")
	}
	if !bytes.Equal(readBack("docs/a"), data) {
		t.Fatal("degraded read differs")
	}
	note("probe (degraded)", h.ProbeAll(ctx))
	rep, err := h.RepairAll(ctx, nil)
	note("repair", rep)
	note("repair error", err)
	st, err := h.Status(ctx)
	note("status", st)
	note("status error", err)
	hr, err = s.Health(ctx)
	note("health (degraded)", hr)
	note("health error (degraded)", err)
	gc, err := h.GC(ctx)
	note("gc", gc)
	note("gc error", err)
	call("GET", "/status", "")
	call("POST", "/v1/heal", "")

	// The daemon API adds a backend whose password is wrong: the error
	// says so without echoing it.
	badNS := "hs-added"
	goodPW, wrongPW := "added-"+qaRandHex(t, 12), "wrongadd-"+qaRandHex(t, 12)
	secrets.add("password of the added backend", []byte(goodPW))
	secrets.add("wrong password given to backend add", []byte(wrongPW))
	if err := zdbs["z2"].CreateNamespace(badNS, goodPW, 0); err != nil {
		t.Fatal(err)
	}
	addSpec := backends.Spec{Name: "z9", Kind: backends.KindZDB, Address: zdbs["z2"].Addr(), Namespace: badNS,
		SecretRef: "zdb/z9", Node: "node-z9"}
	body, _ := json.Marshal(map[string]any{"spec": addSpec, "secret": wrongPW})
	call("POST", "/v1/backends", string(body))
	h.Close()
	if err := s.Close(); err != nil {
		note("close", err)
	}

	// Collect what is at rest while the originals are intact: the
	// metastore, then every value on every backend.
	s2, err := healstore.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkMeta := func(label string, st *healstore.Store) {
		t.Helper()
		var dump bytes.Buffer
		if err := metastore.Dump(ctx, st.Meta().KV(), &dump); err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(dump.Bytes(), []byte("docs/a")) {
			t.Fatalf("%s metastore dump holds no object: it checks nothing", label)
		}
		secrets.check(t, label+" metastore dump", dump.Bytes())
		n := 0
		err := st.Meta().KV().Scan(ctx, nil, nil, func(k, v []byte) error {
			n++
			secrets.check(t, fmt.Sprintf("%s metastore key %q", label, k), k)
			secrets.check(t, fmt.Sprintf("%s metastore value of %q", label, k), v)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s metastore: %d records searched", label, n)
	}
	checkMeta("the", s2)
	s2.Close()

	if err := zdbs["z1"].Restart(); err != nil {
		t.Fatal(err)
	}
	values, headers := 0, 0
	for _, spec := range specs {
		if d, ok := direct[spec.Name]; ok {
			spec = d // its proxy is gone; read the bucket directly
		}
		b, err := all.Open(ctx, spec, sec.Lookup)
		if err != nil {
			t.Fatalf("open %s to read its values: %v", spec.Name, err)
		}
		err = b.List(ctx, "", func(k string, size int64) error {
			v, err := b.Get(ctx, k)
			if err != nil {
				return fmt.Errorf("get %s: %w", k, err)
			}
			values++
			secrets.check(t, "backend "+spec.Name+" key "+k, []byte(k))
			secrets.check(t, "backend "+spec.Name+" value "+k, v)
			if _, err := encoder.ParseHeader(v); err == nil {
				headers++
			}
			return nil
		})
		b.Close()
		if err != nil {
			t.Fatalf("list %s: %v", spec.Name, err)
		}
	}
	if headers < 6*5 {
		t.Fatalf("only %d shards (%d values) on the backends: the search covered too little", headers, values)
	}
	t.Logf("backends: %d values searched, %d of them shards", values, headers)

	// Wrong credentials: a wrong password for z2 and a wrong secret key
	// for s2. Open works around them or fails; nothing shows them.
	wrongZ := "wrongns-" + qaRandHex(t, 12)
	secrets.add("wrong zdb password", []byte(wrongZ))
	if err := sec.Set("zdb/z2", wrongZ); err != nil {
		t.Fatal(err)
	}
	if haveS3 {
		wrongS := "wrongs3-" + qaRandHex(t, 16)
		secrets.add("wrong S3 secret", []byte(wrongS))
		if err := sec.Set("s3/s2", wrongS); err != nil {
			t.Fatal(err)
		}
	}
	sBad, err := healstore.Open(ctx, cfg)
	note("open with wrong credentials", err)
	if err == nil {
		for _, u := range sBad.Unreachable() {
			note("unreachable "+u.Name, u.Error)
		}
		if len(sBad.Unreachable()) == 0 {
			t.Error("a wrong zdb password went unnoticed at open")
		}
		_, err = sBad.Put(ctx, "docs/d", bytes.NewReader(data[:10<<10]))
		note("put with wrong credentials", err)
		r, err := sBad.Open(ctx, "docs/a")
		if err == nil {
			_, err = io.Copy(io.Discard, r)
			r.Close()
		}
		note("read with wrong credentials", err)
		hr, err := sBad.Health(ctx)
		note("health with wrong credentials", hr)
		note("health error with wrong credentials", err)
		h3, err := sBad.NewHealer(ctx, healstore.HealerOptions{Tune: tune})
		if err == nil {
			note("probe with wrong credentials", h3.ProbeAll(ctx))
			st, err := h3.Status(ctx)
			note("status with wrong credentials", st)
			note("status error with wrong credentials", err)
			p, err := h3.Scrub(ctx, healer.ScrubOptions{Deep: true})
			note("scrub with wrong credentials", p)
			note("scrub error with wrong credentials", err)
			rep, err := h3.RepairAll(ctx, nil)
			note("repair with wrong credentials", rep)
			note("repair error with wrong credentials", err)
			h3.Close()
		} else {
			note("healer with wrong credentials", err)
		}
		checkMeta("the failing store's", sBad)
		sBad.Close()
	}

	// Recovery on a new machine, with the right key and then a wrong one.
	goodSecrets := filepath.Join(t.TempDir(), "secrets.toml")
	gs, err := healstore.OpenSecrets(goodSecrets)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range sec.Refs() {
		v, _ := sec.Lookup(ref)
		gs.Set(ref, v)
	}
	if haveS3 {
		gs.Set("s3/s2", s3secret)
	}
	// z2 keeps its wrong password and s1 its dead proxy: four of six
	// backends answer, enough for the snapshot, and recovery must cope.
	rdir := filepath.Join(t.TempDir(), "recovered")
	rrep, err := healstore.Recover(ctx, healstore.RecoverOptions{
		KeyFile: keyFile, SecretsFile: goodSecrets, Dir: rdir, Logger: logger,
		Backends: []backends.Spec{specs[0]},
	})
	note("recover", rrep)
	note("recover error", err)
	if err != nil {
		t.Errorf("recover with the right key: %v", err)
	} else {
		rcfg, err := healstore.LoadConfig(rrep.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		rcfg.Logger = logger
		rs, err := healstore.Open(ctx, rcfg)
		if err != nil {
			t.Fatalf("open the recovered store: %v", err)
		}
		checkMeta("the recovered", rs)
		rs.Close()
		checkFiles(t, &secrets, rdir, rcfg)
	}
	otherKey := filepath.Join(t.TempDir(), "other.key")
	if err := healstore.GenerateMasterKey(otherKey); err != nil {
		t.Fatal(err)
	}
	ok2, _ := healstore.LoadMasterKey(otherKey)
	secrets.add("other master key", ok2)
	_, err = healstore.Recover(ctx, healstore.RecoverOptions{
		KeyFile: otherKey, SecretsFile: goodSecrets, Dir: filepath.Join(t.TempDir(), "wrongkey"), Logger: logger,
		Backends: []backends.Spec{specs[0]},
	})
	if err == nil {
		t.Error("recover with the wrong key succeeded")
	}
	note("recover with the wrong key", err)

	// The search. Something must have gone wrong visibly, or the error
	// part of the search covered nothing.
	joined := strings.Join(texts, "\n")
	for _, want := range []string{"z1", "z2"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no error or report names backend %s: the failures were not observed", want)
		}
	}
	secrets.check(t, "an error text or API reply", []byte(joined))
	lb := logs.Bytes()
	if len(lb) == 0 {
		t.Error("no log output at debug level: the log search covered nothing")
	}
	secrets.check(t, "the logs", lb)
	checkFiles(t, &secrets, dir, cfg)
	if t.Failed() {
		t.Logf("error texts and replies searched:\n%s", joined)
	}
}

func mustLookup(t *testing.T, s *healstore.SecretStore, ref string) string {
	t.Helper()
	v, err := s.Lookup(ref)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// checkFiles searches every file under dir except the key and secrets
// files (pebble's tables and log, caches, the config).
func checkFiles(t *testing.T, secrets *secretSet, dir string, cfg *healstore.Config) {
	t.Helper()
	skip := map[string]bool{filepath.Clean(cfg.MasterKeyFile): true, filepath.Clean(cfg.SecretsFile): true}
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || skip[filepath.Clean(p)] {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // pebble removed it meanwhile
			}
			return err
		}
		n++
		secrets.check(t, "file "+p, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("no files under %s", dir)
	}
}

// qaLocalStore opens a store on local backends, one per entry of nodes
// (its node label), with a k+m policy of 64 KiB blocks and no encryption,
// so that a forged shard is only told apart by its checksum.
func qaLocalStore(t *testing.T, k, m int, nodes ...string) (*healstore.Store, *healstore.Config) {
	t.Helper()
	dir := t.TempDir()
	cfg := healstore.DefaultConfig()
	cfg.Dir = dir
	cfg.Policy.K, cfg.Policy.M = k, m
	cfg.Policy.BlockSize = 64 << 10
	cfg.Policy.Encryption = "none"
	cfg.Policy.Compression = "none"
	cfg.Healer.GracePeriod = 0
	cfg.Healer.GCDelay = 0
	for i, n := range nodes {
		cfg.Backends = append(cfg.Backends, backends.Spec{Name: fmt.Sprintf("b%d", i+1), Kind: backends.KindLocal,
			Path: filepath.Join(dir, "backends", fmt.Sprintf("b%d", i+1)), Node: n})
	}
	s, err := healstore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, cfg
}

func qaHealer(t *testing.T, s *healstore.Store) *healstore.Healer {
	t.Helper()
	h, err := s.NewHealer(context.Background(), healstore.HealerOptions{Tune: func(c *healer.Config) {
		c.Grace = 0
		c.SuspectAfter = 1
		c.RetryBackoff = healer.Duration(time.Millisecond)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// qaShards returns the stripe of an object's first block and the bytes of
// each of its shards as the backends hold them now.
func qaShards(t *testing.T, s *healstore.Store, name string) (*metastore.Object, *metastore.Stripe, [][]byte) {
	t.Helper()
	ctx := context.Background()
	obj, err := s.Meta().GetObject(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Meta().GetStripe(ctx, obj.Stripes[0])
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(st.Shards))
	for i, l := range st.Shards {
		if l.Backend == "" {
			continue
		}
		b, ok := s.Backend(l.Backend)
		if !ok {
			t.Fatalf("backend %s not open", l.Backend)
		}
		if out[i], err = b.Get(ctx, l.Key); err != nil {
			t.Fatalf("shard %d on %s: %v", i, l.Backend, err)
		}
	}
	return obj, st, out
}

// forgeShard replaces shard i of an object's first stripe with a shard
// that is whole in itself (valid header, payload checksum, stripe id and
// index) but was cut from other data: only the checksum the metastore
// keeps can tell it from the real one.
func forgeShard(t *testing.T, s *healstore.Store, name string, data []byte, i int) {
	t.Helper()
	ctx := context.Background()
	obj, st, real := qaShards(t, s, name)
	codec, err := s.Codec(s.Config().Policy)
	if err != nil {
		t.Fatal(err)
	}
	other := bytes.Clone(data)
	shardLen := (len(data) + st.K - 1) / st.K
	for j := i * shardLen; j < min(len(other), (i+1)*shardLen); j++ {
		other[j] ^= 0x5a
	}
	forged, err := codec.EncodeBlock(encoder.ObjectID(obj.ID), 0, encoder.StripeID(st.ID), other)
	if err != nil {
		t.Fatal(err)
	}
	fake := bytes.Clone(forged.Shards[i])
	if bytes.Equal(fake, real[i]) {
		t.Fatalf("forged shard %d equals the real one: the test would check nothing", i)
	}
	if err := codec.VerifyShard(encoder.StripeID(st.ID), i, fake, nil); err != nil {
		t.Fatalf("forged shard %d fails its own checks (%v): the test would check nothing", i, err)
	}
	if err := codec.VerifyShard(encoder.StripeID(st.ID), i, fake, st.Shards[i].Sum); err == nil {
		t.Fatalf("forged shard %d passes the metastore checksum", i)
	}
	b, _ := s.Backend(st.Shards[i].Backend)
	if err := b.Put(ctx, st.Shards[i].Key, fake); err != nil {
		t.Fatal(err)
	}
}

// wipeBackend deletes every value a backend holds, its marker included,
// as a disk replaced under a running store would look.
func wipeBackend(t *testing.T, s *healstore.Store, name string) {
	t.Helper()
	ctx := context.Background()
	b, ok := s.Backend(name)
	if !ok {
		t.Fatalf("backend %s not open", name)
	}
	var keys []string
	if err := b.List(ctx, "", func(k string, _ int64) error { keys = append(keys, k); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := b.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
}

func qaRead(t *testing.T, s *healstore.Store, name string) []byte {
	t.Helper()
	r, err := s.Open(context.Background(), name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}

// TestQARebuildAndScrubUseMetastoreChecksums defends invariant 3 beyond
// the read path: a shard that is whole in itself but not the one the
// metastore recorded must count as corrupt for the rebuilder (which would
// otherwise compute new parity from forged data, and with no encryption
// nothing would ever notice) and for the deep scrub.
func TestQARebuildAndScrubUseMetastoreChecksums(t *testing.T) {
	ctx := context.Background()
	s, _ := qaLocalStore(t, 4, 2, "n1", "n2", "n3", "n4", "n5", "n6")
	data := make([]byte, 40<<10)
	rand.Read(data)
	other := make([]byte, 40<<10)
	rand.Read(other)
	for name, d := range map[string][]byte{"rebuilt": data, "scrubbed": other} {
		if _, err := s.Put(ctx, name, bytes.NewReader(d)); err != nil {
			t.Fatal(err)
		}
	}
	_, st, orig := qaShards(t, s, "rebuilt")
	_, st2, orig2 := qaShards(t, s, "scrubbed")

	// The rebuilder: data shard 0 forged, the backend of parity shard 5
	// wiped. The monitor queues the wiped backend's stripes with no
	// verify pass; the rebuilder reads data shards first and must find
	// the forgery by the metastore checksum.
	forgeShard(t, s, "rebuilt", data, 0)
	wipeBackend(t, s, st.Shards[5].Backend)
	h := qaHealer(t, s)
	if err := h.ProbeAll(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Meta().QueueLen(ctx); n == 0 {
		t.Fatal("a wiped backend queued nothing")
	}
	rep, err := h.RepairAll(ctx, nil)
	if err != nil || rep.Failed != 0 || rep.Remaining != 0 {
		t.Fatalf("repair %+v: %v", rep, err)
	}
	_, after, now := qaShards(t, s, "rebuilt")
	for i := range orig {
		if !bytes.Equal(now[i], orig[i]) {
			t.Errorf("shard %d after the rebuild (on %s) is not the original: the rebuild trusted a shard the metastore checksum rejects", i, after.Shards[i].Backend)
		}
		if !bytes.Equal(after.Shards[i].Sum, st.Shards[i].Sum) {
			t.Errorf("shard %d: metastore checksum changed in the rebuild", i)
		}
	}
	if !bytes.Equal(qaRead(t, s, "rebuilt"), data) {
		t.Fatal("rebuilt object reads back different")
	}

	// The scrubber: a forged shard in the other object; the deep pass
	// must count it corrupt and queue the stripe, the repair restore it.
	_, st2, _ = qaShards(t, s, "scrubbed")
	forgeShard(t, s, "scrubbed", other, 1)
	p, err := h.Scrub(ctx, healer.ScrubOptions{Deep: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.Corrupt != 1 || p.Queued != 1 {
		t.Fatalf("deep scrub over one forged shard: %+v", p)
	}
	if _, err := h.RepairAll(ctx, nil); err != nil {
		t.Fatal(err)
	}
	_, _, now2 := qaShards(t, s, "scrubbed")
	for i := range orig2 {
		if !bytes.Equal(now2[i], orig2[i]) {
			t.Errorf("scrubbed object: shard %d (on %s) is not the original after repair", i, st2.Shards[i].Backend)
		}
	}
}

// TestQARebuildKeepsFailureDomains defends invariant 4 for rebuild
// targets where backends share a node: draining a backend when the only
// free backend sits on a node the stripe already uses must move nothing,
// and once a backend on a new node exists every shard moves there.
func TestQARebuildKeepsFailureDomains(t *testing.T) {
	ctx := context.Background()
	// b7 shares node n1 with b1: each stripe uses one of them.
	s, cfg := qaLocalStore(t, 4, 2, "n1", "n2", "n3", "n4", "n5", "n6", "n1")
	want := map[string][]byte{}
	for i := range 8 {
		d := make([]byte, 10<<10+i)
		rand.Read(d)
		name := fmt.Sprintf("obj%d", i)
		want[name] = d
		if _, err := s.Put(ctx, name, bytes.NewReader(d)); err != nil {
			t.Fatal(err)
		}
	}
	nodeOf := map[string]string{}
	for _, b := range cfg.Backends {
		nodeOf[b.Name] = b.Node
	}
	check := func(stage string) (onB3, onNew int) {
		t.Helper()
		err := s.Meta().ScanStripes(ctx, [16]byte{}, func(st *metastore.Stripe) error {
			seen := map[string]int{}
			for i, l := range st.Shards {
				if l.Backend == "" {
					return fmt.Errorf("%s: stripe %x shard %d has no location", stage, st.ID, i)
				}
				n := nodeOf[l.Backend]
				if n == "" {
					return fmt.Errorf("%s: stripe %x shard %d on unknown backend %s", stage, st.ID, i, l.Backend)
				}
				if j, dup := seen[n]; dup {
					return fmt.Errorf("%s: stripe %x: shards %d and %d both on node %s (invariant 4)", stage, st.ID, j, i, n)
				}
				seen[n] = i
				switch l.Backend {
				case "b3":
					onB3++
				case "b8":
					onNew++
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return onB3, onNew
	}
	before, _ := check("after the writes")
	if before != 8 {
		t.Fatalf("b3 holds %d of 8 stripes; every stripe should use it", before)
	}

	h := qaHealer(t, s)
	if err := h.ProbeAll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Drain(ctx, "b3"); err != nil {
		t.Fatal(err)
	}
	rep, err := h.RepairAll(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Repaired != 0 {
		t.Fatalf("drain with no free node moved %d stripes: %+v", rep.Repaired, rep)
	}
	if left, _ := check("draining with no free node"); left != 8 {
		t.Fatalf("b3 holds %d stripes, want all 8 still there", left)
	}
	for name, d := range want {
		if !bytes.Equal(qaRead(t, s, name), d) {
			t.Fatalf("%s reads back different while draining", name)
		}
	}

	// A backend on a new node: the drain completes onto it.
	spec := backends.Spec{Name: "b8", Kind: backends.KindLocal, Path: filepath.Join(cfg.Dir, "backends", "b8"), Node: "n7"}
	if err := os.MkdirAll(spec.Path, 0o700); err != nil {
		t.Fatal(err)
	}
	nodeOf["b8"] = "n7"
	if err := h.AddBackend(ctx, spec, ""); err != nil {
		t.Fatal(err)
	}
	if rep, err = h.RepairAll(ctx, nil); err != nil || rep.Repaired != 8 {
		t.Fatalf("drain onto a new node: %+v, %v", rep, err)
	}
	left, moved := check("after the drain")
	if left != 0 || moved != 8 {
		t.Fatalf("after the drain b3 holds %d stripes and b8 %d; want 0 and 8", left, moved)
	}
	for name, d := range want {
		if !bytes.Equal(qaRead(t, s, name), d) {
			t.Fatalf("%s reads back different after the drain", name)
		}
	}
}

// TestQARepairQueueSurvivesReopen defends invariant 5 across a process's
// life: stripes queued by one store and healer, partly repaired, are
// still queued after both are closed and the store reopened from its
// pebble metastore, and the new healer repairs exactly the rest.
func TestQARepairQueueSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	s, cfg := qaLocalStore(t, 4, 2, "n1", "n2", "n3", "n4", "n5", "n6")
	want := map[string][]byte{}
	for i := range 6 {
		d := make([]byte, 20<<10)
		rand.Read(d)
		name := fmt.Sprintf("obj%d", i)
		want[name] = d
		if _, err := s.Put(ctx, name, bytes.NewReader(d)); err != nil {
			t.Fatal(err)
		}
	}
	wipeBackend(t, s, "b2")
	h := qaHealer(t, s)
	if err := h.ProbeAll(ctx); err != nil {
		t.Fatal(err)
	}
	items, err := s.Meta().Queue(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 6 {
		t.Fatalf("%d stripes queued after wiping a backend that held 6", len(items))
	}
	for _, it := range items[:2] {
		if o, err := h.Repair(ctx, it); o != healer.Repaired {
			t.Fatalf("repair: %v %v", o, err)
		}
	}
	h.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := healstore.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if n, err := s2.Meta().QueueLen(ctx); err != nil || n != 4 {
		t.Fatalf("after reopening, %d stripes queued (%v), want the 4 not yet repaired", n, err)
	}
	h2 := qaHealer(t, s2)
	rep, err := h2.RepairAll(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Repaired != 4 || rep.NoOp != 0 || rep.Failed != 0 {
		t.Fatalf("reopened healer: %+v, want exactly the 4 left repaired", rep)
	}
	// Each repaired stripe read k shards and wrote one: nothing redone.
	_, _, sh := qaShards(t, s2, "obj0")
	if rep.BytesWritten != 4*int64(len(sh[0])) {
		t.Fatalf("reopened healer wrote %d bytes for 4 one-shard repairs of %d-byte shards", rep.BytesWritten, len(sh[0]))
	}
	for name, d := range want {
		if !bytes.Equal(qaRead(t, s2, name), d) {
			t.Fatalf("%s reads back different", name)
		}
	}
}
