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
