package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Slack of the growth checks after the last reload, against the same
// measurement before the first one: both are taken with the load stopped,
// its connections closed, the upstream's connections closed from the
// upstream's side, after a settle of 1 s, as the smallest of 5 samples
// 200 ms apart. A leak of one goroutine or one fd per reload would show as
// 50.
const (
	goroutineSlack = 10
	fdSlack        = 4
)

// loadConns is the number of keep-alive connections of the load.
const loadConns = 16

// TestReloadsUnderLoad: while 16 keep-alive connections send valid
// requests through apikey + reverse_proxy (with keys whose own rate limit
// is unlimited), 50 "caddy reload"s of the built binary alternate two
// configs (testdata/reload-[ab].Caddyfile.tmpl) that differ in their
// routes and in apikey options. It runs twice: with socket activation (the
// listening socket is the test's, inherited as fd 3 and bound with "bind
// fd/3", as systemd's socket units do) and with Caddy's own listener.
// Required:
//
//   - every request gets a 200 from the upstream: no other status, no
//     transport error (with Caddy's own listener, see reloadStrict: the
//     one kind of error that its listener hand-off causes is tolerated
//     and counted unless APIKEY_RELOAD_STRICT=1; with socket activation,
//     none at all);
//   - both configs served requests (the reloads took effect);
//   - after each reload, a key created through the admin endpoint
//     verifies at once (the store stays open and shared);
//   - after the last reload, no more goroutines and fds than before the
//     first (goroutineSlack, fdSlack); in the long suite, also that the
//     upstream connections the old configs kept are all released once
//     Caddy's keepalive idle timeout has passed.
//
// Requests that Go's transport retried by itself (a GET on a keep-alive
// connection that the old server closed as the request was sent; RFC 9112
// section 9.3.1) are not errors; they are counted and logged.
func TestReloadsUnderLoad(t *testing.T) {
	skipIfShort(t)
	t.Run("socket activation", func(t *testing.T) {
		testReloadsUnderLoad(t, ports{admin: 28015, site: 18015}, true)
	})
	t.Run("caddy's own listener", func(t *testing.T) {
		testReloadsUnderLoad(t, ports{admin: 28013, site: 18013}, false)
	})
}

