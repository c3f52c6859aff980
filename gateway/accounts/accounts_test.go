package accounts

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is the tests' injectable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testArgon keeps tests fast; TestDefaultArgon and the benchmark use the
// real parameters.
var testArgon = ArgonParams{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32}

const (
	adminEmail = "admin@example.com"
	adminPW    = "correct horse battery"
)

var testDomains = []string{"example.com"}

func testOptions(c *clock) Options {
	return Options{Now: c.Now, Argon: testArgon}
}

func mustOpen(tb testing.TB, path string, opts Options) *DB {
	tb.Helper()
	if path == "" {
		path = filepath.Join(tb.TempDir(), "accounts.db")
	}
	d, err := Open(path, opts)
	if err != nil {
		tb.Fatalf("Open(%q): %v", path, err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

// mustSetup opens a new file at path (or in a temporary directory) and
// creates the first admin.
func mustSetup(tb testing.TB, path string, c *clock) *DB {
	tb.Helper()
	d := mustOpen(tb, path, testOptions(c))
	if _, err := d.CreateFirstAdmin(adminEmail, adminPW, testDomains); err != nil {
		tb.Fatalf("CreateFirstAdmin: %v", err)
	}
	return d
}

// mustAddUser invites email with role and accepts the invitation.
func mustAddUser(tb testing.TB, d *DB, email string, role Role, pw string) User {
	tb.Helper()
	tok, err := d.Invite(adminEmail, email, role, 0)
	if err != nil {
		tb.Fatalf("Invite(%q): %v", email, err)
	}
	u, err := d.AcceptInvite(tok, pw)
	if err != nil {
		tb.Fatalf("AcceptInvite(%q): %v", email, err)
	}
	return u
}

func mustLogin(tb testing.TB, d *DB, email, pw string) Session {
	tb.Helper()
	s, err := d.Login(email, pw, "192.0.2.10")
	if err != nil {
		tb.Fatalf("Login(%q): %v", email, err)
	}
	return s
}

func TestSetupOnce(t *testing.T) {
	c := newClock()
	d := mustOpen(t, "", testOptions(c))
	if d.SetupDone() {
		t.Fatal("SetupDone on a new file = true")
	}
	if _, err := d.Login(adminEmail, adminPW, "192.0.2.1"); !errors.Is(err, ErrSetupNeeded) {
		t.Fatalf("Login before setup = %v, want ErrSetupNeeded", err)
	}
	if _, err := d.Invite("cli", "bob@example.com", RoleViewer, 0); !errors.Is(err, ErrSetupNeeded) {
		t.Fatalf("Invite before setup = %v, want ErrSetupNeeded", err)
	}
	if err := d.SetDomains("cli", []string{"example.org"}); !errors.Is(err, ErrSetupNeeded) {
		t.Fatalf("SetDomains before setup = %v, want ErrSetupNeeded", err)
	}

	for _, tt := range []struct {
		name, email, pw string
		domains         []string
		want            error
	}{
		{"free-mail admin", "me@gmail.com", adminPW, []string{"example.com"}, ErrFreeMail},
		{"free-mail domain", "me@gmail.com", adminPW, []string{"gmail.com"}, ErrFreeMail},
		{"admin off domain", "me@example.org", adminPW, []string{"example.com"}, ErrWrongDomain},
		{"no domains", adminEmail, adminPW, nil, ErrBadDomain},
		{"short password", adminEmail, "short", testDomains, ErrWeakPassword},
		{"bad email", "admin", adminPW, testDomains, ErrBadEmail},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := d.CreateFirstAdmin(tt.email, tt.pw, tt.domains); !errors.Is(err, tt.want) {
				t.Fatalf("CreateFirstAdmin(%q, …, %q) = %v, want %v", tt.email, tt.domains, err, tt.want)
			}
			if d.SetupDone() {
				t.Fatal("a refused setup left SetupDone = true")
			}
		})
	}

	u, err := d.CreateFirstAdmin(" Admin@Example.COM ", adminPW, []string{"Example.com", "example.org", "example.com"})
	if err != nil {
		t.Fatalf("CreateFirstAdmin: %v", err)
	}
	want := User{Email: adminEmail, Role: RoleAdmin, Created: c.Now()}
	if u != want {
		t.Fatalf("CreateFirstAdmin = %+v, want %+v", u, want)
	}
	if !d.SetupDone() {
		t.Fatal("SetupDone after setup = false")
	}
	if got := d.Domains(); strings.Join(got, ",") != "example.com,example.org" {
		t.Fatalf("Domains = %q, want [example.com example.org]", got)
	}
	if _, err := d.CreateFirstAdmin("other@example.com", adminPW, testDomains); !errors.Is(err, ErrSetupDone) {
		t.Fatalf("second CreateFirstAdmin = %v, want ErrSetupDone", err)
	}
	log, err := d.AuditLog(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != 1 || log[0].Action != "setup" || log[0].Actor != adminEmail {
		t.Fatalf("audit after setup = %+v, want one setup entry by %s", log, adminEmail)
	}
}

func TestInviteAcceptLogin(t *testing.T) {
	c := newClock()
	d := mustSetup(t, "", c)

	tok, err := d.Invite(adminEmail, "Bob@Example.com", RoleViewer, time.Hour)
	if err != nil {
		t.Fatalf("Invite: %v", err)
	}
	email, role, err := d.InviteInfo(tok)
	if err != nil || email != "bob@example.com" || role != RoleViewer {
		t.Fatalf("InviteInfo = %q, %q, %v; want bob@example.com, viewer", email, role, err)
	}
	if _, err := d.AcceptInvite(tok, "bob@example.com"); !errors.Is(err, ErrWeakPassword) {
		t.Fatalf("AcceptInvite with the email as password = %v, want ErrWeakPassword", err)
	}
	if _, _, err := d.InviteInfo(tok); err != nil {
		t.Fatalf("a refused password spent the invite: %v", err)
	}
	u, err := d.AcceptInvite(tok, "bobs own long password")
	if err != nil {
		t.Fatalf("AcceptInvite: %v", err)
	}
	if u.Email != "bob@example.com" || u.Role != RoleViewer || u.Disabled {
		t.Fatalf("AcceptInvite = %+v", u)
	}
	s := mustLogin(t, d, "bob@example.com", "bobs own long password")
	if s.Email != "bob@example.com" || s.Role != RoleViewer || len(s.ID) != 43 {
		t.Fatalf("Login = %+v", s)
	}
	if _, err := d.AcceptInvite(tok, "another long password"); !errors.Is(err, ErrInviteInvalid) {
		t.Fatalf("AcceptInvite again = %v, want ErrInviteInvalid", err)
	}
	if _, _, err := d.InviteInfo(tok); !errors.Is(err, ErrInviteInvalid) {
		t.Fatalf("InviteInfo of a used invite = %v, want ErrInviteInvalid", err)
	}
	if _, err := d.Invite(adminEmail, "bob@example.com", RoleAdmin, 0); !errors.Is(err, ErrUserExists) {
		t.Fatalf("Invite of an existing user = %v, want ErrUserExists", err)
	}

	users, err := d.Users()
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 || users[0].Email != adminEmail || users[1].Email != "bob@example.com" {
		t.Fatalf("Users = %+v, want admin then bob", users)
	}
	if got, err := d.User("BOB@example.com"); err != nil || got != u {
		t.Fatalf("User(bob) = %+v, %v; want %+v", got, err, u)
	}
	if _, err := d.User("nobody@example.com"); !errors.Is(err, ErrNoSuchUser) {
		t.Fatalf("User(nobody) = %v, want ErrNoSuchUser", err)
	}
}

func TestInviteRefusals(t *testing.T) {
	c := newClock()
	d := mustSetup(t, "", c)
	for _, tt := range []struct {
		name, email string
		role        Role
		ttl         time.Duration
		want        error
	}{
		{"other domain", "eve@evil.example", RoleViewer, 0, ErrWrongDomain},
		{"free mail", "eve@gmail.com", RoleViewer, 0, ErrFreeMail},
		{"garbage", "eve", RoleViewer, 0, ErrBadEmail},
		{"display name", "Eve <eve@example.com>", RoleViewer, 0, ErrBadEmail},
		{"existing", adminEmail, RoleViewer, 0, ErrUserExists},
		{"bad role", "eve@example.com", Role("root"), 0, ErrBadRole},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := d.Invite(adminEmail, tt.email, tt.role, tt.ttl)
			if !errors.Is(err, tt.want) || tok != "" {
				t.Fatalf("Invite(%q, %q) = %q, %v; want %v", tt.email, tt.role, tok, err, tt.want)
			}
		})
	}
	if _, err := d.Invite(adminEmail, "eve@example.com", RoleViewer, 31*24*time.Hour); err == nil {
		t.Fatal("Invite valid for 31 days: want error")
	}
}

