package accounts

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestNormalizeEmail(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		err      error
	}{
		{"bob@example.com", "bob@example.com", nil},
		{"  Bob.Smith+tag@Example.COM\n", "bob.smith+tag@example.com", nil},
		{"bob@mail.office.example.com", "bob@mail.office.example.com", nil},
		{"o'brien@example.co.uk", "o'brien@example.co.uk", nil},
		{"", "", ErrBadEmail},
		{"bob", "", ErrBadEmail},
		{"bob@", "", ErrBadEmail},
		{"@example.com", "", ErrBadEmail},
		{"bob@localhost", "", ErrBadEmail},
		{"bob@@example.com", "", ErrBadEmail},
		{"bob@x@example.com", "", ErrBadEmail},
		{`"bob@x"@example.com`, "", ErrBadEmail},
		{"Bob <bob@example.com>", "", ErrBadEmail},
		{"<bob@example.com>", "", ErrBadEmail},
		{"bob@example.com (Bob)", "", ErrBadEmail},
		{"bob smith@example.com", "", ErrBadEmail},
		{"bob@[192.0.2.1]", "", ErrBadEmail},
		{"bob@192.0.2.1", "", ErrBadEmail},
		{"bob@-example.com", "", ErrBadEmail},
		{"bob@example..com", "", ErrBadEmail},
		{"bob@exa_mple.com", "", ErrBadEmail},
		{"bob@bücher.de", "", ErrBadEmail},
		{"bob@xn--bcher-kva.de", "bob@xn--bcher-kva.de", nil},
		{"bob@e\u212aample.com", "", ErrBadEmail}, // Kelvin sign lowercases to k
		{strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 60) + ".com", "", ErrBadEmail},
	} {
		got, err := NormalizeEmail(tt.in)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("NormalizeEmail(%q) = %q, %v; want %q, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestCheckEmail(t *testing.T) {
	domains := []string{"example.com", "example.org"}
	for _, tt := range []struct {
		name, email string
		domains     []string
		want        error
	}{
		{"company address", "bob@example.com", domains, nil},
		{"second domain", "bob@example.org", domains, nil},
		{"subdomain", "bob@berlin.example.com", domains, nil},
		{"uppercase", "BOB@EXAMPLE.COM", domains, nil},
		{"lookalike suffix", "bob@notexample.com", domains, ErrWrongDomain},
		{"parent domain", "bob@com", domains, ErrBadEmail},
		{"wrong domain", "bob@example.net", domains, ErrWrongDomain},
		{"free mail", "bob@gmail.com", domains, ErrFreeMail},
		{"free mail uppercase", "Bob@GMX.de", domains, ErrFreeMail},
		{"free mail subdomain", "bob@mail.yahoo.com", domains, ErrFreeMail},
		{"free mail even if allowed", "bob@gmail.com", []string{"gmail.com"}, ErrFreeMail},
		{"no domains", "bob@example.com", nil, ErrWrongDomain},
		{"garbage", "not an address", domains, ErrBadEmail},
		{"display name", "Bob <bob@example.com>", domains, ErrBadEmail},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckEmail(tt.email, tt.domains)
			if !errors.Is(err, tt.want) {
				t.Fatalf("CheckEmail(%q, %q) = %v, want %v", tt.email, tt.domains, err, tt.want)
			}
		})
	}
}

// The messages are what a person reads: they name the way out, and never
// echo what was typed (it may be a password).
func TestCheckEmailMessages(t *testing.T) {
	err := CheckEmail("bob@gmail.com", []string{"example.com"})
	if want := "free-mail addresses (gmail.com) cannot have accounts: use your address at example.com"; err == nil || err.Error() != want {
		t.Fatalf("CheckEmail(gmail) = %v, want %q", err, want)
	}
	err = CheckEmail("bob@example.net", []string{"example.com", "example.org", "example.de"})
	if err == nil || !strings.Contains(err.Error(), "example.com, example.org or example.de") {
		t.Fatalf("CheckEmail(wrong domain) = %v, want it to list the domains", err)
	}
	err = CheckEmail("hunter2hunter2 secret", []string{"example.com"})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("CheckEmail(garbage) = %v: want an error that does not repeat the input", err)
	}
}

