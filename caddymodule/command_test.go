package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

var cliTestNow = time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)

func cliTimePtr(t time.Time) *time.Time { return &t }

func TestCommandRelativeTime(t *testing.T) {
	now := cliTestNow
	for _, tc := range []struct {
		t    *time.Time
		want string
	}{
		{nil, "never"},
		{cliTimePtr(now), "just now"},
		{cliTimePtr(now.Add(-59 * time.Second)), "just now"},
		{cliTimePtr(now.Add(20 * time.Second)), "just now"}, // clock skew
		{cliTimePtr(now.Add(-time.Minute)), "1 minute ago"},
		{cliTimePtr(now.Add(-3*time.Minute - 40*time.Second)), "3 minutes ago"},
		{cliTimePtr(now.Add(-59 * time.Minute)), "59 minutes ago"},
		{cliTimePtr(now.Add(-time.Hour)), "1 hour ago"},
		{cliTimePtr(now.Add(-2*time.Hour - 59*time.Minute)), "2 hours ago"},
		{cliTimePtr(now.Add(-23 * time.Hour)), "23 hours ago"},
		{cliTimePtr(now.Add(-24 * time.Hour)), "1 day ago"},
		{cliTimePtr(now.Add(-5 * 24 * time.Hour)), "5 days ago"},
		{cliTimePtr(now.Add(-29 * 24 * time.Hour)), "29 days ago"},
		{cliTimePtr(now.Add(-30 * 24 * time.Hour)), "on 2026-02-13"},
		{cliTimePtr(time.Date(2026, 1, 2, 23, 30, 0, 0, time.UTC)), "on 2026-01-02"},
		// The date is in now's location.
		{cliTimePtr(time.Date(2026, 1, 2, 23, 30, 0, 0, time.FixedZone("X", -2*3600))), "on 2026-01-03"},
		{cliTimePtr(now.Add(5*time.Minute + time.Second)), "in 5 minutes"},
		{cliTimePtr(now.Add(3 * 24 * time.Hour)), "in 3 days"},
		{cliTimePtr(now.Add(400 * 24 * time.Hour)), "on 2027-04-19"},
	} {
		if got := cliRelativeTime(tc.t, now); got != tc.want {
			t.Errorf("cliRelativeTime(%v) = %q, want %q", tc.t, got, tc.want)
		}
	}
}

