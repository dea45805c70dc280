package main

import (
	"context"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestGracefulStopFlushes: last-used times and quota counts live in memory
// between flushes (last_used_flush 1h here, so no periodic flush happens
// during the test). SIGTERM must write them: after a restart the key shows
// last_used_at and quota_used == N, and its account's quota_used too.
//
// The control comes first: the same uses followed by SIGKILL are lost (as
// documented: "after a crash, the last interval's uses may be lost"),
// which shows that what survives SIGTERM was written by the stop, not by
// the requests.
func TestGracefulStopFlushes(t *testing.T) {
	skipIfShort(t)
	p := ports{admin: 28012, site: 18012}
	dir := t.TempDir()
	up := newUpstream(t)
	storage := filepath.Join(dir, "store")
	config := writeConfig(t, dir, "proxy.Caddyfile.tmpl", p, storage, up.URL, "{{FLUSH}}", "1h")
	cp := startCaddy(t, dir, config, p)
	a := newAdmin(p)
	a.must(t, "POST", "/accounts", `{"id": "acme", "name": "Acme", "quota": {"requests": 1000000, "period": "month"}}`, http.StatusCreated)
	id, key := a.createKey(t, `{"name": "metered", "account": "acme", "scopes": ["contacts:read"],
		"quota": {"requests": 1000000, "period": "month"}, "rate_limit": {"unlimited": true}}`)

	c := newClient(1)
	defer c.CloseIdleConnections()
	use := func(n int) (first, last time.Time) {
		t.Helper()
		first = time.Now()
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			status, code, err := proxyResult(ctx, c, p.siteURL()+"/contacts", key)
			cancel()
			if err != nil || status != http.StatusOK {
				t.Fatalf("use %d: %d %s %v", i, status, code, err)
			}
		}
		c.CloseIdleConnections()
		return first, time.Now()
	}
	type usage struct {
		lastUsed              *time.Time
		keyUsed, accountUsed  int64
		keyResets, acctResets string
	}
	read := func() usage {
		t.Helper()
		var u usage
		k := a.must(t, "GET", "/keys/"+id, "", http.StatusOK)
		if s, ok := k["last_used_at"].(string); ok {
			at, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				t.Fatalf("last_used_at %q: %v", s, err)
			}
			u.lastUsed = &at
		}
		acct := a.must(t, "GET", "/accounts/acme", "", http.StatusOK)
		f, _ := k["quota_used"].(float64)
		g, _ := acct["quota_used"].(float64)
		u.keyUsed, u.accountUsed = int64(f), int64(g)
		u.keyResets, _ = k["quota_resets_at"].(string)
		u.acctResets, _ = acct["quota_resets_at"].(string)
		return u
	}

	// Control: SIGKILL after 25 uses.
	use(25)
	before := read()
	if before.keyUsed != 25 || before.accountUsed != 25 || before.lastUsed == nil {
		t.Fatalf("before the kill: key quota_used %d, account quota_used %d, last_used_at %v; want 25, 25, set (shown from memory)",
			before.keyUsed, before.accountUsed, before.lastUsed)
	}
	cp.kill()
	cp = startCaddy(t, dir, config, p)
	afterKill := read()
	if afterKill.keyUsed != 0 || afterKill.accountUsed != 0 || afterKill.lastUsed != nil {
		t.Errorf("control: after SIGKILL the key shows quota_used %d, account %d, last_used_at %v: something wrote them before the stop, so the SIGTERM check below proves less",
			afterKill.keyUsed, afterKill.accountUsed, afterKill.lastUsed)
	}

	// SIGTERM after N uses.
	const n = 37
	first, last := use(n)
	mem := read()
	start := time.Now()
	if code := cp.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	stopTook := time.Since(start)
	cp = startCaddy(t, dir, config, p)
	got := read()
	if got.keyResets != mem.keyResets || got.acctResets != mem.acctResets {
		t.Skipf("the quota period rolled over during the test (%s -> %s)", mem.keyResets, got.keyResets)
	}
	want := afterKill.keyUsed + n
	if got.keyUsed != want {
		t.Errorf("after SIGTERM and restart: key quota_used %d, want %d", got.keyUsed, want)
	}
	if got.accountUsed != afterKill.accountUsed+n {
		t.Errorf("after SIGTERM and restart: account quota_used %d, want %d", got.accountUsed, afterKill.accountUsed+n)
	}
	switch {
	case got.lastUsed == nil:
		t.Errorf("after SIGTERM and restart: last_used_at is null")
	case got.lastUsed.Before(first.Add(-2*time.Second)) || got.lastUsed.After(last.Add(2*time.Second)):
		t.Errorf("after SIGTERM and restart: last_used_at %v, want between %v and %v", got.lastUsed, first, last)
	case !got.lastUsed.Equal(*mem.lastUsed):
		t.Errorf("after SIGTERM and restart: last_used_at %v, but %v before the stop", got.lastUsed, mem.lastUsed)
	}
	t.Logf("control: after SIGKILL quota_used %d/%d, last_used_at %v; SIGTERM stop took %v; after restart key quota_used %d, account quota_used %d, last_used_at %v",
		afterKill.keyUsed, afterKill.accountUsed, afterKill.lastUsed, stopTook.Round(time.Millisecond), got.keyUsed, got.accountUsed, got.lastUsed)
	if code := cp.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("exit code %d after the second SIGTERM", code)
	}
}
