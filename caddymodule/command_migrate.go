package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore"
	"github.com/caddy-apikey/caddy-apikey/keystore/badgerstore"
	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
	"github.com/caddy-apikey/caddy-apikey/keystore/redisstore"
)

// cliMigrateCommand is caddy apikey migrate: the offline copy of a store
// from one backend to another.
func cliMigrateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate --from <badger dir|redis url> --to <badger dir|redis url> [--key-prefix <prefix>] [--merge]",
		Short: "Copies a store to another backend, with Caddy stopped (Badger to Redis, and back)",
		Long: `Copies every entry of a key store to another backend: keys (by hash: the
plaintexts are not needed), the strings of grace periods still running
with the time they have left, accounts, audit events, quota counts and
last-used times. Every key that verified on the source verifies on the
target. A value that starts with redis:// or rediss:// is a Redis URL,
anything else a Badger directory.

It is an offline tool: stop every Caddy that uses the source or the target
first, and start them on the target after. A Badger directory in use is
refused (its lock); a Redis store is not locked, so a write made meanwhile
by a replica still running may be missed.

A target that holds keys or accounts (other than default) is refused,
unless --merge: the source's entries are then written over the target's,
after a check that no key id or hash is in both with different contents
(if one is, nothing is written and the error lists them).

After the copy, the target is counted and opened as a key store, and the
hash of every key is looked up as a verification would: the command fails
if a count differs or a hash does not resolve.`,
		Args: cobra.NoArgs,
		RunE: cliRunE(cliMigrate),
	}
	fs := cmd.Flags()
	fs.String("from", "", "The store to copy: a Badger directory or a redis:// URL (required)")
	fs.String("to", "", "Where to copy it: a Badger directory or a redis:// URL (required)")
	fs.String("key-prefix", "apikey:", "Prefix of the store's Redis keys (the redis option key_prefix)")
	fs.Bool("merge", false, "Copy into a target that holds keys already")
	return cmd
}

// cliMigrateResult is migrate's report (--json).
type cliMigrateResult struct {
	From      string          `json:"from"`
	To        string          `json:"to"`
	KeyPrefix string          `json:"key_prefix,omitempty"`
	Merge     bool            `json:"merge"`
	Source    keystore.Census `json:"source"`
	Target    keystore.Census `json:"target"`
	// VerifiedKeys is the number of keys whose hashes resolve on the
	// target.
	VerifiedKeys int     `json:"verified_keys"`
	Seconds      float64 `json:"seconds"`
}

func cliMigrate(c *cli, _ []string) error {
	from, to := cliString(c, "from"), cliString(c, "to")
	prefix := cliString(c, "key-prefix")
	merge, _ := c.cmd.Flags().GetBool("merge")
	if from == "" || to == "" {
		return errors.New("--from and --to are required: a Badger directory or a redis:// URL each")
	}
	if prefix == "" {
		return errors.New("--key-prefix must not be empty")
	}
	src, err := cliMigrateEndpoint(from)
	if err != nil {
		return err
	}
	dst, err := cliMigrateEndpoint(to)
	if err != nil {
		return err
	}
	if src == dst {
		return fmt.Errorf("--from and --to name the same store: %s", cliShowEndpoint(src, prefix))
	}
	start := time.Now()
	source, err := cliOpenEngine(src, prefix, true)
	if err != nil {
		return err
	}
	target, err := cliOpenEngine(dst, prefix, false)
	if err != nil {
		source.Close()
		return err
	}
	now := time.Now()
	census, err := keystore.Copy(source, target, merge, now)
	if cerr := source.Close(); err == nil {
		err = cerr
	}
	var ne *keystore.NotEmptyError
	if errors.As(err, &ne) {
		err = fmt.Errorf("%s: %v; nothing was written (--merge copies into it)", cliShowEndpoint(dst, prefix), err)
	}
	if err != nil {
		target.Close()
		return err
	}
	res := cliMigrateResult{From: cliShowEndpoint(src, ""), To: cliShowEndpoint(dst, ""), Merge: merge, Source: census}
	if cliIsRedis(src) || cliIsRedis(dst) {
		res.KeyPrefix = prefix
	}
	res.Target, err = keystore.CensusOf(target, now)
	if err != nil {
		target.Close()
		return fmt.Errorf("counting the target after the copy: %v", err)
	}
	if diff := res.Target.Differences(census, merge); len(diff) > 0 {
		target.Close()
		return fmt.Errorf("the target's counts do not match the source's after the copy: %s", strings.Join(diff, "; "))
	}
	st, err := keystore.Open(keystore.Options{Engine: target, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("opening the target as a key store after the copy: %v", err)
	}
	bad, checked, err := st.CheckHashes()
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("verifying the target's keys: %v", err)
	}
	if len(bad) > 0 {
		return fmt.Errorf("after the copy, %d keys of the target do not resolve by their hash: %s", len(bad), strings.Join(bad[:min(len(bad), 20)], ", "))
	}
	res.VerifiedKeys = checked
	res.Seconds = time.Since(start).Seconds()
	if c.json {
		return json.NewEncoder(c.out).Encode(res)
	}
	return cliRenderMigrate(c.out, &res, time.Since(start))
}

