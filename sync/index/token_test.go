package index

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

var testPin = "sha256:" + strings.Repeat("ab", 32)

func TestTokenRoundTrip(t *testing.T) {
	tok, err := NewEnrolToken("https://index.example:8443/", testPin)
	if err != nil {
		t.Fatal(err)
	}
	if tok.URL != "https://index.example:8443" || len(tok.ID) != 16 || len(tok.Secret) != 43 {
		t.Errorf("NewEnrolToken = %+v", tok)
	}
	s := tok.String()
	if !strings.HasPrefix(s, "pgi1.") {
		t.Errorf("String() = %q", s)
	}
	got, err := ParseEnrolToken(s)
	if err != nil || got != tok {
		t.Errorf("ParseEnrolToken(String()) = %+v, %v; want %+v", got, err, tok)
	}
	if _, err := ParseHQKey(s); err == nil {
		t.Error("an enrolment token parsed as an HQ key")
	}
	key, err := NewHQKey("https://10.0.0.1:8443", testPin)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := ParseHQKey(key.String()); err != nil || k != key || !strings.HasPrefix(key.String(), "pghq1.") {
		t.Errorf("ParseHQKey(String()) = %+v, %v", k, err)
	}
	if _, err := ParseEnrolToken(key.String()); err == nil {
		t.Error("an HQ key parsed as an enrolment token")
	}
	other, _ := NewEnrolToken("https://index.example:8443", testPin)
	if other.ID == tok.ID || other.Secret == tok.Secret {
		t.Error("two tokens share an id or a secret")
	}
	if _, err := NewEnrolToken("http://index.example", testPin); err == nil {
		t.Error("NewEnrolToken accepted an http URL")
	}
	if HashSecret("abc") != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("HashSecret(abc) = %s", HashSecret("abc"))
	}
}

func TestParseEnrolTokenRejects(t *testing.T) {
	enc := func(json string) string { return "pgi1." + base64.RawURLEncoding.EncodeToString([]byte(json)) }
	good := `{"u":"https://i.example","i":"abc","s":"secret","p":"` + testPin + `"}`
	if _, err := ParseEnrolToken(enc(good)); err != nil {
		t.Fatalf("the good token: %v", err)
	}
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"no prefix", base64.RawURLEncoding.EncodeToString([]byte(good))},
		{"other prefix", "pgi2." + enc(good)[5:]},
		{"padded", enc(good) + "="},
		{"std base64", "pgi1." + base64.StdEncoding.EncodeToString([]byte(good+"??>"))},
		{"too long", enc(`{"u":"https://i.example","i":"abc","s":"` + strings.Repeat("s", 2000) + `","p":"` + testPin + `"}`)},
		{"http", enc(strings.Replace(good, "https:", "http:", 1))},
		{"no host", enc(strings.Replace(good, "https://i.example", "https://", 1))},
		{"user in url", enc(strings.Replace(good, "https://", "https://u:p@", 1))},
		{"query", enc(strings.Replace(good, "i.example", "i.example?x=1", 1))},
		{"empty id", enc(strings.Replace(good, `"i":"abc"`, `"i":""`, 1))},
		{"odd id", enc(strings.Replace(good, `"i":"abc"`, `"i":"a/b"`, 1))},
		{"empty secret", enc(strings.Replace(good, `"s":"secret"`, `"s":""`, 1))},
		{"pin without prefix", enc(strings.Replace(good, "sha256:", "", 1))},
		{"pin upper case", enc(strings.Replace(good, "abab", "ABAB", 1))},
		{"pin short", enc(strings.Replace(good, "abab", "ab", 1))},
		{"unknown field", enc(strings.Replace(good, `{`, `{"x":1,`, 1))},
		{"trailing", enc(good + `{}`)},
		{"not json", enc("hello")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tok, err := ParseEnrolToken(tt.in); err == nil {
				t.Errorf("ParseEnrolToken(%.60q) = %+v, want an error", tt.in, tok)
			} else if strings.Contains(err.Error(), "secret\"") || strings.Contains(err.Error(), "ssss") {
				t.Errorf("the error quotes the secret: %v", err)
			}
		})
	}
}

func fuzzCredential(f *testing.F, prefix string, parse func(string) (string, error)) {
	tok, _ := NewEnrolToken("https://index.example:8443", testPin)
	key, _ := NewHQKey("https://[::1]:8443/base", testPin)
	f.Add(tok.String())
	f.Add(key.String())
	f.Add(prefix)
	f.Add(prefix + "e30")
	f.Add(prefix + base64.RawURLEncoding.EncodeToString([]byte(`{"u":"https://a","i":"b","s":"c","p":"`+testPin+`"}`)))
	f.Fuzz(func(t *testing.T, s string) {
		again, err := parse(s)
		if err != nil {
			return
		}
		if !strings.HasPrefix(s, prefix) || len(s) > maxCredentialLen {
			t.Fatalf("accepted %q", s)
		}
		// What parses prints back to something that parses the same.
		if third, err := parse(again); err != nil || third != again {
			t.Fatalf("round trip of %q: %q, %v", s, third, err)
		}
	})
}

func FuzzParseEnrolToken(f *testing.F) {
	fuzzCredential(f, enrolTokenPrefix, func(s string) (string, error) {
		tok, err := ParseEnrolToken(s)
		if err != nil {
			return "", err
		}
		if checkPin(tok.Pin) != nil || checkIndexURL(tok.URL) != nil || tok.ID == "" || tok.Secret == "" {
			panic(fmt.Sprintf("accepted an invalid token %+v", tok))
		}
		return tok.String(), nil
	})
}

func FuzzParseHQKey(f *testing.F) {
	fuzzCredential(f, hqKeyPrefix, func(s string) (string, error) {
		key, err := ParseHQKey(s)
		if err != nil {
			return "", err
		}
		if checkPin(key.Pin) != nil || checkIndexURL(key.URL) != nil || key.ID == "" || key.Secret == "" {
			panic(fmt.Sprintf("accepted an invalid key %+v", key))
		}
		return key.String(), nil
	})
}