func TestCommandParseExpiry(t *testing.T) {
	now := cliTestNow
	for _, tc := range []struct {
		in      string
		want    time.Time
		wantErr string
	}{
		{in: "720h", want: now.Add(720 * time.Hour)},
		{in: "90m", want: now.Add(90 * time.Minute)},
		{in: "1h30m", want: now.Add(90 * time.Minute)},
		{in: "30d", want: now.Add(30 * 24 * time.Hour)},
		{in: " 2h ", want: now.Add(2 * time.Hour)},
		{in: "2026-12-31T23:59:59Z", want: time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC)},
		{in: "2026-04-01T10:00:00+02:00", want: time.Date(2026, 4, 1, 8, 0, 0, 0, time.UTC)},
		{in: "2026-04-01T10:00:00.5Z", want: time.Date(2026, 4, 1, 10, 0, 0, 5e8, time.UTC)},
		{in: "", wantErr: "empty"},
		{in: "0s", wantErr: "positive"},
		{in: "-1h", wantErr: "positive"},
		{in: "-3d", wantErr: "positive"},
		{in: "2020-01-01T00:00:00Z", wantErr: "in the past"},
		{in: "2026-03-15T12:00:00Z", wantErr: "in the past"},
		{in: "tomorrow", wantErr: "neither an RFC 3339 time"},
		{in: "2026-12-31", wantErr: "neither an RFC 3339 time"},
		{in: "1.5d", wantErr: "neither"},
		{in: "d", wantErr: "neither"},
	} {
		got, err := cliParseExpiry(tc.in, now)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("cliParseExpiry(%q) = %v, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("cliParseExpiry(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestCommandRenderKeyTable(t *testing.T) {
	now := cliTestNow
	keys := []cliKey{
		{
			Key: keystore.Key{ID: "k1", Name: "CRM sync", Hint: "ak_…Xy12", Scopes: []string{"contacts:read", "contacts:write"},
				LastUsedAt: cliTimePtr(now.Add(-3 * time.Minute))},
			Status: "active",
			Plain:  "ak_secretsecretsecret",
		},
		{
			// No status from the API: derived from revoked_at.
			Key: keystore.Key{ID: "k2", Name: strings.Repeat("n", 50), Hint: "ak_…Ab34", Scopes: []string{"*:read"},
				RevokedAt: cliTimePtr(now.Add(-time.Hour)), LastUsedAt: cliTimePtr(now.Add(-40 * 24 * time.Hour))},
		},
		{
			Key: keystore.Key{ID: "k3", Name: "expired", Scopes: nil, ExpiresAt: cliTimePtr(now.Add(-time.Second))},
		},
	}
	var buf bytes.Buffer
	if err := cliRenderKeyTable(&buf, keys, now); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"ID  NAME                                      HINT      SCOPES                        STATUS   LAST USED\n" +
		"k1  CRM sync                                  ak_…Xy12  contacts:read,contacts:write  active   3 minutes ago\n" +
		"k2  nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn…  ak_…Ab34  *:read                        revoked  on 2026-02-03\n" +
		"k3  expired                                   -         -                             expired  never\n"
	if got := buf.String(); got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(buf.String(), "secret") {
		t.Error("the table shows the plaintext key")
	}

	buf.Reset()
	if err := cliRenderKeyTable(&buf, nil, now); err != nil || buf.String() != "No keys.\n" {
		t.Errorf("empty table: %q, %v", buf.String(), err)
	}
}

func TestCommandRenderKey(t *testing.T) {
	now := cliTestNow
	k := cliKey{
		Key: keystore.Key{
			ID: "k1", Name: "CRM sync", Account: "acme", Type: "api", Hint: "ak_…Xy12",
			Scopes:    []string{"contacts:read", "billing:write"},
			CreatedAt: now.Add(-49 * time.Hour), UpdatedAt: now.Add(-2 * time.Hour),
			ExpiresAt: cliTimePtr(now.Add(72 * time.Hour)),
			RateLimit: &keystore.RateLimit{Requests: 100, Window: "1m", Burst: 20},
			Quota:     &keystore.Quota{Requests: 1000, Period: "day"},
			Metadata:  map[string]string{"team": "growth", "env": "prod"},
		},
		QuotaUsed:     func() *int64 { n := int64(12); return &n }(),
		QuotaResetsAt: cliTimePtr(time.Date(2026, 3, 16, 0, 0, 0, 0, time.UTC)),
		Plain:         "ak_secretsecretsecret",
	}
	var buf bytes.Buffer
	if err := cliRenderKey(&buf, &k, now); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"ID:         k1\n" +
		"Name:       CRM sync\n" +
		"Account:    acme\n" +
		"Type:       api\n" +
		"Scopes:     contacts:read, billing:write\n" +
		"Status:     active\n" +
		"Hint:       ak_…Xy12\n" +
		"Created:    2026-03-13 11:00:00 UTC (2 days ago)\n" +
		"Updated:    2026-03-15 10:00:00 UTC (2 hours ago)\n" +
		"Expires:    2026-03-18 12:00:00 UTC (in 3 days)\n" +
		"Last used:  never\n" +
		"Rate limit: 100 per 1m (burst 20)\n" +
		"Quota:      1000 per day, 12 used, resets 2026-03-16 00:00:00 UTC (in 12 hours)\n" +
		"Metadata:   env=prod\n" +
		"            team=growth\n"
	if got := buf.String(); got != want {
		t.Errorf("show:\n%s\nwant:\n%s", got, want)
	}

	// Without a quota, show says so.
	k.Quota, k.QuotaUsed, k.QuotaResetsAt = nil, nil, nil
	buf.Reset()
	if err := cliRenderKey(&buf, &k, now); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "\nQuota:      none\n") {
		t.Errorf("show of a key without a quota:\n%s", buf.String())
	}
}

// TestCommandRenderHostileText: text a key caller can set (metadata, and
// format characters in a name) reaches the terminal quoted, never as raw
// escape sequences, bells, newlines or direction overrides.
func TestCommandRenderHostileText(t *testing.T) {
	now := cliTestNow
	k := cliKey{Key: keystore.Key{
		ID: "k1", Name: "mobile\u202egnp.exe", Account: "acme", Type: "api",
		Scopes: []string{"contacts:read"}, CreatedAt: now, UpdatedAt: now,
		Metadata: map[string]string{
			"owner":     "ops\nStatus:     revoked\x1b[2J\x1b]0;pwned\a",
			"tab\tname": "plain",
			"note":      "ünïcode stays as it is",
		},
	}}
	var show, table bytes.Buffer
	if err := cliRenderKey(&show, &k, now); err != nil {
		t.Fatal(err)
	}
	if err := cliRenderKeyTable(&table, []cliKey{k}, now); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{"show": show.String(), "list": table.String()} {
		if strings.ContainsAny(out, "\x1b\x07\u202e") || strings.Contains(out, "\nStatus:     revoked") {
			t.Errorf("%s writes the caller's control characters raw:\n%q", name, out)
		}
	}
	for _, want := range []string{`owner="ops\nStatus:     revoked\x1b[2J\x1b]0;pwned\a"`, `"tab\tname"=plain`, "note=ünïcode stays as it is", `Name:       "mobile\u202egnp.exe"`} {
		if !strings.Contains(show.String(), want) {
			t.Errorf("show lacks %s:\n%s", want, show.String())
		}
	}
}

func TestCommandFormatRateLimit(t *testing.T) {
	for _, tc := range []struct {
		rl   *keystore.RateLimit
		none string
		want string
	}{
		{nil, "default", "default"},
		{nil, "none", "none"},
		{&keystore.RateLimit{Unlimited: true}, "none", "unlimited"},
		{&keystore.RateLimit{Requests: 10, Window: "1s"}, "default", "10 per 1s"},
		{&keystore.RateLimit{Requests: 10, Window: "1s", Burst: 50}, "default", "10 per 1s (burst 50)"},
	} {
		if got := cliFormatRateLimit(tc.rl, tc.none); got != tc.want {
			t.Errorf("cliFormatRateLimit(%+v) = %q, want %q", tc.rl, got, tc.want)
		}
	}
}

func TestCommandRenderAccountTable(t *testing.T) {
	now := cliTestNow
	var buf bytes.Buffer
	var accounts []cliAccount
	// As the API sends them: no limits (null, or max_keys absent), and
	// every limit.
	for _, raw := range []string{
		`{"id": "default", "status": "open", "rate_limit": null, "quota": null, "created_at": "2026-03-15T10:00:00Z"}`,
		`{"id": "acme", "name": "Acme Inc", "status": "suspended", "rate_limit": {"unlimited": true}, "max_keys": null}`,
		`{"id": "globex", "name": "Globex", "status": "open", "rate_limit": {"requests": 50, "window": "1s"}, "quota": {"requests": 1000, "period": "month"}, "quota_used": 7, "max_keys": 25}`,
	} {
		var a cliAccount
		if err := json.Unmarshal([]byte(raw), &a); err != nil {
			t.Fatal(err)
		}
		accounts = append(accounts, a)
	}
	if err := cliRenderAccountTable(&buf, accounts, now); err != nil {
		t.Fatal(err)
	}
	// An account without a rate limit has none (its keys have theirs):
	// "none", as the docs say, not "default".
	want := "" +
		"ID       NAME      STATUS     RATE LIMIT  QUOTA                    MAX KEYS  CREATED\n" +
		"default  -         open       none        none                     none      2 hours ago\n" +
		"acme     Acme Inc  suspended  unlimited   none                     none      -\n" +
		"globex   Globex    open       50 per 1s   1000 per month (7 used)  25        -\n"
	if got := buf.String(); got != want {
		t.Errorf("accounts:\n%s\nwant:\n%s", got, want)
	}
}

func TestCommandRequestError(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		api  bool
	}{
		{`caddy responded with error: HTTP 404: {"error":"not_found","message":"no key with id abc"}` + "\n", "no key with id abc (not_found)", true},
		{`caddy responded with error: HTTP 400: {"error":"invalid_request","message":"scopes: at least one scope is required","field":"scopes"}`, "scopes: at least one scope is required (invalid_request)", true},
		{`caddy responded with error: HTTP 403: {"error":"client is not allowed to access from origin 'http://x'"}`, "client is not allowed to access from origin 'http://x' (HTTP 403)", true},
		{`caddy responded with error: HTTP 502: bad gateway` + "\n", "bad gateway (HTTP 502)", true},
		{`caddy responded with error: HTTP 500: `, "Internal Server Error (HTTP 500)", true},
		{`performing request: dial tcp 127.0.0.1:2019: connect: connection refused`, "cannot reach Caddy's admin endpoint at localhost:2019", false},
		{`invalid admin address x: y`, "invalid admin address x: y", false},
	} {
		err := cliRequestError("localhost:2019", errors.New(tc.in))
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("cliRequestError(%q) = %q, want %q", tc.in, err, tc.want)
		}
		var apiErr *cliAPIError
		if errors.As(err, &apiErr) != tc.api {
			t.Errorf("cliRequestError(%q): API error %v, want %v", tc.in, !tc.api, tc.api)
		}
	}
}

