// Package webtls owns the appliance web UI's own HTTPS identity — a per-box
// self-signed certificate whose SHA-256 fingerprint IT compares with what the
// browser shows — and the policy for the plain-HTTP listener (redirect to
// HTTPS, except for loopback clients).
//
// The identity is created once and then only ever loaded: a damaged key or
// certificate is an error, never a reason to make a new one, because the
// fingerprint is what people were told to trust.
package webtls

import (
	"bytes"
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
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File names inside the identity directory.
const (
	KeyFile  = "web-key.pem"
	CertFile = "web-cert.pem"
)

// validity is how long a generated certificate lasts: the box should outlive
// its certificate only rarely, and renewing changes the fingerprint IT trusts.
const validity = 10 * 365 * 24 * time.Hour

// Identity is the web UI's key and self-signed certificate.
type Identity struct {
	cert        tls.Certificate
	leaf        *x509.Certificate
	fingerprint string
}

// LoadOrCreate loads the identity kept in dir, or creates it when dir holds
// none. hosts are extra names or IP addresses the UI is reached by; they are
// only used when the identity is created. created reports whether a new
// identity was made (the caller prints its fingerprint then).
//
// dir should belong to the identity alone: it is created, or narrowed, to
// mode 0700.
func LoadOrCreate(dir string, hosts []string, now time.Time) (id *Identity, created bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create tls dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("restrict tls dir: %w", err)
	}
	keyPath, certPath := filepath.Join(dir, KeyFile), filepath.Join(dir, CertFile)
	haveKey, err := exists(keyPath)
	if err != nil {
		return nil, false, err
	}
	haveCert, err := exists(certPath)
	if err != nil {
		return nil, false, err
	}
	switch {
	case haveCert && haveKey:
		id, err := load(keyPath, certPath)
		return id, false, err
	case haveCert:
		// The certificate is written last, so it may have been shown to
		// someone: a new key would silently change the fingerprint.
		return nil, false, fmt.Errorf("load tls identity: %s is missing but %s exists; restore the key or remove both to make a new identity", keyPath, certPath)
	}
	// No certificate (a key alone is the remains of a creation that never
	// finished, so its fingerprint was never shown): make a new identity.
	m, err := thisMachine()
	if err != nil {
		return nil, false, err
	}
	id, err = create(dir, hosts, now, m)
	if err != nil {
		return nil, false, err
	}
	return id, true, nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
}

func load(keyPath, certPath string) (*Identity, error) {
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("read tls key: %w", err)
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("read tls certificate: %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse tls key %s: %w", keyPath, err)
	}
	leaf, err := parseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parse tls certificate %s: %w", certPath, err)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("load tls identity: key %s does not match certificate %s", keyPath, certPath)
	}
	return newIdentity(key, leaf), nil
}

func parseKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PRIVATE KEY PEM block")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("trailing data after PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("key is %T, want ECDSA P-256", k)
	}
	return ec, nil
}

func parseCert(data []byte) (*x509.Certificate, error) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no CERTIFICATE PEM block")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("trailing data after PEM block")
	}
	return x509.ParseCertificate(block.Bytes)
}

func newIdentity(key *ecdsa.PrivateKey, leaf *x509.Certificate) *Identity {
	return &Identity{
		cert: tls.Certificate{
			Certificate: [][]byte{leaf.Raw},
			PrivateKey:  key,
			Leaf:        leaf,
		},
		leaf:        leaf,
		fingerprint: fingerprint(leaf.Raw),
	}
}

// machine is what the certificate says about the box it was made on.
type machine struct {
	hostname string   // may be empty
	addrs    []net.IP // non-loopback unicast addresses
}

func thisMachine() (machine, error) {
	var m machine
	if h, err := os.Hostname(); err == nil && validHostname(h) {
		m.hostname = strings.TrimSuffix(h, ".")
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return m, fmt.Errorf("list interface addresses: %w", err)
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.IsLoopback() {
			continue
		}
		if n.IP.IsGlobalUnicast() || n.IP.IsLinkLocalUnicast() {
			m.addrs = append(m.addrs, n.IP)
		}
	}
	return m, nil
}

func create(dir string, hosts []string, now time.Time, m machine) (*Identity, error) {
	dns, ips, err := subjectAltNames(hosts, m)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate tls key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	cn := "Pulsegate"
	if m.hostname != "" {
		cn += " " + m.hostname
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		// An hour of slack for clients whose clock is a little behind ours.
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create tls certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse created certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal tls key: %w", err)
	}
	// The key goes first and the certificate last: a certificate on disk
	// always has its key beside it (see LoadOrCreate).
	if err := writeFileAtomic(dir, KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(dir, CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		return nil, err
	}
	return newIdentity(key, leaf), nil
}

// subjectAltNames merges the caller's hosts with the names every box answers
// to and the machine's own names and addresses, without duplicates.
func subjectAltNames(hosts []string, m machine) ([]string, []net.IP, error) {
	var dns []string
	var ips []netip.Addr
	addName := func(h string) {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if !slices.Contains(dns, h) {
			dns = append(dns, h)
		}
	}
	addIP := func(a netip.Addr) {
		a = a.Unmap()
		if !slices.Contains(ips, a) {
			ips = append(ips, a)
		}
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if a, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil && a.Zone() == "" {
			addIP(a)
			continue
		}
		if !validHostname(h) {
			return nil, nil, fmt.Errorf("tls host %q is neither a DNS name nor an IP address", h)
		}
		addName(h)
	}
	addName("localhost")
	addIP(netip.MustParseAddr("127.0.0.1"))
	addIP(netip.IPv6Loopback())
	if m.hostname != "" {
		addName(m.hostname)
		if !strings.HasSuffix(strings.ToLower(m.hostname), ".local") {
			addName(m.hostname + ".local")
		}
	}
	for _, ip := range m.addrs {
		if a, ok := netip.AddrFromSlice(ip); ok {
			addIP(a)
		}
	}
	out := make([]net.IP, len(ips))
	for i, a := range ips {
		out[i] = net.IP(a.AsSlice())
	}
	return dns, out, nil
}

// writeFileAtomic writes name in dir with mode 0600 so that a crash leaves
// either the old file or the complete new one.
func writeFileAtomic(dir, name string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temp for %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("chmod %s: %w", f.Name(), err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("rename %s: %w", name, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open tls dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync tls dir: %w", err)
	}
	return nil
}

// Fingerprint is the SHA-256 of the certificate as uppercase hex pairs joined
// by colons, the way browsers and `openssl x509 -fingerprint -sha256` show it.
func (id *Identity) Fingerprint() string { return id.fingerprint }

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// TLSConfig returns a new server configuration with the identity's
// certificate and TLS 1.2 as the oldest version; the caller may change it.
func (id *Identity) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{id.cert},
	}
}

// Certificate returns the parsed certificate. It is shared: do not modify it.
func (id *Identity) Certificate() *x509.Certificate { return id.leaf }