func testReloadsUnderLoad(t *testing.T, p ports, activated bool) {
	const reloads = 50
	dir := t.TempDir()
	up := newUpstream(t)
	storage := filepath.Join(dir, "store")
	bind := "# Caddy's own listener"
	var sockets []*os.File
	if activated {
		bind = "bind fd/3"
		sockets = []*os.File{inheritedSocket(t, p.site)}
	}
	configs := []string{
		writeConfig(t, dir, "reload-a.Caddyfile.tmpl", p, storage, up.URL, "{{BIND}}", bind),
		writeConfig(t, dir, "reload-b.Caddyfile.tmpl", p, storage, up.URL, "{{BIND}}", bind),
	}
	cp := startCaddy(t, dir, configs[0], p, sockets...)
	for _, f := range sockets {
		f.Close() // the child has its own copy
	}
	a := newAdmin(p)
	defer a.c.CloseIdleConnections()
	keys := make([]string, loadConns)
	for i := range keys {
		_, keys[i] = a.createKey(t, `{"name": "load", "scopes": ["contacts:read"], "rate_limit": {"unlimited": true}}`)
	}
	strict, why := reloadStrict()
	if activated {
		strict, why = true, "socket activation: one listening socket for every config"
	}

	// Warm up, then measure with the load stopped.
	lg := startLoad(p.siteURL(), keys)
	time.Sleep(2 * time.Second)
	warm := lg.stop()
	if warm.bad(nil) {
		t.Fatalf("warm-up: %s", warm)
	}
	baseUp := up.openConns()
	base := quiesce(t, cp, up)
	t.Logf("before the reloads (after a warm-up of %s): %d goroutines, %d fds %v, %d upstream connections open before closing them",
		warm, base.goroutines, base.fds, base.fdKinds, baseUp)

	lg = startLoad(p.siteURL(), keys)
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	var took []time.Duration
	var windows [][2]time.Duration // when each reload ran, from the start of the load
	adminRetries := 0              // requests of the checks below sent again after a transport error
	check := newClient(1)
	defer check.CloseIdleConnections()
	for i := 1; i <= reloads; i++ {
		cfg := configs[i%2]
		t0 := time.Now()
		out, err := reload(cfg, p)
		took = append(took, time.Since(t0))
		windows = append(windows, [2]time.Duration{t0.Sub(lg.start), time.Since(lg.start)})
		if err != nil {
			t.Fatalf("reload %d (%s): %v\n%s", i, filepath.Base(cfg), err, out)
		}
		// The store survives the reload: a new key works at once. Caddy
		// replaces its admin server after a load, so a request right after
		// the reload can meet the old one as it closes: a create whose
		// answer is lost is tried again (the lost one leaves an unused key).
		var k string
		for try := 1; ; try++ {
			a.c.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			status, out, err := a.call(ctx, "POST", "/keys", fmt.Sprintf(`{"name": "after reload %d", "scopes": ["contacts:read"], "rate_limit": {"unlimited": true}}`, i))
			cancel()
			if err == nil && status == http.StatusCreated {
				k, _ = out["key"].(string)
				break
			}
			if err == nil || try == 3 {
				t.Fatalf("after reload %d: create: %d %v %v", i, status, out, err)
			}
			adminRetries++
			time.Sleep(50 * time.Millisecond)
		}
		for try := 1; ; try++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			status, code, err := proxyResult(ctx, check, p.siteURL()+"/contacts", k)
			cancel()
			if err != nil && try < 3 { // a listener hand-off reset (see reloadStrict)
				adminRetries++
				continue
			}
			if err != nil || status != http.StatusOK {
				t.Errorf("after reload %d: a new key gets %d %s %v", i, status, code, err)
			}
			break
		}
		time.Sleep(100 * time.Millisecond) // let each config serve the load for a while
	}
	reloadPhase := time.Since(start)
	time.Sleep(300 * time.Millisecond)
	res := lg.stop()
	afterUp := up.openConns()
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	resets, dropped := res.reloadErrors(windows)
	t.Logf("%d reloads in %v (reload command: median %v, max %v; %d check requests sent again after a transport error); load during the reloads: %s; listener hand-off resets: %d (strict: %v, %s); first requests dropped by a closing server (golang/go#75591): %d",
		reloads, reloadPhase.Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond),
		adminRetries, res, len(resets), strict, why, len(dropped))
	allowed := append(resets, dropped...)
	if strict {
		allowed = dropped
	}
	if res.bad(allowed) || len(allowed) > 3*loadConns {
		t.Errorf("load during the reloads: %s; reloads ran at %s", res, describeWindows(windows))
	}
	for _, route := range []string{"a-contacts", "a-default", "b-contacts", "b-default"} {
		if res.routes[route] == 0 {
			t.Errorf("no request was served by route %s: the reloads did not take effect", route)
		}
	}

	// Caddy's reverse_proxy closes the idle upstream connections of an old
	// config when the config is cleaned up, but requests that the old
	// server was still finishing return theirs to the old transport
	// afterwards: they stay open until the transport's keepalive idle
	// timeout (Caddy's default: 2m). The long suite waits for that
	// timeout and checks that they are all released; the default run
	// closes them from the upstream's side before measuring.
	if longSuite {
		wait := 2*time.Minute + 20*time.Second
		deadline := time.Now().Add(wait)
		for up.openConns() > baseUp && time.Now().Before(deadline) {
			time.Sleep(time.Second)
		}
		v := cp.settledVitals(t)
		t.Logf("after Caddy's keepalive idle timeout: %d upstream connections open (right after the load: %d; before the reloads: %d), %d goroutines, %d fds",
			up.openConns(), afterUp, baseUp, v.goroutines, v.fds)
		if n := up.openConns(); n > baseUp {
			t.Errorf("%d upstream connections still open %v after the reloads (before: %d)", n, wait, baseUp)
		}
	}
	after := quiesce(t, cp, up)
	t.Logf("after the last reload: %d goroutines (before: %d), %d fds %v (before: %d); upstream connections open right after the load: %d (before the reloads: %d)",
		after.goroutines, base.goroutines, after.fds, after.fdKinds, base.fds, afterUp, baseUp)
	if after.goroutines > base.goroutines+goroutineSlack {
		t.Errorf("goroutines grew from %d to %d over %d reloads", base.goroutines, after.goroutines, reloads)
	}
	if after.fds > base.fds+fdSlack {
		t.Errorf("fds grew from %d %v to %d %v over %d reloads", base.fds, base.fdKinds, after.fds, after.fdKinds, reloads)
	}
	if code := cp.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}

