package healstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/zdb/zdbtest"
	"github.com/healstore/healstore/metastore"
)

// s3Env returns the S3 server of HEALSTORE_S3_ENDPOINT; without one the
// test skips, or fails under HEALSTORE_REQUIRE_COMPONENTS=1.
func s3Env(t *testing.T) (endpoint, access, secret, region string) {
	t.Helper()
	endpoint = os.Getenv("HEALSTORE_S3_ENDPOINT")
	if endpoint == "" {
		if os.Getenv("HEALSTORE_REQUIRE_COMPONENTS") == "1" {
			t.Fatal("HEALSTORE_S3_ENDPOINT is not set and HEALSTORE_REQUIRE_COMPONENTS=1: the S3 server (versitygw) is required")
		}
		t.Skip("HEALSTORE_S3_ENDPOINT not set: no S3 server (start one with scripts/services.sh start)")
	}
	region = os.Getenv("HEALSTORE_S3_REGION")
	if region == "" {
		region = "us-east-1"
	}
	return endpoint, os.Getenv("HEALSTORE_S3_ACCESS_KEY"), os.Getenv("HEALSTORE_S3_SECRET_KEY"), region
}

// proxy forwards TCP connections to target until stopped; stopping it is
// what stopping a server looks like to a client: refused connections and
// cut transfers.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				return
			}
			if !p.track(c) || !p.track(up) {
				c.Close()
				up.Close()
				return
			}
			go func() { io.Copy(up, c); up.Close() }()
			io.Copy(c, up)
			c.Close()
		}()
	}
}

