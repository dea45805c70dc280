package caddymodule

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("apikey", parseGlobalOption)
	httpcaddyfile.RegisterDirective("apikey", parseHandlerDirective)
	// After basic_auth and forward_auth, before the handlers that serve or
	// proxy: no route or order block needed.
	httpcaddyfile.RegisterDirectiveOrder("apikey", httpcaddyfile.After, "forward_auth")
}

// parseGlobalOption sets up the apikey app from the global options block:
//
//	{
//		apikey {
//			storage <dir>
//			redis <url> {
//				key_prefix <prefix>
//				max_staleness <duration>
//			}
//			prefix <p>
//			length <n>
//			checksum on|off
//			cache_size <n>
//			last_used_flush <duration>
//			usage_hourly_retention <duration>
//			usage_daily_retention <duration>
//			accept_foreign_keys
//			rate_limit <n> <window> [burst <b>] | off
//			purge_revoked_after <duration>|off
//			purge_interval <duration>
//			expiring_notice <duration>|off
//			expiry_check_interval <duration>
//		}
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("the apikey global option is given twice: put all of its settings in one block")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	b, err := json.Marshal(app)
	if err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "apikey", Value: b}, nil
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens (see
// parseGlobalOption for the syntax).
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "storage":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if a.Storage = d.Val(); a.Storage == "" {
				return d.Err("storage: an empty path (leave the option out for the default)")
			}
		case "redis":
			var r RedisStore
			if err := r.UnmarshalCaddyfile(d); err != nil {
				return err
			}
			if a.StoreRaw != nil {
				return d.Err("redis: the store is already set")
			}
			a.StoreRaw = caddyconfig.JSONModuleObject(r, "backend", "redis", nil)
		case "prefix":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if a.Prefix = d.Val(); a.Prefix == "" {
				return d.Err("prefix: an empty prefix (leave the option out for the default, ak_)")
			}
		case "length":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			if n == 0 { // the JSON's "unset": in a Caddyfile, a mistake
				return d.Errf("length: must be %d to %d (leave the option out for the default, %d)", keystore.MinLength, keystore.MaxLength, keystore.DefaultLength)
			}
			a.Length = n
		case "checksum":
			on, err := onOffArg(d)
			if err != nil {
				return err
			}
			a.Checksum = &on
		case "cache_size":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			a.CacheSize = n
		case "last_used_flush":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			a.LastUsedFlush = caddy.Duration(dur)
		case "usage_hourly_retention", "usage_daily_retention":
			opt := d.Val()
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			limit, field := keystore.MaxUsageHourRetention, &a.UsageHourlyRetention
			if opt == "usage_daily_retention" {
				limit, field = keystore.MaxUsageDayRetention, &a.UsageDailyRetention
			}
			if dur <= 0 || dur > limit {
				return d.Errf("%s: want a positive duration of at most %s, got %s", opt, limit, dur)
			}
			*field = caddy.Duration(dur)
		case "accept_foreign_keys":
			a.AcceptForeignKeys = true
		case "rate_limit":
			rl, err := rateLimitArgs(d)
			if err != nil {
				return err
			}
			a.RateLimit = rl
		case "purge_revoked_after":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "off" {
				a.PurgeRevokedAfter = -1
				break
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("purge_revoked_after: want a positive duration or off, got %s", d.Val())
			}
			a.PurgeRevokedAfter = caddy.Duration(dur)
		case "purge_interval":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			if dur <= 0 {
				return d.Err("purge_interval must be a positive duration")
			}
			a.PurgeInterval = caddy.Duration(dur)
		case "expiring_notice":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "off" {
				a.ExpiringNotice = -1
				break
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("expiring_notice: want a positive duration or off, got %s", d.Val())
			}
			a.ExpiringNotice = caddy.Duration(dur)
		case "expiry_check_interval":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			if dur <= 0 {
				return d.Err("expiry_check_interval must be a positive duration")
			}
			a.ExpiryCheckInterval = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized apikey option: %s", d.Val())
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	if a.Storage != "" && a.StoreRaw != nil {
		return d.Err("storage and redis are exclusive: storage is the embedded Badger store's directory, redis a store shared by several Caddy processes")
	}
	return nil
}

