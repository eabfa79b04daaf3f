package healstore

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	etcdkv "github.com/healstore/healstore/metastore/etcd"
	"github.com/healstore/healstore/metastore/metastoretest"
)

// TestEtcdTLSAndAuth runs a store on an etcd of its own that serves TLS
// only, requires a client certificate (--client-cert-auth) and has user
// authentication enabled, and checks that the [metastore] TLS and
// authentication keys reach it, and that each way of getting them wrong
// fails with an error that says what is wrong (and never the password).
func TestEtcdTLSAndAuth(t *testing.T) {
	bin := etcdBinary(t)
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	ep := startTLSEtcd(t, bin, pki, filepath.Join(dir, "etcd"))
	rootPW := "root-pw-" + randHex(8)
	enableEtcdAuth(t, ep, pki, rootPW)

	pwFile := filepath.Join(dir, "etcd.password")
	if err := os.WriteFile(pwFile, []byte(rootPW+"\n"), 0o600); err != nil { // one trailing newline is not part of it
		t.Fatal(err)
	}
	wrongPW := "wrong-pw-" + randHex(8)
	wrongFile := filepath.Join(dir, "wrong.password")
	if err := os.WriteFile(wrongFile, []byte(wrongPW), 0o600); err != nil {
		t.Fatal(err)
	}
	hostPort := strings.TrimPrefix(ep, "https://")
	prefix := "healstore-tls-" + randHex(4) + "/"
	good := func(c *Config) {
		c.Metastore = MetastoreConfig{Kind: "etcd", Endpoints: []string{hostPort}, Prefix: prefix,
			CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey,
			Username: "root", PasswordFile: pwFile}
	}
	storeDir := t.TempDir()
	cfgWith := func(edit func(*Config)) *Config {
		return testConfig(t, testOpts{dir: storeDir, edit: func(c *Config) { good(c); edit(c) }})
	}

	// The right settings: a put and a get go through etcd.
	cfg := cfgWith(func(*Config) {})
	s := openTest(t, cfg)
	ctx := context.Background()
	data := bytes.Repeat([]byte("over tls "), 30000)
	if _, err := s.Put(ctx, "tls-object", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, s, "tls-object"), data) {
		t.Fatal("read back differs")
	}
	s.Close()
	if _, err := os.Stat(filepath.Join(storeDir, "meta")); err == nil {
		t.Fatal("pebble metadata created although the metastore is etcd")
	}
	// The keys really are in that etcd, under the prefix.
	cli := tlsEtcdClient(t, ep, pki, "root", rootPW)
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count == 0 {
		t.Fatalf("no keys under %s in the TLS etcd: %v", prefix, err)
	}

	// https:// with server_name: the name in the server certificate is
	// checked against server_name, not the endpoint's IP address.
	s = openTest(t, cfgWith(func(c *Config) {
		c.Metastore.Endpoints = []string{"https://" + hostPort}
		c.Metastore.ServerName = "etcd.healstore.test"
	}))
	if !bytes.Equal(readAll(t, s, "tls-object"), data) {
		t.Fatal("read back over https:// with server_name differs")
	}
	s.Close()

	// A user whose role grants only the store's prefix is enough: open,
	// read, write, and the leader election (under the prefix, on a lease).
	userPW := "user-pw-" + randHex(8)
	userFile := filepath.Join(dir, "user.password")
	if err := os.WriteFile(userFile, []byte(userPW), 0o600); err != nil {
		t.Fatal(err)
	}
	addPrefixUser(t, cli, "healstore", userPW, "healstore-rw", prefix)
	s = openTest(t, cfgWith(func(c *Config) { c.Metastore.Username, c.Metastore.PasswordFile = "healstore", userFile }))
	if !bytes.Equal(readAll(t, s, "tls-object"), data) {
		t.Fatal("read back as the prefix's user differs")
	}
	if _, err := s.Put(ctx, "by-user", bytes.NewReader(data[:1000])); err != nil {
		t.Fatal(err)
	}
	led := false
	lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
	err = s.RunAsLeader(lctx, func(context.Context) error { led = true; return nil })
	lcancel()
	if err != nil || !led {
		t.Fatalf("leader election as the prefix's user: led %v, %v", led, err)
	}
	s.Close()
	otherPW := "other-pw-" + randHex(8)
	otherFile := filepath.Join(dir, "other.password")
	if err := os.WriteFile(otherFile, []byte(otherPW), 0o600); err != nil {
		t.Fatal(err)
	}
	addPrefixUser(t, cli, "elsewhere", otherPW, "elsewhere-rw", "some-other-store/")

	secrets := []string{rootPW, wrongPW, userPW, otherPW}
	cases := []struct {
		name string
		edit func(*Config)
		// want: every string must be in the error.
		want []string
		auth bool // errors.Is(err, ErrAuth)
		tls  bool // errors.Is(err, etcdkv.ErrTLS)
	}{
		{name: "wrong password", edit: func(c *Config) { c.Metastore.PasswordFile = wrongFile },
			want: []string{"authentication failed", `user "root"`, "metastore.password_file"}, auth: true},
		{name: "unknown user", edit: func(c *Config) { c.Metastore.Username = "nobody" },
			want: []string{"authentication failed", `user "nobody"`, "metastore.username"}, auth: true},
		{name: "user without a role on the prefix", edit: func(c *Config) { c.Metastore.Username, c.Metastore.PasswordFile = "elsewhere", otherFile },
			want: []string{"permission denied", `user "elsewhere"`, "needs a role granting read and write on prefix"}, auth: true},
		{name: "no user", edit: func(c *Config) { c.Metastore.Username, c.Metastore.PasswordFile = "", "" },
			want: []string{"authentication enabled", "metastore.username"}, auth: true},
		{name: "no client certificate", edit: func(c *Config) { c.Metastore.CertFile, c.Metastore.KeyFile = "", "" },
			want: []string{"TLS", hostPort, "certificate", "metastore.cert_file"}, tls: true},
		{name: "CA that did not sign the server", edit: func(c *Config) { c.Metastore.CAFile = pki.otherCA },
			want: []string{"TLS", hostPort, "certificate signed by unknown authority", "metastore.ca_file"}, tls: true},
		{name: "server name not in the certificate", edit: func(c *Config) { c.Metastore.ServerName = "elsewhere.test" },
			want: []string{"TLS", hostPort, "elsewhere.test", "metastore.server_name"}, tls: true},
		{name: "plain text to a TLS server", edit: func(c *Config) {
			c.Metastore.Endpoints = []string{"http://" + hostPort}
			c.Metastore.CAFile, c.Metastore.CertFile, c.Metastore.KeyFile = "", "", ""
		}, want: []string{"speaks TLS", hostPort, "https://"}, tls: true},
	}
	t.Run("refused", func(t *testing.T) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel() // the TLS failures each wait out the client's dial timeout
				// A prefix of its own: an Open that got through would
				// succeed there, not fail on the other store's master key.
				cfg := testConfig(t, testOpts{edit: func(cf *Config) {
					good(cf)
					cf.Metastore.Prefix = "healstore-tls-refused-" + randHex(4) + "/"
					c.edit(cf)
				}})
				octx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				start := time.Now()
				s, err := Open(octx, cfg)
				if err == nil {
					s.Close()
					t.Fatal("Open succeeded")
				}
				t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
				msg := err.Error()
				for _, w := range c.want {
					if !strings.Contains(msg, w) {
						t.Errorf("error lacks %q: %v", w, err)
					}
				}
				for _, sec := range secrets {
					if strings.Contains(msg, sec) {
						t.Errorf("error shows a password: %v", err)
					}
				}
				if got := errors.Is(err, ErrAuth); got != c.auth {
					t.Errorf("errors.Is(err, ErrAuth) = %v, want %v", got, c.auth)
				}
				if got := errors.Is(err, etcdkv.ErrTLS); got != c.tls {
					t.Errorf("errors.Is(err, etcdkv.ErrTLS) = %v, want %v", got, c.tls)
				}
				if errors.Is(err, ErrBadConfig) {
					t.Errorf("a refusal by the server is not a bad config file: %v", err)
				}
			})
		}
	})
}

