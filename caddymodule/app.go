// Package caddymodule is the Caddy glue of caddy-apikey: the apikey app
// (global options, owner of the key store), the apikey and apikey_admin
// HTTP handlers, their Caddyfile syntax, the admin-endpoint routes and the
// caddy apikey CLI. Decisions live in the keystore package.
package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/adminapi"
	"github.com/caddy-apikey/caddy-apikey/adminui"
	"github.com/caddy-apikey/caddy-apikey/keystore"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the apikey app: it owns the key store and the key format. Every
// apikey and apikey_admin handler, and the admin endpoint's /apikey/ routes,
// use the store of the running config's apikey app. The app is loaded with
// its defaults when a handler needs it and no global options configure it.
type App struct {
	// Storage is the directory of the Badger key store. Default:
	// the "apikey" folder in Caddy's data directory. Every config that
	// names the same directory shares one open store, so a reload keeps
	// the store (and its cache) open.
	Storage string `json:"storage,omitempty"`

	// Store is where the keys live, as a module of the apikey.stores
	// namespace: {"backend": "badger", "dir": ...}, the same as storage,
	// or {"backend": "redis", "url": ..., ...} for a store that several
	// Caddy replicas share. Storage and store are exclusive. Default:
	// Badger in storage's default directory.
	StoreRaw json.RawMessage `json:"store,omitempty" caddy:"namespace=apikey.stores inline_key=backend"`

	// Prefix starts every key this app issues and accepts: 1 to 16
	// characters of [A-Za-z0-9_]. Default: ak_.
	Prefix string `json:"prefix,omitempty"`

	// Length is the number of random base62 characters after the prefix,
	// 22 to 128. Default: 43 (256 bits).
	Length int `json:"length,omitempty"`

	// Checksum appends a 6-character base62 CRC32 of the prefix and random
	// part, so that a malformed or mistyped key is refused without a store
	// lookup and secret scanners can recognise a leaked key offline.
	// Default: true.
	Checksum *bool `json:"checksum,omitempty"`

	// CacheSize bounds how many verified keys are kept in memory; a key
	// outside the cache is read from Badger. Default: 1048576. Only the
	// first config to open a store sets it.
	CacheSize int `json:"cache_size,omitempty"`

	// LastUsedFlush is the longest time a key's last-used time stays only
	// in memory before it is written to the store. Default: 30s. Only the
	// first config to open a store sets it.
	LastUsedFlush caddy.Duration `json:"last_used_flush,omitempty"`

	// UsageHourlyRetention is how long a key's and an account's hourly
	// usage points (GET /keys/{id}/usage?interval=hour) are kept after
	// their hour, at most 744h (31 days). Default: 168h (7 days). Only
	// the first config to open a store sets it.
	UsageHourlyRetention caddy.Duration `json:"usage_hourly_retention,omitempty"`

	// UsageDailyRetention is how long the daily usage points are kept
	// after their day (UTC), at most 43920h (1,830 days). Default: 2160h
	// (90 days). Only the first config to open a store sets it.
	UsageDailyRetention caddy.Duration `json:"usage_daily_retention,omitempty"`

	// AcceptForeignKeys makes handlers look up a credential of 16 to 256
	// printable ASCII characters that does not match the key format,
	// instead of refusing it as malformed_key: for keys imported from
	// another system. Default: false.
	AcceptForeignKeys bool `json:"accept_foreign_keys,omitempty"`

	// RateLimit is the rate limit of every key that has none of its own:
	// {"requests": n, "window": "<Go duration>", "burst": b} (burst
	// defaults to requests), or {"unlimited": true}. Default: 100
	// requests per 1s, burst 100. A key's own rate_limit overrides it; an
	// account's rate_limit applies on top, shared by all of its keys.
	RateLimit *keystore.RateLimit `json:"rate_limit,omitempty"`

	// PurgeRevokedAfter is how long a revoked key is kept before a
	// background sweep deletes it with its audit events. "off" (in the
	// Caddyfile; -1 in JSON) disables the purge. Default: 720h (30 days).
	PurgeRevokedAfter caddy.Duration `json:"purge_revoked_after,omitempty"`

	// PurgeInterval is how often the purge sweep runs; it also runs when
	// the app starts, unless a sweep of the same store ran less than an
	// interval ago. Default: 1h.
	PurgeInterval caddy.Duration `json:"purge_interval,omitempty"`

	// ExpiringNotice is how long before a key's expires_at the
	// key_expiring event is emitted (once per key and expiry). "off" (in
	// the Caddyfile; -1 in JSON) emits none; key_expired is emitted
	// whatever the value. Default: 168h (7 days).
	ExpiringNotice caddy.Duration `json:"expiring_notice,omitempty"`

	// ExpiryCheckInterval is how often a background sweep reads the keys
	// to emit key_expiring and key_expired, and to count the keys by
	// status for the caddy_apikey_keys metric: an event comes up to an
	// interval late. Each sweep reads every key record once. Default: 1m.
	ExpiryCheckInterval caddy.Duration `json:"expiry_check_interval,omitempty"`

	limit keystore.Limit
	// stopPurge ends the purge and expiry sweeps; loops waits for them.
	stopPurge context.CancelFunc
	loops     *sync.WaitGroup
	ctx       caddy.Context
	events    *caddyevents.App
	metrics   *appMetrics
	tracing   *tracingState
	format    keystore.Format
	dir       string       // Badger's directory; "" on another backend
	store     StoreBackend // where the keys live
	logger    *zap.Logger
	// resources are those the config's apikey handlers require scopes
	// of, for the API Keys page.
	resources *resourceSet
	// page is the API Keys page of the admin endpoint (/apikey/ui/).
	page *adminui.Handler

	open *opening // set in Provision
}

