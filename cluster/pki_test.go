package cluster

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustNewCA(tb testing.TB, customer string) *CA {
	tb.Helper()
	ca, err := NewCA(customer, time.Now())
	if err != nil {
		tb.Fatalf("NewCA(%q): %v", customer, err)
	}
	return ca
}

// mustNodeCert issues a certificate for a fresh site and loads it the way a
// box does, through SaveNodeCert and LoadNodeCert.
func mustNodeCert(tb testing.TB, ca *CA, now time.Time) *NodeCert {
	tb.Helper()
	key, err := NewNodeKey()
	if err != nil {
		tb.Fatal(err)
	}
	site := NewSiteID()
	certPEM, err := ca.Issue(site, key.Public(), now)
	if err != nil {
		tb.Fatalf("Issue(%s): %v", site, err)
	}
	dir := tb.TempDir()
	if err := SaveNodeCert(dir, certPEM, key); err != nil {
		tb.Fatalf("SaveNodeCert: %v", err)
	}
	node, err := LoadNodeCert(dir)
	if err != nil {
		tb.Fatalf("LoadNodeCert: %v", err)
	}
	return node
}

// mustRawNodeCert signs a server+client certificate from tmpl with ca,
// bypassing Issue, to build certificates Issue would never produce.
func mustRawNodeCert(tb testing.TB, ca *CA, tmpl *x509.Certificate) *NodeCert {
	tb.Helper()
	key, err := NewNodeKey()
	if err != nil {
		tb.Fatal(err)
	}
	tmpl.SerialNumber, err = newSerial()
	if err != nil {
		tb.Fatal(err)
	}
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &NodeCert{Cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, Leaf: leaf}
}

type handshakeResult struct {
	server, client       tls.ConnectionState
	serverErr, clientErr error
}