// reloadStrict reports whether listener hand-off resets are failures.
//
// On Linux, Caddy binds each config's listener as a new SO_REUSEPORT
// socket and closes the old config's socket once the new one listens (the
// listening socket's inode changes at every reload). The kernel resets the
// connections still waiting in the closed socket's accept queue, unless
// net.ipv4.tcp_migrate_req is 1 (Linux 5.14+), which migrates them to
// the new socket. A reload closes the load's keep-alive connections, so
// they all reconnect at that moment, and now and then some land in the old
// queue: "connection reset by peer" on a connection that never carried a
// response, which Go does not retry. That is Caddy's and the kernel's
// doing, not this plugin's: the test tolerates it (logged) unless
// APIKEY_RELOAD_STRICT=1. Measured on Linux 6.18, 2 cores, 50 reloads a
// run: with tcp_migrate_req=0, 5 runs of 18 had 1, 2, 7, 7 and 14 such
// errors; with 1, none in 8 (and one EOF, see reloadErrors).
//
// With socket activation there is one listening socket, which Caddy
// duplicates for each config and never closes, so nothing is lost and the
// test is always strict.
//
// The EOFs of golang/go#75591 (reloadErrors) are tolerated and logged in
// both modes, at most 3×loadConns: no configuration of Caddy avoids them.
func reloadStrict() (bool, string) {
	migrate := "unknown"
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req"); err == nil {
		migrate = strings.TrimSpace(string(b))
	}
	why := "net.ipv4.tcp_migrate_req=" + migrate
	return os.Getenv("APIKEY_RELOAD_STRICT") == "1", why
}

