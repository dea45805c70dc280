package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"
)

//go:embed Caddyfile.tmpl
var measuredTmpl string

//go:embed upstream.Caddyfile.tmpl
var upstreamTmpl string

// caddyEnv is the two Caddy processes of a run: the measured one (four
// sites and the key store) and the upstream of its reverse_proxy sites.
type caddyEnv struct {
	c         config
	root, bin string
	store     string
	redis     string // the redis URL with -backend redis
	ports     ports
	home      string
	measured  string // Caddyfile paths
	upstream  string
	rateLimit bool      // the rate_limit global option is in the config
	peers     peerCreds // the credentials of the basic_auth and forward_auth sites
}

type tmplData struct {
	Admin, CaddyData, Store, Redis                             string
	RateLimit                                                  bool
	PortRespond, PortAPIKeyRespond, PortProxy, PortAPIKeyProxy int
	PortHeadersProxy, PortUpstream                             int
	PortBasicAuth, PortForwardAuth, PortAuthCheck, PortFloor   int
	BasicUser, BasicHash, AuthToken                            string
}

func newCaddyEnv(c config, root, bin, store string, p ports) *caddyEnv {
	return &caddyEnv{
		c: c, root: root, bin: bin, store: store, ports: p,
		home:     filepath.Join(c.out, "home"),
		measured: filepath.Join(c.out, "Caddyfile"),
		upstream: filepath.Join(c.out, "upstream.Caddyfile"),
	}
}

func (e *caddyEnv) data(rateLimit bool) tmplData {
	return tmplData{
		Admin:             e.c.admin,
		CaddyData:         filepath.Join(e.home, "caddy-storage"),
		Store:             e.store,
		Redis:             e.redis,
		RateLimit:         rateLimit,
		PortRespond:       e.ports.respond,
		PortAPIKeyRespond: e.ports.apikeyRespond,
		PortProxy:         e.ports.proxy,
		PortAPIKeyProxy:   e.ports.apikeyProxy,
		PortHeadersProxy:  e.ports.headersProxy,
		PortUpstream:      e.ports.upstream,
		PortBasicAuth:     e.ports.basicAuth,
		PortForwardAuth:   e.ports.forwardAuth,
		PortAuthCheck:     e.ports.authCheck,
		PortFloor:         e.ports.floor,
		BasicUser:         e.peers.user,
		BasicHash:         e.peers.hash,
		AuthToken:         e.peers.token,
	}
}

func render(path, tmpl string, d tmplData) error {
	t, err := template.New(filepath.Base(path)).Parse(tmpl)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// writeConfigs writes both Caddyfiles. The measured one gets
// "rate_limit 1000000 1s" in its apikey options if this build parses it
// (issue 4), and the line commented out otherwise.
func (e *caddyEnv) writeConfigs(ctx context.Context) error {
	if err := os.MkdirAll(e.home, 0o755); err != nil {
		return err
	}
	if err := render(e.upstream, upstreamTmpl, e.data(false)); err != nil {
		return err
	}
	if err := e.adapt(ctx, e.upstream); err != nil {
		return err
	}
	if err := render(e.measured, measuredTmpl, e.data(true)); err != nil {
		return err
	}
	err := e.adapt(ctx, e.measured)
	if err == nil {
		e.rateLimit = true
		logf("rate_limit 1000000 1s: parsed, set in %s", e.measured)
		return nil
	}
	if !strings.Contains(err.Error(), "rate_limit") {
		return err
	}
	logf("rate_limit: this build does not parse the option (%s); left commented out in %s", firstLine(err.Error()), e.measured)
	if err := render(e.measured, measuredTmpl, e.data(false)); err != nil {
		return err
	}
	return e.adapt(ctx, e.measured)
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "rate_limit") {
			return strings.TrimSpace(l)
		}
	}
	return strings.SplitN(s, "\n", 2)[0]
}

func (e *caddyEnv) adapt(ctx context.Context, path string) error {
	out, err := outputCmd(ctx, e.root, e.bin, "adapt", "--config", path, "--adapter", "caddyfile")
	if err != nil {
		return fmt.Errorf("caddy adapt --config %s: %w\n%s", path, err, out)
	}
	return nil
}