// opening is the app's store once it is open: handlers read ready on
// every request; mu serializes opening and Cleanup.
type opening struct {
	ready   atomic.Pointer[backend]
	mu      sync.Mutex
	cleaned bool
}

// backend is what the app serves with once its store is open.
type backend struct {
	verifier keystore.Verifier // its Store is the open store
	api      *adminapi.API
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "apikey",
		New: func() caddy.Module { return new(App) },
	}
}

// stores shares one open Store per directory between configs: a reload
// provisions the new config (which finds the store open) before it cleans
// up the old one (which releases its reference).
var stores = caddy.NewUsagePool()

type storeHandle struct{ *keystore.Store }

func (h storeHandle) Destruct() error { return h.Close() }

// Provision sets the defaults. It does not open the store: caddy validate
// provisions a config in a process of its own, and opening would take the
// store's lock from under a running Caddy (validate would fail) or, with
// none running, create or upgrade the store. The store opens in Start, or
// at a handler's first request if that comes first (apps start in no set
// order, so a server may take requests before this app has started).
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.ctx = ctx
	a.open = new(opening)
	a.tracing = new(tracingState)
	a.resources = new(resourceSet)
	a.page = adminui.New(adminui.Options{
		Operator:  true,
		Backend:   a.pageBackend,
		Resources: a.resources.list,
		Logger:    a.logger.Named("ui"),
	})
	// The events app, if the config has one (Caddy's tls app loads it; a
	// config without it has no subscriber to tell).
	if ev, err := ctx.AppIfConfigured("events"); err == nil {
		a.events, _ = ev.(*caddyevents.App)
	}
	m, err := newAppMetrics(ctx.GetMetricsRegistry(), a)
	if err != nil {
		return err
	}
	a.metrics = m
	f, abs, err := a.formatAndDir()
	if err != nil {
		return err
	}
	a.format = f
	switch {
	case a.StoreRaw != nil && a.Storage != "":
		return fmt.Errorf("storage and store are exclusive: storage is the Badger store's directory, store names another backend")
	case a.StoreRaw != nil:
		mod, err := ctx.LoadModule(a, "StoreRaw")
		if err != nil {
			return fmt.Errorf("loading the key store backend: %v", err)
		}
		a.store = mod.(StoreBackend)
		if b, ok := a.store.(*BadgerStore); ok {
			a.dir = b.abs
		}
	default:
		a.dir = abs
		a.store = &BadgerStore{Dir: abs, abs: abs}
	}
	if err := a.RateLimit.Validate(); err != nil {
		return err
	}
	a.limit = keystore.DefaultLimit
	if a.RateLimit != nil {
		a.limit = a.RateLimit.Effective(keystore.DefaultLimit)
	}
	return nil
}

