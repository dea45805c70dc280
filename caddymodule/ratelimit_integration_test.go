package caddymodule_test

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// limitConfig is siteConfig with a default key limit of 5 per second.
var limitConfig = strings.Replace(siteConfig, "\t\tstorage %[2]s\n", "\t\tstorage %[2]s\n\t\trate_limit 5 1s\n", 1)

func TestRateLimits(t *testing.T) {
	e := startWith(t, limitConfig)
	get := func(key string) (*http.Response, map[string]any) {
		return e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", key), "")
	}
	countOK := func(key string, n int) int {
		ok := 0
		for range n {
			if res, _ := get(key); res.StatusCode == 200 {
				ok++
			}
		}
		e.up.take()
		return ok
	}

	// The default limit, headers on a pass and on a refusal.
	_, key := e.createKey(`{"name": "default limit", "scopes": ["contacts:read"]}`)
	res, _ := get(key)
	if res.StatusCode != 200 || res.Header.Get("RateLimit-Limit") != "5" || res.Header.Get("RateLimit-Remaining") != "4" || res.Header.Get("RateLimit-Reset") != "1" {
		t.Errorf("first request: %d, RateLimit-Limit %q Remaining %q Reset %q", res.StatusCode,
			res.Header.Get("RateLimit-Limit"), res.Header.Get("RateLimit-Remaining"), res.Header.Get("RateLimit-Reset"))
	}
	if n := countOK(key, 10); n > 4 {
		t.Errorf("%d more requests passed within the burst of 5", n)
	}
	res, body := get(key)
	e.expect("over the limit", res, body, 429, "rate_limited", false)
	if ra, _ := strconv.Atoi(res.Header.Get("Retry-After")); ra < 1 || body["retry_after"] != float64(ra) {
		t.Errorf("Retry-After %q, retry_after %v", res.Header.Get("Retry-After"), body["retry_after"])
	}
	if res.Header.Get("RateLimit-Remaining") != "0" {
		t.Errorf("429 RateLimit-Remaining %q", res.Header.Get("RateLimit-Remaining"))
	}

	// Refusals for scope spend nothing.
	_, reader := e.createKey(`{"name": "reader", "scopes": ["contacts:read"]}`)
	for range 10 {
		res, body := e.do("POST", siteURL+"/contacts", hdr("X-Api-Key", reader), "")
		e.expect("scope refusal", res, body, 403, "insufficient_scope", false)
	}
	if n := countOK(reader, 5); n != 5 {
		t.Errorf("after 10 scope refusals, %d of 5 passed", n)
	}

	// A key's own limit, and an exempt key.
	ownID, own := e.createKey(`{"name": "own", "scopes": ["contacts:read"], "rate_limit": {"requests": 2, "window": "1m"}}`)
	if n := countOK(own, 5); n != 2 {
		t.Errorf("own limit 2/min: %d passed", n)
	}
	_, free := e.createKey(`{"name": "free", "scopes": ["contacts:read"], "rate_limit": {"unlimited": true}}`)
	if n := countOK(free, 50); n != 50 {
		t.Errorf("unlimited: %d of 50 passed", n)
	}
	if res, _ := get(free); res.Header.Get("RateLimit-Limit") != "" {
		t.Errorf("unlimited key got RateLimit-Limit %q", res.Header.Get("RateLimit-Limit"))
	}

	// A limit changed through the admin API applies to the next request.
	e.admin("PATCH", "/keys/"+ownID, `{"rate_limit": {"requests": 100, "window": "1m"}}`, http.StatusOK)
	if res, body := get(own); res.StatusCode != 200 {
		t.Errorf("after raising the limit: %d %v", res.StatusCode, body)
	}

	// Account-wide: ten keys do not get ten times the limit.
	e.admin("POST", "/accounts", `{"id": "acme", "rate_limit": {"requests": 6, "window": "1m"}}`, http.StatusCreated)
	var keys []string
	for i := range 10 {
		_, k := e.createKey(fmt.Sprintf(`{"name": "acme %d", "account": "acme", "scopes": ["contacts:read"]}`, i))
		keys = append(keys, k)
	}
	total := 0
	for _, k := range keys {
		total += countOK(k, 3)
	}
	if total != 6 {
		t.Errorf("account limit 6/min across 10 keys: %d passed", total)
	}
}

