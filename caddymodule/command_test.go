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
			Metadata:  map[string]string{"team": "growth", "env": "prod"},
		},
		Plain: "ak_secretsecretsecret",
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
		"Metadata:   env=prod\n" +
		"            team=growth\n"
	if got := buf.String(); got != want {
		t.Errorf("show:\n%s\nwant:\n%s", got, want)
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
		want string
	}{
		{nil, "default"},
		{&keystore.RateLimit{Unlimited: true}, "unlimited"},
		{&keystore.RateLimit{Requests: 10, Window: "1s"}, "10 per 1s"},
		{&keystore.RateLimit{Requests: 10, Window: "1s", Burst: 50}, "10 per 1s (burst 50)"},
	} {
		if got := cliFormatRateLimit(tc.rl); got != tc.want {
			t.Errorf("cliFormatRateLimit(%+v) = %q, want %q", tc.rl, got, tc.want)
		}
	}
}

func TestCommandRenderAccountTable(t *testing.T) {
	now := cliTestNow
	var buf bytes.Buffer
	err := cliRenderAccountTable(&buf, []cliAccount{
		{ID: "default", Status: "open", CreatedAt: now.Add(-2 * time.Hour)},
		{ID: "acme", Name: "Acme Inc", Status: "suspended", RateLimit: &keystore.RateLimit{Unlimited: true}},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	want := "" +
		"ID       NAME      STATUS     RATE LIMIT  CREATED\n" +
		"default  -         open       default     2 hours ago\n" +
		"acme     Acme Inc  suspended  unlimited   -\n"
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
		{[]string{"activate", "k1"}, "POST /apikey/keys/k1/activate ", "Activated key k1 (CRM)"},
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
		{"account", "create"}, {"account", "list"}, {"account", "set-status"},
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
