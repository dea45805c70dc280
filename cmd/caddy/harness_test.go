package main

// Tests of the Caddy build of this directory, run as a child process: the
// binary is built once per test run (TestMain: go build -o <tmp>/caddy
// github.com/caddy-apikey/caddy-apikey/cmd/caddy), started with
// "run --config <file> --adapter caddyfile" on a storage directory of the
// test (t.TempDir), and killed when the test ends. The upstream is an
// httptest server of the test process; all traffic is on 127.0.0.1.
//
//	TestCrashDurability      SIGKILL at a random moment while admin mutations run; every acknowledged one survives
//	TestGracefulStopFlushes  SIGTERM writes last-used times and quota counts
//	TestReloadsUnderLoad     50 caddy reloads under load: no failed request, no goroutine or fd growth
//	TestSoak                 (long suite) 10 minutes of load and key churn: RSS and goroutines flat
//
// Ports (none used by another test of the module: the in-process
// integration tests use 2999 and 9080, the benchmark 18001 to 18004,
// 18010 and 18090):
//
//	test                       admin   site
//	TestCrashDurability        28011   18011
//	TestGracefulStopFlushes    28012   18012
//	TestReloadsUnderLoad       28013   18013
//	TestSoak                   28014   18014
//
// Default run (CI): go test -race ./cmd/caddy/ (3 crash rounds).
// Long suite: the build tag "long" (suite_long_test.go), with a timeout
// above the soak's 10 minutes: go test -tags long -timeout 60m ./...
// (20 crash rounds, the soak, and the reload test waits for Caddy's
// keepalive timeout). -short skips these tests and does not build the
// binary.
//
// Environment: APIKEY_SOAK=<duration> sets the soak's length (default
// 10m, at least 2m); APIKEY_RELOAD_STRICT=1 makes every transport error
// of the reload test a failure (see reloadStrict); APIKEY_CHILD_RACE=1
// builds the child with -race; APIKEY_TEST_LOGDIR=<dir> keeps each test's
// Caddy log there.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// caddyBin is the Caddy binary built by TestMain.
var caddyBin string

