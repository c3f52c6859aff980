package webtls

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mustCreate(tb testing.TB, dir string) *Identity {
	tb.Helper()
	id, created, err := LoadOrCreate(dir, []string{"pulsegate.office.example", "192.0.2.7"}, testNow)
	if err != nil {
		tb.Fatalf("LoadOrCreate: %v", err)
	}
	if !created {
		tb.Fatalf("LoadOrCreate in empty dir: created = false, want true")
	}
	return id
}

func TestCreateThenLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	id := mustCreate(t, dir)

	again, created, err := LoadOrCreate(dir, nil, testNow.Add(time.Hour))
	if err != nil {
		t.Fatalf("second LoadOrCreate: %v", err)
	}
	if created {
		t.Errorf("second LoadOrCreate: created = true, want false")
	}
	if got, want := again.Fingerprint(), id.Fingerprint(); got != want {
		t.Errorf("fingerprint after load = %s, want %s", got, want)
	}

	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o700 {
		t.Errorf("dir mode = %o, want 700", got)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != 0o600 {
			t.Errorf("%s mode = %o, want 600", e.Name(), got)
		}
	}
	if want := []string{CertFile, KeyFile}; !slices.Equal(names, want) {
		t.Errorf("dir holds %q, want exactly %q (no temp files left)", names, want)
	}
}

func TestCreateNarrowsExistingDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, dir)
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o700 {
		t.Errorf("dir mode = %o, want 700", got)
	}
}

func TestFingerprintFormat(t *testing.T) {
	id := mustCreate(t, t.TempDir())
	fp := id.Fingerprint()
	if !regexp.MustCompile(`^([0-9A-F]{2}:){31}[0-9A-F]{2}$`).MatchString(fp) {
		t.Fatalf("Fingerprint() = %q, want 32 uppercase hex pairs joined by ':'", fp)
	}
	sum := sha256.Sum256(id.Certificate().Raw)
	if want := strings.ReplaceAll(fmt.Sprintf("% X", sum[:]), " ", ":"); fp != want {
		t.Errorf("Fingerprint() = %s, want %s", fp, want)
	}
}

// TestFingerprintMatchesOpenSSL compares with what an independent tool prints
// for the file on disk, which is what IT may run on an exported certificate.
func TestFingerprintMatchesOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	id := mustCreate(t, dir)
	out, err := exec.Command(openssl, "x509", "-noout", "-fingerprint", "-sha256", "-in", filepath.Join(dir, CertFile)).Output()
	if err != nil {
		t.Fatalf("openssl: %v", err)
	}
	_, got, ok := strings.Cut(strings.TrimSpace(string(out)), "=")
	if !ok || got != id.Fingerprint() {
		t.Errorf("openssl says %q, Fingerprint() = %s", out, id.Fingerprint())
	}
}

func TestCertificateFields(t *testing.T) {
	id := mustCreate(t, t.TempDir())
	c := id.Certificate()

	hostname, _ := os.Hostname()
	wantCN := "Pulsegate"
	if validHostname(hostname) {
		wantCN += " " + strings.TrimSuffix(hostname, ".")
	}
	if c.Subject.CommonName != wantCN {
		t.Errorf("CN = %q, want %q", c.Subject.CommonName, wantCN)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("ExtKeyUsage = %v, want serverAuth", c.ExtKeyUsage)
	}
	if c.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("key algorithm = %v, want ECDSA", c.PublicKeyAlgorithm)
	}
	if c.IsCA {
		t.Error("certificate is a CA")
	}
	if got := c.NotAfter.Sub(testNow); got != validity {
		t.Errorf("NotAfter - now = %v, want %v", got, validity)
	}
	if years := c.NotAfter.Year() - testNow.Year(); years != 10 {
		t.Errorf("certificate lasts %d years, want 10", years)
	}
	if !c.NotBefore.Before(testNow) {
		t.Errorf("NotBefore = %v, want before %v", c.NotBefore, testNow)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() < 64 {
		t.Errorf("serial %v is not a large random positive number", c.SerialNumber)
	}

	wantDNS := []string{"localhost", "pulsegate.office.example"}
	if validHostname(hostname) {
		wantDNS = append(wantDNS, strings.ToLower(hostname), strings.ToLower(hostname)+".local")
	}
	for _, n := range wantDNS {
		if !slices.Contains(c.DNSNames, n) {
			t.Errorf("DNSNames = %q, missing %q", c.DNSNames, n)
		}
		if err := c.VerifyHostname(n); err != nil {
			t.Errorf("VerifyHostname(%q): %v", n, err)
		}
	}
	wantIPs := []string{"127.0.0.1", "::1", "192.0.2.7"}
	m, err := thisMachine()
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range m.addrs {
		wantIPs = append(wantIPs, ip.String())
	}
	for _, ip := range wantIPs {
		if !slices.ContainsFunc(c.IPAddresses, func(got net.IP) bool { return got.Equal(net.ParseIP(ip)) }) {
			t.Errorf("IPAddresses = %v, missing %s", c.IPAddresses, ip)
		}
	}
}

