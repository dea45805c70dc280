// Package caddyapikey is the caddy-apikey plugin for Caddy v2: importing
// it registers every module of the plugin with Caddy, as the Caddy plugin
// convention has it, so that it is built in with
//
//	xcaddy build --with github.com/caddy-apikey/caddy-apikey
//
// or, in a Caddy main package of your own, with
//
//	import _ "github.com/caddy-apikey/caddy-apikey"
//
// The modules are admin.api.apikey (the admin API on Caddy's admin
// endpoint), apikey (the app: the key store and its settings),
// http.handlers.apikey (verifies a request's key) and
// http.handlers.apikey_admin (the admin API on a site, for an account's
// managers), and the caddy apikey command; they live in package
// caddymodule. See README.md and docs/.
package caddyapikey

import (
	// Registers the plugin's modules and the caddy apikey command.
	_ "github.com/caddy-apikey/caddy-apikey/caddymodule"
)
