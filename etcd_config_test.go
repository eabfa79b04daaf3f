package healstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The [metastore] TLS and authentication keys are checked against each
// other when the config loads, each problem naming its key.
func TestEtcdConfigErrors(t *testing.T) {
	etcd := func(body string) func(string) string {
		return func(s string) string { return s + "\n[metastore]\nkind = \"etcd\"\n" + body }
	}
	pebble := func(body string) func(string) string {
		return func(s string) string { return s + "\n[metastore]\n" + body }
	}
	cases := []struct {
		name  string
		edit  func(string) string
		field string
		msg   string
	}{
		{"ca_file with pebble", pebble("ca_file = \"ca.pem\"\n"), "metastore.ca_file", "etcd only"},
		{"username with pebble", pebble("kind = \"pebble\"\nusername = \"u\"\npassword_file = \"pw\"\n"), "metastore.username", "etcd only"},
		{"server_name with pebble", pebble("server_name = \"etcd\"\n"), "metastore.server_name", "etcd only"},
		{"password_file with pebble", pebble("password_file = \"pw\"\n"), "metastore.password_file", "etcd only"},
		{"cert without key", etcd("endpoints = [\"h:2379\"]\ncert_file = \"c.pem\"\n"), "metastore.cert_file", "without metastore.key_file"},
		{"key without cert", etcd("endpoints = [\"h:2379\"]\nkey_file = \"k.pem\"\n"), "metastore.key_file", "without metastore.cert_file"},
		{"username without password_file", etcd("endpoints = [\"h:2379\"]\nusername = \"healstore\"\n"), "metastore.username", "without metastore.password_file"},
		{"password_file without username", etcd("endpoints = [\"h:2379\"]\npassword_file = \"pw\"\n"), "metastore.password_file", "without metastore.username"},
		{"http endpoint with a CA", etcd("endpoints = [\"http://h:2379\"]\nca_file = \"ca.pem\"\n"), "metastore.endpoints", "metastore.ca_file asks for TLS"},
		{"http endpoint with a client certificate", etcd("endpoints = [\"h:2379\", \"http://g:2379\"]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n"),
			"metastore.endpoints", "http://g:2379 is plain text"},
		{"http and https mixed", etcd("endpoints = [\"https://h:2379\", \"http://g:2379\"]\n"), "metastore.endpoints", "mixes plain http"},
		{"unknown scheme", etcd("endpoints = [\"grpc://h:2379\"]\n"), "metastore.endpoints[0]", `scheme "grpc"`},
		{"unknown scheme in capitals", etcd("endpoints = [\"h:1\", \"FTP://x:1\"]\n"), "metastore.endpoints[1]", `scheme "FTP" is not http or https`},
		{"HTTP and HTTPS mixed", etcd("endpoints = [\"HTTPS://h:2379\", \"Http://g:2379\"]\n"), "metastore.endpoints", "mixes plain http"},
		{"HTTP endpoint with a CA", etcd("endpoints = [\"HTTP://h:2379\"]\nca_file = \"ca.pem\"\n"), "metastore.endpoints", "metastore.ca_file asks for TLS"},
		{"empty endpoint", etcd("endpoints = [\"\"]\n"), "metastore.endpoints[0]", "is empty"},
		{"endpoint with a path", etcd("endpoints = [\"https://h:2379/v3\"]\n"), "metastore.endpoints[0]", "is not host:port"},
		{"https without a host", etcd("endpoints = [\"https://\"]\n"), "metastore.endpoints[0]", "is not host:port"},
		{"path without a scheme", etcd("endpoints = [\"h:2379/v3\"]\n"), "metastore.endpoints[0]", "is not host:port"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, ce, err := loadBadConfig(t, c.edit(goodConfig))
			if ce.Field != c.field {
				t.Errorf("field %q, want %q (%v)", ce.Field, c.field, err)
			}
			if !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), c.field) {
				t.Errorf("message %q lacks %q or the key", err, c.msg)
			}
		})
	}
}

