package adminapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// keyFields are the fields of a new key, in create and import bodies.
type keyFields struct {
	Name      string              `json:"name"`
	Account   string              `json:"account"`
	Scopes    []string            `json:"scopes"`
	ExpiresAt *string             `json:"expires_at"`
	Type      string              `json:"type"`
	RateLimit *keystore.RateLimit `json:"rate_limit"`
	Quota     *keystore.Quota     `json:"quota"`
	Metadata  map[string]string   `json:"metadata"`
}

// newKey converts the fields; prefix locates them in an import (keys[3]).
func (f *keyFields) newKey(prefix string) (keystore.NewKey, error) {
	nk := keystore.NewKey{
		Name:      f.Name,
		Account:   f.Account,
		Type:      f.Type,
		Scopes:    f.Scopes,
		RateLimit: f.RateLimit,
		Quota:     f.Quota,
		Metadata:  f.Metadata,
	}
	if len(nk.Metadata) == 0 {
		nk.Metadata = nil
	}
	if f.ExpiresAt != nil {
		field := joinField(prefix, "expires_at")
		t, err := parseTime(field, *f.ExpiresAt)
		if err != nil {
			return nk, err
		}
		nk.ExpiresAt = &t
	}
	return nk, nil
}

// createKey is POST /keys. A key caller's key gets what createRule
// gives it (its expiry, type and limits), and every create is refused
// beyond the account's max_keys (409 key_limit_reached).
func (a *API) createKey(w http.ResponseWriter, r *http.Request, c Caller) error {
	var body keyFields
	if _, err := decodeObject(w, r, &body); err != nil {
		return err
	}
	if !c.Operator { // access (403) before field values (400), as documented
		switch body.Account {
		case "":
			body.Account = c.Account
		case c.Account:
		default:
			return forbidden("a key can create keys only in its own account")
		}
		if err := c.canGrant(body.Scopes, "scopes"); err != nil {
			return err
		}
		if err := c.canSetLimits(body.RateLimit != nil, body.Quota != nil); err != nil {
			return err
		}
	}
	nk, err := body.newKey("")
	if err != nil {
		return err
	}
	k, plain, err := a.store.CreateKeyAs(nk, a.format, a.issuer(c, createRule(body.Type)), c.Actor())
	if err != nil {
		return err
	}
	WriteJSON(w, http.StatusCreated, a.view(k, plain))
	return nil
}

// Page sizes of GET /keys.
const (
	defaultLimit = 50
	maxLimit     = keystore.MaxListLimit
)

type keyList struct {
	Keys       []keyView `json:"keys"`
	NextCursor *string   `json:"next_cursor"`
}

// listKeys is GET /keys.
func (a *API) listKeys(w http.ResponseWriter, r *http.Request, c Caller) error {
	q := r.URL.Query()
	lq := keystore.ListQuery{Limit: defaultLimit, Search: q.Get("q"), Account: q.Get("account")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return invalidRequest("limit", "limit must be an integer from 1 to %d", maxLimit)
		}
		lq.Limit = n
	}
	switch lq.Status = q.Get("status"); lq.Status {
	case "", keystore.StatusActive, keystore.StatusRevoked, keystore.StatusExpired:
	default:
		return invalidRequest("status", "status must be active, revoked or expired")
	}
	if v := q.Get("cursor"); v != "" {
		id, err := decodeCursor(v)
		if err != nil {
			return err
		}
		lq.After = id
	}
	if !c.Operator {
		if lq.Account != "" && lq.Account != c.Account {
			// Filtering by another account leaves nothing visible.
			WriteJSON(w, http.StatusOK, keyList{Keys: []keyView{}})
			return nil
		}
		lq.Account = c.Account
	} else if lq.Account != "" {
		if _, err := a.store.Account(lq.Account); err != nil {
			if isNotFound(err) {
				return invalidRequest("account", "account %q does not exist", lq.Account)
			}
			return err
		}
	}
	keys, next, err := a.store.ListKeys(lq)
	if err != nil {
		return err
	}
	now := a.store.Now()
	out := keyList{Keys: make([]keyView, len(keys)), NextCursor: encodeCursor(next)}
	for i, k := range keys {
		out.Keys[i] = a.keyView(k, now, "")
	}
	WriteJSON(w, http.StatusOK, out)
	return nil
}

// getKey is GET /keys/{id}.
func (a *API) getKey(w http.ResponseWriter, r *http.Request, c Caller) error {
	k, err := a.ownKey(c, r.PathValue("id"))
	if err != nil {
		return err
	}
	WriteJSON(w, http.StatusOK, a.view(k, ""))
	return nil
}

// keyPatchBody is the body of PATCH /keys/{id}. Which members are null
// comes from a presence map.
type keyPatchBody struct {
	Name      *string             `json:"name"`
	Scopes    []string            `json:"scopes"`
	ExpiresAt *string             `json:"expires_at"`
	Active    *bool               `json:"active"`
	Type      *string             `json:"type"`
	RateLimit *keystore.RateLimit `json:"rate_limit"`
	Quota     *keystore.Quota     `json:"quota"`
	Metadata  map[string]string   `json:"metadata"`
}