// cliFakeAdmin is an admin endpoint that records requests and answers
// with a function of them.
type cliFakeAdmin struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []string
}

func cliNewFakeAdmin(t *testing.T, answer func(r *http.Request, body string) (int, string)) *cliFakeAdmin {
	f := &cliFakeAdmin{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		_, _ = b.ReadFrom(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Method+" "+r.URL.RequestURI()+" "+b.String())
		f.mu.Unlock()
		status, body := answer(r, b.String())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *cliFakeAdmin) addr() string { return strings.TrimPrefix(f.URL, "http://") }

func (f *cliFakeAdmin) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reqs...)
}

// cliTestRun runs caddy apikey with args in-process.
func cliTestRun(addr string, args ...string) (stdout, stderr string, err error) {
	return cliTestRunStdin(addr, "", args...)
}

// cliTestRunStdin runs caddy apikey with args and stdin in-process.
func cliTestRunStdin(addr, stdin string, args ...string) (stdout, stderr string, err error) {
	return cliTestExec(addr, stdin, nil, args...)
}

// cliTestRunAt runs caddy apikey with args in-process, with now as the
// commands' clock.
func cliTestRunAt(addr string, now time.Time, args ...string) (stdout, stderr string, err error) {
	return cliTestExec(addr, "", func() time.Time { return now }, args...)
}

// cliTestExec runs caddy apikey with args and stdin in-process; a non-nil
// now replaces the commands' clock.
func cliTestExec(addr, stdin string, now func() time.Time, args ...string) (stdout, stderr string, err error) {
	if now != nil {
		cliNow = now
		defer func() { cliNow = time.Now }()
	}
	root := &cobra.Command{Use: "caddy", SilenceUsage: true}
	cmd := &cobra.Command{Use: "apikey"}
	cliSetup(cmd)
	root.AddCommand(cmd)
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append(append([]string{"apikey"}, args...), "--address", addr))
	err = root.Execute()
	return out.String(), errOut.String(), err
}

func TestCommandValidation(t *testing.T) {
	fake := cliNewFakeAdmin(t, func(*http.Request, string) (int, string) { return 500, `{}` })
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "--scope", "contacts:read"}, "--name is required"},
		{[]string{"create", "--name", " ", "--scope", "contacts:read"}, "--name is required"},
		{[]string{"create", "--name", "x"}, "at least one --scope is required"},
		{[]string{"create", "--name", "x", "--scope", "Contacts"}, `--scope "Contacts"`},
		{[]string{"create", "--name", "x", "--scope", "a:read", "--expires", "yesterday"}, "--expires"},
		{[]string{"create", "--name", "x", "--scope", "a:read", "--expires", "2000-01-01T00:00:00Z"}, "in the past"},
		{[]string{"list", "--status", "gone"}, "--status must be active, revoked or expired"},
		{[]string{"list", "--limit", "-1"}, "--limit must not be negative"},
		{[]string{"regenerate", "k1", "--grace", "soon"}, "--grace"},
		{[]string{"regenerate", "k1", "--grace", "-1h"}, "--grace"},
		{[]string{"import", "/nonexistent/keys.json"}, "reading /nonexistent/keys.json"},
		{[]string{"account", "create", "--name", "Acme"}, "--id is required"},
		{[]string{"account", "create", "--id", "acme", "--status", "closed"}, "account status must be"},
		{[]string{"account", "set-status", "acme", "closed"}, "account status must be"},
		{[]string{"show"}, "accepts 1 arg(s)"},
		{[]string{"account", "set-status", "acme"}, "accepts 2 arg(s)"},
		{[]string{"create", "--name", "x", "--scope", "a:read,"}, "holds an empty scope: separate scopes with commas or repeat --scope"},
		{[]string{"create", "--name", "x", "--scope", "a:read, Contacts"}, `--scope "Contacts"`},
		{[]string{"create", "--name", "x", "--scope", "a:read", "--rate-limit", "100"}, `--rate-limit "100" is neither <requests>/<window> (100/1m) nor unlimited`},
		{[]string{"create", "--name", "x", "--scope", "a:read", "--rate-limit", "0/1m"}, "rate_limit.requests must be at least 1"},
		{[]string{"create", "--name", "x", "--scope", "a:read", "--rate-limit", "5/soon"}, "rate_limit.window"},
		{[]string{"create", "--name", "x", "--scope", "a:read", "--rate-limit", "unlimited", "--burst", "5"}, "--burst does not go with --rate-limit unlimited"},
		{[]string{"create", "--name", "x", "--scope", "a:read", "--burst", "5"}, "--burst needs --rate-limit"},
		{[]string{"create", "--name", "x", "--scope", "a:read", "--quota", "100/week"}, "quota.period must be day or month"},
		{[]string{"create", "--name", "x", "--scope", "a:read", "--quota", "many"}, `--quota "many" is not <requests>/day`},
		{[]string{"create", "--name", "x", "--scope", "a:read", "--metadata", "=v"}, `--metadata "=v" is not name=value`},
		{[]string{"update", "k1"}, "nothing to update: give at least one of --name"},
		{[]string{"update"}, "accepts 1 arg(s)"},
		{[]string{"update", "k1", "--name", " "}, "--name must not be empty"},
		{[]string{"update", "k1", "--scope", ""}, "--scope must name at least one scope"},
		{[]string{"update", "k1", "--scope", ","}, "holds an empty scope"},
		{[]string{"update", "k1", "--expires", "30d", "--no-expiry"}, "--no-expiry does not go with --expires"},
		{[]string{"update", "k1", "--expires", "2000-01-01T00:00:00Z"}, "in the past"},
		{[]string{"update", "k1", "--rate-limit", "5/1s", "--no-rate-limit"}, "--no-rate-limit does not go with --rate-limit"},
		{[]string{"update", "k1", "--quota", "5/day", "--no-quota"}, "--no-quota does not go with --quota"},
		{[]string{"update", "k1", "--metadata", "owner"}, `--metadata "owner" is not name=value`},
		{[]string{"update", "k1", "--metadata", "a=1", "--remove-metadata", "a"}, `--metadata and --remove-metadata both name "a"`},
		{[]string{"account", "create", "--id", "acme", "--max-keys", "-1"}, `--max-keys "-1" must be a whole number of at least 1, or none`},
		{[]string{"account", "update", "acme", "--max-keys", "lots"}, `--max-keys "lots" must be`},
		{[]string{"account", "update", "acme"}, "nothing to update"},
		{[]string{"account", "update", "acme", "--status", "closed"}, "account status must be"},
		{[]string{"account", "show"}, "accepts 1 arg(s)"},
	} {
		out, errOut, err := cliTestRun(fake.addr(), tc.args...)
		if err == nil || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: err %v, stderr %q; want an error containing %q", tc.args, err, errOut, tc.want)
		}
		if out != "" {
			t.Errorf("%v: stdout %q", tc.args, out)
		}
	}
	if reqs := fake.requests(); len(reqs) != 0 {
		t.Errorf("invalid commands sent requests: %q", reqs)
	}
}

