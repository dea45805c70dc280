package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func TestUnmarshalHandler(t *testing.T) {
	for i, tc := range []struct {
		input   string
		want    string
		wantErr bool
	}{
		{input: `apikey`, want: `{}`},
		{input: `apikey contacts:read`, want: `{"require":"contacts:read"}`},
		{input: `apikey contacts`, want: `{"require":"contacts"}`},
		{input: "apikey {\n require contacts:write\n header X-Token\n bearer off\n forward_key\n}", want: `{"require":"contacts:write","header":"X-Token","bearer":false,"forward_key":true}`},
		{input: "apikey {\n bearer on\n}", want: `{"bearer":true}`},
		{input: `apikey a b`, wantErr: true},
		{input: "apikey contacts {\n require billing\n}", wantErr: true},
		{input: "apikey {\n bearer maybe\n}", wantErr: true},
		{input: "apikey {\n header\n}", wantErr: true},
		{input: "apikey {\n header \"\"\n}", wantErr: true},
		{input: "apikey {\n forward_key yes\n}", wantErr: true},
		{input: "apikey {\n unknown\n}", wantErr: true},
		{input: "apikey {\n escaped_slashes reject\n}", want: `{"escaped_slashes":"reject"}`},
		{input: "apikey contacts {\n escaped_slashes keep\n}", want: `{"require":"contacts","escaped_slashes":"keep"}`},
		{input: "apikey {\n escaped_slashes\n}", wantErr: true},
		{input: "apikey {\n escaped_slashes unescape\n}", wantErr: true},
		{input: "apikey {\n escaped_slashes Keep\n}", wantErr: true},
		{input: "apikey {\n escaped_slashes keep reject\n}", wantErr: true},
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
		if tc.wantErr {
			if err == nil {
				t.Errorf("test %d: expected an error", i)
			}
			continue
		}
		if err != nil {
			t.Errorf("test %d: %v", i, err)
			continue
		}
		got, _ := json.Marshal(h)
		if string(got) != tc.want {
			t.Errorf("test %d: got %s, want %s", i, got, tc.want)
		}
	}
}

