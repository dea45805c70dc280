package keystore

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
)

// NewKey is what a caller gives to create a key.
type NewKey struct {
	Name      string
	Account   string // default "default"
	Type      string // default "api"
	Scopes    []string
	ExpiresAt *time.Time
	RateLimit *RateLimit
	Quota     *Quota
	Metadata  map[string]string
}

// validate checks and normalizes the fields (sorted, de-duplicated scopes).
func (nk *NewKey) validate(now time.Time) error {
	if nk.Account == "" {
		nk.Account = DefaultAccount
	}
	if nk.Type == "" {
		nk.Type = DefaultKeyType
	}
	if err := validateName(nk.Name); err != nil {
		return invalid("name", "%v", err)
	}
	scopes, err := normalizeScopes(nk.Scopes)
	if err != nil {
		return err
	}
	nk.Scopes = scopes
	if nk.ExpiresAt != nil {
		t, err := validExpiry(*nk.ExpiresAt, now)
		if err != nil {
			return err
		}
		nk.ExpiresAt = &t
	}
	if err := validateType(nk.Type); err != nil {
		return invalid("type", "%v", err)
	}
	if err := nk.RateLimit.Validate(); err != nil {
		return invalid("rate_limit", "%v", err)
	}
	if err := nk.Quota.Validate(); err != nil {
		return invalid("quota", "%v", err)
	}
	if err := validateMetadata(nk.Metadata); err != nil {
		return invalid("metadata", "%v", err)
	}
	return nil
}

func normalizeScopes(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, invalid("scopes", "scopes must name at least one scope")
	}
	sc, err := ParseScopes(in)
	if err != nil {
		return nil, invalid("scopes", "%v", err)
	}
	return ScopeStrings(sc), nil
}

// validExpiry checks an expiry and returns it in UTC. It must be in the
// future and, in UTC, before the year 10000: RFC 3339 allows
// 9999-12-31T23:00:00-05:00, which is in the year 10000 in UTC, where
// neither the audit event's JSON nor the stored records can hold it (the
// write failed with a 500, after an import had begun writing).
func validExpiry(at, now time.Time) (time.Time, error) {
	if !at.After(now) {
		return time.Time{}, invalid("expires_at", "expires_at must be in the future")
	}
	t := at.UTC()
	if t.Year() > 9999 {
		return time.Time{}, invalid("expires_at", "expires_at must be before 10000-01-01T00:00:00Z")
	}
	return t, nil
}

func newKeyID() string { return uuid.Must(uuid.NewV7()).String() }

// CreateKey validates nk, generates a key of format f and stores its hash.
// It returns the record and the plaintext key, which is not kept anywhere.
// If the account has a max_keys that the key would exceed, it stores
// nothing and returns an error wrapping ErrKeyLimit.
func (s *Store) CreateKey(nk NewKey, f Format, actor string) (*Key, string, error) {
	return s.CreateKeyAs(nk, f, nil, actor)
}

// An Issuer is the key on whose behalf a key is created or changed (the
// admin API's key caller), with the rule that what it creates or changes
// keeps to. The store reads the issuer's record inside the mutation's own
// transaction and calls Check with it (nil if the issuer no longer
// exists) and the key as it is about to be created, or as it is before
// the change is applied: a check against the issuer (its expiry, its
// limits, its type) uses the issuer as it is when the change is written,
// not as it was when its request was authenticated. A write to the
// issuer's record that commits meanwhile (an operator shortening its
// expiry) makes the transaction run again, Check included, on a fresh
// copy of the key.
//
// Check may change the key's expiry, type, rate limit and quota (what it
// inherits from the issuer; the changes are part of the audit event), but
// not its id, account or hash. Its error aborts the mutation and is
// returned as it is.
type Issuer struct {
	// KeyID is the issuer's id.
	KeyID string
	// Check is the rule; see Issuer.
	Check func(issuer, k *Key) error
}

// check reads the issuer in t and runs its rule on k. A nil Issuer passes.
func (by *Issuer) check(t txn, k *Key) error {
	if by == nil {
		return nil
	}
	iss, err := t.getRecord(by.KeyID)
	switch {
	case errors.Is(err, ErrNotFound):
		iss = nil
	case err != nil:
		return err
	}
	return by.Check(iss, k)
}