func (p *proxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// s3Config is a 4+2 store over six S3 backends, one bucket each, each
// reached through its own proxy.
func s3Config(t *testing.T) (*Config, map[string]*proxy, string) {
	endpoint, access, secret, region := s3Env(t)
	run := randHex(4)
	proxies := map[string]*proxy{}
	cfg := testConfig(t, testOpts{edit: func(c *Config) {
		for i := range c.Backends {
			name := c.Backends[i].Name
			p := startProxy(t, endpoint)
			proxies[name] = p
			c.Backends[i] = backends.Spec{
				Name: name, Kind: backends.KindS3, Address: p.addr(), Region: region,
				Bucket: fmt.Sprintf("hs-test-%s-%s", run, name), Prefix: "store",
				AccessKey: access, SecretRef: "s3", Node: c.Backends[i].Node,
			}
		}
	}})
	sec, err := OpenSecrets(cfg.SecretsFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := sec.Set("s3", secret); err != nil {
		t.Fatal(err)
	}
	return cfg, proxies, secret
}

func TestDegradedReadS3(t *testing.T) {
	cfg, proxies, _ := s3Config(t)
	s := openTest(t, cfg)
	degradedRead(t, s, func(names []string) {
		for _, n := range names {
			proxies[n].stop()
		}
	})
	// A write that needs shards fails cleanly with two servers down
	// (quorum 5 of 6) and names the problem. The object is larger than
	// inline_max_size: an inline object needs no backend at all.
	big := strings.Repeat("x", int(cfg.InlineMaxSize)+1)
	_, err := s.Put(context.Background(), "after", strings.NewReader(big))
	if !errors.Is(err, ErrInsufficientBackends) {
		t.Fatalf("put of %d bytes with m servers down: %v", len(big), err)
	}
	if _, err := s.Stat(context.Background(), "after"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("failed put left an object behind: %v", err)
	}
	// An inline object rides in its metadata record and is written.
	if _, err := s.Put(context.Background(), "small", strings.NewReader("x")); err != nil {
		t.Fatalf("inline put with m servers down: %v", err)
	}
}

// checkNoSecret fails when any of secrets appears in b.
func checkNoSecret(t *testing.T, what string, b []byte, secrets map[string][]byte) {
	t.Helper()
	for name, s := range secrets {
		if len(s) > 0 && bytes.Contains(b, s) {
			t.Fatalf("%s contains the %s", what, name)
		}
	}
}

// secretsCheck writes, reads, breaks a backend's credentials, and then
// searches the metadata dump, every value on every backend, the logs and
// the errors for the master key and the backend secrets (invariant 6).
func secretsCheck(t *testing.T, cfg *Config, secrets map[string][]byte, breakCreds func(*Config)) {
	t.Helper()
	ctx := context.Background()
	var logs bytes.Buffer
	var logMu sync.Mutex
	cfg.Logger = slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	key, err := LoadMasterKey(cfg.MasterKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	secrets["master key"] = key
	secrets["master key (hex)"] = []byte(hex.EncodeToString(key))
	s := openTest(t, cfg)
	data := bytes.Repeat([]byte("confidential "), 20000)
	if _, err := s.Put(ctx, "doc", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, s, "doc"), data) {
		t.Fatal("read back differs")
	}
	var errs []string
	if _, err := s.Health(ctx); err != nil {
		errs = append(errs, err.Error())
	}
	var dump bytes.Buffer
	if err := metastore.Dump(ctx, s.meta.KV(), &dump); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dump.String(), "doc") {
		t.Fatal("dump does not hold the object: checked nothing")
	}
	checkNoSecret(t, "the metadata dump", dump.Bytes(), secrets)
	values := 0
	for _, h := range s.handleList() {
		b, ok := s.Backend(h.name)
		if !ok {
			t.Fatalf("backend %s not open", h.name)
		}
		err := b.List(ctx, "", func(k string, size int64) error {
			v, err := b.Get(ctx, k)
			if err != nil {
				return err
			}
			values++
			checkNoSecret(t, "value "+k+" on "+h.name, v, secrets)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if values < 12 {
		t.Fatalf("only %d values on the backends", values)
	}
	s.Close()

	// Wrong credentials: Open must still work around it or fail, and
	// neither the errors nor the logs may show any secret.
	breakCreds(cfg)
	s2, err := Open(ctx, cfg)
	if err != nil {
		errs = append(errs, err.Error())
	} else {
		for _, u := range s2.Unreachable() {
			errs = append(errs, u.Error)
		}
		if _, err := s2.Put(ctx, "doc2", bytes.NewReader(data)); err != nil {
			errs = append(errs, err.Error())
		}
		if rep, err := s2.Health(ctx); err == nil {
			for _, b := range rep.Backends {
				errs = append(errs, b.Error)
			}
		}
		s2.Close()
	}
	if len(strings.Join(errs, "")) == 0 {
		t.Fatal("broken credentials produced no error: checked nothing")
	}
	checkNoSecret(t, "an error", []byte(strings.Join(errs, "\n")), secrets)
	logMu.Lock()
	checkNoSecret(t, "the logs", logs.Bytes(), secrets)
	logMu.Unlock()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestSecretsNeverLeakZDB(t *testing.T) {
	srv := zdbtest.New(t, zdbtest.Options{AdminPassword: "admin-" + randHex(8)})
	secrets := map[string][]byte{}
	cfg := testConfig(t, testOpts{edit: func(c *Config) {
		for i := range c.Backends {
			name := c.Backends[i].Name
			c.Backends[i] = backends.Spec{Name: name, Kind: backends.KindZDB, Address: srv.Addr(),
				Namespace: "ns-" + name, SecretRef: "zdb-" + name, Node: c.Backends[i].Node}
		}
	}})
	sec, err := OpenSecrets(cfg.SecretsFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range cfg.Backends {
		pw := "pw-" + randHex(12)
		if err := srv.CreateNamespace(b.Namespace, pw, 0); err != nil {
			t.Fatal(err)
		}
		if err := sec.Set(b.SecretRef, pw); err != nil {
			t.Fatal(err)
		}
		secrets["password of "+b.Name] = []byte(pw)
	}
	secretsCheck(t, cfg, secrets, func(c *Config) {
		// A wrong password for one namespace: tell it, but never show it.
		wrong := "wrong-" + randHex(12)
		secrets["wrong password"] = []byte(wrong)
		sec, _ := OpenSecrets(c.SecretsFile)
		if err := sec.Set("zdb-b1", wrong); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSecretsNeverLeakS3(t *testing.T) {
	cfg, _, secret := s3Config(t)
	secrets := map[string][]byte{"S3 secret key": []byte(secret)}
	secretsCheck(t, cfg, secrets, func(c *Config) {
		wrong := "wrong-" + randHex(12)
		secrets["wrong S3 secret"] = []byte(wrong)
		sec, _ := OpenSecrets(c.SecretsFile)
		if err := sec.Set("s3", wrong); err != nil {
			t.Fatal(err)
		}
	})
}

func TestEtcdMetastore(t *testing.T) {
	eps := os.Getenv("HEALSTORE_ETCD_ENDPOINTS")
	if eps == "" {
		if os.Getenv("HEALSTORE_REQUIRE_COMPONENTS") == "1" {
			t.Fatal("HEALSTORE_ETCD_ENDPOINTS is not set and HEALSTORE_REQUIRE_COMPONENTS=1: etcd is required")
		}
		t.Skip("HEALSTORE_ETCD_ENDPOINTS not set: no etcd (start one with scripts/services.sh start)")
	}
	prefix := "healstore-test-" + randHex(4) + "/"
	cfg := testConfig(t, testOpts{edit: func(c *Config) {
		c.Metastore = MetastoreConfig{Kind: "etcd", Endpoints: strings.Split(eps, ","), Prefix: prefix}
	}})
	s := openTest(t, cfg)
	ctx := context.Background()
	data := bytes.Repeat([]byte("shared truth "), 20000)
	if _, err := s.Put(ctx, "e", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// No local metadata: a second store on the same etcd prefix sees it.
	if _, err := os.Stat(filepath.Join(cfg.Dir, "meta")); err == nil {
		t.Fatal("pebble metadata created although the metastore is etcd")
	}
	s = openTest(t, cfg)
	if !bytes.Equal(readAll(t, s, "e"), data) {
		t.Fatal("read back through etcd differs")
	}
}