func TestMain(m *testing.M) {
	if !testingShort() {
		dir, err := os.MkdirTemp("", "apikey-caddy-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		caddyBin = filepath.Join(dir, "caddy")
		if err := buildCaddy(caddyBin); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// testingShort reports -short before flag parsing by testing.M.Run: the
// child-process tests are skipped in -short mode, and then the binary is
// not built.
func testingShort() bool {
	for _, a := range os.Args[1:] {
		if a == "-test.short" || a == "-test.short=true" || a == "--test.short" {
			return true
		}
	}
	return false
}

func buildCaddy(out string) error {
	goTool := "go"
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		goTool = p
	}
	args := []string{"build", "-o", out}
	if os.Getenv("APIKEY_CHILD_RACE") != "" {
		args = append(args, "-race")
	}
	args = append(args, "github.com/caddy-apikey/caddy-apikey/cmd/caddy")
	cmd := exec.Command(goTool, args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building caddy: %v\n%s", err, buf.Bytes())
	}
	fmt.Fprintf(os.Stderr, "cmd/caddy tests: built %s in %v\n", out, time.Since(start).Round(time.Millisecond))
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func skipIfShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the Caddy binary as a child process; skipped in -short mode")
	}
	if runtime.GOOS != "linux" {
		t.Skip("uses /proc and POSIX signals of a Linux child")
	}
}

// ports of one test: the admin endpoint and the site.
type ports struct {
	admin, site int
}

func (p ports) adminAddr() string { return fmt.Sprintf("127.0.0.1:%d", p.admin) }
func (p ports) siteURL() string   { return fmt.Sprintf("http://127.0.0.1:%d", p.site) }

// requireFree fails the test at once if a port is taken: a stranger on one
// of our ports would otherwise make confusing failures.
func (p ports) requireFree(t *testing.T) {
	t.Helper()
	for _, port := range []int{p.admin, p.site} {
		if port == 0 {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("port %d is not free: %v", port, err)
		}
		l.Close()
	}
}

// writeConfig fills a Caddyfile template of testdata (placeholders
// {{ADMIN}}, {{PORT}}, {{STORAGE}}, {{UPSTREAM}} and extra ones) and writes
// it to dir.
func writeConfig(t *testing.T, dir, tmpl string, p ports, storage, upstream string, extra ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", tmpl))
	if err != nil {
		t.Fatal(err)
	}
	pairs := []string{
		"{{ADMIN}}", p.adminAddr(),
		"{{PORT}}", strconv.Itoa(p.site),
		"{{STORAGE}}", storage,
		"{{UPSTREAM}}", upstream,
	}
	pairs = append(pairs, extra...)
	text := strings.NewReplacer(pairs...).Replace(string(b))
	if i := strings.Index(text, "{{"); i >= 0 {
		t.Fatalf("%s: unfilled placeholder near %q", tmpl, text[i:min(len(text), i+20)])
	}
	path := filepath.Join(dir, strings.TrimSuffix(tmpl, ".tmpl"))
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// caddyProc is one run of the Caddy binary.
type caddyProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	p       ports
	done    chan struct{}
	waitErr error
	logPath string
	started time.Time
}

// childEnv keeps the child's data and config directories inside dir.
func childEnv(dir string) []string {
	return append(os.Environ(),
		"XDG_DATA_HOME="+filepath.Join(dir, "xdg-data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "xdg-config"),
	)
}

// startCaddy starts the binary on config and waits until the admin
// endpoint, the key store and the site answer. dir holds the log
// (caddy.log, appended to by every run) and the XDG directories. sockets
// are inherited by the child as fds 3, 4, ... (socket activation: the
// config binds them with "bind fd/3"); with sockets, the site's port is
// one of them and is not checked for being free.
func startCaddy(t *testing.T, dir, config string, p ports, sockets ...*os.File) *caddyProc {
	t.Helper()
	if len(sockets) == 0 {
		p.requireFree(t)
	} else {
		ports{admin: p.admin}.requireFree(t)
	}
	logPath := filepath.Join(dir, "caddy.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logf, "==== %s: starting %s\n", time.Now().Format(time.RFC3339Nano), config)
	cmd := exec.Command(caddyBin, "run", "--config", config, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = childEnv(dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = sockets
	cp := &caddyProc{t: t, cmd: cmd, p: p, done: make(chan struct{}), logPath: logPath, started: time.Now()}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	go func() {
		cp.waitErr = cmd.Wait()
		logf.Close()
		close(cp.done)
	}()
	t.Cleanup(func() {
		cp.kill()
		if keep := os.Getenv("APIKEY_TEST_LOGDIR"); keep != "" {
			name := strings.NewReplacer("/", "_").Replace(t.Name()) + ".caddy.log"
			if b, err := os.ReadFile(logPath); err == nil {
				_ = os.WriteFile(filepath.Join(keep, name), b, 0o644)
			}
		}
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", logPath, tailFile(logPath, 40))
		}
	})
	cp.waitReady(30 * time.Second)
	return cp
}

func (cp *caddyProc) pid() int { return cp.cmd.Process.Pid }

func (cp *caddyProc) exited() bool {
	select {
	case <-cp.done:
		return true
	default:
		return false
	}
}

// waitReady polls until the key store answers on the admin endpoint and
// the site accepts connections.
func (cp *caddyProc) waitReady(timeout time.Duration) {
	cp.t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		if cp.exited() {
			cp.t.Fatalf("caddy exited while starting (%v); log:\n%s", cp.waitErr, tailFile(cp.logPath, 40))
		}
		if time.Now().After(deadline) {
			cp.t.Fatalf("caddy not ready after %v: %s; log:\n%s", timeout, last, tailFile(cp.logPath, 40))
		}
		res, err := c.Get("http://" + cp.p.adminAddr() + "/apikey/keys?limit=1")
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", cp.p.site), time.Second)
				if err == nil {
					conn.Close()
					return
				}
				last = err.Error()
			} else {
				last = "admin: " + res.Status
			}
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL (if the process still runs) and waits for it.
func (cp *caddyProc) kill() {
	if cp.exited() {
		return
	}
	_ = cp.cmd.Process.Signal(syscall.SIGKILL)
	<-cp.done
}

// stop sends sig and waits up to timeout for the exit; it returns the
// exit code (-1 for a signal death).
func (cp *caddyProc) stop(sig syscall.Signal, timeout time.Duration) int {
	cp.t.Helper()
	if err := cp.cmd.Process.Signal(sig); err != nil {
		cp.t.Fatalf("signal %v: %v", sig, err)
	}
	select {
	case <-cp.done:
	case <-time.After(timeout):
		cp.kill()
		cp.t.Fatalf("caddy did not exit within %v of %v; log:\n%s", timeout, sig, tailFile(cp.logPath, 40))
	}
	return cp.cmd.ProcessState.ExitCode()
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// --- the child's vital signs ---

// goroutines reads the child's goroutine count from its admin endpoint
// (the first line of /debug/pprof/goroutine?debug=1 is "goroutine
// profile: total N").
func (cp *caddyProc) goroutines() (int, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	res, err := c.Get("http://" + cp.p.adminAddr() + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, res.Body)
	const pfx = "goroutine profile: total "
	if !strings.HasPrefix(line, pfx) {
		return 0, fmt.Errorf("unexpected goroutine profile line %q", line)
	}
	return strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, pfx)))
}

// fds lists the child's open file descriptors by what they point to
// (socket:[…] collapsed to "socket", pipes to "pipe", anon inodes kept,
// files by path).
func (cp *caddyProc) fds() (map[string]int, int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", cp.pid())
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, err
	}
	kinds := map[string]int{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		switch {
		case strings.HasPrefix(target, "socket:"):
			target = "socket"
		case strings.HasPrefix(target, "pipe:"):
			target = "pipe"
		case strings.HasPrefix(target, "/"):
			target = filepath.Base(target)
		}
		kinds[target]++
	}
	return kinds, len(ents), nil
}

// memStatus reads VmRSS, RssAnon and RssFile (KiB) from /proc/<pid>/status.
func (cp *caddyProc) memStatus() (rss, anon, file int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cp.pid()))
	if err != nil {
		return 0, 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "RssAnon:":
			anon = v
		case "RssFile:":
			file = v
		}
	}
	if rss == 0 {
		return 0, 0, 0, errors.New("no VmRSS in /proc status")
	}
	return rss, anon, file, nil
}