// CreateKeyAs is CreateKey on behalf of an issuer, whose rule (nil: none)
// is checked on the new key inside the transaction that stores it.
func (s *Store) CreateKeyAs(nk NewKey, f Format, by *Issuer, actor string) (*Key, string, error) {
	now := s.now().UTC()
	if err := nk.validate(now); err != nil {
		return nil, "", err
	}
	plain, err := f.Generate()
	if err != nil {
		return nil, "", err
	}
	k := &Key{
		ID:        newKeyID(),
		Name:      nk.Name,
		Account:   nk.Account,
		Type:      nk.Type,
		Scopes:    nk.Scopes,
		Hint:      Hint(plain, f.Prefix),
		CreatedAt: now,
		UpdatedAt: now,
		ExpiresAt: nk.ExpiresAt,
		RateLimit: nk.RateLimit,
		Quota:     nk.Quota,
		Metadata:  nk.Metadata,
		Hash:      HashKey(plain),
	}
	var prepare func(txn) error
	if by != nil {
		base := k.clone()
		prepare = func(t txn) error {
			*k = *base.clone() // each attempt starts from the key as asked for
			return by.check(t, k)
		}
	}
	if err := s.insertKeys([]*Key{k}, prepare, ActionCreated, actor); err != nil {
		return nil, "", err
	}
	s.changed(Mutation{Kind: ChangeKeyCreated, At: k.CreatedAt, Actor: actor, Key: keyInfo(k)})
	return k.clone(), plain, nil
}

