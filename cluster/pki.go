package cluster

// The cluster PKI: one certificate authority per customer, one node
// certificate per office. The CA is created by `pulsegate init` on the first
// box and copied to every box that joins, so any member can issue the node
// certificate of a newcomer. Peers authenticate each other with mutual TLS 1.3
// and identify each other by the site id carried in the certificate, never by
// address: offices get their addresses from DHCP.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	caCertFile   = "ca.crt"
	caKeyFile    = "ca.key"
	nodeCertFile = "node.crt"
	nodeKeyFile  = "node.key"

	caValidYears   = 10
	nodeValidYears = 5

	// clockSkew backdates NotBefore. The boxes have no battery-backed clock:
	// one that has just booted may run behind the box that issued its
	// certificate until NTP catches up.
	clockSkew = time.Hour

	siteURIScheme = "pulsegate"
	siteURIHost   = "site"
	siteDNSSuffix = ".pulsegate.internal"
	caHashPrefix  = "sha256:"
	siteIDLen     = 16
)

// NewSiteID returns a fresh site id: 16 lowercase hex characters (64 bits)
// from crypto/rand. A site id identifies one office's appliance.
func NewSiteID() string {
	var b [siteIDLen / 2]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails; it crashes the program instead.
	return hex.EncodeToString(b[:])
}

// ValidSiteID reports whether s has the form NewSiteID produces.
func ValidSiteID(s string) bool {
	if len(s) != siteIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// CA is the customer's certificate authority.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
}

// NewCA creates a self-signed CA for customer, valid for ten years from now
// (backdated by an hour for clock skew). It may sign node certificates only:
// no intermediate CAs (MaxPathLen 0).
func NewCA(customer string, now time.Time) (*CA, error) {
	if customer == "" {
		return nil, errors.New("create CA: empty customer name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	name := pkix.Name{Organization: []string{"Pulsegate"}, CommonName: "Pulsegate CA " + customer}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               name,
		Issuer:                name,
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.AddDate(caValidYears, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, CertPEM: encodeCertPEM(der), Key: key}, nil
}

// Hash returns "sha256:" followed by the lowercase hex SHA-256 of the CA
// certificate's DER-encoded SubjectPublicKeyInfo, as kubeadm's
// --discovery-token-ca-cert-hash does. Pinning the public key rather than the
// whole certificate keeps join tokens valid if the CA is ever re-signed with
// the same key.
func (ca *CA) Hash() string { return caHash(ca.Cert) }

func caHash(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return caHashPrefix + hex.EncodeToString(sum[:])
}

// Issue signs a node certificate for siteID and pub, valid for five years
// from now (never past the CA's own expiry), usable as both TLS server and
// client. The site id travels as the URI SAN pulsegate://site/<siteID>, which
// is what peers check, and as the DNS SAN <siteID>.pulsegate.internal for
// tools that only look at DNS names. It returns the leaf certificate alone,
// PEM-encoded; ServerTLS and ClientTLS add the CA to the presented chain.
func (ca *CA) Issue(siteID string, pub crypto.PublicKey, now time.Time) ([]byte, error) {
	if !ValidSiteID(siteID) {
		return nil, fmt.Errorf("issue certificate: invalid site id %q", siteID)
	}
	if pub == nil {
		return nil, errors.New("issue certificate: nil public key")
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.AddDate(nodeValidYears, 0, 0)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"Pulsegate"}, CommonName: siteID},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{siteID + siteDNSSuffix},
		URIs:         []*url.URL{siteURI(siteID)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for site %s: %w", siteID, err)
	}
	return encodeCertPEM(der), nil
}

func siteURI(siteID string) *url.URL {
	return &url.URL{Scheme: siteURIScheme, Host: siteURIHost, Path: "/" + siteID}
}

// SiteIDFromCert returns the site id of a node certificate: c must carry
// exactly one pulsegate:// URI SAN, of the form pulsegate://site/<id> with a
// valid id. URIs of other schemes are ignored.
func SiteIDFromCert(c *x509.Certificate) (string, error) {
	if c == nil {
		return "", errors.New("read site id: nil certificate")
	}
	var found []*url.URL
	for _, u := range c.URIs {
		if u.Scheme == siteURIScheme {
			found = append(found, u)
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("read site id: certificate has %d pulsegate:// URI SANs, want 1", len(found))
	}
	u := found[0]
	id, ok := strings.CutPrefix(u.Path, "/")
	if !ok || u.Host != siteURIHost || u.Opaque != "" || u.User != nil || u.RawQuery != "" ||
		u.ForceQuery || u.Fragment != "" || u.RawPath != "" || !ValidSiteID(id) {
		return "", fmt.Errorf("read site id: malformed site URI %q", u.String())
	}
	return id, nil
}

// SaveCA writes the CA to dir as ca.crt and ca.key (mode 0600), both PEM,
// creating dir (mode 0700) if needed. Each file is replaced atomically.
func SaveCA(dir string, ca *CA) error {
	keyPEM, err := encodeKeyPEM(ca.Key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create CA dir: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, caKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, caCertFile), ca.CertPEM, 0o644)
}

// LoadCA reads the CA SaveCA wrote to dir and checks that the key belongs to
// the certificate.
func LoadCA(dir string) (*CA, error) {
	der, err := readPEMFile(filepath.Join(dir, caCertFile), "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("load CA: certificate is not a CA")
	}
	key, err := loadKey(filepath.Join(dir, caKeyFile))
	if err != nil {
		return nil, err
	}
	if !publicKeyEqual(key.Public(), cert.PublicKey) {
		return nil, errors.New("load CA: key does not match certificate")
	}
	return &CA{Cert: cert, CertPEM: encodeCertPEM(der), Key: key}, nil
}

// NodeCert is this box's identity towards its peers.
type NodeCert struct {
	SiteID string
	Cert   tls.Certificate
	Leaf   *x509.Certificate
}

// NewNodeKey generates a node's private key (ECDSA P-256). The key never
// leaves the box: a joining box sends only the public half to be signed.
func NewNodeKey() (crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate node key: %w", err)
	}
	return key, nil
}

