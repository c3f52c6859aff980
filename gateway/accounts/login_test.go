package accounts

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// wantLocked fails unless err is a *LockedOutError ending at until.
func wantLocked(tb testing.TB, what string, err error, until time.Time) {
	tb.Helper()
	var le *LockedOutError
	if !errors.As(err, &le) || !errors.Is(err, ErrLockedOut) {
		tb.Fatalf("%s = %v, want a *LockedOutError", what, err)
	}
	if !until.IsZero() && !le.Until.Equal(until) {
		tb.Fatalf("%s: locked out until %v, want %v", what, le.Until, until)
	}
}

// fail makes n failed logins for email from ip, each expected to give
// ErrBadCredentials except a last one that locks out.
func fail(tb testing.TB, d *DB, email, ip string, n int) error {
	tb.Helper()
	var err error
	for i := range n {
		_, err = d.Login(email, "wrong password!!", ip)
		if i < n-1 && !errors.Is(err, ErrBadCredentials) {
			tb.Fatalf("failed login %d of %d = %v, want ErrBadCredentials", i+1, n, err)
		}
	}
	return err
}

func TestLockout(t *testing.T) {
	c := newClock()
	path := filepath.Join(t.TempDir(), "accounts.db")
	d := mustSetup(t, path, c)

	err := fail(t, d, adminEmail, "192.0.2.1", 5)
	wantLocked(t, "5th failed login", err, c.Now().Add(15*time.Minute))
	// From another address, with the right password: still locked.
	_, err = d.Login(adminEmail, adminPW, "192.0.2.99")
	wantLocked(t, "right password while locked", err, c.Now().Add(15*time.Minute))

	// A restart forgets nothing.
	d.Close()
	d = mustOpen(t, path, testOptions(c))
	c.Advance(15*time.Minute - time.Second)
	_, err = d.Login(adminEmail, adminPW, "192.0.2.99")
	wantLocked(t, "login after reopen, 1s before unlock", err, time.Time{})

	c.Advance(time.Second)
	mustLogin(t, d, adminEmail, adminPW)

	// Success reset the count but not the level: the next lockout doubles.
	err = fail(t, d, adminEmail, "192.0.2.2", 5)
	wantLocked(t, "second lockout", err, c.Now().Add(30*time.Minute))
	c.Advance(30 * time.Minute)
	err = fail(t, d, adminEmail, "192.0.2.3", 5)
	wantLocked(t, "third lockout", err, c.Now().Add(60*time.Minute))
	c.Advance(60 * time.Minute)

	// A day without failures forgets the level.
	c.Advance(24 * time.Hour)
	err = fail(t, d, adminEmail, "192.0.2.4", 5)
	wantLocked(t, "lockout after a quiet day", err, c.Now().Add(15*time.Minute))
}

func TestLockoutDoublesUpTo24h(t *testing.T) {
	c := newClock()
	opts := testOptions(c)
	opts.Lockout = 5 * time.Hour
	opts.MaxFailures = 2
	d := mustOpen(t, "", opts)
	if _, err := d.CreateFirstAdmin(adminEmail, adminPW, testDomains); err != nil {
		t.Fatal(err)
	}
	for i, want := range []time.Duration{5 * time.Hour, 10 * time.Hour, 20 * time.Hour, 24 * time.Hour, 24 * time.Hour} {
		err := fail(t, d, adminEmail, "", 2)
		wantLocked(t, "lockout", err, c.Now().Add(want))
		if i == 0 {
			// IP-less logins (remoteIP "") count per email only.
			if _, err := d.Login("other@example.com", "x", ""); !errors.Is(err, ErrBadCredentials) {
				t.Fatalf("login of another email = %v, want ErrBadCredentials", err)
			}
		}
		c.Advance(want)
	}
}

func TestLockoutWindowAndReset(t *testing.T) {
	c := newClock()
	d := mustSetup(t, "", c)

	// Four failures, a success, four more: the success reset the count.
	fail(t, d, adminEmail, "192.0.2.1", 4)
	mustLogin(t, d, adminEmail, adminPW)
	if err := fail(t, d, adminEmail, "192.0.2.2", 4); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("4 failures after a success = %v, want ErrBadCredentials", err)
	}
	// The fifth comes too late for the window.
	c.Advance(failureWindow)
	if err := fail(t, d, adminEmail, "192.0.2.3", 1); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("a failure 15 minutes later = %v, want ErrBadCredentials", err)
	}
	mustLogin(t, d, adminEmail, adminPW)
}