func TestSubjectAltNames(t *testing.T) {
	m := machine{hostname: "Box7", addrs: []net.IP{net.ParseIP("10.1.2.3"), net.ParseIP("2001:db8::5"), net.ParseIP("::ffff:10.1.2.3")}}
	dns, ips, err := subjectAltNames([]string{"UI.Example.", "[2001:db8::9]", "127.0.0.1", "localhost"}, m)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"ui.example", "localhost", "box7", "box7.local"}; !slices.Equal(dns, want) {
		t.Errorf("DNS names = %q, want %q", dns, want)
	}
	var got []string
	for _, ip := range ips {
		got = append(got, ip.String())
	}
	if want := []string{"2001:db8::9", "127.0.0.1", "::1", "10.1.2.3", "2001:db8::5"}; !slices.Equal(got, want) {
		t.Errorf("IPs = %q, want %q", got, want)
	}

	for _, bad := range []string{"a b", "evil.com/x", "fe80::1%eth0", ""} {
		if _, _, err := subjectAltNames([]string{bad}, m); err == nil {
			t.Errorf("subjectAltNames(%q) = nil error, want one", bad)
		}
	}
}

func TestLoadRejectsDamage(t *testing.T) {
	tests := []struct {
		name     string
		damage   func(tb testing.TB, dir string)
		wantFile string // the error must name this file
	}{
		{"corrupt key", func(tb testing.TB, dir string) {
			writeFile(tb, filepath.Join(dir, KeyFile), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
		}, KeyFile},
		{"key not PEM", func(tb testing.TB, dir string) {
			writeFile(tb, filepath.Join(dir, KeyFile), "garbage")
		}, KeyFile},
		{"truncated cert", func(tb testing.TB, dir string) {
			p := filepath.Join(dir, CertFile)
			b, err := os.ReadFile(p)
			if err != nil {
				tb.Fatal(err)
			}
			writeFile(tb, p, string(b[:len(b)/2]))
		}, CertFile},
		{"key from another identity", func(tb testing.TB, dir string) {
			other := tb.TempDir()
			mustCreate(tb, other)
			b, err := os.ReadFile(filepath.Join(other, KeyFile))
			if err != nil {
				tb.Fatal(err)
			}
			writeFile(tb, filepath.Join(dir, KeyFile), string(b))
		}, KeyFile},
		{"key missing", func(tb testing.TB, dir string) {
			if err := os.Remove(filepath.Join(dir, KeyFile)); err != nil {
				tb.Fatal(err)
			}
		}, KeyFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			mustCreate(t, dir)
			tt.damage(t, dir)
			before, _ := os.ReadFile(filepath.Join(dir, CertFile))

			id, created, err := LoadOrCreate(dir, nil, testNow)
			if err == nil {
				t.Fatalf("LoadOrCreate = %v, created %v, want an error", id, created)
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, tt.wantFile)) {
				t.Errorf("error %q does not name %s", err, tt.wantFile)
			}
			after, _ := os.ReadFile(filepath.Join(dir, CertFile))
			if string(before) != string(after) {
				t.Error("certificate was replaced after an error")
			}
		})
	}
}