func TestCommandRequests(t *testing.T) {
	record := `{"id":"k1","name":"CRM","account":"default","type":"api","scopes":["contacts:read"],"hint":"ak_…abcd","status":"active","created_at":"2026-03-15T11:00:00Z","updated_at":"2026-03-15T11:00:00Z","expires_at":null,"last_used_at":null,"revoked_at":null,"rate_limit":null`
	fake := cliNewFakeAdmin(t, func(r *http.Request, body string) (int, string) {
		switch r.Method + " " + r.URL.Path {
		case "POST /apikey/keys", "POST /apikey/keys/k1/regenerate":
			return 200, record + `,"key":"ak_newkey"}`
		case "POST /apikey/keys/k2/regenerate":
			return 200, strings.Replace(record, `"status":"active"`, `"status":"revoked"`, 1) + `,"key":"ak_newkey"}`
		case "DELETE /apikey/keys/k1":
			return 204, ""
		case "POST /apikey/keys/import":
			return 200, `{"imported": 2}`
		case "POST /apikey/accounts", "PATCH /apikey/accounts/acme":
			return 200, `{"id":"acme","name":"Acme","status":"suspended"}`
		}
		if r.URL.Path == "/apikey/keys" {
			return 200, `{"keys": [], "next_cursor": null}`
		}
		return 200, record + "}"
	})
	for _, tc := range []struct {
		args    []string
		req     string // method, URI and body the admin endpoint got
		wantOut string
	}{
		{
			[]string{"create", "--name", "CRM", "--scope", "contacts:read", "--scope", "billing:write", "--account", "acme", "--type", "mcp"},
			`POST /apikey/keys {"account":"acme","name":"CRM","scopes":["contacts:read","billing:write"],"type":"mcp"}`,
			"Created key k1 (CRM)\n\n  ak_newkey\n\nStore it now: it is not shown again.\n",
		},
		{
			[]string{"create", "--name", "CRM", "--scope", "contacts:read", "--expires", "2030-01-01T00:00:00Z"},
			`POST /apikey/keys {"expires_at":"2030-01-01T00:00:00Z","name":"CRM","scopes":["contacts:read"]}`,
			"ak_newkey",
		},
		{[]string{"show", "k1"}, "GET /apikey/keys/k1 ", "Hint:       ak_…abcd\n"},
		{[]string{"show", "a/b"}, "GET /apikey/keys/a%2Fb ", "ID:"},
		{[]string{"revoke", "k1"}, "POST /apikey/keys/k1/revoke ", "Revoked key k1 (CRM): active.\n"},
		{[]string{"regenerate", "k1"}, "POST /apikey/keys/k1/regenerate ", "Regenerated key k1 (CRM)\n\n  ak_newkey\n\nStore it now: it is not shown again.\nThe old key no longer works.\n"},
		{[]string{"regenerate", "k1", "--grace", "1d"}, `POST /apikey/keys/k1/regenerate {"grace_period":"24h0m0s"}`, "keeps working for 1d"},
		{[]string{"regenerate", "k2", "--grace", "1h"}, `POST /apikey/keys/k2/regenerate {"grace_period":"1h0m0s"}`, "The key is revoked: it is refused until it is activated.\n"},
		{[]string{"regenerate", "k1", "--json"}, "POST /apikey/keys/k1/regenerate ", `"key": "ak_newkey"`},
		{[]string{"create", "--name", "CRM", "--scope", "a:read", "--json"}, `POST /apikey/keys {"name":"CRM","scopes":["a:read"]}`, `"key": "ak_newkey"`},
		{[]string{"list", "--json"}, "GET /apikey/keys?limit=1000 ", "{\n  \"keys\": [],\n  \"next_cursor\": null\n}\n"},
		{[]string{"delete", "k1"}, "DELETE /apikey/keys/k1 ", "Deleted key k1.\n"},
		{[]string{"delete", "k1", "--json"}, "DELETE /apikey/keys/k1 ", "{\n  \"deleted\": true,\n  \"id\": \"k1\"\n}\n"},
		{[]string{"account", "create", "--id", "acme", "--name", "Acme", "--status", "suspended"}, `POST /apikey/accounts {"id":"acme","name":"Acme","status":"suspended"}`, "Created account acme (Acme): suspended.\n"},
		{[]string{"account", "set-status", "acme", "suspended"}, `PATCH /apikey/accounts/acme {"status":"suspended"}`, "Updated account acme (Acme): suspended.\n"},
		{[]string{"account", "list", "--json"}, "GET /apikey/accounts ", `"id": "k1"`},
		{[]string{"usage", "k1", "--interval", "day", "--from", "2026-03-14T12:00:00Z", "--to", "2026-03-15T13:00:00+01:00", "--json"}, "GET /apikey/keys/k1/usage?from=2026-03-14T12%3A00%3A00Z&interval=day&to=2026-03-15T12%3A00%3A00Z ", `"id": "k1"`},
		{[]string{"account", "usage", "acme", "--json"}, "GET /apikey/accounts/acme/usage ", `"id": "k1"`},
		// --scope takes several scopes separated by commas, and repeats.
		{
			[]string{"create", "--name", "CRM", "--scope", "contacts:read, billing:write", "--scope", "orders:read"},
			`POST /apikey/keys {"name":"CRM","scopes":["contacts:read","billing:write","orders:read"]}`,
			"Created key k1 (CRM)",
		},
		{
			[]string{"create", "--name", "CRM", "--scope", "a:read", "--rate-limit", "100/1m", "--burst", "20", "--quota", "10000/day", "--metadata", "owner=ops", "--metadata", "q=a=b"},
			`POST /apikey/keys {"metadata":{"owner":"ops","q":"a=b"},"name":"CRM","quota":{"requests":10000,"period":"day"},"rate_limit":{"requests":100,"window":"1m","burst":20},"scopes":["a:read"]}`,
			"Created key k1 (CRM)",
		},
		{
			[]string{"create", "--name", "CRM", "--scope", "a:read", "--rate-limit", "unlimited"},
			`POST /apikey/keys {"name":"CRM","rate_limit":{"unlimited":true},"scopes":["a:read"]}`,
			"Created key k1 (CRM)",
		},
	} {
		before := len(fake.requests())
		out, errOut, err := cliTestRun(fake.addr(), tc.args...)
		if err != nil {
			t.Errorf("%v: %v, stderr %q", tc.args, err, errOut)
			continue
		}
		reqs := fake.requests()[before:]
		if len(reqs) != 1 || reqs[0] != tc.req {
			t.Errorf("%v: requests %q, want [%q]", tc.args, reqs, tc.req)
		}
		if !strings.Contains(out, tc.wantOut) {
			t.Errorf("%v: stdout %q, want it to contain %q", tc.args, out, tc.wantOut)
		}
	}
}

