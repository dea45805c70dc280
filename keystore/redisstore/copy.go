package redisstore

import (
	"bytes"
	"slices"
	"time"

	"github.com/redis/rueidis"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// copyChunk is how many keys Each reads and Put writes per round trip.
const copyChunk = 1000

// keys lists the namespace's data keys with SCAN, sorted and without the
// duplicates SCAN may return: not a snapshot, for tools that run while
// nothing writes (migrations) and for tests. The names are held in memory
// (about 80 bytes a key: some 400 MB for a million API keys with their
// indexes and a few audit events each).
func (e *Engine) keys() ([]string, error) {
	var keys []string
	var cursor uint64
	for {
		ctx, cancel := e.ctx()
		se, err := e.c.Do(ctx, e.b().Scan().Cursor(cursor).Match(escapeGlob(e.ns)+"v:*").Count(copyChunk).Build()).AsScanEntry()
		cancel()
		if err != nil {
			return nil, e.wrap("scan", err)
		}
		keys = append(keys, se.Elements...)
		if cursor = se.Cursor; cursor == 0 {
			break
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// Each lists the namespace's keys (SCAN), then reads their values and
// expiries (MGET and PEXPIRETIME, pipelined) a chunk at a time, in key
// order. A key deleted or expired since the listing is skipped. Not a
// snapshot: nothing may write meanwhile.
func (e *Engine) Each(fn func(kv.Entry) error) error {
	keys, err := e.keys()
	if err != nil {
		return err
	}
	for chunk := range slices.Chunk(keys, copyChunk) {
		cmds := make(rueidis.Commands, 0, 1+len(chunk))
		cmds = append(cmds, e.b().Mget().Key(chunk...).Build())
		for _, k := range chunk {
			cmds = append(cmds, e.b().Pexpiretime().Key(k).Build())
		}
		ctx, cancel := e.ctx()
		res := e.c.DoMulti(ctx, cmds...)
		cancel()
		vals, err := res[0].ToArray()
		if err != nil {
			return e.wrap("mget", err)
		}
		for i, m := range vals {
			v, err := m.AsBytes()
			if isNil(err) {
				continue // deleted or expired since the scan
			}
			if err != nil {
				return e.wrap("mget", err)
			}
			at, err := res[1+i].AsInt64()
			if err != nil {
				return e.wrap("pexpiretime", err)
			}
			en := kv.Entry{Key: e.keyOfData(chunk[i]), Val: v}
			switch {
			case at == -2:
				continue // expired between MGET and PEXPIRETIME
			case at > 0:
				en.ExpiresAt = time.UnixMilli(at)
			}
			if err := fn(en); err != nil {
				return err
			}
		}
	}
	return nil
}

// Put writes entries with pipelined SETs (PXAT for an expiry), their
// bucket entries and the TTL index, as a transaction's commit would, but
// neither atomically nor on the changes stream: for a store that no
// process serves yet (a migration's target). Entries whose expiry has
// passed are skipped.
func (e *Engine) Put(entries []kv.Entry) error {
	now := time.Now()
	for chunk := range slices.Chunk(entries, copyChunk) {
		cmds := make(rueidis.Commands, 0, 3*len(chunk))
		for _, en := range chunk {
			dk := e.dataKey(en.Key)
			b := e.bucket(en.Key)
			ttl := !en.ExpiresAt.IsZero()
			if ttl && !en.ExpiresAt.After(now) {
				continue
			}
			if ttl {
				cmds = append(cmds, e.b().Set().Key(dk).Value(bin(en.Val)).PxatMillisecondsTimestamp(en.ExpiresAt.UnixMilli()).Build())
			} else {
				cmds = append(cmds, e.b().Set().Key(dk).Value(bin(en.Val)).Build())
			}
			if b == nil {
				continue
			}
			k := string(en.Key)
			cmds = append(cmds, e.b().Zadd().Key(e.bucketKey(b)).ScoreMember().ScoreMember(0, k).Build())
			if ttl {
				cmds = append(cmds, e.b().Zadd().Key(e.ttls).ScoreMember().ScoreMember(float64(en.ExpiresAt.UnixMilli()), k).Build())
			} else {
				cmds = append(cmds, e.b().Zrem().Key(e.ttls).Member(k).Build())
			}
		}
		if len(cmds) == 0 {
			continue
		}
		ctx, cancel := e.ctx()
		res := e.c.DoMulti(ctx, cmds...)
		cancel()
		for _, r := range res {
			if err := r.Error(); err != nil {
				return e.wrap("put", err)
			}
		}
	}
	return nil
}

// Count counts the keys with the prefix from its scan bucket: ZCARD when
// the prefix is the bucket (O(1)), ZLEXCOUNT otherwise (O(log n)). Keys
// written with a TTL count until Maintain removes them from their bucket
// (at most a few minutes after their expiry).
func (e *Engine) Count(prefix []byte) (int64, error) {
	b := e.bucket(prefix)
	if b == nil || !bytes.HasPrefix(prefix, b) {
		return 0, e.wrap("count", errUnscannable(prefix))
	}
	ctx, cancel := e.ctx()
	defer cancel()
	var cmd rueidis.Completed
	if bytes.Equal(prefix, b) {
		cmd = e.b().Zcard().Key(e.bucketKey(b)).Build()
	} else {
		hi := "+"
		if end := prefixEnd(prefix); end != nil {
			hi = "(" + string(end)
		}
		cmd = e.b().Zlexcount().Key(e.bucketKey(b)).Min("[" + string(prefix)).Max(hi).Build()
	}
	n, err := e.c.Do(ctx, cmd).AsInt64()
	if err != nil {
		return 0, e.wrap("count", err)
	}
	return n, nil
}

// Interface guards.
var (
	_ kv.Copier  = (*Engine)(nil)
	_ kv.Counter = (*Engine)(nil)
)
