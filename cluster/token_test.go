package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
)

const (
	testHashHex = "9e1c5a0e3f1b7d2c4a6b8d0f1e3c5a7b9d1f3e5c7a9b1d3f5e7c9a1b3d5f7e90"
	testHash    = "sha256:" + testHashHex
	testSecret  = "4f7wz0mb1c8rt5ye2nq6ud3hs9ajv0lp"
	testPrefix  = "k3x9q2." + testSecret + "." + testHashHex + "@"
)

func TestNewToken(t *testing.T) {
	ca := mustNewCA(t, "acme")
	peers := []string{"10.0.1.5:7000", "office2.lan:7000"}
	tok, err := NewToken(ca.Hash(), peers)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkTokenPart("id", tok.ID, 6); err != nil {
		t.Errorf("ID %q: %v", tok.ID, err)
	}
	if err := checkTokenPart("secret", tok.Secret, 32); err != nil {
		t.Errorf("Secret: %v", err)
	}
	if tok.CAHash != ca.Hash() || !slices.Equal(tok.Peers, peers) {
		t.Errorf("NewToken = %+v, want CAHash %s and Peers %q", tok, ca.Hash(), peers)
	}
	peers[0] = "changed:1"
	if tok.Peers[0] == "changed:1" {
		t.Error("token shares the caller's peer slice")
	}
	got, err := ParseToken(tok.String())
	if err != nil {
		t.Fatalf("ParseToken(String()): %v", err)
	}
	if !tokensEqual(got, tok) {
		t.Errorf("ParseToken(String()) = %+v, want %+v", got, tok)
	}
	other, err := NewToken(ca.Hash(), tok.Peers)
	if err != nil {
		t.Fatal(err)
	}
	if other.ID == tok.ID || other.Secret == tok.Secret {
		t.Error("two tokens share an id or secret")
	}
}

