package caddymodule

import (
	"net/http"
	"reflect"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

func TestIsIdentityName(t *testing.T) {
	for i, tc := range []struct {
		name string
		want bool
	}{
		{"X-Api-Key-Id", true},
		{"X-Api-Key-Name", true},
		{"X-Api-Key-Type", true},
		{"X-Api-Account", true},
		{"X-Api-Scopes", true},
		{"x-api-key-id", true},
		{"X-API-KEY-ID", true},
		{"x-Api-kEY-iD", true},
		{"X_Api_Key_Id", true},
		{"x_api_key_id", true},
		{"X-Api_Key-Id", true},
		{"X_API_SCOPES", true},
		{"x-api-scopes", true},
		{"X_Api_Account", true},
		{"X-API-ACCOUNT", true},
		{"x_api_key_name", true},
		{"X-Api-Key-TYPE", true},

		{"", false},
		{"X-Api-Key", false}, // the credential header, not an identity header
		{"X-Api-Key-I", false},
		{"X-Api-Key-Idd", false},
		{"X-Api-Key-Ids", false},
		{"X-Api-Scope", false},
		{"X-Api-Scopes2", false},
		{"X-Api-Accounts", false},
		{"X-Api-Key-Names", false},
		{"X-Api-Key.Id", true},
		{"X.Api.Key.Id", true},
		{"x.api.scopes", true},
		{"X.Api_Account", true},
		{"X Api Key Id", false},
		{"XApiKeyId", false},
		{"Y-Api-Key-Id", false},
		{"Authorization", false},
		{"Connection", false},
		{"X-Api-Key-Id ", false},
		{" X-Api-Key-Id", false},
		{"X-Api-Key-\u0130d", false}, // Turkish dotted capital I: not ASCII
		{"X-Api-Key-Id\x00", false},
	} {
		if got := isIdentityName(tc.name); got != tc.want {
			t.Errorf("test %d: isIdentityName(%q) = %v, want %v", i, tc.name, got, tc.want)
		}
	}
}

func TestStripIdentity(t *testing.T) {
	for i, tc := range []struct {
		name string
		in   http.Header
		want http.Header
	}{
		{
			name: "nothing to strip",
			in:   http.Header{"Accept": {"*/*"}, "X-Api-Key": {"k"}},
			want: http.Header{"Accept": {"*/*"}, "X-Api-Key": {"k"}},
		},
		{
			name: "canonical names",
			in: http.Header{
				"X-Api-Key-Id":   {"spoof"},
				"X-Api-Key-Name": {"spoof"},
				"X-Api-Key-Type": {"spoof"},
				"X-Api-Account":  {"spoof", "twice"},
				"X-Api-Scopes":   {"*:delete"},
				"Accept":         {"*/*"},
			},
			want: http.Header{"Accept": {"*/*"}},
		},
		{
			name: "underscore variants",
			in: http.Header{
				"X_Api_Key_Id":   {"spoof"},
				"X_Api_Key_Name": {"spoof"},
				"X_Api_Key_Type": {"spoof"},
				"X_Api_Account":  {"spoof"},
				"X_Api_Scopes":   {"spoof"},
				"X-Api_Key-Id":   {"spoof"},
				"X_Other":        {"kept"},
			},
			want: http.Header{"X_Other": {"kept"}},
		},
		{
			name: "odd cases as raw map keys",
			in: http.Header{
				"x-api-key-id":   {"spoof"},
				"X-API-KEY-ID":   {"spoof"},
				"x-api-scopes":   {"spoof"},
				"X-API-ACCOUNT":  {"spoof"},
				"x-api-key-name": {"spoof"},
				"X-Api-KEY-Type": {"spoof"},
				"x-other":        {"kept"},
			},
			want: http.Header{"x-other": {"kept"}},
		},
		{
			name: "Connection naming an identity header",
			in: http.Header{
				"Connection":   {"keep-alive, X-Api-Key-Id"},
				"X-Api-Key-Id": {"spoof"},
			},
			want: http.Header{"Connection": {"keep-alive"}},
		},
		{
			name: "Connection naming only identity headers",
			in:   http.Header{"Connection": {"X-Api-Key-Id, x-api-scopes", "X_Api_Account"}},
			want: http.Header{},
		},
		{
			name: "Connection with several values",
			in: http.Header{
				"Connection": {"close", "X-Api-Account ,Upgrade", "x-api-key-name"},
			},
			want: http.Header{"Connection": {"close", "Upgrade"}},
		},
		{
			name: "Connection without identity names is left as it is",
			in:   http.Header{"Connection": {"keep-alive,  Upgrade ,,"}},
			want: http.Header{"Connection": {"keep-alive,  Upgrade ,,"}},
		},
		{
			name: "Connection naming the key header is not ours to change",
			in:   http.Header{"Connection": {"X-Api-Key"}},
			want: http.Header{"Connection": {"X-Api-Key"}},
		},
	} {
		stripIdentity(tc.in, "", true)
		if !reflect.DeepEqual(tc.in, tc.want) {
			t.Errorf("test %d (%s): got %v, want %v", i, tc.name, tc.in, tc.want)
		}
	}
}

// TestStripIdentityKeyHeader: the pass returns the key header's and
// Authorization's values, and deletes the key header only with dropKey;
// Authorization stays either way (removeBearer decides on it later).
func TestStripIdentityKeyHeader(t *testing.T) {
	for _, drop := range []bool{false, true} {
		h := http.Header{
			"X-Api-Key":     {"ak_one"},
			"Authorization": {"Bearer ak_one"},
			"X_api_key_id":  {"spoofed"},
			"Accept":        {"*/*"},
		}
		ch := stripIdentity(h, "X-Api-Key", drop)
		if !reflect.DeepEqual(ch.key, []string{"ak_one"}) || !reflect.DeepEqual(ch.authz, []string{"Bearer ak_one"}) {
			t.Errorf("dropKey %v: found %+v", drop, ch)
		}
		want := http.Header{"Authorization": {"Bearer ak_one"}, "Accept": {"*/*"}}
		if !drop {
			want["X-Api-Key"] = []string{"ak_one"}
		}
		if !reflect.DeepEqual(h, want) {
			t.Errorf("dropKey %v: left %v, want %v", drop, h, want)
		}
	}
}

func TestFilterConnection(t *testing.T) {
	for i, tc := range []struct {
		in, want []string
	}{
		{[]string{"keep-alive"}, []string{"keep-alive"}},
		{[]string{"keep-alive, X-Api-Key-Id"}, []string{"keep-alive"}},
		{[]string{"X-Api-Key-Id, keep-alive"}, []string{"keep-alive"}},
		{[]string{"a, X_API_SCOPES, b"}, []string{"a, b"}},
		{[]string{"X-Api-Key-Id"}, nil},
		{[]string{"X-Api-Key-Id", "close"}, []string{"close"}},
		{[]string{" x-api-account ,\tclose"}, []string{"close"}},
	} {
		if got := filterConnection(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("test %d: filterConnection(%q) = %q, want %q", i, tc.in, got, tc.want)
		}
	}
}

func TestSetIdentity(t *testing.T) {
	h := http.Header{}
	repl := caddy.NewReplacer()
	res := &keystore.Result{
		Key: &keystore.Key{
			ID:      "0192-id",
			Name:    "CRM sync",
			Type:    "mcp",
			Account: "acme",
		},
		ScopeHeader: "contacts:read orders:write",
	}
	setIdentity(h, repl, res)
	want := http.Header{
		"X-Api-Key-Id":   {"0192-id"},
		"X-Api-Key-Name": {"CRM sync"},
		"X-Api-Key-Type": {"mcp"},
		"X-Api-Account":  {"acme"},
		"X-Api-Scopes":   {"contacts:read orders:write"},
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("headers: %v, want %v", h, want)
	}
	for i, tc := range []struct{ placeholder, want string }{
		{"http.auth.user.id", "0192-id"},
		{"http.auth.user.name", "CRM sync"},
		{"http.auth.user.account", "acme"},
		{"http.auth.user.type", "mcp"},
		{"http.auth.user.scopes", "contacts:read orders:write"},
	} {
		if got, _ := repl.GetString(tc.placeholder); got != tc.want {
			t.Errorf("test %d: {%s} = %q, want %q", i, tc.placeholder, got, tc.want)
		}
	}
	// Without a replacer only the headers are set.
	h = http.Header{}
	setIdentity(h, nil, res)
	if !reflect.DeepEqual(h, want) {
		t.Errorf("headers without a replacer: %v", h)
	}
}

// TestIdentityValuesAreTheRequestsOwn: a handler after apikey may rewrite
// a header value in place (header's replace does hdr[name][i] = ...);
// another request of the same key must not see it. The placeholder
// provider, which is shared through the key's memo, still names the key.
func TestIdentityValuesAreTheRequestsOwn(t *testing.T) {
	res := &keystore.Result{
		Key:         &keystore.Key{ID: "0192-id", Name: "CRM sync", Type: "api", Account: "acme"},
		ScopeHeader: "contacts:read",
		Memo:        new(keystore.Memo),
	}
	first, second := http.Header{}, http.Header{}
	repl1, repl2 := caddy.NewReplacer(), caddy.NewReplacer()
	setIdentity(first, repl1, res)
	setRateHeaders(first, keystore.RateState{Limit: 100, Remaining: 99, Reset: 1})
	for name := range first {
		first[name][0] = "rewritten"
	}
	setIdentity(second, repl2, res)
	setRateHeaders(second, keystore.RateState{Limit: 100, Remaining: 98, Reset: 1})
	want := http.Header{
		"X-Api-Key-Id":        {"0192-id"},
		"X-Api-Key-Name":      {"CRM sync"},
		"X-Api-Key-Type":      {"api"},
		"X-Api-Account":       {"acme"},
		"X-Api-Scopes":        {"contacts:read"},
		"Ratelimit-Limit":     {"100"},
		"Ratelimit-Remaining": {"98"},
		"Ratelimit-Reset":     {"1"},
	}
	if !reflect.DeepEqual(second, want) {
		t.Errorf("the second request's headers: %v, want %v", second, want)
	}
	if res.Memo.Load() == nil {
		t.Fatal("the placeholder provider was not kept in the key's memo")
	}
	for _, repl := range []*caddy.Replacer{repl1, repl2} {
		if got, _ := repl.GetString("http.auth.user.name"); got != "CRM sync" {
			t.Errorf("{http.auth.user.name} = %q", got)
		}
	}
	// Appending to a value copies it: the other headers are untouched.
	second["X-Api-Key-Id"] = append(second["X-Api-Key-Id"], "more")
	if got := second["X-Api-Key-Name"]; len(got) != 1 || got[0] != "CRM sync" {
		t.Errorf("an append to one header changed another: %q", got)
	}
}
