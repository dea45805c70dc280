package caddymodule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore"
	"github.com/caddy-apikey/caddy-apikey/keystore/redisstore"
)

func init() {
	caddy.RegisterModule(BadgerStore{})
	caddy.RegisterModule(RedisStore{})
}

// StoreBackend is a module of the apikey.stores namespace: where the key
// store lives. The apikey app opens one store per StoreKey and shares it
// between configs, so that a reload keeps it open. The embedded Badger
// store is the app's storage option; another engine is a module of this
// namespace (redis).
type StoreBackend interface {
	// StoreKey identifies the store: configs with the same key share it.
	StoreKey() string
	// OpenStore opens the store with the app's options.
	OpenStore(opts keystore.Options) (*keystore.Store, error)
}

// BadgerStore keeps the keys in an embedded Badger database in a
// directory, which one Caddy process opens at a time: the default. The
// apikey app's storage option is the same.
type BadgerStore struct {
	// Dir is the store's directory. Default: the "apikey" folder in
	// Caddy's data directory.
	Dir string `json:"dir,omitempty"`

	abs string
}

// CaddyModule returns the Caddy module information.
func (BadgerStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "apikey.stores.badger",
		New: func() caddy.Module { return new(BadgerStore) },
	}
}

// Provision makes the directory absolute.
func (b *BadgerStore) Provision(caddy.Context) error {
	dir := b.Dir
	if dir == "" {
		dir = filepath.Join(caddy.AppDataDir(), "apikey")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("storage %s: %v", dir, err)
	}
	b.abs = abs
	return nil
}

// StoreKey is the absolute directory.
func (b *BadgerStore) StoreKey() string { return b.abs }

// OpenStore opens Badger in the directory.
func (b *BadgerStore) OpenStore(opts keystore.Options) (*keystore.Store, error) {
	opts.Dir = b.abs
	return keystore.Open(opts)
}

// RedisStore keeps the keys in Redis (or Valkey) 7.0 or newer, standalone,
// shared by every Caddy that names the same Redis and key_prefix: several
// replicas behind a load balancer. Every request is still decided from
// this process's memory: a change made on one replica (create, revoke,
// regenerate, edits, account status, delete) reaches the others over a
// Redis stream, in milliseconds; a replica that cannot confirm within
// max_staleness that it has every change refuses key checks with 503
// unavailable until Redis answers again. Rate limits and quotas are still
// counted per replica.
type RedisStore struct {
	// URL is redis://[user:password@]host:port[/db], or rediss:// for TLS.
	// Placeholders such as {env.REDIS_URL} are replaced when the config
	// loads.
	URL string `json:"url,omitempty"`

	// KeyPrefix starts every Redis key the store writes, so that several
	// stores can share one Redis database. Default: apikey:.
	KeyPrefix string `json:"key_prefix,omitempty"`

	// MaxStaleness is how long a replica goes on verifying keys without
	// confirming that it knows every change made through the other
	// replicas; after it, requests that need a key check get 503
	// unavailable with Retry-After until Redis answers again. Raising it
	// (5m) keeps replicas serving through a Redis outage, at the price
	// that a revocation made meanwhile may take that long to apply.
	// Default: 1s.
	MaxStaleness caddy.Duration `json:"max_staleness,omitempty"`

	url    string
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (RedisStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "apikey.stores.redis",
		New: func() caddy.Module { return new(RedisStore) },
	}
}

// Provision replaces placeholders in the URL and checks it.
func (r *RedisStore) Provision(ctx caddy.Context) error {
	r.logger = ctx.Logger()
	r.url = caddy.NewReplacer().ReplaceKnown(r.URL, "")
	if r.KeyPrefix == "" {
		r.KeyPrefix = "apikey:"
	}
	return r.Validate()
}

// Validate checks the URL's scheme and max_staleness.
func (r *RedisStore) Validate() error {
	u := r.url
	if u == "" {
		u = r.URL
	}
	if !strings.HasPrefix(u, "redis://") && !strings.HasPrefix(u, "rediss://") {
		return fmt.Errorf("redis: the URL must start with redis:// or rediss://")
	}
	if r.MaxStaleness < 0 {
		return fmt.Errorf("redis: max_staleness must not be negative")
	}
	return nil
}

// StoreKey is the Redis address, database and key prefix (without the
// password).
func (r *RedisStore) StoreKey() string {
	return "redis " + redactURL(r.url) + " " + r.KeyPrefix
}

// OpenStore connects to Redis, warns about settings that would lose keys,
// and opens the store.
func (r *RedisStore) OpenStore(opts keystore.Options) (*keystore.Store, error) {
	eng, err := redisstore.Open(redisstore.Options{
		URL:       r.url,
		Namespace: r.KeyPrefix,
		Bucket:    keystore.ScanBucket,
		Watched:   keystore.Watched,
		Origin:    processOrigin(),
		Logger:    opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	for _, w := range eng.Warnings(context.Background()) {
		opts.Logger.Warn("redis: "+w, zap.String("redis", redactURL(r.url)))
	}
	opts.Engine = eng
	opts.Dir = ""
	opts.MaxStaleness = time.Duration(r.MaxStaleness)
	return keystore.Open(opts)
}

// processOrigin names this process in the changes it publishes: host,
// process id and a random part (a restarted process is another origin).
func processOrigin() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// redactURL hides a URL's password, for logs and store keys.
func redactURL(s string) string {
	scheme := strings.Index(s, "://")
	at := strings.LastIndex(s, "@")
	if scheme < 0 || at < scheme {
		return s
	}
	user, _, hasPassword := strings.Cut(s[scheme+3:at], ":")
	if !hasPassword {
		return s
	}
	return s[:scheme+3] + user + ":xxxxx" + s[at:]
}

// UnmarshalCaddyfile reads
//
//	redis <url> {
//		key_prefix <prefix>
//		max_staleness <duration>
//	}
func (r *RedisStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	r.URL = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	// A URL from a placeholder ({env.REDIS_URL}) is checked when the
	// config loads, after the placeholder is replaced.
	if !strings.Contains(r.URL, "{") {
		if err := r.Validate(); err != nil {
			return d.Err(err.Error())
		}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "key_prefix":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if r.KeyPrefix = d.Val(); r.KeyPrefix == "" {
				return d.Err("key_prefix: an empty prefix (leave the option out for the default, apikey:)")
			}
		case "max_staleness":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			if dur <= 0 {
				return d.Err("max_staleness must be a positive duration")
			}
			r.MaxStaleness = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized redis option: %s", d.Val())
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

// Interface guards.
var (
	_ StoreBackend          = (*BadgerStore)(nil)
	_ caddy.Provisioner     = (*BadgerStore)(nil)
	_ StoreBackend          = (*RedisStore)(nil)
	_ caddy.Provisioner     = (*RedisStore)(nil)
	_ caddy.Validator       = (*RedisStore)(nil)
	_ caddyfile.Unmarshaler = (*RedisStore)(nil)
)