func TestNewTokenErrors(t *testing.T) {
	tests := []struct {
		name   string
		hash   string
		peers  []string
		errHas string
	}{
		{name: "no prefix", hash: testHashHex, peers: []string{"a:1"}, errHas: "sha256:"},
		{name: "short hash", hash: "sha256:abc", peers: []string{"a:1"}, errHas: "64 hex"},
		{name: "uppercase hash", hash: strings.ToUpper(testHash), peers: []string{"a:1"}, errHas: "sha256:"},
		{name: "no peers", hash: testHash, peers: nil, errHas: "no peer"},
		{name: "bad peer", hash: testHash, peers: []string{"a"}, errHas: `"a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewToken(tt.hash, tt.peers)
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("NewToken(%q, %q) error = %v, want one mentioning %q", tt.hash, tt.peers, err, tt.errHas)
			}
		})
	}
}

func TestTokenString(t *testing.T) {
	tok := Token{ID: "k3x9q2", Secret: testSecret, CAHash: testHash, Peers: []string{"10.0.1.5:7000", "[fd00::1]:7000"}}
	want := testPrefix + "10.0.1.5:7000,[fd00::1]:7000"
	if got := tok.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestParseTokenValid(t *testing.T) {
	tests := []struct {
		name  string
		peers string
		want  []string
	}{
		{name: "IPv4", peers: "10.0.1.5:7000", want: []string{"10.0.1.5:7000"}},
		{name: "IPv6", peers: "[fd00::1]:7000", want: []string{"[fd00::1]:7000"}},
		{name: "host name", peers: "pulsegate-1.office.example:443", want: []string{"pulsegate-1.office.example:443"}},
		{name: "single label", peers: "localhost:1", want: []string{"localhost:1"}},
		{name: "several", peers: "10.0.1.5:7000,[fd00::1]:65535,box.lan:7000", want: []string{"10.0.1.5:7000", "[fd00::1]:65535", "box.lan:7000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testPrefix + tt.peers
			got, err := ParseToken(s)
			if err != nil {
				t.Fatalf("ParseToken(%q): %v", s, err)
			}
			want := Token{ID: "k3x9q2", Secret: testSecret, CAHash: testHash, Peers: tt.want}
			if !tokensEqual(got, want) {
				t.Errorf("ParseToken(%q) = %+v, want %+v", s, got, want)
			}
			if got.String() != s {
				t.Errorf("ParseToken(%q).String() = %q", s, got.String())
			}
		})
	}
}

func TestParseTokenMalformed(t *testing.T) {
	const (
		id   = "k3x9q2"
		peer = "10.0.1.5:7000"
		tail = "." + testHashHex + "@" + peer
	)
	tests := []struct {
		name   string
		in     string
		errHas string
	}{
		{name: "empty", in: "", errHas: "'@'"},
		{name: "no peers part", in: id + "." + testSecret + "." + testHashHex, errHas: "'@'"},
		{name: "two @", in: testPrefix + peer + "@" + peer, errHas: "'@'"},
		{name: "empty peer list", in: testPrefix, errHas: "no peer"},
		{name: "two parts", in: id + "." + testSecret + "@" + peer, errHas: "found 2"},
		{name: "four parts", in: id + "." + testSecret + "." + testHashHex + ".x@" + peer, errHas: "found 4"},
		{name: "short id", in: "k3x9q." + testSecret + tail, errHas: "id must be"},
		{name: "long id", in: "k3x9q22." + testSecret + tail, errHas: "id must be"},
		{name: "uppercase id", in: "K3x9q2." + testSecret + tail, errHas: "id must be"},
		{name: "id with dash", in: "k3x-q2." + testSecret + tail, errHas: "id must be"},
		{name: "empty id", in: "." + testSecret + tail, errHas: "id must be"},
		{name: "short secret", in: id + "." + testSecret[1:] + tail, errHas: "secret must be"},
		{name: "long secret", in: id + "." + testSecret + "a" + tail, errHas: "secret must be"},
		{name: "uppercase secret", in: id + "." + strings.ToUpper(testSecret) + tail, errHas: "secret must be"},
		{name: "secret with space", in: id + "." + testSecret[:31] + " " + tail, errHas: "secret must be"},
		{name: "secret with non-ASCII", in: id + "." + testSecret[:30] + "é" + tail, errHas: "secret must be"},
		{name: "hash with prefix", in: id + "." + testSecret + ".sha256:" + testHashHex + "@" + peer, errHas: "64 hex"},
		{name: "short hash", in: id + "." + testSecret + "." + testHashHex[1:] + "@" + peer, errHas: "64 hex"},
		{name: "uppercase hash", in: id + "." + testSecret + "." + strings.ToUpper(testHashHex) + "@" + peer, errHas: "lowercase hex"},
		{name: "non-hex hash", in: id + "." + testSecret + "." + testHashHex[:63] + "g@" + peer, errHas: "lowercase hex"},
		{name: "missing port", in: testPrefix + "10.0.1.5", errHas: "host:port"},
		{name: "empty host", in: testPrefix + ":7000", errHas: "host is neither"},
		{name: "port zero", in: testPrefix + "10.0.1.5:0", errHas: "port"},
		{name: "port too big", in: testPrefix + "10.0.1.5:65536", errHas: "port"},
		{name: "port leading zero", in: testPrefix + "10.0.1.5:07000", errHas: "port"},
		{name: "port sign", in: testPrefix + "10.0.1.5:+7000", errHas: "port"},
		{name: "named port", in: testPrefix + "10.0.1.5:http", errHas: "port"},
		{name: "bad IPv4", in: testPrefix + "10.0.1.300:7000", errHas: "host is neither"},
		{name: "IPv4 leading zero", in: testPrefix + "10.0.1.05:7000", errHas: "host is neither"},
		{name: "IPv6 without brackets", in: testPrefix + "fd00::1:7000", errHas: "host:port"},
		{name: "IPv4 in brackets", in: testPrefix + "[10.0.1.5]:7000", errHas: "host:port"},
		{name: "IPv6 zone", in: testPrefix + "[fe80::1%eth0]:7000", errHas: "zone"},
		{name: "unspecified IPv4", in: testPrefix + "0.0.0.0:7000", errHas: "unspecified"},
		{name: "unspecified IPv6", in: testPrefix + "[::]:7000", errHas: "unspecified"},
		{name: "host with underscore", in: testPrefix + "my_box:7000", errHas: "host is neither"},
		{name: "host with leading dash", in: testPrefix + "-box:7000", errHas: "host is neither"},
		{name: "host with empty label", in: testPrefix + "box..lan:7000", errHas: "host is neither"},
		{name: "host with trailing dot", in: testPrefix + "box.lan.:7000", errHas: "host is neither"},
		{name: "URL as peer", in: testPrefix + "http://box:7000", errHas: "host:port"},
		{name: "empty peer", in: testPrefix + peer + ",", errHas: `""`},
		{name: "peer list with space", in: testPrefix + peer + ", box:1", errHas: `" box:1"`},
		{name: "duplicate peer", in: testPrefix + peer + "," + peer, errHas: "twice"},
		{name: "leading space", in: " " + testPrefix + peer, errHas: "id must be"},
		{name: "trailing newline", in: testPrefix + peer + "\n", errHas: "peer address"},
		{name: "too long", in: testPrefix + strings.Repeat("a", 5000) + ":1", errHas: "at most"},
		{name: "too many peers", in: testPrefix + manyPeers(65), errHas: "at most 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseToken(tt.in)
			if err == nil {
				t.Fatalf("ParseToken(%q) = %+v, want error", tt.in, got)
			}
			if !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("ParseToken(%q) error = %q, want one mentioning %q", tt.in, err, tt.errHas)
			}
			if strings.Contains(err.Error(), testSecret[:16]) {
				t.Errorf("ParseToken(%q) error %q reveals the secret", tt.in, err)
			}
		})
	}
}

func manyPeers(n int) string {
	ps := make([]string, n)
	for i := range ps {
		ps[i] = "box" + strings.Repeat("x", i) + ":1"
	}
	return strings.Join(ps, ",")
}

func TestTokenVerifySecret(t *testing.T) {
	tok, err := NewToken(testHash, []string{"a:1"})
	if err != nil {
		t.Fatal(err)
	}
	stored := tok.SecretHash()
	sum := sha256.Sum256([]byte(tok.Secret))
	if want := hex.EncodeToString(sum[:]); stored != want {
		t.Fatalf("SecretHash() = %q, want %q", stored, want)
	}
	if strings.Contains(stored, tok.Secret) {
		t.Fatal("SecretHash() contains the secret")
	}
	other, err := NewToken(testHash, []string{"a:1"})
	if err != nil {
		t.Fatal(err)
	}
	emptySum := sha256.Sum256(nil)
	tests := []struct {
		name   string
		secret string
		stored string
		want   bool
	}{
		{name: "right secret", secret: tok.Secret, stored: stored, want: true},
		{name: "uppercase stored hash", secret: tok.Secret, stored: strings.ToUpper(stored), want: true},
		{name: "other token's secret", secret: other.Secret, stored: stored},
		{name: "secret one character off", secret: tok.Secret[:31] + flip(tok.Secret[31]), stored: stored},
		{name: "empty secret", secret: "", stored: stored},
		{name: "empty secret, hash of empty", secret: "", stored: hex.EncodeToString(emptySum[:])},
		{name: "stored secret instead of hash", secret: tok.Secret, stored: tok.Secret},
		{name: "empty stored hash", secret: tok.Secret, stored: ""},
		{name: "truncated stored hash", secret: tok.Secret, stored: stored[:62]},
		{name: "non-hex stored hash", secret: tok.Secret, stored: stored[:63] + "z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := VerifySecret(tt.secret, tt.stored); got != tt.want {
				t.Errorf("VerifySecret(%q, %q) = %v, want %v", tt.secret, tt.stored, got, tt.want)
			}
		})
	}
}

func flip(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}

func TestTokenRandomString(t *testing.T) {
	seen := make(map[byte]bool)
	for range 200 {
		s := randomString(32)
		if err := checkTokenPart("s", s, 32); err != nil {
			t.Fatalf("randomString(32) = %q: %v", s, err)
		}
		for i := 0; i < len(s); i++ {
			seen[s[i]] = true
		}
	}
	// 6400 draws from 36 characters: missing one is a broken alphabet, not bad luck.
	if len(seen) != len(tokenAlphabet) {
		t.Errorf("randomString used %d distinct characters, want %d", len(seen), len(tokenAlphabet))
	}
}

func FuzzParseToken(f *testing.F) {
	for _, s := range []string{
		testPrefix + "10.0.1.5:7000",
		testPrefix + "10.0.1.5:7000,[fd00::1]:7000,box.lan:443",
		testPrefix + "[fe80::1%eth0]:7000",
		testPrefix + "10.0.1.5:07000",
		"k3x9q2." + testSecret + ".sha256:" + testHashHex + "@a:1",
		"",
		"@",
		"..@",
		"a.b.c@d:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		if got := tok.String(); got != s {
			t.Fatalf("ParseToken(%q).String() = %q", s, got)
		}
		again, err := ParseToken(tok.String())
		if err != nil || !tokensEqual(again, tok) {
			t.Fatalf("ParseToken(%q) = %+v, %v, want %+v", tok.String(), again, err, tok)
		}
		if !VerifySecret(tok.Secret, tok.SecretHash()) {
			t.Fatalf("VerifySecret refuses the secret of accepted token %q", s)
		}
	})
}

func tokensEqual(a, b Token) bool {
	return a.ID == b.ID && a.Secret == b.Secret && a.CAHash == b.CAHash && slices.Equal(a.Peers, b.Peers)
}