// handshake runs a real TLS handshake over a 127.0.0.1 connection, then has
// the server send one byte, so that the client also sees a refusal the
// server only decides after the client's handshake has returned (TLS 1.3
// servers verify the client certificate last).
func handshake(tb testing.TB, serverCfg, clientCfg *tls.Config) handshakeResult {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(5 * time.Second)

	type side struct {
		cs  tls.ConnectionState
		err error
	}
	srvDone := make(chan side, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvDone <- side{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(deadline)
		tc := tls.Server(c, serverCfg)
		if err := tc.Handshake(); err != nil {
			srvDone <- side{err: err}
			return
		}
		_, err = tc.Write([]byte{1})
		srvDone <- side{cs: tc.ConnectionState(), err: err}
	}()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	_ = c.SetDeadline(deadline)
	tc := tls.Client(c, clientCfg)
	var r handshakeResult
	r.clientErr = tc.Handshake()
	if r.clientErr == nil {
		var b [1]byte
		_, r.clientErr = io.ReadFull(tc, b[:])
	}
	r.client = tc.ConnectionState()
	c.Close()
	srv := <-srvDone
	r.server, r.serverErr = srv.cs, srv.err
	return r
}

func TestPeerTLS(t *testing.T) {
	caA := mustNewCA(t, "acme")
	caB := mustNewCA(t, "globex")
	n1 := mustNodeCert(t, caA, time.Now())
	n2 := mustNodeCert(t, caA, time.Now())
	nB := mustNodeCert(t, caB, time.Now())
	expired := mustNodeCert(t, caA, time.Now().AddDate(-6, 0, 0))
	noSite := mustRawNodeCert(t, caA, &x509.Certificate{
		Subject:  pkix.Name{CommonName: "no site"},
		DNSNames: []string{"x.pulsegate.internal"},
	})
	otherSite := NewSiteID()

	withServerName := func(c *tls.Config, name string) *tls.Config { c.ServerName = name; return c }
	tls12Server := &tls.Config{MaxVersion: tls.VersionTLS12, Certificates: []tls.Certificate{chainWithCA(n1.Cert, caA.Cert)}}
	tls12Client := &tls.Config{
		MaxVersion:         tls.VersionTLS12,
		Certificates:       []tls.Certificate{chainWithCA(n2.Cert, caA.Cert)},
		InsecureSkipVerify: true, // the server under test must refuse before any verification matters
	}
	leafOnlyServer := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{n1.Cert}}

	tests := []struct {
		name           string
		server, client *tls.Config
		refusedBy      string // "server" or "client" if that side must refuse the handshake
		why            string // what the refusing side's error says
		wantPeerSite   string // site id PeerSiteID returns on the server; "" if it must fail
	}{
		{name: "mutual TLS, one CA", server: ServerTLS(caA.Cert, n1), client: ClientTLS(caA.Cert, n2, n1.SiteID), wantPeerSite: n2.SiteID},
		{name: "mutual TLS, any site", server: ServerTLS(caA.Cert, n1), client: ClientTLS(caA.Cert, n2, ""), wantPeerSite: n2.SiteID},
		{name: "server name is not checked", server: ServerTLS(caA.Cert, n1), client: withServerName(ClientTLS(caA.Cert, n2, n1.SiteID), "10.9.9.9"), wantPeerSite: n2.SiteID},
		{name: "client of another CA refused", server: ServerTLS(caA.Cert, n1), client: ClientTLS(caA.Cert, nB, ""), refusedBy: "server", why: "unknown authority"},
		{name: "server of another CA refused", server: ServerTLS(caB.Cert, nB), client: ClientTLS(caA.Cert, n1, ""), refusedBy: "client", why: "unknown authority"},
		{name: "server of another CA presenting our CA refused", server: ServerTLS(caA.Cert, nB), client: ClientTLS(caA.Cert, n1, ""), refusedBy: "client", why: "unknown authority"},
		{name: "wrong expected site refused", server: ServerTLS(caA.Cert, n1), client: ClientTLS(caA.Cert, n2, otherSite), refusedBy: "client", why: "site id"},
		{name: "client cert without site id refused", server: ServerTLS(caA.Cert, n1), client: ClientTLS(caA.Cert, noSite, ""), refusedBy: "server", why: "site id"},
		{name: "server cert without site id refused", server: ServerTLS(caA.Cert, noSite), client: ClientTLS(caA.Cert, n1, ""), refusedBy: "client", why: "site id"},
		{name: "expired server cert refused", server: ServerTLS(caA.Cert, expired), client: ClientTLS(caA.Cert, n1, ""), refusedBy: "client", why: "expired"},
		{name: "expired client cert refused", server: ServerTLS(caA.Cert, n1), client: ClientTLS(caA.Cert, expired, ""), refusedBy: "server", why: "expired"},
		{name: "no client cert: no peer site", server: ServerTLS(caA.Cert, n1), client: ClientTLS(caA.Cert, nil, n1.SiteID)},
		{name: "join, right CA hash", server: ServerTLS(caA.Cert, n1), client: JoinTLS(caA.Hash())},
		{name: "join, wrong CA hash", server: ServerTLS(caA.Cert, n1), client: JoinTLS(caB.Hash()), refusedBy: "client", why: "CA hash"},
		{name: "join, malformed CA hash", server: ServerTLS(caA.Cert, n1), client: JoinTLS("sha256:"), refusedBy: "client", why: "CA hash"},
		{name: "join, server sends no CA", server: leafOnlyServer, client: JoinTLS(caA.Hash()), refusedBy: "client", why: "want leaf and CA"},
		{name: "join, server of another CA presenting our CA", server: ServerTLS(caA.Cert, nB), client: JoinTLS(caA.Hash()), refusedBy: "client", why: "unknown authority"},
		{name: "join, server cert without site id", server: ServerTLS(caA.Cert, noSite), client: JoinTLS(caA.Hash()), refusedBy: "client", why: "site id"},
		{name: "server refuses TLS 1.2", server: ServerTLS(caA.Cert, n1), client: tls12Client, refusedBy: "server", why: "unsupported versions"},
		{name: "client will not speak TLS 1.2", server: tls12Server, client: ClientTLS(caA.Cert, n2, ""), refusedBy: "server", why: "unsupported versions"},
		{name: "join will not speak TLS 1.2", server: tls12Server, client: JoinTLS(caA.Hash()), refusedBy: "server", why: "unsupported versions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := handshake(t, tt.server, tt.client)
			if tt.refusedBy != "" {
				// Both sides fail; the refusing one says why, the other got an alert.
				decided := map[string]error{"server": r.serverErr, "client": r.clientErr}[tt.refusedBy]
				if r.serverErr == nil || r.clientErr == nil || !strings.Contains(decided.Error(), tt.why) {
					t.Errorf("server error = %v, client error = %v; want both to fail, the %s saying %q",
						r.serverErr, r.clientErr, tt.refusedBy, tt.why)
				}
				return
			}
			if r.serverErr != nil || r.clientErr != nil {
				t.Fatalf("server error = %v, client error = %v; want none", r.serverErr, r.clientErr)
			}
			if v := r.server.Version; v != tls.VersionTLS13 {
				t.Errorf("negotiated version %x, want TLS 1.3", v)
			}
			site, err := PeerSiteID(r.server)
			switch {
			case tt.wantPeerSite == "" && err == nil:
				t.Errorf("server PeerSiteID = %q, want error", site)
			case tt.wantPeerSite != "" && (err != nil || site != tt.wantPeerSite):
				t.Errorf("server PeerSiteID = %q, %v, want %q", site, err, tt.wantPeerSite)
			}
		})
	}
}