// The file keys are relative to the config file's directory, like the
// others; the settings survive Marshal; what asks for TLS does.
func TestEtcdConfigPathsAndTLS(t *testing.T) {
	p := writeConfig(t, goodConfig+`
[metastore]
kind = "etcd"
endpoints = ["10.0.0.1:2379", "10.0.0.2:2379"]
ca_file = "tls/ca.pem"
cert_file = "tls/client.pem"
key_file = "/etc/healstore/client-key.pem"
server_name = "etcd.internal"
username = "healstore"
password_file = "etcd.password"
`)
	cfg, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(p)
	m := cfg.Metastore
	if m.CAFile != filepath.Join(dir, "tls/ca.pem") || m.CertFile != filepath.Join(dir, "tls/client.pem") ||
		m.KeyFile != "/etc/healstore/client-key.pem" || m.PasswordFile != filepath.Join(dir, "etcd.password") {
		t.Fatalf("paths not resolved against %s: %+v", dir, m)
	}
	if m.ServerName != "etcd.internal" || m.Username != "healstore" || !m.UsesTLS() {
		t.Fatalf("metastore %+v, UsesTLS %v", m, m.UsesTLS())
	}
	body, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseConfig(p, body)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again.Metastore, cfg.Metastore) {
		t.Fatalf("after Marshal: %+v, want %+v", again.Metastore, cfg.Metastore)
	}

	for _, c := range []struct {
		eps  []string
		ca   string
		want bool
	}{
		{[]string{"h:2379"}, "", false},
		{[]string{"http://h:2379"}, "", false},
		{[]string{"https://h:2379"}, "", true},
		{[]string{"h:2379", "https://g:2379"}, "", true},
		// Schemes are case-insensitive, as for etcd's client.
		{[]string{"HTTPS://127.0.0.1:2379"}, "", true},
		{[]string{"h:2379", "Https://g:2379"}, "", true},
		{[]string{"HTTP://h:2379"}, "", false},
		{[]string{"h:2379"}, "ca.pem", true},
	} {
		m := MetastoreConfig{Kind: "etcd", Endpoints: c.eps, CAFile: c.ca}
		if m.UsesTLS() != c.want {
			t.Errorf("%v with ca_file %q: UsesTLS %v, want %v", c.eps, c.ca, m.UsesTLS(), c.want)
		}
		if f, msg := m.checkEtcd(); msg != "" {
			t.Errorf("%v with ca_file %q refused: %s: %s", c.eps, c.ca, f, msg)
		}
	}
}

