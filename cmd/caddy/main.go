// Command caddy is Caddy with its standard modules and caddy-apikey, as
// "xcaddy build --with github.com/caddy-apikey/caddy-apikey" would build
// it.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-apikey/caddy-apikey"
)

func main() {
	caddycmd.Main()
}
