// Command buildcheck is Caddy with caddy-apikey imported by its root
// package alone, as xcaddy builds it: caddyapikey_test.go builds it and
// checks that every module of the plugin is registered. It is under
// testdata so that ./... leaves it alone.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddy-apikey/caddy-apikey"
)

func main() {
	caddycmd.Main()
}