func TestCommandCreateWithDuration(t *testing.T) {
	var got struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	fake := cliNewFakeAdmin(t, func(r *http.Request, body string) (int, string) {
		_ = json.Unmarshal([]byte(body), &got)
		return 201, `{"id":"k1","name":"x","key":"ak_x"}`
	})
	before := time.Now()
	if _, errOut, err := cliTestRun(fake.addr(), "create", "--name", "x", "--scope", "a:read", "--expires", "720h"); err != nil {
		t.Fatalf("%v: %s", err, errOut)
	}
	if d := got.ExpiresAt.Sub(before); d < 720*time.Hour || d > 720*time.Hour+time.Minute {
		t.Errorf("expires_at %v is %v from now, want 720h", got.ExpiresAt, d)
	}
	if got.ExpiresAt.Location() != time.UTC {
		t.Errorf("expires_at %v is not in UTC", got.ExpiresAt)
	}
}

func TestCommandListFollowsCursor(t *testing.T) {
	// 5 keys, served 2 per page at most.
	fake := cliNewFakeAdmin(t, func(r *http.Request, _ string) (int, string) {
		q := r.URL.Query()
		start := 0
		if c := q.Get("cursor"); c != "" {
			fmt.Sscanf(c, "c%d", &start)
		}
		var limit int
		fmt.Sscanf(q.Get("limit"), "%d", &limit)
		end := min(start+min(limit, 2), 5)
		var keys []string
		for i := start; i < end; i++ {
			keys = append(keys, fmt.Sprintf(`{"id":"k%d","name":"key %d","hint":"ak_…%04d","scopes":["a:read"],"status":"active","last_used_at":null}`, i, i, i))
		}
		next := "null"
		if end < 5 {
			next = fmt.Sprintf(`"c%d"`, end)
		}
		return 200, `{"keys":[` + strings.Join(keys, ",") + `],"next_cursor":` + next + `}`
	})

	out, errOut, err := cliTestRun(fake.addr(), "list", "--account", "acme", "--status", "active", "--search", "key")
	if err != nil {
		t.Fatalf("%v: %s", err, errOut)
	}
	for i := 0; i < 5; i++ {
		if !strings.Contains(out, fmt.Sprintf("k%d  key %d  ak_…%04d  a:read  active  never\n", i, i, i)) {
			t.Errorf("table has no row for k%d:\n%s", i, out)
		}
	}
	reqs := fake.requests()
	want := []string{
		"GET /apikey/keys?account=acme&limit=1000&q=key&status=active ",
		"GET /apikey/keys?account=acme&cursor=c2&limit=1000&q=key&status=active ",
		"GET /apikey/keys?account=acme&cursor=c4&limit=1000&q=key&status=active ",
	}
	if strings.Join(reqs, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(reqs, "\n"), strings.Join(want, "\n"))
	}

	// --limit stops early; --json merges the pages.
	before := len(fake.requests())
	out, errOut, err = cliTestRun(fake.addr(), "list", "--limit", "3", "--json")
	if err != nil {
		t.Fatalf("%v: %s", err, errOut)
	}
	var page struct {
		Keys       []cliKey `json:"keys"`
		NextCursor *string  `json:"next_cursor"`
	}
	if err := json.Unmarshal([]byte(out), &page); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	if len(page.Keys) != 3 || page.Keys[2].ID != "k2" || page.NextCursor == nil || *page.NextCursor != "c3" {
		t.Errorf("--limit 3: %+v", page)
	}
	reqs = fake.requests()[before:]
	if len(reqs) != 2 || !strings.Contains(reqs[0], "limit=3") || !strings.Contains(reqs[1], "cursor=c2&limit=1") {
		t.Errorf("--limit 3 requests: %q", reqs)
	}
}

func TestCommandAPIError(t *testing.T) {
	fake := cliNewFakeAdmin(t, func(r *http.Request, _ string) (int, string) {
		return 404, `{"error":"not_found","message":"no key with id ` + url.PathEscape(strings.TrimPrefix(r.URL.Path, "/apikey/keys/")) + `"}`
	})
	for _, args := range [][]string{{"show", "nope"}, {"show", "nope", "--json"}} {
		out, errOut, err := cliTestRun(fake.addr(), args...)
		if err == nil {
			t.Errorf("%v: no error", args)
		}
		if errOut != "Error: no key with id nope (not_found)\n" {
			t.Errorf("%v: stderr %q", args, errOut)
		}
		if out != "" {
			t.Errorf("%v: stdout %q", args, out)
		}
	}

	// Nothing listening.
	fake.Close()
	_, errOut, err := cliTestRun(fake.addr(), "list")
	if err == nil || !strings.Contains(errOut, "cannot reach Caddy's admin endpoint at "+fake.addr()) {
		t.Errorf("no Caddy: err %v, stderr %q", err, errOut)
	}
}

