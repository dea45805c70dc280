package keystore

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// pageLimits are the page's own session limits.
var pageLimits = SessionLimits{Idle: 30 * time.Minute, Absolute: 12 * time.Hour, PerKey: 3}

// sessionEntries returns the stored entries of sessions and their index.
func sessionEntries(t *testing.T, s *Store) []kv.Entry {
	t.Helper()
	all, err := kv.All(s.eng.(kv.Copier))
	if err != nil {
		t.Fatal(err)
	}
	var out []kv.Entry
	for _, e := range all {
		if strings.HasPrefix(string(e.Key), pfxSession) || strings.HasPrefix(string(e.Key), pfxKeySessions) {
			out = append(out, e)
		}
	}
	return out
}

// mustSession fails unless token's session on page is live, and returns
// it.
func mustSession(t *testing.T, s *Store, token, page string) *Session {
	t.Helper()
	ss, err := s.Session(token, page, pageLimits)
	if err != nil {
		t.Fatalf("the session: %v", err)
	}
	return ss
}

// wantEnded fails unless token has no live session on page.
func wantEnded(t *testing.T, s *Store, token, page string) {
	t.Helper()
	if ss, err := s.Session(token, page, pageLimits); !errors.Is(err, ErrSessionEnded) {
		t.Fatalf("the session is %+v, %v; want ErrSessionEnded", ss, err)
	}
}

// TestSessionStored: a session holds what identifies its key, its page and
// its times, and is stored under its token's SHA-256 only; it is found by
// its page alone, and a malformed or unknown token finds nothing.
func TestSessionStored(t *testing.T) {
	clock := newTestClock()
	s := openStoreOpts(t, Options{Now: clock.Now})
	k, plain := mustCreate(t, s, DefaultFormat(), NewKey{Scopes: []string{"apikeys:read"}})
	token, err := s.CreateSession(HashKey(plain), k.ID, "/manage/", pageLimits)
	if err != nil {
		t.Fatal(err)
	}
	if len(token) != 43 {
		t.Errorf("token %q: want 32 bytes in base64url", token)
	}
	ss := mustSession(t, s, token, "/manage/")
	if ss.KeyHash != HashKey(plain) || ss.KeyID != k.ID || ss.Page != "/manage/" || !ss.Created.Equal(clock.Now()) || !ss.LastSeen.Equal(clock.Now()) {
		t.Errorf("session %+v", ss)
	}
	entries := sessionEntries(t, s)
	if len(entries) != 2 {
		t.Fatalf("%d stored entries, want the session and its index entry", len(entries))
	}
	for _, e := range entries {
		if strings.Contains(string(e.Key)+string(e.Val), token) || strings.Contains(string(e.Key)+string(e.Val), plain) {
			t.Errorf("entry %q holds the token or the key", e.Key)
		}
	}
	for _, tc := range []struct{ name, token, page string }{
		{"another page", token, "/other/"},
		{"the operator's page", token, ""},
		{"unknown token", strings.Repeat("A", 43), "/manage/"},
		{"malformed token", "x", "/manage/"},
		{"empty token", "", "/manage/"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantEnded(t, s, tc.token, tc.page) })
	}
	mustSession(t, s, token, "/manage/") // another page's lookup did not end it
	if _, err := s.CreateSession(HashKey(plain), k.ID, "/manage/", SessionLimits{}); err == nil {
		t.Error("a session without timeouts was created")
	}
}

