package adminui

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"sync"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// Session lifetimes by default.
const (
	// DefaultIdleTimeout ends a session not used for this long.
	DefaultIdleTimeout = 30 * time.Minute
	// DefaultAbsoluteTimeout ends a session this long after sign-in,
	// however busy.
	DefaultAbsoluteTimeout = 12 * time.Hour
	// MaxSessions bounds the sessions one page keeps: a sign-in beyond
	// it ends the session idle the longest.
	MaxSessions = 10000
)

// cookieName is the session cookie's name.
const cookieName = "apikey_ui_session"

// session is a signed-in manager: what identifies its key (the SHA-256,
// never the plaintext), and its times.
type session struct {
	keyHash  keystore.Hash
	keyID    string
	created  time.Time
	lastSeen time.Time
}

// sessions are the signed-in managers of one page, by the SHA-256 of their
// cookie's token: a lookup by hash compares no secret byte by byte.
type sessions struct {
	mu       sync.Mutex
	byToken  map[[sha256.Size]byte]*session
	idle     time.Duration
	absolute time.Duration
}

func newSessions(idle, absolute time.Duration) *sessions {
	return &sessions{byToken: make(map[[sha256.Size]byte]*session), idle: idle, absolute: absolute}
}

// create starts a session and returns its token: 32 random bytes in
// base64url.
func (s *sessions) create(h keystore.Hash, keyID string, now time.Time) string {
	var raw [32]byte
	_, _ = rand.Read(raw[:]) // never fails (crypto/rand)
	token := base64.RawURLEncoding.EncodeToString(raw[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	if len(s.byToken) >= MaxSessions {
		s.evictLocked()
	}
	s.byToken[sha256.Sum256([]byte(token))] = &session{keyHash: h, keyID: keyID, created: now, lastSeen: now}
	return token
}

// lookup returns the live session of token and marks it used at now; a
// session past its idle or absolute timeout is ended and not returned.
func (s *sessions) lookup(token string, now time.Time) (session, bool) {
	id := sha256.Sum256([]byte(token))
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.byToken[id]
	if !ok {
		return session{}, false
	}
	if s.expired(ss, now) {
		delete(s.byToken, id)
		return session{}, false
	}
	ss.lastSeen = now
	return *ss, true
}

// end ends token's session, if any.
func (s *sessions) end(token string) {
	id := sha256.Sum256([]byte(token))
	s.mu.Lock()
	delete(s.byToken, id)
	s.mu.Unlock()
}

// count is the number of sessions kept, expired ones included until the
// next prune.
func (s *sessions) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byToken)
}

func (s *sessions) expired(ss *session, now time.Time) bool {
	return now.Sub(ss.lastSeen) >= s.idle || now.Sub(ss.created) >= s.absolute
}

// pruneLocked drops expired sessions.
func (s *sessions) pruneLocked(now time.Time) {
	for id, ss := range s.byToken {
		if s.expired(ss, now) {
			delete(s.byToken, id)
		}
	}
}

// evictLocked drops the session idle the longest.
func (s *sessions) evictLocked() {
	var oldest [sha256.Size]byte
	var at time.Time
	first := true
	for id, ss := range s.byToken {
		if first || ss.lastSeen.Before(at) {
			oldest, at, first = id, ss.lastSeen, false
		}
	}
	delete(s.byToken, oldest)
}

// sessionCookie is the cookie that carries token: HttpOnly (no script
// reads it), SameSite=Strict (no other site's page sends it), Secure over
// HTTPS, limited to the page's mount, and living no longer than the
// absolute timeout (the server ends it sooner when idle).
func sessionCookie(token, path string, secure bool, maxAge time.Duration) *http.Cookie {
	return &http.Cookie{
		Name:     cookieName,
		Value:    token,
		Path:     path,
		MaxAge:   int(maxAge / time.Second),
		HttpOnly: true,
		Secure:   secure,
		SameSite: http.SameSiteStrictMode,
	}
}

// clearCookie is the cookie that removes the session cookie.
func clearCookie(path string, secure bool) *http.Cookie {
	c := sessionCookie("", path, secure, 0)
	c.MaxAge = -1
	return c
}