func TestCommandImport(t *testing.T) {
	fake := cliNewFakeAdmin(t, func(r *http.Request, body string) (int, string) {
		return 201, `{"imported": 2}`
	})
	entries := `[{"key": "legacy_0123456789abcdef", "name": "a", "scopes": ["a:read"]}, {"sha256": "` + strings.Repeat("ab", 32) + `", "name": "b", "scopes": ["a:read"]}]`
	file := t.TempDir() + "/keys.json"
	if err := os.WriteFile(file, []byte(entries), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := cliTestRun(fake.addr(), "import", file)
	if err != nil || out != "Imported 2 keys.\n" {
		t.Errorf("import: %q, %v, %s", out, err, errOut)
	}
	if reqs := fake.requests(); len(reqs) != 1 || reqs[0] != "POST /apikey/keys/import "+entries {
		t.Errorf("import requests: %q", reqs)
	}

	// From stdin, with --json.
	out, errOut, err = cliTestRunStdin(fake.addr(), entries, "import", "-", "--json")
	if err != nil || out != "{\n  \"imported\": 2\n}\n" {
		t.Errorf("import -: %q, %v, %s", out, err, errOut)
	}

	// Not an array: refused before any request.
	before := len(fake.requests())
	_, errOut, err = cliTestRunStdin(fake.addr(), `{"key": "x"}`, "import", "-")
	if err == nil || !strings.Contains(errOut, "must hold a JSON array") {
		t.Errorf("import of an object: %v, %q", err, errOut)
	}
	if len(fake.requests()) != before {
		t.Error("import of an object sent a request")
	}
}

func TestCommandRegistered(t *testing.T) {
	// The command is registered with caddy under "apikey", and has every
	// subcommand of the contract.
	reg, ok := caddycmd.Commands()["apikey"]
	if !ok || reg.CobraFunc == nil {
		t.Fatal("caddy apikey is not registered")
	}
	cmd := &cobra.Command{Use: "apikey"}
	reg.CobraFunc(cmd)
	for _, path := range [][]string{
		{"create"}, {"list"}, {"show"}, {"revoke"}, {"activate"}, {"regenerate"}, {"delete"}, {"import"}, {"load"},
		{"update"}, {"account", "create"}, {"account", "list"}, {"account", "show"}, {"account", "update"}, {"account", "set-status"},
		{"usage"}, {"account", "usage"},
	} {
		c, rest, err := cmd.Find(path)
		if err != nil || len(rest) != 0 || c.Name() != path[len(path)-1] {
			t.Errorf("subcommand %v: %v %v %v", path, c, rest, err)
		}
	}
}

func TestCommandAdminAddress(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caddyfile := write("Caddyfile", "{\n\tadmin localhost:2345\n}\nhttp://localhost:9999 {\n\trespond ok\n}\n")
	named := write("site.caddyfile", "{\n\tadmin unix//run/caddy-admin.sock\n}\n")
	jsonFile := write("caddy.json", `{"admin": {"listen": "localhost:3456"}}`)
	noAdmin := write("noadmin.json", `{}`)
	other := write("conf.txt", "{\n\tadmin localhost:4567\n}\n")
	broken := write("broken.caddyfile", "{\n\tadmin\n")

	t.Chdir(t.TempDir()) // no Caddyfile here
	for _, tc := range []struct {
		address, config, adapter string
		want, wantErr            string
	}{
		{address: "localhost:1111", config: caddyfile, want: "localhost:1111"},
		{want: "localhost:2019"},
		{config: caddyfile, want: "localhost:2345"},
		{config: named, want: "unix//run/caddy-admin.sock"},
		{config: jsonFile, want: "localhost:3456"},
		{config: noAdmin, want: "localhost:2019"},
		{config: other, adapter: "caddyfile", want: "localhost:4567"},
		{config: other, adapter: "nope", wantErr: "unrecognized config adapter"},
		{adapter: "caddyfile", wantErr: "--adapter needs --config"},
		{config: dir + "/missing", wantErr: "no such file"},
		{config: broken, wantErr: "or use --address"},
		{config: "-", want: "localhost:5678"},
	} {
		got, err := cliAdminAddress(tc.address, tc.config, tc.adapter, strings.NewReader(`{"admin": {"listen": "localhost:5678"}}`))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%+v: %q, %v; want an error containing %q", tc, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc, got, err, tc.want)
		}
	}

	// The Caddyfile of the current directory, as caddy reload finds it.
	t.Chdir(dir)
	if got, err := cliAdminAddress("", "", "", nil); err != nil || got != "localhost:2345" {
		t.Errorf("adjacent Caddyfile: %q, %v", got, err)
	}
}

// TestCommandUnknownSubcommand: an unknown subcommand of caddy apikey or
// of caddy apikey account is an error naming it (cobra printed the help
// and exited 0), and sends nothing; without a subcommand, the help.
func TestCommandUnknownSubcommand(t *testing.T) {
	fake := cliNewFakeAdmin(t, func(*http.Request, string) (int, string) { return 200, `{}` })
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"rotate", "abc"}, `Error: unknown command "rotate" for "caddy apikey": run 'caddy apikey --help' for the list of commands`},
		{[]string{"crate", "--name", "x"}, `unknown command "crate" for "caddy apikey" (did you mean "create"?)`},
		{[]string{"account", "rename", "acme"}, `Error: unknown command "rename" for "caddy apikey account": run 'caddy apikey account --help'`},
		{[]string{"account", "lst", "--json"}, `(did you mean "list"?)`},
	} {
		out, errOut, err := cliTestRun(fake.addr(), tc.args...)
		if err == nil || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: err %v, stderr %q; want an error containing %q", tc.args, err, errOut, tc.want)
		}
		if out != "" {
			t.Errorf("%v: stdout %q", tc.args, out)
		}
	}
	if reqs := fake.requests(); len(reqs) != 0 {
		t.Errorf("unknown subcommands sent requests: %q", reqs)
	}

	for _, args := range [][]string{{}, {"account"}} {
		out, errOut, err := cliTestRun(fake.addr(), args...)
		if err != nil || !strings.Contains(out, "Available Commands:") || errOut != "" {
			t.Errorf("%v: err %v, stdout %q, stderr %q; want the help", args, err, out, errOut)
		}
	}
}

// TestCommandHelpDocs: the help of caddy apikey and of its subcommands
// points to this plugin's docs, not to the footer that Caddy's root
// command gives every command's help.
func TestCommandHelpDocs(t *testing.T) {
	reg := caddycmd.Commands()["apikey"]
	for _, args := range [][]string{{"apikey", "--help"}, {"apikey", "update", "--help"}, {"help", "apikey"}} {
		root := &cobra.Command{Use: "caddy"}
		// What caddycmd's root command does to every help text.
		root.SetHelpTemplate(root.HelpTemplate() + "\nFull documentation is available at:\nhttps://caddyserver.com/docs/command-line\n")
		cmd := &cobra.Command{Use: reg.Name + " " + reg.Usage, Short: reg.Short, Long: reg.Long}
		reg.CobraFunc(cmd)
		root.AddCommand(cmd)
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.Contains(out.String(), cliDocsURL) || strings.Contains(out.String(), "caddyserver.com/docs/command-line") {
			t.Errorf("%v: help does not point to %s only:\n%s", args, cliDocsURL, out.String())
		}
	}
}

