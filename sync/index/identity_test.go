package index

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	id, err := LoadOrCreateIdentity(dir, []string{"index.example.com", "192.0.2.7", "localhost"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, %v", fi.Mode().Perm(), err)
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 4 {
		t.Errorf("%d files in the identity dir, want 4", len(files))
	}
	for _, f := range files {
		fi, _ := f.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", f.Name(), fi.Mode().Perm())
		}
	}
	c := id.Certificate()
	if !slices.Equal(c.DNSNames, []string{"localhost", "index.example.com"}) || len(c.IPAddresses) != 3 ||
		!c.IPAddresses[2].Equal(net.ParseIP("192.0.2.7")) || !c.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("SANs %v %v", c.DNSNames, c.IPAddresses)
	}
	if c.NotAfter.Before(t0.AddDate(10, 0, -1)) {
		t.Errorf("server certificate ends %v", c.NotAfter)
	}
	pin := id.Pin()
	if checkPin(pin) != nil {
		t.Errorf("Pin() = %q", pin)
	}
	again, err := LoadOrCreateIdentity(dir, []string{"other.example"}, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if again.Pin() != pin || !again.ClientCA().Equal(id.ClientCA()) {
		t.Error("loading the identity again changed it")
	}
	other, err := LoadOrCreateIdentity(t.TempDir(), nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	if other.Pin() == pin {
		t.Error("two identities share a pin")
	}
	if cfg := id.TLSConfig(); cfg.MinVersion < 0x0303 || cfg.ClientCAs == nil || cfg.ClientAuth.String() != "VerifyClientCertIfGiven" {
		t.Errorf("TLS config %+v", cfg)
	}
}

func newCSR(t testing.TB, subject string) (*x509.CertificateRequest, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: subject},
		URIs:    []*url.URL{customerURI("someone-else")},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr, key
}

func parsePEMCert(t testing.TB, p []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(p)
	if b == nil {
		t.Fatalf("no PEM in %q", p)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIssueClient(t *testing.T) {
	id, err := LoadOrCreateIdentity(t.TempDir(), nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, customer := range []string{"acme", "a b/c:d%e", "ünïcode"} {
		csr, _ := newCSR(t, "admin")
		p, err := id.IssueClient(customer, csr, t0)
		if err != nil {
			t.Fatal(err)
		}
		c := parsePEMCert(t, p)
		if got, err := CustomerOf(c); got != customer || err != nil {
			t.Errorf("CustomerOf(cert for %q) = %q, %v", customer, got, err)
		}
		if c.Subject.CommonName != "" || len(c.URIs) != 1 || len(c.DNSNames)+len(c.EmailAddresses)+len(c.IPAddresses) != 0 {
			t.Errorf("the certificate carries more than the customer: %v %v", c.Subject, c.URIs)
		}
		if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || c.NotAfter.Sub(t0) < 3*364*24*time.Hour ||
			c.NotAfter.Sub(t0) > 3*367*24*time.Hour || c.SerialNumber.BitLen() < 64 {
			t.Errorf("usage %v, not after %v, serial %v", c.ExtKeyUsage, c.NotAfter, c.SerialNumber)
		}
		pool := x509.NewCertPool()
		pool.AddCert(id.ClientCA())
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("the client certificate does not verify against the client CA: %v", err)
		}
	}
	csr, _ := newCSR(t, "x")
	csr.Signature[len(csr.Signature)-3] ^= 0xff
	if _, err := id.IssueClient("acme", csr, t0); err == nil {
		t.Error("IssueClient accepted a request with a bad signature")
	}
	csr, _ = newCSR(t, "x")
	if _, err := id.IssueClient("", csr, t0); err == nil {
		t.Error("IssueClient accepted an empty customer")
	}
	if _, err := id.IssueClient(strings.Repeat("c", 200), csr, t0); err == nil {
		t.Error("IssueClient accepted an overlong customer")
	}

	// CustomerOf wants exactly one customer URI.
	two := &x509.Certificate{URIs: []*url.URL{customerURI("a"), customerURI("b")}}
	other := &x509.Certificate{URIs: []*url.URL{{Scheme: "urn", Opaque: "other:thing"}}}
	bad := &x509.Certificate{URIs: []*url.URL{{Scheme: "urn", Opaque: "pulsegate:customer:%zz"}}}
	for name, c := range map[string]*x509.Certificate{"two": two, "none": other, "bad escape": bad, "nil": nil} {
		if got, err := CustomerOf(c); err == nil {
			t.Errorf("CustomerOf(%s) = %q, want an error", name, got)
		}
	}
}
