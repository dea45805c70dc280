package adminapi

import (
	"encoding/base64"
	"time"

	"github.com/google/uuid"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// keyView is a key record as the API shows it: the record's fields (never
// its hashes), its status, its quota usage if it has a quota, and, only in
// the answer to create and regenerate, the plaintext key.
type keyView struct {
	*keystore.Key
	// Metadata is always present: null when the key has none.
	Metadata map[string]string `json:"metadata"`
	Status   string            `json:"status"`
	quotaUsage
	Plain string `json:"key,omitempty"`
}

// quotaUsage is the current period's count of a key or account with a
// quota: how many requests it made and when the count resets.
type quotaUsage struct {
	QuotaUsed     *int64     `json:"quota_used,omitempty"`
	QuotaResetsAt *time.Time `json:"quota_resets_at,omitempty"`
}

func newQuotaUsage(used int64, resetsAt time.Time, ok bool) quotaUsage {
	if !ok {
		return quotaUsage{}
	}
	return quotaUsage{QuotaUsed: &used, QuotaResetsAt: &resetsAt}
}

func (a *API) keyView(k *keystore.Key, now time.Time, plain string) keyView {
	return keyView{
		Key:        k,
		Metadata:   k.Metadata,
		Status:     k.Status(now),
		quotaUsage: newQuotaUsage(a.store.QuotaUsage(k)),
		Plain:      plain,
	}
}

func (a *API) view(k *keystore.Key, plain string) keyView {
	return a.keyView(k, a.store.Now(), plain)
}

// accountView is an account as the API shows it, with its quota usage.
type accountView struct {
	*keystore.Account
	quotaUsage
}

func (a *API) accountView(acct *keystore.Account) accountView {
	return accountView{Account: acct, quotaUsage: newQuotaUsage(a.store.AccountQuotaUsage(acct.ID))}
}

// Cursors are opaque to clients: the base64url of the last id of the
// previous page.
func encodeCursor(id string) *string {
	if id == "" {
		return nil
	}
	c := base64.RawURLEncoding.EncodeToString([]byte(id))
	return &c
}

func decodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", invalidRequest("cursor", "cursor is not one this API returned")
	}
	id := string(b)
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		return "", invalidRequest("cursor", "cursor is not one this API returned")
	}
	return id, nil
}
