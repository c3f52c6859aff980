package cluster

// Join tokens, kubeadm style. `pulsegate token create` on a member prints a
// token; the new box is given it once, by hand. The token carries a one-time
// secret, which proves to the cluster that the box was invited, and the
// hash of the CA's public key, which proves to the box that it reached the
// right cluster (see JoinTLS), so neither side needs to trust the network.

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

const (
	tokenIDLen     = 6
	tokenSecretLen = 32 // 32 × log2(36) ≈ 165 bits
	tokenAlphabet  = "abcdefghijklmnopqrstuvwxyz0123456789"
	maxTokenLen    = 4096
	maxPeers       = 64
)

// Token is a join token.
//
// Its text form (String, ParseToken) is
//
//	<id>.<secret>.<ca-hash>@<peer>[,<peer>...]
//
// for example
//
//	k3x9q2.4f7wz0mb1c8rt5ye2nq6ud3hs9ajv0lp.9e1c…(64 hex)…@10.0.1.5:7000,office2.lan:7000
//
// where id is 6 characters [a-z0-9] naming the token, secret is 32
// characters [a-z0-9], ca-hash is the 64 lowercase hex digits of CA.Hash
// without its "sha256:" prefix, and each peer is a host:port address of a
// member to contact (an IPv6 host in brackets).
type Token struct {
	ID     string
	Secret string
	// CAHash is CA.Hash(): "sha256:" followed by 64 lowercase hex digits.
	CAHash string
	Peers  []string
}

// NewToken returns a fresh token for the CA with hash caHash (as returned by
// CA.Hash) whose holder should contact peers.
func NewToken(caHash string, peers []string) (Token, error) {
	if err := checkCAHash(caHash); err != nil {
		return Token{}, fmt.Errorf("create token: %w", err)
	}
	if err := checkPeers(peers); err != nil {
		return Token{}, fmt.Errorf("create token: %w", err)
	}
	return Token{
		ID:     randomString(tokenIDLen),
		Secret: randomString(tokenSecretLen),
		CAHash: caHash,
		Peers:  append([]string(nil), peers...),
	}, nil
}

// String returns the token's text form, described on Token. It contains the
// secret: never log it.
func (t Token) String() string {
	return t.ID + "." + t.Secret + "." + strings.TrimPrefix(t.CAHash, caHashPrefix) +
		"@" + strings.Join(t.Peers, ",")
}

// ParseToken parses the text form described on Token. It is strict: every
// part must have exactly the form String produces. Errors never quote the
// secret.
func ParseToken(s string) (Token, error) {
	t, err := parseToken(s)
	if err != nil {
		return Token{}, fmt.Errorf("parse token: %w", err)
	}
	return t, nil
}

func parseToken(s string) (Token, error) {
	if len(s) > maxTokenLen {
		return Token{}, fmt.Errorf("%d bytes long, at most %d allowed", len(s), maxTokenLen)
	}
	if n := strings.Count(s, "@"); n != 1 {
		return Token{}, fmt.Errorf("want exactly one '@' before the peer list, found %d", n)
	}
	head, peerList, _ := strings.Cut(s, "@")
	parts := strings.Split(head, ".")
	if len(parts) != 3 {
		return Token{}, fmt.Errorf("want <id>.<secret>.<ca-hash> before '@', found %d dot-separated parts", len(parts))
	}
	id, secret, hash := parts[0], parts[1], parts[2]
	if err := checkTokenPart("id", id, tokenIDLen); err != nil {
		return Token{}, err
	}
	if err := checkTokenPart("secret", secret, tokenSecretLen); err != nil {
		return Token{}, err
	}
	if err := checkCAHash(caHashPrefix + hash); err != nil {
		return Token{}, err
	}
	if peerList == "" {
		return Token{}, errors.New("no peer address after '@'")
	}
	peers := strings.Split(peerList, ",")
	if err := checkPeers(peers); err != nil {
		return Token{}, err
	}
	return Token{ID: id, Secret: secret, CAHash: caHashPrefix + hash, Peers: peers}, nil
}

