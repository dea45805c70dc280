package caddymodule

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// validate runs caddy validate's check (caddy.Validate: provision, no
// start) on a config of the apikey app with this storage, and an apikey
// handler, so that handlers are provisioned as well.
func validate(t *testing.T, storage string) error {
	t.Helper()
	raw, err := json.Marshal(map[string]any{
		"admin": map[string]any{"disabled": true},
		"apps": map[string]any{
			"apikey": map[string]any{"storage": storage},
			"http": map[string]any{"servers": map[string]any{"s": map[string]any{
				"listen": []string{"127.0.0.1:19590"},
				"routes": []any{map[string]any{"handle": []any{
					map[string]any{"handler": "apikey", "require": "contacts"},
					map[string]any{"handler": "apikey_admin"},
				}}},
			}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	return caddy.Validate(&cfg)
}

// TestValidateLeavesTheStoreAlone: caddy validate neither needs nor touches
// the store. With a running Caddy holding it (here: this test holding it
// open, with Badger's lock), validate passes; with no store yet, it does
// not create one.
func TestValidateLeavesTheStoreAlone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	running, err := keystore.Open(keystore.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()
	if err := validate(t, dir); err != nil {
		t.Fatalf("validate while the store is open elsewhere: %v", err)
	}

	absent := filepath.Join(t.TempDir(), "absent")
	if err := validate(t, absent); err != nil {
		t.Fatalf("validate with no store yet: %v", err)
	}
	if _, err := os.Stat(absent); !os.IsNotExist(err) {
		t.Fatalf("validate created the store's directory (stat: %v)", err)
	}
}

// TestStoreOpensOnceAndNotAfterCleanup: the first request or Start opens
// the store, every later one shares it, and an app that was cleaned up
// neither reopens it nor keeps a reference.
func TestStoreOpensOnceAndNotAfterCleanup(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	a := &App{Storage: dir}
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("Provision opened the store (stat: %v)", err)
	}
	b1, err := a.backend()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	b2, err := a.backend()
	if err != nil || b1 != b2 {
		t.Fatalf("second open: %p %p %v", b1, b2, err)
	}
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
	// The last reference is gone: the store is closed and its lock
	// released, so another process (here: Open) can take it.
	s, err := keystore.Open(keystore.Options{Dir: dir})
	if err != nil {
		t.Fatalf("the store is still held after Cleanup: %v", err)
	}
	s.Close()

	fresh := &App{Storage: dir}
	if err := fresh.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := fresh.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.backend(); err == nil {
		t.Fatal("an app that was cleaned up opened the store")
	}
}

// TestCleanupWithoutStop: Caddy cleans up a config whose start failed
// after this app started without calling Stop; the purge sweep stops all
// the same, and a request that reaches the app after its Cleanup gets an
// error rather than the closed store (a cached key passed, and what it
// counted was lost).
func TestCleanupWithoutStop(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	a := &App{Storage: filepath.Join(t.TempDir(), "store"), PurgeInterval: caddy.Duration(time.Millisecond)}
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { a.loops.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the purge sweep still runs after Cleanup")
	}
	if b, err := a.backend(); err == nil {
		t.Fatalf("after Cleanup, backend gave a store (closed: %v)", b.verifier.Store.Closed())
	}
}

// TestValidateUsageRetention: the retentions' bounds, in JSON as in the
// Caddyfile.
func TestValidateUsageRetention(t *testing.T) {
	day := caddy.Duration(24 * time.Hour)
	for _, tc := range []struct {
		app App
		ok  bool
	}{
		{App{}, true},
		{App{UsageHourlyRetention: 31 * day, UsageDailyRetention: 1830 * day}, true},
		{App{UsageHourlyRetention: 32 * day}, false},
		{App{UsageDailyRetention: 1831 * day}, false},
		{App{UsageHourlyRetention: -1}, false},
		{App{UsageDailyRetention: -1}, false},
	} {
		if err := tc.app.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc.app, err)
		}
	}
}
