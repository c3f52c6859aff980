package accounts

import (
	"bufio"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// Limits on an audit entry's fields, so one caller cannot fill the card.
const (
	maxActorLen  = 254
	maxActionLen = 64
	maxDetailLen = 2048
)

// audit appends an entry inside tx, so an action and its entry are written
// together or not at all. The bucket's sequence rolls back with a failed
// transaction, which keeps the numbers contiguous.
func (d *DB) audit(tx *bolt.Tx, actor, action, detail string) error {
	b := tx.Bucket(bucketAudit)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	e := AuditEntry{Seq: seq, At: d.now(), Actor: actor, Action: action, Detail: detail}
	return putJSON(b, seqKey(seq), e)
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// Audit appends an entry to the audit log: who (an email, "system" or
// "cli") did what. Other packages call it for their own processing steps
// ("pair-board", "export", "erase", …). Never pass a secret in detail.
func (d *DB) Audit(actor, action, detail string) error {
	switch {
	case actor == "" || action == "":
		return errors.New("audit: actor and action are required")
	case len(actor) > maxActorLen || len(action) > maxActionLen || len(detail) > maxDetailLen:
		return fmt.Errorf("audit: entry too long (actor ≤ %d, action ≤ %d, detail ≤ %d bytes)", maxActorLen, maxActionLen, maxDetailLen)
	case !utf8.ValidString(actor) || !utf8.ValidString(action) || !utf8.ValidString(detail):
		return errors.New("audit: entry is not valid UTF-8")
	}
	err := d.bolt.Update(func(tx *bolt.Tx) error { return d.audit(tx, actor, action, detail) })
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

func decodeEntry(k, v []byte) (AuditEntry, error) {
	var e AuditEntry
	if err := json.Unmarshal(v, &e); err != nil || len(k) != 8 || binary.BigEndian.Uint64(k) != e.Seq {
		return e, fmt.Errorf("read audit entry %x: damaged", k)
	}
	return e, nil
}

// AuditLog returns the newest limit entries, newest first; limit ≤ 0 means
// all.
func (d *DB) AuditLog(limit int) ([]AuditEntry, error) {
	var out []AuditEntry
	err := d.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			e, err := decodeEntry(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	return out, nil
}

// auditChunk is how many entries an export reads per transaction. Exports
// go to slow HTTP clients; a bbolt read transaction held that long would
// stall writers that need to grow the file.
const auditChunk = 512

// eachAudit calls fn for every entry present when it starts, oldest first,
// without holding a transaction while fn runs.
func (d *DB) eachAudit(fn func(AuditEntry) error) error {
	var last uint64
	err := d.bolt.View(func(tx *bolt.Tx) error {
		last = tx.Bucket(bucketAudit).Sequence()
		return nil
	})
	if err != nil {
		return fmt.Errorf("read audit log: %w", err)
	}
	for next := uint64(1); next <= last; {
		var chunk []AuditEntry
		err := d.bolt.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketAudit).Cursor()
			for k, v := c.Seek(seqKey(next)); k != nil && len(chunk) < auditChunk; k, v = c.Next() {
				e, err := decodeEntry(k, v)
				if err != nil {
					return err
				}
				if e.Seq > last {
					break
				}
				chunk = append(chunk, e)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("read audit log: %w", err)
		}
		if len(chunk) == 0 {
			break
		}
		for _, e := range chunk {
			if err := fn(e); err != nil {
				return err
			}
		}
		next = chunk[len(chunk)-1].Seq + 1
	}
	return nil
}

// WriteAuditJSON writes every entry, oldest first, as a JSON array.
func (d *DB) WriteAuditJSON(w io.Writer) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("[")
	n := 0
	err := d.eachAudit(func(e AuditEntry) error {
		raw, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if n > 0 {
			bw.WriteString(",")
		}
		n++
		bw.WriteString("\n")
		_, err = bw.Write(raw)
		return err
	})
	if err != nil {
		return err
	}
	if n > 0 {
		bw.WriteString("\n")
	}
	bw.WriteString("]\n")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write audit log: %w", err)
	}
	return nil
}

// WriteAuditCSV writes every entry, oldest first, as CSV with the header
// seq,at,actor,action,detail. A text field that a spreadsheet would run as
// a formula (it starts with = + - @, a tab or a CR) gets a leading
// apostrophe: login-failed entries carry whatever a visitor typed as email.
func (d *DB) WriteAuditCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"seq", "at", "actor", "action", "detail"}); err != nil {
		return fmt.Errorf("write audit log: %w", err)
	}
	err := d.eachAudit(func(e AuditEntry) error {
		return cw.Write([]string{
			strconv.FormatUint(e.Seq, 10),
			e.At.UTC().Format(time.RFC3339Nano),
			csvText(e.Actor),
			csvText(e.Action),
			csvText(e.Detail),
		})
	})
	if err != nil {
		return err
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write audit log: %w", err)
	}
	return nil
}

func csvText(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