// parseHandler sets up the apikey handler. Syntax:
//
//	apikey [<scope>] {
//		require <scope>
//		header <name>
//		bearer on|off
//		forward_key
//		escaped_slashes reject|keep
//	}
func parseHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// parseHandlerDirective is what RegisterHandlerDirective would register for
// parseHandler, with one difference: "apikey *" is the scope * (a grant of
// *:<access> needed), not Caddy's match-all matcher token, which would
// drop it and let any valid key through. The matcher is not needed there:
// apikey without one already matches every request.
func parseHandlerDirective(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
	if !h.Next() {
		return nil, h.ArgErr()
	}
	var matcherSet caddy.ModuleMap
	if loneStar(h.Dispenser) {
		h.Dispenser.Reset()
	} else {
		var err error
		if matcherSet, err = h.ExtractMatcherSet(); err != nil {
			return nil, err
		}
	}
	handler, err := parseHandler(h)
	if err != nil {
		return nil, err
	}
	return h.NewRoute(matcherSet, handler), nil
}

// requireOption sets the required scope from the current token, checked
// now, so that a bad one is reported with the Caddyfile's file and line
// (Provision would report it inside a chain of module-loading errors).
func requireOption(d *caddyfile.Dispenser, require *string) error {
	if _, err := keystore.ParseRequirement(d.Val()); err != nil {
		return d.Errf("apikey: %v (a scope is resource:read, resource:write, resource:delete, or a bare resource whose access comes from the method)", err)
	}
	*require = d.Val()
	return nil
}

// loneStar reports whether the directive's only argument is "*".
func loneStar(d *caddyfile.Dispenser) bool {
	if d.CountRemainingArgs() != 1 {
		return false
	}
	d.NextArg()
	star := d.Val() == "*"
	d.Prev()
	return star
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens (see
// parseHandler for the syntax).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		if err := requireOption(d, &h.Require); err != nil {
			return err
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "require":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if h.Require != "" {
				return d.Err("the required scope is already set")
			}
			if err := requireOption(d, &h.Require); err != nil {
				return err
			}
		case "header", "bearer":
			if err := keySourceOption(d, &h.Header, &h.Bearer); err != nil {
				return err
			}
		case "forward_key":
			h.ForwardKey = true
		case "escaped_slashes":
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch d.Val() {
			case EscapedSlashesReject, EscapedSlashesKeep:
				h.EscapedSlashes = d.Val()
			default:
				return d.Errf("escaped_slashes: want %s or %s, got %s", EscapedSlashesReject, EscapedSlashesKeep, d.Val())
			}
		default:
			return d.Errf("unrecognized apikey subdirective: %s", d.Val())
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

// rateLimitArgs parses "<n> <window> [burst <b>]" or "off".
func rateLimitArgs(d *caddyfile.Dispenser) (*keystore.RateLimit, error) {
	args := d.RemainingArgs()
	if len(args) == 1 && args[0] == "off" {
		return &keystore.RateLimit{Unlimited: true}, nil
	}
	if len(args) != 2 && !(len(args) == 4 && args[2] == "burst") {
		return nil, d.Err("rate_limit: want <n> <window> [burst <b>] or off")
	}
	rl := &keystore.RateLimit{Window: args[1]}
	var err error
	if rl.Requests, err = strconv.Atoi(args[0]); err != nil {
		return nil, d.Errf("rate_limit: %s is not a whole number", args[0])
	}
	if len(args) == 4 {
		if rl.Burst, err = strconv.Atoi(args[3]); err != nil || rl.Burst < 1 {
			return nil, d.Errf("rate_limit: burst %s is not a positive whole number", args[3])
		}
	}
	if err := rl.Validate(); err != nil {
		return nil, d.Errf("%v", err)
	}
	return rl, nil
}

// keySourceOption parses the subdirectives that say where the key is sent,
// shared by apikey and apikey_admin: header <name> and bearer on|off.
func keySourceOption(d *caddyfile.Dispenser, header *string, bearer **bool) error {
	if d.Val() == "bearer" {
		on, err := onOffArg(d)
		if err != nil {
			return err
		}
		*bearer = &on
		return nil
	}
	if !d.NextArg() {
		return d.ArgErr()
	}
	if d.Val() == "" {
		return d.Err("header: the name must not be empty")
	}
	*header = d.Val()
	return nil
}

func intArg(d *caddyfile.Dispenser) (int, error) {
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	n, err := strconv.Atoi(d.Val())
	if err != nil {
		return 0, d.Errf("%s: not a whole number: %s", d.Val(), err)
	}
	return n, nil
}

func onOffArg(d *caddyfile.Dispenser) (bool, error) {
	if !d.NextArg() {
		return false, d.ArgErr()
	}
	switch d.Val() {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, d.Errf("want on or off, got %s", d.Val())
}

func durationArg(d *caddyfile.Dispenser) (time.Duration, error) {
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil {
		return 0, d.Errf("%s: %v", d.Val(), err)
	}
	return dur, nil
}

// Interface guards.
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
