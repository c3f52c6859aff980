package accounts

import (
	"bytes"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func getUserForTest(tb testing.TB, d *DB, email string) (userRecord, bool, error) {
	tb.Helper()
	var (
		u   userRecord
		ok  bool
		err error
	)
	d.bolt.View(func(tx *bolt.Tx) error {
		u, ok, err = getUser(tx, email)
		return nil
	})
	return u, ok, err
}

// wantContiguous fails unless log (oldest first) is numbered 1, 2, 3, …
func wantContiguous(tb testing.TB, log []AuditEntry) {
	tb.Helper()
	for i, e := range log {
		if e.Seq != uint64(i+1) {
			tb.Fatalf("audit entry %d has seq %d, want %d", i, e.Seq, i+1)
		}
	}
}

func TestAuditAppendOnly(t *testing.T) {
	c := newClock()
	path := filepath.Join(t.TempDir(), "accounts.db")
	d := mustSetup(t, path, c)
	c.Advance(time.Minute)
	if err := d.Audit("system", "pair-board", "board 3 paired"); err != nil {
		t.Fatal(err)
	}
	// Refused actions must not use up a number.
	if _, err := d.CreateFirstAdmin(adminEmail, adminPW, testDomains); err == nil {
		t.Fatal("second setup succeeded")
	}
	if err := d.SetRole("cli", adminEmail, RoleViewer); err == nil {
		t.Fatal("demoting the last admin succeeded")
	}
	for _, bad := range [][3]string{{"", "x", ""}, {"cli", "", ""}, {"cli", "x", strings.Repeat("d", 3000)}, {"cli", "x", "\xff"}} {
		if err := d.Audit(bad[0], bad[1], bad[2]); err == nil {
			t.Fatalf("Audit(%.20q) succeeded, want error", bad)
		}
	}
	mustLogin(t, d, adminEmail, adminPW)
	d.Close()

	d = mustOpen(t, path, testOptions(c))
	if err := d.Audit("cli", "export", "=HYPERLINK(\"x\")"); err != nil {
		t.Fatal(err)
	}
	newest, err := d.AuditLog(0)
	if err != nil {
		t.Fatal(err)
	}
	wantActions := []string{"export", "login", "pair-board", "setup"}
	var got []string
	for _, e := range newest {
		got = append(got, e.Action)
	}
	if !slices.Equal(got, wantActions) {
		t.Fatalf("AuditLog actions = %q, want %q (newest first)", got, wantActions)
	}
	oldest := slices.Clone(newest)
	slices.Reverse(oldest)
	wantContiguous(t, oldest)
	if newest[2].Actor != "system" || newest[2].Detail != "board 3 paired" || !newest[2].At.Equal(c.Now()) {
		t.Fatalf("pair-board entry = %+v", newest[2])
	}
	if two, _ := d.AuditLog(2); !reflect.DeepEqual(two, newest[:2]) {
		t.Fatalf("AuditLog(2) = %+v, want the newest two", two)
	}

	var js bytes.Buffer
	if err := d.WriteAuditJSON(&js); err != nil {
		t.Fatal(err)
	}
	var fromJSON []AuditEntry
	if err := json.Unmarshal(js.Bytes(), &fromJSON); err != nil {
		t.Fatalf("WriteAuditJSON wrote invalid JSON: %v\n%s", err, js.Bytes())
	}
	if !reflect.DeepEqual(fromJSON, oldest) {
		t.Fatalf("WriteAuditJSON = %+v, want %+v", fromJSON, oldest)
	}

	var cs bytes.Buffer
	if err := d.WriteAuditCSV(&cs); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&cs).ReadAll()
	if err != nil {
		t.Fatalf("WriteAuditCSV wrote invalid CSV: %v", err)
	}
	if !slices.Equal(rows[0], []string{"seq", "at", "actor", "action", "detail"}) || len(rows) != len(oldest)+1 {
		t.Fatalf("CSV header %q and %d rows, want seq,at,actor,action,detail and %d", rows[0], len(rows)-1, len(oldest))
	}
	for i, e := range oldest {
		r := rows[i+1]
		at, _ := time.Parse(time.RFC3339Nano, r[1])
		if r[0] != strconv.FormatUint(e.Seq, 10) || !at.Equal(e.At) || r[2] != e.Actor || r[3] != e.Action {
			t.Fatalf("CSV row %q, want %+v", r, e)
		}
	}
	if last := rows[len(rows)-1]; last[4] != `'=HYPERLINK("x")` {
		t.Fatalf("CSV detail %q: a formula must be defused", last[4])
	}
}

