package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBrowserUICommand opens the operator's page as an operator would:
// caddy apikey ui, then its URL typed into the browser (no referrer). The
// admin endpoint itself refuses that navigation; the command's proxy
// serves the page, which works (it creates a key), and refuses other
// hosts and other paths. Ports: admin 28203, site 18203, the page 18204.
func TestBrowserUICommand(t *testing.T) {
	skipIfShort(t)
	b := newBrowser(t)
	p := ports{admin: 28203, site: 18203}
	a := startUICaddy(t, p)
	a.must(t, "POST", "/accounts", `{"id":"acme","name":"Acme Corp"}`, http.StatusCreated)

	cmd := exec.Command(caddyBin, "apikey", "ui", "--address", p.adminAddr(), "--listen", "127.0.0.1:18204")
	cmd.Env = childEnv(t.TempDir())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := bufio.NewScanner(stdout)
	first := make(chan string, 1)
	go func() {
		if lines.Scan() {
			first <- lines.Text()
		}
		close(first)
		_, _ = io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-exited:
			return err
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			return <-exited
		}
	}
	t.Cleanup(func() { _ = stop() })
	var line string
	select {
	case line = <-first:
	case <-time.After(20 * time.Second):
		t.Fatalf("caddy apikey ui printed nothing (stderr: %s)", stderr.String())
	}
	const want = "http://127.0.0.1:18204/apikey/ui/"
	if line != "The API Keys page: "+want {
		t.Fatalf("caddy apikey ui printed %q (stderr: %s), want its URL %s", line, stderr.String(), want)
	}

	t.Run("the admin endpoint refuses a typed URL", func(t *testing.T) {
		b.use(t)
		b.navigate("http://" + p.adminAddr() + "/apikey/ui/")
		if body := b.text("body"); !strings.Contains(body, "not allowed") {
			t.Errorf("the admin endpoint answered a typed URL with %q; if Caddy now serves it, docs/admin-ui.md should say so", body)
		}
	})

	t.Run("typed URL", func(t *testing.T) {
		b.use(t)
		b.navigate(want)
		b.waitFor("the operator's accounts", `[...document.querySelectorAll('#accounts tr')].some((tr) => tr.cells[0].textContent === 'Acme Corp (acme)' && tr.cells[1].textContent === 'open')`)
		var styled bool
		b.eval(`getComputedStyle(document.querySelector('header.bar')).display === 'flex'`, &styled)
		if !styled {
			t.Error("the page's stylesheet did not load")
		}
		b.fill("Account", "acme")
		b.click("Create API key")
		b.fill("Name", "Through the proxy")
		b.check("contacts:read", true)
		b.click("Create")
		b.waitFor("the key dialog", `document.getElementById('shown').open && document.getElementById('shown-key').textContent.startsWith('ak_')`)
		b.click("Copy")
		b.click("I've saved my key – Close")
		b.waitFor("the new row", `[...document.querySelectorAll('#keys tbody tr[data-id]')].some((tr) => tr.cells[0].querySelector('button').textContent === 'Through the proxy')`)
		found := false
		for _, k := range a.listIDs(t) {
			found = found || k["name"] == "Through the proxy" && k["account"] == "acme"
		}
		if !found {
			t.Error("the key created through the proxy is not in the store")
		}
	})

	t.Run("refusals", func(t *testing.T) {
		c := newClient(1)
		for _, tc := range []struct {
			host, path string
			status     int
		}{
			{"evil.example:18204", "/apikey/ui/", http.StatusForbidden}, // DNS rebinding
			{"127.0.0.1:18204", "/config/", http.StatusNotFound},
			{"127.0.0.1:18204", "/apikey/keys", http.StatusNotFound},
			{"localhost:18204", "/apikey/ui/", http.StatusOK},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://127.0.0.1:18204"+tc.path, nil)
			req.Host = tc.host
			res, err := c.Do(req)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != tc.status {
				t.Errorf("GET %s Host %s: %d, want %d", tc.path, tc.host, res.StatusCode, tc.status)
			}
		}
	})

	if err := stop(); err != nil {
		t.Errorf("caddy apikey ui on SIGINT: %v (stderr: %s)", err, stderr.String())
	}
}
