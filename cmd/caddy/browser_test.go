package main

// TestBrowserPage drives the API Keys page in a real chromium against the
// built Caddy: the manager's page at /manage/ (apikey_admin) and the
// operator's at the admin endpoint's /apikey/ui/. Ports: admin 28201,
// site 18201. APIKEY_UI_SCREENSHOT=<file.png> saves the README's
// screenshot of the table.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startUICaddy starts the built Caddy with ui.Caddyfile (the page at
// /manage/, apikey routes to an upstream) and returns its admin client.
func startUICaddy(t *testing.T, p ports) *admin {
	t.Helper()
	dir := t.TempDir()
	up := newUpstream(t)
	config := writeConfig(t, dir, "ui.Caddyfile.tmpl", p, filepath.Join(dir, "keys"), up.URL)
	startCaddy(t, dir, config, p)
	return newAdmin(p)
}

func TestBrowserPage(t *testing.T) {
	skipIfShort(t)
	b := newBrowser(t)
	p := ports{admin: 28201, site: 18201}
	a := startUICaddy(t, p)
	c := newClient(4)
	a.must(t, "POST", "/accounts", `{"id":"acme","name":"Acme Corp"}`, http.StatusCreated)
	a.must(t, "POST", "/accounts", `{"id":"globex"}`, http.StatusCreated)
	_, manager := a.createKey(t, `{"name":"Acme admin","account":"acme","scopes":["apikeys:write","apikeys:delete","contacts:read","contacts:write","orders:read"]}`)
	theirsID, _ := a.createKey(t, `{"name":"Other Corp Key","account":"globex","scopes":["contacts:read"]}`)

	site := p.siteURL()
	contacts := site + "/contacts"
	use := func(key string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, code, err := proxyResult(ctx, c, contacts, key)
		if err != nil {
			t.Fatal(err)
		}
		return st, code
	}
	wantUse := func(key string, status int, code string) {
		t.Helper()
		if st, got := use(key); st != status || got != code {
			t.Fatalf("GET /contacts: %d %q, want %d %q", st, got, status, code)
		}
	}
	// rowStatus is the Status cell of the row of the key named name.
	rowStatus := func(name string) string {
		return fmt.Sprintf(`[...document.querySelectorAll('#keys tbody tr[data-id]')].filter((tr) => tr.cells[0].querySelector('button').textContent === %s).map((tr) => tr.cells[3].textContent).join('|')`, js(name))
	}
	// shownKey waits for the shown-once dialog and reads the key from it.
	shownKey := func() string {
		t.Helper()
		b.waitFor("the key dialog", `document.getElementById('shown').open && document.getElementById('shown-key').textContent.length > 0`)
		return b.text("#shown-key")
	}
	closeShown := func(copyFirst bool) {
		t.Helper()
		if copyFirst {
			b.click("Copy")
			b.waitFor("copied", `document.getElementById('shown-copy').textContent === 'Copied'`)
		}
		b.click("I've saved my key – Close")
		if !copyFirst {
			// Closing without copying asks once more.
			b.waitFor("the second ask", `document.getElementById('shown').open && !document.getElementById('shown-warn').hidden`)
			b.click("I've saved my key – Close")
		}
		b.waitFor("the dialog to close", `!document.getElementById('shown').open && document.getElementById('shown-key').textContent === ''`)
	}

	t.Run("sign in", func(t *testing.T) {
		b.use(t)
		b.navigate(site + "/manage/")
		b.fill("API key", manager)
		b.click("Sign in")
		b.waitFor("the table", `!document.getElementById('app').hidden && document.getElementById('keys').dataset.rows === '1'`)
		var state struct {
			Cookie, Local, Session, HTML string
		}
		b.eval(`({Cookie: document.cookie, Local: JSON.stringify(localStorage), Session: JSON.stringify(sessionStorage), HTML: document.documentElement.outerHTML + location.href})`, &state)
		if state.Cookie != "" {
			t.Errorf("the page can read a cookie: %q (the session cookie is HttpOnly)", state.Cookie)
		}
		if strings.Contains(state.Local+state.Session+state.HTML, manager) {
			t.Error("the manager's key is in the browser's storage, the page or its URL")
		}
	})

	var zapier string
	t.Run("create and use", func(t *testing.T) {
		b.use(t)
		b.click("Create API key")
		b.fill("Name", "Zapier Sync")
		b.check("contacts:read", true)
		b.click("Create")
		zapier = shownKey()
		closeShown(true)
		wantUse(zapier, http.StatusOK, "")
	})

	t.Run("revoke and activate", func(t *testing.T) {
		b.use(t)
		b.click("Revoke Zapier Sync")
		b.waitFor("Revoked", rowStatus("Zapier Sync")+` === 'Revoked'`)
		wantUse(zapier, http.StatusUnauthorized, "key_revoked")
		b.click("Activate Zapier Sync")
		b.waitFor("Active", rowStatus("Zapier Sync")+` === 'Active'`)
		wantUse(zapier, http.StatusOK, "")
	})

	t.Run("regenerate", func(t *testing.T) {
		b.use(t)
		b.click("Regenerate Zapier Sync")
		b.fill("Grace period", "1h")
		b.click("Regenerate")
		second := shownKey()
		closeShown(false)
		if second == zapier {
			t.Fatal("regenerate showed the old key")
		}
		wantUse(zapier, http.StatusOK, "") // within the grace period
		wantUse(second, http.StatusOK, "")
		// Without a grace period only the new string works.
		b.click("Regenerate Zapier Sync")
		b.fill("Grace period", "")
		b.click("Regenerate")
		third := shownKey()
		closeShown(true)
		wantUse(third, http.StatusOK, "")
		wantUse(second, http.StatusUnauthorized, "invalid_key")
		zapier = third
	})

	t.Run("edit scopes", func(t *testing.T) {
		b.use(t)
		b.click("Edit Zapier Sync")
		b.check("contacts:read", false)
		b.check("orders:read", true)
		b.click("Save")
		b.waitFor("the panel to close", `!document.getElementById('panel').open`)
		b.waitFor("the new badge", `[...document.querySelectorAll('#keys .badge')].some((e) => e.textContent === 'orders:read')`)
		wantUse(zapier, http.StatusForbidden, "insufficient_scope")
	})

	t.Run("no escalation", func(t *testing.T) {
		b.use(t)
		// Another account's key is not listed, and not found by id.
		var status int
		b.eval(`fetch('ui/api/keys/`+theirsID+`').then((r) => r.status)`, &status)
		if status != http.StatusNotFound {
			t.Errorf("another account's key: %d, want 404", status)
		}
		b.click("Create API key")
		var disabled bool
		b.eval(`(`+findJS+`)('contacts:delete').disabled`, &disabled)
		if !disabled {
			t.Error("the grid offers contacts:delete, which the manager's key does not hold")
		}
		b.fill("Name", "Escalation")
		b.fill("Other scopes (resource:access, separated by spaces)", "contacts:delete")
		b.click("Create")
		b.waitFor("the error beside Scopes", `document.getElementById('err-scopes').textContent.includes('contacts:delete')`)
		b.do("escape", keyEscape())
		b.waitFor("the panel to close on Escape", `!document.getElementById('panel').open`)
		var focused string
		b.eval(`document.activeElement.textContent`, &focused)
		if focused != "Create API key" {
			t.Errorf("focus went back to %q, want the Create API key button", focused)
		}
	})

	const xss = `<img src=x onerror=alert(1)>`
	t.Run("XSS name", func(t *testing.T) {
		b.use(t)
		b.eval(`window.alert = () => { window.__alerted = true }; true`, nil)
		a.createKey(t, `{"name":`+js(xss)+`,"account":"acme","scopes":["contacts:read"]}`)
		b.fill("Search keys", "img")
		b.waitFor("the XSS row", rowStatus(xss)+` === 'Active'`)
		var got struct {
			Imgs    int
			Alerted bool
		}
		b.eval(`({Imgs: document.querySelectorAll('#keys img').length, Alerted: !!window.__alerted})`, &got)
		if got.Imgs != 0 || got.Alerted {
			t.Errorf("the name was rendered as HTML: %+v", got)
		}
	})

	t.Run("search and filter", func(t *testing.T) {
		b.use(t)
		a.createKey(t, `{"name":"Search Alpha","account":"acme","scopes":["contacts:read"]}`)
		a.createKey(t, `{"name":"Search Beta","account":"acme","scopes":["contacts:read"]}`)
		b.fill("Search keys", "Alpha")
		b.waitFor("only Alpha", `document.getElementById('keys').dataset.rows === '1' && `+rowStatus("Search Alpha")+` === 'Active'`)
		b.fill("Search keys", "")
		b.click("Revoke Search Beta")
		b.waitFor("Beta revoked", rowStatus("Search Beta")+` === 'Revoked'`)
		b.fill("Status", "revoked")
		b.waitFor("only revoked keys", `document.getElementById('keys').dataset.rows === '1' && `+rowStatus("Search Beta")+` === 'Revoked'`)
		b.fill("Status", "")
		b.waitFor("all keys", `Number(document.getElementById('keys').dataset.rows) >= 5`)
	})

	t.Run("detail", func(t *testing.T) {
		b.use(t)
		b.click("Zapier Sync")
		b.waitFor("the audit log", `[...document.querySelectorAll('#audit td')].some((e) => e.textContent.startsWith('regenerated'))`)
		// With GET /keys/{id}/usage (docs/usage.md) the chart, without it
		// (404) "Usage history unavailable".
		var usageStatus int
		b.eval(`fetch('ui/api/keys/' + [...document.querySelectorAll('#keys tbody tr[data-id]')].find((tr) => tr.cells[0].querySelector('button').textContent === 'Zapier Sync').dataset.id + '/usage').then((r) => r.status)`, &usageStatus)
		switch usageStatus {
		case http.StatusOK:
			b.waitFor("the usage chart", `document.querySelector('#usage .chart') && document.querySelector('#usage .usage-summary').textContent.endsWith('over 48 hours.')`)
		case http.StatusNotFound:
			b.waitFor("no usage history", `document.getElementById('usage').textContent === 'Usage history unavailable'`)
		default:
			t.Errorf("GET /keys/{id}/usage: %d", usageStatus)
		}
		b.click("Close")
	})

	t.Run("usage chart", func(t *testing.T) {
		b.use(t)
		// The answer of docs/usage.md's example, drawn by the page's chart.
		const answer = `{"key": "01a24e35-766c-7171-b7d0-521cb45de2f2", "account": "acme", "interval": "hour",
			"from": "2026-12-07T00:00:00Z", "to": "2026-12-07T02:00:00Z",
			"points": [
				{"start": "2026-12-07T00:00:00Z", "passed": 0, "refused": {"account_inactive": 0, "insufficient_scope": 0, "key_expired": 0, "key_revoked": 0, "quota_exceeded": 0, "rate_limited": 0}, "refused_total": 0},
				{"start": "2026-12-07T01:00:00Z", "passed": 1204, "refused": {"account_inactive": 0, "insufficient_scope": 3, "key_expired": 0, "key_revoked": 0, "quota_exceeded": 0, "rate_limited": 57}, "refused_total": 60}],
			"totals": {"passed": 1204, "refused": {"account_inactive": 0, "insufficient_scope": 3, "key_expired": 0, "key_revoked": 0, "quota_exceeded": 0, "rate_limited": 57}, "refused_total": 60}}`
		for _, tc := range []struct {
			name, data, interval string
			want                 string // the text of the nodes drawn
			bars                 int
		}{
			{"the usage answer", answer, "hour", "1204 passed and 60 refused (rate_limited 57, insufficient_scope 3) over 2 hours.", 2},
			{"no usage history", "null", "hour", "Usage history unavailable", 0},
			{"another interval", answer, "day", "The usage history could not be read (an unexpected answer).", 0},
			{"a guessed shape", `{"interval": "hour", "series": [{"start": "2026-12-07T00:00:00Z", "passed": 1, "refused": 0}]}`, "hour", "The usage history could not be read (an unexpected answer).", 0},
			{"refused as a number", `{"interval": "hour", "points": [{"start": "2026-12-07T00:00:00Z", "passed": 1, "refused": 2}], "totals": {"passed": 1, "refused": 2}}`, "hour", "The usage history could not be read (an unexpected answer).", 0},
		} {
			var got struct {
				Text  string
				Bars  int
				Title string
			}
			b.eval(`import(new URL('ui/usage.js', location.href).href).then((m) => {
				const div = document.createElement('div');
				div.append(...m.drawUsage(`+tc.data+`, `+js(tc.interval)+`));
				const last = [...div.querySelectorAll('svg g title')].pop();
				return {Text: [...div.querySelectorAll('p')].pop().textContent, Bars: div.querySelectorAll('svg g').length, Title: last ? last.textContent : ''};
			})`, &got)
			if got.Text != tc.want || got.Bars != tc.bars {
				t.Errorf("%s: drew %q with %d bars, want %q with %d", tc.name, got.Text, got.Bars, tc.want, tc.bars)
			}
			if tc.bars > 0 && !strings.HasSuffix(got.Title, ": 1204 passed, 60 refused (rate_limited 57, insufficient_scope 3)") {
				t.Errorf("%s: the last bar's title is %q", tc.name, got.Title)
			}
		}
	})

	if shot := os.Getenv("APIKEY_UI_SCREENSHOT"); shot != "" {
		b.screenshot(shot)
	}

	t.Run("delete", func(t *testing.T) {
		b.use(t)
		b.click("Delete Zapier Sync")
		if !strings.Contains(b.text("#confirm-text"), "cannot be undone") {
			t.Errorf("the confirmation says %q", b.text("#confirm-text"))
		}
		b.click("Delete key")
		b.waitFor("the row to go", rowStatus("Zapier Sync")+` === ''`)
		wantUse(zapier, http.StatusUnauthorized, "invalid_key")
	})

	t.Run("narrow", func(t *testing.T) {
		b.use(t)
		b.viewport(375, 800)
		var width int
		b.eval(`document.documentElement.scrollWidth`, &width)
		if width > 375 {
			t.Errorf("the page is %d px wide at 375 px", width)
		}
		b.viewport(1280, 900)
	})

	t.Run("cross-site POST", func(t *testing.T) {
		b.use(t)
		// A page of another origin on the same site (127.0.0.1, another
		// port): the SameSite=Strict cookie goes with its requests, and
		// CrossOriginProtection refuses them.
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<!doctype html><title>evil</title>")
		}))
		defer evil.Close()
		b.navigate(evil.URL)
		var done bool
		b.eval(`fetch(`+js(site+"/manage/ui/api/keys")+`, {method: 'POST', mode: 'no-cors', credentials: 'include', headers: {'Content-Type': 'text/plain'}, body: '{"name":"csrf","scopes":["contacts:read"]}'}).then(() => true, () => true)`, &done)
		for id, k := range a.listIDs(t) {
			if k["name"] == "csrf" {
				t.Fatalf("a cross-site POST created key %s", id)
			}
		}
		req, _ := http.NewRequest("POST", site+"/manage/ui/api/keys", strings.NewReader(`{"name":"csrf","scopes":["contacts:read"]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("a cross-site POST: %d, want 403", res.StatusCode)
		}
		b.navigate(site + "/manage/")
		b.waitFor("the table again", `!document.getElementById('app').hidden`)
	})

	t.Run("sign out", func(t *testing.T) {
		b.use(t)
		b.click("Sign out")
		b.waitFor("the sign-in form", `!document.getElementById('signin').hidden`)
		var status int
		b.eval(`fetch('ui/api/keys').then((r) => r.status)`, &status)
		if status != http.StatusUnauthorized {
			t.Errorf("after sign-out the API answers %d, want 401", status)
		}
	})

	t.Run("operator", func(t *testing.T) {
		b.use(t)
		ui := "http://" + p.adminAddr() + "/apikey/ui/"
		b.navigateFrom(ui, ui)
		b.waitFor("the operator's accounts", `[...document.querySelectorAll('#accounts tr')].some((tr) => tr.cells[0].textContent === 'Acme Corp (acme)' && tr.cells[1].textContent === 'open')`)
		b.fill("Account", "globex")
		b.waitFor("globex's keys", `document.getElementById('keys').dataset.rows === '1' && `+rowStatus("Other Corp Key")+` === 'Active'`)
	})
}
