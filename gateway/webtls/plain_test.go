package webtls

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

var nextHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusTeapot)
	io.WriteString(w, "next")
})

func TestPlainHandler(t *testing.T) {
	tests := []struct {
		name       string
		port       string
		remote     string
		host       string
		target     string
		wantStatus int
		wantLoc    string
	}{
		{"loopback v4", "8443", "127.0.0.1:5000", "localhost:8080", "/x", http.StatusTeapot, ""},
		{"loopback v4 other", "8443", "127.3.4.5:5000", "evil.com/x", "/x", http.StatusTeapot, ""},
		{"loopback v6", "8443", "[::1]:5000", "[::1]:8080", "/x", http.StatusTeapot, ""},
		{"loopback v4-mapped", "8443", "[::ffff:127.0.0.1]:5000", "localhost", "/", http.StatusTeapot, ""},
		{"LAN IP", "8443", "192.168.1.20:5000", "192.168.1.10:8080", "/", http.StatusPermanentRedirect, "https://192.168.1.10:8443/"},
		{"LAN IP port 443 omitted", "443", "192.168.1.20:5000", "192.168.1.10", "/", http.StatusPermanentRedirect, "https://192.168.1.10/"},
		{"hostname with port 443", "443", "10.0.0.9:40000", "pulsegate.local:80", "/status", http.StatusPermanentRedirect, "https://pulsegate.local/status"},
		{"path and query", "8443", "10.0.0.9:40000", "Box.Local", "/a/b%2Fc?x=1&y=%20z", http.StatusPermanentRedirect, "https://box.local:8443/a/b%2Fc?x=1&y=%20z"},
		{"double slash path stays on host", "8443", "10.0.0.9:40000", "box", "//evil.com/x", http.StatusPermanentRedirect, "https://box:8443//evil.com/x"},
		{"IPv6 host", "8443", "[2001:db8::2]:40000", "[2001:db8::1]:8080", "/", http.StatusPermanentRedirect, "https://[2001:db8::1]:8443/"},
		{"IPv6 host 443", "443", "[2001:db8::2]:40000", "[2001:DB8::1]", "/", http.StatusPermanentRedirect, "https://[2001:db8::1]/"},
		{"unparsable peer is not loopback", "8443", "@", "box", "/", http.StatusPermanentRedirect, "https://box:8443/"},
		{"host with path", "8443", "192.168.1.20:5000", "evil.com/x", "/", http.StatusBadRequest, ""},
		{"host with space", "8443", "192.168.1.20:5000", "a b", "/", http.StatusBadRequest, ""},
		{"empty host", "8443", "192.168.1.20:5000", "", "/", http.StatusBadRequest, ""},
		{"userinfo", "8443", "192.168.1.20:5000", "box@evil.com", "/", http.StatusBadRequest, ""},
		{"bad port", "8443", "192.168.1.20:5000", "box:99999", "/", http.StatusBadRequest, ""},
		{"non-numeric port", "8443", "192.168.1.20:5000", "box:http", "/", http.StatusBadRequest, ""},
		{"bare IPv6", "8443", "192.168.1.20:5000", "2001:db8::1", "/", http.StatusBadRequest, ""},
		{"IPv6 zone", "8443", "192.168.1.20:5000", "[fe80::1%25eth0]:80", "/", http.StatusBadRequest, ""},
		{"bracketed IPv4", "8443", "192.168.1.20:5000", "[192.0.2.1]", "/", http.StatusBadRequest, ""},
		{"backslash", "8443", "192.168.1.20:5000", `evil.com\@box`, "/", http.StatusBadRequest, ""},
		{"label too long", "8443", "192.168.1.20:5000", strings.Repeat("a", 64) + ".com", "/", http.StatusBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://placeholder"+tt.target, nil)
			r.RemoteAddr = tt.remote
			r.Host = tt.host
			w := httptest.NewRecorder()
			PlainHandler(nextHandler, tt.port).ServeHTTP(w, r)
			if w.Code != tt.wantStatus {
				t.Fatalf("Host %q from %s: status %d, want %d (Location %q)", tt.host, tt.remote, w.Code, tt.wantStatus, w.Header().Get("Location"))
			}
			if got := w.Header().Get("Location"); got != tt.wantLoc {
				t.Errorf("Host %q: Location = %q, want %q", tt.host, got, tt.wantLoc)
			}
		})
	}
}

