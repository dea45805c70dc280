package redisstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/rueidis"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

var errReadOnly = errors.New("write in a read-only transaction")

type errUnscannable []byte

func (e errUnscannable) Error() string {
	return fmt.Sprintf("prefix %q is in no scan bucket", []byte(e))
}

// write is a transaction's pending write of one key.
type write struct {
	key []byte
	val []byte // nil: delete
	ttl time.Duration
}

// txn is a transaction. A read-only one (update false) reads through the
// shared client; a read-write one WATCHes what it reads on its dedicated
// connection and buffers its writes until commit.
type txn struct {
	e      *Engine
	c      rueidis.CoreClient
	dc     rueidis.DedicatedClient
	update bool
	writes map[string]*write // by key
	// watching: a WATCH was sent, so an abort must UNWATCH.
	watching bool
}

func (t *txn) do(cmds ...rueidis.Completed) ([]rueidis.RedisResult, error) {
	timeout := t.e.opts.Timeout
	if !t.update {
		timeout = t.e.opts.ReadTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res := t.c.DoMulti(ctx, cmds...)
	for _, r := range res {
		if err := r.NonRedisError(); err != nil {
			return nil, t.e.wrap("read", err)
		}
	}
	return res, nil
}

// read sends cmd, after WATCHing keys if this is a read-write transaction.
func (t *txn) read(cmd rueidis.Completed, watch ...string) (rueidis.RedisResult, error) {
	if !t.update {
		res, err := t.do(cmd)
		if err != nil {
			return rueidis.RedisResult{}, err
		}
		return res[0], nil
	}
	t.watching = true
	res, err := t.do(t.e.b().Watch().Key(watch...).Build(), cmd)
	if err != nil {
		return rueidis.RedisResult{}, err
	}
	if err := res[0].Error(); err != nil {
		return rueidis.RedisResult{}, t.e.wrap("watch", err)
	}
	return res[1], nil
}

func (t *txn) Get(key []byte, fn func(val []byte) error) error {
	if w, ok := t.writes[string(key)]; ok {
		if w.val == nil {
			return kv.ErrNotFound
		}
		return fn(w.val)
	}
	dk := t.e.dataKey(key)
	res, err := t.read(t.e.b().Get().Key(dk).Build(), dk)
	if err != nil {
		return err
	}
	v, err := res.AsBytes()
	if isNil(err) {
		return kv.ErrNotFound
	}
	if err != nil {
		return t.e.wrap("get", err)
	}
	return fn(v)
}

func (t *txn) Exists(key []byte) (bool, error) {
	err := t.Get(key, func([]byte) error { return nil })
	if err == kv.ErrNotFound {
		return false, nil
	}
	return err == nil, err
}

func (t *txn) put(key, val []byte, ttl time.Duration) error {
	if !t.update {
		return errReadOnly
	}
	k := append([]byte(nil), key...)
	var v []byte
	if val != nil {
		v = append(make([]byte, 0, len(val)), val...)
	}
	t.writes[string(k)] = &write{key: k, val: v, ttl: ttl}
	return nil
}

func (t *txn) Set(key, val []byte) error {
	if val == nil {
		val = []byte{}
	}
	return t.put(key, val, 0)
}

func (t *txn) SetTTL(key, val []byte, ttl time.Duration) error {
	if val == nil {
		val = []byte{}
	}
	return t.put(key, val, max(ttl, time.Millisecond))
}

func (t *txn) Delete(key []byte) error { return t.put(key, nil, 0) }

// scanPage is how many keys a scan reads from Redis at a time.
const scanPage = 1000

// Scan reads the prefix's bucket in pages with ZRANGEBYLEX (or
// ZREVRANGEBYLEX), and the pages' values with MGET when values are asked
// for; a key whose value is gone (its TTL passed) is skipped. A read-write
// transaction WATCHes the bucket, so that a key added to or removed from
// it meanwhile makes the transaction conflict, and sees its own pending
// writes.
func (t *txn) Scan(prefix, start []byte, reverse, values bool, fn func(key, val []byte) (bool, error)) error {
	bucket := t.e.bucket(prefix)
	if bucket == nil || !bytes.HasPrefix(prefix, bucket) {
		return t.e.wrap("scan", errUnscannable(prefix))
	}
	bk := t.e.bucketKey(bucket)
	end := prefixEnd(prefix)
	lo, hi := "["+string(prefix), "+"
	if end != nil {
		hi = "(" + string(end)
	}
	if len(start) > 0 {
		if reverse {
			hi = "[" + string(start)
		} else {
			lo = "[" + string(start)
		}
	}
	pending := t.pendingIn(prefix, start, reverse)
	for {
		var cmd rueidis.Completed
		if reverse {
			cmd = t.e.b().Zrevrangebylex().Key(bk).Max(hi).Min(lo).Limit(0, scanPage).Build()
		} else {
			cmd = t.e.b().Zrangebylex().Key(bk).Min(lo).Max(hi).Limit(0, scanPage).Build()
		}
		res, err := t.read(cmd, bk)
		if err != nil {
			return err
		}
		keys, err := res.AsStrSlice()
		if err != nil {
			return t.e.wrap("scan", err)
		}
		vals := make([][]byte, len(keys))
		if values && len(keys) > 0 {
			dks := make([]string, len(keys))
			for i, k := range keys {
				dks[i] = t.e.dataKey([]byte(k))
			}
			// In a read-write transaction the values are watched too, as
			// Badger's transactions track the values they iterate.
			ms, err := t.read(t.e.b().Mget().Key(dks...).Build(), dks...)
			if err != nil {
				return err
			}
			arr, err := ms.ToArray()
			if err != nil {
				return t.e.wrap("scan values", err)
			}
			for i := range arr {
				if b, err := arr[i].AsBytes(); err == nil {
					vals[i] = b
				} else if !isNil(err) {
					return t.e.wrap("scan values", err)
				}
			}
		}
		for i, k := range keys {
			// Pending writes that sort before this key come first.
			for len(pending) > 0 && before(pending[0].key, []byte(k), reverse) {
				if more, err := t.emitPending(pending[0], values, fn); err != nil || !more {
					return err
				}
				pending = pending[1:]
			}
			if len(pending) > 0 && string(pending[0].key) == k {
				w := pending[0]
				pending = pending[1:]
				if more, err := t.emitPending(w, values, fn); err != nil || !more {
					return err
				}
				continue
			}
			if values && vals[i] == nil {
				continue // expired or deleted since the range was read
			}
			if more, err := fn([]byte(k), vals[i]); err != nil || !more {
				return err
			}
		}
		if len(keys) < scanPage {
			break
		}
		last := keys[len(keys)-1]
		if reverse {
			hi = "(" + last
		} else {
			lo = "(" + last
		}
	}
	for _, w := range pending {
		if more, err := t.emitPending(w, values, fn); err != nil || !more {
			return err
		}
	}
	return nil
}

// pendingIn returns the transaction's pending writes within a scan's
// range, in the scan's order.
func (t *txn) pendingIn(prefix, start []byte, reverse bool) []*write {
	var out []*write
	for _, w := range t.writes {
		if !bytes.HasPrefix(w.key, prefix) {
			continue
		}
		if len(start) > 0 && ((!reverse && bytes.Compare(w.key, start) < 0) || (reverse && bytes.Compare(w.key, start) > 0)) {
			continue
		}
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b *write) int {
		if reverse {
			return bytes.Compare(b.key, a.key)
		}
		return bytes.Compare(a.key, b.key)
	})
	return out
}

