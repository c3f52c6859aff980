package webtls

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// PlainHandler is the handler for the plain-HTTP listener. Requests from
// loopback peers (development on the box itself, or an SSH tunnel) go to
// next; every other request is redirected with 308 to the same path and query
// on https://<request host>:<httpsPort>, the port left out when it is "443".
//
// The redirect target's host comes from the request's Host header, so a Host
// that is not a plain hostname or IP address (with an optional port) gets 400
// instead: the handler never redirects to anything but the host the client
// asked for.
//
// PlainHandler panics if httpsPort is not a port number, as that is a
// configuration error caught at start-up.
func PlainHandler(next http.Handler, httpsPort string) http.Handler {
	if p, err := strconv.Atoi(httpsPort); err != nil || p < 1 || p > 65535 || strconv.Itoa(p) != httpsPort {
		panic(fmt.Sprintf("webtls: invalid https port %q", httpsPort))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isLoopbackPeer(r.RemoteAddr) {
			next.ServeHTTP(w, r)
			return
		}
		host, ok := requestHost(r.Host)
		if !ok {
			http.Error(w, "invalid Host header", http.StatusBadRequest)
			return
		}
		target := "https://" + net.JoinHostPort(host, httpsPort)
		if httpsPort == "443" {
			target = "https://" + host
			if strings.Contains(host, ":") {
				target = "https://[" + host + "]"
			}
		}
		path := r.URL.EscapedPath()
		if !strings.HasPrefix(path, "/") {
			// "OPTIONS *" and the like: send the client to the root.
			path = "/"
		}
		target += path
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		w.Header().Set("Location", target)
		w.WriteHeader(http.StatusPermanentRedirect)
	})
}

func isLoopbackPeer(remoteAddr string) bool {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	return ap.Addr().Unmap().IsLoopback()
}

// requestHost returns the host part of a Host header (an IPv6 address without
// brackets), or false if the header is not a hostname or IP address with an
// optional port.
func requestHost(hostport string) (string, bool) {
	host := hostport
	switch {
	case strings.HasPrefix(hostport, "["):
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "", false
		}
		if rest := hostport[end+1:]; rest != "" && (rest[0] != ':' || !validPort(rest[1:])) {
			return "", false
		}
		a, err := netip.ParseAddr(hostport[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", false
		}
		return a.String(), true
	case strings.Count(hostport, ":") == 1:
		i := strings.IndexByte(hostport, ':')
		if !validPort(hostport[i+1:]) {
			return "", false
		}
		host = hostport[:i]
	case strings.Contains(hostport, ":"):
		return "", false // an IPv6 address must be bracketed
	}
	if !validHostname(host) {
		return "", false
	}
	return strings.ToLower(host), true
}

// validPort accepts an empty port, as RFC 3986 does, and 1–65535.
func validPort(p string) bool {
	if p == "" {
		return true
	}
	if len(p) > 5 {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535 && p[0] != '+' && p[0] != '-'
}

// validHostname reports whether h is a DNS hostname: dot-separated labels of
// letters, digits and hyphens, each 1–63 long and not starting or ending with
// a hyphen, at most 253 characters, one trailing dot allowed.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// HSTS tells browsers that reached the UI over TLS to keep using TLS for a
// year. Plain-HTTP responses never carry the header (browsers ignore it
// there, and it would be a lie on the loopback development listener).
func HSTS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		}
		next.ServeHTTP(w, r)
	})
}