// insertKeys stores new keys in one durable transaction, refusing a hash
// that is already known and keys beyond an account's max_keys. The
// accounts must exist. prepare, if not nil, runs first in the transaction
// (and again in each retry).
func (s *Store) insertKeys(keys []*Key, prepare func(txn) error, action, actor string) error {
	for _, k := range keys {
		if err := s.learnAccounts(k.Account); err != nil {
			return err
		}
	}
	s.acctMu.RLock()
	defer s.acctMu.RUnlock()
	for _, k := range keys {
		if _, ok := s.accounts[k.Account]; !ok {
			return invalid("account", "account %q does not exist", k.Account)
		}
	}
	res, err := s.reserveKeys(keys)
	if err != nil {
		return err
	}
	err = s.update(func(t txn) error {
		if prepare != nil {
			if err := prepare(t); err != nil {
				return err
			}
		}
		if s.sharedEngine() {
			if _, err := s.sharedKeyLimits(t, res.added); err != nil {
				return err
			}
		}
		for _, k := range keys {
			if known, err := t.exists(keyH(k.Hash)); err != nil {
				return err
			} else if known {
				return fmt.Errorf("a key with this hash already exists: %w", ErrConflict)
			}
			if err := writeNewKey(t.set, k, action, actor); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		res.done(notStored)
		return err
	}
	res.done(stored)
	for _, k := range keys {
		s.cache.invalidate(k.Hash)
		s.indexed(k.Hash)
	}
	return nil
}

// writeNewKey writes a new key's entries (record, hash index, account
// index, created event) with set: a transaction's or the bulk writer's.
func writeNewKey(set func(key, val []byte) error, k *Key, action, actor string) error {
	rec := encodeKey(k)
	ev, err := createdEvent(k, action, actor)
	if err != nil {
		return err
	}
	if err := set(keyK(k.ID), rec); err != nil {
		return err
	}
	if err := set(keyH(k.Hash), encodeHashEntry(k)); err != nil {
		return err
	}
	if err := set(keyAK(k.Account, k.ID), []byte{}); err != nil {
		return err
	}
	if k.RevokedAt != nil {
		if err := set(keyR(*k.RevokedAt, k.ID), []byte{}); err != nil {
			return err
		}
	}
	return set(keyE(k.ID, newEventID()), ev)
}

// Key returns a key's record, with its in-memory last-used time.
func (s *Store) Key(id string) (*Key, error) {
	var k *Key
	err := s.view(func(t txn) error {
		var err error
		k, err = t.getKey(id)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.mergeLastUsed(k)
	return k, nil
}

// mergeLastUsed sets k.LastUsedAt to the latest use known in memory, so
// that the API shows a use at once although Badger gets it in batches.
func (s *Store) mergeLastUsed(k *Key) {
	lu := s.cache.lastUsed(k)
	s.pendingMu.Lock()
	lu = max(lu, s.pendingUse[k.ID])
	s.pendingMu.Unlock()
	if lu == 0 {
		return
	}
	t := time.Unix(0, lu).UTC()
	if k.LastUsedAt == nil || t.After(*k.LastUsedAt) {
		k.LastUsedAt = &t
	}
}

// ListQuery selects keys for ListKeys.
type ListQuery struct {
	Account string // only this account's keys
	Status  string // active, revoked or expired
	Search  string // case-insensitive substring of the name
	Limit   int    // 1..1000
	After   string // the last id of the previous page
}

// MaxListLimit is the largest page ListKeys returns.
const MaxListLimit = 1000

// ListKeys returns keys newest first (ids are time-ordered UUIDv7s) and the
// id to pass as After for the next page, or "" at the end.
func (s *Store) ListKeys(q ListQuery) ([]*Key, string, error) {
	if q.Limit < 1 || q.Limit > MaxListLimit {
		return nil, "", invalid("limit", "limit must be 1 to %d", MaxListLimit)
	}
	switch q.Status {
	case "", StatusActive, StatusRevoked, StatusExpired:
	default:
		return nil, "", invalid("status", "status must be active, revoked or expired")
	}
	prefix := []byte(pfxKey)
	if q.Account != "" {
		prefix = []byte(pfxAcctKey + q.Account + "/")
	}
	var start []byte
	if q.After != "" {
		start = append(append([]byte(nil), prefix...), q.After...)
	}
	search := strings.ToLower(q.Search)
	now := s.now()
	var out []*Key
	next := ""
	err := s.view(func(t txn) error {
		return t.scan(prefix, start, true, q.Account == "", func(key, val []byte) (bool, error) {
			id := string(key[len(prefix):])
			if id == q.After {
				return true, nil
			}
			var k *Key
			var err error
			if val != nil {
				if k, err = decodeKey(val); err == nil {
					err = t.mergeStoredUse(k)
				}
			} else {
				k, err = t.getKey(id)
			}
			if err != nil {
				return false, err
			}
			if q.Status != "" && k.Status(now) != q.Status {
				return true, nil
			}
			if search != "" && !strings.Contains(strings.ToLower(k.Name), search) {
				return true, nil
			}
			if len(out) == q.Limit {
				next = out[len(out)-1].ID
				return false, nil
			}
			out = append(out, k)
			return true, nil
		})
	})
	if err != nil {
		return nil, "", err
	}
	for _, k := range out {
		s.mergeLastUsed(k)
	}
	return out, next, nil
}

// KeyPatch names the fields of a key to change; nil leaves one as it is.
type KeyPatch struct {
	Name           *string
	Scopes         []string // nil: unchanged
	ExpiresAt      *time.Time
	ClearExpires   bool
	Active         *bool
	Type           *string
	RateLimit      *RateLimit
	ClearRateLimit bool
	Quota          *Quota
	ClearQuota     bool
	Metadata       map[string]string // nil: unchanged
	ClearMetadata  bool
}

// A Guard is a condition on a key that a mutation checks inside its
// transaction, on the key as it is when the change is written: a check
// made before the call could be out of date by then (another writer may
// have added a scope meanwhile). A Guard's error aborts the mutation and
// is returned as it is. A nil Guard always passes.
type Guard func(*Key) error

// UpdateKey changes a key's fields without changing the key string, and
// records one audit event: revoked or activated when Active changes it,
// updated otherwise.
func (s *Store) UpdateKey(id string, p KeyPatch, actor string) (*Key, error) {
	return s.UpdateKeyIf(id, nil, p, actor)
}

// UpdateKeyIf is UpdateKey if guard passes.
func (s *Store) UpdateKeyIf(id string, guard Guard, p KeyPatch, actor string) (*Key, error) {
	return s.UpdateKeyAs(id, guard, nil, p, actor)
}

// UpdateKeyAs is UpdateKeyIf on behalf of an issuer, whose rule (nil:
// none) is checked on the key, after guard and before p is applied, inside
// the transaction that writes the change.
func (s *Store) UpdateKeyAs(id string, guard Guard, by *Issuer, p KeyPatch, actor string) (*Key, error) {
	now := s.now().UTC()
	return s.mutateKeyTx(id, actor, guard, by, func(_ txn, k *Key) (string, error) {
		if p.Name != nil {
			if err := validateName(*p.Name); err != nil {
				return "", invalid("name", "%v", err)
			}
			k.Name = *p.Name
		}
		if p.Scopes != nil {
			sc, err := normalizeScopes(p.Scopes)
			if err != nil {
				return "", err
			}
			k.Scopes = sc
		}
		switch {
		case p.ClearExpires:
			k.ExpiresAt = nil
		case p.ExpiresAt != nil:
			t, err := validExpiry(*p.ExpiresAt, now)
			if err != nil {
				return "", err
			}
			k.ExpiresAt = &t
		}
		if p.Type != nil {
			if err := validateType(*p.Type); err != nil {
				return "", invalid("type", "%v", err)
			}
			k.Type = *p.Type
		}
		switch {
		case p.ClearRateLimit:
			k.RateLimit = nil
		case p.RateLimit != nil:
			if err := p.RateLimit.Validate(); err != nil {
				return "", invalid("rate_limit", "%v", err)
			}
			rl := *p.RateLimit
			k.RateLimit = &rl
		}
		switch {
		case p.ClearQuota:
			k.Quota = nil
		case p.Quota != nil:
			if err := p.Quota.Validate(); err != nil {
				return "", invalid("quota", "%v", err)
			}
			q := *p.Quota
			k.Quota = &q
		}
		switch {
		case p.ClearMetadata:
			k.Metadata = nil
		case p.Metadata != nil:
			if err := validateMetadata(p.Metadata); err != nil {
				return "", invalid("metadata", "%v", err)
			}
			k.Metadata = maps.Clone(p.Metadata)
		}
		action := ActionUpdated
		if p.Active != nil {
			switch {
			case !*p.Active && k.RevokedAt == nil:
				k.RevokedAt = &now
				action = ActionRevoked
			case *p.Active && k.RevokedAt != nil:
				k.RevokedAt = nil
				action = ActionActivated
			}
		}
		return action, nil
	})
}

// RevokeKey revokes a key: it is refused from the next request on.
func (s *Store) RevokeKey(id, actor string) (*Key, error) {
	f := false
	return s.UpdateKey(id, KeyPatch{Active: &f}, actor)
}

// ActivateKey re-activates a revoked key.
func (s *Store) ActivateKey(id, actor string) (*Key, error) {
	t := true
	return s.UpdateKey(id, KeyPatch{Active: &t}, actor)
}

// RegenerateKey gives a key a new string of format f, keeping its id and
// everything else. The old string stops working at once, or with a grace
// period at the end of it; during the grace period both strings are the
// key (revoked, expired or active alike), and a grace period longer than
// MaxGracePeriod ends after MaxGracePeriod. A string kept by an earlier
// grace period stops at once.
func (s *Store) RegenerateKey(id string, f Format, grace time.Duration, actor string) (*Key, string, error) {
	return s.RegenerateKeyIf(id, nil, f, grace, actor)
}

// MaxGracePeriod bounds a regenerate's grace period (100 years), so that
// its end and its hash entry's TTL stay within what the store encodes.
const MaxGracePeriod = 100 * 365 * 24 * time.Hour

// RegenerateKeyIf is RegenerateKey if guard passes.
func (s *Store) RegenerateKeyIf(id string, guard Guard, f Format, grace time.Duration, actor string) (*Key, string, error) {
	return s.RegenerateKeyAs(id, guard, nil, f, grace, actor)
}

// RegenerateKeyAs is RegenerateKeyIf on behalf of an issuer, whose rule
// (nil: none) is checked on the key, after guard and before the new string
// is set, inside the transaction that writes it: an expiry the rule sets
// also bounds the old string's grace period.
func (s *Store) RegenerateKeyAs(id string, guard Guard, by *Issuer, f Format, grace time.Duration, actor string) (*Key, string, error) {
	if grace < 0 {
		return nil, "", invalid("grace_period", "grace_period must not be negative")
	}
	plain, err := f.Generate()
	if err != nil {
		return nil, "", err
	}
	newHash := HashKey(plain)
	now := s.now().UTC()
	k, err := s.mutateKeyTx(id, actor, guard, by, func(t txn, k *Key) (string, error) {
		if k.PrevHash != nil {
			if err := t.delOwnedHash(*k.PrevHash, k.ID); err != nil {
				return "", err
			}
			k.PrevHash = nil
			k.PrevUntil = time.Time{}
		}
		// The old string stays the key's for the grace period, expiry or
		// not: while the key is expired it answers key_expired, as the
		// new string does (and works again if the expiry is extended).
		until := now.Add(min(grace, MaxGracePeriod))
		if grace > 0 {
			old := k.Hash
			k.PrevHash = &old
			k.PrevUntil = until
			if err := t.setHashTTL(old, k.ID, until.Sub(now)+time.Second); err != nil {
				return "", err
			}
		} else if err := t.del(keyH(k.Hash)); err != nil {
			return "", err
		}
		k.Hash = newHash
		k.Hint = Hint(plain, f.Prefix)
		return ActionRegenerated, nil // mutateKeyTx writes h/<newHash>
	})
	if err != nil {
		return nil, "", err
	}
	s.indexed(newHash)
	return k, plain, nil
}

// mutateKeyTx applies change to a key in one durable transaction if guard
// and the issuer's rule pass, records an audit event with the changes
// (the rule's included), and invalidates the cache. A write that commits
// between this transaction's read of the key (or of the issuer) and its
// commit makes Badger retry the whole function (update), guard and rule
// included.
func (s *Store) mutateKeyTx(id, actor string, guard Guard, by *Issuer, change func(txn, *Key) (string, error)) (*Key, error) {
	var before, after *Key
	var mutation Mutation
	err := s.update(func(t txn) error {
		mutation = Mutation{}
		k, err := t.getKey(id)
		if err != nil {
			return err
		}
		if guard != nil {
			if err := guard(k); err != nil {
				return err
			}
		}
		before = k.clone()
		if err := by.check(t, k); err != nil {
			return err
		}
		s.mergeLastUsed(k)
		action, err := change(t, k)
		if err != nil {
			return err
		}
		changes := diff(before, k)
		after = k
		if len(changes) == 0 && action != ActionRegenerated {
			return nil // nothing changed: no write, no event
		}
		k.UpdatedAt = s.now().UTC()
		mutation = Mutation{Kind: actionKinds[action], At: k.UpdatedAt, Actor: actor, Key: keyInfo(k), Changes: changes}
		if err := t.putKey(k); err != nil {
			return err
		}
		if err := t.putHashEntry(k); err != nil {
			return err
		}
		if err := t.reindexRevoked(before, k); err != nil {
			return err
		}
		return t.putEvent(id, Event{At: k.UpdatedAt, Action: action, Actor: actor, Changes: changes})
	})
	if err != nil {
		return nil, err
	}
	s.cache.invalidate(hashesOf(before, after)...)
	if mutation.Kind != "" {
		s.changed(mutation)
	}
	return after.clone(), nil
}

// eventDeletesPerTxn bounds the audit events one transaction deletes:
// Badger refuses a transaction of more than 6,553 entries or 614 KiB with
// its 4 MiB memtables (15% of a memtable; an event's delete counts about
// 90 bytes), and a key changed by automation can have more events.
const eventDeletesPerTxn = 4_000

// delEvents deletes up to eventDeletesPerTxn of key id's audit events and
// usage points, and reports whether more remain.
func (t txn) delEvents(id string) (more bool, err error) {
	n, more, err := t.delPrefix([]byte(pfxEvent+id+"/"), eventDeletesPerTxn)
	if err != nil || more {
		return more, err
	}
	_, more, err = t.delPrefix(usagePrefix(pfxUsageKey, id, 0), eventDeletesPerTxn-n)
	return more, err
}

// delPrefix deletes up to limit keys with the prefix, and reports how
// many it deleted and whether more remain.
func (t txn) delPrefix(prefix []byte, limit int) (n int, more bool, err error) {
	var keys [][]byte
	err = t.scan(prefix, nil, false, false, func(key, _ []byte) (bool, error) {
		if len(keys) == limit {
			more = true
			return false, nil
		}
		keys = append(keys, append([]byte(nil), key...))
		return true, nil
	})
	if err != nil {
		return 0, false, err
	}
	for _, k := range keys {
		if err := t.del(k); err != nil {
			return 0, false, err
		}
	}
	return len(keys), more, nil
}

// deleteEvents deletes the audit events a key deletion left (marked
// d/<id>), a transaction per eventDeletesPerTxn, and then the mark.
func (s *Store) deleteEvents(id string) error {
	mark := []byte(pfxDeleting + id)
	for {
		done := false
		err := s.update(func(t txn) error {
			ok, err := t.exists(mark)
			if err != nil || !ok {
				done = true
				return err
			}
			more, err := t.delEvents(id)
			if err != nil || more {
				return err
			}
			done = true
			return t.del(mark)
		})
		if err != nil || done {
			return err
		}
	}
}

// finishDeletes completes the event deletions that a crash interrupted.
func (s *Store) finishDeletes() error {
	var ids []string
	err := s.view(func(t txn) error {
		return t.scan([]byte(pfxDeleting), nil, false, false, func(key, _ []byte) (bool, error) {
			ids = append(ids, string(key[len(pfxDeleting):]))
			return true, nil
		})
	})
	for _, id := range ids {
		err = errors.Join(err, s.deleteEvents(id))
	}
	return err
}

func hashesOf(keys ...*Key) []Hash {
	var hs []Hash
	for _, k := range keys {
		hs = append(hs, k.Hash)
		if k.PrevHash != nil {
			hs = append(hs, *k.PrevHash)
		}
	}
	return hs
}

// DeleteKey removes a key and its audit events; its string is unknown from
// the next request on.
func (s *Store) DeleteKey(id string) error {
	return s.DeleteKeyBy(id, "")
}

// DeleteKeyBy is DeleteKey, telling Options.OnChange that actor deleted
// the key.
func (s *Store) DeleteKeyBy(id, actor string) error {
	return s.deleteKeyIf(id, nil, ChangeKeyDeleted, actor)
}

// errSkipped is deleteKeyIf's answer when the condition no longer holds.
var errSkipped = errors.New("skipped")

// deleteKeyIf deletes a key if cond (checked inside the transaction) holds
// or is nil. It holds flushMu: a flush of last-used times never runs
// alongside, so it never writes the last use of a key deleted meanwhile
// (see writeLastUsed).
//
// kind (ChangeKeyDeleted or ChangeKeyPurged) and actor are what Options.OnChange is
// told, after flushMu is released.
func (s *Store) deleteKeyIf(id string, cond func(*Key) bool, kind, actor string) error {
	var deleted *Key
	defer func() { // runs after flushMu's unlock
		if deleted != nil {
			s.changed(Mutation{Kind: kind, At: s.now().UTC(), Actor: actor, Key: keyInfo(deleted)})
		}
	}()
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	counted := s.lockKeyCount(id) // after flushMu: see keyCount
	var k *Key
	var moreEvents bool // more than the transaction deleted
	err := s.update(func(t txn) error {
		var err error
		if k, err = t.getKey(id); err != nil {
			return err
		}
		if cond != nil && !cond(k) {
			return errSkipped
		}
		for _, h := range hashesOf(k) {
			if err := t.delOwnedHash(h, id); err != nil {
				return err
			}
		}
		if err := t.del(keyAK(k.Account, id)); err != nil {
			return err
		}
		if err := t.del(keyK(id)); err != nil {
			return err
		}
		if err := t.del(keyQK(id)); err != nil {
			return err
		}
		if err := t.del(keyU(id)); err != nil {
			return err
		}
		if err := t.del(keyX(id)); err != nil {
			return err
		}
		if err := t.reindexRevoked(k, nil); err != nil {
			return err
		}
		if moreEvents, err = t.delEvents(id); err != nil || !moreEvents {
			return err
		}
		return t.set([]byte(pfxDeleting+id), nil) // deleteEvents finishes
	})
	counted(err == nil)
	if err != nil {
		return err
	}
	s.cache.invalidate(hashesOf(k)...)
	if moreEvents {
		if err := s.deleteEvents(id); err != nil {
			// The key is gone; its remaining events wait for the purge sweep.
			s.log.Error("deleting the audit events of a deleted key", zap.String("id", id), zap.Error(err))
		}
	}
	s.quotas.drop(id)
	s.pendingMu.Lock()
	delete(s.pendingUse, id)
	s.pendingMu.Unlock()
	s.usage.dropKey(id)
	deleted = k
	return nil
}
