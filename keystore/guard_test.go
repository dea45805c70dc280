package keystore

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestGuardRechecksAfterAConcurrentWrite: a guarded mutation whose key is
// changed by another writer after the mutation's transaction read it runs
// its guard again on the key as changed, and the guard's refusal leaves
// the key as the other writer left it. Here the other writer adds a scope
// from inside the first call of the guard, which is after the read and
// before the commit: the commit conflicts, Badger's retry reads the key
// again, and the guard refuses the stronger key.
func TestGuardRechecksAfterAConcurrentWrite(t *testing.T) {
	errStronger := errors.New("the key has a scope the caller lacks")
	f := DefaultFormat()
	for _, tc := range []struct {
		name   string
		revoke bool // revoke the key first (for activate)
		mutate func(s *Store, id string, g Guard) error
	}{
		{"regenerate", false, func(s *Store, id string, g Guard) error {
			_, _, err := s.RegenerateKeyIf(id, g, f, 0, "weak")
			return err
		}},
		{"activate", true, func(s *Store, id string, g Guard) error {
			active := true
			_, err := s.UpdateKeyIf(id, g, KeyPatch{Active: &active}, "weak")
			return err
		}},
		{"patch", false, func(s *Store, id string, g Guard) error {
			name := "renamed"
			_, err := s.UpdateKeyIf(id, g, KeyPatch{Name: &name}, "weak")
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t)
			k, _, err := s.CreateKey(NewKey{Name: "target", Scopes: []string{"contacts:read"}}, f, "admin")
			if err != nil {
				t.Fatal(err)
			}
			if tc.revoke {
				if k, err = s.RevokeKey(k.ID, "admin"); err != nil {
					t.Fatal(err)
				}
			}
			calls := 0
			guard := func(cur *Key) error {
				calls++
				if calls == 1 {
					stronger := []string{"billing:write", "contacts:read"}
					if _, err := s.UpdateKey(k.ID, KeyPatch{Scopes: stronger}, "admin"); err != nil {
						t.Fatal(err)
					}
				}
				if slices.Contains(cur.Scopes, "billing:write") {
					return errStronger
				}
				return nil
			}
			if err := tc.mutate(s, k.ID, guard); !errors.Is(err, errStronger) {
				t.Fatalf("guarded %s of a key made stronger meanwhile: err %v, want the guard's refusal", tc.name, err)
			}
			if calls != 2 {
				t.Errorf("guard called %d times, want 2 (once per attempt)", calls)
			}
			got, err := s.Key(k.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Hash != k.Hash || got.PrevHash != nil || got.Name != "target" || (got.RevokedAt == nil) != (k.RevokedAt == nil) {
				t.Errorf("the refused %s changed the key: %+v", tc.name, got)
			}
			events, err := s.Audit(k.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range events {
				if e.Actor == "weak" {
					t.Errorf("the refused %s recorded an event: %+v", tc.name, e)
				}
			}
		})
	}
}

// TestGuardNilAndPassing: a nil guard and a passing one change the key as
// the unguarded call does.
func TestGuardNilAndPassing(t *testing.T) {
	s := openTestStore(t)
	f := DefaultFormat()
	k, _, err := s.CreateKey(NewKey{Name: "target", Scopes: []string{"contacts:read"}}, f, "admin")
	if err != nil {
		t.Fatal(err)
	}
	pass := func(*Key) error { return nil }
	for _, g := range []Guard{nil, pass} {
		got, plain, err := s.RegenerateKeyIf(k.ID, g, f, 0, "admin")
		if err != nil || plain == "" || got.Hash != HashKey(plain) {
			t.Fatalf("regenerate with guard %v: %v", g != nil, err)
		}
		name := "n2"
		if got, err = s.UpdateKeyIf(k.ID, g, KeyPatch{Name: &name}, "admin"); err != nil || got.Name != "n2" {
			t.Fatalf("update with guard %v: %+v %v", g != nil, got, err)
		}
	}
}

// TestIssuerRereadAfterConcurrentWrite: an issuer's rule sees the issuer
// as it is when the change commits. Here the operator shortens the
// issuer's expiry from inside the rule's first call (after the
// transaction read the issuer, before it commits): the commit conflicts,
// and the retry runs the rule again on the issuer as changed and on a
// fresh copy of the key.
func TestIssuerRereadAfterConcurrentWrite(t *testing.T) {
	f := DefaultFormat()
	for _, tc := range []struct {
		name   string
		mutate func(s *Store, target string, by *Issuer) (*Key, error)
	}{
		{"create", func(s *Store, _ string, by *Issuer) (*Key, error) {
			k, _, err := s.CreateKeyAs(NewKey{Name: "child", Scopes: []string{"a:read"}}, f, by, "key")
			return k, err
		}},
		{"patch", func(s *Store, target string, by *Issuer) (*Key, error) {
			name := "renamed"
			return s.UpdateKeyAs(target, nil, by, KeyPatch{Name: &name}, "key")
		}},
		{"regenerate", func(s *Store, target string, by *Issuer) (*Key, error) {
			k, _, err := s.RegenerateKeyAs(target, nil, by, f, time.Hour, "key")
			return k, err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t)
			far := time.Now().Add(2 * time.Hour)
			iss, _, err := s.CreateKey(NewKey{Name: "issuer", Scopes: []string{"a:read"}, ExpiresAt: &far}, f, "admin")
			if err != nil {
				t.Fatal(err)
			}
			target, _, err := s.CreateKey(NewKey{Name: "target", Scopes: []string{"a:read"}}, f, "admin")
			if err != nil {
				t.Fatal(err)
			}
			soon := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
			var seen []time.Time
			var asked []*time.Time // the key's expiry as each call got it
			by := &Issuer{KeyID: iss.ID, Check: func(is, k *Key) error {
				seen = append(seen, *is.ExpiresAt)
				asked = append(asked, k.ExpiresAt)
				if len(seen) == 1 {
					if _, err := s.UpdateKey(iss.ID, KeyPatch{ExpiresAt: &soon}, "admin"); err != nil {
						t.Fatal(err)
					}
				}
				if k.ExpiresAt == nil || k.ExpiresAt.After(*is.ExpiresAt) {
					at := *is.ExpiresAt
					k.ExpiresAt = &at // the rule caps the key at the issuer's expiry
				}
				return nil
			}}
			k, err := tc.mutate(s, target.ID, by)
			if err != nil {
				t.Fatal(err)
			}
			if len(seen) != 2 || !seen[1].Equal(soon) {
				t.Fatalf("the rule saw the issuer's expiry as %v, want a second call with %v", seen, soon)
			}
			if asked[1] != nil {
				t.Errorf("the retry's rule got the key with expiry %v, as the first call left it, not as asked for", asked[1])
			}
			if k.ExpiresAt == nil || !k.ExpiresAt.Equal(soon) {
				t.Fatalf("the key expires at %v, want the issuer's new expiry %v", k.ExpiresAt, soon)
			}
			// (A regenerate's old string may be kept past the key's expiry:
			// it is the key's until its grace period ends, and answers
			// key_expired once the key has expired; TestVerifyRegenerateGrace.)
			got, err := s.Key(k.ID)
			if err != nil || got.ExpiresAt == nil || !got.ExpiresAt.Equal(soon) {
				t.Fatalf("stored: %+v %v", got, err)
			}
		})
	}
}