// vitals is one measurement of the child.
type vitals struct {
	goroutines int
	fds        int
	fdKinds    map[string]int
}

// settledVitals measures goroutines and fds several times and keeps the
// smallest goroutine count and fd count: transient goroutines (the
// measuring request itself, a ticker firing) are not growth.
func (cp *caddyProc) settledVitals(t *testing.T) vitals {
	t.Helper()
	best := vitals{goroutines: -1, fds: -1}
	for i := 0; i < 5; i++ {
		g, err := cp.goroutines()
		if err != nil {
			t.Fatalf("goroutines: %v", err)
		}
		kinds, n, err := cp.fds()
		if err != nil {
			t.Fatalf("fds: %v", err)
		}
		if best.goroutines < 0 || g < best.goroutines {
			best.goroutines = g
		}
		if best.fds < 0 || n < best.fds {
			best.fds, best.fdKinds = n, kinds
		}
		time.Sleep(200 * time.Millisecond)
	}
	return best
}

// --- HTTP helpers ---

// newClient is a keep-alive client of its own (one transport, so one
// connection pool), bounded in time.
func newClient(conns int) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

// admin is a client of the child's admin API under /apikey.
type admin struct {
	base string
	c    *http.Client
}

func newAdmin(p ports) *admin {
	return &admin{base: "http://" + p.adminAddr() + "/apikey", c: newClient(4)}
}

// call sends a request; err is a transport error (the outcome is then
// unknown), otherwise the status and the decoded JSON body.
func (a *admin) call(ctx context.Context, method, path, body string) (int, map[string]any, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := a.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, nil, err // the status alone is not an acknowledgement
	}
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			return 0, nil, fmt.Errorf("%s %s: status %d, bad JSON %q: %v", method, path, res.StatusCode, raw, err)
		}
	}
	return res.StatusCode, out, nil
}

// must calls and requires the status.
func (a *admin) must(t testing.TB, method, path, body string, want int) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	status, out, err := a.call(ctx, method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if status != want {
		t.Fatalf("%s %s: status %d, want %d: %v", method, path, status, want, out)
	}
	return out
}

// createKey creates a key and returns its id and string.
func (a *admin) createKey(t testing.TB, body string) (id, key string) {
	t.Helper()
	out := a.must(t, "POST", "/keys", body, http.StatusCreated)
	id, _ = out["id"].(string)
	key, _ = out["key"].(string)
	if id == "" || key == "" {
		t.Fatalf("create: no id or key in %v", out)
	}
	return id, key
}

