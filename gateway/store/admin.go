package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// Errors of the board admin state.
var (
	ErrBadBoardID   = errors.New("bad board id")
	ErrBadBoardName = errors.New("bad board name")
)

// MaxBoardName is the longest board name, in characters.
const MaxBoardName = 64

// BoardAdmin is what an admin decided about one board. The zero value (a
// board never seen, or seen by a store older than this record) is a board
// that is not approved: its presses are acknowledged but not counted.
type BoardAdmin struct {
	Approved bool `json:"approved,omitempty"`
	// Disabled boards are not counted even when approved.
	Disabled bool `json:"disabled,omitempty"`
	// Name is what people call the board ("Lobby, by the lifts"); empty
	// means unnamed. See ValidateBoardName.
	Name string `json:"name,omitempty"`
	// TestMode: presses are acknowledged and shown as having arrived
	// (never their colour), and not counted.
	TestMode   bool      `json:"test_mode,omitempty"`
	FirstSeen  time.Time `json:"first_seen,omitzero"`
	ApprovedAt time.Time `json:"approved_at,omitzero"`
}

// ValidateBoardName accepts 1 to MaxBoardName printable characters that are
// not all spaces.
func ValidateBoardName(name string) error {
	switch n := utf8.RuneCountInString(name); {
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: not valid UTF-8", ErrBadBoardName)
	case n == 0 || strings.TrimSpace(name) == "":
		return fmt.Errorf("%w: empty", ErrBadBoardName)
	case n > MaxBoardName:
		return fmt.Errorf("%w: %d characters, at most %d", ErrBadBoardName, n, MaxBoardName)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: %q is not printable", ErrBadBoardName, r)
		}
	}
	return nil
}

func validBoardID(board string) error {
	if board == "" || len(board) > 64 {
		return fmt.Errorf("%w %q: must be 1 to 64 bytes", ErrBadBoardID, board)
	}
	return nil
}

// SetBoardAdmin reads board's admin record (the zero value if it has none),
// lets fn change it, validates it and writes it back, all in one
// transaction. An error from fn aborts without writing. Readers that cache
// admin state watch AdminVersion.
func (s *Store) SetBoardAdmin(board string, fn func(*BoardAdmin) error) error {
	if err := validBoardID(board); err != nil {
		return fmt.Errorf("set board admin: %w", err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAdmin)
		a, _, err := getAdmin(b, board)
		if err != nil {
			return err
		}
		if err := fn(&a); err != nil {
			return err
		}
		if a.Name != "" {
			if err := ValidateBoardName(a.Name); err != nil {
				return err
			}
		}
		return putAdmin(b, board, a)
	})
	if err != nil {
		return fmt.Errorf("set board admin %q: %w", board, err)
	}
	s.adminVersion.Add(1)
	return nil
}

// BoardAdmins returns the admin record of every board that has one.
func (s *Store) BoardAdmins() (map[string]BoardAdmin, error) {
	out := map[string]BoardAdmin{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAdmin).ForEach(func(k, v []byte) error {
			a, err := decodeAdmin(v)
			if err != nil {
				return fmt.Errorf("board admin %q: %w", k, err)
			}
			out[string(k)] = a
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read board admins: %w", err)
	}
	return out, nil
}

// AdminVersion changes after every committed SetBoardAdmin in this process.
// A cache of BoardAdmins read after loading version v is current while
// AdminVersion still returns v.
func (s *Store) AdminVersion() uint64 { return s.adminVersion.Load() }

// markSeen gives each board without an admin record one with FirstSeen at
// now. Only the first sighting writes; approval is left to an admin.
func markSeen(b *bolt.Bucket, boards []string, now time.Time) error {
	for _, board := range boards {
		if b.Get([]byte(board)) != nil {
			continue
		}
		if err := putAdmin(b, board, BoardAdmin{FirstSeen: now.UTC()}); err != nil {
			return err
		}
	}
	return nil
}

func getAdmin(b *bolt.Bucket, board string) (BoardAdmin, bool, error) {
	v := b.Get([]byte(board))
	if v == nil {
		return BoardAdmin{}, false, nil
	}
	a, err := decodeAdmin(v)
	if err != nil {
		return BoardAdmin{}, false, fmt.Errorf("board admin %q: %w", board, err)
	}
	return a, true, nil
}

func putAdmin(b *bolt.Bucket, board string, a BoardAdmin) error {
	v, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode board admin %q: %w", board, err)
	}
	if err := b.Put([]byte(board), v); err != nil {
		return fmt.Errorf("save board admin %q: %w", board, err)
	}
	return nil
}

// decodeAdmin reads a record as JSON, which keeps records written by older
// and newer builds readable: unknown fields are ignored, missing ones zero.
func decodeAdmin(v []byte) (BoardAdmin, error) {
	var a BoardAdmin
	if err := json.Unmarshal(v, &a); err != nil {
		return BoardAdmin{}, fmt.Errorf("corrupt board admin record: %w", err)
	}
	return a, nil
}
