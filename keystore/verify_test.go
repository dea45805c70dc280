package keystore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// testClock is a clock a test moves by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// openStoreOpts opens a store in a new temporary directory (unless opts
// names one) and closes it at the end of the test.
func openStoreOpts(t testing.TB, opts Options) *Store {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	withTestEngine(t, &opts)
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// repeatUntilStopped calls fn over and over in a goroutine until the
// returned stop is called; stop waits for the last call to end.
func repeatUntilStopped(fn func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
				fn()
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

func mustCreate(t testing.TB, s *Store, f Format, nk NewKey) (*Key, string) {
	t.Helper()
	if nk.Name == "" {
		nk.Name = "test key"
	}
	if nk.Scopes == nil {
		nk.Scopes = []string{"contacts:write"}
	}
	k, plain, err := s.CreateKey(nk, f, "test")
	if err != nil {
		t.Fatal(err)
	}
	return k, plain
}

func mustScope(t testing.TB, s string) Scope {
	t.Helper()
	sc, err := ParseScope(s)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func setAccountStatus(t testing.TB, s *Store, id, status string) {
	t.Helper()
	if _, err := s.UpdateAccount(id, AccountPatch{Status: &status}); err != nil {
		t.Fatal(err)
	}
}

// verifyOutcome verifies cred and fails the test unless the outcome is want.
func verifyOutcome(t testing.TB, v *Verifier, cred string, req string, want Outcome) Result {
	t.Helper()
	var sc Scope
	if req != "" {
		sc = mustScope(t, req)
	}
	res, err := v.Verify(cred, sc, req != "")
	if err != nil {
		t.Fatalf("Verify(%q): %v", cred, err)
	}
	if res.Outcome != want {
		t.Fatalf("Verify(%q, %q) = %s, want %s", cred, req, res.Outcome.Code(), want.Code())
	}
	return res
}

func TestOutcomeCode(t *testing.T) {
	for i, tc := range []struct {
		o    Outcome
		want string
	}{
		{OK, "ok"},
		{MissingKey, "missing_key"},
		{MalformedKey, "malformed_key"},
		{InvalidKey, "invalid_key"},
		{KeyRevoked, "key_revoked"},
		{KeyExpired, "key_expired"},
		{AccountInactive, "account_inactive"},
		{InsufficientScope, "insufficient_scope"},
		{Outcome(200), "unknown"},
	} {
		if got := tc.o.Code(); got != tc.want {
			t.Errorf("test %d: Code() = %q, want %q", i, got, tc.want)
		}
	}
}

// TestVerifyOutcomes builds one store with keys in every state and checks
// every outcome of the verification order.
func TestVerifyOutcomes(t *testing.T) {
	clock := newTestClock()
	s := openStoreOpts(t, Options{Now: clock.Now})
	f := DefaultFormat()
	v := &Verifier{Store: s, Format: f}

	for _, a := range []string{"acme", "gone", "late", "ending", "fresh", "suspended"} {
		if _, err := s.CreateAccount(Account{ID: a}); err != nil {
			t.Fatal(err)
		}
	}

	in1h := clock.Now().Add(time.Hour)
	good, goodPlain := mustCreate(t, s, f, NewKey{Name: "good", Account: "acme", Scopes: []string{"contacts:write", "invoices:read"}})
	_, revokedPlain := mustCreate(t, s, f, NewKey{Name: "revoked"})
	_, expiringPlain := mustCreate(t, s, f, NewKey{Name: "expiring", ExpiresAt: &in1h})
	_, revExpPlain := mustCreate(t, s, f, NewKey{Name: "revoked and expiring", ExpiresAt: &in1h})
	_, deletedPlain := mustCreate(t, s, f, NewKey{Name: "deleted"})
	_, regenPlain := mustCreate(t, s, f, NewKey{Name: "regenerated"})
	_, suspPlain := mustCreate(t, s, f, NewKey{Name: "of a suspended account", Account: "suspended"})
	_, suspRevokedPlain := mustCreate(t, s, f, NewKey{Name: "revoked, suspended account", Account: "suspended"})
	_, suspExpiringPlain := mustCreate(t, s, f, NewKey{Name: "expiring, suspended account", Account: "suspended", ExpiresAt: &in1h})
	keyFor := map[string]string{}
	for _, a := range []string{"gone", "late", "ending", "fresh"} {
		_, keyFor[a] = mustCreate(t, s, f, NewKey{Name: "of " + a, Account: a, Scopes: []string{"contacts:read"}})
	}

	// Warm the cache with every key while it is valid, so that the checks
	// below prove that mutations reach cached entries.
	for _, p := range []string{goodPlain, revokedPlain, expiringPlain, revExpPlain, deletedPlain, regenPlain, suspPlain, suspRevokedPlain, suspExpiringPlain} {
		verifyOutcome(t, v, p, "", OK)
	}

	byPlain := func(plain string) string {
		t.Helper()
		res, err := v.Verify(plain, Scope{}, false)
		if err != nil || res.Key == nil {
			t.Fatalf("looking up %q: %v %v", plain, res.Outcome.Code(), err)
		}
		return res.Key.ID
	}
	for _, p := range []string{revokedPlain, revExpPlain, suspRevokedPlain} {
		if _, err := s.RevokeKey(byPlain(p), "test"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteKey(byPlain(deletedPlain)); err != nil {
		t.Fatal(err)
	}
	_, regenNew, err := s.RegenerateKey(byPlain(regenPlain), f, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	setAccountStatus(t, s, "suspended", AccountSuspended)
	setAccountStatus(t, s, "gone", AccountTerminated)
	setAccountStatus(t, s, "late", AccountPastDue)
	setAccountStatus(t, s, "ending", AccountPendingCancel)
	// "fresh" stays open.

	unknown, err := f.Generate()
	if err != nil {
		t.Fatal(err)
	}
	otherFormat, err := Format{Prefix: "bme_", Length: 43}.Generate()
	if err != nil {
		t.Fatal(err)
	}

	type row struct {
		name   string
		cred   string
		req    string
		want   Outcome
		status string // AccountStatus, if checked
	}
	check := func(rows []row) {
		t.Helper()
		for i, tc := range rows {
			var sc Scope
			if tc.req != "" {
				sc = mustScope(t, tc.req)
			}
			res, err := v.Verify(tc.cred, sc, tc.req != "")
			if err != nil {
				t.Errorf("test %d (%s): %v", i, tc.name, err)
				continue
			}
			if res.Outcome != tc.want {
				t.Errorf("test %d (%s): outcome %s, want %s", i, tc.name, res.Outcome.Code(), tc.want.Code())
				continue
			}
			switch tc.want {
			case MissingKey, MalformedKey, InvalidKey:
				if res.Key != nil {
					t.Errorf("test %d (%s): Key set for %s", i, tc.name, tc.want.Code())
				}
			default:
				if res.Key == nil {
					t.Errorf("test %d (%s): no Key for %s", i, tc.name, tc.want.Code())
				}
			}
			if tc.status != "" && res.AccountStatus != tc.status {
				t.Errorf("test %d (%s): AccountStatus %q, want %q", i, tc.name, res.AccountStatus, tc.status)
			}
			if tc.req != "" && res.Key != nil && res.Required != sc {
				t.Errorf("test %d (%s): Required %v, want %v", i, tc.name, res.Required, sc)
			}
		}
	}

	check([]row{
		{"empty", "", "", MissingKey, ""},
		{"empty with scope", "", "contacts:read", MissingKey, ""},
		{"garbage", "hello", "", MalformedKey, ""},
		{"bad checksum", goodPlain[:len(goodPlain)-1] + string("ab"[boolIdx(goodPlain[len(goodPlain)-1] == 'a')]), "", MalformedKey, ""},
		{"other format", otherFormat, "", MalformedKey, ""},
		{"with trailing space", goodPlain + " ", "", MalformedKey, ""},
		{"unknown", unknown, "", InvalidKey, ""},
		{"unknown with scope", unknown, "contacts:read", InvalidKey, ""},
		{"deleted", deletedPlain, "", InvalidKey, ""},
		{"replaced by regenerate", regenPlain, "", InvalidKey, ""},
		{"regenerated", regenNew, "", OK, AccountOpen},
		{"revoked", revokedPlain, "", KeyRevoked, AccountOpen},
		{"revoked, scope missing", revokedPlain, "orders:delete", KeyRevoked, ""},
		{"revoked and expiring", revExpPlain, "", KeyRevoked, ""},
		{"expiring, not yet", expiringPlain, "", OK, ""},
		{"suspended", suspPlain, "", AccountInactive, AccountSuspended},
		{"suspended, scope missing", suspPlain, "orders:delete", AccountInactive, AccountSuspended},
		{"revoked, suspended account", suspRevokedPlain, "", KeyRevoked, AccountSuspended},
		{"expiring, suspended account", suspExpiringPlain, "", AccountInactive, AccountSuspended},
		{"terminated", keyFor["gone"], "", AccountInactive, AccountTerminated},
		{"past_due", keyFor["late"], "", AccountInactive, AccountPastDue},
		{"pending_cancel", keyFor["ending"], "contacts:read", OK, AccountPendingCancel},
		{"open", keyFor["fresh"], "contacts:read", OK, AccountOpen},
		{"pending_cancel, scope missing", keyFor["ending"], "contacts:write", InsufficientScope, AccountPendingCancel},
		{"no scope required", goodPlain, "", OK, AccountOpen},
		{"write grants read", goodPlain, "contacts:read", OK, ""},
		{"write grants write", goodPlain, "contacts:write", OK, ""},
		{"write does not grant delete", goodPlain, "contacts:delete", InsufficientScope, ""},
		{"read does not grant write", goodPlain, "invoices:write", InsufficientScope, ""},
		{"other resource", goodPlain, "orders:read", InsufficientScope, ""},
	})

	// One second before the expiry the key still works; at expires_at it
	// is expired (expires_at <= now).
	clock.Advance(time.Hour - time.Second)
	check([]row{
		{"expiring, 1s left", expiringPlain, "", OK, ""},
		{"revoked and expiring, 1s left", revExpPlain, "", KeyRevoked, ""},
	})
	clock.Advance(time.Second)
	check([]row{
		{"expired", expiringPlain, "", KeyExpired, AccountOpen},
		{"expired, scope missing", expiringPlain, "orders:delete", KeyExpired, ""},
		{"revoked and expired", revExpPlain, "", KeyRevoked, ""},
		{"expired, suspended account", suspExpiringPlain, "", KeyExpired, AccountSuspended},
		{"revoked, suspended account (later)", suspRevokedPlain, "", KeyRevoked, AccountSuspended},
		{"good", goodPlain, "contacts:read", OK, ""},
	})

	// Re-opening the account lets its keys through again, at once.
	setAccountStatus(t, s, "suspended", AccountOpen)
	check([]row{
		{"re-opened", suspPlain, "", OK, AccountOpen},
		{"re-opened, revoked", suspRevokedPlain, "", KeyRevoked, AccountOpen},
	})

	// The result of OK carries the identity.
	res := verifyOutcome(t, v, goodPlain, "contacts:read", OK)
	if res.Key.ID != good.ID || res.Key.Name != "good" || res.Key.Account != "acme" || res.Key.Type != DefaultKeyType {
		t.Errorf("identity: %+v", res.Key)
	}
	if res.ScopeHeader != "contacts:write invoices:read" {
		t.Errorf("ScopeHeader = %q", res.ScopeHeader)
	}
	if len(res.Scopes) != 2 || res.Scopes[0] != (Scope{"contacts", AccessWrite}) || res.Scopes[1] != (Scope{"invoices", AccessRead}) {
		t.Errorf("Scopes = %v", res.Scopes)
	}
	if res.Required != (Scope{"contacts", AccessRead}) {
		t.Errorf("Required = %v", res.Required)
	}
	if res.Key.Hash != HashKey(goodPlain) {
		t.Error("Key.Hash is not the hash of the key")
	}
}

func boolIdx(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestVerifyMutations checks that every mutation through the store applies
// to the very next verification, for a key that is in the cache.
func TestVerifyMutations(t *testing.T) {
	clock := newTestClock()
	s := openStoreOpts(t, Options{Now: clock.Now})
	f := DefaultFormat()
	v := &Verifier{Store: s, Format: f}
	k, plain := mustCreate(t, s, f, NewKey{Scopes: []string{"contacts:read"}})

	for i, tc := range []struct {
		name   string
		mutate func()
		req    string
		want   Outcome
	}{
		{"created", func() {}, "contacts:read", OK},
		{"needs write", func() {}, "contacts:write", InsufficientScope},
		{"scopes widened", func() {
			if _, err := s.UpdateKey(k.ID, KeyPatch{Scopes: []string{"contacts:write"}}, "t"); err != nil {
				t.Fatal(err)
			}
		}, "contacts:write", OK},
		{"scopes narrowed", func() {
			if _, err := s.UpdateKey(k.ID, KeyPatch{Scopes: []string{"orders:read"}}, "t"); err != nil {
				t.Fatal(err)
			}
		}, "contacts:read", InsufficientScope},
		{"revoked", func() {
			if _, err := s.RevokeKey(k.ID, "t"); err != nil {
				t.Fatal(err)
			}
		}, "orders:read", KeyRevoked},
		{"activated", func() {
			if _, err := s.ActivateKey(k.ID, "t"); err != nil {
				t.Fatal(err)
			}
		}, "orders:read", OK},
		{"expiry set", func() {
			at := clock.Now().Add(time.Minute)
			if _, err := s.UpdateKey(k.ID, KeyPatch{ExpiresAt: &at}, "t"); err != nil {
				t.Fatal(err)
			}
		}, "orders:read", OK},
		{"expired", func() { clock.Advance(time.Minute) }, "orders:read", KeyExpired},
		{"expiry cleared", func() {
			if _, err := s.UpdateKey(k.ID, KeyPatch{ClearExpires: true}, "t"); err != nil {
				t.Fatal(err)
			}
		}, "orders:read", OK},
		{"account suspended", func() { setAccountStatus(t, s, DefaultAccount, AccountSuspended) }, "orders:read", AccountInactive},
		{"account pending_cancel", func() { setAccountStatus(t, s, DefaultAccount, AccountPendingCancel) }, "orders:read", OK},
		{"account past_due", func() { setAccountStatus(t, s, DefaultAccount, AccountPastDue) }, "orders:read", AccountInactive},
		{"account open", func() { setAccountStatus(t, s, DefaultAccount, AccountOpen) }, "orders:read", OK},
		{"deleted", func() {
			if err := s.DeleteKey(k.ID); err != nil {
				t.Fatal(err)
			}
		}, "orders:read", InvalidKey},
	} {
		tc.mutate()
		res, err := v.Verify(plain, mustScope(t, tc.req), true)
		if err != nil {
			t.Fatalf("test %d (%s): %v", i, tc.name, err)
		}
		if res.Outcome != tc.want {
			t.Errorf("test %d (%s): %s, want %s", i, tc.name, res.Outcome.Code(), tc.want.Code())
		}
	}
}

func TestVerifyRegenerateGrace(t *testing.T) {
	clock := newTestClock()
	s := openStoreOpts(t, Options{Now: clock.Now})
	f := DefaultFormat()
	v := &Verifier{Store: s, Format: f}

	k, first := mustCreate(t, s, f, NewKey{})
	verifyOutcome(t, v, first, "contacts:read", OK)

	// Regenerate with a grace period: both strings work until it ends.
	k2, second, err := s.RegenerateKey(k.ID, f, 10*time.Minute, "t")
	if err != nil {
		t.Fatal(err)
	}
	if k2.ID != k.ID {
		t.Fatalf("regenerate changed the id: %s -> %s", k.ID, k2.ID)
	}
	if !k2.PrevUntil.Equal(clock.Now().Add(10 * time.Minute)) {
		t.Errorf("PrevUntil = %v", k2.PrevUntil)
	}
	res := verifyOutcome(t, v, first, "contacts:read", OK)
	if res.Key.ID != k.ID {
		t.Errorf("old string verified as %s", res.Key.ID)
	}
	verifyOutcome(t, v, second, "contacts:read", OK)

	// Mutations apply to the old string as well during the grace period.
	if _, err := s.RevokeKey(k.ID, "t"); err != nil {
		t.Fatal(err)
	}
	verifyOutcome(t, v, first, "", KeyRevoked)
	verifyOutcome(t, v, second, "", KeyRevoked)
	if _, err := s.ActivateKey(k.ID, "t"); err != nil {
		t.Fatal(err)
	}
	verifyOutcome(t, v, first, "", OK)
	verifyOutcome(t, v, second, "", OK)

	clock.Advance(10*time.Minute - time.Nanosecond)
	verifyOutcome(t, v, first, "", OK)
	clock.Advance(time.Nanosecond)
	verifyOutcome(t, v, first, "", InvalidKey)
	verifyOutcome(t, v, second, "", OK)

	// A second regenerate within a grace period ends the first's at once.
	_, third, err := s.RegenerateKey(k.ID, f, time.Hour, "t")
	if err != nil {
		t.Fatal(err)
	}
	_, fourth, err := s.RegenerateKey(k.ID, f, time.Hour, "t")
	if err != nil {
		t.Fatal(err)
	}
	verifyOutcome(t, v, second, "", InvalidKey)
	verifyOutcome(t, v, third, "", OK)
	verifyOutcome(t, v, fourth, "", OK)

	// Without a grace period the old string fails at once.
	_, fifth, err := s.RegenerateKey(k.ID, f, 0, "t")
	if err != nil {
		t.Fatal(err)
	}
	verifyOutcome(t, v, third, "", InvalidKey)
	verifyOutcome(t, v, fourth, "", InvalidKey)
	verifyOutcome(t, v, fifth, "", OK)

	// The old string is the key's until its grace period ends: expired
	// with the key (key_expired, as the outside review asked; it was
	// invalid_key), then unknown.
	at := clock.Now().Add(time.Minute)
	if _, err := s.UpdateKey(k.ID, KeyPatch{ExpiresAt: &at}, "t"); err != nil {
		t.Fatal(err)
	}
	_, sixth, err := s.RegenerateKey(k.ID, f, time.Hour, "t")
	if err != nil {
		t.Fatal(err)
	}
	verifyOutcome(t, v, fifth, "", OK)
	verifyOutcome(t, v, sixth, "", OK)
	clock.Advance(time.Minute)
	verifyOutcome(t, v, fifth, "", KeyExpired)
	verifyOutcome(t, v, sixth, "", KeyExpired)
	// Extended again within the grace period, both strings work.
	later := clock.Now().Add(time.Hour)
	if _, err := s.UpdateKey(k.ID, KeyPatch{ExpiresAt: &later}, "t"); err != nil {
		t.Fatal(err)
	}
	verifyOutcome(t, v, fifth, "", OK)
	verifyOutcome(t, v, sixth, "", OK)
	clock.Advance(time.Hour)
	// After the grace period (and the new expiry) the old string is no
	// longer the key's.
	verifyOutcome(t, v, fifth, "", InvalidKey)
	verifyOutcome(t, v, sixth, "", KeyExpired)

	// Deleting the key ends every string.
	if err := s.DeleteKey(k.ID); err != nil {
		t.Fatal(err)
	}
	verifyOutcome(t, v, sixth, "", InvalidKey)
}

// TestVerifyGraceFromBadger checks the grace period of a string that is not
// in the cache (read back from Badger after a restart).
func TestVerifyGraceFromBadger(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	s, err := testOpen(t, Options{Dir: dir, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	f := DefaultFormat()
	k, first := mustCreate(t, s, f, NewKey{})
	_, second, err := s.RegenerateKey(k.ID, f, time.Hour, "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStoreOpts(t, Options{Dir: dir, Now: clock.Now})
	v := &Verifier{Store: s, Format: f}
	verifyOutcome(t, v, first, "", OK)
	verifyOutcome(t, v, second, "", OK)
	clock.Advance(time.Hour)
	verifyOutcome(t, v, first, "", InvalidKey)
	verifyOutcome(t, v, second, "", OK)
}

// TestExpiredGraceStringImportedAsAnotherKey: once the hash entry of a
// grace-period string has expired, the string may be imported as another
// key B; regenerating, deleting or purging the first key A (whose record
// still names the old hash) must leave B's hash entry alone. (They deleted
// it, and B was refused as invalid_key from then on.) The entry's expiry,
// which Badger applies by its TTL in whole seconds, is applied here by
// deleting the entry, which is what a reader then sees.
func TestExpiredGraceStringImportedAsAnotherKey(t *testing.T) {
	f := DefaultFormat()
	for _, tc := range []struct {
		name string
		op   func(s *Store, id string) error
	}{
		{"regenerate", func(s *Store, id string) error {
			_, _, err := s.RegenerateKey(id, f, 0, "t")
			return err
		}},
		{"regenerate with grace", func(s *Store, id string) error {
			_, _, err := s.RegenerateKey(id, f, time.Hour, "t")
			return err
		}},
		{"delete", func(s *Store, id string) error { return s.DeleteKey(id) }},
		{"purge", func(s *Store, id string) error {
			if _, err := s.RevokeKey(id, "t"); err != nil {
				return err
			}
			n, err := s.PurgeRevoked(context.Background(), time.Now().Add(time.Hour))
			if err == nil && n != 1 {
				err = fmt.Errorf("purged %d keys, want 1", n)
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t)
			v := &Verifier{Store: s, Format: f}
			a, old := mustCreate(t, s, f, NewKey{})
			if _, _, err := s.RegenerateKey(a.ID, f, time.Minute, "t"); err != nil {
				t.Fatal(err)
			}
			if err := s.update(func(tx txn) error { return tx.del(keyH(HashKey(old))) }); err != nil {
				t.Fatal(err)
			}
			s.cache.invalidate(HashKey(old))
			verifyOutcome(t, v, old, "", InvalidKey)
			b, err := s.ImportKeys([]ImportKey{{Key: old, NewKey: NewKey{Name: "b", Scopes: []string{"a:read"}}}}, f, "t")
			if err != nil {
				t.Fatal(err)
			}
			if res, err := v.Verify(old, Scope{}, false); err != nil || res.Outcome != OK || res.Key.ID != b[0].ID {
				t.Fatalf("the imported key before: %v %v", res.Outcome.Code(), err)
			}
			if err := tc.op(s, a.ID); err != nil {
				t.Fatal(err)
			}
			if res, err := v.Verify(old, Scope{}, false); err != nil || res.Outcome != OK || res.Key.ID != b[0].ID {
				t.Fatalf("the imported key after a %s of another key: %v %v", tc.name, res.Outcome.Code(), err)
			}
		})
	}
}

func TestVerifyForeign(t *testing.T) {
	s := openTestStore(t)
	f := DefaultFormat()
	strict := &Verifier{Store: s, Format: f}
	lenient := &Verifier{Store: s, Format: f, AcceptForeign: true}

	foreign20 := "legacy-key_00000001!"      // 20 printable characters
	foreign16 := "sk-live-0123abcd"          // 16: the shortest accepted
	foreign256 := strings.Repeat("Zz9~", 64) // 256: the longest accepted
	foreign15 := "sk-live-0123abc"           // 15: too short
	foreign257 := strings.Repeat("Zz9~", 64) + "x"
	nonPrintable := "legacy\x01key_000000001" // 20, with a control character
	withSpace := "legacy key_000000000001"    // a space is not printable here
	nonASCII := "legacy-kéy_000000001"        // 20 bytes, non-ASCII
	bmeKey, err := Format{Prefix: "bme_", Length: 43}.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if len(foreign20) != 20 || len(foreign16) != 16 || len(foreign256) != 256 || len(foreign15) != 15 || len(foreign257) != 257 || len(nonPrintable) != 20 || len(withSpace) < 16 || len(nonASCII) < 16 {
		t.Fatal("fixture lengths are wrong")
	}

	imports := []ImportKey{
		{Key: foreign20, NewKey: NewKey{Name: "foreign 20", Scopes: []string{"contacts:read"}}},
		{Key: foreign16, NewKey: NewKey{Name: "foreign 16", Scopes: []string{"contacts:read"}}},
		{Key: foreign256, NewKey: NewKey{Name: "foreign 256", Scopes: []string{"contacts:read"}}},
		{Key: bmeKey, NewKey: NewKey{Name: "bme", Scopes: []string{"contacts:read"}}},
		// These cannot be given as plaintext, but their hashes can be
		// imported: they must still never verify.
		{SHA256: sha256Hex(foreign15), NewKey: NewKey{Name: "foreign 15", Scopes: []string{"contacts:read"}}},
		{SHA256: sha256Hex(foreign257), NewKey: NewKey{Name: "foreign 257", Scopes: []string{"contacts:read"}}},
		{SHA256: sha256Hex(nonPrintable), NewKey: NewKey{Name: "non-printable", Scopes: []string{"contacts:read"}}},
		{SHA256: strings.ToUpper(sha256Hex(withSpace)), NewKey: NewKey{Name: "space", Scopes: []string{"contacts:read"}}},
		{SHA256: sha256Hex(nonASCII), NewKey: NewKey{Name: "non-ASCII", Scopes: []string{"contacts:read"}}},
	}
	keys, err := s.ImportKeys(imports, f, "test")
	if err != nil {
		t.Fatal(err)
	}
	if keys[0].Hint != "…001!" { // 20 characters: too short to show the start
		t.Errorf("hint of a foreign key: %q", keys[0].Hint)
	}
	if keys[4].Hint != "…" {
		t.Errorf("hint of a key imported by hash: %q", keys[4].Hint)
	}

	for i, tc := range []struct {
		cred            string
		strict, lenient Outcome
	}{
		{foreign20, MalformedKey, OK},
		{foreign16, MalformedKey, OK},
		{foreign256, MalformedKey, OK},
		{bmeKey, MalformedKey, OK},
		{foreign15, MalformedKey, MalformedKey},
		{foreign257, MalformedKey, MalformedKey},
		{nonPrintable, MalformedKey, MalformedKey},
		{withSpace, MalformedKey, MalformedKey},
		{nonASCII, MalformedKey, MalformedKey},
		{"legacy-key_00000002!", MalformedKey, InvalidKey},
		{"", MissingKey, MissingKey},
	} {
		for _, vv := range []struct {
			v    *Verifier
			want Outcome
		}{{strict, tc.strict}, {lenient, tc.lenient}} {
			res, err := vv.v.Verify(tc.cred, mustScope(t, "contacts:read"), true)
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != vv.want {
				t.Errorf("test %d: AcceptForeign=%v Verify(%q) = %s, want %s", i, vv.v.AcceptForeign, tc.cred, res.Outcome.Code(), vv.want.Code())
			}
		}
	}

	// Keys of the configured format still verify with AcceptForeign.
	_, plain := mustCreate(t, s, f, NewKey{})
	verifyOutcome(t, lenient, plain, "", OK)
	verifyOutcome(t, strict, plain, "", OK)
	// A native-looking key with a bad checksum is looked up (and unknown).
	bad := plain[:len(plain)-1] + string("ab"[boolIdx(plain[len(plain)-1] == 'a')])
	verifyOutcome(t, strict, bad, "", MalformedKey)
	verifyOutcome(t, lenient, bad, "", InvalidKey)
}

func TestVerifyUnknownAccount(t *testing.T) {
	// A key whose account is gone (only possible by editing the store)
	// is refused as unknown rather than crashing the verifier.
	s := openTestStore(t)
	f := DefaultFormat()
	if _, err := s.CreateAccount(Account{ID: "tmp"}); err != nil {
		t.Fatal(err)
	}
	_, plain := mustCreate(t, s, f, NewKey{Account: "tmp"})
	s.acctMu.Lock()
	delete(s.accounts, "tmp")
	s.acctIndex.Delete("tmp")
	s.acctMu.Unlock()
	verifyOutcome(t, &Verifier{Store: s, Format: f}, plain, "", InvalidKey)
}

func TestVerifyHitDoesNotAllocate(t *testing.T) {
	s := openTestStore(t)
	f := DefaultFormat()
	v := &Verifier{Store: s, Format: f}
	_, plain := mustCreate(t, s, f, NewKey{Scopes: []string{"contacts:write", "orders:read"}})
	req := mustScope(t, "contacts:read")
	verifyOutcome(t, v, plain, "contacts:read", OK) // fill the cache
	for i, tc := range []struct {
		cred      string
		req       Scope
		needScope bool
	}{
		{plain, req, true},
		{plain, Scope{}, false},
		{plain, mustScope(t, "orders:write"), true}, // insufficient_scope
		{"", Scope{}, false},
		{plain[:len(plain)-1], req, true}, // malformed
	} {
		n := testing.AllocsPerRun(1000, func() {
			if _, err := v.Verify(tc.cred, tc.req, tc.needScope); err != nil {
				t.Fatal(err)
			}
		})
		if n != 0 {
			t.Errorf("test %d: Verify allocates %v times per call", i, n)
		}
	}
}

// TestChecksumAfterCache: the checksum is checked after the cache and
// before the filter and the store. A key of the right shape with a wrong
// checksum is malformed and reads nothing (no miss counted, no store
// read); a key found in an entry that VerifyHash filled (which never saw
// the plaintext) still has its whole format checked.
func TestChecksumAfterCache(t *testing.T) {
	s := openStoreOpts(t, Options{})
	f := DefaultFormat()
	v := &Verifier{Store: s, Format: f, DefaultLimit: &Limit{}}
	_, plain := mustCreate(t, s, f, NewKey{})
	verifyOutcome(t, v, plain, "", OK)
	last := plain[len(plain)-1]
	bad := plain[:len(plain)-1] + string(map[bool]byte{true: 'B', false: 'A'}[last == 'A'])
	if f.CheckShape(bad) != nil || f.Check(bad) == nil {
		t.Fatalf("%q: want the shape right and the checksum wrong", bad)
	}
	misses, reads := s.stats.cacheMisses.Load(), s.missReads.Load()
	verifyOutcome(t, v, bad, "", MalformedKey)
	if s.stats.cacheMisses.Load() != misses || s.missReads.Load() != reads {
		t.Errorf("a wrong checksum was looked up past the cache: misses %d->%d, store reads %d->%d",
			misses, s.stats.cacheMisses.Load(), reads, s.missReads.Load())
	}

	// A key stored under a format without checksum, of the same length as
	// the verifier's: VerifyHash caches it, and the plaintext is still
	// refused by the verifier whose format has a checksum.
	plainFormat := Format{Prefix: f.Prefix, Length: f.Length + ChecksumLength}
	_, other := mustCreate(t, s, plainFormat, NewKey{})
	if f.CheckShape(other) != nil || f.Check(other) == nil {
		t.Fatalf("%q: want the shape right and the checksum wrong", other)
	}
	if res, err := v.VerifyHash(HashKey(other), Scope{}, false); err != nil || res.Outcome != OK {
		t.Fatalf("VerifyHash: %v %v", res.Outcome, err)
	}
	if s.cache.get(HashKey(other)) == nil {
		t.Fatal("VerifyHash did not cache the key")
	}
	verifyOutcome(t, v, other, "", MalformedKey)
	verifyOutcome(t, &Verifier{Store: s, Format: plainFormat, DefaultLimit: &Limit{}}, other, "", OK)

	// A reload that turns the checksum on (the store and its cache stay
	// open): a key that the old config's verifier cached is checked as a
	// new one would be, and refused.
	_, third := mustCreate(t, s, plainFormat, NewKey{})
	verifyOutcome(t, &Verifier{Store: s, Format: plainFormat, DefaultLimit: &Limit{}}, third, "", OK)
	if s.cache.get(HashKey(third)) == nil {
		t.Fatal("the key was not cached")
	}
	if f.CheckShape(third) != nil || f.Check(third) == nil {
		t.Fatalf("%q: want the shape right and the checksum wrong", third)
	}
	verifyOutcome(t, v, third, "", MalformedKey)
	// And one that turns foreign keys off: a foreign key cached while they
	// were accepted is refused.
	foreign := &Verifier{Store: s, Format: f, AcceptForeign: true, DefaultLimit: &Limit{}}
	verifyOutcome(t, foreign, third, "", OK)
	verifyOutcome(t, v, third, "", MalformedKey)
}