// SecretHash returns the lowercase hex SHA-256 of the token's secret: what
// the cluster stores, never the secret itself. No salt is needed: the secret
// is random and long enough that a table of hashes is of no use.
func (t Token) SecretHash() string {
	sum := sha256.Sum256([]byte(t.Secret))
	return hex.EncodeToString(sum[:])
}

// VerifySecret reports, in time independent of the secret's value, whether
// secret is a well-formed token secret whose SecretHash is storedHash.
func VerifySecret(secret, storedHash string) bool {
	want, err := hex.DecodeString(storedHash)
	if err != nil || len(want) != sha256.Size {
		return false
	}
	got := sha256.Sum256([]byte(secret))
	ok := subtle.ConstantTimeCompare(got[:], want) == 1
	return ok && checkTokenPart("secret", secret, tokenSecretLen) == nil
}

// randomString returns n characters drawn uniformly from tokenAlphabet.
func randomString(n int) string {
	// Rejection sampling keeps the draw uniform: 252 is the largest multiple
	// of 36 that fits in a byte.
	const limit = 256 - 256%len(tokenAlphabet)
	out := make([]byte, 0, n)
	var buf [64]byte
	for len(out) < n {
		_, _ = rand.Read(buf[:]) // crypto/rand.Read never fails; it crashes the program instead.
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, tokenAlphabet[int(b)%len(tokenAlphabet)])
			}
		}
	}
	return string(out)
}

// checkTokenPart explains why s is not a valid token part of n characters.
// It does not quote s, which may be a secret.
func checkTokenPart(name, s string, n int) error {
	if len(s) != n {
		return fmt.Errorf("%s must be %d characters [a-z0-9], got %d characters", name, n, len(s))
	}
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune(tokenAlphabet, rune(s[i])) {
			return fmt.Errorf("%s must be %d characters [a-z0-9], got another character at position %d", name, n, i+1)
		}
	}
	return nil
}

func checkCAHash(h string) error {
	hexPart, ok := strings.CutPrefix(h, caHashPrefix)
	if !ok {
		return fmt.Errorf("CA hash must start with %q", caHashPrefix)
	}
	if len(hexPart) != 2*sha256.Size {
		return fmt.Errorf("CA hash must be %d hex digits, got %d characters", 2*sha256.Size, len(hexPart))
	}
	for i := 0; i < len(hexPart); i++ {
		c := hexPart[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("CA hash must be lowercase hex, got %q at position %d", c, i+1)
		}
	}
	return nil
}

func checkPeers(peers []string) error {
	if len(peers) == 0 {
		return errors.New("no peer address")
	}
	if len(peers) > maxPeers {
		return fmt.Errorf("%d peer addresses, at most %d allowed", len(peers), maxPeers)
	}
	seen := make(map[string]bool, len(peers))
	for _, p := range peers {
		if err := checkPeer(p); err != nil {
			return err
		}
		if seen[p] {
			return fmt.Errorf("peer address %q listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

// checkPeer accepts host:port with a non-zero decimal port and a host that
// is a specified IP address (IPv6 in brackets, no zone) or a DNS host name.
func checkPeer(p string) error {
	host, port, err := net.SplitHostPort(p)
	if err != nil {
		return fmt.Errorf("peer address %q: want host:port", p)
	}
	if net.JoinHostPort(host, port) != p {
		return fmt.Errorf("peer address %q: not in host:port form", p)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != port {
		return fmt.Errorf("peer address %q: port must be a number from 1 to 65535", p)
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if addr.Zone() != "" {
			return fmt.Errorf("peer address %q: IPv6 zones are not allowed", p)
		}
		if addr.IsUnspecified() {
			// A listener's address, not one another office can reach.
			return fmt.Errorf("peer address %q: unspecified address, want one other offices can reach", p)
		}
		return nil
	}
	if !validHostname(host) {
		return fmt.Errorf("peer address %q: host is neither an IP address nor a host name", p)
	}
	return nil
}

// validHostname reports whether h is a DNS host name: dot-separated labels
// of letters, digits and inner hyphens, the last not all digits (so that a
// mistyped IPv4 address such as 10.0.0.300 is not taken for a name).
func validHostname(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}
