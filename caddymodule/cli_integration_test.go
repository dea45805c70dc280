package caddymodule_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// cliRun runs "caddy apikey <args> --address <the test Caddy's admin
// endpoint>" in-process, through the command registered with caddycmd.
func cliRun(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return cliRunAt(t, adminAddr, args...)
}

// cliRunAt runs "caddy apikey <args> --address <addr>" in-process.
func cliRunAt(t *testing.T, addr string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	reg, ok := caddycmd.Commands()["apikey"]
	if !ok {
		t.Fatal("caddy apikey is not registered")
	}
	root := &cobra.Command{Use: "caddy", SilenceUsage: true}
	cmd := &cobra.Command{Use: reg.Name, Short: reg.Short}
	reg.CobraFunc(cmd)
	root.AddCommand(cmd)
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(""))
	root.SetArgs(append(append([]string{"apikey"}, args...), "--address", addr))
	err = root.Execute()
	return out.String(), errOut.String(), err
}

// cliOK runs a command that must succeed and returns its stdout.
func cliOK(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := cliRun(t, args...)
	if err != nil {
		t.Fatalf("caddy apikey %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	if errOut != "" {
		t.Errorf("caddy apikey %s: stderr %q", strings.Join(args, " "), errOut)
	}
	return out
}

// cliJSON runs a command with --json and decodes its stdout.
func cliJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	out := cliOK(t, append(args, "--json")...)
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("caddy apikey %s --json: not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
	return v
}

// cliFail runs a command that must fail: nothing on stdout, the error on
// stderr.
func cliFail(t *testing.T, want string, args ...string) {
	t.Helper()
	out, errOut, err := cliRun(t, args...)
	if err == nil {
		t.Errorf("caddy apikey %s: no error; stdout %q", strings.Join(args, " "), out)
	}
	if out != "" {
		t.Errorf("caddy apikey %s: stdout %q", strings.Join(args, " "), out)
	}
	if !strings.HasPrefix(errOut, "Error: ") || !strings.Contains(errOut, want) {
		t.Errorf("caddy apikey %s: stderr %q, want an error containing %q", strings.Join(args, " "), errOut, want)
	}
}

// cliNewKeyRE finds the key in the text output of create and regenerate.
var cliNewKeyRE = regexp.MustCompile(`(?m)^  (ak_[0-9A-Za-z]+)$`)

func TestCLIRoundTrip(t *testing.T) {
	e := start(t)
	proxied := func(name, key string, status int, code string) {
		t.Helper()
		res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", key), "")
		e.expect(name, res, body, status, code, status == 200)
	}

	// Accounts.
	out := cliOK(t, "account", "create", "--id", "acme", "--name", "Acme Inc")
	if out != "Created account acme (Acme Inc): open.\n" {
		t.Errorf("account create: %q", out)
	}
	acct := cliJSON(t, "account", "create", "--id", "globex", "--status", "suspended")
	if acct["id"] != "globex" || acct["status"] != "suspended" {
		t.Errorf("account create --json: %v", acct)
	}
	out = cliOK(t, "account", "list")
	for _, want := range []string{"ID", "STATUS", "acme", "Acme Inc", "globex", "suspended", "default"} {
		if !strings.Contains(out, want) {
			t.Errorf("account list has no %q:\n%s", want, out)
		}
	}
	if accts := cliJSON(t, "account", "list"); len(accts["accounts"].([]any)) != 3 {
		t.Errorf("account list --json: %v", accts)
	}

	// Create, in text and in JSON.
	out = cliOK(t, "create", "--name", "CRM sync", "--scope", "contacts:read", "--scope", "billing:read", "--account", "acme", "--expires", "720h", "--type", "mcp")
	m := cliNewKeyRE.FindStringSubmatch(out)
	if m == nil || !strings.HasPrefix(out, "Created key ") || !strings.Contains(out, "(CRM sync)") || !strings.Contains(out, "not shown again") {
		t.Fatalf("create: %q", out)
	}
	textKey := m[1]
	proxied("created in text", textKey, 200, "")

	created := cliJSON(t, "create", "--name", "billing worker", "--scope", "contacts:write", "--account", "acme")
	id, _ := created["id"].(string)
	key, _ := created["key"].(string)
	if id == "" || !strings.HasPrefix(key, "ak_") || created["account"] != "acme" {
		t.Fatalf("create --json: %v", created)
	}
	proxied("created", key, 200, "")

	// List: name and hint, never the key.
	shown := cliJSON(t, "show", id)
	hint, _ := shown["hint"].(string)
	if shown["id"] != id || shown["name"] != "billing worker" || hint == "" || shown["key"] != nil {
		t.Fatalf("show --json: %v", shown)
	}
	out = cliOK(t, "list")
	for _, want := range []string{"ID", "NAME", "HINT", "SCOPES", "STATUS", "LAST USED", id, "billing worker", hint, "contacts:write", "active", "CRM sync", "billing:read,contacts:read"} {
		if !strings.Contains(out, want) {
			t.Errorf("list has no %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, key) || strings.Contains(out, textKey) {
		t.Errorf("list shows a plaintext key:\n%s", out)
	}
	// The keys were used just now (last-used is shown at once).
	if !regexp.MustCompile(`(?m)^` + id + `\s.*\sactive\s+just now\s*$`).MatchString(out) {
		t.Errorf("list: no 'active ... just now' row for %s:\n%s", id, out)
	}
	out = cliOK(t, "list", "--search", "BILLING", "--account", "acme", "--status", "active")
	if !strings.Contains(out, id) || strings.Contains(out, "CRM sync") {
		t.Errorf("list --search BILLING:\n%s", out)
	}
	listed := cliJSON(t, "list", "--account", "acme")
	if keys, _ := listed["keys"].([]any); len(keys) != 2 {
		t.Errorf("list --account acme --json: %v", listed)
	}
	if _, ok := listed["next_cursor"]; !ok {
		t.Errorf("list --json has no next_cursor: %v", listed)
	}
	if listed := cliJSON(t, "list", "--limit", "1"); len(listed["keys"].([]any)) != 1 || listed["next_cursor"] == nil {
		t.Errorf("list --limit 1 --json: %v", listed)
	}

	// Show.
	out = cliOK(t, "show", id)
	for _, want := range []string{"ID:", id, "Name:", "billing worker", "Account:", "acme", "Scopes:", "contacts:write", "Status:", "active", "Hint:", hint, "Last used:", "just now", "Expires:", "never"} {
		if !strings.Contains(out, want) {
			t.Errorf("show has no %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, key) {
		t.Errorf("show shows the plaintext key:\n%s", out)
	}

	// Revoke and activate.
	out = cliOK(t, "revoke", id)
	if out != "Revoked key "+id+" (billing worker): revoked.\n" {
		t.Errorf("revoke: %q", out)
	}
	proxied("revoked", key, 401, "key_revoked")
	if cliJSON(t, "show", id)["revoked_at"] == nil {
		t.Error("show after revoke: no revoked_at")
	}
	if out := cliOK(t, "list", "--status", "revoked"); !strings.Contains(out, id) || strings.Contains(out, "CRM sync") {
		t.Errorf("list --status revoked:\n%s", out)
	}
	if rec := cliJSON(t, "activate", id); rec["id"] != id || rec["revoked_at"] != nil {
		t.Errorf("activate --json: %v", rec)
	}
	proxied("re-activated", key, 200, "")
	cliJSON(t, "revoke", id)
	out = cliOK(t, "activate", id)
	if out != "Activated key "+id+" (billing worker): active.\n" {
		t.Errorf("activate: %q", out)
	}

	// Regenerate with a grace period: both strings work.
	regen := cliJSON(t, "regenerate", id, "--grace", "1h")
	graceKey, _ := regen["key"].(string)
	if regen["id"] != id || !strings.HasPrefix(graceKey, "ak_") || graceKey == key {
		t.Fatalf("regenerate --json: %v", regen)
	}
	proxied("old string in grace period", key, 200, "")
	proxied("new string", graceKey, 200, "")
	// Without one, the replaced string stops at once.
	out = cliOK(t, "regenerate", id)
	m = cliNewKeyRE.FindStringSubmatch(out)
	if m == nil || !strings.HasPrefix(out, "Regenerated key "+id+" (billing worker)") || !strings.Contains(out, "The old key no longer works.") {
		t.Fatalf("regenerate: %q", out)
	}
	newKey := m[1]
	proxied("replaced string", graceKey, 401, "invalid_key")
	proxied("regenerated string", newKey, 200, "")

	// Account status.
	cliOK(t, "account", "set-status", "acme", "suspended")
	res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", newKey), "")
	e.expect("suspended account", res, body, 403, "account_inactive", false)
	if rec := cliJSON(t, "account", "set-status", "acme", "open"); rec["status"] != "open" {
		t.Errorf("account set-status --json: %v", rec)
	}
	proxied("open account", newKey, 200, "")

	// Import: a plaintext key and a hash.
	k1, err := keystore.DefaultFormat().Generate()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := keystore.DefaultFormat().Generate()
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := json.Marshal([]map[string]any{
		{"key": k1, "name": "imported one", "scopes": []string{"contacts:read"}, "account": "acme"},
		{"sha256": keystore.HashKey(k2).String(), "name": "imported two", "scopes": []string{"contacts:read"}},
	})
	file := filepath.Join(e.dir, "import.json")
	if err := os.WriteFile(file, entries, 0o600); err != nil {
		t.Fatal(err)
	}
	out = cliOK(t, "import", file)
	if out != "Imported 2 keys.\n" {
		t.Errorf("import: %q", out)
	}
	proxied("imported key", k1, 200, "")
	proxied("imported hash", k2, 200, "")
	if out := cliOK(t, "list", "--search", "imported"); !strings.Contains(out, "imported one") || !strings.Contains(out, "imported two") || strings.Contains(out, k1) {
		t.Errorf("list after import:\n%s", out)
	}
	// All or nothing: a bad entry refuses the batch, naming its index.
	bad, _ := json.Marshal([]map[string]any{
		{"key": "legacy-key-0123456789", "name": "fine", "scopes": []string{"contacts:read"}},
		{"key": "legacy-key-9876543210", "name": "", "scopes": []string{"contacts:read"}},
	})
	badFile := filepath.Join(e.dir, "bad.json")
	if err := os.WriteFile(badFile, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	cliFail(t, "(invalid_request)", "import", badFile)
	if out := cliOK(t, "list", "--search", "fine"); !strings.Contains(out, "No keys.") {
		t.Errorf("a refused import stored keys:\n%s", out)
	}

	// Delete.
	out = cliOK(t, "delete", id)
	if out != "Deleted key "+id+".\n" {
		t.Errorf("delete: %q", out)
	}
	proxied("deleted", newKey, 401, "invalid_key")
	textID := cliJSON(t, "list", "--search", "CRM")["keys"].([]any)[0].(map[string]any)["id"].(string)
	if del := cliJSON(t, "delete", textID); del["id"] != textID || del["deleted"] != true {
		t.Errorf("delete --json: %v", del)
	}
	proxied("deleted (json)", textKey, 401, "invalid_key")

	// Errors: the API's message and code on stderr, non-zero exit.
	cliFail(t, "(not_found)", "show", id)
	cliFail(t, "(not_found)", "show", "no-such-key", "--json")
	cliFail(t, "(not_found)", "revoke", id)
	cliFail(t, "(not_found)", "delete", id)
	cliFail(t, "(not_found)", "account", "set-status", "nobody", "open")
	cliFail(t, "(invalid_request)", "create", "--name", "x", "--scope", "contacts:read", "--account", "nobody")
	cliFail(t, "(conflict)", "account", "create", "--id", "acme")
	cliFail(t, "--name is required", "create", "--scope", "contacts:read")
}

func TestCLIUnreachable(t *testing.T) {
	// Nothing listens on this address.
	out, errOut, err := cliRunAt(t, "localhost:1", "list")
	if err == nil || out != "" || !strings.Contains(errOut, "cannot reach Caddy's admin endpoint at localhost:1") {
		t.Errorf("unreachable: %v, stdout %q, stderr %q", err, out, errOut)
	}
}

func TestCLIWithoutApikeyApp(t *testing.T) {
	// A running Caddy whose config does not use the apikey app.
	e := start(t)
	e.unload()
	_, errOut, err := cliRun(t, "list")
	if err == nil || !strings.Contains(errOut, "(unavailable)") {
		t.Errorf("no apikey app: %v, stderr %q", err, errOut)
	}
}

// TestCLIUpdate: caddy apikey update changes each field PATCH /keys/{id}
// takes, through the real admin API, and the proxy applies the change;
// show prints the quota and its use; activate says what happened.
func TestCLIUpdate(t *testing.T) {
	e := start(t)
	created := cliJSON(t, "create", "--name", "worker", "--scope", "contacts:read", "--metadata", "owner=ops", "--metadata", "team=crm")
	id, _ := created["id"].(string)
	key, _ := created["key"].(string)
	proxied := func(name, method string, status int, code string) {
		t.Helper()
		res, body := e.do(method, siteURL+"/contacts", hdr("X-Api-Key", key), "")
		e.expect(name, res, body, status, code, status == 200)
	}
	proxied("before update", "GET", 200, "")
	proxied("no write scope", "POST", 403, "insufficient_scope")

	// Name, scopes (commas and repeats), type: text output.
	out := cliOK(t, "update", id, "--name", "worker (prod)", "--scope", "contacts:read, contacts:write", "--type", "mcp")
	for _, want := range []string{"Updated key " + id + " (worker (prod)).\n", "Scopes:     contacts:read, contacts:write\n", "Type:       mcp\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("update: no %q in\n%s", want, out)
		}
	}
	proxied("new write scope", "POST", 200, "")

	// Each other field, with --json: the record after the PATCH.
	for _, tc := range []struct {
		args  []string
		field string
		want  string // the field's JSON
	}{
		{[]string{"--expires", "30d"}, "expires_at", `"20`},
		{[]string{"--no-expiry"}, "expires_at", `null`},
		{[]string{"--rate-limit", "100/1m", "--burst", "20"}, "rate_limit", `{"burst":20,"requests":100,"window":"1m"}`},
		{[]string{"--rate-limit", "unlimited"}, "rate_limit", `{"unlimited":true}`},
		{[]string{"--no-rate-limit"}, "rate_limit", `null`},
		{[]string{"--quota", "1000/day"}, "quota", `{"period":"day","requests":1000}`},
		{[]string{"--metadata", "env=prod", "--remove-metadata", "team"}, "metadata", `{"env":"prod","owner":"ops"}`},
		{[]string{"--no-metadata", "--metadata", "only=this"}, "metadata", `{"only":"this"}`},
		{[]string{"--no-metadata"}, "metadata", `null`},
	} {
		rec := cliJSON(t, append([]string{"update", id}, tc.args...)...)
		got, _ := json.Marshal(rec[tc.field])
		if !strings.HasPrefix(string(got), tc.want) {
			t.Errorf("update %v: %s = %s, want %s", tc.args, tc.field, got, tc.want)
		}
		if rec["name"] != "worker (prod)" || rec["type"] != "mcp" {
			t.Errorf("update %v changed other fields: %v", tc.args, rec)
		}
	}

	// show prints the quota and its use.
	proxied("counted against the quota", "GET", 200, "")
	out = cliOK(t, "show", id)
	if !regexp.MustCompile(`(?m)^Quota: +1000 per day, [1-9][0-9]* used, resets `).MatchString(out) {
		t.Errorf("show: no quota and its use:\n%s", out)
	}
	if rec := cliJSON(t, "update", id, "--no-quota"); rec["quota"] != nil {
		t.Errorf("update --no-quota: %v", rec)
	}
	if out := cliOK(t, "show", id); !strings.Contains(out, "\nQuota:      none\n") {
		t.Errorf("show without a quota:\n%s", out)
	}
	cliFail(t, "(not_found)", "update", "no-such-key", "--name", "x")
	cliFail(t, "nothing to update", "update", id)

	// activate: already active, re-activated, then expired.
	if out := cliOK(t, "activate", id); out != "Key "+id+" (worker (prod)) is already active.\n" {
		t.Errorf("activate an active key: %q", out)
	}
	cliOK(t, "revoke", id)
	if out := cliOK(t, "activate", id); out != "Activated key "+id+" (worker (prod)): active.\n" {
		t.Errorf("activate a revoked key: %q", out)
	}
	cliOK(t, "update", id, "--expires", "1s")
	cliOK(t, "revoke", id)
	time.Sleep(1100 * time.Millisecond)
	cliFail(t, "key "+id+" (worker (prod)) was activated, but it expired ", "activate", id)
	cliFail(t, "is refused until its expiry is extended: caddy apikey update "+id+" --expires <time|duration> (such as 30d), or --no-expiry", "activate", id)
	proxied("expired", "GET", 401, "key_expired")
	// The command it gives works.
	cliOK(t, "update", id, "--expires", "30d")
	proxied("extended", "GET", 200, "")

	// An account without limits: none, as the docs say.
	out = cliOK(t, "account", "list")
	if !regexp.MustCompile(`(?m)^default\s+Default\s+open\s+none\s+none\s+none\s`).MatchString(out) {
		t.Errorf("account list: the default account's limits are not none:\n%s", out)
	}
	out = cliOK(t, "account", "update", "default", "--rate-limit", "50/1s", "--quota", "10/month")
	for _, want := range []string{"Updated account default.\n", "Rate limit: 50 per 1s\n", "Quota:      10 per month, "} {
		if !strings.Contains(out, want) {
			t.Errorf("account update: no %q in\n%s", want, out)
		}
	}
	if out := cliOK(t, "account", "show", "default"); !strings.Contains(out, "Rate limit: 50 per 1s\n") || !strings.Contains(out, "Max keys:   none\n") {
		t.Errorf("account show:\n%s", out)
	}
	if rec := cliJSON(t, "account", "update", "default", "--no-rate-limit", "--no-quota"); rec["rate_limit"] != nil || rec["quota"] != nil {
		t.Errorf("account update --no-rate-limit --no-quota: %v", rec)
	}
}

// TestCLIUnknownSubcommand: through the command registered with caddycmd,
// an unknown subcommand fails.
func TestCLIUnknownSubcommand(t *testing.T) {
	cliFail(t, `unknown command "rotate" for "caddy apikey"`, "rotate", "abc")
	cliFail(t, `unknown command "rename" for "caddy apikey account"`, "account", "rename", "x")
}

// TestCLIMaxKeys: --max-keys through the real admin API (the CLI's unit
// test checks the JSON it sends): a limited account refuses one key too
// many with key_limit_reached, and none lifts the limit.
func TestCLIMaxKeys(t *testing.T) {
	start(t)
	cliOK(t, "account", "create", "--id", "capped", "--max-keys", "1")
	maxKeysLine := regexp.MustCompile(`(?m)^Max keys: +(\S+)$`)
	if m := maxKeysLine.FindStringSubmatch(cliOK(t, "account", "show", "capped")); m == nil || m[1] != "1" {
		t.Errorf("account show: Max keys %q, want 1", m)
	}
	cliOK(t, "create", "--name", "first", "--scope", "contacts:read", "--account", "capped")
	cliFail(t, "key_limit_reached", "create", "--name", "second", "--scope", "contacts:read", "--account", "capped")
	rec := cliJSON(t, "account", "update", "capped", "--max-keys", "none")
	if v, ok := rec["max_keys"]; ok && v != nil {
		t.Errorf("after --max-keys none: max_keys %v", v)
	}
	cliOK(t, "create", "--name", "second", "--scope", "contacts:read", "--account", "capped")
	if m := maxKeysLine.FindStringSubmatch(cliOK(t, "account", "show", "capped")); m == nil || m[1] != "none" {
		t.Errorf("account show after --max-keys none: Max keys %q, want none", m)
	}
}
