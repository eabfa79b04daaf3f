package metastoretest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

// CA is a certificate authority for tests of TLS to etcd: ECDSA P-256,
// valid from an hour ago for a day.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	DER  []byte         // Cert, DER-encoded
	Pool *x509.CertPool // holding Cert alone
}

// NewCA makes a self-signed CA named cn.
func NewCA(t testing.TB, cn string) *CA {
	t.Helper()
	k := newKey(t)
	der := sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}, nil, k, k)
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &CA{Cert: c, Key: k, DER: der, Pool: pool}
}

// Issue signs tmpl (its serial number and validity are set here) for a
// new key, and returns the certificate, DER-encoded, and the key.
func (ca *CA) Issue(t testing.TB, tmpl *x509.Certificate) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	k := newKey(t)
	return sign(t, tmpl, ca, k, ca.Key), k
}

// TLSCert is Issue as a tls.Certificate.
func (ca *CA) TLSCert(t testing.TB, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	der, k := ca.Issue(t, tmpl)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sign makes tmpl a certificate for key's public half, signed by parent
// (nil: self-signed) with signer. Serial numbers are random, so every
// certificate of a run is told apart without shared state.
func sign(t testing.TB, tmpl *x509.Certificate, parent *CA, key, signer *ecdsa.PrivateKey) []byte {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	p := tmpl
	if parent != nil {
		p = parent.Cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