// listIDs pages through GET /keys and returns every id.
func (a *admin) listIDs(t testing.TB) map[string]map[string]any {
	t.Helper()
	ids := map[string]map[string]any{}
	cursor := ""
	for {
		path := "/keys?limit=1000"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		out := a.must(t, "GET", path, "", http.StatusOK)
		keys, _ := out["keys"].([]any)
		for _, k := range keys {
			rec, _ := k.(map[string]any)
			id, _ := rec["id"].(string)
			ids[id] = rec
		}
		next, _ := out["next_cursor"].(string)
		if next == "" {
			return ids
		}
		cursor = next
	}
}

// proxyResult sends GET path with the key and returns the status and, for
// a refusal, its error code.
func proxyResult(ctx context.Context, c *http.Client, url, key string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("X-API-Key", key)
	res, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, "", err
	}
	if res.StatusCode == http.StatusOK {
		return res.StatusCode, "", nil
	}
	var body struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(raw, &body)
	return res.StatusCode, body.Error, nil
}

// --- the upstream ---

// upstream is the service behind reverse_proxy: an httptest server of the
// test process that answers 200 with the route tag the proxy set, and
// counts its open connections.
type upstream struct {
	*httptest.Server
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func newUpstream(t *testing.T) *upstream {
	up := &upstream{conns: map[net.Conn]bool{}}
	up.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key-Id") == "" {
			http.Error(w, "no identity", http.StatusTeapot) // the proxy let something through unverified
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "route="+r.Header.Get("X-Route"))
	}))
	up.Config.ConnState = func(c net.Conn, s http.ConnState) {
		up.mu.Lock()
		defer up.mu.Unlock()
		switch s {
		case http.StateNew:
			up.conns[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(up.conns, c)
		}
	}
	up.Start()
	t.Cleanup(up.Close)
	return up
}

// openConns is the number of connections Caddy holds open to the upstream.
func (up *upstream) openConns() int {
	up.mu.Lock()
	defer up.mu.Unlock()
	return len(up.conns)
}

// mappedRSS sums the resident pages (KiB, from /proc/<pid>/smaps) of the
// child's mappings of files under dir, by file extension: Badger maps its
// memtable log (.mem) and its tables (.sst), whose touched pages count in
// VmRSS.
func (cp *caddyProc) mappedRSS(dir string) (map[string]int64, int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", cp.pid()))
	if err != nil {
		return nil, 0, err
	}
	byExt := map[string]int64{}
	var total int64
	ext := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if !strings.HasSuffix(f[0], ":") {
			// a mapping's header: "start-end perms offset dev inode [path]"
			ext = ""
			if len(f) >= 6 && strings.HasPrefix(f[5], dir+string(filepath.Separator)) {
				ext = filepath.Ext(f[5])
			}
			continue
		}
		if ext != "" && f[0] == "Rss:" && len(f) >= 2 {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			byExt[ext] += v
			total += v
		}
	}
	return byExt, total, nil
}

// goMem is the child's runtime.MemStats after a forced GC, in KiB.
type goMem struct {
	heapAlloc, heapInuse, heapIdle, heapReleased int64
}

// held is the free heap the Go runtime keeps without returning it to the
// OS yet (HeapIdle - HeapReleased): resident, but not in use.
func (m goMem) held() int64 { return m.heapIdle - m.heapReleased }

// heapAfterGC forces a garbage collection in the child (the heap profile's
// gc=1) and returns its runtime.MemStats. With saveTo, the heap profile is
// saved there too.
func (cp *caddyProc) heapAfterGC(saveTo string) (goMem, error) {
	var m goMem
	c := &http.Client{Timeout: 30 * time.Second}
	defer c.CloseIdleConnections()
	if saveTo != "" {
		if res, err := c.Get("http://" + cp.p.adminAddr() + "/debug/pprof/heap?gc=1"); err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			_ = os.WriteFile(saveTo, b, 0o644)
		}
	}
	res, err := c.Get("http://" + cp.p.adminAddr() + "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return m, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return m, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(strings.TrimPrefix(line, "# "))
		if len(f) != 3 || f[1] != "=" {
			continue
		}
		v, _ := strconv.ParseInt(f[2], 10, 64)
		switch f[0] {
		case "HeapAlloc":
			m.heapAlloc = v / 1024
		case "HeapInuse":
			m.heapInuse = v / 1024
		case "HeapIdle":
			m.heapIdle = v / 1024
		case "HeapReleased":
			m.heapReleased = v / 1024
		}
	}
	if m.heapAlloc == 0 {
		return m, errors.New("no HeapAlloc in the heap profile")
	}
	return m, nil
}