// backend opens (or shares) the store on the first call and returns what
// the app serves with. After Cleanup it fails: a request that outlives its
// config does not reopen a store it would never release. Every request
// calls it, so the open store's path is a function of its own with a
// small frame; opening, whose frame holds the store's options (392 bytes
// of stack for every request when it was one function), is openBackend.
func (a *App) backend() (*backend, error) {
	if b := a.open.ready.Load(); b != nil && !b.verifier.Store.Closed() {
		return b, nil
	}
	return a.openBackend()
}

// openBackend is backend when the store is not open yet (or was closed).
func (a *App) openBackend() (*backend, error) {
	o := a.open
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cleaned {
		return nil, fmt.Errorf("the config of this apikey app was unloaded")
	}
	if b := o.ready.Load(); b != nil {
		return b, nil // (closed only after Cleanup: this app holds a reference)
	}
	val, loaded, err := stores.LoadOrNew(a.store.StoreKey(), func() (caddy.Destructor, error) {
		s, err := a.store.OpenStore(keystore.Options{
			Logger:        storeLogger(a.logger),
			CacheSize:     a.CacheSize,
			LastUsedFlush: time.Duration(a.LastUsedFlush),
			OnChange:      emitChange,

			UsageHourRetention: time.Duration(a.UsageHourlyRetention),
			UsageDayRetention:  time.Duration(a.UsageDailyRetention),
		})
		if err != nil {
			return nil, err
		}
		return storeHandle{s}, nil
	})
	if err != nil {
		return nil, err
	}
	st := val.(storeHandle).Store
	b := &backend{
		verifier: keystore.Verifier{Store: st, Format: a.format, AcceptForeign: a.AcceptForeignKeys, DefaultLimit: &a.limit},
		api: adminapi.New(adminapi.Options{Store: st, Format: a.format, Logger: a.logger.Named("admin"), AcceptForeign: a.AcceptForeignKeys,
			Observe: a.metrics.observeMutation}),
	}
	o.ready.Store(b)
	a.logger.Info("key store ready", zap.String("store", a.store.StoreKey()), zap.Bool("shared", loaded))
	return b, nil
}

// formatAndDir is the key format and the absolute storage directory the
// options give, defaults applied (caddy apikey load reads them too).
func (a *App) formatAndDir() (keystore.Format, string, error) {
	f := keystore.Format{Prefix: a.Prefix, Length: a.Length, Checksum: a.Checksum == nil || *a.Checksum}
	if f.Prefix == "" {
		f.Prefix = keystore.DefaultPrefix
	}
	if f.Length == 0 {
		f.Length = keystore.DefaultLength
	}
	if err := f.Validate(); err != nil {
		return keystore.Format{}, "", err
	}
	dir := a.Storage
	if dir == "" {
		dir = filepath.Join(caddy.AppDataDir(), "apikey")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return keystore.Format{}, "", fmt.Errorf("storage %s: %v", dir, err)
	}
	return f, abs, nil
}

