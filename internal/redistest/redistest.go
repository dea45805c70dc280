// Package redistest starts real Redis servers for tests: Debian's
// redis-server from PATH, on a free loopback port, in a temporary
// directory, stopped when the test ends. Without redis-server on PATH a
// test fails under CI=true (CI must install it: .ci/install) and is
// skipped elsewhere, saying how to install it.
package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is a running redis-server.
type Server struct {
	t    testing.TB
	Addr string
	Dir  string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts redis-server with persistence off unless args say
// otherwise (args are redis-server options, as "--appendonly", "yes").
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is not installed (CI installs it with .ci/install): %v", err)
		}
		t.Skip("redis-server is not installed: run `bash .ci/install` (Debian's redis-server package)")
	}
	s := &Server{t: t, Dir: t.TempDir(), args: args}
	s.Addr = freeAddr(t)
	s.start(path)
	t.Cleanup(s.stop)
	return s
}

var (
	sharedOnce sync.Once
	shared     *Server
)

// Shared starts one server for the whole test binary (the first caller's
// t reports a failure to start it) and leaves it running until the binary
// exits (the kernel kills it then: Pdeathsig). Tests that share it keep
// apart by key namespace.
func Shared(t testing.TB) *Server {
	t.Helper()
	sharedOnce.Do(func() {
		path, err := exec.LookPath("redis-server")
		if err != nil {
			return
		}
		dir, err := os.MkdirTemp("", "redistest-")
		if err != nil {
			t.Fatal(err)
		}
		shared = &Server{t: t, Dir: dir}
		shared.Addr = freeAddr(t)
		shared.start(path)
	})
	if shared == nil {
		Start(t) // fails or skips as Start does
	}
	return shared
}

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

func (s *Server) start(path string) {
	s.t.Helper()
	host, port, _ := net.SplitHostPort(s.Addr)
	args := []string{"--port", port, "--bind", host, "--dir", s.Dir, "--save", "", "--appendonly", "no", "--protected-mode", "no", "--logfile", filepath.Join(s.Dir, "redis.log")}
	args = append(args, s.args...)
	s.cmd = exec.Command(path, args...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.cmd, s.done)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s.ping() {
			return
		}
		select {
		case <-s.done:
			log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
			s.t.Fatalf("redis-server exited at start: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server did not answer on %s within 10 s", s.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping sends PING over a plain connection.
func (s *Server) ping() bool {
	c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// List sends one command and returns its answer flattened: every bulk
// or simple string of it, nested arrays included, in order.
func (s *Server) List(args ...string) []string {
	s.t.Helper()
	c, r := s.send(args)
	defer c.Close()
	var out []string
	var read func() error
	read = func() error {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return fmt.Errorf("an empty reply line")
		}
		switch line[0] {
		case '*', '%', '~':
			n, _ := strconv.Atoi(line[1:])
			if line[0] == '%' {
				n *= 2
			}
			for range max(n, 0) {
				if err := read(); err != nil {
					return err
				}
			}
		case '$':
			n, _ := strconv.Atoi(line[1:])
			if n < 0 {
				return nil
			}
			buf := make([]byte, n+2)
			if _, err := io.ReadFull(r, buf); err != nil {
				return err
			}
			out = append(out, string(buf[:n]))
		case '-':
			return fmt.Errorf("%s", line[1:])
		default:
			out = append(out, line[1:])
		}
		return nil
	}
	if err := read(); err != nil {
		s.t.Fatalf("redis %v: %v", args, err)
	}
	return out
}

// send writes one command on a new connection.
func (s *Server) send(args []string) (net.Conn, *bufio.Reader) {
	s.t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		s.t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		c.Close()
		s.t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// Do sends one command over a plain connection and returns its answer as
// one string (the first line, or the bulk string).
func (s *Server) Do(args ...string) string {
	s.t.Helper()
	c, r := s.send(args)
	defer c.Close()
	line, err := r.ReadString('\n')
	if err != nil {
		s.t.Fatal(err)
	}
	if strings.HasPrefix(line, "$") {
		n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
		if n < 0 {
			return ""
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			s.t.Fatal(err)
		}
		return string(buf[:n])
	}
	return strings.TrimPrefix(strings.TrimSpace(line), "+")
}

// Signal sends sig to the server (SIGSTOP, SIGCONT, SIGKILL).
func (s *Server) Signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
	if sig == syscall.SIGKILL {
		<-s.done
	}
}

// Restart starts the server again on the same address and directory
// (after a SIGKILL, or to restart it).
func (s *Server) Restart() {
	s.t.Helper()
	select {
	case <-s.done:
	default:
		s.Signal(syscall.SIGKILL)
	}
	path, _ := exec.LookPath("redis-server")
	s.start(path)
}

func (s *Server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT)
	_ = s.cmd.Process.Kill()
	<-s.done
}

// freeAddr finds a free loopback port.
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