func TestLockoutPerAddress(t *testing.T) {
	c := newClock()
	d := mustSetup(t, "", c)
	mustAddUser(t, d, "bob@example.com", RoleViewer, "bobs long password")

	// Five different emails from one address (with changing ports, as
	// http.Request.RemoteAddr has them), one of them not an email at all.
	ip := "198.51.100.7"
	var err error
	for i, email := range []string{"a@example.com", "b@example.com", "not an email", "d@example.com", adminEmail} {
		_, err = d.Login(email, "wrong password!!", ip+":"+string(rune('1'+i))+"000")
		if i < 4 && !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("failure %d = %v, want ErrBadCredentials", i+1, err)
		}
	}
	wantLocked(t, "5th failure from one address", err, c.Now().Add(15*time.Minute))
	_, err = d.Login("bob@example.com", "bobs long password", ip)
	wantLocked(t, "right password from the locked address", err, time.Time{})
	// The emails themselves are not locked: one failure each, at most.
	mustLogin(t, d, "bob@example.com", "bobs long password")
	mustLogin(t, d, adminEmail, adminPW)

	// IPv6 addresses count per /64.
	for i := range 5 {
		_, err = d.Login("x@example.com", "wrong password!!", "[2001:db8:1:2::"+string(rune('a'+i))+"]:443")
	}
	wantLocked(t, "5 failures from one /64", err, time.Time{})
	if _, err := d.Login(adminEmail, adminPW, "2001:db8:1:2:ffff::1"); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("login from the locked /64 = %v, want ErrLockedOut", err)
	}
	if _, err := d.Login(adminEmail, adminPW, "2001:db8:1:3::1"); err != nil {
		t.Fatalf("login from another /64: %v", err)
	}
}

func TestLoginRefusesDisabledAndUnknown(t *testing.T) {
	c := newClock()
	d := mustSetup(t, "", c)
	mustAddUser(t, d, "bob@example.com", RoleViewer, "bobs long password")
	if err := d.SetDisabled(adminEmail, "bob@example.com", true); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, email, pw string }{
		{"disabled, right password", "bob@example.com", "bobs long password"},
		{"unknown", "nobody@example.com", adminPW},
		{"wrong password", adminEmail, adminPW + "x"},
		{"garbage email", "<script>", adminPW},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := d.Login(tt.email, tt.pw, "192.0.2.5"); !errors.Is(err, ErrBadCredentials) {
				t.Fatalf("Login(%q) = %v, want ErrBadCredentials", tt.email, err)
			}
		})
	}
	log, _ := d.AuditLog(4)
	for _, e := range log {
		if e.Action != "login-failed" || e.Detail[:len("192.0.2.5")] != "192.0.2.5" {
			t.Fatalf("audit entry %+v, want login-failed from 192.0.2.5", e)
		}
	}
	if log[0].Actor != "unknown" {
		t.Fatalf("actor of a login with a garbage email = %q, want unknown", log[0].Actor)
	}
}

