package adminapi

import (
	"net/http"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// newUsageEnv is newEnv with the clock in the middle of the current hour:
// a test's requests and flush fall in one hour.
func newUsageEnv(t *testing.T) *env {
	e := newEnv(t)
	e.clock.Set(e.clock.Now().Truncate(time.Hour).Add(30 * time.Minute))
	return e
}

// usagePath is an endpoint's path with a usage query.
func usagePath(base string, from, to time.Time, interval string) string {
	q := url.Values{}
	if !from.IsZero() {
		q.Set("from", from.Format(time.RFC3339))
	}
	if !to.IsZero() {
		q.Set("to", to.Format(time.RFC3339))
	}
	if interval != "" {
		q.Set("interval", interval)
	}
	if len(q) == 0 {
		return base
	}
	return base + "?" + q.Encode()
}

// counts is a usage point's or the totals' counts as the JSON has them.
func counts(passed float64, refused map[string]float64) map[string]any {
	all := map[string]any{}
	var total float64
	for _, c := range keystore.RefusalCodes() {
		all[c] = refused[c]
		total += refused[c]
	}
	return map[string]any{"passed": passed, "refused": all, "refused_total": total}
}

// checkSeries checks a usage answer: its header fields and each point.
func checkSeries(t *testing.T, got map[string]any, key, account, interval string, from time.Time, points []map[string]any, totals map[string]any) {
	t.Helper()
	if k, ok := got["key"]; key != "" && k != key || key == "" && ok {
		t.Errorf("key %v, want %q", k, key)
	}
	if got["account"] != account || got["interval"] != interval || got["from"] != from.Format(time.RFC3339) {
		t.Errorf("account %v interval %v from %v, want %s %s %s", got["account"], got["interval"], got["from"], account, interval, from.Format(time.RFC3339))
	}
	ps, _ := got["points"].([]any)
	if len(ps) != len(points) {
		t.Fatalf("%d points, want %d: %v", len(ps), len(points), got)
	}
	for i, want := range points {
		p := ps[i].(map[string]any)
		if !reflect.DeepEqual(p, want) {
			t.Errorf("point %d:\n got %v\nwant %v", i, p, want)
		}
	}
	if !reflect.DeepEqual(got["totals"], totals) {
		t.Errorf("totals:\n got %v\nwant %v", got["totals"], totals)
	}
}

func point(start time.Time, c map[string]any) map[string]any {
	p := map[string]any{"start": start.Format(time.RFC3339)}
	for k, v := range c {
		p[k] = v
	}
	return p
}

// TestUsageEndpoints: GET /keys/{id}/usage and GET /accounts/{id}/usage
// as the operator, hourly and daily, after requests of several outcomes
// and a flush.
func TestUsageEndpoints(t *testing.T) {
	e := newUsageEnv(t)
	e.account("acme")
	k := e.createKey(map[string]any{"name": "k", "account": "acme", "scopes": []string{"a:read"}})
	other := e.createKey(map[string]any{"name": "other", "account": "acme", "scopes": []string{"a:read"}})
	id, plain := k["id"].(string), k["key"].(string)
	for range 2 {
		if got := e.verify(plain); got != "ok" {
			t.Fatalf("verify: %s", got)
		}
	}
	e.verify(other["key"].(string))
	e.mustDo(op, req{method: "POST", path: "/keys/" + id + "/revoke"}, http.StatusOK)
	if got := e.verify(plain); got != "key_revoked" {
		t.Fatalf("verify: %s", got)
	}
	if err := e.store.Flush(); err != nil {
		t.Fatal(err)
	}
	hour := e.clock.Now().Truncate(time.Hour)
	from, to := hour.Add(-time.Hour), hour.Add(time.Hour)

	got := e.mustDo(op, req{method: "GET", path: usagePath("/keys/"+id+"/usage", from, to, "")}, http.StatusOK)
	keyHour := counts(2, map[string]float64{"key_revoked": 1})
	checkSeries(t, got, id, "acme", "hour", from, []map[string]any{point(from, counts(0, nil)), point(hour, keyHour)}, keyHour)

	day := hour.Truncate(24 * time.Hour)
	got = e.mustDo(op, req{method: "GET", path: usagePath("/keys/"+id+"/usage", day, day.Add(24*time.Hour), "day")}, http.StatusOK)
	checkSeries(t, got, id, "acme", "day", day, []map[string]any{point(day, keyHour)}, keyHour)

	got = e.mustDo(op, req{method: "GET", path: usagePath("/accounts/acme/usage", from, to, "hour")}, http.StatusOK)
	acct := counts(3, map[string]float64{"key_revoked": 1})
	checkSeries(t, got, "", "acme", "hour", from, []map[string]any{point(from, counts(0, nil)), point(hour, acct)}, acct)

	// Defaults: the last 24 hours to now.
	got = e.mustDo(op, req{method: "GET", path: "/keys/" + id + "/usage"}, http.StatusOK)
	if ps := got["points"].([]any); len(ps) != 25 || got["to"] != e.clock.Now().Format(time.RFC3339Nano) {
		t.Errorf("default series: %d points to %v", len(ps), got["to"])
	}

	// Deleted with the key.
	e.mustDo(op, req{method: "DELETE", path: "/keys/" + id}, http.StatusNoContent)
	errorIs(t, e.do(op, req{method: "GET", path: "/keys/" + id + "/usage"}), http.StatusNotFound, "not_found", "")
}

// TestUsageBadQueries: every bad query is a 400 invalid_request naming
// the parameter; unknown ids are 404.
func TestUsageBadQueries(t *testing.T) {
	e := newUsageEnv(t)
	id := e.createKey(map[string]any{"name": "k", "scopes": []string{"a:read"}})["id"].(string)
	for _, base := range []string{"/keys/" + id + "/usage", "/accounts/default/usage"} {
		for _, tc := range []struct{ query, field string }{
			{"interval=minute", "interval"},
			{"interval=", "interval"},
			{"from=yesterday", "from"},
			{"to=2030-01-02", "to"},
			{"from=2030-01-02T10:00:00Z&to=2030-01-02T10:00:00Z", "from"},
			{"from=2030-01-02T11:00:00Z&to=2030-01-02T10:00:00Z", "from"},
			{"from=2020-01-02T11:00:00Z&to=2030-01-02T10:00:00Z", "from"},
			// Spans longer than time.Duration holds (292 years): Sub
			// saturates, and the point count must not overflow.
			{"from=0002-01-01T00:00:00Z&to=9999-12-31T00:00:00Z", "from"},
			{"interval=day&from=0002-01-01T00:00:00Z&to=9999-12-31T00:00:00Z", "from"},
			{"since=2030-01-02T10:00:00Z", "since"},
			{"interval=hour&interval=day", "interval"},
		} {
			r := e.do(op, req{method: "GET", path: base + "?" + tc.query})
			errorIs(t, r, http.StatusBadRequest, "invalid_request", tc.field)
		}
	}
	errorIs(t, e.do(op, req{method: "GET", path: "/keys/nope/usage"}), http.StatusNotFound, "not_found", "")
	errorIs(t, e.do(op, req{method: "GET", path: "/accounts/nope/usage"}), http.StatusNotFound, "not_found", "")
	errorIs(t, e.do(op, req{method: "POST", path: "/keys/" + id + "/usage"}), http.StatusMethodNotAllowed, "method_not_allowed", "")
}

// TestUsageKeyCaller: apikey_admin's rules: apikeys:read, and only the
// caller's own account (another account's key or account is not found).
func TestUsageKeyCaller(t *testing.T) {
	e := newUsageEnv(t)
	e.account("acme")
	e.account("rival")
	reader := e.keyCaller("acme", "apikeys:read")
	noRead := e.keyCaller("acme", "a:read")
	own := e.createKey(map[string]any{"name": "own", "account": "acme", "scopes": []string{"a:read"}})
	theirs := e.createKey(map[string]any{"name": "theirs", "account": "rival", "scopes": []string{"a:read"}})
	e.verify(own["key"].(string))
	if err := e.store.Flush(); err != nil {
		t.Fatal(err)
	}
	hour := e.clock.Now().Truncate(time.Hour)
	path := func(base string) string { return usagePath(base, hour, hour.Add(time.Hour), "") }
	one := counts(1, nil)
	checkSeries(t, e.mustDo(reader, req{method: "GET", path: path("/keys/" + own["id"].(string) + "/usage")}, http.StatusOK),
		own["id"].(string), "acme", "hour", hour, []map[string]any{point(hour, one)}, one)
	checkSeries(t, e.mustDo(reader, req{method: "GET", path: path("/accounts/acme/usage")}, http.StatusOK),
		"", "acme", "hour", hour, []map[string]any{point(hour, one)}, one)
	errorIs(t, e.do(reader, req{method: "GET", path: path("/keys/" + theirs["id"].(string) + "/usage")}), http.StatusNotFound, "not_found", "")
	errorIs(t, e.do(reader, req{method: "GET", path: path("/accounts/rival/usage")}), http.StatusNotFound, "not_found", "")
	errorIs(t, e.do(noRead, req{method: "GET", path: path("/keys/" + own["id"].(string) + "/usage")}), http.StatusForbidden, "insufficient_scope", "")
	errorIs(t, e.do(noRead, req{method: "GET", path: path("/accounts/acme/usage")}), http.StatusForbidden, "insufficient_scope", "")
}
