package adminui

import "net/http"

// contentSecurityPolicy allows the page's own scripts, styles and API
// calls and nothing else: no inline script or style, nothing from another
// origin, no framing, no forms posting anywhere, no <base> rewriting.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// setSecurityHeaders sets the headers of every answer of the page's
// handler, assets and errors included. The operator's page sends its
// Referer to its own origin (same-origin), and to no other: Caddy's admin
// endpoint refuses a browser's request that has neither Origin nor
// Referer, which a same-origin GET (a script, a fetch) has not.
func setSecurityHeaders(h http.Header, operator bool) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	if operator {
		h.Set("Referrer-Policy", "same-origin")
	} else {
		h.Set("Referrer-Policy", "no-referrer")
	}
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
}