func TestServerTLSSendsCA(t *testing.T) {
	ca := mustNewCA(t, "acme")
	n := mustNodeCert(t, ca, time.Now())
	r := handshake(t, ServerTLS(ca.Cert, n), JoinTLS(ca.Hash()))
	if r.clientErr != nil {
		t.Fatal(r.clientErr)
	}
	got := r.client.PeerCertificates
	if len(got) != 2 || !got[0].Equal(n.Leaf) || !got[1].Equal(ca.Cert) {
		t.Errorf("server presented %d certificates, want node certificate then CA", len(got))
	}
}

func TestNewCA(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ca, err := NewCA("acme", now)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Cert
	if got, want := c.Subject.CommonName, "Pulsegate CA acme"; got != want {
		t.Errorf("CN = %q, want %q", got, want)
	}
	if !c.IsCA || !c.BasicConstraintsValid || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("IsCA=%v BasicConstraintsValid=%v KeyUsage=%b, want a CA allowed to sign certificates", c.IsCA, c.BasicConstraintsValid, c.KeyUsage)
	}
	if got, want := c.NotAfter, now.AddDate(10, 0, 0); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", got, want)
	}
	if c.NotBefore.After(now) {
		t.Errorf("NotBefore = %v, after creation time %v", c.NotBefore, now)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if !mustParseCert(t, ca.CertPEM).Equal(c) {
		t.Error("CertPEM does not hold Cert")
	}
	if !publicKeyEqual(ca.Key.Public(), c.PublicKey) {
		t.Error("Key does not match Cert")
	}

	if _, err := NewCA("", now); err == nil {
		t.Error(`NewCA("") succeeded, want error`)
	}
}