func TestAuditExportLargerThanAChunk(t *testing.T) {
	d := mustOpen(t, "", testOptions(newClock()))
	n := 2*auditChunk + 7
	for i := range n {
		if err := d.Audit("system", "test", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	var js bytes.Buffer
	if err := d.WriteAuditJSON(&js); err != nil {
		t.Fatal(err)
	}
	var log []AuditEntry
	if err := json.Unmarshal(js.Bytes(), &log); err != nil {
		t.Fatal(err)
	}
	if len(log) != n {
		t.Fatalf("WriteAuditJSON wrote %d entries, want %d", len(log), n)
	}
	wantContiguous(t, log)
	for i, e := range log {
		if e.Detail != strconv.Itoa(i) {
			t.Fatalf("entry %d detail %q, want %d", i, e.Detail, i)
		}
	}
	var empty bytes.Buffer
	if err := mustOpen(t, "", testOptions(newClock())).WriteAuditJSON(&empty); err != nil || strings.TrimSpace(empty.String()) != "[]" {
		t.Fatalf("WriteAuditJSON of an empty log = %q, %v; want []", empty.String(), err)
	}
}

// Every secret the package handles: none may reach the audit log, an
// export, or the file.
func TestSecretsNeverStored(t *testing.T) {
	c := newClock()
	path := filepath.Join(t.TempDir(), "accounts.db")
	d := mustSetup(t, path, c)

	secrets := []string{adminPW}
	tok, err := d.Invite(adminEmail, "bob@example.com", RoleViewer, 0)
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, tok)
	const bobPW = "bobs secret passphrase"
	const bobNewPW = "bobs even newer passphrase"
	secrets = append(secrets, bobPW, bobNewPW)
	if _, err := d.AcceptInvite(tok, bobPW); err != nil {
		t.Fatal(err)
	}
	s1 := mustLogin(t, d, adminEmail, adminPW)
	s2 := mustLogin(t, d, "bob@example.com", bobPW)
	secrets = append(secrets, s1.ID, s2.ID)
	// Failed logins with passwords that look like nothing else here, and a
	// password typed into the email field.
	const wrong = "wrong-guess-7f3a9c"
	secrets = append(secrets, wrong, "password-in-email-field")
	d.Login(adminEmail, wrong, "192.0.2.66")
	d.Login("password-in-email-field", adminPW, "192.0.2.66")
	d.ChangePassword("bob@example.com", wrong, bobNewPW)
	if err := d.ChangePassword("bob@example.com", bobPW, bobNewPW); err != nil {
		t.Fatal(err)
	}
	s3 := mustLogin(t, d, "bob@example.com", bobNewPW)
	secrets = append(secrets, s3.ID)
	if _, _, err := d.Session(s3.ID); err != nil {
		t.Fatal(err)
	}
	if err := d.Logout(s1.ID); err != nil {
		t.Fatal(err)
	}

	log, err := d.AuditLog(0)
	if err != nil {
		t.Fatal(err)
	}
	var js, cs bytes.Buffer
	if err := d.WriteAuditJSON(&js); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteAuditCSV(&cs); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]bool{}
	for _, e := range log {
		actions[e.Action] = true
	}
	for _, a := range []string{"setup", "invite", "account-created", "login", "login-failed", "password-change-failed", "password-changed", "logout"} {
		if !actions[a] {
			t.Errorf("no %q entry in the audit log", a)
		}
	}

	for _, s := range secrets {
		// Also the raw bytes behind a base64url secret.
		forms := []string{s}
		if raw, err := base64.RawURLEncoding.DecodeString(s); err == nil && len(raw) == 32 {
			forms = append(forms, string(raw))
		}
		for _, f := range forms {
			for _, e := range log {
				if strings.Contains(e.Actor+e.Action+e.Detail, f) {
					t.Errorf("audit entry %+v contains a secret", e)
				}
			}
			if bytes.Contains(js.Bytes(), []byte(f)) || bytes.Contains(cs.Bytes(), []byte(f)) {
				t.Errorf("audit export contains secret %.8q…", f)
			}
			if bytes.Contains(file, []byte(f)) {
				t.Errorf("the file contains secret %.8q…", f)
			}
		}
	}
	// The test must be able to see a secret where there is one.
	if !bytes.Contains(file, []byte(adminEmail)) {
		t.Fatal("the file does not contain the admin's email: is the search reading the right bytes?")
	}
}
