package main

// The cluster-wide limits test: three Caddy replicas on one redis-server
// share every key's and account's rate limit and quota.
//
//	test                        admin          site
//	TestClusterGlobalLimits     28101-28103    18101-18103

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
)

// metric reads a caddy_apikey metric (without labels) from a replica's
// admin endpoint; ok is false if it is not exposed.
func (r *replica) metric(t *testing.T, name string) (float64, bool) {
	t.Helper()
	res, err := clusterClient.Get("http://" + r.p.adminAddr() + "/metrics")
	if err != nil {
		t.Fatalf("/metrics on %s: %v", r.name, err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s on %s: %q", name, r.name, v)
			}
			return f, true
		}
	}
	return 0, false
}

// leaseRefills is the replicas' Redis calls for leases, from their
// metrics.
func leaseRefills(t *testing.T, rs []*replica) float64 {
	t.Helper()
	n := 0.0
	for _, r := range rs {
		v, ok := r.metric(t, "caddy_apikey_lease_refills_total")
		if !ok {
			t.Fatalf("%s does not expose caddy_apikey_lease_refills_total", r.name)
		}
		n += v
	}
	return n
}

// spreadLoad sends requests with keys (round robin) through the replicas at
// total requests per second for d, each replica its share of spread,
// each request at its time on a goroutine of its own, and returns how
// many passed on each replica, how many got another answer than 200 or
// 429 with Retry-After, and the time from the first request to the last
// answer.
func spreadLoad(t *testing.T, rs []*replica, keys []string, spread []float64, total float64, d time.Duration) (passed []int64, odd int64, elapsed time.Duration) {
	t.Helper()
	passed = make([]int64, len(rs))
	var wg sync.WaitGroup
	var oddN atomic.Int64
	start := time.Now()
	var lastMu sync.Mutex
	var last time.Time
	for i, r := range rs {
		if spread[i] == 0 {
			continue
		}
		every := time.Duration(float64(time.Second) / (total * spread[i]))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var reqs sync.WaitGroup
			for k := 0; ; k++ {
				at := start.Add(time.Duration(k) * every)
				if at.Sub(start) >= d {
					break
				}
				time.Sleep(time.Until(at))
				reqs.Add(1)
				go func() {
					defer reqs.Done()
					req, _ := http.NewRequest("GET", r.p.siteURL()+"/contacts/1", nil)
					req.Header.Set("X-Api-Key", keys[k%len(keys)])
					res, err := clusterClient.Do(req)
					if err != nil {
						oddN.Add(1)
						return
					}
					res.Body.Close()
					switch res.StatusCode {
					case 200:
						atomic.AddInt64(&passed[i], 1)
					case 429:
						if res.Header.Get("Retry-After") == "" {
							oddN.Add(1)
						}
					default:
						oddN.Add(1)
					}
				}()
			}
			reqs.Wait()
			lastMu.Lock()
			if now := time.Now(); now.After(last) {
				last = now
			}
			lastMu.Unlock()
		}()
	}
	wg.Wait()
	return passed, oddN.Load(), last.Sub(start)
}

