package healstore

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	etcdkv "github.com/healstore/healstore/metastore/etcd"
)

// etcdOnlyKey names the first key set that applies to kind etcd only
// (the TLS and authentication keys), or "".
func (m *MetastoreConfig) etcdOnlyKey() string {
	for _, kv := range [][2]string{{"ca_file", m.CAFile}, {"cert_file", m.CertFile}, {"key_file", m.KeyFile},
		{"server_name", m.ServerName}, {"username", m.Username}, {"password_file", m.PasswordFile}} {
		if kv[1] != "" {
			return kv[0]
		}
	}
	return ""
}

// tlsKey names the first TLS key set, or "".
func (m *MetastoreConfig) tlsKey() string {
	for _, kv := range [][2]string{{"ca_file", m.CAFile}, {"cert_file", m.CertFile}, {"key_file", m.KeyFile}, {"server_name", m.ServerName}} {
		if kv[1] != "" {
			return kv[0]
		}
	}
	return ""
}

// UsesTLS tells whether healstore connects to etcd with TLS: a TLS key is
// set or an endpoint is written https://.
func (m *MetastoreConfig) UsesTLS() bool {
	if m.tlsKey() != "" {
		return true
	}
	for _, ep := range m.Endpoints {
		if endpointScheme(ep) == "https" {
			return true
		}
	}
	return false
}

// endpointScheme is the scheme an endpoint is written with ("" for
// host:port), with http and https in lower case whatever case they are
// written in: URL schemes are case-insensitive (RFC 3986), and etcd's
// client reads an http(s) endpoint with url.Parse, which lower-cases the
// scheme, so HTTPS://host:port is dialled with TLS like https://.
// Other schemes are returned as written: etcd's client matches unix: and
// unixs: case-sensitively.
func endpointScheme(ep string) string {
	i := strings.Index(ep, "://")
	if i < 0 {
		return ""
	}
	if s := strings.ToLower(ep[:i]); s == "http" || s == "https" {
		return s
	}
	return ep[:i]
}

// checkEtcd checks the etcd keys against each other (the files are read
// when the store opens, by etcdOptions). It returns the key (under
// [metastore]) and the problem, or "" and "".
//
// etcd's client dials every endpoint in plain text or every one with TLS,
// as the first endpoint's scheme says, and dials http:// in plain text
// even when given a TLS configuration. So an http:// endpoint is refused
// when TLS is asked for, and http:// and https:// are not mixed.
func (m *MetastoreConfig) checkEtcd() (field, msg string) {
	var plain, secure string
	for i, ep := range m.Endpoints {
		if strings.TrimSpace(ep) == "" {
			return fmt.Sprintf("endpoints[%d]", i), "is empty (write host:port or https://host:port)"
		}
		if strings.Contains(ep, "@") && !strings.HasPrefix(ep, "unix:") && !strings.HasPrefix(ep, "unixs:") {
			// user:password@host: etcd's client does not log in with it,
			// and errors name the endpoints, so it is not shown here either.
			return fmt.Sprintf("endpoints[%d]", i), "holds a user name or password (user:password@, not shown); " +
				"write host:port or https://host:port, and log in with metastore.username and metastore.password_file"
		}
		bad := fmt.Sprintf("%q is not host:port or https://host:port", ep)
		switch s := endpointScheme(ep); s {
		case "":
			if strings.Contains(ep, "/") && !strings.HasPrefix(ep, "unix:") && !strings.HasPrefix(ep, "unixs:") {
				return fmt.Sprintf("endpoints[%d]", i), bad
			}
		case "http", "https":
			if u, err := url.Parse(ep); err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
				return fmt.Sprintf("endpoints[%d]", i), bad
			}
			if s == "http" {
				plain = ep
			} else {
				secure = ep
			}
		case "unix", "unixs":
		default:
			return fmt.Sprintf("endpoints[%d]", i), fmt.Sprintf("%q: scheme %q is not http or https (write host:port or https://host:port)", ep, s)
		}
	}
	if plain != "" && secure != "" {
		return "endpoints", fmt.Sprintf("mixes plain http (%s) and https (%s); etcd's client uses one for all endpoints: write them all https:// (or host:port with metastore.ca_file)", plain, secure)
	}
	if key := m.tlsKey(); key != "" && plain != "" {
		return "endpoints", fmt.Sprintf("%s is plain text (http://), but metastore.%s asks for TLS: write https://host:port or host:port", plain, key)
	}
	switch {
	case m.CertFile != "" && m.KeyFile == "":
		return "cert_file", "is set without metastore.key_file: a client certificate needs its private key (give both or neither)"
	case m.KeyFile != "" && m.CertFile == "":
		return "key_file", "is set without metastore.cert_file: a private key needs its client certificate (give both or neither)"
	case m.Username != "" && m.PasswordFile == "":
		return "username", "is set without metastore.password_file (the file holding the user's password)"
	case m.PasswordFile != "" && m.Username == "":
		return "password_file", "is set without metastore.username"
	}
	return "", ""
}