// mustParseCert parses a PEM file holding exactly one certificate.
func mustParseCert(tb testing.TB, certPEM []byte) *x509.Certificate {
	tb.Helper()
	block, rest := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" || len(rest) != 0 {
		tb.Fatalf("want exactly one CERTIFICATE PEM block in %q", certPEM)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func TestCAHash(t *testing.T) {
	ca := mustNewCA(t, "acme")
	sum := sha256.Sum256(ca.Cert.RawSubjectPublicKeyInfo)
	if got, want := ca.Hash(), "sha256:"+hex.EncodeToString(sum[:]); got != want {
		t.Errorf("Hash() = %q, want %q (SHA-256 of SubjectPublicKeyInfo)", got, want)
	}
	if err := checkCAHash(ca.Hash()); err != nil {
		t.Errorf("Hash() = %q: %v", ca.Hash(), err)
	}
	if other := mustNewCA(t, "acme"); other.Hash() == ca.Hash() {
		t.Error("two CAs share a hash")
	}
}

func TestCASaveLoad(t *testing.T) {
	ca := mustNewCA(t, "acme")
	dir := filepath.Join(t.TempDir(), "pki")
	if err := SaveCA(dir, ca); err != nil {
		t.Fatalf("SaveCA: %v", err)
	}
	checkMode(t, filepath.Join(dir, "ca.key"), 0o600)
	got, err := LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if !got.Cert.Equal(ca.Cert) || !bytes.Equal(got.CertPEM, ca.CertPEM) || got.Hash() != ca.Hash() {
		t.Error("loaded CA certificate differs from the saved one")
	}
	if !publicKeyEqual(got.Key.Public(), ca.Key.Public()) {
		t.Error("loaded CA key differs from the saved one")
	}
	// The loaded CA still issues certificates that verify against the original.
	key, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := got.Issue(NewSiteID(), key.Public(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leaf := mustParseCert(t, certPEM)
	if err := leaf.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("certificate issued by loaded CA: %v", err)
	}
}

func TestCALoadErrors(t *testing.T) {
	caA := mustNewCA(t, "acme")
	caB := mustNewCA(t, "globex")
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
	}{
		{name: "missing", setup: func(*testing.T, string) {}},
		{name: "key of another CA", setup: func(t *testing.T, dir string) {
			mustSaveCA(t, dir, caB)
			mustCopy(t, filepath.Join(dir, "ca.crt"), caA.CertPEM)
		}},
		{name: "garbage certificate", setup: func(t *testing.T, dir string) {
			mustSaveCA(t, dir, caA)
			mustCopy(t, filepath.Join(dir, "ca.crt"), []byte("not PEM"))
		}},
		{name: "two certificates", setup: func(t *testing.T, dir string) {
			mustSaveCA(t, dir, caA)
			mustCopy(t, filepath.Join(dir, "ca.crt"), append(append([]byte(nil), caA.CertPEM...), caB.CertPEM...))
		}},
		{name: "key missing", setup: func(t *testing.T, dir string) {
			mustSaveCA(t, dir, caA)
			if err := os.Remove(filepath.Join(dir, "ca.key")); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "certificate is not a CA", setup: func(t *testing.T, dir string) {
			mustSaveCA(t, dir, caA)
			key, err := NewNodeKey()
			if err != nil {
				t.Fatal(err)
			}
			certPEM, err := caA.Issue(NewSiteID(), key.Public(), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			mustCopy(t, filepath.Join(dir, "ca.crt"), certPEM)
			keyPEM, err := encodeKeyPEM(key)
			if err != nil {
				t.Fatal(err)
			}
			mustCopy(t, filepath.Join(dir, "ca.key"), keyPEM)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			if _, err := LoadCA(dir); err == nil {
				t.Error("LoadCA succeeded, want error")
			}
		})
	}
}

func mustSaveCA(tb testing.TB, dir string, ca *CA) {
	tb.Helper()
	if err := SaveCA(dir, ca); err != nil {
		tb.Fatal(err)
	}
}

func mustCopy(tb testing.TB, path string, data []byte) {
	tb.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
}

func checkMode(tb testing.TB, path string, want os.FileMode) {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		tb.Errorf("%s has mode %o, want %o", filepath.Base(path), got, want)
	}
}

func TestCAIssue(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ca, err := NewCA("acme", now)
	if err != nil {
		t.Fatal(err)
	}
	key, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	site := NewSiteID()
	certPEM, err := ca.Issue(site, key.Public(), now)
	if err != nil {
		t.Fatal(err)
	}
	c := mustParseCert(t, certPEM)
	if got, err := SiteIDFromCert(c); err != nil || got != site {
		t.Errorf("SiteIDFromCert = %q, %v, want %q", got, err, site)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "pulsegate://site/"+site {
		t.Errorf("URIs = %v, want [pulsegate://site/%s]", c.URIs, site)
	}
	if want := []string{site + ".pulsegate.internal"}; len(c.DNSNames) != 1 || c.DNSNames[0] != want[0] {
		t.Errorf("DNSNames = %q, want %q", c.DNSNames, want)
	}
	if len(c.ExtKeyUsage) != 2 || c.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || c.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("ExtKeyUsage = %v, want ServerAuth, ClientAuth", c.ExtKeyUsage)
	}
	if c.IsCA {
		t.Error("node certificate is a CA")
	}
	if got, want := c.NotAfter, now.AddDate(5, 0, 0); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", got, want)
	}
	if !publicKeyEqual(key.Public(), c.PublicKey) {
		t.Error("certificate does not hold the node's public key")
	}
	_, err = c.Verify(x509.VerifyOptions{
		Roots:       certPool(ca.Cert),
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		t.Errorf("Verify: %v", err)
	}

	again, err := ca.Issue(site, key.Public(), now)
	if err != nil {
		t.Fatal(err)
	}
	c2 := mustParseCert(t, again)
	if c2.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two certificates share a serial number")
	}

	// Never valid past the CA.
	late, err := ca.Issue(site, key.Public(), now.AddDate(8, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	c3 := mustParseCert(t, late)
	if !c3.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("NotAfter = %v, want the CA's %v", c3.NotAfter, ca.Cert.NotAfter)
	}
}

func TestCAIssueErrors(t *testing.T) {
	ca := mustNewCA(t, "acme")
	key, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		site string
		pub  crypto.PublicKey
	}{
		{name: "empty site", site: "", pub: key.Public()},
		{name: "uppercase site", site: "0123456789ABCDEF", pub: key.Public()},
		{name: "short site", site: "0123", pub: key.Public()},
		{name: "nil key", site: NewSiteID(), pub: nil},
		{name: "unsupported key", site: NewSiteID(), pub: "not a key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ca.Issue(tt.site, tt.pub, time.Now()); err == nil {
				t.Errorf("Issue(%q) succeeded, want error", tt.site)
			}
		})
	}
}

