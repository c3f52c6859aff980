package accounts

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// sessionRecord is a session as stored, under the SHA-256 of its ID.
type sessionRecord struct {
	Email    string    `json:"email"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used"` // updated at most every touchEvery
	Expires  time.Time `json:"expires"`   // absolute
}

// touchEvery spares the SD card: a busy dashboard polls every few seconds,
// and recording each use would be a write each time. The price is that an
// idle session can end up to this much early.
const touchEvery = time.Minute

func (s sessionRecord) live(now time.Time, idle time.Duration) bool {
	return now.Before(s.Expires) && now.Sub(s.LastUsed) < idle
}

// failureRecord counts failed logins for one email or one remote address.
type failureRecord struct {
	Count       int       `json:"count"` // failures in the window starting at WindowStart
	WindowStart time.Time `json:"window_start"`
	Level       int       `json:"level"` // lockouts so far: the next one lasts Lockout·2^Level
	LockedUntil time.Time `json:"locked_until"`
	Last        time.Time `json:"last"` // the latest failure
}

const (
	// failureWindow is how close together MaxFailures failures must be to
	// lock the email or address out.
	failureWindow = 15 * time.Minute
	// maxLockout caps the doubling of lockouts.
	maxLockout = 24 * time.Hour
	// forgetFailuresAfter: a record with no failure and no lockout for this
	// long is forgotten, lockout level included.
	forgetFailuresAfter = 24 * time.Hour
)

// stale reports whether r may be forgotten: no failure and no lockout in
// force for forgetFailuresAfter.
func (r failureRecord) stale(now time.Time) bool {
	return now.Sub(r.Last) >= forgetFailuresAfter && now.Sub(r.LockedUntil) >= forgetFailuresAfter
}

// resetCount forgets the failures counted against key but not its lockout
// level: an account that an attacker keeps locking out gets longer lockouts
// even if its owner logs in between.
func resetCount(tx *bolt.Tx, key []byte) error {
	b := tx.Bucket(bucketFailures)
	var r failureRecord
	ok, err := getJSON(b, key, &r)
	if err != nil || !ok {
		return err
	}
	if r.Level == 0 {
		return b.Delete(key)
	}
	r.Count, r.WindowStart = 0, time.Time{}
	return putJSON(b, key, r)
}

func emailKey(email string) []byte { return []byte("email:" + email) }

// remoteAddr cleans a remote address for the audit log and returns the key
// its failures are counted under. A port is dropped (callers may pass
// http.Request.RemoteAddr), and IPv6 addresses count per /64, since a
// client picks new addresses inside its /64 at will.
func remoteAddr(remote string) (shown string, key []byte) {
	s := strings.TrimSpace(remote)
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	if len(s) > 64 {
		s = s[:64]
	}
	if s == "" {
		return "unknown address", nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return s, []byte("ip:" + s)
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return a.String(), []byte("ip:" + p.String())
	}
	return a.String(), []byte("ip:" + a.String())
}

// lockedUntil returns when the latest lockout among keys ends, or the zero
// time if none is in force.
func lockedUntil(tx *bolt.Tx, now time.Time, keys [][]byte) (time.Time, error) {
	var until time.Time
	b := tx.Bucket(bucketFailures)
	for _, k := range keys {
		var r failureRecord
		if _, err := getJSON(b, k, &r); err != nil {
			return time.Time{}, err
		}
		if now.Before(r.LockedUntil) && r.LockedUntil.After(until) {
			until = r.LockedUntil
		}
	}
	return until, nil
}

// recordFailure counts a failure against key and returns the end of the
// lockout it starts, if it starts one.
func (d *DB) recordFailure(tx *bolt.Tx, now time.Time, key []byte) (time.Time, error) {
	b := tx.Bucket(bucketFailures)
	var r failureRecord
	if _, err := getJSON(b, key, &r); err != nil {
		return time.Time{}, err
	}
	if r.stale(now) {
		r = failureRecord{}
	}
	if r.Count == 0 || now.Sub(r.WindowStart) >= failureWindow {
		r.Count, r.WindowStart = 0, now
	}
	r.Count++
	r.Last = now
	var until time.Time
	if r.Count >= d.opts.MaxFailures {
		until = now.Add(d.lockoutFor(r.Level))
		r.Level++
		r.Count, r.WindowStart, r.LockedUntil = 0, time.Time{}, until
	}
	return until, putJSON(b, key, r)
}

