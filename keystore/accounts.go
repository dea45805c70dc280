package keystore

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

func decodeAccount(b []byte) (*Account, error) {
	a := new(Account)
	if err := json.Unmarshal(b, a); err != nil {
		return nil, fmt.Errorf("decoding account: %w", err)
	}
	return a, nil
}

func validateAccount(a *Account) error {
	if !accountIDRE.MatchString(a.ID) {
		return invalid("id", "id must match [a-z0-9][a-z0-9_-]{0,62}")
	}
	if err := validateName(a.Name); err != nil {
		return invalid("name", "%v", err)
	}
	if !ValidAccountStatus(a.Status) {
		return invalid("status", "status must be one of open, pending_cancel, suspended, past_due, terminated")
	}
	if err := a.RateLimit.Validate(); err != nil {
		return invalid("rate_limit", "%v", err)
	}
	if err := a.Quota.Validate(); err != nil {
		return invalid("quota", "%v", err)
	}
	if a.MaxKeys != nil && *a.MaxKeys < 1 {
		return invalid("max_keys", "max_keys must be an integer of at least 1, or null for no limit")
	}
	return nil
}

// CreateAccount stores a new account. An empty name defaults to the id and
// an empty status to open. It fails with ErrConflict if the id exists.
func (s *Store) CreateAccount(a Account) (*Account, error) {
	return s.CreateAccountBy(a, "")
}

// CreateAccountBy is CreateAccount, telling Options.OnChange that actor
// created the account.
func (s *Store) CreateAccountBy(a Account, actor string) (*Account, error) {
	var created *Account
	defer func() { // runs after acctMu's unlock
		if created != nil {
			s.changed(Mutation{Kind: ChangeAccountCreated, At: created.CreatedAt, Actor: actor, Account: created})
		}
	}()
	if a.Name == "" {
		a.Name = a.ID
	}
	if a.Status == "" {
		a.Status = AccountOpen
	}
	if err := validateAccount(&a); err != nil {
		return nil, err
	}
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	if _, ok := s.accounts[a.ID]; ok {
		return nil, fmt.Errorf("account %q already exists: %w", a.ID, ErrConflict)
	}
	now := s.now().UTC()
	a.CreatedAt, a.UpdatedAt = now, now
	if err := s.update(func(t txn) error { return t.putJSON(keyA(a.ID), &a) }); err != nil {
		return nil, err
	}
	st := s.newAccountState(&a, nil)
	st.keys.counted.Store(true) // a new account holds no keys
	s.accounts[a.ID] = st
	s.acctIndex.Store(a.ID, st)
	c := a
	created = &c
	return &a, nil
}

// Account returns an account.
func (s *Store) Account(id string) (*Account, error) {
	st := s.accountState(id)
	if st == nil {
		return nil, ErrNotFound
	}
	return st.acct.Load(), nil
}

// accountState finds an account's shared state without taking acctMu, so
// that a cache miss never waits behind an account mutation's fsync.
func (s *Store) accountState(id string) *accountState {
	st, _ := s.acctIndex.Load(id)
	acct, _ := st.(*accountState)
	return acct
}

// Accounts lists every account, sorted by id.
func (s *Store) Accounts() []*Account {
	s.acctMu.RLock()
	out := make([]*Account, 0, len(s.accounts))
	for _, st := range s.accounts {
		out = append(out, st.acct.Load())
	}
	s.acctMu.RUnlock()
	slices.SortFunc(out, func(a, b *Account) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// AccountPatch names the fields of an account to change; nil leaves one as
// it is. ClearRateLimit removes the account's own rate limit.
type AccountPatch struct {
	Name           *string
	Status         *string
	RateLimit      *RateLimit
	ClearRateLimit bool
	Quota          *Quota
	ClearQuota     bool
	// MaxKeys sets the account's max_keys; ClearMaxKeys removes it.
	// Lowering it below the keys the account holds is allowed: they stay,
	// and creates and imports into the account are refused until it holds
	// fewer.
	MaxKeys      *int
	ClearMaxKeys bool
}

// UpdateAccount changes an account. A status change applies to its keys'
// next request.
func (s *Store) UpdateAccount(id string, p AccountPatch) (*Account, error) {
	return s.UpdateAccountBy(id, p, "")
}

// UpdateAccountBy is UpdateAccount, telling Options.OnChange that actor
// changed the account.
func (s *Store) UpdateAccountBy(id string, p AccountPatch, actor string) (*Account, error) {
	var mutations []Mutation
	defer func() { // runs after acctMu's unlock
		for _, m := range mutations {
			s.changed(m)
		}
	}()
	if err := s.learnAccounts(id); err != nil {
		return nil, err
	}
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	st, ok := s.accounts[id]
	if !ok {
		return nil, ErrNotFound
	}
	a := *st.acct.Load()
	if p.Name != nil {
		a.Name = *p.Name
	}
	if p.Status != nil {
		a.Status = *p.Status
	}
	if p.RateLimit != nil {
		rl := *p.RateLimit
		a.RateLimit = &rl
	}
	if p.ClearRateLimit {
		a.RateLimit = nil
	}
	if p.Quota != nil {
		q := *p.Quota
		a.Quota = &q
	}
	if p.ClearQuota {
		a.Quota = nil
	}
	if p.MaxKeys != nil {
		n := *p.MaxKeys
		a.MaxKeys = &n
	}
	if p.ClearMaxKeys {
		a.MaxKeys = nil
	}
	if err := validateAccount(&a); err != nil {
		return nil, err
	}
	if accountsEqual(&a, st.acct.Load()) {
		return st.acct.Load(), nil // nothing changed: no write
	}
	a.UpdatedAt = s.now().UTC()
	if err := s.update(func(t txn) error { return t.putJSON(keyA(id), &a) }); err != nil {
		return nil, err
	}
	before := st.acct.Load()
	st.set(&a)
	after := a
	mutations = accountMutations(before, &after, actor)
	return &a, nil
}

// DeleteAccount removes an account that has no keys; ErrConflict otherwise.
func (s *Store) DeleteAccount(id string) error {
	if err := s.learnAccounts(id); err != nil {
		return err
	}
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	if _, ok := s.accounts[id]; !ok {
		return ErrNotFound
	}
	err := s.update(func(t txn) error {
		hasKeys := false
		err := t.scan([]byte(pfxAcctKey+id+"/"), nil, false, false, func(_, _ []byte) (bool, error) {
			hasKeys = true
			return false, nil
		})
		if err != nil {
			return err
		}
		if hasKeys {
			return fmt.Errorf("account %q still has keys: %w", id, ErrConflict)
		}
		if err := t.del(keyQA(id)); err != nil {
			return err
		}
		// Its usage points (at most the retentions' bounds: one
		// transaction's worth).
		if _, _, err := t.delPrefix(usagePrefix(pfxUsageAcct, id, 0), eventDeletesPerTxn); err != nil {
			return err
		}
		return t.del(keyA(id))
	})
	if err != nil {
		return err
	}
	s.forgetAccountLimits(id)
	delete(s.accounts, id)
	s.acctIndex.Delete(id)
	return nil
}

func accountsEqual(a, b *Account) bool {
	return a.Name == b.Name && a.Status == b.Status &&
		reflect.DeepEqual(a.RateLimit, b.RateLimit) && reflect.DeepEqual(a.Quota, b.Quota) &&
		reflect.DeepEqual(a.MaxKeys, b.MaxKeys)
}
