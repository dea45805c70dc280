//go:build linux

package caddymodule_test

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestTraceAttributes: with Caddy's tracing on, a decision's span holds
// the outcome, and the key id and account when the decision names a key,
// never the key. (Spans are written by OpenTelemetry's console exporter
// to the process's standard output, file descriptor 1, which the test
// points to a pipe meanwhile.)
func TestTraceAttributes(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	read := make(chan struct{})
	go func() { _, _ = io.Copy(&out, rd); close(read) }()
	saved, err := syscall.Dup(1)
	if err != nil {
		t.Fatal(err)
	}
	restore := sync.OnceFunc(func() { _ = syscall.Dup3(saved, 1, 0); syscall.Close(saved) })
	defer restore()
	if err := syscall.Dup3(int(wr.Fd()), 1, 0); err != nil {
		t.Fatal(err)
	}
	e := startWith(t, strings.Replace(siteConfig, "http://localhost:9080 {\n", "http://localhost:9080 {\n\ttracing\n", 1))
	e.admin("POST", "/accounts", `{"id": "acme"}`, http.StatusCreated)
	id, key := e.createKey(`{"name": "traced", "account": "acme", "scopes": ["contacts:read"]}`)
	if res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", key), ""); res.StatusCode != 200 {
		t.Fatalf("traced request: %d %v", res.StatusCode, body)
	}
	if res, body := e.do("GET", siteURL+"/contacts", nil, ""); res.StatusCode != 401 {
		t.Fatalf("untraced key: %d %v", res.StatusCode, body)
	}
	// Unloading the tracing config shuts the tracer provider down, which
	// writes the spans.
	e.unload()
	restore()
	wr.Close()
	<-read
	spans := out.String()
	for _, want := range []string{
		`{"Key":"apikey.outcome","Value":{"Type":"STRING","Value":"ok"}}`,
		`{"Key":"apikey.key_id","Value":{"Type":"STRING","Value":"` + id + `"}}`,
		`{"Key":"apikey.account","Value":{"Type":"STRING","Value":"acme"}}`,
		`{"Key":"apikey.outcome","Value":{"Type":"STRING","Value":"missing_key"}}`,
	} {
		if !strings.Contains(spans, want) {
			t.Errorf("no span attribute %s in the spans (%d bytes):\n%.1500s", want, len(spans), spans)
		}
	}
	if strings.Contains(spans, key) {
		t.Error("a span holds the key")
	}
}