func TestPKINodeCertSaveLoad(t *testing.T) {
	ca := mustNewCA(t, "acme")
	key, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	site := NewSiteID()
	certPEM, err := ca.Issue(site, key.Public(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "pki")
	if err := SaveNodeCert(dir, certPEM, key); err != nil {
		t.Fatalf("SaveNodeCert: %v", err)
	}
	checkMode(t, filepath.Join(dir, "node.key"), 0o600)
	n, err := LoadNodeCert(dir)
	if err != nil {
		t.Fatalf("LoadNodeCert: %v", err)
	}
	if n.SiteID != site {
		t.Errorf("SiteID = %q, want %q", n.SiteID, site)
	}
	if n.Leaf == nil || !n.Leaf.Equal(mustParseCert(t, certPEM)) {
		t.Error("Leaf is not the saved certificate")
	}
	if len(n.Cert.Certificate) != 1 || !publicKeyEqual(n.Cert.PrivateKey.(crypto.Signer).Public(), key.Public()) {
		t.Error("Cert does not hold the saved certificate and key")
	}

	other, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveNodeCert(t.TempDir(), certPEM, other); err == nil {
		t.Error("SaveNodeCert with another key succeeded, want error")
	}
	if _, err := LoadNodeCert(t.TempDir()); err == nil {
		t.Error("LoadNodeCert of an empty dir succeeded, want error")
	}
}

func TestSiteID(t *testing.T) {
	a, b := NewSiteID(), NewSiteID()
	if !ValidSiteID(a) || !ValidSiteID(b) {
		t.Errorf("NewSiteID() = %q, %q: not valid", a, b)
	}
	if a == b {
		t.Errorf("NewSiteID() twice = %q", a)
	}
	tests := []struct {
		in   string
		want bool
	}{
		{"0123456789abcdef", true},
		{"ffffffffffffffff", true},
		{"", false},
		{"0123456789abcde", false},
		{"0123456789abcdef0", false},
		{"0123456789ABCDEF", false},
		{"0123456789abcdeg", false},
		{"0123456789abcde ", false},
		{"../../etc/passwd", false},
	}
	for _, tt := range tests {
		if got := ValidSiteID(tt.in); got != tt.want {
			t.Errorf("ValidSiteID(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestSiteIDFromCert(t *testing.T) {
	const id = "0123456789abcdef"
	tests := []struct {
		name string
		uris []string
		want string // "" for an error
	}{
		{name: "one site URI", uris: []string{"pulsegate://site/" + id}, want: id},
		{name: "other schemes ignored", uris: []string{"spiffe://acme/x", "pulsegate://site/" + id}, want: id},
		{name: "none", uris: nil},
		{name: "only other schemes", uris: []string{"https://site/" + id}},
		{name: "two site URIs", uris: []string{"pulsegate://site/" + id, "pulsegate://site/fedcba9876543210"}},
		{name: "same site URI twice", uris: []string{"pulsegate://site/" + id, "pulsegate://site/" + id}},
		{name: "wrong host", uris: []string{"pulsegate://node/" + id}},
		{name: "invalid id", uris: []string{"pulsegate://site/0123456789ABCDEF"}},
		{name: "short id", uris: []string{"pulsegate://site/0123"}},
		{name: "extra path", uris: []string{"pulsegate://site/" + id + "/x"}},
		{name: "query", uris: []string{"pulsegate://site/" + id + "?a=b"}},
		{name: "fragment", uris: []string{"pulsegate://site/" + id + "#x"}},
		{name: "user", uris: []string{"pulsegate://u@site/" + id}},
		{name: "port", uris: []string{"pulsegate://site:1/" + id}},
		{name: "escaped path", uris: []string{"pulsegate://site/%30123456789abcdef"}},
		{name: "opaque", uris: []string{"pulsegate:site/" + id}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &x509.Certificate{}
			for _, s := range tt.uris {
				u, err := url.Parse(s)
				if err != nil {
					t.Fatal(err)
				}
				c.URIs = append(c.URIs, u)
			}
			got, err := SiteIDFromCert(c)
			if tt.want == "" {
				if err == nil {
					t.Errorf("SiteIDFromCert(%q) = %q, want error", tt.uris, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("SiteIDFromCert(%q) = %q, %v, want %q", tt.uris, got, err, tt.want)
			}
		})
	}
	if _, err := SiteIDFromCert(nil); err == nil {
		t.Error("SiteIDFromCert(nil) succeeded, want error")
	}
}

func TestPeerSiteIDUnverified(t *testing.T) {
	ca := mustNewCA(t, "acme")
	n := mustNodeCert(t, ca, time.Now())
	// Presented but unverified certificates do not count.
	cs := tls.ConnectionState{PeerCertificates: []*x509.Certificate{n.Leaf}}
	if site, err := PeerSiteID(cs); err == nil {
		t.Errorf("PeerSiteID of an unverified peer = %q, want error", site)
	}
	cs.VerifiedChains = [][]*x509.Certificate{{n.Leaf, ca.Cert}}
	if site, err := PeerSiteID(cs); err != nil || site != n.SiteID {
		t.Errorf("PeerSiteID = %q, %v, want %q", site, err, n.SiteID)
	}
}
