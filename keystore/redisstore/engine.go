// Package redisstore is the key store's shared engine: Redis (or Valkey)
// 7.0 or newer, standalone, used by several Caddy processes at once. It
// implements the kv seam on Redis's data types:
//
//	<ns>v:<key>      the value of a key (a string)
//	<ns>i:<bucket>   a sorted set (all scores 0) of the keys of a scan
//	                 bucket, for ordered scans (ZRANGEBYLEX); the key
//	                 store's layout says which keys are in which bucket
//	                 (Options.Bucket), and keys in none are never scanned
//	<ns>t            a sorted set of the keys written with a TTL, scored
//	                 by their expiry, so that Maintain removes expired
//	                 keys from their buckets
//	<ns>changes      a stream: one entry per committed transaction that
//	                 wrote a watched key (Options.Watched), with the keys,
//	                 so that every process learns of every change
//
// A read-write transaction is optimistic, as Badger's: it WATCHes every
// key it reads (and the bucket of every scan) on a connection of its own,
// buffers its writes, and commits them with MULTI/EXEC together with its
// stream entry. If a watched key changed meanwhile, EXEC does nothing and
// the transaction fails with kv.ErrConflict, to be run again. Redis
// answers EXEC after it has applied the writes; how durable they are then
// is Redis's persistence setting (with appendonly yes and appendfsync
// always, Redis fsyncs before it answers).
//
// A read-only transaction reads the latest committed values without a
// snapshot: two reads may see two states if a transaction commits between
// them (read committed).
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// Options configure an Engine.
type Options struct {
	// URL is redis://[user:password@]host:port[/db] or rediss:// (TLS).
	URL string
	// Namespace is prepended to every Redis key (default "apikey:"), so
	// that several stores can share a Redis database.
	Namespace string
	// Bucket gives the scan bucket of a key, or nil for a key that is
	// never scanned. Every key with a given scan prefix must be in the
	// same bucket, and Bucket of the prefix itself must name it.
	Bucket func(key []byte) []byte
	// Watched reports whether a write of the key is published on the
	// changes stream (nil: every key).
	Watched func(key []byte) bool
	// Origin names this process in the changes it publishes.
	Origin string
	// Logger receives the engine's warnings.
	Logger *zap.Logger
	// Timeout bounds each call of a read-write transaction and of the
	// housekeeping (default 5 s).
	Timeout time.Duration
	// ReadTimeout bounds each read of a read-only transaction (default
	// 250 ms; a healthy Redis answers in well under a millisecond): a
	// cache miss on the request path waits no longer for a Redis that
	// stopped answering, so that a request that arrives just before the
	// store turns stale is still answered within max_staleness + 0.5 s.
	ReadTimeout time.Duration
	// StreamLength is about how many changes the stream keeps (default
	// 100,000): a process that was away for more than that many changes
	// cannot catch up from the stream and reloads instead.
	StreamLength int64
}

// Engine is a key store's persistence in Redis.
type Engine struct {
	c       rueidis.Client
	opts    Options
	ns      string
	changes string
	ttls    string
	log     *zap.Logger
}

// Open connects to Redis and checks that it answers.
func Open(opts Options) (*Engine, error) {
	co, err := rueidis.ParseURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("redis: %s: %w", redactURL(opts.URL), err)
	}
	if opts.Namespace == "" {
		opts.Namespace = "apikey:"
	}
	if opts.Bucket == nil {
		return nil, errors.New("redis: no scan layout (Options.Bucket)")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 250 * time.Millisecond
	}
	if opts.StreamLength <= 0 {
		opts.StreamLength = 100_000
	}
	co.DisableCache = true // the key store keeps its own cache
	co.ConnWriteTimeout = opts.Timeout
	co.Dialer.Timeout = opts.Timeout
	co.DisableRetry = true // a transaction is retried by the key store, on fresh reads
	c, err := rueidis.NewClient(co)
	if err != nil {
		return nil, fmt.Errorf("redis: connecting to %s: %w", redactURL(opts.URL), err)
	}
	e := &Engine{
		c:       c,
		opts:    opts,
		ns:      opts.Namespace,
		changes: opts.Namespace + "changes",
		ttls:    opts.Namespace + "t",
		log:     opts.Logger,
	}
	ctx, cancel := e.ctx()
	defer cancel()
	if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
		c.Close()
		return nil, fmt.Errorf("redis: %s: %w", redactURL(opts.URL), err)
	}
	return e, nil
}

