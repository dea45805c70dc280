package caddymodule

import (
	"context"
	"net/http"
	"time"

	"github.com/caddy-apikey/caddy-apikey/adminapi"
	"github.com/caddy-apikey/caddy-apikey/keystore"
	"github.com/caddy-apikey/caddy-apikey/keystore/redisstore"
)

// storeStatus is the answer of GET /apikey/status (documented in
// docs/admin-api.md).
type storeStatus struct {
	// Backend is badger or redis.
	Backend string        `json:"backend"`
	Badger  *badgerStatus `json:"badger,omitempty"`
	Redis   *redisStatus  `json:"redis,omitempty"`
	// Keys counts the keys; nil if they could not be counted (CountsError
	// says why).
	Keys        *keyStatus `json:"keys"`
	CountsError string     `json:"counts_error,omitempty"`
	// Accounts is the number of accounts.
	Accounts int `json:"accounts"`
}

type badgerStatus struct {
	Dir string `json:"dir"`
}

type redisStatus struct {
	// URL is the Redis URL without its password.
	URL       string `json:"url"`
	KeyPrefix string `json:"key_prefix"`
	// Connection is ok, or error with Error saying what failed.
	Connection string `json:"connection"`
	Error      string `json:"error,omitempty"`
	// LagMS is how long ago this replica last confirmed that it knows
	// every change of the store, in milliseconds.
	LagMS float64 `json:"lag_ms"`
	// MaxStaleness is the configured max_staleness.
	MaxStaleness string `json:"max_staleness"`
	// Stale: this replica refuses key checks (503) for staleness.
	Stale bool `json:"stale"`
	// Warnings are Redis settings that would lose keys.
	Warnings []string `json:"warnings"`
}

type keyStatus struct {
	Total   int64 `json:"total"`
	Revoked int64 `json:"revoked"`
	// Active and Expired are counted only with ?full=true (every record
	// is read); otherwise nil.
	Active  *int64 `json:"active"`
	Expired *int64 `json:"expired"`
	Full    bool   `json:"full"`
}

// statusTimeout bounds the Redis calls of a status request.
const statusTimeout = 3 * time.Second

// serveStatus answers GET /apikey/status[?full=true]: the store's backend,
// its counts and, on Redis, the connection, this replica's lag and
// staleness and the warnings about Redis's settings.
func serveStatus(w http.ResponseWriter, r *http.Request, app *App, st *keystore.Store) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		adminapi.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed",
			"the method "+r.Method+" is not allowed on this path; allowed: GET, HEAD")
		return
	}
	full := false
	switch v := r.URL.Query().Get("full"); v {
	case "", "false", "0":
	case "true", "1":
		full = true
	default:
		adminapi.WriteError(w, http.StatusBadRequest, "invalid_request", "full must be true or false, not "+v)
		return
	}
	out := storeStatus{}
	switch b := app.store.(type) {
	case *RedisStore:
		out.Backend = "redis"
		rs := &redisStatus{URL: redactURL(b.url), KeyPrefix: b.KeyPrefix, Connection: "ok", Warnings: []string{}}
		rs.MaxStaleness = keystore.DefaultMaxStaleness.String()
		if b.MaxStaleness > 0 {
			rs.MaxStaleness = time.Duration(b.MaxStaleness).String()
		}
		rs.LagMS = float64(st.Lag().Microseconds()) / 1000
		rs.Stale = st.Stale()
		if eng, ok := st.Engine().(*redisstore.Engine); ok {
			ctx, cancel := context.WithTimeout(r.Context(), statusTimeout)
			err := eng.Client().Do(ctx, eng.Client().B().Ping().Build()).Error()
			if err != nil {
				rs.Connection, rs.Error = "error", err.Error()
			} else {
				rs.Warnings = append(rs.Warnings, eng.Warnings(ctx)...)
			}
			cancel()
		}
		out.Redis = rs
	case *BadgerStore:
		out.Backend = "badger"
		out.Badger = &badgerStatus{Dir: b.abs}
	}
	counts, err := st.Counts(full)
	out.Accounts = counts.Accounts
	if err != nil {
		out.CountsError = err.Error()
	} else {
		ks := &keyStatus{Total: counts.Keys.Total, Revoked: counts.Keys.Revoked, Full: full}
		if full {
			ks.Active, ks.Expired = &counts.Keys.Active, &counts.Keys.Expired
		}
		out.Keys = ks
	}
	adminapi.WriteJSON(w, http.StatusOK, out)
}
