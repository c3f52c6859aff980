package index

// Credentials in text form. An enrolment token ("pgi1.…") is handed once to
// a customer's cluster: it names the index (URL), proves the cluster was
// invited (ID and secret, spent at enrolment) and pins the index's key (Pin),
// so the cluster needs to trust neither the network nor a certificate
// authority. An HQ key ("pghq1.…") has the same form and is what HQ pulls
// with; it is not spent, and a customer may hold several.
//
// The text form is a prefix and the unpadded base64url of a compact JSON
// object {"u","i","s","p"}. The index keeps only HashSecret(secret).

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

const (
	enrolTokenPrefix = "pgi1."
	hqKeyPrefix      = "pghq1."
	maxCredentialLen = 2 << 10
	maxSecretLen     = 256
	pinPrefix        = "sha256:"
)

// EnrolToken is a one-time enrolment token: what a customer's cluster is
// given to enrol with the index. String contains the secret: never log it.
type EnrolToken struct {
	URL    string // https://host:port of the index
	ID     string // the token's id, as the store knows it
	Secret string
	Pin    string // "sha256:" + 64 lowercase hex digits: Identity.Pin
}

// HQKey is the credential HQ pulls a customer's regional index with. It has
// the same parts as an EnrolToken, but is not spent by use.
type HQKey struct {
	URL    string
	ID     string
	Secret string
	Pin    string
}

// credential is the JSON inside both forms.
type credential struct {
	URL    string `json:"u"`
	ID     string `json:"i"`
	Secret string `json:"s"`
	Pin    string `json:"p"`
}

// NewEnrolToken returns a token with a fresh id and secret for the index at
// indexURL whose key has the given pin.
func NewEnrolToken(indexURL, pin string) (EnrolToken, error) {
	c, err := newCredential(indexURL, pin)
	if err != nil {
		return EnrolToken{}, fmt.Errorf("create enrolment token: %w", err)
	}
	return EnrolToken(c), nil
}

// NewHQKey returns an HQ key with a fresh id and secret for the index at
// indexURL whose key has the given pin.
func NewHQKey(indexURL, pin string) (HQKey, error) {
	c, err := newCredential(indexURL, pin)
	if err != nil {
		return HQKey{}, fmt.Errorf("create hq key: %w", err)
	}
	return HQKey(c), nil
}

func newCredential(indexURL, pin string) (credential, error) {
	var id [8]byte
	var secret [32]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails; it crashes the program instead.
	_, _ = rand.Read(secret[:])
	c := credential{
		URL:    strings.TrimSuffix(indexURL, "/"),
		ID:     hex.EncodeToString(id[:]),
		Secret: base64.RawURLEncoding.EncodeToString(secret[:]),
		Pin:    pin,
	}
	return c, c.check()
}

// String returns the token's text form. It contains the secret.
func (t EnrolToken) String() string { return credential(t).encode(enrolTokenPrefix) }

// String returns the key's text form. It contains the secret.
func (k HQKey) String() string { return credential(k).encode(hqKeyPrefix) }

func (c credential) encode(prefix string) string {
	b, _ := json.Marshal(c) // four strings: cannot fail
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// ParseEnrolToken parses the text form of an EnrolToken. It is strict, and
// its errors never quote the secret.
func ParseEnrolToken(s string) (EnrolToken, error) {
	c, err := parseCredential(s, enrolTokenPrefix)
	if err != nil {
		return EnrolToken{}, fmt.Errorf("parse enrolment token: %w", err)
	}
	return EnrolToken(c), nil
}

// ParseHQKey parses the text form of an HQKey, as strictly as
// ParseEnrolToken.
func ParseHQKey(s string) (HQKey, error) {
	c, err := parseCredential(s, hqKeyPrefix)
	if err != nil {
		return HQKey{}, fmt.Errorf("parse hq key: %w", err)
	}
	return HQKey(c), nil
}

func parseCredential(s, prefix string) (credential, error) {
	if len(s) > maxCredentialLen {
		return credential{}, fmt.Errorf("%d bytes long, at most %d allowed", len(s), maxCredentialLen)
	}
	body, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return credential{}, fmt.Errorf("does not start with %q", prefix)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(body)
	if err != nil {
		return credential{}, errors.New("not unpadded base64url after the prefix")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var c credential
	if err := dec.Decode(&c); err != nil {
		return credential{}, errors.New("not the expected JSON object")
	}
	if dec.More() {
		return credential{}, errors.New("trailing data after the JSON object")
	}
	if err := c.check(); err != nil {
		return credential{}, err
	}
	return c, nil
}

// check explains what is wrong with c, without quoting the secret.
func (c credential) check() error {
	if err := checkIndexURL(c.URL); err != nil {
		return err
	}
	if c.ID == "" || len(c.ID) > maxIDLen {
		return fmt.Errorf("id must be 1 to %d characters", maxIDLen)
	}
	for i := 0; i < len(c.ID); i++ {
		if !isIDChar(c.ID[i]) {
			return errors.New("id must be letters, digits, '-' or '_'")
		}
	}
	if c.Secret == "" || len(c.Secret) > maxSecretLen {
		return fmt.Errorf("secret must be 1 to %d characters", maxSecretLen)
	}
	return checkPin(c.Pin)
}

func isIDChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// checkIndexURL accepts an absolute https URL with a host and nothing after
// the path.
func checkIndexURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errors.New("index URL does not parse")
	case u.Scheme != "https":
		return fmt.Errorf("index URL %q: want https", s)
	case u.Host == "" || u.Opaque != "":
		return fmt.Errorf("index URL %q: no host", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return fmt.Errorf("index URL %q: no user, query or fragment allowed", s)
	}
	return nil
}

// checkPin accepts "sha256:" and 64 lowercase hex digits.
func checkPin(pin string) error {
	h, ok := strings.CutPrefix(pin, pinPrefix)
	if !ok || len(h) != 2*sha256.Size {
		return fmt.Errorf("pin must be %q and %d lowercase hex digits", pinPrefix, 2*sha256.Size)
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("pin must be %q and %d lowercase hex digits", pinPrefix, 2*sha256.Size)
		}
	}
	return nil
}

// HashSecret is what the index stores of a token's or key's secret: the
// lowercase hex SHA-256. No salt is needed: the secrets are 256 random bits.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}
