package accounts

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// userRecord is a user as stored: the User and its password hash.
type userRecord struct {
	User
	Hash string `json:"hash"` // PHC string
}

// inviteRecord is a pending invitation, stored under the SHA-256 of its
// token.
type inviteRecord struct {
	Email   string    `json:"email"`
	Role    Role      `json:"role"`
	By      string    `json:"by"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

// Invitation lifetimes.
const (
	defaultInviteTTL = 72 * time.Hour
	maxInviteTTL     = 30 * 24 * time.Hour
)

// hashPassword makes a new hash of pw with the configured parameters.
func (d *DB) hashPassword(pw string) string {
	d.hashMu.Lock()
	defer d.hashMu.Unlock()
	return newPHC([]byte(pw), d.opts.Argon).String()
}

func hasUsers(tx *bolt.Tx) bool {
	k, _ := tx.Bucket(bucketUsers).Cursor().First()
	return k != nil
}

func readDomains(tx *bolt.Tx) ([]string, error) {
	raw := tx.Bucket(bucketMeta).Get(keyDomains)
	if raw == nil {
		return nil, nil
	}
	var doms []string
	if err := json.Unmarshal(raw, &doms); err != nil {
		return nil, fmt.Errorf("read email domains: damaged: %w", err)
	}
	return doms, nil
}

func getUser(tx *bolt.Tx, email string) (userRecord, bool, error) {
	var u userRecord
	ok, err := getJSON(tx.Bucket(bucketUsers), []byte(email), &u)
	return u, ok, err
}

// enabledAdmins counts the users who can still administer the appliance.
func enabledAdmins(tx *bolt.Tx) (int, error) {
	n := 0
	err := tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
		var u userRecord
		if err := json.Unmarshal(v, &u); err != nil {
			return fmt.Errorf("read user %q: damaged: %w", k, err)
		}
		if u.Role == RoleAdmin && !u.Disabled {
			n++
		}
		return nil
	})
	return n, err
}

// endSessions deletes every session of email.
func endSessions(tx *bolt.Tx, email string) (int, error) {
	return deleteWhere(tx.Bucket(bucketSessions), func(_ []byte, s *sessionRecord) bool { return s.Email == email })
}

// SetupDone reports whether the first admin exists.
func (d *DB) SetupDone() bool {
	done := false
	d.bolt.View(func(tx *bolt.Tx) error {
		done = hasUsers(tx)
		return nil
	})
	return done
}

// CreateFirstAdmin creates the first account, an admin, and stores the
// customer's email domains, which email must be on. Once any account
// exists it returns ErrSetupDone.
func (d *DB) CreateFirstAdmin(email, password string, domains []string) (User, error) {
	if d.SetupDone() {
		return User{}, ErrSetupDone
	}
	doms, err := NormalizeDomains(domains)
	if err != nil {
		return User{}, err
	}
	e, err := NormalizeEmail(email)
	if err != nil {
		return User{}, err
	}
	if err := CheckEmail(e, doms); err != nil {
		return User{}, err
	}
	if err := checkPassword(e, password); err != nil {
		return User{}, err
	}
	rec := userRecord{User: User{Email: e, Role: RoleAdmin}, Hash: d.hashPassword(password)}
	err = d.bolt.Update(func(tx *bolt.Tx) error {
		if hasUsers(tx) {
			return ErrSetupDone
		}
		rec.Created = d.now()
		raw, err := json.Marshal(doms)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketMeta).Put(keyDomains, raw); err != nil {
			return err
		}
		if err := putJSON(tx.Bucket(bucketUsers), []byte(e), rec); err != nil {
			return err
		}
		return d.audit(tx, e, "setup", "first admin created; email domains: "+strings.Join(doms, ", "))
	})
	if err != nil {
		if err == ErrSetupDone {
			return User{}, err
		}
		return User{}, fmt.Errorf("create first admin: %w", err)
	}
	return rec.User, nil
}

// Domains returns the customer's email domains, sorted; nil before setup.
func (d *DB) Domains() []string {
	var doms []string
	d.bolt.View(func(tx *bolt.Tx) error {
		doms, _ = readDomains(tx)
		return nil
	})
	return doms
}

// SetDomains replaces the customer's email domains. It refuses (with
// ErrWrongDomain) a change that would leave an enabled account outside
// them: disable such accounts first.
func (d *DB) SetDomains(actor string, domains []string) error {
	doms, err := NormalizeDomains(domains)
	if err != nil {
		return err
	}
	err = d.bolt.Update(func(tx *bolt.Tx) error {
		if !hasUsers(tx) {
			return ErrSetupNeeded
		}
		old, err := readDomains(tx)
		if err != nil {
			return err
		}
		if slices.Equal(old, doms) {
			return nil
		}
		var outside []string
		err = tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var u userRecord
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("read user %q: damaged: %w", k, err)
			}
			if !u.Disabled && CheckEmail(u.Email, doms) != nil {
				outside = append(outside, u.Email)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(outside) > 0 {
			return policyErr(ErrWrongDomain, "these enabled accounts are not on %s: %s; disable them first", orList(doms), strings.Join(outside, ", "))
		}
		raw, err := json.Marshal(doms)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketMeta).Put(keyDomains, raw); err != nil {
			return err
		}
		return d.audit(tx, actor, "settings", fmt.Sprintf("email domains changed from %s to %s", strings.Join(old, ", "), strings.Join(doms, ", ")))
	})
	return wrapInternal("set email domains", err)
}

// wrapInternal adds context to storage errors and leaves the package's own
// errors as they are: their messages are meant for people.
func wrapInternal(what string, err error) error {
	switch err.(type) {
	case nil:
		return nil
	case *policyError, *LockedOutError:
		return err
	}
	for _, s := range []error{ErrSetupDone, ErrSetupNeeded, ErrUserExists, ErrNoSuchUser, ErrInviteInvalid,
		ErrLastAdmin, ErrBadCredentials, ErrSessionInvalid, ErrBadRole} {
		if err == s {
			return err
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Users returns every account, sorted by email.
func (d *DB) Users() ([]User, error) {
	var users []User
	err := d.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var u userRecord
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("read user %q: damaged: %w", k, err)
			}
			users = append(users, u.User)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return users, nil
}

// User returns the account of email, or ErrNoSuchUser.
func (d *DB) User(email string) (User, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return User{}, ErrNoSuchUser
	}
	var u userRecord
	var ok bool
	err = d.bolt.View(func(tx *bolt.Tx) error {
		u, ok, err = getUser(tx, e)
		return err
	})
	if err != nil {
		return User{}, fmt.Errorf("read user: %w", err)
	}
	if !ok {
		return User{}, ErrNoSuchUser
	}
	return u.User, nil
}

// Invite lets email create an account with role: it returns the token to
// send them, valid for ttl (0 → 72h, at most 30 days). The email must pass
// CheckEmail against Domains and have no account yet (ErrUserExists). A new
// invitation replaces any pending one for the same email. The file keeps
// only the token's hash, and the audit log never sees it.
func (d *DB) Invite(actor, email string, role Role, ttl time.Duration) (string, error) {
	if !role.valid() {
		return "", fmt.Errorf("%w %q", ErrBadRole, role)
	}
	if ttl <= 0 {
		ttl = defaultInviteTTL
	}
	if ttl > maxInviteTTL {
		return "", fmt.Errorf("invite: an invitation lasts at most %d days", maxInviteTTL/(24*time.Hour))
	}
	e, err := NormalizeEmail(email)
	if err != nil {
		return "", err
	}
	token, key := newSecret()
	err = d.bolt.Update(func(tx *bolt.Tx) error {
		if !hasUsers(tx) {
			return ErrSetupNeeded
		}
		doms, err := readDomains(tx)
		if err != nil {
			return err
		}
		if err := CheckEmail(e, doms); err != nil {
			return err
		}
		if _, ok, err := getUser(tx, e); err != nil {
			return err
		} else if ok {
			return ErrUserExists
		}
		invites := tx.Bucket(bucketInvites)
		if _, err := deleteWhere(invites, func(_ []byte, inv *inviteRecord) bool { return inv.Email == e }); err != nil {
			return err
		}
		now := d.now()
		inv := inviteRecord{Email: e, Role: role, By: actor, Created: now, Expires: now.Add(ttl)}
		if err := putJSON(invites, key, inv); err != nil {
			return err
		}
		return d.audit(tx, actor, "invite", fmt.Sprintf("%s invited as %s, valid until %s", e, role, inv.Expires.Format(time.RFC3339)))
	})
	if err != nil {
		return "", wrapInternal("invite", err)
	}
	return token, nil
}

// pendingInvite returns the invitation of token if it can still be
// accepted.
func (d *DB) pendingInvite(tx *bolt.Tx, token string) (inviteRecord, error) {
	var inv inviteRecord
	if token == "" || len(token) > maxSecretLen {
		return inv, ErrInviteInvalid
	}
	ok, err := getJSON(tx.Bucket(bucketInvites), secretKey(token), &inv)
	if err != nil {
		return inv, err
	}
	if !ok || !d.now().Before(inv.Expires) {
		return inv, ErrInviteInvalid
	}
	if _, exists, err := getUser(tx, inv.Email); err != nil {
		return inv, err
	} else if exists {
		return inv, ErrInviteInvalid
	}
	return inv, nil
}

// InviteInfo returns whom token invites, or ErrInviteInvalid if it is
// unknown, expired or used.
func (d *DB) InviteInfo(token string) (string, Role, error) {
	var inv inviteRecord
	err := d.bolt.View(func(tx *bolt.Tx) error {
		var err error
		inv, err = d.pendingInvite(tx, token)
		return err
	})
	if err != nil {
		return "", "", wrapInternal("read invite", err)
	}
	return inv.Email, inv.Role, nil
}

// AcceptInvite creates the invited account with password and spends the
// invitation. The email must still be on the customer's domains.
func (d *DB) AcceptInvite(token, password string) (User, error) {
	email, _, err := d.InviteInfo(token)
	if err != nil {
		return User{}, err
	}
	if err := checkPassword(email, password); err != nil {
		return User{}, err
	}
	hash := d.hashPassword(password)
	var rec userRecord
	err = d.bolt.Update(func(tx *bolt.Tx) error {
		// Checked again: another request may have spent it while we hashed.
		inv, err := d.pendingInvite(tx, token)
		if err != nil {
			return err
		}
		doms, err := readDomains(tx)
		if err != nil {
			return err
		}
		if err := CheckEmail(inv.Email, doms); err != nil {
			return err
		}
		rec = userRecord{User: User{Email: inv.Email, Role: inv.Role, Created: d.now()}, Hash: hash}
		if err := putJSON(tx.Bucket(bucketUsers), []byte(inv.Email), rec); err != nil {
			return err
		}
		if err := tx.Bucket(bucketInvites).Delete(secretKey(token)); err != nil {
			return err
		}
		return d.audit(tx, inv.Email, "account-created", fmt.Sprintf("role %s, invited by %s", inv.Role, inv.By))
	})
	if err != nil {
		return User{}, wrapInternal("accept invite", err)
	}
	return rec.User, nil
}

// SetRole changes the role of email's account. It returns ErrLastAdmin
// rather than leave no enabled admin.
func (d *DB) SetRole(actor, email string, role Role) error {
	if !role.valid() {
		return fmt.Errorf("%w %q", ErrBadRole, role)
	}
	e, err := NormalizeEmail(email)
	if err != nil {
		return ErrNoSuchUser
	}
	err = d.bolt.Update(func(tx *bolt.Tx) error {
		u, ok, err := getUser(tx, e)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNoSuchUser
		}
		if u.Role == role {
			return nil
		}
		if u.Role == RoleAdmin && !u.Disabled {
			if n, err := enabledAdmins(tx); err != nil {
				return err
			} else if n <= 1 {
				return ErrLastAdmin
			}
		}
		old := u.Role
		u.Role = role
		if err := putJSON(tx.Bucket(bucketUsers), []byte(e), u); err != nil {
			return err
		}
		return d.audit(tx, actor, "set-role", fmt.Sprintf("%s: %s → %s", e, old, role))
	})
	return wrapInternal("set role", err)
}

// SetDisabled disables or re-enables email's account. Disabling ends the
// account's sessions; it returns ErrLastAdmin rather than leave no enabled
// admin. Re-enabling requires the email to be on the customer's domains.
func (d *DB) SetDisabled(actor, email string, disabled bool) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return ErrNoSuchUser
	}
	err = d.bolt.Update(func(tx *bolt.Tx) error {
		u, ok, err := getUser(tx, e)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNoSuchUser
		}
		if disabled {
			if u.Role == RoleAdmin && !u.Disabled {
				if n, err := enabledAdmins(tx); err != nil {
					return err
				} else if n <= 1 {
					return ErrLastAdmin
				}
			}
			if _, err := endSessions(tx, e); err != nil {
				return err
			}
		} else {
			doms, err := readDomains(tx)
			if err != nil {
				return err
			}
			if err := CheckEmail(e, doms); err != nil {
				return err
			}
		}
		if u.Disabled == disabled {
			return nil
		}
		u.Disabled = disabled
		if err := putJSON(tx.Bucket(bucketUsers), []byte(e), u); err != nil {
			return err
		}
		action := "enable"
		if disabled {
			action = "disable"
		}
		return d.audit(tx, actor, action, e)
	})
	return wrapInternal("set disabled", err)
}
