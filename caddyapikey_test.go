package caddyapikey_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestBuildWithRootPackage builds testdata/buildcheck, a Caddy main
// package that imports this module's root package and nothing else of it
// (as xcaddy build --with github.com/caddy-apikey/caddy-apikey does), and
// checks with the binary that every module of the plugin is registered and
// that its caddy apikey command runs, points to the plugin's docs and
// refuses an unknown subcommand.
func TestBuildWithRootPackage(t *testing.T) {
	goTool := "go"
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		goTool = p
	}
	bin := filepath.Join(t.TempDir(), "caddy")
	build := exec.Command(goTool, "build", "-o", bin, "./testdata/buildcheck")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./testdata/buildcheck: %v\n%s", err, out)
	}

	out, err := exec.Command(bin, "list-modules").Output()
	if err != nil {
		t.Fatalf("list-modules: %v", err)
	}
	modules := map[string]bool{}
	for _, m := range strings.Fields(string(out)) {
		modules[m] = true
	}
	for _, m := range []string{"admin.api.apikey", "apikey", "http.handlers.apikey", "http.handlers.apikey_admin"} {
		if !modules[m] {
			t.Errorf("module %s is not registered; list-modules:\n%s", m, out)
		}
	}

	help, err := exec.Command(bin, "apikey", "--help").Output()
	if err != nil {
		t.Fatalf("apikey --help: %v", err)
	}
	const docs = "https://github.com/caddy-apikey/caddy-apikey/blob/main/docs/admin-api.md#5-the-caddy-apikey-cli"
	if !bytes.Contains(help, []byte(docs)) || bytes.Contains(help, []byte("caddyserver.com/docs/command-line")) {
		t.Errorf("apikey --help does not point to %s (only):\n%s", docs, help)
	}

	cmd := exec.Command(bin, "apikey", "rotate", "abc")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 || !strings.Contains(stderr.String(), `unknown command "rotate" for "caddy apikey"`) {
		t.Errorf("apikey rotate abc: %v, stderr %q; want a non-zero exit and the unknown command", err, stderr.String())
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