// TestSessionTimeouts: the last-seen time is written at most once per
// SessionTouchInterval; the idle timeout counts from it, allowing for the
// interval; the absolute timeout ends a busy session; an ended session is
// deleted.
func TestSessionTimeouts(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		clock := newTestClock()
		s := openStoreOpts(t, Options{Now: clock.Now})
		token, err := s.CreateSession(Hash{1}, "k1", "/", pageLimits)
		if err != nil {
			t.Fatal(err)
		}
		commits := s.Commits()
		for range 5 {
			clock.Advance(10 * time.Second)
			seen := mustSession(t, s, token, "/")
			if wrote, err := s.TouchSession(token, seen, pageLimits); err != nil || wrote {
				t.Fatalf("a touch within the interval: wrote %v, %v", wrote, err)
			}
			// Without what Session read, the touch reads it.
			if wrote, err := s.TouchSession(token, nil, pageLimits); err != nil || wrote {
				t.Fatalf("a touch within the interval: wrote %v, %v", wrote, err)
			}
		}
		if n := s.Commits() - commits; n != 0 {
			t.Errorf("%d commits for touches within the interval", n)
		}
		clock.Advance(10 * time.Second)
		if wrote, err := s.TouchSession(token, mustSession(t, s, token, "/"), pageLimits); err != nil || !wrote {
			t.Fatalf("a touch after the interval: wrote %v, %v", wrote, err)
		}
		seen := clock.Now()
		if ss := mustSession(t, s, token, "/"); !ss.LastSeen.Equal(seen) {
			t.Errorf("last seen %v, want %v", ss.LastSeen, seen)
		}
		clock.Advance(pageLimits.Idle + SessionTouchInterval - time.Second)
		mustSession(t, s, token, "/")
		clock.Advance(time.Second)
		wantEnded(t, s, token, "/")
		if n := len(sessionEntries(t, s)); n != 0 {
			t.Errorf("%d entries left after the idle timeout", n)
		}
		if _, err := s.TouchSession(token, nil, pageLimits); !errors.Is(err, ErrSessionEnded) {
			t.Errorf("touching an ended session: %v", err)
		}
		if n := len(sessionEntries(t, s)); n != 0 {
			t.Errorf("a touch brought an ended session back (%d entries)", n)
		}
	})
	t.Run("absolute", func(t *testing.T) {
		clock := newTestClock()
		s := openStoreOpts(t, Options{Now: clock.Now})
		token, err := s.CreateSession(Hash{1}, "k1", "/", pageLimits)
		if err != nil {
			t.Fatal(err)
		}
		for used := time.Duration(0); used < pageLimits.Absolute-20*time.Minute; used += 20 * time.Minute {
			clock.Advance(20 * time.Minute)
			if wrote, err := s.TouchSession(token, mustSession(t, s, token, "/"), pageLimits); err != nil || !wrote {
				t.Fatalf("touch: %v %v", wrote, err)
			}
		}
		clock.Advance(20 * time.Minute) // 12 h after sign-in, used 20 min ago
		wantEnded(t, s, token, "/")
	})
}

