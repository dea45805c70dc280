package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// This file holds the commands that change existing records: caddy apikey
// update and activate, and caddy apikey account show and update.

// cliUpdateCommand is caddy apikey update: PATCH /keys/{id} with the
// fields of the flags given, and only those.
func cliUpdateCommand() *cobra.Command {
	update := &cobra.Command{
		Use:   "update <id> [--name <name>] [--scope <scope>[,<scope>...]] [--expires <time|duration> | --no-expiry] [--type <type>] [--rate-limit <n>/<window>|unlimited [--burst <n>] | --no-rate-limit] [--quota <n>/day|month | --no-quota] [--metadata <name>=<value>...] [--remove-metadata <name>...] [--no-metadata]",
		Short: "Changes a key's name, scopes, expiry, type, rate limit, quota or metadata",
		Long: `Changes the fields of a key that the flags name, and no other; the key's
string stays the same. It prints the updated key.

--scope replaces the whole list of scopes (repeatable or comma-separated).
--expires takes what create takes (an RFC 3339 time, or a duration from now
such as 720h or 30d); --no-expiry makes the key never expire.
--rate-limit and --quota take what create takes; --no-rate-limit puts the
key back on the configured default rate limit, --no-quota removes its quota.
--metadata name=value sets an entry and keeps the others, --remove-metadata
name removes one (the current metadata is read and written back whole, as
the API replaces it: a change made by someone else in between is lost);
--no-metadata starts from no metadata, so alone it removes all of it and
with --metadata it replaces it.`,
		Args: cobra.ExactArgs(1),
		RunE: cliRunE(cliUpdate),
	}
	fs := update.Flags()
	fs.String("name", "", "New name")
	cliScopeFlag(update, "New scopes, replacing the current ones (repeatable or comma-separated)")
	fs.String("expires", "", "New expiry: an RFC 3339 time or a duration from now such as 720h or 30d")
	fs.Bool("no-expiry", false, "Remove the expiry: the key never expires")
	fs.String("type", "", "New type")
	cliLimitFlags(update, true, "the configured default applies")
	fs.StringArray("metadata", nil, "Set a metadata entry name=value, keeping the others (repeatable)")
	fs.StringArray("remove-metadata", nil, "Remove a metadata entry (repeatable)")
	fs.Bool("no-metadata", false, "Start from no metadata: remove every entry, or with --metadata replace them all")
	return update
}

// cliUpdateFlags names the flags of update, for the message that asks for
// one.
const cliUpdateFlags = "--name, --scope, --expires, --no-expiry, --type, --rate-limit, --no-rate-limit, --quota, --no-quota, --metadata, --remove-metadata or --no-metadata"