// cliIsRedis reports whether a --from or --to value is a Redis URL.
func cliIsRedis(s string) bool {
	return strings.HasPrefix(s, "redis://") || strings.HasPrefix(s, "rediss://")
}

// cliMigrateEndpoint is a --from or --to value: a Redis URL as given, or
// a Badger directory made absolute.
func cliMigrateEndpoint(s string) (string, error) {
	if cliIsRedis(s) {
		return s, nil
	}
	abs, err := filepath.Abs(s)
	if err != nil {
		return "", fmt.Errorf("%s: %v", s, err)
	}
	return abs, nil
}

// cliShowEndpoint prints an endpoint: a directory, or a Redis URL without
// its password (and the key prefix, if given).
func cliShowEndpoint(s, prefix string) string {
	if !cliIsRedis(s) {
		return s
	}
	if prefix != "" {
		return redactURL(s) + " (key prefix " + prefix + ")"
	}
	return redactURL(s)
}

// cliOpenEngine opens a store's engine for migrate. A source must hold a
// store: a Badger directory with Badger's files, a Redis key prefix with
// the store's schema marker.
func cliOpenEngine(s, prefix string, source bool) (kv.Copier, error) {
	if cliIsRedis(s) {
		e, err := redisstore.Open(redisstore.Options{
			URL:       s,
			Namespace: prefix,
			Bucket:    keystore.ScanBucket,
			Watched:   keystore.Watched,
			Origin:    "migrate/" + processOrigin(),
		})
		if err != nil {
			return nil, err
		}
		if source {
			if ok, err := cliHasStore(e); err != nil || !ok {
				e.Close()
				if err == nil {
					err = fmt.Errorf("%s holds no key store (no %sv:m/schema): check the URL, its database number and --key-prefix", redactURL(s), prefix)
				}
				return nil, err
			}
		}
		return e, nil
	}
	if source {
		if _, err := os.Stat(filepath.Join(s, "MANIFEST")); err != nil {
			return nil, fmt.Errorf("%s holds no Badger key store (%v)", s, err)
		}
	}
	e, err := badgerstore.Open(s, zap.NewNop())
	if cliStoreLocked(err) {
		return nil, fmt.Errorf("the store at %s is in use: stop Caddy first (caddy stop), then run migrate again", s)
	}
	return e, err
}

// cliHasStore reports whether an engine holds a key store's schema marker.
func cliHasStore(e kv.Engine) (bool, error) {
	var ok bool
	err := e.View(func(t kv.Txn) error {
		var err error
		ok, err = t.Exists([]byte("m/schema"))
		return err
	})
	return ok, err
}

// cliRenderMigrate prints migrate's report.
func cliRenderMigrate(w io.Writer, r *cliMigrateResult, took time.Duration) error {
	prefix := ""
	if r.KeyPrefix != "" {
		prefix = " (key prefix " + r.KeyPrefix + ")"
	}
	verb := "Copied"
	if r.Merge {
		verb = "Merged"
	}
	s, t := r.Source, r.Target
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s into %s%s in %s.\n", verb, r.From, r.To, prefix, took.Round(time.Millisecond))
	fmt.Fprintf(&b, "  %-16s %10s %10s\n", "", "source", "target")
	row := func(name string, src, dst int64) { fmt.Fprintf(&b, "  %-16s %10d %10d\n", name, src, dst) }
	row("keys", s.Keys.Total, t.Keys.Total)
	row("  active", s.Keys.Active, t.Keys.Active)
	row("  revoked", s.Keys.Revoked, t.Keys.Revoked)
	row("  expired", s.Keys.Expired, t.Keys.Expired)
	row("accounts", s.Accounts, t.Accounts)
	row("audit events", s.AuditEvents, t.AuditEvents)
	row("hash entries", s.HashEntries, t.HashEntries)
	row("  grace period", s.GraceHashes, t.GraceHashes)
	row("quota counts", s.QuotaCounts, t.QuotaCounts)
	row("last-used", s.LastUsed, t.LastUsed)
	row("entries", s.Entries, t.Entries)
	fmt.Fprintf(&b, "Verified: the target's counts match, and the hashes of its %d keys resolve.\n", r.VerifiedKeys)
	_, err := io.WriteString(w, b.String())
	return err
}
