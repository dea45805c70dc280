package keystore

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Sessions of the API Keys page (package adminui) live in the store, so
// that they survive a reload or restart of Caddy and, on a shared engine,
// are known to every process at once. A session is stored under the
// SHA-256 of its token (the cookie's value), never the token itself:
//
//	ws/<sha256 of the token>
//	    the session: what identifies its key (the key's SHA-256 and id),
//	    the page it belongs to, its creation and last-seen times; written
//	    with a TTL, so that the engine drops it by itself once it is dead
//	wk/<key id>/<created, 16 hex digits of unix nanos>/<sha256 of the token>
//	    index of a key's sessions by age (empty value, the TTL of the
//	    absolute timeout): a sign-in beyond SessionLimits.PerKey ends the
//	    key's oldest
//
// A session's last-seen time is written at most once per
// SessionTouchInterval (TouchSession), not on every request of the page;
// the idle check allows for that interval, so that a session is never
// ended sooner than its idle timeout after its last use, and at most
// SessionTouchInterval later.
const (
	pfxSession     = "ws/"
	pfxKeySessions = "wk/"
)

// SessionTouchInterval is how stale a session's stored last-seen time may
// be: TouchSession writes it only when it is at least this old.
const SessionTouchInterval = time.Minute

// SessionTokenBytes is how many random bytes a session token holds.
const SessionTokenBytes = 32

// sessionTokenLen is the length of a token: SessionTokenBytes in
// unpadded base64url.
var sessionTokenLen = base64.RawURLEncoding.EncodedLen(SessionTokenBytes)

// SessionLimits are a page's session lifetimes and bound.
type SessionLimits struct {
	// Idle ends a session not used for this long (plus, at most,
	// SessionTouchInterval).
	Idle time.Duration
	// Absolute ends a session this long after it was created, however
	// busy.
	Absolute time.Duration
	// PerKey bounds the sessions of one key: a sign-in beyond it ends
	// the key's oldest. 0 or less means no bound.
	PerKey int
}

// Session is a signed-in page session as stored.
type Session struct {
	// KeyHash is the SHA-256 of the key that signed in (never the key).
	KeyHash Hash
	// KeyID is the key's id.
	KeyID string
	// Page names the page the session belongs to (its mount): a session
	// is found only by the page that created it.
	Page string
	// Created is when the session started; LastSeen when it was last
	// used, as stored (up to SessionTouchInterval behind).
	Created, LastSeen time.Time
}

// ErrSessionEnded is what Session and TouchSession return for a token
// whose session does not exist (never did, was ended, timed out, or
// belongs to another page).
var ErrSessionEnded = errors.New("the session has ended")

// sessionID is the store's name of a token: its SHA-256.
func sessionID(token string) Hash { return sha256.Sum256([]byte(token)) }

func keySession(id Hash) []byte { return append([]byte(pfxSession), id[:]...) }

func keySessionIndex(keyID string, created time.Time, id Hash) []byte {
	b := fmt.Appendf(nil, "%s%s/%016x/", pfxKeySessions, keyID, uint64(unixNano(created)))
	return append(b, id[:]...)
}

// sessionRecord is the version of the stored session's encoding.
const sessionRecord = 1

// encodeSession is a session's stored value: the version, the key's hash,
// the created and last-seen times (unix nanos, big-endian), the key id's
// length and the key id, and the page.
func encodeSession(ss *Session) []byte {
	b := make([]byte, 0, 1+len(ss.KeyHash)+16+binary.MaxVarintLen64+len(ss.KeyID)+len(ss.Page))
	b = append(b, sessionRecord)
	b = append(b, ss.KeyHash[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(ss.Created)))
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(ss.LastSeen)))
	b = binary.AppendUvarint(b, uint64(len(ss.KeyID)))
	b = append(b, ss.KeyID...)
	return append(b, ss.Page...)
}

