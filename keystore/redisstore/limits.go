package redisstore

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// The engine's rate limits and quotas (kv.Limits), in Lua scripts that
// Redis runs atomically, a batch of buckets or counters per call:
//
//	<ns>rl:<bucket>    a hash {tok, at, b}: the bucket's level (tokens,
//	                   may be negative when tokens were taken ahead), the
//	                   Redis time it was computed at (microseconds) and
//	                   the burst it was computed for; it expires when the
//	                   bucket would be full (a full bucket is no bucket)
//	<ns>q:<counter>    a quota counter (an integer), expiring after its
//	                   period
//	<ns>replicas       a sorted set of the live processes, scored by when
//	                   their heartbeat expires (Redis time, ms)
//
// Refills are computed with redis.call('TIME'), so that the processes'
// clocks do not matter.

// takeScript takes tokens from the buckets of KEYS; ARGV holds four
// values per bucket: rate (tokens/s), burst, want, ahead (ms). It returns
// per bucket {granted, level before (a decimal string), wait (µs)}.
var takeScript = rueidis.NewLuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local j = (i - 1) * 4
  local rate = tonumber(ARGV[j + 1]) / 1000000
  local burst = tonumber(ARGV[j + 2])
  local want = tonumber(ARGV[j + 3])
  local ahead = tonumber(ARGV[j + 4]) * 1000
  local h = redis.call('HMGET', key, 'tok', 'at', 'b')
  local tok, at, b = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
  if tok == nil or at == nil or b == nil then
    tok, at, b = burst, now, burst
  end
  if now > at then
    tok = math.min(b, tok + (now - at) * rate)
  end
  if b ~= burst and tok >= 0 then
    -- a changed limit keeps what was consumed, as much as fits
    tok = burst - math.min(math.ceil(b - tok), burst)
  end
  tok = math.min(tok, burst)
  local avail = tok + ahead * rate
  local grant = 0
  if want > 0 and avail >= 1 then
    grant = math.min(want, math.floor(avail))
  end
  local before = tok
  tok = tok - grant
  local wait = 0
  if grant == 0 then
    wait = math.max(math.ceil((1 - avail) / rate), 1)
  end
  local full = (burst - tok) / rate
  if full < 1000 then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, 'tok', string.format('%.6f', tok), 'at', string.format('%.0f', now), 'b', string.format('%d', burst))
    redis.call('PEXPIRE', key, math.ceil(full / 1000) + 1)
  end
  out[i] = {grant, string.format('%.6f', before), wait}
end
return out
`)

// countScript adds to the quota counters of KEYS, capped; ARGV holds four
// values per counter: limit, add, seed, expire-at (unix ms). It returns
// per counter {granted, used}.
var countScript = rueidis.NewLuaScript(`
local out = {}
for i, key in ipairs(KEYS) do
  local j = (i - 1) * 4
  local limit = tonumber(ARGV[j + 1])
  local add = tonumber(ARGV[j + 2])
  local used = tonumber(ARGV[j + 3])
  local v = redis.call('GET', key)
  if v then used = tonumber(v) end
  local g
  if add >= 0 then
    g = math.max(0, math.min(add, limit - used))
  else
    g = math.max(add, -used)
  end
  used = used + g
  redis.call('SET', key, string.format('%d', used), 'PXAT', ARGV[j + 4])
  out[i] = {g, used}
end
return out
`)

// heartbeatScript records ARGV[1] alive for ARGV[2] ms in KEYS[1] and
// returns how many are alive. It runs with EVAL (the leases' scripts with
// EVALSHA), so that Redis's command counts tell the heartbeat, once a
// second, from the leases.
var heartbeatScript = rueidis.NewLuaScriptNoSha(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
`)

// limitsChunk bounds the buckets or counters of one script run, so that
// a big batch does not hold Redis for long; the chunks of a batch are
// pipelined in one round trip.
const limitsChunk = 256

// limitsCtx bounds a batch by the read timeout: limits are on the
// request path's side of the store.
func (e *Engine) limitsCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), e.opts.ReadTimeout)
}