// lockoutFor is the length of lockout number level+1: Lockout doubled level
// times, at most 24h (or Lockout, if that is longer).
func (d *DB) lockoutFor(level int) time.Duration {
	limit := max(maxLockout, d.opts.Lockout)
	l := d.opts.Lockout
	for range level {
		if l >= limit/2 {
			return limit
		}
		l *= 2
	}
	return l
}

// Login checks email and password and starts a session.
//
// Failures are counted per email and per remote address, in the file so
// that a restart forgets nothing. MaxFailures failures within 15 minutes
// lock that email (or address) out for Lockout, twice as long for each
// further lockout up to 24h (the doubling is forgotten after a day without
// failures or lockout); while locked out Login returns a
// *LockedOutError even for the right password, and such refused attempts
// are neither counted nor audited (an attacker could otherwise turn them
// into unbounded writes). A successful login resets the email's count (not
// its lockout level) but not the address's, so one valid account cannot be
// used to keep guessing others'.
//
// An unknown email costs the same argon2 work as a known one, and a
// disabled account gets ErrBadCredentials like a wrong password. Before
// setup Login returns ErrSetupNeeded.
func (d *DB) Login(email, password, remoteIP string) (Session, error) {
	e, emailErr := NormalizeEmail(email)
	shownAddr, addrKey := remoteAddr(remoteIP)
	var keys [][]byte
	if emailErr == nil {
		keys = append(keys, emailKey(e))
	}
	if addrKey != nil {
		keys = append(keys, addrKey)
	}

	// Refuse a locked-out attempt at once, without queueing for the hash.
	if until, err := d.viewLockedUntil(keys); err != nil {
		return Session{}, err
	} else if !until.IsZero() {
		return Session{}, &LockedOutError{Until: until}
	}

	d.hashMu.Lock()
	defer d.hashMu.Unlock()

	var (
		rec     userRecord
		found   bool
		setup   bool
		lockEnd time.Time
	)
	err := d.bolt.View(func(tx *bolt.Tx) error {
		setup = hasUsers(tx)
		var err error
		if lockEnd, err = lockedUntil(tx, d.now(), keys); err != nil {
			return err
		}
		if emailErr == nil {
			rec, found, err = getUser(tx, e)
		}
		return err
	})
	if err != nil {
		return Session{}, fmt.Errorf("login: %w", err)
	}
	if !setup {
		return Session{}, ErrSetupNeeded
	}
	if !lockEnd.IsZero() {
		return Session{}, &LockedOutError{Until: lockEnd}
	}

	var (
		stored phc
		ok     bool
		reason string
	)
	if found {
		if stored, err = parsePHC(rec.Hash); err != nil {
			return Session{}, fmt.Errorf("login: password hash of %s: %w", e, err)
		}
		ok = stored.verify([]byte(password))
	} else {
		d.dummy().verify([]byte(password))
	}
	switch {
	case emailErr != nil:
		reason = "not an email address"
	case !found:
		reason = "unknown account"
	case !ok:
		reason = "wrong password"
	case rec.Disabled:
		reason = "account disabled"
	}
	if reason != "" {
		return Session{}, d.loginFailed(e, shownAddr, reason, keys)
	}

	// Upgrade a hash made with older parameters while we hold the password.
	var rehash string
	if stored.params != d.opts.Argon {
		rehash = newPHC([]byte(password), d.opts.Argon).String()
	}
	id, key := newSecret()
	var s Session
	err = d.bolt.Update(func(tx *bolt.Tx) error {
		// SetDisabled does not wait for hashMu: look again.
		cur, ok, err := getUser(tx, e)
		if err != nil {
			return err
		}
		if !ok || cur.Disabled {
			return ErrBadCredentials
		}
		if rehash != "" && cur.Hash == rec.Hash {
			cur.Hash = rehash
			if err := putJSON(tx.Bucket(bucketUsers), []byte(e), cur); err != nil {
				return err
			}
		}
		if err := resetCount(tx, emailKey(e)); err != nil {
			return err
		}
		now := d.now()
		sr := sessionRecord{Email: e, Created: now, LastUsed: now, Expires: now.Add(d.opts.SessionTTL)}
		if err := putJSON(tx.Bucket(bucketSessions), key, sr); err != nil {
			return err
		}
		s = Session{ID: id, Email: e, Role: cur.Role, Expires: sr.Expires}
		return d.audit(tx, e, "login", shownAddr)
	})
	if err != nil {
		return Session{}, wrapInternal("login", err)
	}
	return s, nil
}