func decodeSession(b []byte) (*Session, error) {
	const fixed = 1 + len(Hash{}) + 16
	if len(b) < fixed || b[0] != sessionRecord {
		return nil, errors.New("a stored session is not readable")
	}
	ss := new(Session)
	copy(ss.KeyHash[:], b[1:])
	rest := b[1+len(Hash{}):]
	ss.Created = time.Unix(0, int64(binary.BigEndian.Uint64(rest))).UTC()
	ss.LastSeen = time.Unix(0, int64(binary.BigEndian.Uint64(rest[8:]))).UTC()
	rest = rest[16:]
	n, w := binary.Uvarint(rest)
	if w <= 0 || uint64(len(rest)-w) < n {
		return nil, errors.New("a stored session is not readable")
	}
	ss.KeyID = string(rest[w : w+int(n)])
	ss.Page = string(rest[w+int(n):])
	return ss, nil
}

// check validates lim for the session calls.
func (lim SessionLimits) check() error {
	if lim.Idle <= 0 || lim.Absolute <= 0 {
		return errors.New("session limits need an idle and an absolute timeout")
	}
	return nil
}

// ended reports whether ss is past its idle or absolute timeout at now.
func (lim SessionLimits) ended(ss *Session, now time.Time) bool {
	return now.Sub(ss.LastSeen) >= lim.Idle+SessionTouchInterval || now.Sub(ss.Created) >= lim.Absolute
}

// ttl is how long the engine keeps ss from now: until the earlier of its
// absolute timeout and its idle timeout (with the touch interval), after
// which no check would accept it.
func (lim SessionLimits) ttl(ss *Session, now time.Time) time.Duration {
	end := ss.Created.Add(lim.Absolute)
	if idle := ss.LastSeen.Add(lim.Idle + SessionTouchInterval); idle.Before(end) {
		end = idle
	}
	return end.Sub(now)
}

// CreateSession starts a session of page for the key with hash keyHash
// and id keyID, and returns its token: SessionTokenBytes random bytes in
// unpadded base64url, which only the caller sees (the store keeps its
// SHA-256). If the key already has lim.PerKey live sessions, its oldest
// are ended. The write is durable when it returns.
func (s *Store) CreateSession(keyHash Hash, keyID, page string, lim SessionLimits) (string, error) {
	if err := lim.check(); err != nil {
		return "", err
	}
	var raw [SessionTokenBytes]byte
	_, _ = rand.Read(raw[:]) // never fails (crypto/rand)
	token := base64.RawURLEncoding.EncodeToString(raw[:])
	id := sessionID(token)
	now := s.now().UTC()
	ss := &Session{KeyHash: keyHash, KeyID: keyID, Page: page, Created: now, LastSeen: now}
	err := s.update(func(t txn) error {
		if lim.PerKey > 0 {
			if err := t.boundKeySessions(keyID, lim.PerKey-1); err != nil {
				return err
			}
		}
		ttl := lim.ttl(ss, now)
		if err := t.setTTL(keySession(id), encodeSession(ss), ttl); err != nil {
			return err
		}
		return t.setTTL(keySessionIndex(keyID, now, id), []byte{}, lim.Absolute)
	})
	if err != nil {
		return "", err
	}
	return token, nil
}

// indexedSession is an entry of a key's index of sessions.
type indexedSession struct {
	key []byte // the index entry
	id  Hash   // the session's
}