// Validate checks settings that Provision does not.
func (a *App) Validate() error {
	if a.CacheSize < 0 {
		return fmt.Errorf("cache_size must not be negative")
	}
	if a.LastUsedFlush < 0 {
		return fmt.Errorf("last_used_flush must not be negative")
	}
	if a.UsageHourlyRetention < 0 || time.Duration(a.UsageHourlyRetention) > keystore.MaxUsageHourRetention {
		return fmt.Errorf("usage_hourly_retention must be from 0 to %s", keystore.MaxUsageHourRetention)
	}
	if a.UsageDailyRetention < 0 || time.Duration(a.UsageDailyRetention) > keystore.MaxUsageDayRetention {
		return fmt.Errorf("usage_daily_retention must be from 0 to %s", keystore.MaxUsageDayRetention)
	}
	if a.PurgeInterval < 0 {
		return fmt.Errorf("purge_interval must not be negative")
	}
	if a.ExpiryCheckInterval < 0 {
		return fmt.Errorf("expiry_check_interval must not be negative")
	}
	return nil
}

// Default purge settings.
const (
	DefaultPurgeRevokedAfter = 720 * time.Hour
	DefaultPurgeInterval     = time.Hour
)

// Start opens the store (unless a request already did), so that a store
// that cannot be opened fails the config, and starts the purge sweep of
// revoked keys and the expiry sweep.
func (a *App) Start() error {
	b, err := a.backend()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.stopPurge, a.loops = cancel, new(sync.WaitGroup)
	notice, check := time.Duration(a.ExpiringNotice), time.Duration(a.ExpiryCheckInterval)
	if notice == 0 {
		notice = DefaultExpiringNotice
	}
	if check == 0 {
		check = DefaultExpiryCheckInterval
	}
	a.loops.Go(func() { a.expiryLoop(ctx, b.verifier.Store, notice, check) })
	if a.PurgeRevokedAfter < 0 {
		return nil
	}
	after, every := time.Duration(a.PurgeRevokedAfter), time.Duration(a.PurgeInterval)
	if after == 0 {
		after = DefaultPurgeRevokedAfter
	}
	if every == 0 {
		every = DefaultPurgeInterval
	}
	a.loops.Go(func() { a.purgeLoop(ctx, b.verifier.Store, after, every) })
	return nil
}

// purgeLoop sweeps now and every interval until ctx is done, which also
// interrupts a sweep between two keys.
func (a *App) purgeLoop(ctx context.Context, st *keystore.Store, after, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		n, ran, err := st.PurgeRevokedIfDue(ctx, after, every)
		switch {
		case ctx.Err() != nil:
			if ran {
				a.logger.Info("purge of revoked keys interrupted by a stop", zap.Int("deleted", n))
			}
			return
		case err != nil:
			a.logger.Error("purging revoked keys", zap.Error(err))
		case ran:
			a.logger.Info("purged revoked keys", zap.Int("deleted", n), zap.Duration("revoked_for_at_least", after))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Stop stops the purge and expiry sweeps, interrupting them between two keys. The store
// is released in Cleanup, after the next config (if any) has taken its own
// reference.
func (a *App) Stop() error {
	if a.stopPurge != nil {
		a.stopPurge()
		a.loops.Wait()
		a.stopPurge = nil
	}
	return nil
}

// Cleanup releases this config's reference to the store, if it opened
// it; the last reference flushes last-used times and closes the store. It
// stops the purge sweep first: a config whose start failed after this app
// started is cleaned up without a Stop.
func (a *App) Cleanup() error {
	_ = a.Stop()
	if a.open == nil { // not provisioned
		return nil
	}
	a.open.mu.Lock()
	defer a.open.mu.Unlock()
	a.open.cleaned = true
	if a.open.ready.Load() == nil {
		return nil
	}
	_, err := stores.Delete(a.store.StoreKey())
	return err
}

// Store is the app's key store, opened if it was not yet.
func (a *App) Store() (*keystore.Store, error) {
	b, err := a.backend()
	if err != nil {
		return nil, err
	}
	return b.verifier.Store, nil
}

// Format is the format of the keys the app issues and accepts.
func (a *App) Format() keystore.Format { return a.format }

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