func cliUpdate(c *cli, args []string) error {
	fs := c.cmd.Flags()
	body := map[string]any{}
	if err := cliNameFlag(c, body); err != nil {
		return err
	}
	if fs.Changed("scope") {
		scopes, err := cliScopes(c)
		if err != nil {
			return err
		}
		if len(scopes) == 0 {
			return errors.New("--scope must name at least one scope")
		}
		body["scopes"] = scopes
	}
	noExpiry, _ := fs.GetBool("no-expiry")
	switch {
	case noExpiry && fs.Changed("expires"):
		return errors.New("--no-expiry does not go with --expires")
	case noExpiry:
		body["expires_at"] = nil
	case fs.Changed("expires"):
		at, err := cliParseExpiry(cliString(c, "expires"), c.now())
		if err != nil {
			return err
		}
		body["expires_at"] = at.Format(time.RFC3339Nano)
	}
	if fs.Changed("type") {
		body["type"] = cliString(c, "type")
	}
	if err := cliLimitBody(c, body); err != nil {
		return err
	}
	pairs, _ := fs.GetStringArray("metadata")
	remove, _ := fs.GetStringArray("remove-metadata")
	noMetadata, _ := fs.GetBool("no-metadata")
	set := map[string]string{}
	if err := cliParseMetadata(set, pairs); err != nil {
		return err
	}
	for _, n := range remove {
		if _, ok := set[n]; ok {
			return fmt.Errorf("--metadata and --remove-metadata both name %q", n)
		}
	}
	if len(body) == 0 && len(pairs) == 0 && len(remove) == 0 && !noMetadata {
		return errors.New("nothing to update: give at least one of " + cliUpdateFlags)
	}
	if len(pairs) > 0 || len(remove) > 0 || noMetadata {
		m := map[string]string{}
		if !noMetadata {
			// The API replaces the whole map: start from the current one.
			raw, err := c.call(http.MethodGet, cliKeyPath(args[0]), nil)
			if err != nil {
				return err
			}
			var k cliKey
			if err := cliDecode(raw, &k, "show"); err != nil {
				return err
			}
			for n, v := range k.Metadata {
				m[n] = v
			}
		}
		for n, v := range set {
			m[n] = v
		}
		for _, n := range remove {
			delete(m, n)
		}
		if len(m) == 0 {
			body["metadata"] = nil
		} else {
			body["metadata"] = m
		}
	}
	raw, err := c.call(http.MethodPatch, cliKeyPath(args[0]), body)
	if err != nil {
		return err
	}
	if c.json {
		return cliWriteJSON(c.out, raw)
	}
	var k cliKey
	if err := cliDecode(raw, &k, "update"); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(c.out, "Updated key %s (%s).\n\n", k.ID, cliSafe(k.Name)); err != nil {
		return err
	}
	return cliRenderKey(c.out, &k, c.now())
}

// cliActivate is caddy apikey activate. The API answers the record after
// the change, which is the same whether the key was revoked or not, so the
// record is read first to tell "Activated" from "already active". A key
// that has expired stays refused: that is an error (exit status 1), which
// says how to extend the expiry.
func cliActivate(c *cli, args []string) error {
	var before cliKey
	if !c.json {
		raw, err := c.call(http.MethodGet, cliKeyPath(args[0]), nil)
		if err != nil {
			return err
		}
		if err := cliDecode(raw, &before, "show"); err != nil {
			return err
		}
	}
	raw, err := c.call(http.MethodPost, cliKeyPath(args[0])+"/activate", nil)
	if err != nil {
		return err
	}
	var k cliKey
	if err := cliDecode(raw, &k, "activate"); err != nil {
		return err
	}
	if c.json {
		if err := cliWriteJSON(c.out, raw); err != nil {
			return err
		}
	}
	now := c.now()
	switch st := k.status(now); st {
	case keystore.StatusActive:
		if c.json {
			return nil
		}
		if before.RevokedAt == nil && before.ID != "" {
			_, err = fmt.Fprintf(c.out, "Key %s (%s) is already active.\n", k.ID, cliSafe(k.Name))
			return err
		}
		_, err = fmt.Fprintf(c.out, "Activated key %s (%s): active.\n", k.ID, cliSafe(k.Name))
		return err
	case keystore.StatusExpired:
		what := "was activated, but it"
		if !c.json && before.RevokedAt == nil {
			what = "is not revoked, but it"
		}
		return fmt.Errorf("key %s (%s) %s expired %s and is refused until its expiry is extended: caddy apikey update %s --expires <time|duration> (such as 30d), or --no-expiry",
			k.ID, cliSafe(k.Name), what, cliFormatTime(k.ExpiresAt, now, "-"), k.ID)
	default:
		return fmt.Errorf("key %s (%s) is %s after activate", k.ID, cliSafe(k.Name), st)
	}
}

// cliAccountPath is the admin API's path of an account.
func cliAccountPath(id string) string { return "/apikey/accounts/" + url.PathEscape(id) }

// cliAccountLimitFlags adds the flags of an account's limits: those of a
// key's, and --max-keys.
func cliAccountLimitFlags(cmd *cobra.Command, clear bool) {
	cliLimitFlags(cmd, clear, "no account-wide limit")
	usage := "Most keys the account may have, a whole number of at least 1 (default: no bound)"
	if clear {
		usage = "Most keys the account may have, a whole number of at least 1; none or 0 removes the bound"
	}
	cmd.Flags().String("max-keys", "", usage)
}