func (e *caddyEnv) env() []string {
	return childEnv(
		"HOME="+e.home,
		"XDG_DATA_HOME="+filepath.Join(e.home, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(e.home, "config"),
	)
}

func (e *caddyEnv) startUpstream(ctx context.Context) (*process, error) {
	p, err := startProcess("upstream Caddy", filepath.Join(e.c.out, "upstream.log"), e.env(),
		e.bin, "run", "--config", e.upstream, "--adapter", "caddyfile")
	if err != nil {
		return nil, err
	}
	if _, err := waitServed(ctx, p, e.ports.url(e.ports.upstream), "", 30*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	logf("upstream Caddy on 127.0.0.1:%d (pid %d)", e.ports.upstream, p.pid())
	return p, nil
}

// startMeasured starts the measured Caddy and returns it with the time
// from just before the process started to the first 200 answered to a
// valid key on the apikey + respond site.
func (e *caddyEnv) startMeasured(ctx context.Context, validKey string) (*process, time.Duration, error) {
	p, err := startProcess("measured Caddy", filepath.Join(e.c.out, "caddy.log"), e.env(),
		e.bin, "run", "--config", e.measured, "--adapter", "caddyfile")
	if err != nil {
		return nil, 0, err
	}
	d, err := waitServed(ctx, p, e.ports.url(e.ports.apikeyRespond), validKey, 5*time.Minute)
	if err != nil {
		p.stop()
		return nil, 0, err
	}
	return p, d, nil
}

// client talks to 127.0.0.1 only, never through a proxy.
var client = &http.Client{
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
	Timeout:   5 * time.Second,
}

func get(ctx context.Context, url, key string) (int, string, http.Header, error) {
	return getWith(ctx, url, "", key)
}

// getWith is get with the credential in header (X-API-Key if empty).
func getWith(ctx context.Context, url, header, key string) (int, string, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", nil, err
	}
	if header == "" {
		header = "X-API-Key"
	}
	if key != "" {
		req.Header.Set(header, key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(b), resp.Header, err
}

// waitServed polls url (every 2 ms) until it answers 200, and returns the
// time since the process started.
func waitServed(ctx context.Context, p *process, url, key string, limit time.Duration) (time.Duration, error) {
	started := p.started
	deadline := started.Add(limit)
	var last error
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if err := p.alive(); err != nil {
			return 0, err
		}
		status, body, _, err := get(ctx, url, key)
		if err == nil && status == http.StatusOK {
			return time.Since(started), nil
		}
		if err == nil {
			last = fmt.Errorf("status %d: %s", status, strings.TrimSpace(body))
		} else {
			last = err
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s: no 200 from %s within %s (last: %v); see %s:\n%s", p.name, url, limit, last, p.log, tail(p.log, 20))
}

// sanityCheck makes sure every site answers as the load expects before
// anything is measured, and reports whether rate limiting is active: the
// handler sends RateLimit-* headers to the probe key (default limit).
func sanityCheck(ctx context.Context, p ports, s samples, peers peerCreds) (rateLimited bool, err error) {
	type check struct {
		port   int
		key    string
		status int
		body   string // substring
		header string // of key; X-API-Key if empty
	}
	checks := []check{
		{p.respond, s.valid[0], 200, "ok", ""},
		{p.apikeyRespond, s.valid[0], 200, "ok", ""},
		{p.apikeyRespond, s.valid[len(s.valid)-1], 200, "ok", ""},
		{p.apikeyRespond, "", 401, "missing_key", ""},
		{p.apikeyRespond, s.unknown[0], 401, "invalid_key", ""},
		{p.proxy, s.valid[0], 200, "ok", ""},
		{p.apikeyProxy, s.valid[0], 200, "ok", ""},
		{p.apikeyProxy, s.unknown[0], 401, "invalid_key", ""},
		{p.headersProxy, s.valid[0], 200, "ok", ""},
		{p.basicAuth, peers.basic, 200, "ok", "Authorization"},
		{p.basicAuth, "", 401, "", ""},
		{p.basicAuth, peers.wrongBasic(), 401, "", "Authorization"},
		{p.forwardAuth, peers.token, 200, "ok", peerTokenHeader},
		{p.forwardAuth, s.valid[0], 401, "", peerTokenHeader},
		{p.authCheck, peers.token, 200, "", peerTokenHeader},
		{p.floor, s.valid[0], 200, "ok", ""},
	}
	for i := 0; i < 4 && i < len(s.malformed); i++ {
		checks = append(checks, check{p.apikeyRespond, s.malformed[i], 401, "malformed_key", ""})
	}
	for _, c := range checks {
		status, body, h, err := getWith(ctx, p.url(c.port), c.header, c.key)
		if err != nil {
			return false, fmt.Errorf("sanity check of 127.0.0.1:%d: %w", c.port, err)
		}
		if status != c.status || !strings.Contains(body, c.body) {
			return false, fmt.Errorf("sanity check of 127.0.0.1:%d with key %q: got %d %q, want %d with %q", c.port, c.key, status, body, c.status, c.body)
		}
		if status == 200 && h.Get("RateLimit-Limit") != "" {
			rateLimited = true
		}
	}
	status, body, h, err := get(ctx, p.url(p.apikeyRespond), s.probe)
	if err != nil || status != 200 {
		return false, fmt.Errorf("sanity check with the probe key: %d %q %v", status, body, err)
	}
	if h.Get("RateLimit-Limit") != "" {
		rateLimited = true
		logf("probe key (default rate limit): RateLimit-Limit %s, RateLimit-Remaining %s", h.Get("RateLimit-Limit"), h.Get("RateLimit-Remaining"))
	}
	return rateLimited, nil
}

// profileUnderLoad takes a heap profile of the measured Caddy after the
// load, then a CPU profile (admin endpoint /debug/pprof/profile,
// -profile-seconds) while wrk loads each site (the plain ones too, as
// bases for "go tool pprof -diff_base"), and writes each with a pprof -top
// summary. From the profiles of the auth handlers' sites it computes each
// handler's own CPU per request (ownCPU).
func profileUnderLoad(ctx context.Context, w *wrkRunner, c config, p ports, f keyFiles, peers peerCreds, bin string) ([]string, []ownCPU, error) {
	const (
		apikeyHandler = "caddymodule.(*Handler).ServeHTTP"
		basicAuth     = "caddyauth.Authentication.ServeHTTP"
		floor         = "floor.(*Handler).ServeHTTP"
		respond       = "caddyhttp.StaticResponse.ServeHTTP"
		proxy         = "reverseproxy.(*Handler).ServeHTTP"
	)
	cases := []struct {
		name   string
		port   int
		keys   string
		header string
		// handler is the auth handler whose own CPU is reported, next
		// the handler it calls on a pass ("" for a refusal load).
		handler, next string
	}{
		{"respond", p.respond, f.valid, "", "", ""},
		{"apikey-respond", p.apikeyRespond, f.valid, "", apikeyHandler, respond},
		{"proxy", p.proxy, f.valid, "", "", ""},
		{"apikey-proxy", p.apikeyProxy, f.valid, "", apikeyHandler, proxy},
		{"apikey-unknown", p.apikeyRespond, f.unknown, "", apikeyHandler, ""},
		{"apikey-malformed", p.apikeyRespond, f.malformed, "", apikeyHandler, ""},
		{"basic-auth-respond", p.basicAuth, peers.basicFile, "Authorization", basicAuth, respond},
		{"forward-auth-respond", p.forwardAuth, peers.tokenFile, peerTokenHeader, "", ""},
		{"floor-respond", p.floor, f.valid, "", floor, respond},
	}
	var out []string
	var owns []ownCPU
	// The heap after the load, before the profiling loads.
	heap := filepath.Join(c.out, "caddy-heap.pprof")
	if err := fetchProfile(ctx, "http://"+c.admin+"/debug/pprof/heap", heap); err != nil {
		return out, owns, err
	}
	txt, err := outputCmd(ctx, "", "go", "tool", "pprof", "-top", "-nodecount=40", "-sample_index=inuse_space", bin, heap)
	if err != nil {
		return out, owns, err
	}
	if err := os.WriteFile(strings.TrimSuffix(heap, ".pprof")+".top.txt", []byte(txt), 0o644); err != nil {
		return out, owns, err
	}
	out = append(out, heap, strings.TrimSuffix(heap, ".pprof")+".top.txt")
	secs := max(c.profileSecs, 1)
	for _, cs := range cases {
		logf("profiling the measured Caddy under %s load (%d s)", cs.name, secs)
		type wrkDone struct {
			r   wrkResult
			err error
		}
		done := make(chan wrkDone, 1)
		go func() {
			r, err := w.run(ctx, p.url(cs.port), cs.keys, cs.header, time.Duration(secs+3)*time.Second, w.threads, w.conns)
			done <- wrkDone{r, err}
		}()
		time.Sleep(1500 * time.Millisecond)
		prof := filepath.Join(c.out, "caddy-cpu-"+cs.name+".pprof")
		perr := fetchProfile(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", c.admin, secs), prof)
		d := <-done
		if perr != nil {
			return out, owns, perr
		}
		if d.err != nil {
			return out, owns, d.err
		}
		top := strings.TrimSuffix(prof, ".pprof") + ".top.txt"
		txt, err := outputCmd(ctx, "", "go", "tool", "pprof", "-top", "-nodecount=40", bin, prof)
		if err != nil {
			return out, owns, err
		}
		if err := os.WriteFile(top, []byte(txt), 0o644); err != nil {
			return out, owns, err
		}
		out = append(out, prof, top)
		if cs.handler == "" {
			continue
		}
		cum, err := outputCmd(ctx, "", "go", "tool", "pprof", "-top", "-cum", "-nodecount=100000", "-nodefraction=0", "-edgefraction=0", bin, prof)
		if err != nil {
			return out, owns, err
		}
		o, err := ownCPUOf(cum, cs.handler, cs.next)
		if err != nil {
			return out, owns, fmt.Errorf("profile under %s load: %w", cs.name, err)
		}
		o.load, o.requests = cs.name, d.r.RPS()*float64(secs)
		owns = append(owns, o)
	}
	return out, owns, nil
}

func fetchProfile(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// A CPU profile answers after its seconds (from the URL); 30 s more.
	timeout := 30 * time.Second
	if u, err := neturl.Parse(url); err == nil {
		if secs, err := strconv.Atoi(u.Query().Get("seconds")); err == nil {
			timeout += time.Duration(secs) * time.Second
		}
	}
	cl := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: timeout}
	resp, err := cl.Do(req)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<12))
		return fmt.Errorf("fetching %s: status %d: %s", url, resp.StatusCode, b)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if len(b) == 0 {
		return errors.New("empty profile from " + url)
	}
	return os.WriteFile(path, b, 0o644)
}

// memStats are the Go runtime's memory statistics of the measured Caddy,
// from the admin endpoint's expvar page.
type memStats struct {
	Sys, HeapInuse, HeapIdle, HeapReleased, StackSys, NextGC int64
	NumGC                                                    int64
}

func readMemStats(ctx context.Context, admin string) (*memStats, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/debug/vars", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("/debug/vars: status %d", resp.StatusCode)
	}
	var v struct {
		Memstats *memStats `json:"memstats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return nil, fmt.Errorf("/debug/vars: %w", err)
	}
	if v.Memstats == nil {
		return nil, errors.New("/debug/vars has no memstats")
	}
	return v.Memstats, nil
}

// leaseCalls are what the measured Caddy's /metrics say of cluster mode's
// rate limits: the round trips to Redis for leases, and the requests that
// passed (outcome ok), since it started.
type leaseCalls struct {
	calls, passed float64
}

// perPassed is the Redis calls per passed request.
func (l leaseCalls) perPassed() float64 {
	if l.passed == 0 {
		return 0
	}
	return l.calls / l.passed
}

// readLeaseCalls reads leaseCalls from the admin endpoint's /metrics
// (Prometheus text: the sums over every label set).
func readLeaseCalls(ctx context.Context, admin string) (leaseCalls, error) {
	var l leaseCalls
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return l, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return l, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return l, fmt.Errorf("/metrics: status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, rest, _ := strings.Cut(line, " ")
		var into *float64
		switch {
		case name == "caddy_apikey_lease_refills_total":
			into = &l.calls
		case strings.HasPrefix(name, "caddy_apikey_requests_total{") && strings.Contains(name, `outcome="ok"`):
			into = &l.passed
		default:
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			return l, fmt.Errorf("/metrics: %q: %w", line, err)
		}
		*into += v
	}
	return l, sc.Err()
}
