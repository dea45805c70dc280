package caddymodule

import (
	"context"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// Default expiry notice settings.
const (
	DefaultExpiringNotice      = keystore.DefaultExpiringNotice
	DefaultExpiryCheckInterval = time.Minute
)

// emitChange is the OnChange hook of every store the apikey app opens: it
// emits the change as a Caddy event through the events app of the running
// config's apikey app (the store outlives the config that opened it, as
// storeLogger explains). The store calls it for its own mutations only,
// so in cluster mode each change is emitted once, by the replica that
// made it.
func emitChange(m keystore.Mutation) {
	app, err := caddy.ActiveContext().AppIfConfigured("apikey")
	if err != nil {
		return
	}
	if a, ok := app.(*App); ok {
		a.emit(m)
	}
}

// emit emits m as a Caddy event named m.Kind, from the apikey app.
func (a *App) emit(m keystore.Mutation) {
	if a.events == nil || !a.events.ShouldEmit(m.Kind) {
		return
	}
	a.events.Emit(a.ctx, m.Kind, eventData(m))
}

// eventData is a change's event data: who changed what, never a key's
// string or hash.
func eventData(m keystore.Mutation) map[string]any {
	d := map[string]any{"actor": m.Actor, "at": m.At}
	if k := m.Key; k != nil {
		d["id"], d["name"], d["account"], d["type"], d["hint"], d["scopes"] = k.ID, k.Name, k.Account, k.Type, k.Hint, k.Scopes
		if k.ExpiresAt != nil {
			d["expires_at"] = *k.ExpiresAt
		}
	}
	if ac := m.Account; ac != nil {
		d["account"], d["name"], d["status"] = ac.ID, ac.Name, ac.Status
	}
	if m.Changes != nil {
		d["changes"] = m.Changes
	}
	return d
}

// expiryLoop sweeps the store for expiring and expired keys (and counts
// the keys by status for the metrics) now and every interval, until ctx
// is done.
func (a *App) expiryLoop(ctx context.Context, st *keystore.Store, notice, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if err := st.SweepExpiry(ctx, notice); err != nil && ctx.Err() == nil {
			a.logger.Error("sweeping for expiring keys", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Interface guard: the events app is what emit uses.
var _ caddy.App = (*caddyevents.App)(nil)
