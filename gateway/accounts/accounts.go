// Package accounts owns the appliance's local dashboard accounts: users and
// their roles, password hashes, login sessions, invitations, the lockout
// counters that slow password guessing, the email-domain policy and the
// append-only audit log. All of it lives in one bbolt file.
//
// It keeps three promises made in the customer's privacy policy:
//   - an account exists only for an email address on one of the customer's
//     own domains (never a free-mail address);
//   - every processing step worth auditing is appended to a log that no
//     method changes or shortens, numbered contiguously from 1;
//   - passwords, session IDs and invitation tokens are never logged and never
//     written to disk: the file holds an argon2id hash of a password and a
//     SHA-256 of a session ID or token.
//
// The package decides who may hold an account, not who may do what: callers
// (the web layer, the CLI) check a user's role before they call Invite,
// SetRole, SetDisabled or SetDomains. See DESIGN.md for the reasoning behind
// the lockout and session rules.
package accounts

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Role is what a user may do in the dashboard.
type Role string

// The dashboard's roles.
const (
	RoleAdmin  Role = "admin"
	RoleViewer Role = "viewer"
)

func (r Role) valid() bool { return r == RoleAdmin || r == RoleViewer }

// User is a dashboard account as callers see it (never with its hash).
type User struct {
	Email    string    `json:"email"` // lowercased
	Role     Role      `json:"role"`
	Created  time.Time `json:"created"`
	Disabled bool      `json:"disabled"`
}

// Session is a logged-in browser.
type Session struct {
	// ID is the cookie value: 32 random bytes, base64url without padding.
	// The file stores only its SHA-256.
	ID    string
	Email string
	// Role is the user's role now, not at login: a demotion takes effect on
	// the next request.
	Role Role
	// Expires is the session's absolute end (login + SessionTTL); it ends
	// earlier if unused for IdleTimeout.
	Expires time.Time
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	Seq    uint64    `json:"seq"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`  // an email, "system", or "cli"
	Action string    `json:"action"` // e.g. "login", "login-failed", "setup", "invite", "pair-board", "export", "erase", "settings"
	Detail string    `json:"detail"`
}

// Options tune a DB. Every zero value means the documented default.
type Options struct {
	Now         func() time.Time // nil → time.Now
	Argon       ArgonParams      // zero → DefaultArgon
	SessionTTL  time.Duration    // absolute lifetime of a session; 0 → 12h
	IdleTimeout time.Duration    // a session unused this long expires; 0 → 1h
	MaxFailures int              // failed logins per email (and per remote IP) within 15 minutes before lockout; 0 → 5
	Lockout     time.Duration    // first lockout; 0 → 15m; doubles for repeated lockouts up to 24h
}

// ArgonParams are argon2id's cost parameters for new password hashes.
// Existing hashes keep the parameters they were made with (they are part of
// the stored string) and are upgraded at the user's next login.
type ArgonParams struct {
	Time, MemoryKiB uint32
	Threads         uint8
	KeyLen          uint32
}

// DefaultArgon is sized for a Raspberry Pi 3 (1 GiB RAM, 4 cores): 32 MiB
// per hash, and the package hashes one password at a time, so a burst of
// logins cannot exhaust memory. See BenchmarkHashPassword.
var DefaultArgon = ArgonParams{Time: 2, MemoryKiB: 32 * 1024, Threads: 2, KeyLen: 32}

// Errors. Those from the email and password policies are returned wrapped in
// an error whose message a person can act on; test them with errors.Is.
var (
	ErrBadEmail       = errors.New("not a valid email address")
	ErrFreeMail       = errors.New("free-mail addresses cannot have accounts")
	ErrWrongDomain    = errors.New("email address is not on an allowed domain")
	ErrWeakPassword   = errors.New("password too weak")
	ErrBadCredentials = errors.New("wrong email or password")
	ErrLockedOut      = errors.New("too many failed logins")
	ErrUserExists     = errors.New("an account with this email already exists")
	ErrNoSuchUser     = errors.New("no such account")
	ErrSetupDone      = errors.New("setup is already done")
	ErrSetupNeeded    = errors.New("setup is not done yet: create the first admin")
	ErrInviteInvalid  = errors.New("this invitation is unknown, expired or already used")
	ErrLastAdmin      = errors.New("the last enabled admin cannot be demoted or disabled")
	ErrSessionInvalid = errors.New("session unknown or expired")
	ErrBadRole        = errors.New("unknown role")
)

// LockedOutError says that logins are refused until Until. It unwraps to
// ErrLockedOut.
type LockedOutError struct {
	Until time.Time
}

func (e *LockedOutError) Error() string {
	return fmt.Sprintf("too many failed logins: try again after %s", e.Until.Format("15:04 MST on 2 Jan"))
}

func (e *LockedOutError) Unwrap() error { return ErrLockedOut }

// policyError is a rule violation with a message for a person, which
// unwraps to one of the sentinels.
type policyError struct {
	kind error
	msg  string
}

func (e *policyError) Error() string { return e.msg }
func (e *policyError) Unwrap() error { return e.kind }

