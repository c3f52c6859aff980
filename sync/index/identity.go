package index

// The index's identity: its TLS key with a self-signed certificate, which
// clusters and HQ pin by the hash of its public key (no certificate
// authority, no host name check), and a separate client CA that signs the
// certificates clusters enrol for. A client certificate names one customer
// and nothing else, so whoever holds it can only ever speak for that
// customer.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const (
	serverKeyFile   = "server.key"
	serverCertFile  = "server.crt"
	clientCAKeyFile = "client-ca.key"
	clientCACert    = "client-ca.crt"

	serverValidYears = 10
	clientValidYears = 3
	// certBackdate lets a cluster whose clock runs a little behind accept a
	// certificate issued just now.
	certBackdate = time.Hour

	customerURNPrefix = "pulsegate:customer:" // after "urn:"
)

// Identity is the index's server key and certificate and its client CA.
type Identity struct {
	server tls.Certificate
	leaf   *x509.Certificate
	caCert *x509.Certificate
	caKey  crypto.Signer
}

// LoadOrCreateIdentity loads the identity kept in dir, creating what is
// missing: dir (0700), the server's ECDSA P-256 key and self-signed
// certificate (10 years; subject alternative names hosts, each a DNS name or
// an IP address, plus 127.0.0.1, ::1 and localhost), and the client CA. Files
// are 0600 and written atomically. hosts only matter when the certificate is
// created: an existing one is kept, since clusters pin its key.
func LoadOrCreateIdentity(dir string, hosts []string, now time.Time) (*Identity, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	server, leaf, err := loadOrCreatePair(dir, serverCertFile, serverKeyFile, func(key crypto.Signer) ([]byte, error) {
		return serverCertificate(key, hosts, now)
	})
	if err != nil {
		return nil, fmt.Errorf("identity: server certificate: %w", err)
	}
	ca, caLeaf, err := loadOrCreatePair(dir, clientCACert, clientCAKeyFile, func(key crypto.Signer) ([]byte, error) {
		return clientCACertificate(key, now)
	})
	if err != nil {
		return nil, fmt.Errorf("identity: client CA: %w", err)
	}
	if !caLeaf.IsCA {
		return nil, fmt.Errorf("identity: %s is not a CA certificate", filepath.Join(dir, clientCACert))
	}
	caKey, ok := ca.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("identity: client CA key cannot sign")
	}
	return &Identity{
		server: server, leaf: leaf,
		caCert: caLeaf, caKey: caKey,
	}, nil
}

// loadOrCreatePair loads certFile and keyFile from dir or, when certFile is
// missing, creates a key and a certificate for it with create. The key is
// written first and the certificate last, so a certificate on disk always
// has its key beside it.
func loadOrCreatePair(dir, certFile, keyFile string, create func(crypto.Signer) ([]byte, error)) (tls.Certificate, *x509.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, certFile), filepath.Join(dir, keyFile)
	if _, err := os.Stat(certPath); errors.Is(err, os.ErrNotExist) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, nil, err
		}
		der, err := create(key)
		if err != nil {
			return tls.Certificate{}, nil, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return tls.Certificate{}, nil, err
		}
		if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
			return tls.Certificate{}, nil, err
		}
		if err := writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
			return tls.Certificate{}, nil, err
		}
	} else if err != nil {
		return tls.Certificate{}, nil, err
	}
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return pair, pair.Leaf, nil
}

// writeFileAtomic writes data to path (0600) through a temporary file in the
// same directory, synced and renamed over path, then syncs the directory.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func serverCertificate(key crypto.Signer, hosts []string, now time.Time) ([]byte, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Pulsegate"}, CommonName: "Pulsegate index"},
		NotBefore:             now.Add(-certBackdate),
		NotAfter:              now.AddDate(serverValidYears, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range append([]string{"127.0.0.1", "::1", "localhost"}, hosts...) {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
}

func clientCACertificate(key crypto.Signer, now time.Time) ([]byte, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	name := pkix.Name{Organization: []string{"Pulsegate"}, CommonName: "Pulsegate index client CA"}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               name,
		NotBefore:             now.Add(-certBackdate),
		NotAfter:              now.AddDate(serverValidYears, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	return x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
}

// Pin is what clients pin the index by: "sha256:" and the lowercase hex
// SHA-256 of the server certificate's SubjectPublicKeyInfo.
func (id *Identity) Pin() string { return pinOf(id.leaf) }

func pinOf(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return pinPrefix + hex.EncodeToString(sum[:])
}

// Certificate returns the server's certificate.
func (id *Identity) Certificate() *x509.Certificate { return id.leaf }

// ClientCA returns the CA that signs clusters' client certificates.
func (id *Identity) ClientCA() *x509.Certificate { return id.caCert }

// TLSConfig is the server's TLS configuration: TLS 1.2 or later, the server
// certificate, and client certificates verified against the client CA when
// one is given. The handshake does not require one (enrolment and HQ come
// without); handlers decide per route.
func (id *Identity) TLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(id.caCert)
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{id.server},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// IssueClient signs a client certificate for the key of csr (whose signature
// must verify) naming customer: its only identity is the URI
// urn:pulsegate:customer:<customer, escaped>. The CSR's subject and
// extensions are ignored. It returns the certificate in PEM.
func (id *Identity) IssueClient(customer string, csr *x509.CertificateRequest, now time.Time) ([]byte, error) {
	if err := checkID("customer", customer); err != nil {
		return nil, fmt.Errorf("issue client certificate: %w", err)
	}
	if csr == nil {
		return nil, errors.New("issue client certificate: no request")
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("issue client certificate: request signature: %w", err)
	}
	if err := checkClientKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("issue client certificate: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-certBackdate),
		NotAfter:     now.AddDate(clientValidYears, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{customerURI(customer)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, id.caCert, csr.PublicKey, id.caKey)
	if err != nil {
		return nil, fmt.Errorf("issue client certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// checkClientKey accepts the key types and sizes a client may enrol with.
func checkClientKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return errors.New("ECDSA keys must be on P-256 or P-384")
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return errors.New("RSA keys must have at least 2048 bits")
		}
	default:
		return fmt.Errorf("unsupported key type %T", pub)
	}
	return nil
}

func customerURI(customer string) *url.URL {
	return &url.URL{Scheme: "urn", Opaque: customerURNPrefix + url.PathEscape(customer)}
}

// CustomerOf returns the customer a client certificate was issued for: the
// id in its one urn:pulsegate:customer: URI. It does not verify the
// certificate; the TLS handshake did.
func CustomerOf(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", errors.New("customer of certificate: no certificate")
	}
	var found []string
	for _, u := range cert.URIs {
		if u.Scheme != "urn" {
			continue
		}
		rest, ok := strings.CutPrefix(u.Opaque, customerURNPrefix)
		if !ok {
			continue
		}
		c, err := url.PathUnescape(rest)
		if err != nil || checkID("customer", c) != nil {
			return "", errors.New("customer of certificate: malformed customer URI")
		}
		found = append(found, c)
	}
	if len(found) != 1 {
		return "", fmt.Errorf("customer of certificate: %d customer URIs, want exactly 1", len(found))
	}
	return found[0], nil
}