// keySessions returns a key's indexed sessions, oldest first: those
// whose session exists (live), and those whose session is gone.
func (t txn) keySessions(keyID string) (live, gone []indexedSession, err error) {
	pfx := []byte(pfxKeySessions + keyID + "/")
	var all []indexedSession
	err = t.scan(pfx, nil, false, false, func(key, _ []byte) (bool, error) {
		if len(key) == len(pfx)+17+len(Hash{}) {
			e := indexedSession{key: append([]byte(nil), key...)}
			copy(e.id[:], key[len(key)-len(e.id):])
			all = append(all, e)
		}
		return true, nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, e := range all {
		ok, err := t.exists(keySession(e.id))
		if err != nil {
			return nil, nil, err
		}
		if ok {
			live = append(live, e)
		} else {
			gone = append(gone, e)
		}
	}
	return live, gone, nil
}

// boundKeySessions leaves at most keep live sessions of a key, ending its
// oldest, and drops index entries whose session is gone.
func (t txn) boundKeySessions(keyID string, keep int) error {
	live, gone, err := t.keySessions(keyID)
	if err != nil {
		return err
	}
	for ; len(live) > keep; live = live[1:] {
		if err := t.del(keySession(live[0].id)); err != nil {
			return err
		}
		gone = append(gone, live[0])
	}
	for _, e := range gone {
		if err := t.del(e.key); err != nil {
			return err
		}
	}
	return nil
}

// Session returns the live session of token on page. A token that names
// no session, one of another page, or one past its idle or absolute
// timeout at the store's clock is ErrSessionEnded (a timed-out session is
// deleted). It reads and does not write: see TouchSession.
func (s *Store) Session(token, page string, lim SessionLimits) (*Session, error) {
	if err := lim.check(); err != nil {
		return nil, err
	}
	if len(token) != sessionTokenLen {
		return nil, ErrSessionEnded
	}
	ss, err := s.readSession(sessionID(token))
	if err != nil {
		return nil, err
	}
	if ss.Page != page {
		return nil, ErrSessionEnded
	}
	if lim.ended(ss, s.now()) {
		if err := s.EndSession(token); err != nil {
			return nil, err
		}
		return nil, ErrSessionEnded
	}
	return ss, nil
}

// readSession reads a session in a read-only transaction;
// ErrSessionEnded if it is absent.
func (s *Store) readSession(id Hash) (*Session, error) {
	var ss *Session
	err := s.view(func(t txn) error {
		var err error
		ss, err = t.getSession(id)
		return err
	})
	return ss, err
}

// getSession reads a session; ErrSessionEnded if it is absent.
func (t txn) getSession(id Hash) (*Session, error) {
	b, err := t.getRaw(keySession(id))
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, ErrSessionEnded
	}
	return decodeSession(b)
}

// TouchSession records that token's session, as Session returned it
// (seen; nil reads it), was used now. It writes only when seen's
// last-seen time is SessionTouchInterval old or older, and reads nothing
// more otherwise: a page
// request costs no write, and a busy session one write a minute. The
// write sets the TTL that follows from the new time, and never brings
// back a session ended meanwhile, on this or another process
// (ErrSessionEnded). It reports whether it wrote.
func (s *Store) TouchSession(token string, seen *Session, lim SessionLimits) (bool, error) {
	if err := lim.check(); err != nil {
		return false, err
	}
	if len(token) != sessionTokenLen {
		return false, ErrSessionEnded
	}
	now := s.now().UTC()
	id := sessionID(token)
	if seen == nil {
		var err error
		if seen, err = s.readSession(id); err != nil {
			return false, err
		}
	}
	if now.Sub(seen.LastSeen) < SessionTouchInterval {
		return false, nil
	}
	wrote := false
	err := s.update(func(t txn) error {
		wrote = false
		ss, err := t.getSession(id)
		if err != nil {
			return err
		}
		if lim.ended(ss, now) {
			return ErrSessionEnded
		}
		if now.Sub(ss.LastSeen) < SessionTouchInterval {
			return nil
		}
		ss.LastSeen = now
		wrote = true
		return t.setTTL(keySession(id), encodeSession(ss), lim.ttl(ss, now))
	})
	return wrote, err
}

// EndSession ends token's session, if any: on a shared engine, for every
// process at once. The delete is durable when it returns.
func (s *Store) EndSession(token string) error {
	if len(token) != sessionTokenLen {
		return nil
	}
	id := sessionID(token)
	return s.update(func(t txn) error {
		ss, err := t.getSession(id)
		if errors.Is(err, ErrSessionEnded) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := t.del(keySession(id)); err != nil {
			return err
		}
		return t.del(keySessionIndex(ss.KeyID, ss.Created, id))
	})
}

// SessionCount returns how many sessions of a key the store holds.
func (s *Store) SessionCount(keyID string) (int, error) {
	var n int
	err := s.view(func(t txn) error {
		live, _, err := t.keySessions(keyID)
		n = len(live)
		return err
	})
	return n, err
}