func TestQuotaThroughProxy(t *testing.T) {
	e := start(t)
	id, key := e.createKey(`{"name": "quota", "scopes": ["contacts:read"], "quota": {"requests": 3, "period": "day"}}`)
	for i := range 3 {
		res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", key), "")
		e.expect(fmt.Sprintf("within quota %d", i), res, body, 200, "", true)
	}
	res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", key), "")
	e.expect("quota used up", res, body, 429, "quota_exceeded", false)
	now := time.Now().UTC()
	untilMidnight := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC).Sub(now).Seconds()
	ra, _ := strconv.Atoi(res.Header.Get("Retry-After"))
	if math.Abs(float64(ra)-untilMidnight) > 5 {
		t.Errorf("Retry-After %d, want about %.0f (until midnight UTC)", ra, untilMidnight)
	}
	rec := e.admin("GET", "/keys/"+id, "", http.StatusOK)
	if rec["quota_used"] != float64(3) || rec["quota_resets_at"] == nil {
		t.Errorf("record: quota_used %v, quota_resets_at %v", rec["quota_used"], rec["quota_resets_at"])
	}
	// Raising the quota lets the key continue at once.
	e.admin("PATCH", "/keys/"+id, `{"quota": {"requests": 4, "period": "day"}}`, http.StatusOK)
	res, body = e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", key), "")
	e.expect("after raising the quota", res, body, 200, "", true)
}

// TestRateLimitStateSurvivesReload: the limiter state lives with the store,
// not the config.
func TestRateLimitStateSurvivesReload(t *testing.T) {
	e := startWith(t, limitConfig)
	_, key := e.createKey(`{"name": "reload", "scopes": ["contacts:read"], "rate_limit": {"requests": 3, "window": "1h"}}`)
	for range 3 {
		res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", key), "")
		e.expect("before reload", res, body, 200, "", true)
	}
	e.load(strings.Replace(limitConfig, "handle /read* {", "handle /read2* {", 1))
	res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", key), "")
	e.expect("after reload", res, body, 429, "rate_limited", false)
}

// TestRateLimitAccuracy: one key at 4x its limit from 32 concurrent
// connections for 10 s; the requests that pass are within 1% of
// burst + rate x elapsed.
func TestRateLimitAccuracy(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s of load")
	}
	const (
		rate     = 100 // per second
		burst    = 100
		conns    = 32
		duration = 10 * time.Second
	)
	e := start(t)
	_, key := e.createKey(fmt.Sprintf(`{"name": "accuracy", "scopes": ["contacts:read"], "rate_limit": {"requests": %d, "window": "1s", "burst": %d}}`, rate, burst))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
	_, warm := e.createKey(`{"name": "warm-up", "scopes": ["contacts:read"], "rate_limit": {"unlimited": true}}`)
	send := func(key string) (int, error) {
		req, _ := http.NewRequest("GET", siteURL+"/contacts", nil)
		req.Header.Set("X-Api-Key", key)
		res, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode, nil
	}
	var passed, limited, other atomic.Int64
	// Each connection paces itself so that the total offered load is 4x
	// the limit. Every connection, and the proxy's connections upstream,
	// are opened first with an unlimited key, so that the first and the
	// last requests of the load have the same small latency: the window
	// below is measured at the upstream.
	interval := time.Duration(float64(time.Second) * conns / (4 * rate))
	var ready, wg sync.WaitGroup
	begin := make(chan struct{})
	var start, deadline time.Time
	for range conns {
		ready.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if status, err := send(warm); err != nil || status != 200 {
				other.Add(1)
			}
			ready.Done()
			<-begin
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for time.Now().Before(deadline) {
				status, err := send(key)
				switch {
				case err != nil:
					other.Add(1)
				case status == 200:
					passed.Add(1)
				case status == 429:
					limited.Add(1)
				default:
					other.Add(1)
				}
				<-tick.C
			}
		}()
	}
	ready.Wait()
	e.up.take()
	start = time.Now()
	deadline = start.Add(duration)
	close(begin)
	wg.Wait()
	elapsed := time.Since(start)
	// The bucket starts full at the first request the limiter sees and,
	// at 4x the limit, is empty from then on: the passes are the burst
	// plus what refilled until the last pass. Those times are taken where
	// the passes arrive, at the upstream, not at the client, whose send
	// times drift from the server's when the machine is loaded.
	window := e.up.window()
	e.up.take()
	want := burst + rate*window.Seconds()
	got := float64(passed.Load())
	t.Logf("passed %d, refused %d, errors %d in %v (window %v); expected %.1f", passed.Load(), limited.Load(), other.Load(), elapsed, window, want)
	if other.Load() != 0 {
		t.Errorf("%d requests failed or got another status", other.Load())
	}
	if limited.Load() < int64(got) {
		t.Errorf("offered load was not above the limit: %d refused, %d passed", limited.Load(), passed.Load())
	}
	if math.Abs(got-want)/want > 0.01 {
		t.Errorf("passed %d, want %.0f ± 1%%", passed.Load(), want)
	}
}
