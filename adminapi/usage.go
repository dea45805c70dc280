package adminapi

import (
	"net/http"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// usageView is the answer of GET /keys/{id}/usage and GET
// /accounts/{id}/usage: a dense series, a point per interval from from to
// to, zeros included.
type usageView struct {
	// Key is the key's id (the key's series only).
	Key string `json:"key,omitempty"`
	// Account is the account (of the key, for a key's series).
	Account  string           `json:"account"`
	Interval string           `json:"interval"`
	From     time.Time        `json:"from"`
	To       time.Time        `json:"to"`
	Points   []usagePointView `json:"points"`
	// Totals sums the points.
	Totals usageCountsView `json:"totals"`
}

// usageCountsView is what a point (or the totals) counts: the requests
// passed, and those refused by outcome code (every refusal code that
// names a key, zeros included), with their sum.
type usageCountsView struct {
	Passed       uint64            `json:"passed"`
	Refused      map[string]uint64 `json:"refused"`
	RefusedTotal uint64            `json:"refused_total"`
}

type usagePointView struct {
	Start time.Time `json:"start"`
	usageCountsView
}

func (v *usageCountsView) add(p *keystore.UsagePoint) {
	v.Passed += p.Passed
	for code, n := range p.Refused {
		v.Refused[code] += n
		v.RefusedTotal += n
	}
}

func newUsageView(u *keystore.Usage, key, account string) usageView {
	v := usageView{Key: key, Account: account, Interval: u.Interval, From: u.From, To: u.To,
		Points: make([]usagePointView, len(u.Points))}
	v.Totals.Refused = map[string]uint64{} // every code: the points have them all
	for i := range u.Points {
		p := &u.Points[i]
		pv := &v.Points[i]
		pv.Start = p.Start
		pv.Refused = map[string]uint64{}
		pv.add(p)
		v.Totals.add(p)
	}
	return v
}

// usageQuery reads the query parameters from, to (RFC 3339) and interval.
func usageQuery(r *http.Request) (keystore.UsageQuery, error) {
	q := r.URL.Query()
	uq := keystore.UsageQuery{Interval: q.Get("interval")}
	if q.Has("interval") && uq.Interval == "" {
		return uq, invalidRequest("interval", "interval must be hour or day")
	}
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"from", &uq.From}, {"to", &uq.To}} {
		if !q.Has(p.name) {
			continue
		}
		t, err := parseTime(p.name, q.Get(p.name))
		if err != nil {
			return uq, err
		}
		*p.t = t
	}
	return uq, nil
}

// keyUsage is GET /keys/{id}/usage.
func (a *API) keyUsage(w http.ResponseWriter, r *http.Request, c Caller) error {
	k, err := a.ownKey(c, r.PathValue("id"))
	if err != nil {
		return err
	}
	q, err := usageQuery(r)
	if err != nil {
		return err
	}
	u, err := a.store.KeyUsage(k.ID, q)
	if err != nil {
		return keyErr(err)
	}
	WriteJSON(w, http.StatusOK, newUsageView(u, k.ID, k.Account))
	return nil
}

// accountUsage is GET /accounts/{id}/usage: the operator's for every
// account, a key caller's (apikeys:read) for its own account only (any
// other is not found, as an unknown id).
func (a *API) accountUsage(w http.ResponseWriter, r *http.Request, c Caller) error {
	id := r.PathValue("id")
	if !c.Operator && id != c.Account {
		return errAccountNotFound
	}
	q, err := usageQuery(r)
	if err != nil {
		return err
	}
	u, err := a.store.AccountUsage(id, q)
	if err != nil {
		return accountErr(err)
	}
	WriteJSON(w, http.StatusOK, newUsageView(u, "", id))
	return nil
}
