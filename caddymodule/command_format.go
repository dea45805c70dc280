package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// This file holds the pure helpers of the caddy apikey CLI: parsing of
// flag values and rendering of the admin API's records. They take the
// current time as an argument so that they can be tested.

// cliKey is a key record as the admin API returns it: the store's record
// with the fields the API adds.
type cliKey struct {
	keystore.Key
	Status        string     `json:"status"`
	QuotaUsed     *int64     `json:"quota_used"`
	QuotaResetsAt *time.Time `json:"quota_resets_at"`
	// Plain is the plaintext key, only in the answer to create and
	// regenerate.
	Plain string `json:"key"`
}

// status is the record's status, derived as the store does when the API
// does not send one.
func (k *cliKey) status(now time.Time) string {
	if k.Status != "" {
		return k.Status
	}
	return k.Key.Status(now)
}

// cliAccount is an account record as the admin API returns it.
type cliAccount struct {
	ID        string              `json:"id"`
	Name      string              `json:"name"`
	Status    string              `json:"status"`
	RateLimit *keystore.RateLimit `json:"rate_limit"`
	Quota     *keystore.Quota     `json:"quota"`
	// MaxKeys bounds the number of the account's keys; nil: no bound.
	MaxKeys       *int64     `json:"max_keys"`
	QuotaUsed     *int64     `json:"quota_used"`
	QuotaResetsAt *time.Time `json:"quota_resets_at"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

// cliParseExpiry turns the value of --expires into an absolute time: an
// RFC 3339 time, a Go duration such as 720h, or a number of days such as
// 30d, counted from now. The result must be in the future.
func cliParseExpiry(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, fmt.Errorf("--expires is empty")
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		if !t.After(now) {
			return time.Time{}, fmt.Errorf("--expires %s is in the past", s)
		}
		return t, nil
	}
	d, err := cliParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--expires %q is neither an RFC 3339 time (2026-12-31T23:59:59Z) nor a duration (720h, 30d)", s)
	}
	if d <= 0 {
		return time.Time{}, fmt.Errorf("--expires %s must be a positive duration", s)
	}
	return now.Add(d).UTC(), nil
}

// cliParseDuration parses a Go duration, or a whole number of days with
// the suffix d (30d), which Go durations lack.
func cliParseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n > 1e5 || n < -1e5 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// cliSplitScopes turns the values of --scope into scopes: a value may hold
// several, separated by commas (--scope "contacts:read, billing:read"), and
// spaces around each are trimmed. Each must be a valid scope.
func cliSplitScopes(values []string) ([]string, error) {
	var scopes []string
	for _, v := range values {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				return nil, fmt.Errorf("--scope %q holds an empty scope: separate scopes with commas or repeat --scope", v)
			}
			if _, err := keystore.ParseScope(s); err != nil {
				return nil, fmt.Errorf("--scope %q: %v", s, err)
			}
			scopes = append(scopes, s)
		}
	}
	return scopes, nil
}

// cliParseRateLimit turns the value of --rate-limit into a rate limit:
// "unlimited", or <requests>/<window> such as 100/1m, with burst (from
// --burst, 0 for none) as the bucket size.
func cliParseRateLimit(s string, burst int) (*keystore.RateLimit, error) {
	s = strings.TrimSpace(s)
	if s == "unlimited" {
		if burst != 0 {
			return nil, errors.New("--burst does not go with --rate-limit unlimited")
		}
		return &keystore.RateLimit{Unlimited: true}, nil
	}
	n, window, ok := strings.Cut(s, "/")
	requests, err := strconv.Atoi(strings.TrimSpace(n))
	if !ok || err != nil {
		return nil, fmt.Errorf("--rate-limit %q is neither <requests>/<window> (100/1m) nor unlimited", s)
	}
	rl := &keystore.RateLimit{Requests: requests, Window: strings.TrimSpace(window), Burst: burst}
	if err := rl.Validate(); err != nil {
		return nil, fmt.Errorf("--rate-limit %q: %v", s, err)
	}
	return rl, nil
}

// cliParseQuota turns the value of --quota into a quota:
// <requests>/<day|month>, such as 10000/day.
func cliParseQuota(s string) (*keystore.Quota, error) {
	n, period, ok := strings.Cut(strings.TrimSpace(s), "/")
	requests, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
	if !ok || err != nil {
		return nil, fmt.Errorf("--quota %q is not <requests>/day or <requests>/month (10000/day)", s)
	}
	q := &keystore.Quota{Requests: requests, Period: strings.TrimSpace(period)}
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("--quota %q: %v", s, err)
	}
	return q, nil
}

// cliParseMetadata adds the values of --metadata, each name=value, to m.
// A value may hold "=" and may be empty; a name may not.
func cliParseMetadata(m map[string]string, pairs []string) error {
	for _, p := range pairs {
		name, value, ok := strings.Cut(p, "=")
		if !ok || name == "" {
			return fmt.Errorf("--metadata %q is not name=value", p)
		}
		m[name] = value
	}
	return nil
}

// cliParseMaxKeys turns the value of --max-keys into the JSON value of
// max_keys: a whole number of at least 1, or nil (JSON null: no bound) for
// "none" or 0.
func cliParseMaxKeys(s string) (*int64, error) {
	s = strings.TrimSpace(s)
	if s == "none" || s == "0" {
		return nil, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		return nil, fmt.Errorf("--max-keys %q must be a whole number of at least 1, or none", s)
	}
	return &n, nil
}

// cliRelativeTime describes t as seen at now: "never" for nil, "just now"
// within a minute, "3 minutes ago", "2 hours ago", "5 days ago" (or "in 5
// days" for the future) up to 30 days, then the date: "on 2026-01-02" in
// now's location.
func cliRelativeTime(t *time.Time, now time.Time) string {
	if t == nil {
		return "never"
	}
	d := now.Sub(*t)
	future := d < 0
	if future {
		d = -d
	}
	var n int64
	var unit string
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		n, unit = int64(d/time.Minute), "minute"
	case d < 24*time.Hour:
		n, unit = int64(d/time.Hour), "hour"
	case d < 30*24*time.Hour:
		n, unit = int64(d/(24*time.Hour)), "day"
	default:
		return "on " + t.In(now.Location()).Format("2006-01-02")
	}
	if n != 1 {
		unit += "s"
	}
	if future {
		return fmt.Sprintf("in %d %s", n, unit)
	}
	return fmt.Sprintf("%d %s ago", n, unit)
}

// cliMaxNameWidth bounds the NAME column of the key table.
const cliMaxNameWidth = 40

// cliTruncate shortens s to at most n characters, marking the cut with "…".
func cliTruncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// cliSafe is s as the terminal should see it: quoted, with escapes, if it
// holds anything but printable characters and spaces. Metadata is free
// text a key caller may set through apikey_admin, and a raw escape
// sequence or newline in it would reach the operator's terminal (clear it,
// retitle it, or print a fake "Status:" line); names exclude control
// characters but not Unicode format characters such as U+202E, which
// reverses the text after it.
func cliSafe(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) }) < 0 {
		return s
	}
	return strconv.QuoteToGraphic(s)
}

func cliOrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cliRenderKeyTable writes keys as a table. It never shows a plaintext key,
// even if a record carries one.
func cliRenderKeyTable(w io.Writer, keys []cliKey, now time.Time) error {
	if len(keys) == 0 {
		_, err := fmt.Fprintln(w, "No keys.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tHINT\tSCOPES\tSTATUS\tLAST USED")
	for i := range keys {
		k := &keys[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n",
			k.ID,
			cliSafe(cliTruncate(k.Name, cliMaxNameWidth)),
			cliOrDash(k.Hint),
			cliOrDash(strings.Join(k.Scopes, ",")),
			k.status(now),
			cliRelativeTime(k.LastUsedAt, now))
	}
	return tw.Flush()
}

// cliFormatTime writes an absolute time with its relative description.
func cliFormatTime(t *time.Time, now time.Time, none string) string {
	if t == nil || t.IsZero() {
		return none
	}
	return t.In(now.Location()).Format("2006-01-02 15:04:05 MST") + " (" + cliRelativeTime(t, now) + ")"
}

// cliFormatRateLimit describes a key's or account's own rate limit; none
// is what nil is called: "default" for a key (the configured default
// applies), "none" for an account (no account-wide limit).
func cliFormatRateLimit(rl *keystore.RateLimit, none string) string {
	switch {
	case rl == nil:
		return none
	case rl.Unlimited:
		return "unlimited"
	}
	s := fmt.Sprintf("%d per %s", rl.Requests, rl.Window)
	if rl.Burst > 0 {
		s += fmt.Sprintf(" (burst %d)", rl.Burst)
	}
	return s
}

// cliRenderKey writes one key record as aligned "Field: value" lines. It
// never shows a plaintext key.
func cliRenderKey(w io.Writer, k *cliKey, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	line := func(name, value string) { fmt.Fprintf(tw, "%s:\t%s\n", name, value) }
	line("ID", k.ID)
	line("Name", cliSafe(k.Name))
	line("Account", k.Account)
	line("Type", k.Type)
	line("Scopes", cliOrDash(strings.Join(k.Scopes, ", ")))
	line("Status", k.status(now))
	line("Hint", cliOrDash(k.Hint))
	line("Created", cliFormatTime(&k.CreatedAt, now, "-"))
	line("Updated", cliFormatTime(&k.UpdatedAt, now, "-"))
	line("Expires", cliFormatTime(k.ExpiresAt, now, "never"))
	line("Last used", cliFormatTime(k.LastUsedAt, now, "never"))
	if k.RevokedAt != nil {
		line("Revoked", cliFormatTime(k.RevokedAt, now, "-"))
	}
	line("Rate limit", cliFormatRateLimit(k.RateLimit, "default"))
	line("Quota", cliFormatQuota(k.Quota, k.QuotaUsed, k.QuotaResetsAt, now))
	if len(k.Metadata) > 0 {
		names := make([]string, 0, len(k.Metadata))
		for n := range k.Metadata {
			names = append(names, n)
		}
		sort.Strings(names)
		for i, n := range names {
			label := ""
			if i == 0 {
				label = "Metadata:"
			}
			fmt.Fprintf(tw, "%s\t%s=%s\n", label, cliSafe(n), cliSafe(k.Metadata[n]))
		}
	}
	return tw.Flush()
}

// cliFormatQuota describes a key's or account's quota and its use in the
// current period: "1000 per day, 12 used, resets 2026-03-16 00:00:00 UTC
// (in 12 hours)", or "none".
func cliFormatQuota(q *keystore.Quota, used *int64, resetsAt *time.Time, now time.Time) string {
	if q == nil {
		return "none"
	}
	s := fmt.Sprintf("%d per %s", q.Requests, q.Period)
	if used != nil {
		s += fmt.Sprintf(", %d used", *used)
	}
	if resetsAt != nil {
		s += ", resets " + cliFormatTime(resetsAt, now, "-")
	}
	return s
}

// cliFormatMaxKeys describes an account's bound on its number of keys.
func cliFormatMaxKeys(n *int64) string {
	if n == nil {
		return "none"
	}
	return strconv.FormatInt(*n, 10)
}

// cliRenderNewKey writes the answer to create or regenerate: the one time the
// plaintext key is shown.
func cliRenderNewKey(w io.Writer, verb string, k *cliKey) error {
	_, err := fmt.Fprintf(w, "%s key %s (%s)\n\n  %s\n\nStore it now: it is not shown again.\n", verb, k.ID, cliSafe(k.Name), k.Plain)
	return err
}

// cliRenderAccountTable writes accounts as a table.
func cliRenderAccountTable(w io.Writer, accounts []cliAccount, now time.Time) error {
	if len(accounts) == 0 {
		_, err := fmt.Fprintln(w, "No accounts.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tRATE LIMIT\tQUOTA\tMAX KEYS\tCREATED")
	for _, a := range accounts {
		created := "-"
		if !a.CreatedAt.IsZero() {
			created = cliRelativeTime(&a.CreatedAt, now)
		}
		quota := "none"
		if a.Quota != nil {
			quota = fmt.Sprintf("%d per %s", a.Quota.Requests, a.Quota.Period)
			if a.QuotaUsed != nil {
				quota += fmt.Sprintf(" (%d used)", *a.QuotaUsed)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, cliOrDash(cliSafe(cliTruncate(a.Name, cliMaxNameWidth))), a.Status,
			cliFormatRateLimit(a.RateLimit, "none"), quota, cliFormatMaxKeys(a.MaxKeys), created)
	}
	return tw.Flush()
}

// cliRenderAccount writes one account record as aligned "Field: value"
// lines.
func cliRenderAccount(w io.Writer, a *cliAccount, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	line := func(name, value string) { fmt.Fprintf(tw, "%s:\t%s\n", name, value) }
	line("ID", a.ID)
	line("Name", cliOrDash(cliSafe(a.Name)))
	line("Status", a.Status)
	line("Rate limit", cliFormatRateLimit(a.RateLimit, "none"))
	line("Quota", cliFormatQuota(a.Quota, a.QuotaUsed, a.QuotaResetsAt, now))
	line("Max keys", cliFormatMaxKeys(a.MaxKeys))
	line("Created", cliFormatTime(&a.CreatedAt, now, "-"))
	line("Updated", cliFormatTime(&a.UpdatedAt, now, "-"))
	return tw.Flush()
}

// cliWriteJSON writes raw JSON indented, or as is if it is not JSON.
func cliWriteJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		buf.Reset()
		buf.Write(bytes.TrimSpace(raw))
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}
