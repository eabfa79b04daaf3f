package etcdkv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
	"github.com/healstore/healstore/metastore/metastoretest"
)

// These run without etcd: TLS servers of the test's own stand in for it.

// serve accepts connections on a new port and hands each to fn.
func serve(t *testing.T, fn func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); fn(c) }()
		}
	}()
	return l.Addr().String()
}

// tlsServer is a TLS server (with a certificate for 127.0.0.1 and
// etcd.test) that answers the first read, as gRPC's server sends its
// settings.
func tlsServer(t *testing.T, ca *metastoretest.CA, clientCAs *x509.CertPool) string {
	cert := ca.TLSCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "etcd"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"etcd.test"}})
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}
	if clientCAs != nil {
		cfg.ClientCAs, cfg.ClientAuth = clientCAs, tls.RequireAndVerifyClientCert
	}
	return serve(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if tc.Handshake() != nil {
			return
		}
		tc.Write([]byte("settings"))
		var b [64]byte
		tc.Read(b[:])
	})
}

var unavailable = fmt.Errorf("%w: etcd x: context deadline exceeded", metastore.ErrUnavailable)

func TestDiagnoseOpenTLS(t *testing.T) {
	ca, other := metastoretest.NewCA(t, "ca"), metastoretest.NewCA(t, "other")
	client := ca.TLSCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "client"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	plainTLS := tlsServer(t, ca, nil)
	mutual := tlsServer(t, ca, ca.Pool)
	httpServer := serve(t, func(c net.Conn) { c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) })
	closed := func() string { // a port nothing listens on
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		a := l.Addr().String()
		l.Close()
		return a
	}()
	cases := []struct {
		name string
		eps  []string
		cfg  *tls.Config
		want string // "" for: not explained by TLS, the error stays
	}{
		{"right CA", []string{plainTLS}, &tls.Config{RootCAs: ca.Pool}, ""},
		{"unknown authority", []string{plainTLS}, &tls.Config{RootCAs: other.Pool}, "certificate signed by unknown authority"},
		{"one endpoint good is enough", []string{plainTLS, closed}, &tls.Config{RootCAs: ca.Pool}, ""},
		{"server name asked for", []string{plainTLS}, &tls.Config{RootCAs: ca.Pool, ServerName: "etcd.test"}, ""},
		{"server name not in the certificate", []string{plainTLS}, &tls.Config{RootCAs: ca.Pool, ServerName: "wrong.test"}, "not wrong.test"},
		{"server name and unknown authority", []string{plainTLS}, &tls.Config{RootCAs: other.Pool, ServerName: "etcd.test"}, "unknown authority"},
		{"client certificate", []string{mutual}, &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{client}}, ""},
		{"no client certificate", []string{mutual}, &tls.Config{RootCAs: ca.Pool}, "refused the TLS connection"},
		{"client certificate of another CA", []string{mutual}, &tls.Config{RootCAs: ca.Pool,
			Certificates: []tls.Certificate{other.TLSCert(t, &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})}},
			"refused the TLS connection"},
		{"plain text client, TLS server", []string{plainTLS}, nil, "speaks TLS, but the client connects in plain text"},
		{"https endpoint, system roots", []string{"https://" + plainTLS}, nil, "unknown authority"},
		{"HTTPS endpoint, system roots", []string{"HTTPS://" + plainTLS}, nil, "unknown authority"},
		{"HTTP endpoint ignores the TLS config", []string{"HTTP://" + plainTLS}, &tls.Config{RootCAs: ca.Pool}, "speaks TLS"},
		{"http endpoint ignores the TLS config", []string{"http://" + plainTLS}, &tls.Config{RootCAs: ca.Pool}, "speaks TLS"},
		{"TLS client, plain server", []string{httpServer}, &tls.Config{RootCAs: ca.Pool}, "does not speak TLS"},
		{"nothing listens", []string{closed}, &tls.Config{RootCAs: ca.Pool}, ""},
		{"plain client, nothing listens", []string{closed}, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := diagnoseOpen(context.Background(), c.eps, clientTLS(c.cfg), unavailable)
			if c.want == "" {
				if err != unavailable {
					t.Fatalf("got %v, want the error unchanged", err)
				}
				return
			}
			if !errors.Is(err, ErrTLS) || !errors.Is(err, metastore.ErrUnavailable) {
				t.Fatalf("got %v, want ErrTLS and ErrUnavailable", err)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.eps[0]) {
				t.Fatalf("error %q lacks %q or the endpoint", err, c.want)
			}
		})
	}

	// Errors that are not unavailability, and a canceled caller, are
	// left alone.
	if err := diagnoseOpen(context.Background(), []string{plainTLS}, &tls.Config{RootCAs: other.Pool}, metastore.ErrSchema); err != metastore.ErrSchema {
		t.Fatalf("schema error became %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := diagnoseOpen(ctx, []string{plainTLS}, &tls.Config{RootCAs: other.Pool}, unavailable); err != unavailable {
		t.Fatalf("after cancel: %v", err)
	}
}

func TestClientTLSKeepsTheConfig(t *testing.T) {
	if clientTLS(nil) != nil {
		t.Fatal("nil config")
	}
	plain := &tls.Config{MinVersion: tls.VersionTLS12}
	if clientTLS(plain) != plain {
		t.Fatal("a config without ServerName is changed")
	}
	named := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: "etcd.test"}
	got := clientTLS(named)
	if got == named || named.InsecureSkipVerify || named.VerifyConnection != nil {
		t.Fatal("the caller's config was modified")
	}
	if got.VerifyConnection == nil || got.MinVersion != tls.VersionTLS12 {
		t.Fatal("the copy does not verify the name itself")
	}
}