// TestCommandActivate: activate says what happened. It reads the key
// first, since the API answers an already active key as it answers a
// re-activated one; an expired key is an error with the command that
// extends it.
func TestCommandActivate(t *testing.T) {
	rec := func(revoked, expired bool) string {
		r, e := "null", `"2030-01-01T00:00:00Z"`
		if revoked {
			r = `"2026-03-15T11:00:00Z"`
		}
		if expired {
			e = `"2026-03-01T00:00:00Z"`
		}
		return `{"id":"k1","name":"CRM","account":"default","type":"api","scopes":["a:read"],"expires_at":` + e + `,"revoked_at":` + r + `}`
	}
	for _, tc := range []struct {
		name             string
		before, after    string
		json             bool
		wantOut, wantErr string
		wantReqs         int
	}{
		{"revoked", rec(true, false), rec(false, false), false, "Activated key k1 (CRM): active.\n", "", 2},
		{"already active", rec(false, false), rec(false, false), false, "Key k1 (CRM) is already active.\n", "", 2},
		{"revoked and expired", rec(true, true), rec(false, true), false, "",
			"Error: key k1 (CRM) was activated, but it expired 2026-03-01 00:00:00 UTC (14 days ago) and is refused until its expiry is extended: caddy apikey update k1 --expires <time|duration> (such as 30d), or --no-expiry\n", 2},
		{"expired, not revoked", rec(false, true), rec(false, true), false, "", "Error: key k1 (CRM) is not revoked, but it expired", 2},
		{"--json", "", rec(false, false), true, `"id": "k1"`, "", 1},
		{"--json, expired", "", rec(false, true), true, `"id": "k1"`, "Error: key k1 (CRM) was activated, but it expired", 1},
	} {
		fake := cliNewFakeAdmin(t, func(r *http.Request, _ string) (int, string) {
			if r.Method == http.MethodGet {
				return 200, tc.before
			}
			return 200, tc.after
		})
		args := []string{"activate", "k1"}
		if tc.json {
			args = append(args, "--json")
		}
		out, errOut, err := cliTestRunAt(fake.addr(), cliTestNow, args...)
		if (err != nil) != (tc.wantErr != "") || !strings.Contains(errOut, tc.wantErr) || (tc.wantErr == "" && errOut != "") {
			t.Errorf("%s: err %v, stderr %q; want %q", tc.name, err, errOut, tc.wantErr)
		}
		if !strings.Contains(out, tc.wantOut) || (tc.wantOut == "" && out != "") {
			t.Errorf("%s: stdout %q, want %q", tc.name, out, tc.wantOut)
		}
		reqs := fake.requests()
		if len(reqs) != tc.wantReqs || reqs[len(reqs)-1] != "POST /apikey/keys/k1/activate " || (tc.wantReqs == 2 && reqs[0] != "GET /apikey/keys/k1 ") {
			t.Errorf("%s: requests %q", tc.name, reqs)
		}
	}
}

// TestCommandUpdate: update sends PATCH /keys/{id} with the fields of the
// flags given and no other; metadata is read, merged and written back
// whole (the API replaces it), unless --no-metadata starts from none.
func TestCommandUpdate(t *testing.T) {
	record := `{"id":"k1","name":"CRM","account":"default","type":"api","scopes":["a:read"],"status":"active","created_at":"2026-03-15T11:00:00Z","updated_at":"2026-03-15T11:00:00Z","metadata":{"owner":"ops","team":"crm"}}`
	fake := cliNewFakeAdmin(t, func(r *http.Request, body string) (int, string) { return 200, record })
	for _, tc := range []struct {
		args []string
		reqs []string
	}{
		{[]string{"--name", "CRM (prod)"}, []string{`PATCH /apikey/keys/k1 {"name":"CRM (prod)"}`}},
		{[]string{"--scope", "contacts:read,billing:read", "--scope", " orders:write "}, []string{`PATCH /apikey/keys/k1 {"scopes":["contacts:read","billing:read","orders:write"]}`}},
		{[]string{"--expires", "2030-01-01T00:00:00Z"}, []string{`PATCH /apikey/keys/k1 {"expires_at":"2030-01-01T00:00:00Z"}`}},
		{[]string{"--no-expiry"}, []string{`PATCH /apikey/keys/k1 {"expires_at":null}`}},
		{[]string{"--type", "mcp"}, []string{`PATCH /apikey/keys/k1 {"type":"mcp"}`}},
		{[]string{"--rate-limit", "10/1s"}, []string{`PATCH /apikey/keys/k1 {"rate_limit":{"requests":10,"window":"1s"}}`}},
		{[]string{"--rate-limit", "10/1s", "--burst", "30"}, []string{`PATCH /apikey/keys/k1 {"rate_limit":{"requests":10,"window":"1s","burst":30}}`}},
		{[]string{"--rate-limit", "unlimited"}, []string{`PATCH /apikey/keys/k1 {"rate_limit":{"unlimited":true}}`}},
		{[]string{"--no-rate-limit"}, []string{`PATCH /apikey/keys/k1 {"rate_limit":null}`}},
		{[]string{"--quota", "500/month"}, []string{`PATCH /apikey/keys/k1 {"quota":{"requests":500,"period":"month"}}`}},
		{[]string{"--no-quota"}, []string{`PATCH /apikey/keys/k1 {"quota":null}`}},
		{[]string{"--metadata", "env=prod", "--remove-metadata", "team", "--remove-metadata", "absent"},
			[]string{"GET /apikey/keys/k1 ", `PATCH /apikey/keys/k1 {"metadata":{"env":"prod","owner":"ops"}}`}},
		{[]string{"--remove-metadata", "owner", "--remove-metadata", "team"},
			[]string{"GET /apikey/keys/k1 ", `PATCH /apikey/keys/k1 {"metadata":null}`}},
		{[]string{"--no-metadata"}, []string{`PATCH /apikey/keys/k1 {"metadata":null}`}},
		{[]string{"--no-metadata", "--metadata", "env=dev"}, []string{`PATCH /apikey/keys/k1 {"metadata":{"env":"dev"}}`}},
		{[]string{"--name", "x", "--no-expiry", "--no-quota", "--json"}, []string{`PATCH /apikey/keys/k1 {"expires_at":null,"name":"x","quota":null}`}},
	} {
		before := len(fake.requests())
		out, errOut, err := cliTestRun(fake.addr(), append([]string{"update", "k1"}, tc.args...)...)
		if err != nil {
			t.Errorf("%v: %v, stderr %q", tc.args, err, errOut)
			continue
		}
		if reqs := fake.requests()[before:]; strings.Join(reqs, "\n") != strings.Join(tc.reqs, "\n") {
			t.Errorf("%v: requests\n%q\nwant\n%q", tc.args, reqs, tc.reqs)
		}
		want := "Updated key k1 (CRM).\n\nID:         k1\n"
		if slices.Contains(tc.args, "--json") {
			want = "{\n  \"id\": \"k1\",\n"
		}
		if !strings.HasPrefix(out, want) {
			t.Errorf("%v: stdout %q, want it to start with %q", tc.args, out, want)
		}
	}
}

