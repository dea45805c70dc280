package adminui

import (
	"net/http"
	"time"
)

// Session lifetimes by default.
const (
	// DefaultIdleTimeout ends a session not used for this long (plus at
	// most keystore.SessionTouchInterval: the last use is stored at most
	// once a minute).
	DefaultIdleTimeout = 30 * time.Minute
	// DefaultAbsoluteTimeout ends a session this long after sign-in,
	// however busy.
	DefaultAbsoluteTimeout = 12 * time.Hour
	// MaxSessionsPerKey bounds the sessions of one key: a sign-in beyond
	// it ends that key's oldest session.
	MaxSessionsPerKey = 20
)

// cookieName is the session cookie's name.
const cookieName = "apikey_ui_session"

// pageID names a page in the sessions it creates (keystore.Session.Page):
// whether it is the operator's or a self-service page, and its mount's
// cookie path, so that a cookie of one mount is refused on another.
func pageID(operator bool, path string) string {
	if operator {
		return "operator " + path
	}
	return "self-service " + path
}

// sessionCookie is the cookie that carries token: HttpOnly (no script
// reads it), SameSite=Strict (no other site's page sends it), Secure over
// HTTPS, limited to the page's mount, and living no longer than the
// absolute timeout (the server ends it sooner when idle).
func sessionCookie(token, path string, secure bool, maxAge time.Duration) *http.Cookie {
	return &http.Cookie{
		Name:     cookieName,
		Value:    token,
		Path:     path,
		MaxAge:   int(maxAge / time.Second),
		HttpOnly: true,
		Secure:   secure,
		SameSite: http.SameSiteStrictMode,
	}
}

// clearCookie is the cookie that removes the session cookie.
func clearCookie(path string, secure bool) *http.Cookie {
	c := sessionCookie("", path, secure, 0)
	c.MaxAge = -1
	return c
}