// patchKey is PATCH /keys/{id}: null clears expires_at, rate_limit, quota
// and metadata, and is refused for the other fields. An empty object changes
// nothing and records no event.
func (a *API) patchKey(w http.ResponseWriter, r *http.Request, c Caller) error {
	var body keyPatchBody
	pr, err := decodePatch(w, r, &body, "name", "scopes", "active", "type")
	if err != nil {
		return err
	}
	p := keystore.KeyPatch{
		Name:           body.Name,
		Active:         body.Active,
		Type:           body.Type,
		ClearExpires:   pr.null("expires_at"),
		RateLimit:      body.RateLimit,
		ClearRateLimit: pr.null("rate_limit"),
		Quota:          body.Quota,
		ClearQuota:     pr.null("quota"),
		Metadata:       body.Metadata,
		ClearMetadata:  pr.null("metadata") || (pr.has("metadata") && len(body.Metadata) == 0),
	}
	if pr.has("scopes") {
		p.Scopes = body.Scopes
		if p.Scopes == nil {
			p.Scopes = []string{}
		}
	}
	k, err := a.ownKey(c, r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := c.canChange(k); err != nil {
		return err
	}
	if err := c.canGrant(p.Scopes, "scopes"); err != nil {
		return err
	}
	if err := c.canSetLimits(pr.has("rate_limit"), pr.has("quota")); err != nil {
		return err
	}
	if body.ExpiresAt != nil {
		t, err := parseTime("expires_at", *body.ExpiresAt)
		if err != nil {
			return err
		}
		p.ExpiresAt = &t
	}
	if len(pr) == 0 {
		WriteJSON(w, http.StatusOK, a.view(k, ""))
		return nil
	}
	k, err = a.store.UpdateKeyAs(k.ID, c.changeGuard(c.canChange), a.issuer(c, patchRule(p)), p, c.Actor())
	if err != nil {
		return keyErr(err)
	}
	WriteJSON(w, http.StatusOK, a.view(k, ""))
	return nil
}

// noBody reads the body of an action that takes none: empty or {}.
func noBody(w http.ResponseWriter, r *http.Request) error {
	var none struct{}
	return decodeOptionalObject(w, r, &none)
}

// revokeKey is POST /keys/{id}/revoke. Revoking a revoked key changes
// nothing and records no event.
func (a *API) revokeKey(w http.ResponseWriter, r *http.Request, c Caller) error {
	if err := noBody(w, r); err != nil {
		return err
	}
	k, err := a.ownKey(c, r.PathValue("id"))
	if err != nil {
		return err
	}
	if k.RevokedAt == nil {
		if k, err = a.store.RevokeKey(k.ID, c.Actor()); err != nil {
			return keyErr(err)
		}
	}
	WriteJSON(w, http.StatusOK, a.view(k, ""))
	return nil
}

// activateKey is POST /keys/{id}/activate. Activating an active key
// changes nothing and records no event.
func (a *API) activateKey(w http.ResponseWriter, r *http.Request, c Caller) error {
	if err := noBody(w, r); err != nil {
		return err
	}
	k, err := a.ownKey(c, r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := c.canChange(k); err != nil {
		return err
	}
	active := true
	if k, err = a.store.UpdateKeyAs(k.ID, c.changeGuard(c.canChange), a.issuer(c, nil), keystore.KeyPatch{Active: &active}, c.Actor()); err != nil {
		return keyErr(err)
	}
	WriteJSON(w, http.StatusOK, a.view(k, ""))
	return nil
}

type regenerateBody struct {
	GracePeriod *string `json:"grace_period"`
}

// regenerateKey is POST /keys/{id}/regenerate, with an optional body
// {"grace_period": "<Go duration>"}: the old string stays the key's for
// that long (past the key's expiry it answers key_expired, as the new one
// does); without it, it stops at once. The key keeps its expiry; a key
// caller's regenerate keeps to regenerateRule.
func (a *API) regenerateKey(w http.ResponseWriter, r *http.Request, c Caller) error {
	var body regenerateBody
	if err := decodeOptionalObject(w, r, &body); err != nil {
		return err
	}
	k, err := a.ownKey(c, r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := c.canRegenerate(k); err != nil {
		return err
	}
	var grace time.Duration
	if body.GracePeriod != nil {
		d, err := time.ParseDuration(*body.GracePeriod)
		if err != nil || d < 0 {
			return invalidRequest("grace_period", "grace_period must be a non-negative duration such as 24h or 30m")
		}
		grace = d
	}
	k, plain, err := a.store.RegenerateKeyAs(k.ID, c.changeGuard(c.canRegenerate), a.issuer(c, regenerateRule), a.format, grace, c.Actor())
	if err != nil {
		return keyErr(err)
	}
	WriteJSON(w, http.StatusOK, a.view(k, plain))
	return nil
}

// deleteKey is DELETE /keys/{id}.
func (a *API) deleteKey(w http.ResponseWriter, r *http.Request, c Caller) error {
	if err := noBody(w, r); err != nil {
		return err
	}
	k, err := a.ownKey(c, r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := a.store.DeleteKeyBy(k.ID, c.Actor()); err != nil {
		return keyErr(err)
	}
	noContent(w)
	return nil
}

type auditList struct {
	Events []keystore.Event `json:"events"`
}

// keyAudit is GET /keys/{id}/audit.
func (a *API) keyAudit(w http.ResponseWriter, r *http.Request, c Caller) error {
	k, err := a.ownKey(c, r.PathValue("id"))
	if err != nil {
		return err
	}
	events, err := a.store.Audit(k.ID)
	if err != nil {
		return keyErr(err)
	}
	if events == nil {
		events = []keystore.Event{}
	}
	WriteJSON(w, http.StatusOK, auditList{Events: events})
	return nil
}
