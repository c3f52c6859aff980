package accounts

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckPassword(t *testing.T) {
	for _, tt := range []struct {
		name, pw string
		want     error
	}{
		{"good", "correct horse battery", nil},
		{"exactly 12", "abcdefghijk1", nil},
		{"12 non-ASCII characters", "äöüäöüäöüäöx", nil},
		{"11 characters", "abcdefghijk", ErrWeakPassword},
		{"11 characters, 22 bytes", "äöüäöüäöüäö", ErrWeakPassword},
		{"empty", "", ErrWeakPassword},
		{"256 bytes", strings.Repeat("ab", 128), nil},
		{"257 bytes", strings.Repeat("ab", 128) + "c", ErrWeakPassword},
		{"the email", "bob@example.com", ErrWeakPassword},
		{"the email, other case", " Bob@Example.com", ErrWeakPassword},
		{"one character", strings.Repeat("x", 20), ErrWeakPassword},
		{"one non-ASCII character", strings.Repeat("ö", 20), ErrWeakPassword},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkPassword("bob@example.com", tt.pw); !errors.Is(err, tt.want) {
				t.Fatalf("checkPassword(%q) = %v, want %v", tt.pw, err, tt.want)
			}
		})
	}
}

func TestPHCRoundTrip(t *testing.T) {
	h := newPHC([]byte("correct horse battery"), testArgon)
	s := h.String()
	if !strings.HasPrefix(s, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("String() = %q, want the PHC form with m=64,t=1,p=1", s)
	}
	got, err := parsePHC(s)
	if err != nil {
		t.Fatalf("parsePHC(%q): %v", s, err)
	}
	if got.String() != s || got.params != testArgon || len(got.salt) != saltLen {
		t.Fatalf("parsePHC(%q) = %+v", s, got)
	}
	if !got.verify([]byte("correct horse battery")) {
		t.Fatal("verify(right password) = false")
	}
	if got.verify([]byte("correct horse batterY")) {
		t.Fatal("verify(wrong password) = true")
	}
	if newPHC([]byte("correct horse battery"), testArgon).String() == s {
		t.Fatal("two hashes of one password are equal: the salt is not random")
	}
}

func TestParsePHCRefuses(t *testing.T) {
	const salt, hash = "c29tZXNhbHRzb21lc2FsdA", "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
	ok := "$argon2id$v=19$m=65536,t=3,p=4$" + salt + "$" + hash
	if _, err := parsePHC(ok); err != nil {
		t.Fatalf("parsePHC(%q): %v", ok, err)
	}
	for _, tt := range []struct{ name, s string }{
		{"empty", ""},
		{"argon2i", "$argon2i$v=19$m=65536,t=3,p=4$" + salt + "$" + hash},
		{"version 16", "$argon2id$v=16$m=65536,t=3,p=4$" + salt + "$" + hash},
		{"memory over 256 MiB", "$argon2id$v=19$m=262145,t=3,p=4$" + salt + "$" + hash},
		{"memory 4 GiB", "$argon2id$v=19$m=4294967295,t=3,p=4$" + salt + "$" + hash},
		{"memory overflow", "$argon2id$v=19$m=4294967296,t=3,p=4$" + salt + "$" + hash},
		{"memory under 8 per thread", "$argon2id$v=19$m=31,t=3,p=4$" + salt + "$" + hash},
		{"time 0", "$argon2id$v=19$m=65536,t=0,p=4$" + salt + "$" + hash},
		{"time 1000", "$argon2id$v=19$m=65536,t=1000,p=4$" + salt + "$" + hash},
		{"threads 0", "$argon2id$v=19$m=65536,t=3,p=0$" + salt + "$" + hash},
		{"threads 256", "$argon2id$v=19$m=65536,t=3,p=256$" + salt + "$" + hash},
		{"leading zero", "$argon2id$v=19$m=065536,t=3,p=4$" + salt + "$" + hash},
		{"sign", "$argon2id$v=19$m=+65536,t=3,p=4$" + salt + "$" + hash},
		{"order", "$argon2id$v=19$t=3,m=65536,p=4$" + salt + "$" + hash},
		{"extra parameter", "$argon2id$v=19$m=65536,t=3,p=4,k=1$" + salt + "$" + hash},
		{"padding", "$argon2id$v=19$m=65536,t=3,p=4$" + salt + "==$" + hash},
		{"newline in salt", "$argon2id$v=19$m=65536,t=3,p=4$" + salt[:4] + "\n" + salt[4:] + "$" + hash},
		{"short salt", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$" + hash},
		{"short hash", "$argon2id$v=19$m=65536,t=3,p=4$" + salt + "$aGFzaA"},
		{"trailing field", ok + "$"},
		{"no leading $", ok[1:]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if h, err := parsePHC(tt.s); err == nil {
				t.Fatalf("parsePHC(%q) = %+v, want error", tt.s, h)
			}
		})
	}
}

func FuzzParsePHC(f *testing.F) {
	f.Add(newPHC([]byte("pw"), testArgon).String())
	f.Add(phc{params: DefaultArgon, salt: make([]byte, saltLen), hash: make([]byte, DefaultArgon.KeyLen)}.String())
	f.Add("$argon2id$v=19$m=262144,t=32,p=16$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
	f.Add("$argon2id$v=19$m=4294967295,t=3,p=4$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
	f.Add("$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA")
	f.Add("$$$$$")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parsePHC(s)
		if err != nil {
			return
		}
		if err := h.params.check(); err != nil {
			t.Fatalf("parsePHC(%q) accepted parameters out of bounds: %v", s, err)
		}
		if h.params.MemoryKiB > 256*1024 {
			t.Fatalf("parsePHC(%q) accepted %d KiB", s, h.params.MemoryKiB)
		}
		if int(h.params.KeyLen) != len(h.hash) || len(h.salt) < minSaltLen || len(h.salt) > maxSaltLen {
			t.Fatalf("parsePHC(%q) = %+v: inconsistent", s, h)
		}
		if got := h.String(); got != s {
			t.Fatalf("parsePHC(%q).String() = %q: a stored hash must read back as stored", s, got)
		}
	})
}

// TestDefaultArgon runs the real parameters once, end to end.
func TestDefaultArgon(t *testing.T) {
	c := newClock()
	d := mustOpen(t, "", Options{Now: c.Now})
	if d.opts.Argon != DefaultArgon {
		t.Fatalf("zero Options.Argon gave %+v, want DefaultArgon", d.opts.Argon)
	}
	if _, err := d.CreateFirstAdmin(adminEmail, adminPW, testDomains); err != nil {
		t.Fatal(err)
	}
	u, _, _ := getUserForTest(t, d, adminEmail)
	if !strings.HasPrefix(u.Hash, "$argon2id$v=19$m=32768,t=2,p=2$") {
		t.Fatalf("stored hash %q, want DefaultArgon's parameters", u.Hash)
	}
	if _, err := d.Login(adminEmail, adminPW+"!", "192.0.2.1"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("Login(wrong) = %v, want ErrBadCredentials", err)
	}
	mustLogin(t, d, adminEmail, adminPW)
}

// BenchmarkHashPassword measures one hash with DefaultArgon: the cost of a
// login. B/op shows the memory (MemoryKiB); run it on the target board to
// size DefaultArgon.
func BenchmarkHashPassword(b *testing.B) {
	b.ReportAllocs()
	pw := []byte("correct horse battery")
	for b.Loop() {
		newPHC(pw, DefaultArgon)
	}
	b.ReportMetric(float64(DefaultArgon.MemoryKiB)/1024, "MiB/hash")
}
