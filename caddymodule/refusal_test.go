package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// TestRefusalFollowsBearer: with bearer off, refusals neither advise
// Authorization: Bearer nor name the Bearer scheme, which that handler
// would not accept; with bearer on they do.
func TestRefusalFollowsBearer(t *testing.T) {
	contactsWrite := keystore.Scope{Resource: "contacts", Access: keystore.AccessWrite}
	for _, tc := range []struct {
		bearer  bool
		res     keystore.Result
		status  int
		wwwAuth string
		message string
	}{
		{true, keystore.Result{Outcome: keystore.MissingKey}, 401, `Bearer realm="api"`, "no API key was given: send it in the X-Token header or as Authorization: Bearer <key>"},
		{false, keystore.Result{Outcome: keystore.MissingKey}, 401, `Key realm="api"`, "no API key was given: send it in the X-Token header"},
		{true, keystore.Result{Outcome: keystore.InvalidKey}, 401, `Bearer realm="api", error="invalid_token"`, "the API key is not valid"},
		{false, keystore.Result{Outcome: keystore.KeyRevoked}, 401, `Key realm="api", error="invalid_token"`, "the API key has been revoked"},
		{true, keystore.Result{Outcome: keystore.InsufficientScope, Required: contactsWrite}, 403, `Bearer error="insufficient_scope", scope="contacts:write"`, "this request requires the contacts:write scope"},
		{false, keystore.Result{Outcome: keystore.InsufficientScope, Required: contactsWrite}, 403, `Key error="insufficient_scope", scope="contacts:write"`, "this request requires the contacts:write scope"},
	} {
		rf, err := newRefuser("X-Token", tc.bearer)
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		rf.refuse(w, tc.res)
		var body refusal
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		name := tc.res.Outcome.Code()
		if w.Code != tc.status || w.Header().Get("WWW-Authenticate") != tc.wwwAuth || body.Message != tc.message {
			t.Errorf("bearer %v, %s: %d %q %q; want %d %q %q", tc.bearer, name, w.Code, w.Header().Get("WWW-Authenticate"), body.Message, tc.status, tc.wwwAuth, tc.message)
		}
		if !tc.bearer && strings.Contains(w.Body.String()+w.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("bearer off, %s: mentions Bearer: %s", name, w.Body)
		}
		if w.Header().Get("Content-Type") != "application/json" || w.Code == http.StatusOK {
			t.Errorf("bearer %v, %s: %d %q", tc.bearer, name, w.Code, w.Header().Get("Content-Type"))
		}
	}
}
