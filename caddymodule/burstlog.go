package caddymodule

import (
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// burstLog logs a repeated error of the request path at most once per
// interval: a store that fails fails every request, and a line per
// request would flood the log. Each line counts the lines suppressed
// since the one before.
type burstLog struct {
	every      time.Duration
	last       atomic.Int64 // unix nanos of the last line
	suppressed atomic.Int64
}

func newBurstLog() *burstLog { return &burstLog{every: time.Second} }

// error logs msg and err, unless a line was logged less than an interval
// ago. A nil burstLog logs every time.
func (b *burstLog) error(log *zap.Logger, msg string, err error) {
	if b == nil {
		log.Error(msg, zap.Error(err))
		return
	}
	now := time.Now().UnixNano()
	last := b.last.Load()
	if now-last < int64(b.every) || !b.last.CompareAndSwap(last, now) {
		b.suppressed.Add(1)
		return
	}
	log.Error(msg, zap.Error(err), zap.Int64("suppressed", b.suppressed.Swap(0)))
}
