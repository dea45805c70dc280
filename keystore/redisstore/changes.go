package redisstore

import (
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// publishScript appends a committed transaction's change to the stream,
// numbered by the store's change counter (<ns>seq), inside the
// transaction's MULTI/EXEC: a follower that sees a number other than the
// one after its last knows that it missed changes (the stream was trimmed
// past it, or Redis lost data) and reloads.
const publishScript = `
local n = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'o', ARGV[2], 'n', n, 'k', ARGV[3])
return n`

// publish is the command that publishes a change list.
func (e *Engine) publish(changed []byte) rueidis.Completed {
	return e.b().Eval().Script(publishScript).Numkeys(2).Key(e.changes, e.ns+"seq").
		Arg(strconv.FormatInt(e.opts.StreamLength, 10), e.opts.Origin, bin(changed)).Build()
}

// followBlock is how long one XREAD of the changes stream waits for news;
// each read that returns confirms the process current as of when it was
// sent, so while Redis answers the confirmation is at most twice this old.
const followBlock = 100 * time.Millisecond

// followTimeout bounds one XREAD beyond its blocking time: a Redis that
// stopped answering (SIGSTOP, a network partition without a reset) is
// given up on after it, and the read is sent again.
const followTimeout = time.Second

// followBatch is the most changes one read returns.
const followBatch = 1000

// position is where the changes stream stands: its last entry's id and
// the change counter.
func (e *Engine) position(ctx context.Context) (id string, seq int64, err error) {
	b := e.b()
	res := e.c.DoMulti(ctx,
		b.Multi().Build(),
		b.Xrevrange().Key(e.changes).End("+").Start("-").Count(1).Build(),
		b.Get().Key(e.ns+"seq").Build(),
		b.Exec().Build())
	arr, err := res[len(res)-1].ToArray()
	if err != nil {
		return "", 0, e.wrap("reading the changes stream's position", err)
	}
	id = "0-0"
	if last, err := arr[0].AsXRange(); err == nil && len(last) > 0 {
		id = last[0].ID
	}
	if s, err := arr[1].AsInt64(); err == nil {
		seq = s
	} else if !isNil(err) {
		return "", 0, e.wrap("reading the change counter", err)
	}
	return id, seq, nil
}

// Follow follows the changes stream (see kv.Shared).
func (e *Engine) Follow(ctx context.Context, apply func(keys [][]byte), confirmed func(at time.Time)) (wait func(), err error) {
	sent := time.Now()
	pctx, cancel := e.ctx()
	id, seq, err := e.position(pctx)
	cancel()
	if err != nil {
		return nil, err
	}
	confirmed(sent)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.follow(ctx, id, seq, apply, confirmed)
	}()
	return func() { <-done }, nil
}

func (e *Engine) follow(ctx context.Context, id string, seq int64, apply func([][]byte), confirmed func(time.Time)) {
	down := false
	for ctx.Err() == nil {
		sent := time.Now()
		rctx, cancel := context.WithTimeout(ctx, followBlock+followTimeout)
		res := e.c.Do(rctx, e.b().Xread().Count(followBatch).Block(followBlock.Milliseconds()).Streams().Key(e.changes).Id(id).Build())
		cancel()
		streams, err := res.AsXReadSlices()
		if err != nil && !isNil(err) {
			if ctx.Err() != nil {
				return
			}
			if !down {
				e.log.Error("redis: following the changes of other processes failed; requests that need a key check are refused once max_staleness has passed, until Redis answers again", zap.Error(err))
				down = true
			}
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		if down {
			// Redis answers again. If it lost changes (a restart without
			// persistence), the counter went back: reload.
			pctx, cancel := e.ctx()
			nid, nseq, perr := e.position(pctx)
			cancel()
			if perr != nil {
				continue
			}
			e.log.Info("redis: following the changes of other processes again")
			down = false
			if nseq < seq {
				apply(nil)
				id, seq = nid, nseq
				confirmed(sent)
				continue
			}
		}
		entries := streams[e.changes]
		for _, en := range entries {
			id = en.ID
			n, origin, keys, perr := parseChange(en)
			switch {
			case perr != nil:
				e.log.Error("redis: an unreadable entry on the changes stream; reloading", zap.String("id", en.ID), zap.Error(perr))
				apply(nil)
			case n != seq+1:
				e.log.Warn("redis: changes were missed; reloading", zap.Int64("expected", seq+1), zap.Int64("got", n))
				apply(nil)
			case origin != e.opts.Origin:
				apply(keys)
			}
			seq = n
		}
		if len(entries) < followBatch {
			confirmed(sent)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// parseChange reads an entry of the changes stream.
func parseChange(en rueidis.XRangeSlice) (n int64, origin string, keys [][]byte, err error) {
	var raw string
	for _, fv := range en.FieldValues {
		switch fv.Field {
		case "n":
			n, err = strconv.ParseInt(fv.Value, 10, 64)
		case "o":
			origin = fv.Value
		case "k":
			raw = fv.Value
		}
		if err != nil {
			return 0, "", nil, err
		}
	}
	b := []byte(raw)
	for len(b) > 0 {
		l, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < l {
			return 0, "", nil, errors.New("malformed change list")
		}
		keys = append(keys, b[w:w+int(l)])
		b = b[w+int(l):]
	}
	return n, origin, keys, nil
}

var _ kv.Shared = (*Engine)(nil)
