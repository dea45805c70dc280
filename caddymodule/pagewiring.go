package caddymodule

import (
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-apikey/caddy-apikey/adminui"
)

// resourceSet is the resources that the config's apikey handlers require
// scopes of, which the API Keys page's create panel offers.
type resourceSet struct {
	mu    sync.Mutex
	names []string
}

// add notes a resource (not *).
func (s *resourceSet) add(name string) {
	if name == "" || name == "*" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.names, name) {
		s.names = append(s.names, name)
		slices.Sort(s.names)
	}
}

// list returns the resources, sorted.
func (s *resourceSet) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.names)
}

// pageBackend returns what the page drives from the app's open store.
func (a *App) pageBackend() (adminui.Backend, error) {
	b, err := a.backend()
	if err != nil {
		return adminui.Backend{}, err
	}
	return adminui.Backend{API: b.api, Verifier: &b.verifier}, nil
}

// mountOf is the path prefix a handler's route stripped from r's path
// (handle_path /manage/* gives /manage): what the page's cookie is
// limited to. Without a strip it is "".
func mountOf(r *http.Request) string {
	orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request)
	if !ok || orig.URL == nil {
		return ""
	}
	if m, ok := strings.CutSuffix(orig.URL.Path, r.URL.Path); ok {
		return m
	}
	return ""
}
