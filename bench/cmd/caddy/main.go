// Command caddy is the Caddy that the load harness measures: ./cmd/caddy
// (Caddy's standard modules and caddy-apikey) plus the harness's floor
// handler (bench/floor), which a site uses only if its config names it.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-apikey/caddy-apikey"
	_ "github.com/caddy-apikey/caddy-apikey/bench/floor"
)

func main() {
	caddycmd.Main()
}