// etcdBinary finds the etcd server; without one the test skips, or fails
// under HEALSTORE_REQUIRE_COMPONENTS=1.
func etcdBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	if st, err := os.Stat("/usr/bin/etcd"); err == nil && st.Mode().IsRegular() {
		return "/usr/bin/etcd"
	}
	if os.Getenv("HEALSTORE_REQUIRE_COMPONENTS") == "1" {
		t.Fatal("the etcd server binary is not installed and HEALSTORE_REQUIRE_COMPONENTS=1: etcd is required (scripts/services.sh install)")
	}
	t.Skip("no etcd server binary (scripts/services.sh install)")
	return ""
}

// testPKI is a CA, a server certificate for 127.0.0.1 (and the name
// etcd.healstore.test) and a client certificate, with a second CA that
// signed neither. Fields are file paths.
type testPKI struct {
	ca, serverCert, serverKey, clientCert, clientKey, otherCA string
}

func newTestPKI(t *testing.T, dir string) testPKI {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name, "PRIVATE KEY", der)
	}
	var p testPKI
	ca := metastoretest.NewCA(t, "healstore test CA")
	p.ca = write("ca.pem", "CERTIFICATE", ca.DER)
	p.otherCA = write("other-ca.pem", "CERTIFICATE", metastoretest.NewCA(t, "some other CA").DER)

	// etcd also dials itself (its gateway) with the server certificate,
	// so it carries client use too.
	sder, sk := ca.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "etcd"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"etcd.healstore.test"}})
	p.serverCert = write("server.pem", "CERTIFICATE", sder)
	p.serverKey = writeKey("server-key.pem", sk)

	cder, ck := ca.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "healstore-client"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	p.clientCert = write("client.pem", "CERTIFICATE", cder)
	p.clientKey = writeKey("client-key.pem", ck)
	return p
}