// The files are read when the store opens: each one that is missing or
// does not parse is named with its key and path, and no error shows a
// password or the content of a key.
func TestEtcdConfigFiles(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	password := "s3cret-" + randHex(8)
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	goodPW := write("good.pw", password+"\n", 0o600)
	openPW := write("open.pw", password+"\n", 0o640)
	worldPW := write("world.pw", password, 0o604)
	emptyPW := write("empty.pw", "\n", 0o600)
	keyPEM, err := os.ReadFile(pki.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	openKey := write("open-key.pem", string(keyPEM), 0o640)
	worldKey := write("world-key.pem", string(keyPEM), 0o604)
	readOnlyKey := write("ro-key.pem", string(keyPEM), 0o400)
	noCert := write("nocert.pem", string(keyPEM), 0o600)
	brokenCert := write("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", 0o600)
	missing := filepath.Join(dir, "missing.pem")

	base := func() *Config {
		c := DefaultConfig()
		c.Dir = dir
		c.path = filepath.Join(dir, "healstore.toml")
		c.Metastore = MetastoreConfig{Kind: "etcd", Endpoints: []string{"127.0.0.1:1"}, Prefix: "p/",
			CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey, Username: "healstore", PasswordFile: goodPW}
		return c
	}
	if opts, err := base().etcdOptions(); err != nil || len(opts) != 2 {
		t.Fatalf("good files: %d options, %v", len(opts), err)
	}
	ro := base()
	ro.Metastore.KeyFile = readOnlyKey
	if opts, err := ro.etcdOptions(); err != nil || len(opts) != 2 {
		t.Fatalf("key file of mode 0400: %d options, %v", len(opts), err)
	}
	// An HTTPS:// endpoint alone asks for TLS.
	up := base()
	up.Metastore.CAFile, up.Metastore.CertFile, up.Metastore.KeyFile = "", "", ""
	up.Metastore.Endpoints = []string{"HTTPS://127.0.0.1:2379"}
	if opts, err := up.etcdOptions(); err != nil || len(opts) != 2 {
		t.Fatalf("HTTPS:// endpoint: %d options (want TLS and auth), %v", len(opts), err)
	}
	cases := []struct {
		name  string
		edit  func(*MetastoreConfig)
		field string
		want  []string
	}{
		{"missing CA", func(m *MetastoreConfig) { m.CAFile = missing }, "metastore.ca_file", []string{missing, "no such file"}},
		{"CA file without a certificate", func(m *MetastoreConfig) { m.CAFile = noCert }, "metastore.ca_file", []string{noCert, "no PEM certificate"}},
		{"CA certificate that does not parse", func(m *MetastoreConfig) { m.CAFile = brokenCert }, "metastore.ca_file", []string{brokenCert, "does not parse"}},
		{"missing client certificate", func(m *MetastoreConfig) { m.CertFile = missing }, "metastore.cert_file", []string{missing, "no such file"}},
		{"missing client key", func(m *MetastoreConfig) { m.KeyFile = missing }, "metastore.key_file", []string{missing, "no such file"}},
		{"key of another certificate", func(m *MetastoreConfig) { m.KeyFile = pki.serverKey }, "metastore.key_file",
			[]string{pki.serverKey, pki.clientCert, "do not load"}},
		{"certificate as the key", func(m *MetastoreConfig) { m.KeyFile = pki.clientCert }, "metastore.key_file", []string{pki.clientCert, "do not load"}},
		{"group-readable client key", func(m *MetastoreConfig) { m.KeyFile = openKey }, "metastore.key_file",
			[]string{openKey, "0640", "chmod 600 " + openKey}},
		{"world-readable client key", func(m *MetastoreConfig) { m.KeyFile = worldKey }, "metastore.key_file",
			[]string{worldKey, "chmod 600"}},
		{"missing password file", func(m *MetastoreConfig) { m.PasswordFile = missing }, "metastore.password_file", []string{missing}},
		{"group-readable password file", func(m *MetastoreConfig) { m.PasswordFile = openPW }, "metastore.password_file",
			[]string{openPW, "0640", "chmod 600 " + openPW}},
		{"world-readable password file", func(m *MetastoreConfig) { m.PasswordFile = worldPW }, "metastore.password_file",
			[]string{worldPW, "chmod 600"}},
		{"empty password", func(m *MetastoreConfig) { m.PasswordFile = emptyPW }, "metastore.password_file", []string{emptyPW, "is empty"}},
	}
	keyLines := strings.Split(strings.TrimSpace(string(keyPEM)), "\n")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base()
			c.edit(&cfg.Metastore)
			_, err := cfg.etcdOptions()
			var ce *ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ErrBadConfig) {
				t.Fatalf("want *ConfigError, got %v", err)
			}
			if ce.Field != c.field || ce.File != cfg.path {
				t.Errorf("field %q file %q, want %q %q (%v)", ce.Field, ce.File, c.field, cfg.path, err)
			}
			for _, w := range append(c.want, c.field) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error shows the password: %v", err)
			}
			for _, l := range keyLines[1 : len(keyLines)-1] {
				if strings.Contains(err.Error(), l) {
					t.Errorf("error shows the private key: %v", err)
				}
			}
		})
	}

	// Open reads them before it dials etcd (nothing listens on port 1):
	// the error is the file's at once, not a timeout.
	for _, c := range []struct {
		field string
		edit  func(*MetastoreConfig)
	}{
		{"metastore.password_file", func(m *MetastoreConfig) { m.PasswordFile = openPW }},
		{"metastore.key_file", func(m *MetastoreConfig) { m.KeyFile = openKey }},
	} {
		cfg := testConfig(t, testOpts{edit: func(cfg *Config) {
			cfg.Metastore = base().Metastore
			c.edit(&cfg.Metastore)
		}})
		start := time.Now()
		_, err = Open(context.Background(), cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != c.field || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("Open with a group-readable %s: %v", c.field, err)
		}
		if strings.Contains(err.Error(), password) || strings.Contains(err.Error(), keyLines[1]) {
			t.Fatalf("Open's error shows the password or the key: %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Open took %v: it dialled etcd before reading the files", d)
		}
	}
}

// One trailing newline ends the password file; the rest is the password.
func TestReadPasswordFile(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]string{
		"pw":            "pw",
		"pw\n":          "pw",
		"pw\r\n":        "pw",
		"pw\n\n":        "pw\n",
		" pw with sp\n": " pw with sp",
	} {
		p := filepath.Join(dir, "pw")
		os.Remove(p)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := readPasswordFile(p)
		if err != nil || got != want {
			t.Errorf("file %q: password %q, %v; want %q", content, got, err, want)
		}
	}
}

// TestEtcdEndpointWithPassword: user:password@ in an endpoint is refused
// without showing it. etcd's client does not log in with it, and every
// error that names the endpoints (a refused connection, a TLS failure)
// would print the password.
func TestEtcdEndpointWithPassword(t *testing.T) {
	for _, ep := range []string{"https://root:hunter2@h:2379", "root:hunter2@h:2379", "http://root:hunter2@h:2379"} {
		_, ce, err := loadBadConfig(t, goodConfig+"\n[metastore]\nkind = \"etcd\"\nendpoints = [\"h:1\", \""+ep+"\"]\n")
		if ce.Field != "metastore.endpoints[1]" || !strings.Contains(err.Error(), "metastore.username") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: %v (field %q); want metastore.endpoints[1] refused, the password not shown", ep, err, ce.Field)
		}
	}
}
