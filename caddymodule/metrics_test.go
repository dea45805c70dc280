package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// TestUnavailableCountedAndLoggedPerBurst: a store that cannot answer
// makes every request a 503 counted as unavailable, and its error is
// logged once per burst, with the number of lines it suppressed.
func TestUnavailableCountedAndLoggedPerBurst(t *testing.T) {
	app := &App{open: new(opening)}
	app.open.cleaned = true // backend() fails, as for a store that cannot be opened
	m, err := newAppMetrics(prometheus.NewPedanticRegistry(), app)
	if err != nil {
		t.Fatal(err)
	}
	rf, err := newRefuser(DefaultKeyHeader, true)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.ErrorLevel)
	h := &Handler{logger: zap.New(core), auth: authenticator{
		app: app, header: textproto.CanonicalMIMEHeaderKey(DefaultKeyHeader), bearer: true, refuser: rf,
		metrics: newMetricsSlot(m, "apikey"), errs: &burstLog{every: 200 * time.Millisecond},
	}}
	key, _ := keystore.DefaultFormat().Generate()
	serve := func(n int) {
		for range n {
			r := httptest.NewRequest("GET", "/contacts", nil)
			r.Header.Set("X-Api-Key", key)
			w := httptest.NewRecorder()
			if err := h.ServeHTTP(w, r, benchNext); err != nil || w.Code != http.StatusServiceUnavailable {
				t.Fatalf("status %d, err %v", w.Code, err)
			}
		}
	}
	serve(5)
	time.Sleep(250 * time.Millisecond)
	serve(1)
	if got := m.decisions.series("UNKNOWN", "apikey")[outcomeUnavailable].Load(); got != 6 {
		t.Errorf("unavailable counted %d times, want 6", got)
	}
	entries := logs.All()
	if len(entries) != 2 {
		t.Fatalf("%d log lines for 6 failures in two bursts, want 2: %v", len(entries), entries)
	}
	if s := entries[0].ContextMap()["suppressed"]; s != int64(0) {
		t.Errorf("first line: suppressed %v, want 0", s)
	}
	if s := entries[1].ContextMap()["suppressed"]; s != int64(4) {
		t.Errorf("second line: suppressed %v, want 4", s)
	}
}

// TestMetricsRegisteredTwice: a second registration in one registry (two
// apps of one config's context) reuses the collectors already registered.
func TestMetricsRegisteredTwice(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	a, err := newAppMetrics(reg, &App{open: new(opening)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := newAppMetrics(reg, &App{open: new(opening)})
	if err != nil {
		t.Fatalf("second registration: %v", err)
	}
	if a.decisions != b.decisions || a.duration != b.duration || a.mutations != b.mutations {
		t.Error("the second registration made collectors of its own, which /metrics would not show")
	}
}

// deepContext is a request context as deep as Caddy's server makes one
// (http.Server's values, Caddy's replacer, server, vars, route group,
// original request, log fields), without a span.
func deepContext(b *testing.B) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	type k int
	for i := range 9 {
		ctx = context.WithValue(ctx, k(i), i)
	}
	return ctx
}

// BenchmarkDecided is what a decision's metrics and tracing cost on the
// request path, tracing off, with Caddy's depth of request context.
func BenchmarkDecided(b *testing.B) {
	m, err := newAppMetrics(prometheus.NewPedanticRegistry(), &App{open: new(opening)})
	if err != nil {
		b.Fatal(err)
	}
	a := &authenticator{metrics: newMetricsSlot(m, "apikey")}
	r := httptest.NewRequest("GET", "/", nil).WithContext(deepContext(b))
	k := &keystore.Key{ID: "id", Account: "default"}
	b.ReportAllocs()
	for b.Loop() {
		a.decided(r, keystore.OK, k, decisionTimer())
	}
}

// BenchmarkDecidedMetricsOnly is BenchmarkDecided without the span.
func BenchmarkDecidedMetricsOnly(b *testing.B) {
	m, err := newAppMetrics(prometheus.NewPedanticRegistry(), &App{open: new(opening)})
	if err != nil {
		b.Fatal(err)
	}
	s := newMetricsSlot(m, "apikey")
	r := httptest.NewRequest("GET", "/", nil).WithContext(deepContext(b))
	b.ReportAllocs()
	for b.Loop() {
		s.record(r, keystore.OK, decisionTimer())
	}
}

// BenchmarkSpanFromContext is the tracing check alone.
func BenchmarkSpanFromContext(b *testing.B) {
	r := httptest.NewRequest("GET", "/", nil).WithContext(deepContext(b))
	b.ReportAllocs()
	for b.Loop() {
		traceDecision(r, keystore.OK, nil)
	}
}