// TestPlainHandlerOverTheWire checks the redirect a real server and client
// exchange, where the Host header is what the client dialled.
func TestPlainHandlerOverTheWire(t *testing.T) {
	srv := httptest.NewServer(PlainHandler(nextHandler, "8443"))
	defer srv.Close()
	// The test client is on loopback, so it passes through.
	resp, err := http.Get(srv.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot {
		t.Errorf("loopback GET: status %d, want %d", resp.StatusCode, http.StatusTeapot)
	}
}

func TestPlainHandlerBadPortPanics(t *testing.T) {
	for _, p := range []string{"", "0", "65536", "https", "+443", " 443"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("PlainHandler(next, %q) did not panic", p)
				}
			}()
			PlainHandler(nextHandler, p)
		}()
	}
}

func TestHSTS(t *testing.T) {
	h := HSTS(nextHandler)

	r := httptest.NewRequest(http.MethodGet, "http://box/", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if got := w.Header().Get("Strict-Transport-Security"); got != "" {
		t.Errorf("plain HTTP: Strict-Transport-Security = %q, want none", got)
	}
	if w.Code != http.StatusTeapot {
		t.Errorf("plain HTTP: status %d, next not called", w.Code)
	}

	r = httptest.NewRequest(http.MethodGet, "https://box/", nil)
	r.TLS = &tls.ConnectionState{Version: tls.VersionTLS13}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if got := w.Header().Get("Strict-Transport-Security"); got != "max-age=31536000" {
		t.Errorf("TLS: Strict-Transport-Security = %q, want max-age=31536000", got)
	}
	if w.Code != http.StatusTeapot {
		t.Errorf("TLS: status %d, next not called", w.Code)
	}
}

// FuzzPlainHandler checks that whatever the Host header, a non-loopback client
// gets either 400 or a redirect to https on exactly the host it named.
func FuzzPlainHandler(f *testing.F) {
	for _, s := range []string{"box", "box:80", "[::1]:80", "evil.com/x", "a b", "", "x@y", "[fe80::1%eth0]", "1.2.3.4:5", `a\b`, "a..b", "-a.b"} {
		f.Add(s, "/p?q=1")
	}
	h := PlainHandler(nextHandler, "8443")
	f.Fuzz(func(t *testing.T, host, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := httptest.NewRequest(http.MethodGet, "http://placeholder/", nil)
		r.URL = u
		r.RemoteAddr = "192.0.2.1:1234"
		r.Host = host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusBadRequest:
			return
		case http.StatusPermanentRedirect:
		default:
			t.Fatalf("Host %q: status %d", host, w.Code)
		}
		loc, err := url.Parse(w.Header().Get("Location"))
		if err != nil {
			t.Fatalf("Host %q: Location %q does not parse: %v", host, w.Header().Get("Location"), err)
		}
		if loc.Scheme != "https" || loc.Port() != "8443" || loc.User != nil || loc.Opaque != "" {
			t.Fatalf("Host %q: Location %q", host, loc)
		}
		if inner, _, ok := strings.Cut(host, "]"); ok {
			want, err := netip.ParseAddr(strings.TrimPrefix(inner, "["))
			if got, err2 := netip.ParseAddr(loc.Hostname()); err != nil || err2 != nil || got != want {
				t.Fatalf("Host %q: redirected to host %q", host, loc.Hostname())
			}
		} else {
			reqHost, _, _ := strings.Cut(host, ":")
			if !strings.EqualFold(loc.Hostname(), reqHost) {
				t.Fatalf("Host %q: redirected to host %q", host, loc.Hostname())
			}
		}
		if loc.EscapedPath() != u.EscapedPath() && !(u.EscapedPath() == "" || !strings.HasPrefix(u.EscapedPath(), "/")) {
			t.Fatalf("target %q: redirected to path %q", target, loc.EscapedPath())
		}
	})
}
