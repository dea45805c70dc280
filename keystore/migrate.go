package keystore

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// Census counts a store's entries by kind, as caddy apikey migrate reports
// them.
type Census struct {
	// Keys counts the key records by status.
	Keys KeyCounts `json:"keys"`
	// Accounts counts the accounts.
	Accounts int64 `json:"accounts"`
	// AuditEvents counts the audit events.
	AuditEvents int64 `json:"audit_events"`
	// HashEntries counts the hash entries (h/): one per key's current
	// string, and one per grace-period string still running.
	HashEntries int64 `json:"hash_entries"`
	// GraceHashes counts the hash entries of grace-period strings (those
	// with a TTL), of HashEntries.
	GraceHashes int64 `json:"grace_hashes"`
	// QuotaCounts counts the persisted quota counts of keys and accounts.
	QuotaCounts int64 `json:"quota_counts"`
	// LastUsed counts the persisted last-used times.
	LastUsed int64 `json:"last_used"`
	// Entries counts every entry, the above and the indexes and markers.
	Entries int64 `json:"entries"`
}

// KeyCounts counts keys by status.
type KeyCounts struct {
	Total   int64 `json:"total"`
	Active  int64 `json:"active"`
	Revoked int64 `json:"revoked"`
	Expired int64 `json:"expired"`
}

// add counts an entry; a key record's status is taken at now.
func (c *Census) add(en kv.Entry, now time.Time) error {
	c.Entries++
	k := en.Key
	switch {
	case bytes.HasPrefix(k, []byte(pfxKey)):
		rec, err := decodeKey(en.Val)
		if err != nil {
			return fmt.Errorf("the record of key %s: %w", k[len(pfxKey):], err)
		}
		c.Keys.Total++
		switch rec.Status(now) {
		case StatusActive:
			c.Keys.Active++
		case StatusRevoked:
			c.Keys.Revoked++
		case StatusExpired:
			c.Keys.Expired++
		}
	case bytes.HasPrefix(k, []byte(pfxAccount)):
		c.Accounts++
	case bytes.HasPrefix(k, []byte(pfxEvent)):
		c.AuditEvents++
	case bytes.HasPrefix(k, []byte(pfxHash)):
		c.HashEntries++
		if !en.ExpiresAt.IsZero() {
			c.GraceHashes++
		}
	case bytes.HasPrefix(k, []byte(pfxQuotaKey)), bytes.HasPrefix(k, []byte(pfxQuotaAcc)):
		c.QuotaCounts++
	case bytes.HasPrefix(k, []byte(pfxLastUsed)):
		c.LastUsed++
	}
	return nil
}

// Differences lists the counts of c that differ from want's (all but
// Entries: a target's markers may differ), or, with atLeast, those that
// are smaller.
func (c Census) Differences(want Census, atLeast bool) []string {
	var out []string
	for _, f := range []struct {
		name      string
		got, want int64
	}{
		{"keys", c.Keys.Total, want.Keys.Total},
		{"active keys", c.Keys.Active, want.Keys.Active},
		{"revoked keys", c.Keys.Revoked, want.Keys.Revoked},
		{"expired keys", c.Keys.Expired, want.Keys.Expired},
		{"accounts", c.Accounts, want.Accounts},
		{"audit events", c.AuditEvents, want.AuditEvents},
		{"hash entries", c.HashEntries, want.HashEntries},
		{"grace-period hash entries", c.GraceHashes, want.GraceHashes},
		{"quota counts", c.QuotaCounts, want.QuotaCounts},
		{"last-used times", c.LastUsed, want.LastUsed},
	} {
		if f.got != f.want && (!atLeast || f.got < f.want) {
			out = append(out, fmt.Sprintf("%s: %d, source %d", f.name, f.got, f.want))
		}
	}
	return out
}

// CensusOf counts every entry of an engine (Each: the engine must not be
// written meanwhile); key statuses are taken at now.
func CensusOf(c kv.Copier, now time.Time) (Census, error) {
	var out Census
	err := c.Each(func(en kv.Entry) error { return out.add(en, now) })
	return out, err
}

// NotEmptyError is Copy's refusal of a target that holds keys or
// accounts of its own.
type NotEmptyError struct {
	Keys, Hashes, Accounts int
}

func (e *NotEmptyError) Error() string {
	return fmt.Sprintf("the target is not empty: it holds %d keys, %d hash entries and %d accounts besides default", e.Keys, e.Hashes, e.Accounts)
}

// ConflictError is Copy's refusal to merge a source whose keys or hashes
// the target holds with other contents.
type ConflictError struct {
	// KeyIDs are ids of keys whose records differ; Hashes (hex) are hash
	// entries that differ (another key's string, or another version of
	// the same key).
	KeyIDs, Hashes []string
}

// maxListed bounds the ids and hashes an error lists.
const maxListed = 20

func (e *ConflictError) Error() string {
	list := func(s []string) string {
		if len(s) > maxListed {
			return strings.Join(s[:maxListed], ", ") + fmt.Sprintf(" and %d more", len(s)-maxListed)
		}
		return strings.Join(s, ", ")
	}
	var parts []string
	if len(e.KeyIDs) > 0 {
		parts = append(parts, fmt.Sprintf("%d keys whose records differ (%s)", len(e.KeyIDs), list(e.KeyIDs)))
	}
	if len(e.Hashes) > 0 {
		parts = append(parts, fmt.Sprintf("%d hash entries that differ (sha256 %s)", len(e.Hashes), list(e.Hashes)))
	}
	return "the source and the target disagree on " + strings.Join(parts, " and ") + "; nothing was written"
}

