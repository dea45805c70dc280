package caddymodule

import (
	"slices"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// storeLogger is the logger of a store that appLog's app opened. The store
// outlives that config: every config naming the same storage shares it.
// So it writes through the logger of the apikey app of the config running
// at the time of each line, not of the config that opened it: after a
// reload that changes Caddy's logs, the config that opened the store is
// cleaned up, with its log writers, and its logger would write nowhere.
// appLog is the fallback while no config with an apikey app runs.
func storeLogger(appLog *zap.Logger) *zap.Logger {
	return zap.New(runningAppCore{fallback: appLog.Core()}).Named("apikey.store")
}

// runningAppCore is a zapcore.Core that passes each entry to the core of
// the running config's apikey app logger.
type runningAppCore struct {
	fallback zapcore.Core
	fields   []zapcore.Field
}

func (c runningAppCore) current() zapcore.Core {
	core := c.fallback
	if app, err := caddy.ActiveContext().AppIfConfigured("apikey"); err == nil {
		if a, ok := app.(*App); ok && a.logger != nil {
			core = a.logger.Core()
		}
	}
	if len(c.fields) > 0 {
		core = core.With(c.fields)
	}
	return core
}

func (c runningAppCore) Enabled(l zapcore.Level) bool { return c.current().Enabled(l) }

func (c runningAppCore) With(fields []zapcore.Field) zapcore.Core {
	return runningAppCore{fallback: c.fallback, fields: append(slices.Clip(c.fields), fields...)}
}

func (c runningAppCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return c.current().Check(e, ce)
}

func (c runningAppCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	return c.current().Write(e, fields)
}

func (c runningAppCore) Sync() error { return c.current().Sync() }

// Interface guard.
var _ zapcore.Core = runningAppCore{}
