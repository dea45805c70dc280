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
}

// refuse writes the response for a verification outcome other than OK.
func refuse(w http.ResponseWriter, res keystore.Result, keyHeader string) {
	body := refusal{Error: res.Outcome.Code()}
	status := http.StatusUnauthorized
	hdr := w.Header()
	switch res.Outcome {
	case keystore.MissingKey:
		body.Message = "no API key was given: send it in the " + keyHeader + " header or as Authorization: Bearer <key>"
		hdr.Set("WWW-Authenticate", `Bearer realm="api"`)
	case keystore.MalformedKey:
		body.Message = "the API key is not in the format this service issues"
	case keystore.InvalidKey:
		body.Message = "the API key is not valid"
	case keystore.KeyRevoked:
		body.Message = "the API key has been revoked"
	case keystore.KeyExpired:
		body.Message = "the API key has expired"
	case keystore.AccountInactive:
		status = http.StatusForbidden
		body.AccountStatus = res.AccountStatus
		body.Message = "the account of this API key is " + res.AccountStatus + ", so its keys cannot be used"
	case keystore.InsufficientScope:
		status = http.StatusForbidden
		scope := res.Required.String()
		body.RequiredScope = scope
		body.Message = "this request requires the " + scope + " scope"
		hdr.Set("WWW-Authenticate", `Bearer error="insufficient_scope", scope="`+scope+`"`)
	case keystore.RateLimited:
		status = http.StatusTooManyRequests
		body.RetryAfter = res.RetryAfter
		body.Message = "too many requests for this API key; retry after " + strconv.Itoa(res.RetryAfter) + " seconds"
		hdr.Set("Retry-After", strconv.Itoa(res.RetryAfter))
		setRateHeaders(hdr, res.Rate)
	case keystore.QuotaExceeded:
		status = http.StatusTooManyRequests
		body.RetryAfter = res.RetryAfter
		body.Message = "the usage quota of this API key or its account is used up until the period resets in " + strconv.Itoa(res.RetryAfter) + " seconds"
		hdr.Set("Retry-After", strconv.Itoa(res.RetryAfter))
	}
	if status == http.StatusUnauthorized && res.Outcome != keystore.MissingKey {
		hdr.Set("WWW-Authenticate", `Bearer realm="api", error="invalid_token"`)
	}
	adminapi.WriteJSON(w, status, body)
}

// setRateHeaders sets the IETF httpapi draft's RateLimit-Limit (the
// bucket size), RateLimit-Remaining and RateLimit-Reset (seconds until the
// bucket is full), as Kong also sends them.
func setRateHeaders(h http.Header, st keystore.RateState) {
	h["Ratelimit-Limit"] = []string{strconv.Itoa(st.Limit)}
	h["Ratelimit-Remaining"] = []string{strconv.Itoa(st.Remaining)}
	h["Ratelimit-Reset"] = []string{strconv.Itoa(st.Reset)}
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