// copyChunk is how many entries Copy writes at a time.
const copyChunk = 1000

// Copy copies every entry of the store in from into the store in to: key
// records, hash entries (a grace-period string with the time it has
// left), account index, accounts, audit events, quota counts, last-used
// times, revocation index, pending deletes and markers, byte for byte, so
// that every key verifies on to as it did on from. It is for caddy apikey
// migrate: nothing may write either engine meanwhile.
//
// A target that holds keys, hash entries or accounts other than default
// (what a store that a Caddy opened once holds) is refused with a
// *NotEmptyError, unless merge. With merge, the source's entries are
// written over the target's, but first every key record and hash entry
// of the source that the target holds too is compared: if any differs,
// Copy writes nothing and returns a *ConflictError listing them. The
// target's other entries stay; its accounts are replaced by the source's
// accounts of the same id.
//
// It returns the source's census, counted (at now) while copying.
func Copy(from, to kv.Copier, merge bool, now time.Time) (Census, error) {
	if !merge {
		if err := checkEmpty(to); err != nil {
			return Census{}, err
		}
	} else if err := checkConflicts(from, to); err != nil {
		return Census{}, err
	}
	var census Census
	buf := make([]kv.Entry, 0, copyChunk)
	err := from.Each(func(en kv.Entry) error {
		if err := census.add(en, now); err != nil {
			return err
		}
		if buf = append(buf, en); len(buf) == copyChunk {
			err := to.Put(buf)
			buf = buf[:0]
			return err
		}
		return nil
	})
	if err == nil && len(buf) > 0 {
		err = to.Put(buf)
	}
	return census, err
}

// checkEmpty returns a *NotEmptyError if the engine holds keys, hash
// entries or accounts other than default.
func checkEmpty(e kv.Engine) error {
	var ne NotEmptyError
	err := e.View(func(t kv.Txn) error {
		count := func(prefix string, n *int) error {
			return t.Scan([]byte(prefix), nil, false, false, func(key, _ []byte) (bool, error) {
				if prefix != pfxAccount || string(key) != pfxAccount+DefaultAccount {
					*n++
				}
				return true, nil
			})
		}
		return errors.Join(count(pfxKey, &ne.Keys), count(pfxHash, &ne.Hashes), count(pfxAccount, &ne.Accounts))
	})
	if err != nil {
		return err
	}
	if ne != (NotEmptyError{}) {
		return &ne
	}
	return nil
}

// checkConflicts returns a *ConflictError if a key record or hash entry
// of from is in to with other contents.
func checkConflicts(from kv.Copier, to kv.Engine) error {
	var ce ConflictError
	var batch []kv.Entry
	check := func() error {
		err := to.View(func(t kv.Txn) error {
			for _, en := range batch {
				err := t.Get(en.Key, func(v []byte) error {
					if bytes.Equal(v, en.Val) {
						return nil
					}
					if bytes.HasPrefix(en.Key, []byte(pfxKey)) {
						ce.KeyIDs = append(ce.KeyIDs, string(en.Key[len(pfxKey):]))
					} else {
						ce.Hashes = append(ce.Hashes, hex.EncodeToString(en.Key[len(pfxHash):]))
					}
					return nil
				})
				if err != nil && !errors.Is(err, kv.ErrNotFound) {
					return err
				}
			}
			return nil
		})
		batch = batch[:0]
		return err
	}
	err := from.Each(func(en kv.Entry) error {
		if !bytes.HasPrefix(en.Key, []byte(pfxKey)) && !bytes.HasPrefix(en.Key, []byte(pfxHash)) {
			return nil
		}
		if batch = append(batch, en); len(batch) == copyChunk {
			return check()
		}
		return nil
	})
	if err == nil {
		err = check()
	}
	if err != nil {
		return err
	}
	if len(ce.KeyIDs)+len(ce.Hashes) > 0 {
		slices.Sort(ce.KeyIDs)
		slices.Sort(ce.Hashes)
		return &ce
	}
	return nil
}

// CheckHashes checks, without plaintexts, that every key verifies: that
// the hash of its current string, and of a grace-period string still
// running, resolves to the key, as the verification path reads it. It
// returns the ids of the keys that do not, and how many keys it checked.
func (s *Store) CheckHashes() (bad []string, checked int, err error) {
	now := s.now()
	err = s.view(func(t txn) error {
		return t.scan([]byte(pfxKey), nil, false, true, func(key, val []byte) (bool, error) {
			rec, err := decodeKey(val)
			if err != nil {
				return false, fmt.Errorf("the record of key %s: %w", key[len(pfxKey):], err)
			}
			checked++
			hashes := []Hash{rec.Hash}
			if rec.PrevHash != nil && now.Before(rec.PrevUntil) {
				hashes = append(hashes, *rec.PrevHash)
			}
			for _, h := range hashes {
				k, err := t.keyForHash(h)
				if errors.Is(err, ErrNotFound) || (err == nil && k.ID != rec.ID) {
					bad = append(bad, rec.ID)
					break
				}
				if err != nil {
					return false, err
				}
			}
			return true, nil
		})
	})
	return bad, checked, err
}