// freePorts picks n free TCP ports on 127.0.0.1.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// startTLSEtcd starts etcd serving clients over TLS only, with client
// certificates required, and returns its https:// endpoint. The process
// is killed when the test ends.
func startTLSEtcd(t *testing.T, bin string, pki testPKI, dataDir string) string {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a picked port can be taken before etcd binds it
		ports := freePorts(t, 3)
		client := fmt.Sprintf("https://127.0.0.1:%d", ports[0])
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		os.RemoveAll(dataDir)
		logPath := dataDir + ".log"
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "--name", "default", "--data-dir", dataDir,
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", "default="+peer,
			"--listen-metrics-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[2]),
			"--cert-file", pki.serverCert, "--key-file", pki.serverKey,
			"--trusted-ca-file", pki.ca, "--client-cert-auth",
			"--unsafe-no-fsync", "--max-txn-ops", "10000", "--max-request-bytes", "33554432",
			"--logger", "zap", "--log-level", "warn")
		// ETCD_* variables of the caller's environment would clash with the flags.
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "ETCD_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait(); logf.Close() }()
		stop := func() {
			cmd.Process.Signal(syscall.SIGKILL)
			<-exited
		}
		lastErr = waitEtcdReady(t, client, pki, exited)
		if lastErr == nil {
			t.Cleanup(stop)
			return client
		}
		stop()
		log, _ := os.ReadFile(logPath)
		t.Logf("etcd attempt %d did not start: %v\n%s", attempt+1, lastErr, log)
	}
	t.Fatalf("etcd did not start: %v", lastErr)
	return ""
}

// waitEtcdReady polls ep until it answers, the process exits, or 15 s
// pass.
func waitEtcdReady(t *testing.T, ep string, pki testPKI, exited <-chan error) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("etcd exited: %v", err)
		default:
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: time.Second,
			TLS: pkiClientTLS(t, pki), Logger: zap.NewNop()})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = cli.Get(ctx, "ready")
			cancel()
			cli.Close()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 15 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pkiClientTLS(t *testing.T, pki testPKI) *tls.Config {
	t.Helper()
	pool, err := loadCAFile(pki.ca)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(pki.clientCert, pki.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{pair}}
}

func tlsEtcdClient(t *testing.T, ep string, pki testPKI, user, pw string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second,
		TLS: pkiClientTLS(t, pki), Username: user, Password: pw, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// addPrefixUser adds a user whose one role reads and writes prefix.
func addPrefixUser(t *testing.T, cli *clientv3.Client, user, pw, role, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.RoleAdd(ctx, role); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.RoleGrantPermission(ctx, role, prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserAdd(ctx, user, pw); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, user, role); err != nil {
		t.Fatal(err)
	}
}

// enableEtcdAuth adds the root user and turns authentication on.
func enableEtcdAuth(t *testing.T, ep string, pki testPKI, rootPW string) {
	t.Helper()
	cli := tlsEtcdClient(t, ep, pki, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.UserAdd(ctx, "root", rootPW); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
}
