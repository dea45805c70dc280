package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// cliUsageCommand is caddy apikey usage <id>, or with account, caddy
// apikey account usage <id>: GET /keys/{id}/usage or
// /accounts/{id}/usage, as a table.
func cliUsageCommand(account bool) *cobra.Command {
	what, path := "a key", cliKeyPath
	if account {
		what, path = "an account (the sum of its keys)", cliAccountPath
	}
	cmd := &cobra.Command{
		Use:   "usage <id> [--interval hour|day] [--from <time|duration>] [--to <time|duration>]",
		Short: "Shows the requests of " + what + " per hour or day: passed, and refused by code",
		Long: `Shows the requests of ` + what + ` per hour or per day (UTC): those that
passed, and those refused by refusal code (only the codes that occur get a
column). Every interval from --from to --to has a row, zeros included.

--from and --to take an RFC 3339 time (2026-12-01T00:00:00Z) or a duration
before now (24h, 7d). Defaults: --to now, --from 24 hours before --to
(30 days with --interval day). Hourly points are kept 7 days and daily
ones 90 days unless the apikey app's usage_hourly_retention and
usage_daily_retention say otherwise. The counts reach the store with the
last-used times (every last_used_flush, 30s by default).`,
		Args: cobra.ExactArgs(1),
		RunE: cliRunE(func(c *cli, args []string) error { return cliUsage(c, path(args[0])+"/usage") }),
	}
	cmd.Flags().String("interval", "", "hour (default) or day")
	cmd.Flags().String("from", "", "Start: an RFC 3339 time or a duration before now such as 48h or 7d")
	cmd.Flags().String("to", "", "End (exclusive): an RFC 3339 time or a duration before now")
	return cmd
}

// cliUsageSeries is the answer of the usage endpoints.
type cliUsageSeries struct {
	Key      string          `json:"key"`
	Account  string          `json:"account"`
	Interval string          `json:"interval"`
	From     time.Time       `json:"from"`
	To       time.Time       `json:"to"`
	Points   []cliUsagePoint `json:"points"`
	Totals   cliUsageCounts  `json:"totals"`
}

type cliUsageCounts struct {
	Passed       uint64            `json:"passed"`
	Refused      map[string]uint64 `json:"refused"`
	RefusedTotal uint64            `json:"refused_total"`
}

type cliUsagePoint struct {
	Start time.Time `json:"start"`
	cliUsageCounts
}

func cliUsage(c *cli, path string) error {
	q := url.Values{}
	if v := cliString(c, "interval"); v != "" {
		if v != keystore.UsageHour && v != keystore.UsageDay {
			return fmt.Errorf("--interval must be hour or day, not %q", v)
		}
		q.Set("interval", v)
	}
	for _, name := range []string{"from", "to"} {
		v := cliString(c, name)
		if v == "" {
			continue
		}
		t, err := cliParseSince(name, v, c.now())
		if err != nil {
			return err
		}
		q.Set(name, t.Format(time.RFC3339))
	}
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	raw, err := c.call(http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	if c.json {
		return cliWriteJSON(c.out, raw)
	}
	var u cliUsageSeries
	if err := cliDecode(raw, &u, "usage"); err != nil {
		return err
	}
	return cliRenderUsage(c.out, &u)
}

// cliParseSince turns the value of --from or --to into a time: an RFC 3339
// time, or a duration (720h, 30d) before now.
func cliParseSince(flag, s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	d, err := cliParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("--%s %q is neither an RFC 3339 time (2026-12-01T00:00:00Z) nor a duration before now (24h, 7d)", flag, s)
	}
	return now.Add(-d).UTC(), nil
}

// cliRenderUsage writes a usage series as a table: a row per interval and
// a total, a column per refusal code that occurs.
func cliRenderUsage(w io.Writer, u *cliUsageSeries) error {
	layout := "2006-01-02 15:04"
	if u.Interval == keystore.UsageDay {
		layout = "2006-01-02"
	}
	who := "Account " + u.Account
	if u.Key != "" {
		who = "Key " + u.Key + " (account " + u.Account + ")"
	}
	per := "hourly"
	if u.Interval == keystore.UsageDay {
		per = "daily"
	}
	fmt.Fprintf(w, "%s: %s requests from %s to %s UTC\n", who, per,
		u.From.UTC().Format("2006-01-02 15:04"), u.To.UTC().Format("2006-01-02 15:04"))
	var codes []string
	for code, n := range u.Totals.Refused {
		if n > 0 {
			codes = append(codes, code)
		}
	}
	slices.Sort(codes)
	// Right-aligned columns, two spaces apart (tabwriter's padding would
	// indent the first column too).
	tw := tabwriter.NewWriter(w, 0, 8, 0, ' ', tabwriter.AlignRight)
	line := func(cells []string) { fmt.Fprintln(tw, strings.Join(cells, "\t  ")+"\t") }
	row := func(start string, c *cliUsageCounts) {
		cells := []string{start, strconv.FormatUint(c.Passed, 10), strconv.FormatUint(c.RefusedTotal, 10)}
		for _, code := range codes {
			cells = append(cells, strconv.FormatUint(c.Refused[code], 10))
		}
		line(cells)
	}
	head := []string{"START", "PASSED", "REFUSED"}
	for _, code := range codes {
		head = append(head, strings.ToUpper(code))
	}
	line(head)
	for i := range u.Points {
		p := &u.Points[i]
		row(p.Start.UTC().Format(layout), &p.cliUsageCounts)
	}
	row("TOTAL", &u.Totals)
	return tw.Flush()
}