// A key without a certificate is what a crash between the two writes leaves;
// its fingerprint was never shown, so a new identity is made.
func TestKeyWithoutCertIsReplaced(t *testing.T) {
	dir := t.TempDir()
	first := mustCreate(t, dir)
	if err := os.Remove(filepath.Join(dir, CertFile)); err != nil {
		t.Fatal(err)
	}
	id, created, err := LoadOrCreate(dir, nil, testNow)
	if err != nil {
		t.Fatalf("LoadOrCreate: %v", err)
	}
	if !created || id.Fingerprint() == first.Fingerprint() {
		t.Errorf("created = %v, fingerprint %s (old %s): want a new identity", created, id.Fingerprint(), first.Fingerprint())
	}
}

func writeFile(tb testing.TB, path, s string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// startTLS serves HSTS(ok) with the identity on a real loopback listener.
func startTLS(tb testing.TB, id *Identity) *httptest.Server {
	tb.Helper()
	srv := httptest.NewUnstartedServer(HSTS(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})))
	srv.TLS = id.TLSConfig()
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.StartTLS()
	tb.Cleanup(srv.Close)
	return srv
}

func TestTLSServer(t *testing.T) {
	id := mustCreate(t, t.TempDir())
	srv := startTLS(t, id)
	addr := srv.Listener.Addr().String()

	pinned := func(fp string) *tls.Config {
		return &tls.Config{
			// The pin replaces chain verification, as it does for a person
			// comparing fingerprints in the browser.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if got := fingerprint(cs.PeerCertificates[0].Raw); got != fp {
					return fmt.Errorf("fingerprint %s, want %s", got, fp)
				}
				return nil
			},
		}
	}

	t.Run("pinned client", func(t *testing.T) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: pinned(id.Fingerprint())}}
		defer c.CloseIdleConnections()
		resp, err := c.Get("https://" + addr + "/")
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if string(body) != "ok" {
			t.Errorf("body = %q, want ok", body)
		}
		if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=31536000" {
			t.Errorf("Strict-Transport-Security = %q, want max-age=31536000", got)
		}
		if resp.TLS.Version < tls.VersionTLS12 {
			t.Errorf("negotiated %s", tls.VersionName(resp.TLS.Version))
		}
	})

	t.Run("wrong pin", func(t *testing.T) {
		other := mustCreate(t, t.TempDir())
		conn, err := tls.Dial("tcp", addr, pinned(other.Fingerprint()))
		if err == nil {
			conn.Close()
			t.Fatal("handshake with another identity's pin succeeded")
		}
	})

	// A client that trusts exactly this certificate verifies it the normal
	// way for the loopback names, so the SANs are usable.
	for _, name := range []string{"localhost", "127.0.0.1"} {
		t.Run("verified as "+name, func(t *testing.T) {
			roots := x509.NewCertPool()
			roots.AddCert(id.Certificate())
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: name})
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			conn.Close()
		})
	}

	t.Run("TLS 1.1 refused", func(t *testing.T) {
		cfg := pinned(id.Fingerprint())
		cfg.MinVersion = tls.VersionTLS10
		cfg.MaxVersion = tls.VersionTLS11
		conn, err := tls.Dial("tcp", addr, cfg)
		if err == nil {
			conn.Close()
			t.Fatalf("TLS 1.1 handshake succeeded")
		}
	})

	t.Run("TLS 1.2 accepted", func(t *testing.T) {
		cfg := pinned(id.Fingerprint())
		cfg.MaxVersion = tls.VersionTLS12
		conn, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatalf("TLS 1.2 handshake: %v", err)
		}
		defer conn.Close()
		if v := conn.ConnectionState().Version; v != tls.VersionTLS12 {
			t.Errorf("negotiated %s, want TLS 1.2", tls.VersionName(v))
		}
	})
}

func TestTLSConfigIsACopy(t *testing.T) {
	id := mustCreate(t, t.TempDir())
	a := id.TLSConfig()
	a.MinVersion = tls.VersionTLS10
	a.Certificates = nil
	b := id.TLSConfig()
	if b.MinVersion != tls.VersionTLS12 || len(b.Certificates) != 1 {
		t.Errorf("TLSConfig() = MinVersion %x, %d certificates after a caller changed an earlier one", b.MinVersion, len(b.Certificates))
	}
}