// TestClusterGlobalLimits: three Caddy replicas on one Redis.
//   - One key at 4x its limit (100/s, burst 100) for 10 s, spread evenly
//     and 80/10/10 over the replicas, passes burst + rate x elapsed within
//     -5% and +1%; the same for an account's limit across four keys. The
//     scenarios run two at a time, on keys and accounts of their own.
//   - At most one Redis call per 5 passed requests
//     (caddy_apikey_lease_refills_total).
//   - A limit changed through one replica's admin API applies on every
//     replica within a second, keeping what was consumed.
//   - A quota raced by the three replicas passes at most its requests;
//     quota_used on every replica is the cluster's count.
//   - Redis stopped (SIGSTOP), max_staleness 3s: each replica passes
//     about a third of the limit, then every replica answers 503.
func TestClusterGlobalLimits(t *testing.T) {
	skipIfShort(t)
	srv := redistest.Start(t)
	rs := startCluster(t, srv, 3, 28101, 18101, "max_staleness 1s", "max_staleness 3s")
	a := rs[0]
	limit := `"rate_limit": {"requests": 100, "window": "1s", "burst": 100}`
	type scenario struct {
		name   string
		keys   []string
		spread []float64
	}
	var scs []scenario
	for i, sp := range [][]float64{{1. / 3, 1. / 3, 1. / 3}, {.8, .1, .1}} {
		k := a.admin(t, "POST", "/keys", `{"name": "limited", "scopes": ["contacts:read"], `+limit+`}`, http.StatusCreated)
		scs = append(scs, scenario{fmt.Sprintf("key %v", sp), []string{k["key"].(string)}, sp})
		acct := fmt.Sprint("acct", i)
		a.admin(t, "POST", "/accounts", `{"id": "`+acct+`", `+limit+`}`, http.StatusCreated)
		var keys []string
		for range 4 {
			k := a.admin(t, "POST", "/keys", `{"name": "of an account", "account": "`+acct+`", "scopes": ["contacts:read"]}`, http.StatusCreated)
			keys = append(keys, k["key"].(string))
		}
		scs = append(scs, scenario{fmt.Sprintf("account %v", sp), keys, sp})
	}
	var delays []time.Duration
	for _, sc := range scs {
		until(t, rs, 0, "the keys on every replica", "GET", sc.keys[len(sc.keys)-1], 200, "", time.Second, &delays)
	}
	// The first requests above took a token of each bucket: let them
	// fill again.
	time.Sleep(1100 * time.Millisecond)
	before := leaseRefills(t, rs)
	var totalPassed atomic.Int64
	// Two rounds of two scenarios at once (the keys', then the
	// accounts'): four at once would starve a 2-core runner.
	for round := range 2 {
		var wg sync.WaitGroup
		for _, sc := range []scenario{scs[round], scs[round+2]} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				passed, odd, elapsed := spreadLoad(t, rs, sc.keys, sc.spread, 400, 10*time.Second)
				var total int64
				for _, n := range passed {
					total += n
				}
				totalPassed.Add(total)
				want := 100 + 100*elapsed.Seconds()
				dev := (float64(total) - want) / want
				t.Logf("%s: passed %v = %d of %.0f (100 + 100/s x %.2fs): %+.2f%%", sc.name, passed, total, want, elapsed.Seconds(), 100*dev)
				if odd > 0 {
					t.Errorf("%s: %d answers neither 200 nor 429 with Retry-After", sc.name, odd)
				}
				if dev > 0.01 || dev < -0.05 {
					t.Errorf("%s: passed %d, want %.0f within -5%% and +1%%", sc.name, total, want)
				}
			}()
		}
		wg.Wait()
	}
	calls := leaseRefills(t, rs) - before
	t.Logf("Redis calls for leases: %.0f for %d passed requests: %.3f per passed request", calls, totalPassed.Load(), calls/float64(totalPassed.Load()))
	if calls > float64(totalPassed.Load())/5 {
		t.Errorf("%.0f Redis calls for %d passed requests: more than one per 5", calls, totalPassed.Load())
	}
	if n, ok := rs[1].metric(t, "caddy_apikey_replicas_alive"); !ok || n != 3 {
		t.Errorf("caddy_apikey_replicas_alive %v %v, want 3", n, ok)
	}

	// A limit change applies everywhere within a second; what was
	// consumed counts against it (window 1h: no refill to speak of).
	k := a.admin(t, "POST", "/keys", `{"name": "changed", "scopes": ["contacts:read"], "rate_limit": {"requests": 6, "window": "1h"}}`, http.StatusCreated)
	id, key := k["id"].(string), k["key"].(string)
	until(t, rs, 0, "the key on every replica", "GET", key, 200, "", time.Second, &delays)
	drainCluster := func() int {
		n := 0
		for {
			refused := 0
			for _, r := range rs {
				switch st, code := r.call(t, "GET", key); {
				case st == 200:
					n++
				case st == 429 && code == "rate_limited":
					refused++
				default:
					t.Fatalf("%s: %d %s", r.name, st, code)
				}
			}
			if refused == len(rs) {
				return n
			}
		}
	}
	if n := 2 + drainCluster(); n != 6 {
		t.Errorf("a burst of 6 passed %d across the replicas", n)
	}
	rs[1].admin(t, "PATCH", "/keys/"+id, `{"rate_limit": {"requests": 15, "window": "1h"}}`, http.StatusOK)
	changed := time.Now()
	until(t, rs, -1, "the raised limit", "GET", key, 200, "", time.Second, &delays)
	t.Logf("a raised limit applied on every replica %v after the change", time.Since(changed).Round(time.Millisecond))
	if n := 3 + drainCluster(); n != 9 {
		t.Errorf("6 of 6 used, limit raised to 15: passed %d, want 9", n)
	}

	// A quota raced by the three replicas.
	q := a.admin(t, "POST", "/keys", `{"name": "quota", "scopes": ["contacts:read"], "quota": {"requests": 150, "period": "day"}}`, http.StatusCreated)
	qid, qkey := q["id"].(string), q["key"].(string)
	// In every replica's cache first (a request each, counted): the race
	// is the quota's, not the cache misses' Redis reads.
	until(t, rs, -1, "the quota's key on every replica", "GET", qkey, 200, "", time.Second, &delays)
	passed, odd, _ := spreadLoad(t, rs, []string{qkey}, []float64{1. / 3, 1. / 3, 1. / 3}, 300, time.Second)
	total := int64(len(rs)) + passed[0] + passed[1] + passed[2]
	t.Logf("quota 150 raced by 3 replicas (300 requests, after one each): passed %v, %d in all", passed, total)
	if total > 150 || total < 147 || odd != 0 {
		t.Errorf("quota 150: passed %d (%d odd answers), want 147 to 150", total, odd)
	}
	for _, r := range rs {
		if got := r.admin(t, "GET", "/keys/"+qid, "", http.StatusOK); got["quota_used"] != float64(total) {
			t.Errorf("%s: quota_used %v, want the cluster's %d", r.name, got["quota_used"], total)
		}
	}

	// Redis stopped: each replica a third of the limit, then 503.
	o := a.admin(t, "POST", "/keys", `{"name": "outage", "scopes": ["contacts:read"], "rate_limit": {"requests": 60, "window": "1s"}}`, http.StatusCreated)
	okey := o["key"].(string)
	until(t, rs, -1, "the key on every replica", "GET", okey, 200, "", time.Second, &delays)
	srv.Signal(syscall.SIGSTOP)
	defer srv.Signal(syscall.SIGCONT)
	stopped := time.Now()
	passed, _, elapsed := spreadLoad(t, rs, []string{okey}, []float64{1. / 3, 1. / 3, 1. / 3}, 300, 1500*time.Millisecond)
	share := 20 + 20*elapsed.Seconds()
	t.Logf("Redis stopped: passed %v in %v (a replica's share: %.0f, plus at most 10 held)", passed, elapsed.Round(time.Millisecond), share)
	for i, n := range passed {
		if float64(n) > share+11 || float64(n) < 0.7*share {
			t.Errorf("%s passed %d with Redis stopped, want about its share %.0f (plus at most 10 held)", rs[i].name, n, share)
		}
	}
	for _, r := range rs {
		for {
			st, code := r.call(t, "GET", okey)
			if st == 503 && code == "unavailable" {
				break
			}
			if time.Since(stopped) > 3500*time.Millisecond {
				t.Fatalf("%s answers %d %s %v after SIGSTOP, want 503 past max_staleness 3s", r.name, st, code, time.Since(stopped))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Logf("every replica answers 503 %v after SIGSTOP (max_staleness 3s)", time.Since(stopped).Round(time.Millisecond))
}
