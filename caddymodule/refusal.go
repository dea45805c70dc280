package caddymodule

import (
	"net/http"
	"strconv"

	"github.com/caddy-apikey/caddy-apikey/adminapi"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// refusal is the JSON body of every refused request, and of every error of
// the admin API: {"error": "<code>", "message": "<one sentence>", ...}.
type refusal struct {
	Error         string `json:"error"`
	Message       string `json:"message"`
	AccountStatus string `json:"account_status,omitempty"`
	RequiredScope string `json:"required_scope,omitempty"`
	RetryAfter    int    `json:"retry_after,omitempty"`
	// LimitedBy says whose limit refused a rate_limited or quota_exceeded
	// request: "key" or "account".
	LimitedBy string `json:"limited_by,omitempty"`
}

// refuser writes the refusals of one key header. The bodies of the
// outcomes that do not depend on the request (missing, malformed, invalid,
// revoked and expired keys: the ones a flood of bad credentials meets) are
// encoded once, when the handler is provisioned.
type refuser struct {
	keyHeader string
	// scheme is the WWW-Authenticate scheme: Bearer, or, when Bearer
	// credentials are not accepted (bearer off), Key, the scheme Kong's
	// key-auth names for a key in a header of its own. The challenges of
	// missing and invalid keys are made once (a flood meets them).
	scheme         string
	missing, inval string
	bearer         bool
	fixed          [keystore.QuotaExceeded + 1][]byte
	// ambiguous is the malformed_key body of a request with more than one
	// credential.
	ambiguous []byte
}

// fixedOutcomes are the outcomes whose refusal body is always the same.
var fixedOutcomes = [...]keystore.Outcome{keystore.MissingKey, keystore.MalformedKey, keystore.InvalidKey, keystore.KeyRevoked, keystore.KeyExpired}

func newRefuser(keyHeader string, bearer bool) (*refuser, error) {
	rf := &refuser{keyHeader: keyHeader, scheme: "Key", bearer: bearer}
	if bearer {
		rf.scheme = "Bearer"
	}
	rf.missing = rf.scheme + ` realm="api"`
	rf.inval = rf.scheme + ` realm="api", error="invalid_token"`
	b, err := adminapi.EncodeJSON(refusal{Error: keystore.MalformedKey.Code(), Message: "the request carries more than one API key (the key header twice, or two different keys in the key header and Authorization): send exactly one"})
	if err != nil {
		return nil, err
	}
	rf.ambiguous = b
	for _, o := range fixedOutcomes {
		b, err := adminapi.EncodeJSON(rf.body(keystore.Result{Outcome: o}))
		if err != nil {
			return nil, err
		}
		rf.fixed[o] = b
	}
	return rf, nil
}

// refuse writes the response for a verification outcome other than OK.
func (rf *refuser) refuse(w http.ResponseWriter, res keystore.Result) {
	status := http.StatusUnauthorized
	hdr := w.Header()
	switch res.Outcome {
	case keystore.MissingKey:
		hdr["Www-Authenticate"] = []string{rf.missing}
	case keystore.AccountInactive:
		status = http.StatusForbidden
	case keystore.InsufficientScope:
		status = http.StatusForbidden
		hdr["Www-Authenticate"] = []string{rf.scheme + ` error="insufficient_scope", scope="` + res.Required.String() + `"`}
	case keystore.RateLimited:
		status = http.StatusTooManyRequests
		hdr["Retry-After"] = []string{strconv.Itoa(res.RetryAfter)}
		setRateHeaders(hdr, res.Rate)
	case keystore.QuotaExceeded:
		status = http.StatusTooManyRequests
		hdr["Retry-After"] = []string{strconv.Itoa(res.RetryAfter)}
	default:
		hdr["Www-Authenticate"] = []string{rf.inval}
	}
	if int(res.Outcome) < len(rf.fixed) && rf.fixed[res.Outcome] != nil {
		adminapi.WriteJSONBody(w, status, rf.fixed[res.Outcome])
		return
	}
	adminapi.WriteJSON(w, status, rf.body(res))
}

// refuseAmbiguous refuses a request that carries more than one credential:
// malformed_key, with a message that says so.
func (rf *refuser) refuseAmbiguous(w http.ResponseWriter) {
	w.Header()["Www-Authenticate"] = []string{rf.inval}
	adminapi.WriteJSONBody(w, http.StatusUnauthorized, rf.ambiguous)
}

// body is the JSON body of the refusal of res.
func (rf *refuser) body(res keystore.Result) refusal {
	body := refusal{Error: res.Outcome.Code()}
	switch res.Outcome {
	case keystore.MissingKey:
		body.Message = "no API key was given: send it in the " + rf.keyHeader + " header"
		if rf.bearer {
			body.Message += " or as Authorization: Bearer <key>"
		}
	case keystore.MalformedKey:
		body.Message = "the API key is not in the format this service issues"
	case keystore.InvalidKey:
		body.Message = "the API key is not valid"
	case keystore.KeyRevoked:
		body.Message = "the API key has been revoked"
	case keystore.KeyExpired:
		body.Message = "the API key has expired"
	case keystore.AccountInactive:
		body.AccountStatus = res.AccountStatus
		body.Message = "the account of this API key is " + res.AccountStatus + ", so its keys cannot be used"
	case keystore.InsufficientScope:
		body.RequiredScope = res.Required.String()
		body.Message = "this request requires the " + body.RequiredScope + " scope"
	case keystore.RateLimited:
		body.RetryAfter, body.LimitedBy = res.RetryAfter, limitedBy(res)
		if res.ByAccount {
			body.Message = "too many requests for this API key's account: the account's rate limit, shared by all its keys, is used up; retry after " + strconv.Itoa(res.RetryAfter) + " seconds"
		} else {
			body.Message = "too many requests for this API key; retry after " + strconv.Itoa(res.RetryAfter) + " seconds"
		}
	case keystore.QuotaExceeded:
		body.RetryAfter, body.LimitedBy = res.RetryAfter, limitedBy(res)
		if res.ByAccount {
			body.Message = "the usage quota of this API key's account, shared by all its keys, is used up until the period resets in " + strconv.Itoa(res.RetryAfter) + " seconds"
		} else {
			body.Message = "the usage quota of this API key is used up until the period resets in " + strconv.Itoa(res.RetryAfter) + " seconds"
		}
	}
	return body
}

func limitedBy(res keystore.Result) string {
	if res.ByAccount {
		return "account"
	}
	return "key"
}

// setRateHeaders sets the IETF httpapi draft's RateLimit-Limit (the
// bucket size), RateLimit-Remaining and RateLimit-Reset (seconds until the
// bucket is full), as Kong also sends them.
func setRateHeaders(h http.Header, st keystore.RateState) {
	new(passValues).setRate(h, st)
}

// storeUnavailable answers when the store failed to read: the request is
// refused (fail closed), not passed.
func storeUnavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	adminapi.WriteJSON(w, http.StatusServiceUnavailable, refusal{
		Error:   "unavailable",
		Message: "the API key store is unavailable; try again shortly",
	})
}