// TestCommandAccountLimits: account create and update send max_keys (null
// to remove the bound on update, nothing on create), rate_limit and quota;
// account show and list print them, "none" for an absent max_keys.
func TestCommandAccountLimits(t *testing.T) {
	account := `{"id":"acme","name":"Acme","status":"open","rate_limit":{"requests":5,"window":"1s"},"quota":{"requests":100,"period":"day"},"quota_used":3,"quota_resets_at":"2026-03-16T00:00:00Z","max_keys":25,"created_at":"2026-03-15T11:00:00Z","updated_at":"2026-03-15T11:00:00Z"}`
	fake := cliNewFakeAdmin(t, func(r *http.Request, body string) (int, string) {
		switch {
		case r.URL.Path == "/apikey/accounts" && r.Method == http.MethodGet:
			return 200, `{"accounts":[` + account + `,{"id":"default","name":"Default","status":"open","rate_limit":null,"quota":null}]}`
		case r.URL.Path == "/apikey/accounts/plain":
			return 200, `{"id":"plain","name":"Plain","status":"open","rate_limit":null,"quota":null}`
		}
		return 200, account
	})
	for _, tc := range []struct {
		args    []string
		req     string
		wantOut string
	}{
		{[]string{"account", "create", "--id", "acme", "--max-keys", "25"}, `POST /apikey/accounts {"id":"acme","max_keys":25}`, "Created account acme (Acme): open.\n"},
		{[]string{"account", "create", "--id", "acme", "--max-keys", "none", "--rate-limit", "5/1s", "--quota", "100/day"},
			`POST /apikey/accounts {"id":"acme","quota":{"requests":100,"period":"day"},"rate_limit":{"requests":5,"window":"1s"}}`, "Created account acme"},
		{[]string{"account", "update", "acme", "--max-keys", "10"}, `PATCH /apikey/accounts/acme {"max_keys":10}`, "Updated account acme.\n\nID:         acme\n"},
		{[]string{"account", "update", "acme", "--max-keys", "none"}, `PATCH /apikey/accounts/acme {"max_keys":null}`, "Max keys:   25\n"},
		{[]string{"account", "update", "acme", "--max-keys", "0"}, `PATCH /apikey/accounts/acme {"max_keys":null}`, "Updated account acme."},
		{[]string{"account", "update", "acme", "--name", "Acme Inc", "--status", "suspended", "--no-rate-limit", "--no-quota"},
			`PATCH /apikey/accounts/acme {"name":"Acme Inc","quota":null,"rate_limit":null,"status":"suspended"}`, "Updated account acme."},
		{[]string{"account", "update", "acme", "--rate-limit", "unlimited", "--json"}, `PATCH /apikey/accounts/acme {"rate_limit":{"unlimited":true}}`, `"max_keys": 25`},
		{[]string{"account", "show", "acme"}, "GET /apikey/accounts/acme ",
			"ID:         acme\nName:       Acme\nStatus:     open\nRate limit: 5 per 1s\nQuota:      100 per day, 3 used, resets 2026-03-16 00:00:00 UTC"},
		{[]string{"account", "show", "plain"}, "GET /apikey/accounts/plain ", "Rate limit: none\nQuota:      none\nMax keys:   none\n"},
		{[]string{"account", "list"}, "GET /apikey/accounts ",
			"ID       NAME     STATUS  RATE LIMIT  QUOTA                 MAX KEYS  CREATED\n" +
				"acme     Acme     open    5 per 1s    100 per day (3 used)  25        "},
		{[]string{"account", "list"}, "GET /apikey/accounts ", "\ndefault  Default  open    none        none                  none      -\n"},
	} {
		before := len(fake.requests())
		out, errOut, err := cliTestRun(fake.addr(), tc.args...)
		if err != nil {
			t.Errorf("%v: %v, stderr %q", tc.args, err, errOut)
			continue
		}
		if reqs := fake.requests()[before:]; len(reqs) != 1 || reqs[0] != tc.req {
			t.Errorf("%v: requests %q, want [%q]", tc.args, reqs, tc.req)
		}
		if !strings.Contains(out, tc.wantOut) {
			t.Errorf("%v: stdout %q, want it to contain %q", tc.args, out, tc.wantOut)
		}
	}
}

func TestCommandRenderUsage(t *testing.T) {
	var u cliUsageSeries
	err := json.Unmarshal([]byte(`{"account":"acme","interval":"day","from":"2026-03-14T00:00:00Z","to":"2026-03-15T12:00:00Z",
		"points":[
			{"start":"2026-03-14T00:00:00Z","passed":12,"refused":{"rate_limited":0,"key_revoked":0},"refused_total":0},
			{"start":"2026-03-15T00:00:00Z","passed":3,"refused":{"rate_limited":1500,"key_revoked":2},"refused_total":1502}],
		"totals":{"passed":15,"refused":{"rate_limited":1500,"key_revoked":2,"quota_exceeded":0},"refused_total":1502}}`), &u)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := cliRenderUsage(&out, &u); err != nil {
		t.Fatal(err)
	}
	want := "Account acme: daily requests from 2026-03-14 00:00 to 2026-03-15 12:00 UTC\n" +
		"     START  PASSED  REFUSED  KEY_REVOKED  RATE_LIMITED\n" +
		"2026-03-14      12        0            0             0\n" +
		"2026-03-15       3     1502            2          1500\n" +
		"     TOTAL      15     1502            2          1500\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}