// SaveNodeCert writes certPEM (as returned by CA.Issue) and key to dir as
// node.crt and node.key (mode 0600), creating dir (mode 0700) if needed. It
// refuses a key that does not belong to the certificate.
func SaveNodeCert(dir string, certPEM []byte, key crypto.Signer) error {
	keyPEM, err := encodeKeyPEM(key)
	if err != nil {
		return err
	}
	if _, err := parseNodeCert(certPEM, keyPEM); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create node cert dir: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, nodeKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, nodeCertFile), certPEM, 0o644)
}

// LoadNodeCert reads the node certificate and key SaveNodeCert wrote to dir.
// The site id comes from the certificate's URI SAN.
func LoadNodeCert(dir string) (*NodeCert, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, nodeCertFile))
	if err != nil {
		return nil, fmt.Errorf("read node certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, nodeKeyFile))
	if err != nil {
		return nil, fmt.Errorf("read node key: %w", err)
	}
	return parseNodeCert(certPEM, keyPEM)
}

func parseNodeCert(certPEM, keyPEM []byte) (*NodeCert, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load node key pair: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse node certificate: %w", err)
	}
	pair.Leaf = leaf
	id, err := SiteIDFromCert(leaf)
	if err != nil {
		return nil, err
	}
	return &NodeCert{SiteID: id, Cert: pair, Leaf: leaf}, nil
}

// ServerTLS is the TLS config of a box accepting peer connections: TLS 1.3
// only, presenting the node certificate followed by the CA certificate (so a
// joining box can pin the CA by hash, see JoinTLS).
//
// Client certificates are verified against ca IF GIVEN
// (tls.VerifyClientCertIfGiven), and a given certificate must carry a site
// id. A box that is still joining has no certificate, so the handshake alone
// does NOT authenticate the peer: callers must call PeerSiteID on every
// connection and refuse everything but the join request (which carries its
// own secret) when it fails. node must not be nil.
func ServerTLS(ca *x509.Certificate, node *NodeCert) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{chainWithCA(node.Cert, ca)},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    certPool(ca),
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // a joining box; see the doc comment
			}
			if _, err := PeerSiteID(cs); err != nil {
				return fmt.Errorf("verify client: %w", err)
			}
			return nil
		},
	}
}

