package etcdkv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/healstore/healstore/metastore"
)

// probeTimeout bounds the TLS probe of one endpoint after Open failed.
const probeTimeout = 2 * time.Second

// maxProbes caps how many endpoints Open probes.
const maxProbes = 5

// diagnoseOpen looks for the reason an Open that failed as unavailable
// could not reach etcd when it is TLS: gRPC retries a failed handshake
// until the deadline and reports only the deadline. It dials the
// endpoints itself and, when every one that answers fails the handshake,
// returns an ErrTLS error naming the endpoint and what TLS said. Other
// errors, and failures not explained by TLS, are returned as they are.
// The probe runs after the caller's deadline passed too (it is bounded by
// probeTimeout), but not after the caller canceled: a cancel while it
// runs ends it, and the error is returned as it was.
func diagnoseOpen(ctx context.Context, endpoints []string, cfg *tls.Config, err error) error {
	if !errors.Is(err, metastore.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return err
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.Canceled) { // not the deadline: that one the probe outlives
			cancel()
		}
	})
	defer stop()
	eps := endpoints
	if len(eps) > maxProbes {
		eps = eps[:maxProbes]
	}
	results := make([]error, len(eps))
	answered := make([]bool, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answered[i], results[i] = probeTLS(pctx, ep, cfg)
		}()
	}
	wg.Wait()
	if errors.Is(ctx.Err(), context.Canceled) {
		return err // the probes were cut short: their errors say nothing about TLS
	}
	var first error
	for i := range eps {
		if !answered[i] {
			continue
		}
		if results[i] == nil {
			return err // TLS works with at least one: not the reason
		}
		if first == nil {
			first = results[i]
		}
	}
	if first == nil {
		return err
	}
	return fmt.Errorf("%w: %w: %w", metastore.ErrUnavailable, ErrTLS, first)
}

// probeTLS dials ep and tries the TLS handshake healstore's client would
// make. answered is false when the endpoint could not be dialled at all
// (down, refused, not TCP), which says nothing about TLS. With cfg nil and
// a plain endpoint, it checks whether the server speaks TLS although the
// client does not.
func probeTLS(ctx context.Context, ep string, cfg *tls.Config) (answered bool, err error) {
	scheme, host := splitEndpoint(ep)
	if host == "" || strings.HasPrefix(scheme, "unix") {
		return false, nil
	}
	useTLS := scheme == "https" || (cfg != nil && scheme != "http")
	var d net.Dialer
	conn, derr := d.DialContext(ctx, "tcp", host)
	if derr != nil {
		return false, nil
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })() // the probe's end (or the caller's cancel) cuts every read
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	name, _, serr := net.SplitHostPort(host)
	if serr != nil {
		name = host
	}
	var c *tls.Config
	if useTLS {
		if cfg != nil {
			c = cfg.Clone()
		} else {
			c = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		c.ServerName = name // as gRPC does (clientTLS keeps a ServerName asked for)
	} else {
		// Only to learn whether the server speaks TLS; nothing is sent.
		c = &tls.Config{InsecureSkipVerify: true, ServerName: name}
	}
	c.NextProtos = []string{"h2"}
	tc := tls.Client(conn, c)
	herr := tc.HandshakeContext(ctx)
	if !useTLS {
		if herr == nil || isTLSAlert(herr) {
			return true, fmt.Errorf("etcd %s speaks TLS, but the client connects in plain text", ep)
		}
		return false, nil
	}
	if herr == nil {
		// With TLS 1.3 the server checks the client's certificate after
		// the client's handshake ended: its refusal comes as an alert on
		// the first read. gRPC's server sends its settings at once.
		tc.Write([]byte(h2Preface))
		conn.SetReadDeadline(time.Now().Add(probeTimeout / 2))
		var b [1]byte
		_, rerr := tc.Read(b[:])
		if rerr != nil && isTLSAlert(rerr) {
			return true, fmt.Errorf("etcd %s refused the TLS connection: %v", ep, rerr)
		}
		return true, nil
	}
	var re tls.RecordHeaderError
	if errors.As(herr, &re) {
		return true, fmt.Errorf("etcd %s does not speak TLS (the client connects with TLS): %v", ep, herr)
	}
	if errors.Is(herr, io.EOF) || errors.Is(herr, syscall.ECONNRESET) {
		// Closed without a word: a plain-text etcd (cmux) does that to a
		// ClientHello, and answers the plain HTTP/2 preface instead. A
		// server that does neither says nothing about TLS.
		if speaksPlainHTTP2(ctx, host) {
			return true, fmt.Errorf("etcd %s does not speak TLS (the client connects with TLS; the server answers in plain text)", ep)
		}
		return false, nil
	}
	if isTimeout(herr) {
		return false, nil
	}
	return true, fmt.Errorf("etcd %s: TLS handshake failed: %v", ep, herr)
}

// h2Preface is what an HTTP/2 (gRPC) client sends first.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// speaksPlainHTTP2 tells whether the server at host answers the HTTP/2
// preface in plain text with its settings, as a plain-text etcd does.
// Only the preface is sent.
func speaksPlainHTTP2(ctx context.Context, host string) bool {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return false
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte(h2Preface)); err != nil {
		return false
	}
	var h [9]byte // a frame header: length (3), type, flags, stream (4)
	if _, err := io.ReadFull(conn, h[:]); err != nil {
		return false
	}
	return h[3] == 0x4 && h[4]&0x1 == 0 // SETTINGS, not an acknowledgement
}

// clientTLS returns the TLS configuration to give etcd's client: cfg, or
// when cfg names a ServerName, a copy that verifies the servers'
// certificates against that name itself. gRPC sets ServerName to each
// endpoint's host before the handshake, so the standard verification
// would check the host and ignore the name asked for; the copy skips the
// standard verification and makes the same checks (chain to cfg.RootCAs,
// or the system's roots when nil; server use; the name) in
// VerifyConnection.
func clientTLS(cfg *tls.Config) *tls.Config {
	if cfg == nil || cfg.ServerName == "" || cfg.InsecureSkipVerify {
		return cfg
	}
	c := cfg.Clone()
	name, roots, next := cfg.ServerName, cfg.RootCAs, cfg.VerifyConnection
	c.InsecureSkipVerify = true // replaced by the verification below, never off
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("tls: the etcd server sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, ic := range cs.PeerCertificates[1:] {
			inter.AddCert(ic)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
	return c
}

// isTLSAlert tells whether err is an alert the peer sent ("remote error:
// tls: ...").
func isTLSAlert(err error) bool {
	return err != nil && strings.Contains(err.Error(), "remote error: tls:")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// splitEndpoint returns an endpoint's scheme ("" when it has none) and
// host:port.
func splitEndpoint(ep string) (scheme, host string) {
	if !strings.Contains(ep, "://") {
		return "", ep
	}
	u, err := url.Parse(ep)
	if err != nil {
		return "", ""
	}
	return u.Scheme, u.Host
}