// etcdOptions reads the etcd TLS and authentication files and returns the
// options for etcdkv.Open. Errors are *ConfigError naming the key and the
// file, never the content of a key or password.
func (c *Config) etcdOptions() ([]etcdkv.Option, error) {
	m := &c.Metastore
	bad := func(field, format string, args ...any) error {
		return &ConfigError{File: c.path, Field: "metastore." + field, Msg: fmt.Sprintf(format, args...)}
	}
	var opts []etcdkv.Option
	if m.UsesTLS() {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: m.ServerName}
		if m.CAFile != "" {
			pool, err := loadCAFile(m.CAFile)
			if err != nil {
				return nil, bad("ca_file", "%v", err)
			}
			tc.RootCAs = pool
		}
		if m.CertFile != "" {
			certPEM, err := os.ReadFile(m.CertFile)
			if err != nil {
				return nil, bad("cert_file", "%s: %v", m.CertFile, errors.Unwrap(err))
			}
			// The private key gets the password file's rule: group and
			// others must have no access.
			if err := checkPrivate(m.KeyFile, "key file"); err != nil {
				return nil, bad("key_file", "%v", err)
			}
			keyPEM, err := os.ReadFile(m.KeyFile)
			if err != nil {
				return nil, bad("key_file", "%s: %v", m.KeyFile, errors.Unwrap(err))
			}
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				// tls's errors describe the PEM blocks, never their bytes.
				return nil, bad("key_file", "%s and metastore.cert_file %s do not load as a client certificate and its key: %v", m.KeyFile, m.CertFile, err)
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		opts = append(opts, etcdkv.WithTLS(tc))
	}
	if m.Username != "" {
		pw, err := readPasswordFile(m.PasswordFile)
		if err != nil {
			return nil, bad("password_file", "%v", err)
		}
		opts = append(opts, etcdkv.WithAuth(m.Username, pw))
	}
	return opts, nil
}

// loadCAFile reads a PEM bundle of CA certificates. Every CERTIFICATE
// block must parse, and there must be at least one.
func loadCAFile(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, errors.Unwrap(err))
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d does not parse: %v", path, n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path)
	}
	return pool, nil
}

// readPasswordFile reads a password file: mode 0600 or stricter, the
// password alone, one trailing newline ignored. Errors never show the
// content.
func readPasswordFile(path string) (string, error) {
	if err := checkPrivate(path, "password file"); err != nil {
		return "", err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("password file %s: %v", path, errors.Unwrap(err))
	}
	pw := string(data)
	if strings.HasSuffix(pw, "\n") {
		pw = strings.TrimSuffix(strings.TrimSuffix(pw, "\n"), "\r")
	}
	if pw == "" {
		return "", fmt.Errorf("password file %s is empty", path)
	}
	return pw, nil
}

// etcdAuthError is etcd refusing the configured user (or the lack of
// one) when the store opens. It matches ErrAuth and etcdkv.ErrAuth.
type etcdAuthError struct {
	msg string
	err error
}

func (e *etcdAuthError) Error() string        { return e.msg }
func (e *etcdAuthError) Unwrap() error        { return e.err }
func (e *etcdAuthError) Is(target error) bool { return target == ErrAuth }

// etcdOpenError adds to an error of etcdkv.Open what the user can check
// in the config.
func (c *Config) etcdOpenError(err error) error {
	m := &c.Metastore
	head := fmt.Sprintf("open metastore (etcd %s)", joinLimited(m.Endpoints, 3))
	switch {
	case errors.Is(err, etcdkv.ErrAuth):
		var hint string
		switch {
		case m.Username == "":
			hint = "the cluster has authentication enabled: set metastore.username and metastore.password_file"
		case errors.Is(err, etcdkv.ErrPermission):
			hint = fmt.Sprintf("user %q needs a role granting read and write on prefix %q (etcdctl role grant-permission ROLE readwrite %s --prefix)", m.Username, m.Prefix, m.Prefix)
		default:
			hint = fmt.Sprintf("check metastore.username and the password in metastore.password_file %s", m.PasswordFile)
		}
		return &etcdAuthError{msg: fmt.Sprintf("%s: %v; %s", head, err, hint), err: err}
	case errors.Is(err, etcdkv.ErrTLS):
		hint := "write the endpoints as https://host:port, and set metastore.ca_file when the servers' certificates are not signed by a CA the system trusts"
		if m.UsesTLS() {
			hint = "check metastore.ca_file (the CA that signed the etcd servers' certificates), metastore.server_name (the name in them), " +
				"and metastore.cert_file and key_file when etcd runs with --client-cert-auth"
		}
		return fmt.Errorf("%s: %w; %s", head, err, hint)
	}
	return fmt.Errorf("%s: %w", head, err)
}