func TestUnmarshalApp(t *testing.T) {
	for i, tc := range []struct {
		input   string
		want    string
		wantErr bool
	}{
		{input: "apikey {\n}", want: `{}`},
		{input: "apikey {\n storage /var/lib/keys\n prefix bme_\n length 43\n checksum off\n cache_size 1000\n last_used_flush 10s\n accept_foreign_keys\n}",
			want: `{"storage":"/var/lib/keys","prefix":"bme_","length":43,"checksum":false,"cache_size":1000,"last_used_flush":10000000000,"accept_foreign_keys":true}`},
		{input: "apikey {\n purge_revoked_after off\n purge_interval 5m\n}", want: `{"purge_revoked_after":-1,"purge_interval":300000000000}`},
		{input: "apikey {\n usage_hourly_retention 2d\n usage_daily_retention 365d\n}", want: `{"usage_hourly_retention":172800000000000,"usage_daily_retention":31536000000000000}`},
		{input: "apikey {\n usage_hourly_retention 32d\n}", wantErr: true},
		{input: "apikey {\n usage_daily_retention 1831d\n}", wantErr: true},
		{input: "apikey {\n usage_hourly_retention 0s\n}", wantErr: true},
		{input: "apikey {\n usage_daily_retention\n}", wantErr: true},
		{input: "apikey {\n usage_daily_retention 3d 4d\n}", wantErr: true},
		{input: "apikey {\n purge_revoked_after 48h\n}", want: `{"purge_revoked_after":172800000000000}`},
		{input: "apikey {\n purge_revoked_after never\n}", wantErr: true},
		// Cluster mode: the redis store, exclusive with storage.
		{input: "apikey {\n redis redis://10.0.0.5:6379/0\n}", want: `{"store":{"backend":"redis","url":"redis://10.0.0.5:6379/0"}}`},
		{input: "apikey {\n redis {env.REDIS_URL} {\n  key_prefix staging:\n  max_staleness 5m\n }\n prefix bme_\n}",
			want: `{"store":{"backend":"redis","key_prefix":"staging:","max_staleness":300000000000,"url":"{env.REDIS_URL}"},"prefix":"bme_"}`},
		{input: "apikey {\n redis rediss://u:p@h:6380/1\n}", want: `{"store":{"backend":"redis","url":"rediss://u:p@h:6380/1"}}`},
		{input: "apikey {\n redis http://h:6379\n}", wantErr: true},
		{input: "apikey {\n redis\n}", wantErr: true},
		{input: "apikey {\n redis redis://h:6379 {\n  max_staleness 0s\n }\n}", wantErr: true},
		{input: "apikey {\n redis redis://h:6379 {\n  key_prefix\n }\n}", wantErr: true},
		{input: "apikey {\n redis redis://h:6379 {\n  pool 3\n }\n}", wantErr: true},
		{input: "apikey {\n storage /var/lib/keys\n redis redis://h:6379\n}", wantErr: true},
		{input: "apikey {\n redis redis://h:6379\n redis redis://h2:6379\n}", wantErr: true},
		{input: "apikey {\n purge_revoked_after 0s\n}", wantErr: true},
		{input: "apikey {\n purge_interval -1m\n}", wantErr: true},
		{input: "apikey {\n rate_limit 100 1s\n}", want: `{"rate_limit":{"requests":100,"window":"1s"}}`},
		{input: "apikey {\n rate_limit 10 1m burst 50\n}", want: `{"rate_limit":{"requests":10,"window":"1m","burst":50}}`},
		{input: "apikey {\n rate_limit off\n}", want: `{"rate_limit":{"unlimited":true}}`},
		{input: "apikey {\n rate_limit 10\n}", wantErr: true},
		{input: "apikey {\n rate_limit ten 1s\n}", wantErr: true},
		{input: "apikey {\n rate_limit 0 1s\n}", wantErr: true},
		{input: "apikey {\n rate_limit 10 soon\n}", wantErr: true},
		{input: "apikey {\n rate_limit 10 1s burst 0\n}", wantErr: true},
		{input: "apikey {\n rate_limit 10 1s bust 5\n}", wantErr: true},
		{input: "apikey {\n length many\n}", wantErr: true},
		{input: "apikey {\n checksum\n}", wantErr: true},
		{input: "apikey {\n last_used_flush soon\n}", wantErr: true},
		{input: "apikey {\n storage a b\n}", wantErr: true},
		{input: "apikey {\n storage \"\"\n}", wantErr: true},
		{input: "apikey {\n prefix \"\"\n}", wantErr: true},
		{input: "apikey {\n length 0\n}", wantErr: true},
		{input: "apikey {\n nope\n}", wantErr: true},
		{input: "apikey extra {\n}", wantErr: true},
	} {
		var a App
		err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
		if tc.wantErr {
			if err == nil {
				t.Errorf("test %d: expected an error", i)
			}
			continue
		}
		if err != nil {
			t.Errorf("test %d: %v", i, err)
			continue
		}
		got, _ := json.Marshal(a)
		if string(got) != tc.want {
			t.Errorf("test %d: got %s, want %s", i, got, tc.want)
		}
	}
}

