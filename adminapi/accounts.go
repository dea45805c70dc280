package adminapi

import (
	"net/http"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

type accountBody struct {
	ID        string              `json:"id"`
	Name      string              `json:"name"`
	Status    string              `json:"status"`
	RateLimit *keystore.RateLimit `json:"rate_limit"`
	Quota     *keystore.Quota     `json:"quota"`
	MaxKeys   *int                `json:"max_keys"`
}

// createAccount is POST /accounts. An empty name defaults to the id, an
// empty status to open.
func (a *API) createAccount(w http.ResponseWriter, r *http.Request, c Caller) error {
	var body accountBody
	if _, err := decodeObject(w, r, &body); err != nil {
		return err
	}
	acct, err := a.store.CreateAccountBy(keystore.Account{
		ID:        body.ID,
		Name:      body.Name,
		Status:    body.Status,
		RateLimit: body.RateLimit,
		Quota:     body.Quota,
		MaxKeys:   body.MaxKeys,
	}, c.Actor())
	if err != nil {
		return err
	}
	WriteJSON(w, http.StatusCreated, a.accountView(acct))
	return nil
}

type accountList struct {
	Accounts []accountView `json:"accounts"`
}

// listAccounts is GET /accounts: every account, sorted by id.
func (a *API) listAccounts(w http.ResponseWriter, _ *http.Request, _ Caller) error {
	accts := a.store.Accounts()
	out := accountList{Accounts: make([]accountView, len(accts))}
	for i, acct := range accts {
		out.Accounts[i] = a.accountView(acct)
	}
	WriteJSON(w, http.StatusOK, out)
	return nil
}

// getAccount is GET /accounts/{id}.
func (a *API) getAccount(w http.ResponseWriter, r *http.Request, _ Caller) error {
	acct, err := a.store.Account(r.PathValue("id"))
	if err != nil {
		return accountErr(err)
	}
	WriteJSON(w, http.StatusOK, a.accountView(acct))
	return nil
}

type accountPatchBody struct {
	Name      *string             `json:"name"`
	Status    *string             `json:"status"`
	RateLimit *keystore.RateLimit `json:"rate_limit"`
	Quota     *keystore.Quota     `json:"quota"`
	MaxKeys   *int                `json:"max_keys"`
}

// patchAccount is PATCH /accounts/{id}: null clears rate_limit, quota and
// max_keys, and is
// refused for name and status. A status change applies to the account's
// keys from their next request.
func (a *API) patchAccount(w http.ResponseWriter, r *http.Request, c Caller) error {
	var body accountPatchBody
	pr, err := decodePatch(w, r, &body, "name", "status")
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if len(pr) == 0 {
		return a.getAccount(w, r, Caller{})
	}
	acct, err := a.store.UpdateAccountBy(id, keystore.AccountPatch{
		Name:           body.Name,
		Status:         body.Status,
		RateLimit:      body.RateLimit,
		ClearRateLimit: pr.null("rate_limit"),
		Quota:          body.Quota,
		ClearQuota:     pr.null("quota"),
		MaxKeys:        body.MaxKeys,
		ClearMaxKeys:   pr.null("max_keys"),
	}, c.Actor())
	if err != nil {
		return accountErr(err)
	}
	WriteJSON(w, http.StatusOK, a.accountView(acct))
	return nil
}

// deleteAccount is DELETE /accounts/{id}: 409 while the account has keys.
// The default account cannot be deleted: keys created without an account
// go to it, and the store recreates it at every start.
func (a *API) deleteAccount(w http.ResponseWriter, r *http.Request, _ Caller) error {
	if err := noBody(w, r); err != nil {
		return err
	}
	id := r.PathValue("id")
	if id == keystore.DefaultAccount {
		if _, err := a.store.Account(id); err == nil {
			return conflict("the default account cannot be deleted")
		}
	}
	if err := a.store.DeleteAccount(id); err != nil {
		return accountErr(err)
	}
	noContent(w)
	return nil
}

// accountErr names the account in the store's not-found.
func accountErr(err error) error {
	if isNotFound(err) {
		return errAccountNotFound
	}
	return err
}
