package caddymodule

import (
	"net/http"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/tracing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// Span attributes of a decision, set when Caddy's tracing handler traces
// the request.
const (
	attrOutcome = attribute.Key("apikey.outcome")
	attrKeyID   = attribute.Key("apikey.key_id")
	attrAccount = attribute.Key("apikey.account")
)

// traceDecision adds the decision to the request's span: the outcome, and
// the key's id and account when the decision names a key (never the key
// itself). Without tracing the span is a no-op that does not record.
func traceDecision(r *http.Request, o keystore.Outcome, k *keystore.Key) {
	span := trace.SpanFromContext(r.Context())
	if !span.IsRecording() {
		return
	}
	if k == nil {
		span.SetAttributes(attrOutcome.String(outcomeCode(o)))
		return
	}
	span.SetAttributes(attrOutcome.String(outcomeCode(o)), attrKeyID.String(k.ID), attrAccount.String(k.Account))
}

// tracingState is whether the config's HTTP app has a tracing handler:
// without one no request has a span, and looking for one walks the
// request's whole context (55 ns at Caddy's depth, more than the request
// path's metrics may cost), so the handlers look only when there is one.
type tracingState struct {
	once sync.Once
	on   bool
}

// traced reports whether the app's config traces requests, looking at
// its HTTP app's routes at the first call (a request: the HTTP app is
// provisioned by then). An app provisioned outside a config never is.
func (a *App) traced() bool {
	if a == nil || a.tracing == nil {
		return false
	}
	t := a.tracing
	t.once.Do(func() {
		app, err := a.ctx.AppIfConfigured("http")
		if err != nil {
			return
		}
		if h, ok := app.(*caddyhttp.App); ok {
			t.on = httpAppTraces(h)
		}
	})
	return t.on
}

// httpAppTraces reports whether a tracing handler is among the routes of
// the app's servers: their routes, error routes and named routes, and the
// subroutes within.
func httpAppTraces(app *caddyhttp.App) bool {
	for _, srv := range app.Servers {
		if routesTrace(srv.Routes) || (srv.Errors != nil && routesTrace(srv.Errors.Routes)) {
			return true
		}
		for _, rt := range srv.NamedRoutes {
			if rt != nil && routesTrace(caddyhttp.RouteList{*rt}) {
				return true
			}
		}
	}
	return false
}

func routesTrace(routes caddyhttp.RouteList) bool {
	for _, rt := range routes {
		for _, h := range rt.Handlers {
			switch h := h.(type) {
			case *tracing.Tracing:
				return true
			case *caddyhttp.Subroute:
				if routesTrace(h.Routes) {
					return true
				}
			}
		}
	}
	return false
}