func (d *DB) viewLockedUntil(keys [][]byte) (time.Time, error) {
	var until time.Time
	err := d.bolt.View(func(tx *bolt.Tx) error {
		var err error
		until, err = lockedUntil(tx, d.now(), keys)
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("login: %w", err)
	}
	return until, nil
}

// loginFailed counts and audits a failed login, and returns the error for
// the caller: a *LockedOutError if this failure started a lockout.
func (d *DB) loginFailed(email, shownAddr, reason string, keys [][]byte) error {
	actor := email
	if actor == "" {
		// Whatever was typed is not an address, and may be a password.
		actor = "unknown"
	}
	var lock time.Time
	err := d.bolt.Update(func(tx *bolt.Tx) error {
		now := d.now()
		for _, k := range keys {
			until, err := d.recordFailure(tx, now, k)
			if err != nil {
				return err
			}
			if until.After(lock) {
				lock = until
			}
		}
		detail := shownAddr + " (" + reason + ")"
		if !lock.IsZero() {
			detail = shownAddr + " (" + reason + "; locked out until " + lock.Format(time.RFC3339) + ")"
		}
		return d.audit(tx, actor, "login-failed", detail)
	})
	if err != nil {
		return fmt.Errorf("login: record failure: %w", err)
	}
	if !lock.IsZero() {
		return &LockedOutError{Until: lock}
	}
	return ErrBadCredentials
}

// Session returns the session whose ID is id and its user. It returns
// ErrSessionInvalid if the session is unknown, past its absolute end,
// unused for IdleTimeout, or if its user is disabled or gone. It records
// the use, at most once a minute.
func (d *DB) Session(id string) (Session, User, error) {
	if id == "" || len(id) > maxSecretLen {
		return Session{}, User{}, ErrSessionInvalid
	}
	key := secretKey(id)
	var (
		sr sessionRecord
		u  userRecord
	)
	valid := func(tx *bolt.Tx, now time.Time) error {
		ok, err := getJSON(tx.Bucket(bucketSessions), key, &sr)
		if err != nil {
			return err
		}
		if !ok || !sr.live(now, d.opts.IdleTimeout) {
			return ErrSessionInvalid
		}
		u, ok, err = getUser(tx, sr.Email)
		if err != nil {
			return err
		}
		if !ok || u.Disabled {
			return ErrSessionInvalid
		}
		return nil
	}
	now := d.now()
	err := d.bolt.View(func(tx *bolt.Tx) error { return valid(tx, now) })
	if err == nil && now.Sub(sr.LastUsed) >= touchEvery {
		err = d.bolt.Update(func(tx *bolt.Tx) error {
			if err := valid(tx, now); err != nil {
				return err
			}
			sr.LastUsed = now
			return putJSON(tx.Bucket(bucketSessions), key, sr)
		})
	}
	if err != nil {
		return Session{}, User{}, wrapInternal("read session", err)
	}
	return Session{ID: id, Email: sr.Email, Role: u.Role, Expires: sr.Expires}, u.User, nil
}

// Logout ends the session whose ID is id. An unknown session is not an
// error: the browser is logged out either way.
func (d *DB) Logout(id string) error {
	if id == "" || len(id) > maxSecretLen {
		return nil
	}
	key := secretKey(id)
	err := d.bolt.Update(func(tx *bolt.Tx) error {
		var sr sessionRecord
		b := tx.Bucket(bucketSessions)
		ok, err := getJSON(b, key, &sr)
		if err != nil || !ok {
			return err
		}
		if err := b.Delete(key); err != nil {
			return err
		}
		return d.audit(tx, sr.Email, "logout", "")
	})
	return wrapInternal("logout", err)
}

// ChangePassword sets a new password for email after checking the old one,
// and ends all of the account's sessions: the caller logs the user in
// again. A wrong old password counts as a failed login for the email (a
// stolen session must not become a way to guess the password), so it can
// lock the email out.
func (d *DB) ChangePassword(email, oldPassword, newPassword string) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return ErrBadCredentials
	}
	if err := checkPassword(e, newPassword); err != nil {
		return err
	}
	keys := [][]byte{emailKey(e)}

	d.hashMu.Lock()
	defer d.hashMu.Unlock()

	var (
		rec     userRecord
		found   bool
		lockEnd time.Time
	)
	err = d.bolt.View(func(tx *bolt.Tx) error {
		var err error
		if lockEnd, err = lockedUntil(tx, d.now(), keys); err != nil {
			return err
		}
		rec, found, err = getUser(tx, e)
		return err
	})
	if err != nil {
		return fmt.Errorf("change password: %w", err)
	}
	if !lockEnd.IsZero() {
		return &LockedOutError{Until: lockEnd}
	}
	ok := false
	if found {
		stored, err := parsePHC(rec.Hash)
		if err != nil {
			return fmt.Errorf("change password: password hash of %s: %w", e, err)
		}
		ok = stored.verify([]byte(oldPassword))
	} else {
		d.dummy().verify([]byte(oldPassword))
	}
	if !ok || rec.Disabled {
		var lock time.Time
		err := d.bolt.Update(func(tx *bolt.Tx) error {
			var err error
			if lock, err = d.recordFailure(tx, d.now(), keys[0]); err != nil {
				return err
			}
			return d.audit(tx, e, "password-change-failed", "wrong old password")
		})
		switch {
		case err != nil:
			return fmt.Errorf("change password: record failure: %w", err)
		case !lock.IsZero():
			return &LockedOutError{Until: lock}
		}
		return ErrBadCredentials
	}

	hash := newPHC([]byte(newPassword), d.opts.Argon).String()
	err = d.bolt.Update(func(tx *bolt.Tx) error {
		cur, ok, err := getUser(tx, e)
		if err != nil {
			return err
		}
		if !ok || cur.Disabled {
			return ErrBadCredentials
		}
		cur.Hash = hash
		if err := putJSON(tx.Bucket(bucketUsers), []byte(e), cur); err != nil {
			return err
		}
		n, err := endSessions(tx, e)
		if err != nil {
			return err
		}
		return d.audit(tx, e, "password-changed", fmt.Sprintf("%d sessions ended", n))
	})
	return wrapInternal("change password", err)
}