// cliAccountLimitBody puts rate_limit, quota and max_keys into a request
// body, from the flags that were given. --max-keys none (or 0) sends null.
func cliAccountLimitBody(c *cli, body map[string]any) error {
	if err := cliLimitBody(c, body); err != nil {
		return err
	}
	if !c.cmd.Flags().Changed("max-keys") {
		return nil
	}
	n, err := cliParseMaxKeys(cliString(c, "max-keys"))
	if err != nil {
		return err
	}
	if n == nil {
		body["max_keys"] = nil
	} else {
		body["max_keys"] = *n
	}
	return nil
}

// cliAccountShowCommand is caddy apikey account show.
func cliAccountShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show <id>",
		Short: "Shows an account: status, rate limit, quota and its use, most keys",
		Args:  cobra.ExactArgs(1),
		RunE:  cliRunE(cliAccountShow),
	}
}

func cliAccountShow(c *cli, args []string) error {
	raw, err := c.call(http.MethodGet, cliAccountPath(args[0]), nil)
	if err != nil {
		return err
	}
	if c.json {
		return cliWriteJSON(c.out, raw)
	}
	var a cliAccount
	if err := cliDecode(raw, &a, "account show"); err != nil {
		return err
	}
	return cliRenderAccount(c.out, &a, c.now())
}

// cliAccountUpdateCommand is caddy apikey account update: PATCH
// /accounts/{id} with the fields of the flags given, and only those.
func cliAccountUpdateCommand() *cobra.Command {
	update := &cobra.Command{
		Use:   "update <id> [--name <name>] [--status <status>] [--rate-limit <n>/<window>|unlimited [--burst <n>] | --no-rate-limit] [--quota <n>/day|month | --no-quota] [--max-keys <n>|none]",
		Short: "Changes an account's name, status, rate limit, quota or most keys",
		Long: `Changes the fields of an account that the flags name, and no other, and
prints the updated account. --rate-limit and --quota take what they take for
keys; --no-rate-limit and --no-quota remove them. --max-keys bounds the
number of the account's keys (revoked ones included); none or 0 removes the
bound.`,
		Args: cobra.ExactArgs(1),
		RunE: cliRunE(cliAccountUpdate),
	}
	update.Flags().String("name", "", "New display name")
	update.Flags().String("status", "", "open, pending_cancel, suspended, past_due or terminated")
	cliAccountLimitFlags(update, true)
	return update
}

func cliAccountUpdate(c *cli, args []string) error {
	fs := c.cmd.Flags()
	body := map[string]any{}
	if err := cliNameFlag(c, body); err != nil {
		return err
	}
	if fs.Changed("status") {
		s := cliString(c, "status")
		if err := cliCheckAccountStatus(s); err != nil {
			return err
		}
		body["status"] = s
	}
	if err := cliAccountLimitBody(c, body); err != nil {
		return err
	}
	if len(body) == 0 {
		return errors.New("nothing to update: give at least one of --name, --status, --rate-limit, --no-rate-limit, --quota, --no-quota or --max-keys")
	}
	raw, err := c.call(http.MethodPatch, cliAccountPath(args[0]), body)
	if err != nil {
		return err
	}
	if c.json {
		return cliWriteJSON(c.out, raw)
	}
	var a cliAccount
	if err := cliDecode(raw, &a, "account update"); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(c.out, "Updated account %s.\n\n", a.ID); err != nil {
		return err
	}
	return cliRenderAccount(c.out, &a, c.now())
}

// cliNameFlag puts --name into body if it was given; an empty name is an
// error.
func cliNameFlag(c *cli, body map[string]any) error {
	if !c.cmd.Flags().Changed("name") {
		return nil
	}
	name := cliString(c, "name")
	if strings.TrimSpace(name) == "" {
		return errors.New("--name must not be empty")
	}
	body["name"] = name
	return nil
}