// redactURL hides the password of a Redis URL.
func redactURL(s string) string {
	at := strings.LastIndex(s, "@")
	scheme := strings.Index(s, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return s
	}
	userinfo := s[scheme+3 : at]
	if user, _, ok := strings.Cut(userinfo, ":"); ok {
		return s[:scheme+3] + user + ":xxxxx" + s[at:]
	}
	return s
}

// Client is the engine's Redis client, for the key store's status and
// tests.
func (e *Engine) Client() rueidis.Client { return e.c }

// Namespace is the prefix of the engine's Redis keys.
func (e *Engine) Namespace() string { return e.ns }

func (e *Engine) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), e.opts.Timeout)
}

func (e *Engine) dataKey(key []byte) string       { return e.ns + "v:" + string(key) }
func (e *Engine) bucketKey(b []byte) string       { return e.ns + "i:" + string(b) }
func (e *Engine) keyOfData(k string) []byte       { return []byte(strings.TrimPrefix(k, e.ns+"v:")) }
func (e *Engine) watched(key []byte) bool         { return e.opts.Watched == nil || e.opts.Watched(key) }
func (e *Engine) bucket(key []byte) []byte        { return e.opts.Bucket(key) }
func (e *Engine) isData(k string) bool            { return strings.HasPrefix(k, e.ns+"v:") }
func (e *Engine) b() rueidis.Builder              { return e.c.B() }
func bin(b []byte) string                         { return rueidis.BinaryString(b) }
func isNil(err error) bool                        { return rueidis.IsRedisNil(err) }
func (e *Engine) wrap(op string, err error) error { return fmt.Errorf("redis: %s: %w", op, err) }

// View runs fn with reads of the latest committed values.
func (e *Engine) View(fn func(kv.Txn) error) error {
	return fn(&txn{e: e, c: e.c})
}

// Update runs fn in an optimistic transaction on a connection of its own
// and commits its writes with MULTI/EXEC, once.
func (e *Engine) Update(fn func(kv.Txn) error) error {
	dc, release := e.c.Dedicate()
	defer release()
	t := &txn{e: e, c: dc, dc: dc, update: true, writes: map[string]*write{}}
	if err := fn(t); err != nil {
		t.unwatch()
		return err
	}
	return t.commit()
}

// Batch writes the entries with pipelined SETs (and their bucket
// entries): not atomic, each acknowledged by Redis before it returns.
func (e *Engine) Batch(fn func(set func(key, val []byte) error) error) error {
	const chunk = 1000
	var cmds rueidis.Commands
	flush := func() error {
		if len(cmds) == 0 {
			return nil
		}
		ctx, cancel := e.ctx()
		defer cancel()
		for _, r := range e.c.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				return e.wrap("batch write", err)
			}
		}
		cmds = cmds[:0]
		return nil
	}
	err := fn(func(key, val []byte) error {
		cmds = append(cmds, e.b().Set().Key(e.dataKey(key)).Value(string(val)).Build())
		if b := e.bucket(key); b != nil {
			cmds = append(cmds, e.b().Zadd().Key(e.bucketKey(b)).ScoreMember().ScoreMember(0, string(key)).Build())
		}
		if len(cmds) >= chunk {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

// Maintain removes keys whose TTL has passed from their scan buckets.
func (e *Engine) Maintain() {
	ctx, cancel := e.ctx()
	defer cancel()
	now := time.Now().UnixMilli()
	keys, err := e.c.Do(ctx, e.b().Zrangebyscore().Key(e.ttls).Min("-inf").Max(fmt.Sprint(now)).Limit(0, 10000).Build()).AsStrSlice()
	if err != nil {
		e.log.Warn("redis: listing expired keys", zap.Error(err))
		return
	}
	var cmds rueidis.Commands
	for _, k := range keys {
		if b := e.bucket([]byte(k)); b != nil {
			cmds = append(cmds, e.b().Zrem().Key(e.bucketKey(b)).Member(k).Build())
		}
	}
	if len(keys) > 0 {
		cmds = append(cmds, e.b().Zremrangebyscore().Key(e.ttls).Min("-inf").Max(fmt.Sprint(now)).Build())
	}
	for _, r := range e.c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			e.log.Warn("redis: removing expired keys from their buckets", zap.Error(err))
			return
		}
	}
}

// Close closes the connections.
func (e *Engine) Close() error {
	e.c.Close()
	return nil
}

// Interface guards.
var (
	_ kv.Engine = (*Engine)(nil)
	_ kv.Txn    = (*txn)(nil)
)

// escapeGlob escapes the glob characters of a SCAN MATCH pattern.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}
