package main

// The cluster tests: three Caddy processes (distinct admin addresses and
// data directories) on one redis-server, as three replicas behind a load
// balancer.
//
//	test                        admin          site
//	TestClusterReplicas         28021-28023    18021-18023
//	TestClusterFailsClosed      28024-28026    18024-18026
//	TestClusterUsage            28300-28301    18300-18301 (usage_test.go)
//	TestClusterPageSessions     28400-28401    18400-18401 (cluster_page_test.go)

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
)

// replica is one Caddy of a cluster test.
type replica struct {
	name string
	proc *caddyProc
	p    ports
}

// startCluster starts n replicas on srv with the cluster template; extra
// are more replacements of its text (old, new, ...), as a longer
// max_staleness.
func startCluster(t *testing.T, srv *redistest.Server, n, adminBase, siteBase int, extra ...string) []*replica {
	t.Helper()
	return startClusterFrom(t, srv, "cluster.Caddyfile.tmpl", n, adminBase, siteBase, extra...)
}

// startClusterFrom starts n replicas on srv with a template of the
// cluster template's placeholders; extra as for startCluster.
func startClusterFrom(t *testing.T, srv *redistest.Server, tmpl string, n, adminBase, siteBase int, extra ...string) []*replica {
	t.Helper()
	up := newUpstream(t)
	var out []*replica
	for i := range n {
		dir := filepath.Join(t.TempDir(), fmt.Sprint(i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		p := ports{admin: adminBase + i, site: siteBase + i}
		cfg := writeConfig(t, dir, tmpl, p, "", up.URL, append([]string{"{{REDIS}}", srv.URL(), "{{PREFIX}}", "cluster:"}, extra...)...)
		out = append(out, &replica{name: string(rune('A' + i)), proc: startCaddy(t, dir, cfg, p), p: p})
	}
	return out
}

var clusterClient = &http.Client{Timeout: 5 * time.Second}

// admin calls a replica's admin API and decodes the answer.
func (r *replica) admin(t *testing.T, method, path, body string, want int) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+r.p.adminAddr()+"/apikey"+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := clusterClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, r.name, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		t.Fatalf("%s %s on %s: %d, want %d: %s", method, path, r.name, res.StatusCode, want, b)
	}
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

// call sends a request with key through a replica's site and returns the
// status and the error code of a refusal.
func (r *replica) call(t *testing.T, method, key string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, r.p.siteURL()+"/contacts/1", nil)
	req.Header.Set("X-Api-Key", key)
	res, err := clusterClient.Do(req)
	if err != nil {
		t.Fatalf("call on %s: %v", r.name, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var body struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(b, &body)
	return res.StatusCode, body.Error
}

// until waits until every replica but from answers want (a status and,
// for refusals, a code) for key, up to limit, and records each delay.
func until(t *testing.T, rs []*replica, from int, what, method, key string, status int, code string, limit time.Duration, delays *[]time.Duration) {
	t.Helper()
	start := time.Now()
	for i, r := range rs {
		if i == from {
			continue
		}
		for {
			st, c := r.call(t, method, key)
			if st == status && c == code {
				*delays = append(*delays, time.Since(start))
				break
			}
			if time.Since(start) > limit {
				t.Fatalf("%s: %s answers %d %s after %v, want %d %s", what, r.name, st, c, limit, status, code)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
}

// TestClusterReplicas: a key created on A verifies on B and C; a
// revocation on B, an activation, a regenerate with a grace period on C,
// an account suspension and a delete apply on the other replicas within a
// second. The test logs the delays (p50, p99). No value in Redis holds a
// plaintext key.
func TestClusterReplicas(t *testing.T) {
	skipIfShort(t)
	srv := redistest.Start(t)
	rs := startCluster(t, srv, 3, 28021, 18021)
	var delays []time.Duration
	var plains []string

	k := rs[0].admin(t, "POST", "/keys", `{"name": "cluster", "scopes": ["contacts:write"]}`, http.StatusCreated)
	id, key := k["id"].(string), k["key"].(string)
	plains = append(plains, key)
	until(t, rs, 0, "created on A", "GET", key, 200, "", time.Second, &delays)

	rs[1].admin(t, "POST", "/keys/"+id+"/revoke", "", http.StatusOK)
	until(t, rs, 1, "revoked on B", "GET", key, 401, "key_revoked", time.Second, &delays)
	rs[2].admin(t, "POST", "/keys/"+id+"/activate", "", http.StatusOK)
	until(t, rs, 2, "activated on C", "GET", key, 200, "", time.Second, &delays)
	rs[0].admin(t, "PATCH", "/keys/"+id, `{"scopes": ["contacts:read"]}`, http.StatusOK)
	until(t, rs, 0, "scope narrowed on A", "POST", key, 403, "insufficient_scope", time.Second, &delays)

	r := rs[2].admin(t, "POST", "/keys/"+id+"/regenerate", `{"grace_period": "1h"}`, http.StatusOK)
	fresh := r["key"].(string)
	plains = append(plains, fresh)
	until(t, rs, 2, "the new string from C", "GET", fresh, 200, "", time.Second, &delays)
	until(t, rs, 2, "the old string in its grace period", "GET", key, 200, "", time.Second, &delays)
	r = rs[2].admin(t, "POST", "/keys/"+id+"/regenerate", "", http.StatusOK)
	third := r["key"].(string)
	plains = append(plains, third)
	until(t, rs, 2, "the previous string after a regenerate without grace", "GET", fresh, 401, "invalid_key", time.Second, &delays)

	rs[1].admin(t, "POST", "/accounts", `{"id": "acme"}`, http.StatusCreated)
	ak := rs[0].admin(t, "POST", "/keys", `{"name": "acme's", "account": "acme", "scopes": ["contacts:read"]}`, http.StatusCreated)
	plains = append(plains, ak["key"].(string))
	until(t, rs, 0, "a key of an account created on B", "GET", ak["key"].(string), 200, "", time.Second, &delays)
	rs[1].admin(t, "PATCH", "/accounts/acme", `{"status": "suspended"}`, http.StatusOK)
	until(t, rs, 1, "account suspended on B", "GET", ak["key"].(string), 403, "account_inactive", time.Second, &delays)

	rs[0].admin(t, "DELETE", "/keys/"+id, "", http.StatusNoContent)
	until(t, rs, 0, "deleted on A", "GET", third, 401, "invalid_key", time.Second, &delays)
	if got := rs[2].admin(t, "GET", "/keys?limit=10", "", http.StatusOK); len(got["keys"].([]any)) != 1 {
		t.Errorf("C lists %v after A's delete, want the one key of acme", got["keys"])
	}

	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	t.Logf("propagation across 3 replicas, %d observations: p50 %v, p99 %v, max %v", len(delays),
		delays[len(delays)/2].Round(10*time.Microsecond), delays[len(delays)*99/100].Round(10*time.Microsecond), delays[len(delays)-1].Round(10*time.Microsecond))

	// No plaintext key anywhere in Redis: every key and every value of
	// every type.
	dump := redisDump(t, srv)
	for _, p := range plains {
		if bytes.Contains(dump, []byte(p)) {
			t.Errorf("Redis holds a plaintext key")
		}
	}
	if len(dump) < 1000 {
		t.Errorf("the dump of Redis is %d bytes: the check read nothing", len(dump))
	}
}

// redisDump is every key and value of every type in srv's database 0.
func redisDump(t *testing.T, srv *redistest.Server) []byte {
	t.Helper()
	var out bytes.Buffer
	for _, k := range srv.List("KEYS", "*") {
		out.WriteString(k + "\n")
		switch srv.Do("TYPE", k) {
		case "+string", "string":
			out.WriteString(srv.Do("GET", k) + "\n")
		case "+zset", "zset":
			out.WriteString(strings.Join(srv.List("ZRANGE", k, "0", "-1"), "\n"))
		case "+hash", "hash":
			out.WriteString(strings.Join(srv.List("HGETALL", k), "\n"))
		case "+stream", "stream":
			out.WriteString(strings.Join(srv.List("XRANGE", k, "-", "+"), "\n"))
		default:
			t.Errorf("key %q of an unexpected type %s", k, srv.Do("TYPE", k))
		}
	}
	return out.Bytes()
}

// TestClusterFailsClosed: SIGSTOP on Redis makes every replica answer 503
// unavailable within max_staleness + 0.5 s, and none lets a key revoked
// just before through; after SIGCONT service resumes within 2 s.
func TestClusterFailsClosed(t *testing.T) {
	skipIfShort(t)
	srv := redistest.Start(t)
	rs := startCluster(t, srv, 3, 28024, 18024)
	k := rs[0].admin(t, "POST", "/keys", `{"name": "revoked", "scopes": ["contacts:read"]}`, http.StatusCreated)
	ok := rs[0].admin(t, "POST", "/keys", `{"name": "valid", "scopes": ["contacts:read"]}`, http.StatusCreated)
	var delays []time.Duration
	until(t, rs, -1, "before", "GET", ok["key"].(string), 200, "", time.Second, &delays)
	until(t, rs, -1, "before", "GET", k["key"].(string), 200, "", time.Second, &delays)
	rs[0].admin(t, "POST", "/keys/"+k["id"].(string)+"/revoke", "", http.StatusOK)
	until(t, rs, 0, "revoked just before the stop", "GET", k["key"].(string), 401, "key_revoked", time.Second, &delays)

	srv.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	for _, r := range rs {
		for {
			st, code := r.call(t, "GET", k["key"].(string))
			if st == 200 {
				t.Fatalf("%s let the revoked key through during the outage", r.name)
			}
			if st == 503 && code == "unavailable" {
				break
			}
			if time.Since(stopped) > 1500*time.Millisecond {
				t.Fatalf("%s answers %d %s %v after SIGSTOP, want 503 unavailable within 1.5 s", r.name, st, code, time.Since(stopped))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// A valid key in the replicas' caches passes until max_staleness has
	// passed since the last confirmation, then gets 503 too.
	for _, r := range rs {
		for {
			st, code := r.call(t, "GET", ok["key"].(string))
			if st == 503 && code == "unavailable" {
				break
			}
			if time.Since(stopped) > 1500*time.Millisecond {
				t.Fatalf("%s: a valid key %v after SIGSTOP: %d %s, want 503 unavailable within 1.5 s", r.name, time.Since(stopped), st, code)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	refusing := time.Since(stopped)
	srv.Signal(syscall.SIGCONT)
	resumed := time.Now()
	until(t, rs, -1, "after SIGCONT", "GET", ok["key"].(string), 200, "", 2*time.Second, &delays)
	until(t, rs, -1, "the revoked key after SIGCONT", "GET", k["key"].(string), 401, "key_revoked", 2*time.Second, &delays)
	t.Logf("all replicas refusing with 503 %v after SIGSTOP (max_staleness 1s); serving again %v after SIGCONT",
		refusing.Round(time.Millisecond), time.Since(resumed).Round(time.Millisecond))
}