// ClientTLS is the TLS config of a member box dialling a peer: TLS 1.3 only,
// presenting its node certificate, and accepting the server only if its
// certificate chains to ca and, when expectSite is not empty, carries that
// site id. Peers are identified by site id, not by address (DHCP moves
// them), so the host name check of crypto/tls is replaced by the check in
// VerifyConnection.
//
// Because that verification runs in VerifyConnection, crypto/tls leaves
// ConnectionState.VerifiedChains empty on the client side and PeerSiteID
// returns an error there: a client that needs to know whom it reached passes
// expectSite. A nil node presents no certificate.
func ClientTLS(ca *x509.Certificate, node *NodeCert, expectSite string) *tls.Config {
	roots := certPool(ca)
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verification is not skipped: VerifyConnection below does all of
		// it, without the host name check.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			site, err := verifyServer(cs.PeerCertificates, roots)
			if err != nil {
				return err
			}
			if expectSite != "" && site != expectSite {
				return fmt.Errorf("verify server: site id %s, want %s", site, expectSite)
			}
			return nil
		},
	}
	if node != nil {
		cfg.Certificates = []tls.Certificate{chainWithCA(node.Cert, ca)}
	}
	return cfg
}

// JoinTLS is the TLS config of a box that is joining and has no certificate
// yet. It presents none and accepts the server only if the server's chain
// contains a CA certificate whose hash (see CA.Hash) equals caHash and the
// server's leaf certificate, a node certificate with a site id, verifies
// against that CA. The CA found this way is the one to save for later use.
func JoinTLS(caHash string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verification is not skipped: VerifyConnection pins the CA by hash.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			ca, err := pinnedCA(cs.PeerCertificates, caHash)
			if err != nil {
				return err
			}
			_, err = verifyServer(cs.PeerCertificates, certPool(ca))
			return err
		},
	}
}

// pinnedCA returns the certificate after the leaf in chain whose hash is
// want.
func pinnedCA(chain []*x509.Certificate, want string) (*x509.Certificate, error) {
	if len(chain) < 2 {
		return nil, fmt.Errorf("pin CA: server sent %d certificates, want leaf and CA", len(chain))
	}
	for _, c := range chain[1:] {
		if c.IsCA && caHash(c) == want {
			return c, nil
		}
	}
	return nil, fmt.Errorf("pin CA: server CA hash %s, want %s", caHash(chain[len(chain)-1]), want)
}

// verifyServer verifies that chain's leaf is a server certificate signed by
// a CA in roots and returns its site id. Intermediates are not accepted:
// the cluster CA signs node certificates directly.
func verifyServer(chain []*x509.Certificate, roots *x509.CertPool) (string, error) {
	if len(chain) == 0 {
		return "", errors.New("verify server: no certificate")
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:     roots,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return "", fmt.Errorf("verify server: %w", err)
	}
	return SiteIDFromCert(chain[0])
}

// PeerSiteID returns the site id of the peer of a connection whose handshake
// verified the peer's certificate chain (ConnectionState.VerifiedChains). On
// a server built with ServerTLS it fails for a peer without a certificate
// (a joining box).
func PeerSiteID(cs tls.ConnectionState) (string, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", errors.New("peer site id: no verified peer certificate")
	}
	return SiteIDFromCert(cs.VerifiedChains[0][0])
}

// chainWithCA returns c presenting its leaf followed by ca.
func chainWithCA(c tls.Certificate, ca *x509.Certificate) tls.Certificate {
	if len(c.Certificate) > 0 {
		c.Certificate = [][]byte{c.Certificate[0], ca.Raw}
	}
	return c
}

func certPool(ca *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca)
	return p
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // serial numbers must be positive
}

func encodeCertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func loadKey(path string) (crypto.Signer, error) {
	der, err := readPEMFile(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse private key %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("parse private key %s: %T is not a signer", path, k)
	}
	return s, nil
}

// readPEMFile returns the DER of the single PEM block of type typ in path.
func readPEMFile(path, typ string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", typ, err)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != typ || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("read %s: %s does not hold exactly one %s PEM block", typ, path, typ)
	}
	return block.Bytes, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// writeFileAtomic replaces path with data, so a crash never leaves half a
// key behind.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