// TakeTokens takes tokens from buckets, in one round trip (kv.Limits).
func (e *Engine) TakeTokens(takes []kv.TokenTake) error {
	var execs []rueidis.LuaExec
	for start := 0; start < len(takes); start += limitsChunk {
		chunk := takes[start:min(start+limitsChunk, len(takes))]
		ex := rueidis.LuaExec{Keys: make([]string, len(chunk)), Args: make([]string, 0, 4*len(chunk))}
		for i, tk := range chunk {
			ex.Keys[i] = e.ns + "rl:" + tk.Bucket
			ex.Args = append(ex.Args,
				strconv.FormatFloat(tk.Rate, 'g', -1, 64),
				strconv.FormatInt(tk.Burst, 10),
				strconv.FormatInt(tk.Want, 10),
				strconv.FormatInt(tk.Ahead.Milliseconds(), 10))
		}
		execs = append(execs, ex)
	}
	ctx, cancel := e.limitsCtx()
	defer cancel()
	for n, res := range takeScript.ExecMulti(ctx, e.c, execs...) {
		rows, err := res.ToArray()
		if err != nil {
			return e.wrap("taking tokens", err)
		}
		chunk := takes[n*limitsChunk:]
		if len(rows) > len(chunk) {
			return e.wrap("taking tokens", errShortReply)
		}
		for i, row := range rows {
			f, err := row.ToArray()
			if err != nil || len(f) != 3 {
				return e.wrap("taking tokens", errShortReply)
			}
			tk := &chunk[i]
			tk.Granted, _ = f[0].AsInt64()
			s, _ := f[1].ToString()
			tk.Before, _ = strconv.ParseFloat(s, 64)
			us, _ := f[2].AsInt64()
			tk.Wait = time.Duration(us) * time.Microsecond
		}
	}
	return nil
}

// AddCounts adds to quota counters, in one round trip (kv.Limits).
func (e *Engine) AddCounts(adds []kv.CountAdd) error {
	var execs []rueidis.LuaExec
	for start := 0; start < len(adds); start += limitsChunk {
		chunk := adds[start:min(start+limitsChunk, len(adds))]
		ex := rueidis.LuaExec{Keys: make([]string, len(chunk)), Args: make([]string, 0, 4*len(chunk))}
		for i, a := range chunk {
			ex.Keys[i] = e.ns + "q:" + a.Counter
			ex.Args = append(ex.Args,
				strconv.FormatInt(a.Limit, 10),
				strconv.FormatInt(a.Add, 10),
				strconv.FormatInt(a.Seed, 10),
				strconv.FormatInt(a.ExpireAt.UnixMilli(), 10))
		}
		execs = append(execs, ex)
	}
	ctx, cancel := e.limitsCtx()
	defer cancel()
	for n, res := range countScript.ExecMulti(ctx, e.c, execs...) {
		rows, err := res.ToArray()
		if err != nil {
			return e.wrap("counting quotas", err)
		}
		chunk := adds[n*limitsChunk:]
		if len(rows) > len(chunk) {
			return e.wrap("counting quotas", errShortReply)
		}
		for i, row := range rows {
			f, err := row.AsIntSlice()
			if err != nil || len(f) != 2 {
				return e.wrap("counting quotas", errShortReply)
			}
			chunk[i].Granted, chunk[i].Used = f[0], f[1]
		}
	}
	return nil
}

// Heartbeat records this process (its Origin) alive for ttl and returns
// how many are (kv.Limits).
func (e *Engine) Heartbeat(ttl time.Duration) (int, error) {
	ctx, cancel := e.limitsCtx()
	defer cancel()
	n, err := heartbeatScript.Exec(ctx, e.c, []string{e.ns + "replicas"},
		[]string{e.opts.Origin, strconv.FormatInt(max(ttl.Milliseconds(), 1), 10)}).AsInt64()
	if err != nil {
		return 0, e.wrap("heartbeat", err)
	}
	return int(n), nil
}

var _ kv.Limits = (*Engine)(nil)

// errShortReply is a script's reply that does not have the expected
// shape.
var errShortReply = errors.New("unexpected reply of a limits script")