// TestAdaptCaddyfile checks the whole Caddyfile adaptation: the global
// option becomes the apikey app, and the directives are ordered before
// reverse_proxy without a route block.
func TestAdaptCaddyfile(t *testing.T) {
	input := `{
	apikey {
		storage /tmp/keys
		prefix bme_
	}
}
example.com {
	reverse_proxy localhost:3000
	apikey contacts
}
`
	adapter := caddyconfig.GetAdapter("caddyfile")
	out, warnings, err := adapter.Adapt([]byte(input), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %v", warnings)
	}
	var cfg struct {
		Apps struct {
			APIKey json.RawMessage `json:"apikey"`
			HTTP   struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []struct {
							Routes []struct {
								Handle []map[string]any `json:"handle"`
							} `json:"routes"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	if got := string(cfg.Apps.APIKey); got != `{"storage":"/tmp/keys","prefix":"bme_"}` {
		t.Errorf("apikey app: %s", got)
	}
	var handlers []string
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, r := range srv.Routes {
			for _, h := range r.Handle {
				for _, sub := range h.Routes {
					for _, hh := range sub.Handle {
						handlers = append(handlers, hh["handler"].(string))
						if hh["handler"] == "apikey" && hh["require"] != "contacts" {
							t.Errorf("apikey handler: %v", hh)
						}
					}
				}
			}
		}
	}
	if len(handlers) != 2 || handlers[0] != "apikey" || handlers[1] != "reverse_proxy" {
		t.Errorf("handler order: %v\n%s", handlers, out)
	}
}

// TestAdaptDirectiveForms: the forms of the apikey directive as a whole
// Caddyfile gives them: "apikey *" is the scope * (Caddy would read a lone
// * as its match-all matcher and drop it, letting any valid key through),
// a path matcher with or without a scope, * as a matcher before a scope;
// and the global option given twice is an error (the second block
// replaced the first).
func TestAdaptDirectiveForms(t *testing.T) {
	adapt := func(src string) (string, error) {
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
		return string(out), err
	}
	for _, tc := range []struct {
		directive string
		want      string // in the adapted JSON
		matcher   string // "" for none
	}{
		{"apikey *", `{"handler":"apikey","require":"*"}`, ""},
		{"apikey *:read", `{"handler":"apikey","require":"*:read"}`, ""},
		{"apikey", `{"handler":"apikey"}`, ""},
		{"apikey * contacts", `{"handler":"apikey","require":"contacts"}`, ""},
		{"apikey /contacts* contacts", `{"handler":"apikey","require":"contacts"}`, `"path":["/contacts*"]`},
		{"apikey /open*", `{"handler":"apikey"}`, `"path":["/open*"]`},
		{"apikey * {\n\t\tforward_key\n\t}", `{"forward_key":true,"handler":"apikey","require":"*"}`, ""},
	} {
		out, err := adapt(":19651 {\n\t" + tc.directive + "\n\trespond ok\n}\n")
		if err != nil {
			t.Errorf("%q: %v", tc.directive, err)
			continue
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("%q: adapted without %s:\n%s", tc.directive, tc.want, out)
		}
		if hasMatcher := strings.Contains(out, `"match"`); hasMatcher != (tc.matcher != "") || !strings.Contains(out, tc.matcher) {
			t.Errorf("%q: matcher %q expected:\n%s", tc.directive, tc.matcher, out)
		}
	}
	if out, err := adapt("{\n\tapikey {\n\t\tstorage /srv/keys\n\t}\n\tapikey {\n\t\tprefix bme_\n\t}\n}\n:19652 {\n\tapikey\n}\n"); err == nil {
		t.Errorf("two apikey global blocks adapted:\n%s", out)
	}
	// An invalid scope is reported when the Caddyfile is parsed, with its
	// file and line (it failed at provision, inside module-loading errors).
	for _, tc := range []struct{ directive, at string }{
		{"apikey contacts:admin", "Caddyfile:2"},
		{"apikey Contacts", "Caddyfile:2"},
		{"apikey /contacts* contacts:", "Caddyfile:2"},
		{"apikey {\n\t\trequire contacts:admin\n\t}", "Caddyfile:3"},
	} {
		_, err := adapt(":19653 {\n\t" + tc.directive + "\n\trespond ok\n}\n")
		if err == nil || !strings.Contains(err.Error(), tc.at) || !strings.Contains(err.Error(), "invalid scope") {
			t.Errorf("%q: adapt error %v, want an invalid scope at %s", tc.directive, err, tc.at)
		}
	}
}

func TestValidKeyHeader(t *testing.T) {
	for i, tc := range []struct {
		name string
		ok   bool
	}{
		{"X-API-Key", true},
		{"X-Token", true},
		{"apikey", true},
		{"X Token", false},
		{"X-Token:", false},
		{"X-Api-Key-Id", false},
		{"x_api_scopes", false},
		{"Authorization", false},
		{"authorization", false},
		{"Host", false},
		{"host", false},
		{"Transfer-Encoding", false},
		{"Connection", false},
		{"te", false},
		{"Content-Length", false},
		{"X-Host", true},
	} {
		if err := validKeyHeader(tc.name); (err == nil) != tc.ok {
			t.Errorf("test %d: validKeyHeader(%q) = %v", i, tc.name, err)
		}
	}
}