// TestSessionTTL: a session is written with a TTL that ends when no check
// would accept it any more (its absolute timeout, or sooner its idle
// timeout plus the touch interval); its index entry with the absolute
// timeout's. With the real clock, the engine drops a dead session by
// itself.
func TestSessionTTL(t *testing.T) {
	s := openStoreOpts(t, Options{})
	for _, tc := range []struct {
		name      string
		lim       SessionLimits
		session   time.Duration
		index     time.Duration
		sessionOf string
	}{
		{"idle first", SessionLimits{Idle: 30 * time.Minute, Absolute: 12 * time.Hour}, 31 * time.Minute, 12 * time.Hour, "k1"},
		{"absolute first", SessionLimits{Idle: 30 * time.Minute, Absolute: 10 * time.Minute}, 10 * time.Minute, 10 * time.Minute, "k2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			if _, err := s.CreateSession(Hash{2}, tc.sessionOf, "/", tc.lim); err != nil {
				t.Fatal(err)
			}
			for _, e := range sessionEntries(t, s) {
				want := tc.session
				if strings.HasPrefix(string(e.Key), pfxKeySessions) {
					if !strings.HasPrefix(string(e.Key), pfxKeySessions+tc.sessionOf+"/") {
						continue
					}
					want = tc.index
				} else if ss, err := decodeSession(e.Val); err != nil || ss.KeyID != tc.sessionOf {
					continue
				}
				// Badger rounds expiries up to the second.
				if got := e.ExpiresAt.Sub(start); got < want-time.Second || got > want+2*time.Second {
					t.Errorf("%q expires in %v, want %v", e.Key, got, want)
				}
			}
		})
	}
	t.Run("dropped by the engine", func(t *testing.T) {
		token, err := s.CreateSession(Hash{3}, "k3", "/", SessionLimits{Idle: time.Hour, Absolute: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		id := sessionID(token)
		gone := func() bool {
			for _, e := range sessionEntries(t, s) {
				if strings.HasSuffix(string(e.Key), string(id[:])) {
					return false
				}
			}
			return true
		}
		if gone() {
			t.Fatal("the session was not stored")
		}
		within(t, "the engine drops the dead session", 5*time.Second, gone)
	})
}

// TestSessionsPerKey: a sign-in beyond SessionLimits.PerKey ends the key's
// oldest session; other keys' sessions are not affected; ending a session
// removes its index entry.
func TestSessionsPerKey(t *testing.T) {
	clock := newTestClock()
	s := openStoreOpts(t, Options{Now: clock.Now})
	other, err := s.CreateSession(Hash{9}, "other", "/", pageLimits)
	if err != nil {
		t.Fatal(err)
	}
	var tokens []string
	for range pageLimits.PerKey + 2 {
		clock.Advance(time.Second)
		token, err := s.CreateSession(Hash{1}, "k1", "/", pageLimits)
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, token)
	}
	for i, token := range tokens {
		if i < 2 {
			wantEnded(t, s, token, "/")
		} else {
			mustSession(t, s, token, "/")
		}
	}
	mustSession(t, s, other, "/")
	if n, err := s.SessionCount("k1"); err != nil || n != pageLimits.PerKey {
		t.Errorf("%d sessions of the key (%v), want %d", n, err, pageLimits.PerKey)
	}
	if err := s.EndSession(tokens[3]); err != nil {
		t.Fatal(err)
	}
	wantEnded(t, s, tokens[3], "/")
	if n, err := s.SessionCount("k1"); err != nil || n != pageLimits.PerKey-1 {
		t.Errorf("%d sessions of the key after a sign-out (%v), want %d", n, err, pageLimits.PerKey-1)
	}
	// 1 other + PerKey-1 sessions with their index entries.
	if n := len(sessionEntries(t, s)); n != 2*pageLimits.PerKey {
		t.Errorf("%d entries, want %d: the ended sessions' entries are left", n, 2*pageLimits.PerKey)
	}
	if err := s.EndSession(tokens[3]); err != nil {
		t.Errorf("ending an ended session: %v", err)
	}
}

// TestSessionsAcrossReplicas: two stores on one Redis, as two Caddy
// replicas behind a load balancer without sticky sessions. A session
// created on one is found on the other, a touch on one is seen by the
// other, and a sign-out on one ends it on both at once.
func TestSessionsAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	clock := newTestClock()
	rs := replicasNS(t, srv, 2, "sessions:", Options{Now: clock.Now})
	a, b := rs[0], rs[1]
	token, err := a.CreateSession(Hash{1}, "k1", "/manage/", pageLimits)
	if err != nil {
		t.Fatal(err)
	}
	mustSession(t, b, token, "/manage/")
	wantEnded(t, b, token, "/other/")
	clock.Advance(SessionTouchInterval)
	if wrote, err := b.TouchSession(token, mustSession(t, b, token, "/manage/"), pageLimits); err != nil || !wrote {
		t.Fatalf("touch on b: %v %v", wrote, err)
	}
	if ss := mustSession(t, a, token, "/manage/"); !ss.LastSeen.Equal(clock.Now()) {
		t.Errorf("a sees last seen %v, want b's touch at %v", ss.LastSeen, clock.Now())
	}
	if err := b.EndSession(token); err != nil {
		t.Fatal(err)
	}
	wantEnded(t, a, token, "/manage/")
	wantEnded(t, b, token, "/manage/")
	// a's touch with what it read before the sign-out does not bring the
	// session back.
	if _, err := a.TouchSession(token, &Session{LastSeen: clock.Now().Add(-time.Hour)}, pageLimits); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("a's touch after b's sign-out: %v", err)
	}
	// The per-key bound holds across replicas: sign-ins on both count
	// together.
	for i := range pageLimits.PerKey + 1 {
		clock.Advance(time.Second)
		if _, err := rs[i%2].CreateSession(Hash{2}, "k2", "/manage/", pageLimits); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range rs {
		if n, err := s.SessionCount("k2"); err != nil || n != pageLimits.PerKey {
			t.Errorf("%d sessions of k2 (%v), want %d", n, err, pageLimits.PerKey)
		}
	}
}