// inheritedSocket listens on 127.0.0.1:port and returns the socket as a
// file for a child to inherit.
func inheritedSocket(t *testing.T, port int) *os.File {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // the file is a duplicate; the socket stays open
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func describeWindows(ws [][2]time.Duration) string {
	var parts []string
	for i, w := range ws {
		parts = append(parts, fmt.Sprintf("#%d %v-%v", i+1, w[0].Round(time.Millisecond), w[1].Round(time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

// reload runs "caddy reload" of the built binary.
func reload(config string, p ports) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBin, "reload", "--config", config, "--adapter", "caddyfile", "--address", p.adminAddr())
	cmd.Env = childEnv(filepath.Dir(config))
	return cmd.CombinedOutput()
}

// quiesce closes the upstream's connections (from its side), lets the
// child settle, and measures it.
func quiesce(t *testing.T, cp *caddyProc, up *upstream) vitals {
	t.Helper()
	up.CloseClientConnections()
	time.Sleep(time.Second)
	return cp.settledVitals(t)
}

// loadError is one transport error of the load.
type loadError struct {
	at     time.Duration // from the start of the load
	reused bool          // the last attempt used a keep-alive connection
	tries  int
	err    error
}

func (e loadError) String() string {
	conn := "a new"
	if e.reused {
		conn = "a reused"
	}
	return fmt.Sprintf("at %v on %s connection (%d tries): %v", e.at.Round(time.Millisecond), conn, e.tries, e.err)
}

// loadStats counts what the load got.
type loadStats struct {
	mu       sync.Mutex
	requests int64
	ok       int64
	non200   map[string]int64 // "<status> <body>" -> count
	errs     []loadError      // transport errors (the first 1000)
	nErrs    int64
	retries  int64            // attempts Go's transport made again by itself
	newConns int64            // connections opened
	refusals map[string]int64 // expected refusals (soak only)
	routes   map[string]int64 // route tag of the upstream's answer
	other    []string         // the first non-200 answers
	duration time.Duration
}

// bad reports an error or a non-200 answer, other than the allowed errors.
func (s *loadStats) bad(allowed []loadError) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nErrs > int64(len(allowed)) || len(s.non200) > 0
}

// reloadErrors sorts out the transport errors on new connections during
// a reload (or within a second after it), which are the two that a reload
// can cause outside this plugin:
//
//   - resets: a connection reset, the listener hand-off of reloadStrict
//     (the kernel's doing; none with socket activation);
//   - dropped: an EOF on a new connection, as the server of the old config
//     reads the connection's first request after its Shutdown began and
//     closes it without an answer (net/http's conn.serve returns when
//     shuttingDown() after readRequest; golang/go#75591, open); Go's
//     transport does not retry it on a new connection. Measured: once in
//     23 runs of 50 reloads with socket activation, once in 8 with
//     Caddy's own listener and tcp_migrate_req=1.
func (s *loadStats) reloadErrors(windows [][2]time.Duration) (resets, dropped []loadError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.errs {
		// A failed dial is a new connection, whatever the attempt before
		// it used: Go's transport retries a request whose keep-alive
		// connection the old server closed on a new one, and that one's
		// connect can meet the hand-off reset (reused is the last attempt
		// that got a connection).
		var op *net.OpError
		fresh := !e.reused || errors.As(e.err, &op) && op.Op == "dial"
		if !fresh || !slices.ContainsFunc(windows, func(w [2]time.Duration) bool { return e.at >= w[0] && e.at <= w[1]+time.Second }) {
			continue
		}
		switch {
		case errors.Is(e.err, syscall.ECONNRESET):
			resets = append(resets, e)
		case errors.Is(e.err, io.EOF) || errors.Is(e.err, io.ErrUnexpectedEOF):
			dropped = append(dropped, e)
		}
	}
	return resets, dropped
}

func (s *loadStats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	rate := float64(s.requests) / s.duration.Seconds()
	str := fmt.Sprintf("%d requests in %v (%.0f/s): %d × 200, non-200 %v, %d transport errors, %d transparent retries, %d connections opened; routes %v",
		s.requests, s.duration.Round(time.Millisecond), rate, s.ok, s.non200, s.nErrs, s.retries, s.newConns, s.routes)
	if len(s.refusals) > 0 {
		str += fmt.Sprintf("; expected refusals %v", s.refusals)
	}
	if len(s.errs) > 0 {
		var parts []string
		for _, e := range s.errs[:min(len(s.errs), 8)] {
			parts = append(parts, e.String())
		}
		str += "; errors: " + strings.Join(parts, " | ")
	}
	if len(s.other) > 0 {
		str += "; first non-200: " + strings.Join(s.other, " | ")
	}
	return str
}

// load is a running load generator: one goroutine and one keep-alive
// connection per key, sending GETs to /contacts/<n> and /other/<n> in
// turn, which both reload configs answer with 200.
type load struct {
	stopped atomic.Bool
	wg      sync.WaitGroup
	st      *loadStats
	start   time.Time
	clients []*http.Client
}

func newLoadStats() *loadStats {
	return &loadStats{non200: map[string]int64{}, routes: map[string]int64{}, refusals: map[string]int64{}}
}

// startLoad starts one worker (and connection) per key.
func startLoad(site string, keys []string) *load {
	return startLoadInto(site, keys, newLoadStats())
}

// startLoadInto is startLoad counting into st.
func startLoadInto(site string, keys []string, st *loadStats) *load {
	l := &load{st: st, start: time.Now()}
	for _, key := range keys {
		c := newClient(1)
		l.clients = append(l.clients, c)
		l.wg.Add(1)
		go func(key string, c *http.Client) {
			defer l.wg.Done()
			for n := 0; !l.stopped.Load(); n++ {
				path := fmt.Sprintf("/contacts/%d", n)
				if n%2 == 1 {
					path = fmt.Sprintf("/other/%d", n)
				}
				l.one(c, site+path, key, "")
			}
		}(key, c)
	}
	return l
}

// one sends a GET with the key. With refusal empty, it must get a 200 from
// the upstream; otherwise it must be refused with 401 and that error code.
func (l *load) one(c *http.Client, url, key, refusal string) {
	st := l.st
	var gots int
	var fresh int64
	var lastReused bool
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		gots++
		lastReused = info.Reused
		if !info.Reused {
			fresh++
		}
	}}
	ctx, cancel := context.WithTimeout(httptrace.WithClientTrace(context.Background(), trace), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("X-API-Key", key)
	res, err := c.Do(req)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	at := time.Since(l.start)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.requests++
	st.newConns += fresh
	if gots > 1 {
		st.retries += int64(gots - 1)
	}
	unexpected := func(what string) {
		if len(what) > 100 {
			what = what[:100]
		}
		st.non200[what]++
		if len(st.other) < 5 {
			st.other = append(st.other, fmt.Sprintf("at %v %s: %s", at.Round(time.Millisecond), url, what))
		}
	}
	switch {
	case err != nil:
		st.nErrs++
		if len(st.errs) < 1000 {
			st.errs = append(st.errs, loadError{at: at, reused: lastReused, tries: gots, err: err})
		}
	case refusal != "":
		want := fmt.Sprintf(`"error":"%s"`, refusal)
		if res.StatusCode != http.StatusUnauthorized || !strings.Contains(strings.ReplaceAll(string(body), " ", ""), want) {
			unexpected(fmt.Sprintf("%d %s (want 401 %s)", res.StatusCode, strings.TrimSpace(string(body)), refusal))
			return
		}
		st.refusals[refusal]++
	case res.StatusCode != http.StatusOK:
		unexpected(fmt.Sprintf("%d %s", res.StatusCode, strings.TrimSpace(string(body))))
	case !strings.HasPrefix(string(body), "route="):
		unexpected(fmt.Sprintf("200 without the upstream's answer: %q", body))
	default:
		st.ok++
		st.routes[strings.TrimPrefix(string(body), "route=")]++
	}
}

// stop stops the workers, waits for their last requests, closes their
// connections and returns the counts.
func (l *load) stop() *loadStats {
	l.stopped.Store(true)
	l.wg.Wait()
	for _, c := range l.clients {
		c.CloseIdleConnections()
	}
	l.st.mu.Lock()
	l.st.duration += time.Since(l.start)
	l.st.mu.Unlock()
	return l.st
}
