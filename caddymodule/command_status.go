package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/spf13/cobra"
)

// cliStatusCommand is caddy apikey status.
func cliStatusCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status [--full]",
		Short: "Shows the key store's backend, counts and, on Redis, its connection, lag and warnings",
		Long: `Shows which backend the running Caddy's key store is on (the Badger
directory, or the Redis URL without its password and the key prefix), how
many keys (in total and revoked) and accounts it holds, and on Redis: the
connection, this replica's lag (how long ago it last confirmed that it
knows every change), whether it refuses key checks for staleness, and the
Redis settings that would lose keys.

The counts of active and expired keys need every key record to be read
(seconds with a million keys): --full counts them.`,
		Args: cobra.NoArgs,
		RunE: cliRunE(cliStatus),
	}
	cmd.Flags().Bool("full", false, "Count active and expired keys too (reads every key record)")
	return cmd
}

func cliStatus(c *cli, _ []string) error {
	uri := "/apikey/status"
	if full, _ := c.cmd.Flags().GetBool("full"); full {
		uri += "?full=true"
	}
	raw, err := c.call(http.MethodGet, uri, nil)
	if err != nil {
		return err
	}
	if c.json {
		return cliWriteJSON(c.out, raw)
	}
	var st storeStatus
	if err := cliDecode(raw, &st, "status"); err != nil {
		return err
	}
	return cliRenderStatus(c.out, &st)
}

// cliRenderStatus prints a status answer as text.
func cliRenderStatus(w io.Writer, st *storeStatus) error {
	var b strings.Builder
	switch {
	case st.Redis != nil:
		r := st.Redis
		fmt.Fprintf(&b, "Backend:    redis %s (key prefix %s)\n", cliSafe(r.URL), cliSafe(r.KeyPrefix))
		if r.Connection == "ok" {
			fmt.Fprintf(&b, "Connection: ok\n")
		} else {
			fmt.Fprintf(&b, "Connection: %s: %s\n", cliSafe(r.Connection), cliSafe(r.Error))
		}
		fmt.Fprintf(&b, "Lag:        %.1f ms (max_staleness %s)\n", r.LagMS, cliSafe(r.MaxStaleness))
		if r.Stale {
			fmt.Fprintf(&b, "Stale:      yes: this replica refuses key checks (503) until Redis confirms it is current\n")
		} else {
			fmt.Fprintf(&b, "Stale:      no\n")
		}
	case st.Badger != nil:
		fmt.Fprintf(&b, "Backend:    badger %s\n", cliSafe(st.Badger.Dir))
	default:
		fmt.Fprintf(&b, "Backend:    %s\n", cliSafe(st.Backend))
	}
	if k := st.Keys; k != nil {
		fmt.Fprintf(&b, "Keys:       %d (%d revoked", k.Total, k.Revoked)
		if k.Active != nil && k.Expired != nil {
			fmt.Fprintf(&b, ", %d active, %d expired)\n", *k.Active, *k.Expired)
		} else {
			fmt.Fprintf(&b, "; --full counts active and expired)\n")
		}
	} else {
		fmt.Fprintf(&b, "Keys:       unknown: %s\n", cliSafe(st.CountsError))
	}
	fmt.Fprintf(&b, "Accounts:   %d\n", st.Accounts)
	if st.Redis != nil {
		if len(st.Redis.Warnings) == 0 {
			fmt.Fprintf(&b, "Warnings:   none\n")
		}
		for _, warn := range st.Redis.Warnings {
			fmt.Fprintf(&b, "Warning:    %s\n", cliSafe(warn))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
