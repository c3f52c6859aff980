package accounts

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Password policy.
const (
	minPasswordChars = 12
	maxPasswordBytes = 256
)

// checkPassword applies the password policy for an account with the given
// (normalized) email.
func checkPassword(email, pw string) error {
	if utf8.RuneCountInString(pw) < minPasswordChars {
		return policyErr(ErrWeakPassword, "password too short: use at least %d characters (a few unrelated words are long and easy to remember)", minPasswordChars)
	}
	if len(pw) > maxPasswordBytes {
		return policyErr(ErrWeakPassword, "password too long: use at most %d bytes", maxPasswordBytes)
	}
	if strings.EqualFold(strings.TrimSpace(pw), email) {
		return policyErr(ErrWeakPassword, "the password cannot be your email address")
	}
	first, _ := utf8.DecodeRuneInString(pw)
	if strings.Trim(pw, string(first)) == "" {
		return policyErr(ErrWeakPassword, "the password cannot be one character repeated")
	}
	return nil
}

// Bounds on argon2id parameters, both for new hashes (Options.Argon) and
// for hashes read from the file: a damaged or doctored file must not make a
// login allocate gigabytes or spin for minutes.
const (
	maxArgonMemoryKiB = 256 * 1024
	maxArgonTime      = 32
	maxArgonThreads   = 16
	minKeyLen         = 16
	maxKeyLen         = 64
	saltLen           = 16
	minSaltLen        = 8
	maxSaltLen        = 64
)

func (p ArgonParams) check() error {
	switch {
	case p.Time < 1 || p.Time > maxArgonTime:
		return fmt.Errorf("argon2 time %d out of range 1..%d", p.Time, maxArgonTime)
	case p.Threads < 1 || p.Threads > maxArgonThreads:
		return fmt.Errorf("argon2 threads %d out of range 1..%d", p.Threads, maxArgonThreads)
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxArgonMemoryKiB:
		return fmt.Errorf("argon2 memory %d KiB out of range %d..%d", p.MemoryKiB, 8*uint32(p.Threads), maxArgonMemoryKiB)
	case p.KeyLen < minKeyLen || p.KeyLen > maxKeyLen:
		return fmt.Errorf("argon2 key length %d out of range %d..%d", p.KeyLen, minKeyLen, maxKeyLen)
	}
	return nil
}

// phc is an argon2id password hash; its String is the PHC string format,
// "$argon2id$v=19$m=…,t=…,p=…$salt$hash", base64 without padding.
type phc struct {
	params     ArgonParams // KeyLen == len(hash)
	salt, hash []byte
}

func newPHC(password []byte, p ArgonParams) phc {
	salt := randomBytes(saltLen)
	return phc{params: p, salt: salt, hash: argon2.IDKey(password, salt, p.Time, p.MemoryKiB, p.Threads, p.KeyLen)}
}

func (h phc) String() string {
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version,
		h.params.MemoryKiB, h.params.Time, h.params.Threads, b64.EncodeToString(h.salt), b64.EncodeToString(h.hash))
}

// verify reports in constant time (given the parameters) whether password
// is the one hashed.
func (h phc) verify(password []byte) bool {
	got := argon2.IDKey(password, h.salt, h.params.Time, h.params.MemoryKiB, h.params.Threads, h.params.KeyLen)
	return subtle.ConstantTimeCompare(got, h.hash) == 1
}

var errBadPHC = errors.New("not an argon2id hash this build accepts")

// parsePHC parses a stored hash. It reads from disk, so it accepts only the
// canonical form String writes (so a hash reads back exactly as stored) and
// parameters within this package's bounds.
func parsePHC(s string) (phc, error) {
	var h phc
	// Go's base64 decoder skips CR and LF; the canonical form has none.
	if strings.ContainsAny(s, "\r\n") {
		return h, errBadPHC
	}
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return h, errBadPHC
	}
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return h, errBadPHC
	}
	var vals [3]uint64
	for i, name := range []string{"m=", "t=", "p="} {
		digits, ok := strings.CutPrefix(params[i], name)
		if !ok || digits == "" || len(digits) > 10 || (digits[0] == '0' && len(digits) > 1) {
			return h, errBadPHC
		}
		v, err := strconv.ParseUint(digits, 10, 32)
		if err != nil {
			return h, errBadPHC
		}
		vals[i] = v
	}
	if vals[2] > 255 {
		return h, errBadPHC
	}
	b64 := base64.RawStdEncoding.Strict()
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < minSaltLen || len(salt) > maxSaltLen {
		return h, errBadPHC
	}
	hash, err := b64.DecodeString(parts[5])
	if err != nil {
		return h, errBadPHC
	}
	h = phc{
		params: ArgonParams{MemoryKiB: uint32(vals[0]), Time: uint32(vals[1]), Threads: uint8(vals[2]), KeyLen: uint32(len(hash))},
		salt:   salt,
		hash:   hash,
	}
	if err := h.params.check(); err != nil {
		return phc{}, fmt.Errorf("%w: %v", errBadPHC, err)
	}
	return h, nil
}