func policyErr(kind error, format string, args ...any) error {
	return &policyError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

var (
	bucketMeta     = []byte("meta")
	bucketUsers    = []byte("users")    // email → userRecord
	bucketSessions = []byte("sessions") // sha256(id) → sessionRecord
	bucketInvites  = []byte("invites")  // sha256(token) → inviteRecord
	bucketFailures = []byte("failures") // "email:…" or "ip:…" → failureRecord
	bucketAudit    = []byte("audit")    // big-endian seq → AuditEntry
	keySchema      = []byte("schema")
	keyDomains     = []byte("domains")
)

const schemaVersion = 1

// DB is an open accounts file. It is safe for concurrent use.
type DB struct {
	bolt *bolt.DB
	path string
	opts Options

	// hashMu lets one argon2 computation run at a time: each takes
	// Argon.MemoryKiB, and a Pi has little to spare. Login also holds it from
	// its lockout check to recording the outcome, so concurrent guesses are
	// counted exactly.
	hashMu sync.Mutex
	dummy  func() phc // a hash to verify against when the user is unknown

	closeOnce sync.Once
	closeErr  error
}

// Open opens or creates the accounts file at path (mode 0600). A file that
// another process holds is reported after a second; a file that is not a
// valid accounts file is reported and left untouched.
func Open(path string, opts Options) (*DB, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open accounts %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open accounts %s: %w", path, err)
	}
	if err := create(path); err != nil {
		return nil, err
	}
	// The file holds password hashes: whatever made it readable to others,
	// it is not meant to be.
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("open accounts %s: %w", path, err)
		}
	}
	bdb, err := bolt.Open(path, 0o600, boltOptions())
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("open accounts %s: locked by another process", path)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
			return nil, fmt.Errorf("open accounts %s: the file is damaged or not a Pulsegate accounts file (left untouched): %w", path, err)
		}
		return nil, fmt.Errorf("open accounts %s: %w", path, err)
	}
	d := &DB{bolt: bdb, path: path, opts: opts}
	d.dummy = sync.OnceValue(func() phc {
		// The password is random and forgotten: nothing can match it.
		return newPHC(randomBytes(32), opts.Argon)
	})
	if err := initBuckets(bdb); err != nil {
		bdb.Close()
		return nil, fmt.Errorf("open accounts %s: %w", path, err)
	}
	return d, nil
}

func (o Options) withDefaults() (Options, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Argon == (ArgonParams{}) {
		o.Argon = DefaultArgon
	}
	if err := o.Argon.check(); err != nil {
		return o, err
	}
	if o.SessionTTL == 0 {
		o.SessionTTL = 12 * time.Hour
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = time.Hour
	}
	if o.MaxFailures == 0 {
		o.MaxFailures = 5
	}
	if o.Lockout == 0 {
		o.Lockout = 15 * time.Minute
	}
	if o.SessionTTL < 0 || o.IdleTimeout < 0 || o.MaxFailures < 0 || o.Lockout < 0 {
		return o, errors.New("negative session or lockout option")
	}
	return o, nil
}

func boltOptions() *bolt.Options {
	return &bolt.Options{
		Timeout:        time.Second,
		NoFreelistSync: true, // less to write per commit (SD card); rebuilt on open
		FreelistType:   bolt.FreelistMapType,
	}
}

// create makes an empty accounts file at path if nothing is there, under a
// temporary name first and linked into place only once complete: bbolt
// writes a new file's first pages in place, and a disk that fills part-way
// through would leave a file that bbolt cannot read (gateway/store has the
// full story and a test).
func create(path string) error {
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		return nil // there is a file (or we cannot tell): bolt.Open judges it
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".new-*")
	if err != nil {
		return fmt.Errorf("create accounts %s: %w", path, err)
	}
	tmp := f.Name()
	f.Close()
	defer os.Remove(tmp)
	bdb, err := bolt.Open(tmp, 0o600, boltOptions())
	if err != nil {
		return fmt.Errorf("create accounts %s: %w", path, err)
	}
	err = initBuckets(bdb)
	if cerr := bdb.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create accounts %s: %w", path, err)
	}
	// Link, unlike rename, never replaces a file another process created
	// meanwhile; rename is the fallback where hard links are not supported.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("create accounts %s: %w", path, err)
		}
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("create accounts %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("create accounts %s: sync directory: %w", path, err)
	}
	return nil
}

func initBuckets(bdb *bolt.DB) error {
	return bdb.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketUsers, bucketSessions, bucketInvites, bucketFailures, bucketAudit} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil {
			if len(v) != 4 || binary.BigEndian.Uint32(v) != schemaVersion {
				return fmt.Errorf("unknown schema %x (this build reads version %d)", v, schemaVersion)
			}
			return nil
		}
		return meta.Put(keySchema, binary.BigEndian.AppendUint32(nil, schemaVersion))
	})
}

// Close closes the file. Safe to call twice.
func (d *DB) Close() error {
	d.closeOnce.Do(func() {
		if err := d.bolt.Close(); err != nil {
			d.closeErr = fmt.Errorf("close accounts: %w", err)
		}
	})
	return d.closeErr
}

// now is the clock in UTC, without a monotonic reading, so that times
// compare the same before and after a trip through the file.
func (d *DB) now() time.Time { return d.opts.Now().UTC() }

// randomBytes returns n bytes from crypto/rand, which never fails.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// newSecret returns a bearer secret (a session ID or an invitation token)
// and the key under which the file stores it.
func newSecret() (secret string, key []byte) {
	secret = base64.RawURLEncoding.EncodeToString(randomBytes(32))
	return secret, secretKey(secret)
}

// secretKey is the file's key for a session ID or token: its SHA-256, so
// that a copy of the file does not let anyone log in or accept an invite.
func secretKey(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// maxSecretLen bounds a presented session ID or token before any work; a
// real one is 43 characters.
const maxSecretLen = 128

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("read record %q: damaged: %w", key, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

// deleteWhere deletes the records of b for which match says so.
func deleteWhere[T any](b *bolt.Bucket, match func(k []byte, rec *T) bool) (int, error) {
	var keys [][]byte
	err := b.ForEach(func(k, v []byte) error {
		var rec T
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("read record %q: damaged: %w", k, err)
		}
		if match(k, &rec) {
			keys = append(keys, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}