func TestInviteExpiresAndIsReplaced(t *testing.T) {
	c := newClock()
	d := mustSetup(t, "", c)

	tok, err := d.Invite(adminEmail, "carol@sub.example.com", RoleViewer, time.Hour)
	if err != nil {
		t.Fatalf("Invite to a subdomain: %v", err)
	}
	c.Advance(time.Hour)
	if _, _, err := d.InviteInfo(tok); !errors.Is(err, ErrInviteInvalid) {
		t.Fatalf("InviteInfo after ttl = %v, want ErrInviteInvalid", err)
	}
	if _, err := d.AcceptInvite(tok, "carols long password"); !errors.Is(err, ErrInviteInvalid) {
		t.Fatalf("AcceptInvite after ttl = %v, want ErrInviteInvalid", err)
	}

	first, err := d.Invite(adminEmail, "carol@sub.example.com", RoleViewer, 0)
	if err != nil {
		t.Fatal(err)
	}
	second, err := d.Invite(adminEmail, "carol@sub.example.com", RoleAdmin, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.InviteInfo(first); !errors.Is(err, ErrInviteInvalid) {
		t.Fatalf("InviteInfo of a replaced invite = %v, want ErrInviteInvalid", err)
	}
	if _, role, err := d.InviteInfo(second); err != nil || role != RoleAdmin {
		t.Fatalf("InviteInfo(second) = %q, %v; want admin", role, err)
	}
	for _, tok := range []string{"", "nonsense", strings.Repeat("x", 5000)} {
		if _, _, err := d.InviteInfo(tok); !errors.Is(err, ErrInviteInvalid) {
			t.Fatalf("InviteInfo(%.10q…) = %v, want ErrInviteInvalid", tok, err)
		}
	}

	// Domains changed after the invitation: accepting must check again.
	if err := d.SetDomains(adminEmail, []string{"example.com"}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetDomains(adminEmail, []string{"example.com", "example.org"}); err != nil {
		t.Fatal(err)
	}
	tok, err = d.Invite(adminEmail, "dan@example.org", RoleViewer, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SetDomains(adminEmail, []string{"example.com"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.AcceptInvite(tok, "dans long password"); !errors.Is(err, ErrWrongDomain) {
		t.Fatalf("AcceptInvite after its domain was removed = %v, want ErrWrongDomain", err)
	}
}

func TestSetDomainsKeepsAccountsOnDomain(t *testing.T) {
	c := newClock()
	d := mustSetup(t, "", c)
	if err := d.SetDomains(adminEmail, []string{"example.com", "example.org"}); err != nil {
		t.Fatal(err)
	}
	mustAddUser(t, d, "olga@example.org", RoleViewer, "olgas long password")
	if err := d.SetDomains(adminEmail, []string{"example.com"}); !errors.Is(err, ErrWrongDomain) || !strings.Contains(err.Error(), "olga@example.org") {
		t.Fatalf("SetDomains leaving olga outside = %v, want ErrWrongDomain naming her", err)
	}
	if err := d.SetDomains(adminEmail, []string{"gmail.com"}); !errors.Is(err, ErrFreeMail) {
		t.Fatalf("SetDomains(gmail.com) = %v, want ErrFreeMail", err)
	}
	if err := d.SetDisabled(adminEmail, "olga@example.org", true); err != nil {
		t.Fatal(err)
	}
	if err := d.SetDomains(adminEmail, []string{"example.com"}); err != nil {
		t.Fatalf("SetDomains after disabling olga: %v", err)
	}
	if err := d.SetDisabled(adminEmail, "olga@example.org", false); !errors.Is(err, ErrWrongDomain) {
		t.Fatalf("re-enabling an account off the domains = %v, want ErrWrongDomain", err)
	}
	log, _ := d.AuditLog(1)
	if log[0].Action != "settings" || !strings.Contains(log[0].Detail, "example.com") {
		t.Fatalf("last audit entry = %+v, want settings", log[0])
	}
}

func TestLastAdmin(t *testing.T) {
	c := newClock()
	d := mustSetup(t, "", c)
	if err := d.SetRole(adminEmail, adminEmail, RoleViewer); !errors.Is(err, ErrLastAdmin) {
		t.Fatalf("demoting the only admin = %v, want ErrLastAdmin", err)
	}
	if err := d.SetDisabled(adminEmail, adminEmail, true); !errors.Is(err, ErrLastAdmin) {
		t.Fatalf("disabling the only admin = %v, want ErrLastAdmin", err)
	}
	mustAddUser(t, d, "ann@example.com", RoleAdmin, "anns long password")
	mustAddUser(t, d, "vic@example.com", RoleViewer, "vics long password")

	// A disabled admin administers nothing.
	if err := d.SetDisabled(adminEmail, "ann@example.com", true); err != nil {
		t.Fatalf("disabling one of two admins: %v", err)
	}
	if err := d.SetRole(adminEmail, adminEmail, RoleViewer); !errors.Is(err, ErrLastAdmin) {
		t.Fatalf("demoting the only enabled admin = %v, want ErrLastAdmin", err)
	}
	if err := d.SetDisabled(adminEmail, "ann@example.com", false); err != nil {
		t.Fatal(err)
	}
	if err := d.SetRole("ann@example.com", adminEmail, RoleViewer); err != nil {
		t.Fatalf("demoting one of two admins: %v", err)
	}
	if err := d.SetRole(adminEmail, "ann@example.com", RoleViewer); !errors.Is(err, ErrLastAdmin) {
		t.Fatalf("demoting the last admin = %v, want ErrLastAdmin", err)
	}
	if err := d.SetRole("ann@example.com", "vic@example.com", RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if err := d.SetRole("ann@example.com", "nobody@example.com", RoleAdmin); !errors.Is(err, ErrNoSuchUser) {
		t.Fatalf("SetRole(nobody) = %v, want ErrNoSuchUser", err)
	}
	if err := d.SetDisabled("ann@example.com", "nobody@example.com", true); !errors.Is(err, ErrNoSuchUser) {
		t.Fatalf("SetDisabled(nobody) = %v, want ErrNoSuchUser", err)
	}
	if err := d.SetRole("ann@example.com", "vic@example.com", "root"); !errors.Is(err, ErrBadRole) {
		t.Fatalf("SetRole(root) = %v, want ErrBadRole", err)
	}
	if u, _ := d.User(adminEmail); u.Role != RoleViewer {
		t.Fatalf("admin's role = %q, want viewer", u.Role)
	}
}

func TestReopenKeepsAccounts(t *testing.T) {
	c := newClock()
	path := filepath.Join(t.TempDir(), "accounts.db")
	d := mustSetup(t, path, c)
	s := mustLogin(t, d, adminEmail, adminPW)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode = %v, want 0600", fi.Mode().Perm())
	}
	d = mustOpen(t, path, testOptions(c))
	if !d.SetupDone() {
		t.Fatal("SetupDone after reopen = false")
	}
	if _, _, err := d.Session(s.ID); err != nil {
		t.Fatalf("Session after reopen: %v", err)
	}
	mustLogin(t, d, adminEmail, adminPW)
}

func TestOpenDamagedFile(t *testing.T) {
	dir := t.TempDir()
	valid := filepath.Join(dir, "valid.db")
	d := mustSetup(t, valid, newClock())
	d.Close()
	good, err := os.ReadFile(valid)
	if err != nil {
		t.Fatal(err)
	}
	// Both meta pages (the first two pages) overwritten.
	metaSmashed := append([]byte(strings.Repeat("\xa5", 8192)), good[8192:]...)

	for _, tt := range []struct {
		name    string
		content []byte
	}{
		{"garbage", []byte(strings.Repeat("not a bolt file ", 1024))},
		{"meta pages smashed", metaSmashed},
		{"tiny", []byte("x")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".db")
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			d, err := Open(path, Options{Argon: testArgon})
			if err == nil {
				d.Close()
				t.Fatalf("Open(%s) succeeded, want an error", tt.name)
			}
			if !strings.Contains(err.Error(), "damaged") {
				t.Fatalf("Open(%s) = %v, want an error saying the file is damaged", tt.name, err)
			}
			after, _ := os.ReadFile(path)
			if string(after) != string(tt.content) {
				t.Fatal("Open changed a damaged file")
			}
		})
	}
}

func TestOpenLockedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accounts.db")
	mustOpen(t, path, Options{Argon: testArgon})
	start := time.Now()
	d, err := Open(path, Options{Argon: testArgon})
	if err == nil {
		d.Close()
		t.Fatal("second Open of a held file succeeded")
	}
	if !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second Open = %v, want a 'locked' error", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("second Open took %v, want about 1s", el)
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		opts Options
	}{
		{"argon memory 1 GiB", Options{Argon: ArgonParams{Time: 1, MemoryKiB: 1 << 20, Threads: 1, KeyLen: 32}}},
		{"argon zero time", Options{Argon: ArgonParams{MemoryKiB: 64, Threads: 1, KeyLen: 32}}},
		{"argon short key", Options{Argon: ArgonParams{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 8}}},
		{"negative ttl", Options{Argon: testArgon, SessionTTL: -time.Hour}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Open(filepath.Join(dir, "a.db"), tt.opts)
			if err == nil {
				d.Close()
				t.Fatalf("Open with %+v succeeded, want error", tt.opts)
			}
		})
	}
}
