package keystore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// An expiry notice marker, x/<id>, records which expiry notices of a key
// were told (Options.OnChange: ChangeKeyExpiring, ChangeKeyExpired): the
// key's expires_at when they were (unix nanos, 8 bytes big-endian) and the
// last stage told (1 byte: noticeExpiring or noticeExpired). A notice is
// told once per key and expiry: by the sweep whose transaction writes the
// marker, so a restart does not tell it again, and of the processes of a
// shared engine only the one whose write commits tells it (a concurrent
// sweep's transaction, which read the marker, conflicts and, run again,
// finds it written). A new expiry (extended, or set again) starts over.
// The marker goes with the key.
const pfxExpiryNotice = "x/"

func keyX(id string) []byte { return []byte(pfxExpiryNotice + id) }

// Expiry notice stages.
const (
	noticeExpiring byte = 1
	noticeExpired  byte = 2
)

// DefaultExpiringNotice is how long before its expiry a key is noticed as
// expiring.
const DefaultExpiringNotice = 7 * 24 * time.Hour

// noticeStage is the notice due for a key expiring at exp: noticeExpired
// once exp has passed, noticeExpiring within notice of it (never if
// notice < 0), 0 otherwise.
func noticeStage(exp, now time.Time, notice time.Duration) byte {
	switch {
	case !now.Before(exp):
		return noticeExpired
	case notice >= 0 && !now.Before(exp.Add(-notice)):
		return noticeExpiring
	}
	return 0
}

// told reports whether a marker records stage (or a later one) for the
// expiry exp.
func told(marker []byte, exp time.Time, stage byte) bool {
	return len(marker) == 9 && int64(binary.BigEndian.Uint64(marker)) == unixNano(exp) && marker[8] >= stage
}

// SweepExpiry reads every key record once: it counts the keys by status
// (Stats.Keys), and tells Options.OnChange of each key that is, for the
// first time at its current expiry, within notice of its expiry
// (ChangeKeyExpiring) or past it (ChangeKeyExpired; a key found past it
// before it was found expiring is told only that). A negative notice
// tells no key_expiring. Revoked keys are told nothing. It stops between
// two keys once ctx is done.
func (s *Store) SweepExpiry(ctx context.Context, notice time.Duration) error {
	now := s.now().UTC()
	type due struct {
		id    string
		exp   time.Time
		stage byte
	}
	var dues []due
	counts := SweptKeyCounts{At: now}
	err := s.view(func(t txn) error {
		return t.scan([]byte(pfxKey), nil, false, true, func(_, val []byte) (bool, error) {
			k, err := decodeKey(val)
			if err != nil {
				return false, err
			}
			switch k.Status(now) {
			case StatusRevoked:
				counts.Revoked++
			case StatusExpired:
				counts.Expired++
			default:
				counts.Active++
			}
			if k.RevokedAt != nil || k.ExpiresAt == nil {
				return true, nil
			}
			stage := noticeStage(*k.ExpiresAt, now, notice)
			if stage == 0 {
				return true, nil
			}
			m, err := t.getRaw(keyX(k.ID))
			if err != nil {
				return false, err
			}
			if !told(m, *k.ExpiresAt, stage) {
				dues = append(dues, due{k.ID, *k.ExpiresAt, stage})
			}
			return true, nil
		})
	})
	if err != nil {
		return fmt.Errorf("reading the keys for expiry notices: %w", err)
	}
	s.stats.keyCounts.Store(&counts)
	var errs error
	for _, d := range dues {
		if err := ctx.Err(); err != nil {
			return errors.Join(errs, err)
		}
		if err := s.noticeExpiry(d.id, d.exp, d.stage); err != nil {
			errs = errors.Join(errs, fmt.Errorf("expiry notice of key %s: %w", d.id, err))
		}
	}
	return errs
}

// noticeExpiry writes key id's marker for stage, if the key still expires
// at exp, is not revoked and was not told it yet, and tells OnChange once
// the write commits.
func (s *Store) noticeExpiry(id string, exp time.Time, stage byte) error {
	var k *Key
	err := s.update(func(t txn) error {
		k = nil
		rec, err := t.getRecord(id)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if rec.RevokedAt != nil || rec.ExpiresAt == nil || !rec.ExpiresAt.Equal(exp) {
			return nil
		}
		m, err := t.getRaw(keyX(id))
		if err != nil || told(m, exp, stage) {
			return err
		}
		if err := t.set(keyX(id), append(binary.BigEndian.AppendUint64(nil, uint64(unixNano(exp))), stage)); err != nil {
			return err
		}
		k = rec
		return nil
	})
	if err != nil || k == nil {
		return err
	}
	kind := ChangeKeyExpiring
	if stage == noticeExpired {
		kind = ChangeKeyExpired
	}
	s.changed(Mutation{Kind: kind, At: s.now().UTC(), Actor: ActorExpiry, Key: keyInfo(k)})
	return nil
}
