package caddymodule

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// The Caddyfile unmarshalers get arbitrary text. They must never panic,
// and whatever they accept must be a config that JSON can carry: Caddy
// adapts a Caddyfile to JSON, so the JSON of the result must decode into
// the same value (marshalling it again gives the same bytes).
//
// The input is tokenized with caddyfile.Tokenize and handed to
// caddyfile.NewDispenser: that is what caddyfile.NewTestDispenser does,
// except that NewTestDispenser calls log.Fatalf on text the lexer refuses
// (an unterminated quote or heredoc), which would end the fuzzing process
// instead of skipping the input.

// fuzzDispenser returns a dispenser over input, or nil if the Caddyfile
// lexer refuses it (the adapter would refuse the file before any
// unmarshaler runs).
func fuzzDispenser(input string) *caddyfile.Dispenser {
	tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
	if err != nil {
		return nil
	}
	return caddyfile.NewDispenser(tokens)
}

// jsonRoundTrip checks that v marshals, and that the JSON decodes into a
// fresh value (fresh returns a pointer to it) that marshals to the same
// bytes: what the Caddyfile produced survives Caddy's JSON.
func jsonRoundTrip(t *testing.T, input string, v any, fresh func() any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%q: accepted, but json.Marshal fails: %v", input, err)
	}
	again := fresh()
	if err := json.Unmarshal(b, again); err != nil {
		t.Fatalf("%q: accepted as %s, which does not decode: %v", input, b, err)
	}
	b2, err := json.Marshal(again)
	if err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("%q: JSON round trip changes %s into %s (%v)", input, b, b2, err)
	}
	return b
}

func handlerSeeds() []string {
	return []string{
		"apikey",
		"apikey contacts:read",
		"apikey contacts",
		"apikey *:delete",
		"apikey {\n require contacts:write\n header X-Token\n bearer off\n forward_key\n}",
		"apikey {\n bearer on\n}",
		"apikey {\n escaped_slashes keep\n}",
		"apikey {\n escaped_slashes nope\n}",
		"apikey a b",
		"apikey contacts {\n require billing\n}",
		"apikey {\n bearer maybe\n}",
		"apikey {\n header\n}",
		"apikey {\n forward_key yes\n}",
		"apikey {\n unknown\n}",
		"apikey {\n header \"X Token\"\n}",
		"apikey {\n require \"\"\n require contacts\n}",
		"apikey Contacts:read",
		"apikey contacts:read:x",
		"apikey {\n{\n}\n}",
		"apikey {\n require <<EOF\n\tcontacts\n\tEOF\n}",
		"apikey \"contacts:read\" {\n header `X-Key`\n}",
		"apikey {$NOPE}",
		"apikey {\n",
		"apikey }",
	}
}

// FuzzUnmarshalHandler: the apikey directive. An accepted Require is
// either refused by keystore.ParseRequirement (Provision refuses the
// config) or parses to a requirement whose String() is the text itself
// and parses again to the same requirement.
func FuzzUnmarshalHandler(f *testing.F) {
	for _, s := range handlerSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		d := fuzzDispenser(input)
		if d == nil {
			return
		}
		var h Handler
		if err := h.UnmarshalCaddyfile(d); err != nil {
			return
		}
		jsonRoundTrip(t, input, &h, func() any { return new(Handler) })
		if h.Require == "" {
			return
		}
		req, err := keystore.ParseRequirement(h.Require)
		if err != nil {
			return // Provision refuses it: "require: invalid scope ..."
		}
		if req.IsZero() || req.String() != h.Require {
			t.Fatalf("%q: require %q parses to %+v, whose String() is %q", input, h.Require, req, req.String())
		}
		if again, err := keystore.ParseRequirement(req.String()); err != nil || again != req {
			t.Fatalf("%q: require %q does not round-trip: %+v, %v", input, h.Require, again, err)
		}
	})
}

// FuzzUnmarshalApp: the apikey global option. Besides the JSON round
// trip, what Provision validates without a store (the key format, the
// default rate limit) must not panic on anything the parser accepted.
func FuzzUnmarshalApp(f *testing.F) {
	for _, s := range []string{
		"apikey {\n}",
		"apikey {\n storage /var/lib/keys\n prefix bme_\n length 43\n checksum off\n cache_size 1000\n last_used_flush 10s\n accept_foreign_keys\n}",
		"apikey {\n purge_revoked_after off\n purge_interval 5m\n}",
		"apikey {\n usage_hourly_retention 2d\n usage_daily_retention 365d\n}",
		"apikey {\n purge_revoked_after 48h\n}",
		"apikey {\n purge_revoked_after never\n}",
		"apikey {\n purge_revoked_after 0s\n}",
		"apikey {\n purge_interval -1m\n}",
		"apikey {\n rate_limit 100 1s\n}",
		"apikey {\n rate_limit 10 1m burst 50\n}",
		"apikey {\n rate_limit off\n}",
		"apikey {\n rate_limit 10\n}",
		"apikey {\n rate_limit 0 1s\n}",
		"apikey {\n rate_limit 10 1s burst 0\n}",
		"apikey {\n rate_limit 9223372036854775807 1ns burst 9223372036854775807\n}",
		"apikey {\n rate_limit -1 -1s\n}",
		"apikey {\n length -1\n cache_size -5\n}",
		"apikey {\n length 99999999999999999999\n}",
		"apikey {\n last_used_flush 1d\n}",
		"apikey {\n last_used_flush -1s\n}",
		"apikey {\n prefix \"\"\n}",
		"apikey {\n prefix \"a b\"\n}",
		"apikey {\n checksum\n}",
		"apikey {\n storage a b\n}",
		"apikey extra {\n}",
		"apikey {\n nope\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		d := fuzzDispenser(input)
		if d == nil {
			return
		}
		var a App
		if err := a.UnmarshalCaddyfile(d); err != nil {
			return
		}
		jsonRoundTrip(t, input, &a, func() any { return new(App) })
		fm := keystore.Format{Prefix: a.Prefix, Length: a.Length, Checksum: a.Checksum == nil || *a.Checksum}
		if fm.Validate() == nil && fm.Prefix != "" && fm.Length != 0 {
			if _, err := fm.Generate(); err != nil {
				t.Fatalf("%q: valid format %+v cannot generate: %v", input, fm, err)
			}
		}
		if a.RateLimit != nil {
			if err := a.RateLimit.Validate(); err != nil {
				t.Fatalf("%q: the parser accepted rate_limit %+v, which Validate refuses: %v", input, *a.RateLimit, err)
			}
			_ = a.RateLimit.Effective(keystore.DefaultLimit)
		}
	})
}

// FuzzUnmarshalAdminHandler: the apikey_admin directive.
func FuzzUnmarshalAdminHandler(f *testing.F) {
	for _, s := range []string{
		"apikey_admin",
		"apikey_admin {\n header X-Token\n bearer off\n}",
		"apikey_admin {\n bearer on\n}",
		"apikey_admin x",
		"apikey_admin {\n header\n}",
		"apikey_admin {\n header a b\n}",
		"apikey_admin {\n bearer\n}",
		"apikey_admin {\n require contacts\n}",
		"apikey_admin {\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		d := fuzzDispenser(input)
		if d == nil {
			return
		}
		var h AdminHandler
		if err := h.UnmarshalCaddyfile(d); err != nil {
			return
		}
		jsonRoundTrip(t, input, &h, func() any { return new(AdminHandler) })
	})
}