func TestOpenRefusesEmptyPassword(t *testing.T) {
	_, err := Open(context.Background(), []string{"127.0.0.1:1"}, "p", WithAuth("user", ""))
	if !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
}

// A caller that cancels while the endpoints are probed gets its answer
// at once, with the error as it was: a handshake cut short by the cancel
// says nothing about TLS.
func TestDiagnoseOpenCanceledDuringProbe(t *testing.T) {
	stall := serve(t, func(c net.Conn) { // accepts, never answers the handshake
		var b [1]byte
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, err := c.Read(b[:]); err != nil {
				return
			}
		}
	})
	ca := metastoretest.NewCA(t, "ca")
	for _, cfg := range []*tls.Config{{RootCAs: ca.Pool}, nil} {
		ctx, cancel := context.WithCancel(context.Background())
		canceled := make(chan time.Time, 1)
		time.AfterFunc(200*time.Millisecond, func() { canceled <- time.Now(); cancel() })
		err := diagnoseOpen(ctx, []string{stall}, clientTLS(cfg), unavailable)
		took := time.Since(<-canceled)
		cancel()
		if err != unavailable {
			t.Errorf("TLS %v: got %v, want the error unchanged", cfg != nil, err)
		}
		if took > probeTimeout/2 {
			t.Errorf("TLS %v: diagnoseOpen returned %v after the cancel (probes last up to %v)", cfg != nil, took, probeTimeout)
		}
	}
}

// A TLS client against a plain-text etcd: etcd (cmux) closes the
// connection on a ClientHello without a word, and answers the plain
// HTTP/2 preface with its settings. That is "does not speak TLS", not an
// unexplained timeout.
func TestDiagnoseOpenPlainEtcd(t *testing.T) {
	ca := metastoretest.NewCA(t, "ca")
	plainH2 := serve(t, func(c net.Conn) { // what a plain etcd does
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, len(h2Preface))
		if _, err := io.ReadFull(c, b); err != nil || string(b) != h2Preface {
			return // closed: not HTTP/2 (a ClientHello)
		}
		c.Write([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0}) // an empty SETTINGS frame
		io.Copy(io.Discard, c)
	})
	silent := serve(t, func(c net.Conn) {}) // closes at once whatever comes
	for _, c := range []struct {
		ep   string
		want string
	}{{plainH2, "does not speak TLS"}, {silent, ""}} {
		err := diagnoseOpen(context.Background(), []string{c.ep}, clientTLS(&tls.Config{RootCAs: ca.Pool}), unavailable)
		if c.want == "" {
			if err != unavailable {
				t.Errorf("%s: got %v, want the error unchanged", c.ep, err)
			}
			continue
		}
		if !errors.Is(err, ErrTLS) || !errors.Is(err, metastore.ErrUnavailable) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want ErrTLS saying %q", c.ep, err, c.want)
		}
	}
}

// The same against the real (plain-text) etcd of the tests.
func TestOpenWithTLSAgainstPlainEtcd(t *testing.T) {
	var eps []string
	for _, ep := range metastoretest.EtcdEndpoints(t) {
		eps = append(eps, strings.TrimPrefix(ep, "http://"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv, err := Open(ctx, eps, "healstore-tls-to-plain/", WithTLS(&tls.Config{MinVersion: tls.VersionTLS12}),
		WithRequestTimeout(time.Second), WithDialTimeout(time.Second))
	if err == nil {
		kv.Close()
		t.Fatal("Open with TLS succeeded against a plain-text etcd")
	}
	if !errors.Is(err, ErrTLS) || !errors.Is(err, metastore.ErrUnavailable) || !strings.Contains(err.Error(), "does not speak TLS") {
		t.Fatalf("got %v, want ErrTLS saying the server does not speak TLS", err)
	}
}

// URL schemes are case-insensitive: etcd's client dials HTTPS:// with TLS
// and HTTP:// in plain text, as healstore's config reads them
// (endpointScheme). The server notes the first byte of the first
// connection, the client's: a TLS record (0x16) or the HTTP/2 preface
// ("PRI ..."). Open's TLS probe connects only after the client failed.
func TestOpenSchemeCase(t *testing.T) {
	for _, c := range []struct {
		scheme string
		first  byte
	}{{"HTTPS://", 0x16}, {"Https://", 0x16}, {"HTTP://", 'P'}} {
		seen := make(chan byte, 1)
		addr := serve(t, func(conn net.Conn) {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			var b [1]byte
			if _, err := io.ReadFull(conn, b[:]); err == nil {
				select {
				case seen <- b[0]:
				default: // a later connection
				}
			}
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		kv, err := Open(ctx, []string{c.scheme + addr}, "p/", WithDialTimeout(time.Second), WithRequestTimeout(time.Second))
		cancel()
		if err == nil {
			kv.Close()
			t.Fatalf("%s: Open succeeded against a server that is not etcd", c.scheme)
		}
		select {
		case b := <-seen:
			if b != c.first {
				t.Errorf("%s: the client sent %#x first, want %#x", c.scheme, b, c.first)
			}
		default:
			t.Errorf("%s: the client sent nothing (%v)", c.scheme, err)
		}
	}
}
