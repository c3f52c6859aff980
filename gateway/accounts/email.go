package accounts

import (
	_ "embed"
	"errors"
	"net/mail"
	"slices"
	"strings"
	"sync"
)

// ErrBadDomain reports an email domain that cannot be configured.
var ErrBadDomain = errors.New("not a valid email domain")

// maxEmailLen is the longest address SMTP can carry (RFC 5321 path limit
// less the angle brackets).
const maxEmailLen = 254

// Messages never repeat what was typed: people type passwords into email
// fields, and callers may log these errors.

// NormalizeEmail trims and lowercases s and checks that it is a plain
// address: name@example.com, ASCII, no display name or angle brackets,
// exactly one @, and a domain name with a dot. Otherwise it returns an
// error wrapping ErrBadEmail.
func NormalizeEmail(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", policyErr(ErrBadEmail, "enter an email address")
	}
	// Reject before lowercasing: strings.ToLower maps some non-ASCII
	// letters (the Kelvin sign) to ASCII ones.
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return "", policyErr(ErrBadEmail, "not an email address: write it as name@example.com, without spaces, and an international domain in its xn-- form")
		}
	}
	e := strings.ToLower(s)
	if len(e) > maxEmailLen {
		return "", policyErr(ErrBadEmail, "email address too long: at most %d characters", maxEmailLen)
	}
	local, domain, ok := strings.Cut(e, "@")
	if !ok || strings.Contains(domain, "@") || local == "" {
		return "", policyErr(ErrBadEmail, "not an email address: it needs exactly one @, as in name@example.com")
	}
	if a, err := mail.ParseAddress(e); err != nil || a.Name != "" || a.Address != e {
		return "", policyErr(ErrBadEmail, "not a plain email address: write just name@example.com")
	}
	if msg := checkDomainName(domain); msg != "" {
		return "", policyErr(ErrBadEmail, "not an email address: %s", msg)
	}
	return e, nil
}

// checkDomainName says what is wrong with d as a lowercase ASCII host name
// that mail can be delivered to, or "" if nothing is.
func checkDomainName(d string) string {
	if len(d) > 253 {
		return "the domain is too long"
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return "the domain needs a dot, as in example.com"
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "the domain is not a valid name"
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return "the domain is not a valid name"
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "the domain is not a name (an IP address cannot receive this mail)"
	}
	return ""
}

//go:embed freemail.txt
var freeMailText string

var freeMail = sync.OnceValue(func() map[string]bool {
	m := map[string]bool{}
	for line := range strings.Lines(freeMailText) {
		line, _, _ = strings.Cut(line, "#")
		if line = strings.TrimSpace(line); line != "" {
			m[line] = true
		}
	}
	return m
})

// freeMailDomain returns the free-mail provider's domain that d is or is a
// subdomain of, or "".
func freeMailDomain(d string) string {
	for {
		if freeMail()[d] {
			return d
		}
		_, parent, ok := strings.Cut(d, ".")
		if !ok {
			return ""
		}
		d = parent
	}
}

// inDomains reports whether domain d is one of domains or a subdomain of
// one.
func inDomains(d string, domains []string) bool {
	for _, a := range domains {
		a = strings.ToLower(strings.TrimSpace(a))
		if a != "" && (d == a || strings.HasSuffix(d, "."+a)) {
			return true
		}
	}
	return false
}

// orList joins domains for a message: "a", "a or b", "a, b or c".
func orList(domains []string) string {
	switch len(domains) {
	case 0:
		return "your organisation's domain"
	case 1:
		return domains[0]
	}
	return strings.Join(domains[:len(domains)-1], ", ") + " or " + domains[len(domains)-1]
}

// CheckEmail says whether email may hold an account when the customer's own
// domains are domains. It returns an error wrapping ErrBadEmail for a
// malformed address, ErrFreeMail for an address at a free-mail provider
// (checked first, so the message is specific, and whatever domains says),
// and ErrWrongDomain for an address whose domain is neither one of domains
// nor a subdomain of one.
func CheckEmail(email string, domains []string) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	_, d, _ := strings.Cut(e, "@")
	if f := freeMailDomain(d); f != "" {
		return policyErr(ErrFreeMail, "free-mail addresses (%s) cannot have accounts: use your address at %s", f, orList(domains))
	}
	if len(domains) == 0 {
		return policyErr(ErrWrongDomain, "no email domains are set for this appliance: an admin must set them first")
	}
	if !inDomains(d, domains) {
		return policyErr(ErrWrongDomain, "%s is not one of your organisation's domains: use your address at %s", d, orList(domains))
	}
	return nil
}

// NormalizeDomains returns in lowercased, without a leading "@", deduped and
// sorted. It refuses an empty list and a malformed domain (ErrBadDomain)
// and a free-mail provider's domain (ErrFreeMail).
func NormalizeDomains(in []string) ([]string, error) {
	var out []string
	for _, d := range in {
		d = strings.TrimPrefix(strings.TrimSpace(d), "@")
		if d == "" {
			continue
		}
		for i := 0; i < len(d); i++ {
			if c := d[i]; c <= ' ' || c >= 0x7f {
				return nil, policyErr(ErrBadDomain, "not a domain name: write it as example.com, and an international domain in its xn-- form")
			}
		}
		d = strings.ToLower(d)
		if msg := checkDomainName(d); msg != "" {
			return nil, policyErr(ErrBadDomain, "%s: %s", d, msg)
		}
		if f := freeMailDomain(d); f != "" {
			return nil, policyErr(ErrFreeMail, "%s belongs to a free-mail provider (%s): accounts are only for your organisation's own domain", d, f)
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, policyErr(ErrBadDomain, "enter at least one email domain of your organisation, such as example.com")
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
