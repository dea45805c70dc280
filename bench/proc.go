package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Every child process (Caddy, wrk) is started in its own process group
// with SIGKILL as its parent-death signal, and registered here, so that
// killAll can end them when the harness fails or is interrupted.
var (
	childMu  sync.Mutex
	children = map[int]*exec.Cmd{}
)

func register(cmd *exec.Cmd) {
	childMu.Lock()
	children[cmd.Process.Pid] = cmd
	childMu.Unlock()
}

func unregister(cmd *exec.Cmd) {
	childMu.Lock()
	delete(children, cmd.Process.Pid)
	childMu.Unlock()
}

// killAll kills the process group of every child still registered.
func killAll() {
	childMu.Lock()
	defer childMu.Unlock()
	for pid := range children {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		delete(children, pid)
	}
}

func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// childEnv is the environment of a child process without proxy variables
// (all traffic stays on 127.0.0.1) and with extra settings.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// runCmd runs a short command, showing its output on failure.
func runCmd(ctx context.Context, dir string, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = env
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return nil
}

// outputCmd runs a short command and returns its standard output.
func outputCmd(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out) + stderr.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// process is a long-running child (a Caddy).
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	// started is taken just before the process is started.
	started time.Time
	done    chan struct{}
	err     error // after done
}

func startProcess(name, logPath string, env []string, bin string, args ...string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childAttrs()
	started := time.Now()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	register(cmd)
	p := &process{name: name, cmd: cmd, log: logPath, started: started, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// alive returns an error if the process has exited.
func (p *process) alive() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v); see %s:\n%s", p.name, p.err, p.log, tail(p.log, 20))
	default:
		return nil
	}
}

// stop asks the process to shut down (SIGINT: Caddy closes the key store
// cleanly) and kills it if it has not exited after 20 s. It is safe to
// call more than once.
func (p *process) stop() error {
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		unregister(p.cmd)
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
		unregister(p.cmd)
		return fmt.Errorf("%s did not stop within 20 s of SIGINT; killed", p.name)
	}
	unregister(p.cmd)
	// Anything left in its group (nothing, for Caddy).
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	return nil
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// memUse is a process's memory from /proc/<pid>/status, in bytes: the
// resident set (VmRSS), its peak (VmHWM), and the resident set split into
// anonymous memory (Go heap, stacks) and file-backed pages (Badger's
// memory-mapped tables and logs: page cache the kernel can take back).
type memUse struct {
	rss, hwm, anon, file, shmem int64
}

func readRSS(pid int) (memUse, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memUse{}, err
	}
	return parseProcStatus(string(b))
}

func parseProcStatus(s string) (memUse, error) {
	var m memUse
	fields := map[string]*int64{"VmRSS": &m.rss, "VmHWM": &m.hwm, "RssAnon": &m.anon, "RssFile": &m.file, "RssShmem": &m.shmem}
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		p := fields[k]
		if !ok || p == nil {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("unexpected %s line %q", k, line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, err
		}
		*p = n << 10
	}
	if m.rss == 0 {
		return m, errors.New("no VmRSS in /proc/<pid>/status")
	}
	return m, nil
}

// ports are the loopback ports the harness uses.
type ports struct {
	respond, apikeyRespond, proxy, apikeyProxy, upstream int
	headersProxy                                         int // reference of the paired probe only
	// The peers: basic_auth + respond, forward_auth + respond, and the
	// site forward_auth asks (200 for the known token, 401 otherwise).
	basicAuth, forwardAuth, authCheck int
	// floor: bench_floor + respond, the headers of apikey's contract
	// with no key check (bench/floor).
	floor int
}

func newPorts(base int) ports {
	return ports{respond: base, apikeyRespond: base + 1, proxy: base + 2, apikeyProxy: base + 3, headersProxy: base + 4,
		basicAuth: base + 5, forwardAuth: base + 6, authCheck: base + 7, floor: base + 8, upstream: base + 9}
}

func (p ports) url(port int) string { return fmt.Sprintf("http://127.0.0.1:%d/", port) }

// checkFree fails if a port the harness needs is taken (by a previous run
// that was not cleaned up, or by something else).
func (p ports) checkFree(admin string) error {
	addrs := []string{admin}
	for _, port := range []int{p.respond, p.apikeyRespond, p.proxy, p.apikeyProxy, p.headersProxy, p.basicAuth, p.forwardAuth, p.authCheck, p.floor, p.upstream} {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", port))
	}
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("port %s is not free (%v): is another run still going? choose others with -port and -admin", a, err)
		}
		l.Close()
	}
	return nil
}

// ensureWrk finds wrk, installing Debian's package if it is missing.
func ensureWrk(ctx context.Context) (string, error) {
	if p, err := exec.LookPath("wrk"); err == nil {
		return p, nil
	}
	logf("wrk not found: installing it with apt-get (Debian's wrk package)")
	sudo := []string{}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("sudo"); err != nil {
			return "", errors.New("wrk is not installed and this is not root (no sudo): install it with apt-get install -y wrk")
		}
		sudo = []string{"sudo", "-n"}
	}
	for _, args := range [][]string{{"apt-get", "update"}, {"apt-get", "install", "-y", "wrk"}} {
		full := append(append([]string(nil), sudo...), args...)
		// apt keeps the environment as it is (proxy settings included).
		env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if err := runCmd(ctx, "", env, full[0], full[1:]...); err != nil {
			return "", fmt.Errorf("installing wrk failed: %w", err)
		}
	}
	p, err := exec.LookPath("wrk")
	if err != nil {
		return "", errors.New("apt-get install -y wrk succeeded but wrk is not on PATH")
	}
	return p, nil
}