// PruneSessions deletes expired sessions and sessions of disabled or
// removed accounts, failure counters that are stale (no failure for 24h and
// no lockout in force) and invitations that can no longer be accepted. It
// returns how many records it deleted. It is idempotent: run it
// periodically.
func (d *DB) PruneSessions() (int, error) {
	total := 0
	err := d.bolt.Update(func(tx *bolt.Tx) error {
		now := d.now()
		usable := func(email string) bool {
			u, ok, err := getUser(tx, email)
			return err == nil && ok && !u.Disabled
		}
		n, err := deleteWhere(tx.Bucket(bucketSessions), func(_ []byte, s *sessionRecord) bool {
			return !s.live(now, d.opts.IdleTimeout) || !usable(s.Email)
		})
		if err != nil {
			return err
		}
		total += n
		n, err = deleteWhere(tx.Bucket(bucketFailures), func(_ []byte, r *failureRecord) bool { return r.stale(now) })
		if err != nil {
			return err
		}
		total += n
		n, err = deleteWhere(tx.Bucket(bucketInvites), func(_ []byte, inv *inviteRecord) bool {
			_, exists, err := getUser(tx, inv.Email)
			return !now.Before(inv.Expires) || (err == nil && exists)
		})
		total += n
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune sessions: %w", err)
	}
	return total, nil
}