func (t *txn) emitPending(w *write, values bool, fn func(key, val []byte) (bool, error)) (bool, error) {
	if w.val == nil {
		return true, nil // deleted in this transaction
	}
	var v []byte
	if values {
		v = w.val
	}
	return fn(w.key, v)
}

// before reports whether a comes before b in a scan's order.
func before(a, b []byte, reverse bool) bool {
	if reverse {
		return bytes.Compare(a, b) > 0
	}
	return bytes.Compare(a, b) < 0
}

// prefixEnd is the first key after every key with the prefix, or nil if
// there is none (a prefix of 0xff bytes).
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// commit writes the pending writes with MULTI/EXEC, with one entry on the
// changes stream for the watched keys among them.
func (t *txn) commit() error {
	if len(t.writes) == 0 {
		t.unwatch()
		return nil
	}
	e := t.e
	keys := make([]string, 0, len(t.writes))
	for k := range t.writes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	cmds := make(rueidis.Commands, 0, 2+3*len(keys)+1)
	cmds = append(cmds, e.b().Multi().Build())
	var changed []byte
	for _, k := range keys {
		w := t.writes[k]
		dk := e.dataKey(w.key)
		b := e.bucket(w.key)
		switch {
		case w.val == nil:
			cmds = append(cmds, e.b().Del().Key(dk).Build())
			if b != nil {
				cmds = append(cmds, e.b().Zrem().Key(e.bucketKey(b)).Member(k).Build())
			}
		case w.ttl > 0:
			cmds = append(cmds, e.b().Set().Key(dk).Value(bin(w.val)).PxMilliseconds(w.ttl.Milliseconds()).Build())
			if b != nil {
				cmds = append(cmds, e.b().Zadd().Key(e.bucketKey(b)).ScoreMember().ScoreMember(0, k).Build())
				expiry := time.Now().Add(w.ttl).UnixMilli()
				cmds = append(cmds, e.b().Zadd().Key(e.ttls).ScoreMember().ScoreMember(float64(expiry), k).Build())
			}
		default:
			cmds = append(cmds, e.b().Set().Key(dk).Value(bin(w.val)).Build())
			if b != nil {
				cmds = append(cmds, e.b().Zadd().Key(e.bucketKey(b)).ScoreMember().ScoreMember(0, k).Build())
			}
		}
		if b != nil && w.ttl == 0 {
			cmds = append(cmds, e.b().Zrem().Key(e.ttls).Member(k).Build())
		}
		if e.watched(w.key) {
			changed = appendChange(changed, w.key)
		}
	}
	if changed != nil {
		cmds = append(cmds, e.publish(changed))
	}
	cmds = append(cmds, e.b().Exec().Build())
	ctx, cancel := e.ctx()
	defer cancel()
	res := t.dc.DoMulti(ctx, cmds...)
	for _, r := range res[:len(res)-1] {
		if err := r.NonRedisError(); err != nil {
			return e.wrap("commit", err)
		}
	}
	execRes := res[len(res)-1]
	arr, err := execRes.ToArray()
	if isNil(err) {
		return kv.ErrConflict
	}
	if err != nil {
		return e.wrap("commit", err)
	}
	for _, m := range arr {
		if err := m.Error(); err != nil {
			return e.wrap("commit", err)
		}
	}
	return nil
}

func (t *txn) unwatch() {
	if !t.watching {
		return
	}
	ctx, cancel := t.e.ctx()
	defer cancel()
	_ = t.dc.Do(ctx, t.e.b().Unwatch().Build()).Error()
}

// appendChange appends a key to a change list: its length as a uvarint,
// then its bytes.
func appendChange(b, key []byte) []byte {
	b = appendUvarint(b, uint64(len(key)))
	return append(b, key...)
}

func appendUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}