// An unknown email must cost argon2 work like a known one, or response
// times tell which accounts exist.
func TestLoginUnknownUserCostsAHash(t *testing.T) {
	c := newClock()
	opts := testOptions(c)
	opts.Argon = ArgonParams{Time: 1, MemoryKiB: 16 * 1024, Threads: 1, KeyLen: 32}
	opts.MaxFailures = 100
	d := mustOpen(t, "", opts)
	if _, err := d.CreateFirstAdmin(adminEmail, adminPW, testDomains); err != nil {
		t.Fatal(err)
	}
	median := func(email string) time.Duration {
		var ds []time.Duration
		for range 5 {
			start := time.Now()
			d.Login(email, "wrong password!!", "")
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	median("nobody@example.com") // computes the dummy hash
	known, unknown := median(adminEmail), median("nobody@example.com")
	if unknown < known/3 {
		t.Fatalf("login of an unknown email took %v, a known one %v: want comparable", unknown, known)
	}
}

func TestLoginUpgradesHashParameters(t *testing.T) {
	c := newClock()
	path := filepath.Join(t.TempDir(), "accounts.db")
	d := mustSetup(t, path, c)
	d.Close()

	opts := testOptions(c)
	opts.Argon = ArgonParams{Time: 2, MemoryKiB: 128, Threads: 2, KeyLen: 24}
	d = mustOpen(t, path, opts)
	mustLogin(t, d, adminEmail, adminPW) // verifies with the old parameters
	var stored string
	d.bolt.View(func(tx *bolt.Tx) error {
		u, _, _ := getUser(tx, adminEmail)
		stored = u.Hash
		return nil
	})
	h, err := parsePHC(stored)
	if err != nil {
		t.Fatal(err)
	}
	if h.params != opts.Argon {
		t.Fatalf("hash parameters after login = %+v, want %+v", h.params, opts.Argon)
	}
	mustLogin(t, d, adminEmail, adminPW)
}

func TestSessions(t *testing.T) {
	c := newClock()
	d := mustSetup(t, "", c) // SessionTTL 12h, IdleTimeout 1h
	mustAddUser(t, d, "bob@example.com", RoleViewer, "bobs long password")

	t.Run("absolute expiry", func(t *testing.T) {
		s := mustLogin(t, d, adminEmail, adminPW)
		if want := c.Now().Add(12 * time.Hour); !s.Expires.Equal(want) {
			t.Fatalf("Expires = %v, want %v", s.Expires, want)
		}
		for c.Now().Before(s.Expires.Add(-30 * time.Minute)) {
			c.Advance(30 * time.Minute)
			if _, _, err := d.Session(s.ID); err != nil {
				t.Fatalf("Session at %v: %v", c.Now(), err)
			}
		}
		c.Advance(30 * time.Minute)
		if _, _, err := d.Session(s.ID); !errors.Is(err, ErrSessionInvalid) {
			t.Fatalf("Session at its absolute end = %v, want ErrSessionInvalid", err)
		}
	})

	t.Run("idle expiry", func(t *testing.T) {
		s := mustLogin(t, d, adminEmail, adminPW)
		c.Advance(59 * time.Minute)
		got, u, err := d.Session(s.ID)
		if err != nil {
			t.Fatalf("Session after 59 idle minutes: %v", err)
		}
		if got.ID != s.ID || got.Email != adminEmail || got.Role != RoleAdmin || u.Email != adminEmail {
			t.Fatalf("Session = %+v, %+v", got, u)
		}
		c.Advance(59 * time.Minute) // idle time counts from the last use
		if _, _, err := d.Session(s.ID); err != nil {
			t.Fatalf("Session 59 minutes after the last use: %v", err)
		}
		c.Advance(time.Hour)
		if _, _, err := d.Session(s.ID); !errors.Is(err, ErrSessionInvalid) {
			t.Fatalf("Session after an idle hour = %v, want ErrSessionInvalid", err)
		}
	})

	t.Run("touch at most once a minute", func(t *testing.T) {
		s := mustLogin(t, d, adminEmail, adminPW)
		lastUsed := func() time.Time {
			var sr sessionRecord
			d.bolt.View(func(tx *bolt.Tx) error {
				_, err := getJSON(tx.Bucket(bucketSessions), secretKey(s.ID), &sr)
				return err
			})
			return sr.LastUsed
		}
		login := c.Now()
		c.Advance(59 * time.Second)
		d.Session(s.ID)
		if got := lastUsed(); !got.Equal(login) {
			t.Fatalf("last use recorded %v after 59s, want still %v", got, login)
		}
		c.Advance(time.Second)
		d.Session(s.ID)
		if got := lastUsed(); !got.Equal(c.Now()) {
			t.Fatalf("last use recorded %v after 60s, want %v", got, c.Now())
		}
	})

	t.Run("logout", func(t *testing.T) {
		s := mustLogin(t, d, adminEmail, adminPW)
		if err := d.Logout(s.ID); err != nil {
			t.Fatal(err)
		}
		if _, _, err := d.Session(s.ID); !errors.Is(err, ErrSessionInvalid) {
			t.Fatalf("Session after Logout = %v, want ErrSessionInvalid", err)
		}
		if err := d.Logout(s.ID); err != nil {
			t.Fatalf("second Logout: %v", err)
		}
		for _, id := range []string{"", "nonsense", string(make([]byte, 10000))} {
			if _, _, err := d.Session(id); !errors.Is(err, ErrSessionInvalid) {
				t.Fatalf("Session(%.10q…) = %v, want ErrSessionInvalid", id, err)
			}
		}
	})

	t.Run("role change shows at once", func(t *testing.T) {
		s := mustLogin(t, d, "bob@example.com", "bobs long password")
		if err := d.SetRole(adminEmail, "bob@example.com", RoleAdmin); err != nil {
			t.Fatal(err)
		}
		if got, _, err := d.Session(s.ID); err != nil || got.Role != RoleAdmin {
			t.Fatalf("Session after promotion = %+v, %v; want role admin", got, err)
		}
		if err := d.SetRole(adminEmail, "bob@example.com", RoleViewer); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("disabled user", func(t *testing.T) {
		s := mustLogin(t, d, "bob@example.com", "bobs long password")
		if err := d.SetDisabled(adminEmail, "bob@example.com", true); err != nil {
			t.Fatal(err)
		}
		if _, _, err := d.Session(s.ID); !errors.Is(err, ErrSessionInvalid) {
			t.Fatalf("Session of a disabled user = %v, want ErrSessionInvalid", err)
		}
		if err := d.SetDisabled(adminEmail, "bob@example.com", false); err != nil {
			t.Fatal(err)
		}
		if _, _, err := d.Session(s.ID); !errors.Is(err, ErrSessionInvalid) {
			t.Fatalf("Session after re-enabling = %v, want ErrSessionInvalid (disabling ends sessions)", err)
		}
		mustLogin(t, d, "bob@example.com", "bobs long password")
	})

	t.Run("password change ends sessions", func(t *testing.T) {
		s1 := mustLogin(t, d, "bob@example.com", "bobs long password")
		s2 := mustLogin(t, d, "bob@example.com", "bobs long password")
		other := mustLogin(t, d, adminEmail, adminPW)
		if err := d.ChangePassword("bob@example.com", "not bobs password", "bobs new long password"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("ChangePassword with a wrong old password = %v, want ErrBadCredentials", err)
		}
		if err := d.ChangePassword("bob@example.com", "bobs long password", "aaaaaaaaaaaaaaaa"); !errors.Is(err, ErrWeakPassword) {
			t.Fatalf("ChangePassword to a weak password = %v, want ErrWeakPassword", err)
		}
		if _, _, err := d.Session(s1.ID); err != nil {
			t.Fatalf("a refused change ended a session: %v", err)
		}
		if err := d.ChangePassword("bob@example.com", "bobs long password", "bobs new long password"); err != nil {
			t.Fatalf("ChangePassword: %v", err)
		}
		for _, s := range []Session{s1, s2} {
			if _, _, err := d.Session(s.ID); !errors.Is(err, ErrSessionInvalid) {
				t.Fatalf("Session after password change = %v, want ErrSessionInvalid", err)
			}
		}
		if _, _, err := d.Session(other.ID); err != nil {
			t.Fatalf("another user's session after bob's password change: %v", err)
		}
		if _, err := d.Login("bob@example.com", "bobs long password", "192.0.2.8"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("login with the old password = %v, want ErrBadCredentials", err)
		}
		mustLogin(t, d, "bob@example.com", "bobs new long password")
	})
}

func TestChangePasswordCountsFailures(t *testing.T) {
	c := newClock()
	d := mustSetup(t, "", c)
	var err error
	for range 5 {
		err = d.ChangePassword(adminEmail, "a wrong guess!!", "a brand new password")
	}
	wantLocked(t, "5th wrong old password", err, c.Now().Add(15*time.Minute))
	err = d.ChangePassword(adminEmail, adminPW, "a brand new password")
	wantLocked(t, "right old password while locked", err, time.Time{})
	_, err = d.Login(adminEmail, adminPW, "192.0.2.1")
	wantLocked(t, "login while locked", err, time.Time{})
}

func TestPruneSessions(t *testing.T) {
	c := newClock()
	d := mustSetup(t, "", c)
	keep := mustLogin(t, d, adminEmail, adminPW)
	mustLogin(t, d, adminEmail, adminPW)
	fail(t, d, "x@example.com", "192.0.2.1", 1) // two counters: email and address
	if _, err := d.Invite(adminEmail, "inv@example.com", RoleViewer, time.Hour); err != nil {
		t.Fatal(err)
	}
	if n, err := d.PruneSessions(); err != nil || n != 0 {
		t.Fatalf("PruneSessions with nothing stale = %d, %v; want 0", n, err)
	}
	c.Advance(50 * time.Minute)
	if _, _, err := d.Session(keep.ID); err != nil {
		t.Fatal(err)
	}
	c.Advance(20 * time.Minute) // the other session is idle, the invite expired
	if n, err := d.PruneSessions(); err != nil || n != 2 {
		t.Fatalf("PruneSessions = %d, %v; want 2 (a session and an invite)", n, err)
	}
	if _, _, err := d.Session(keep.ID); err != nil {
		t.Fatalf("PruneSessions removed a live session: %v", err)
	}
	c.Advance(24 * time.Hour)
	if n, err := d.PruneSessions(); err != nil || n != 3 {
		t.Fatalf("PruneSessions a day later = %d, %v; want 3 (a session, two counters)", n, err)
	}
}

// Concurrent guesses must be counted exactly: MaxFailures, then lockout,
// however many arrive at once.
func TestLockoutCountsConcurrentGuesses(t *testing.T) {
	c := newClock()
	d := mustSetup(t, "", c)
	errs := make(chan error, 20)
	for i := range cap(errs) {
		go func() {
			_, err := d.Login(adminEmail, "wrong password "+string(rune('a'+i)), "192.0.2.1")
			errs <- err
		}()
	}
	bad, locked := 0, 0
	for range cap(errs) {
		switch err := <-errs; {
		case errors.Is(err, ErrBadCredentials):
			bad++
		case errors.Is(err, ErrLockedOut):
			locked++
		default:
			t.Fatalf("concurrent wrong login = %v", err)
		}
	}
	if bad != 4 || locked != 16 {
		t.Fatalf("20 concurrent wrong logins: %d bad credentials, %d locked out; want 4 and 16", bad, locked)
	}
	log, _ := d.AuditLog(0)
	n := 0
	for _, e := range log {
		if e.Action == "login-failed" {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("%d login-failed entries, want 5 (refused attempts while locked are not audited)", n)
	}
}