func TestNormalizeDomains(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   []string
		want []string
		err  error
	}{
		{"one", []string{"example.com"}, []string{"example.com"}, nil},
		{"tidied", []string{" Example.ORG ", "@example.com", "example.org", ""}, []string{"example.com", "example.org"}, nil},
		{"empty", nil, nil, ErrBadDomain},
		{"only blanks", []string{" ", ""}, nil, ErrBadDomain},
		{"free mail", []string{"example.com", "gmail.com"}, nil, ErrFreeMail},
		{"free mail subdomain", []string{"x.outlook.com"}, nil, ErrFreeMail},
		{"no dot", []string{"localhost"}, nil, ErrBadDomain},
		{"an email", []string{"bob@example.com"}, nil, ErrBadDomain},
		{"ip", []string{"192.0.2.1"}, nil, ErrBadDomain},
		{"unicode", []string{"bücher.de"}, nil, ErrBadDomain},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeDomains(tt.in)
			if !slices.Equal(got, tt.want) || !errors.Is(err, tt.err) {
				t.Fatalf("NormalizeDomains(%q) = %q, %v; want %q, %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
}

func TestFreeMailList(t *testing.T) {
	m := freeMail()
	if len(m) < 40 {
		t.Fatalf("free-mail list has %d domains, want at least 40", len(m))
	}
	for _, d := range []string{"gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com",
		"yahoo.com", "ymail.com", "icloud.com", "me.com", "mac.com", "aol.com", "gmx.de", "gmx.net", "gmx.com",
		"web.de", "mail.com", "proton.me", "protonmail.com", "pm.me", "zoho.com", "yandex.ru", "yandex.com",
		"mail.ru", "qq.com", "163.com", "126.com", "t-online.de", "orange.fr", "free.fr", "laposte.net",
		"libero.it", "virgilio.it", "seznam.cz", "wp.pl", "o2.pl", "interia.pl", "tutanota.com", "fastmail.com", "hey.com"} {
		if !m[d] {
			t.Errorf("free-mail list lacks %s", d)
		}
	}
	for d := range m {
		if msg := checkDomainName(d); msg != "" {
			t.Errorf("free-mail list entry %q: %s", d, msg)
		}
	}
}

func FuzzNormalizeEmail(f *testing.F) {
	for _, s := range []string{"bob@example.com", " Bob <bob@example.com>", "a@b.c", `"x y"@example.com`,
		"bob@[::1]", "bob@e\u212aample.com", "İ@example.com", "a@b@c.com", "bob@example.com.", "=cmd@example.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := NormalizeEmail(s)
		if err != nil {
			if !errors.Is(err, ErrBadEmail) {
				t.Fatalf("NormalizeEmail(%q) error %v does not wrap ErrBadEmail", s, err)
			}
			return
		}
		if len(e) > maxEmailLen || strings.Count(e, "@") != 1 || e != strings.ToLower(e) || e != strings.TrimSpace(e) {
			t.Fatalf("NormalizeEmail(%q) = %q: not a normalized address", s, e)
		}
		for i := 0; i < len(e); i++ {
			if e[i] <= ' ' || e[i] >= 0x7f {
				t.Fatalf("NormalizeEmail(%q) = %q: contains byte %#x", s, e, e[i])
			}
		}
		if again, err := NormalizeEmail(e); again != e || err != nil {
			t.Fatalf("NormalizeEmail(%q) = %q, %v; want it unchanged", e, again, err)
		}
		_, domain, _ := strings.Cut(e, "@")
		if err := CheckEmail(e, []string{domain}); err != nil && !errors.Is(err, ErrFreeMail) {
			t.Fatalf("CheckEmail(%q, [%q]) = %v: an address must be on its own domain", e, domain, err)
		}
	})
}
