package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "apikey",
		Usage: "<command> [--address <interface>] [--config <path> [--adapter <name>]] [--json]",
		Short: "Manages the API keys and accounts of the running Caddy",
		Long: `
Manages API keys and accounts through the admin endpoint of the running
Caddy (its /apikey/ routes): create, list, show, update, revoke, activate,
regenerate, delete and import keys, show their usage, and create, list,
show and update accounts and show their usage. "load" is the exception: it fills a new store offline, with
Caddy stopped.

The admin endpoint is found as "caddy reload" finds it: --address if given;
otherwise the admin address of the --config file (or of the Caddyfile in
the current directory); otherwise ` + caddy.DefaultAdminListen + `.

Every command takes --json to print the admin API's JSON answer instead of
text. Errors are printed on stderr and the exit status is not zero.

A key's plaintext is printed only by create and regenerate: store it then.`,
		CobraFunc: cliSetup,
	})
}

// cliDocsURL is where caddy apikey is documented.
const cliDocsURL = "https://github.com/caddy-apikey/caddy-apikey/blob/main/docs/admin-api.md#5-the-caddy-apikey-cli"

// cliSetup adds the flags and subcommands of caddy apikey.
func cliSetup(cmd *cobra.Command) {
	// Caddy's root command ends every help text with a pointer to Caddy's
	// command-line docs; caddy apikey and its subcommands (which inherit
	// this template) point to this plugin's docs instead. cmd has no
	// parent yet, so HelpTemplate is cobra's default.
	cmd.SetHelpTemplate(cmd.HelpTemplate() + "\nFull documentation of caddy apikey is available at:\n" + cliDocsURL + "\n")
	// Without a Run, cobra prints the help and exits 0 for an unknown
	// subcommand (caddy apikey rotate): refuse it instead.
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = cliRunE(cliNoSubcommand)
	cmd.SuggestionsMinimumDistance = 2
	cmd.SetFlagErrorFunc(cliFlagError)
	pf := cmd.PersistentFlags()
	pf.String("address", "", "Address of the admin endpoint (default: from --config, else "+caddy.DefaultAdminListen+")")
	pf.StringP("config", "c", "", "Configuration file to read the admin address from, if --address is not used")
	pf.StringP("adapter", "a", "", "Name of the config adapter of --config")
	pf.Bool("json", false, "Print the admin API's JSON answer")

	create := &cobra.Command{
		Use:   "create --name <name> --scope <scope>[,<scope>...] [--account <id>] [--expires <time|duration>] [--type <type>] [--rate-limit <n>/<window>|unlimited [--burst <n>]] [--quota <n>/day|month] [--metadata <name>=<value>...]",
		Short: "Creates a key and prints it (the only time it is shown)",
		Long: `Creates a key and prints it with its id. The key is shown only once.

--scope is repeatable, and a value may hold several scopes separated by
commas: --scope contacts:read,billing:read.

--expires takes an RFC 3339 time (2026-12-31T23:59:59Z) or a duration from
now (720h, 90m, or 30d for days).

--rate-limit gives the key its own limit instead of the configured default:
<requests>/<window> (100/1m, with --burst for the bucket size) or unlimited.
--quota is <requests>/day or <requests>/month.`,
		Args: cobra.NoArgs,
		RunE: cliRunE(cliCreate),
	}
	create.Flags().String("name", "", "Name of the key (required)")
	cliScopeFlag(create, "Scopes granted to the key, resource:read|write|delete (required; repeatable or comma-separated)")
	create.Flags().String("account", "", "Account that owns the key (default: default)")
	create.Flags().String("expires", "", "Expiry: an RFC 3339 time or a duration from now such as 720h or 30d")
	create.Flags().String("type", "", "Type of the key (default: api)")
	cliLimitFlags(create, false, "")
	create.Flags().StringArray("metadata", nil, "Metadata entry name=value (repeatable)")

	list := &cobra.Command{
		Use:   "list [--account <id>] [--status active|revoked|expired] [--search <text>] [--limit <n>]",
		Short: "Lists keys, newest first",
		Args:  cobra.NoArgs,
		RunE:  cliRunE(cliList),
	}
	list.Flags().String("account", "", "Only keys of this account")
	list.Flags().String("status", "", "Only keys in this status: active, revoked or expired")
	list.Flags().String("search", "", "Only keys whose name contains this text (case-insensitive)")
	list.Flags().Int("limit", 0, "List at most this many keys (default: all)")

	show := &cobra.Command{
		Use:   "show <id>",
		Short: "Shows a key",
		Args:  cobra.ExactArgs(1),
		RunE:  cliRunE(cliShow),
	}
	revoke := &cobra.Command{
		Use:   "revoke <id>",
		Short: "Revokes a key: it is refused at once",
		Args:  cobra.ExactArgs(1),
		RunE:  cliRunE(cliKeyAction("revoke", "Revoked")),
	}
	activate := &cobra.Command{
		Use:   "activate <id>",
		Short: "Re-activates a revoked key",
		Long: `Re-activates a revoked key. A key that is not revoked is left as it is.

Activate does not change the expiry: if the key has expired, it stays
refused, the command says how to extend the expiry (caddy apikey update
<id> --expires ...) and the exit status is 1.`,
		Args: cobra.ExactArgs(1),
		RunE: cliRunE(cliActivate),
	}
	regenerate := &cobra.Command{
		Use:   "regenerate <id> [--grace <duration>]",
		Short: "Replaces a key's string, keeping its id, name, scopes and expiry",
		Long: `Replaces a key's string and prints the new one (the only time it is shown).
The old string stops working at once, or with --grace at the end of that
period (never later than the key's own expiry).`,
		Args: cobra.ExactArgs(1),
		RunE: cliRunE(cliRegenerate),
	}
	regenerate.Flags().String("grace", "", "Keep the old string working for this long, such as 24h")
	del := &cobra.Command{
		Use:   "delete <id>",
		Short: "Deletes a key and its audit events for good",
		Args:  cobra.ExactArgs(1),
		RunE:  cliRunE(cliDelete),
	}
	imp := &cobra.Command{
		Use:   "import <file>",
		Short: "Imports existing keys from a JSON file (- for stdin)",
		Long: `Imports existing keys, all or nothing, from a JSON array of entries: each
has "key" (the plaintext) or "sha256" (its hex SHA-256), and the fields of
create ("name", "scopes", "account", "expires_at", "type", ...).`,
		Args: cobra.ExactArgs(1),
		RunE: cliRunE(cliImport),
	}

	account := &cobra.Command{
		Use:   "account <command>",
		Short: "Manages accounts",
		Args:  cobra.ArbitraryArgs,
		RunE:  cliRunE(cliNoSubcommand),

		SuggestionsMinimumDistance: 2,
	}
	accountCreate := &cobra.Command{
		Use:   "create --id <id> [--name <name>] [--status <status>] [--rate-limit <n>/<window>|unlimited [--burst <n>]] [--quota <n>/day|month] [--max-keys <n>]",
		Short: "Creates an account",
		Args:  cobra.NoArgs,
		RunE:  cliRunE(cliAccountCreate),
	}
	accountCreate.Flags().String("id", "", "Account id: [a-z0-9][a-z0-9_-]{0,62} (required)")
	accountCreate.Flags().String("name", "", "Display name")
	accountCreate.Flags().String("status", "", "open, pending_cancel, suspended, past_due or terminated (default: open)")
	cliAccountLimitFlags(accountCreate, false)
	accountList := &cobra.Command{
		Use:   "list",
		Short: "Lists accounts",
		Args:  cobra.NoArgs,
		RunE:  cliRunE(cliAccountList),
	}
	accountSetStatus := &cobra.Command{
		Use:   "set-status <id> <status>",
		Short: "Changes an account's status: keys of suspended, past_due and terminated accounts are refused",
		Args:  cobra.ExactArgs(2),
		RunE:  cliRunE(cliAccountSetStatus),
	}
	account.AddCommand(accountCreate, accountList, cliAccountShowCommand(), cliAccountUpdateCommand(), accountSetStatus, cliUsageCommand(true))

	cmd.AddCommand(create, list, show, cliUpdateCommand(), revoke, activate, regenerate, del, imp, cliUsageCommand(false), cliLoadCommand(), cliMigrateCommand(), cliStatusCommand(), cliUICommand(), account)
}

// cli is what a subcommand runs with: where its output goes and how it
// reaches the admin endpoint.
type cli struct {
	cmd  *cobra.Command
	out  io.Writer
	json bool
	addr string // found on the first request
	now  func() time.Time
}

// cliNow is the commands' clock; tests replace it.
var cliNow = time.Now

// cliRunE adapts a subcommand to cobra: an error is printed on stderr as
// "Error: ..." and makes the command fail (exit status 1 under caddy).
func cliRunE(f func(c *cli, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		jsonOut, _ := cmd.Flags().GetBool("json")
		c := &cli{cmd: cmd, out: cmd.OutOrStdout(), json: jsonOut, now: cliNow}
		err := f(c, args)
		if err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "Error:", err)
			cmd.SilenceErrors = true
		}
		return err
	}
}

// cliAdminAddress finds the admin endpoint as caddy reload does: the
// address if given, else the admin address of the config file (the
// Caddyfile of the current directory if none is given), else the default.
func cliAdminAddress(address, configFile, adapter string, stdin io.Reader) (string, error) {
	if address != "" {
		return address, nil
	}
	configFile, err := cliConfigFile(configFile, adapter)
	if err != nil || configFile == "" {
		return caddy.DefaultAdminListen, err
	}
	config, err := cliLoadConfig(configFile, adapter, stdin)
	if err != nil {
		return "", fmt.Errorf("reading the admin address from %s: %v (or use --address)", configFile, err)
	}
	return caddycmd.DetermineAdminAPIAddress("", config, configFile, adapter)
}

// cliConfigFile is the config file to read, as caddy reload finds it:
// --config, or ./Caddyfile if there is one; "" if neither.
func cliConfigFile(configFile, adapter string) (string, error) {
	if configFile != "" {
		return configFile, nil
	}
	if adapter != "" {
		return "", errors.New("--adapter needs --config")
	}
	if _, err := os.Stat("Caddyfile"); err != nil || caddyconfig.GetAdapter("caddyfile") == nil {
		return "", nil
	}
	return "Caddyfile", nil
}

// cliLoadConfig reads and adapts a config file as caddycmd.LoadConfig does,
// without its log lines (which would clutter every command's output).
func cliLoadConfig(configFile, adapterName string, stdin io.Reader) ([]byte, error) {
	var data []byte
	var err error
	if configFile == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(configFile)
	}
	if err != nil {
		return nil, err
	}
	if adapterName == "" {
		base := strings.ToLower(filepath.Base(configFile))
		if filepath.Ext(base) != ".json" && (strings.HasPrefix(base, "caddyfile") || strings.HasSuffix(base, ".caddyfile")) {
			adapterName = "caddyfile"
		}
	}
	if adapterName == "" {
		return data, nil // JSON
	}
	a := caddyconfig.GetAdapter(adapterName)
	if a == nil {
		return nil, fmt.Errorf("unrecognized config adapter: %s", adapterName)
	}
	adapted, _, err := a.Adapt(data, map[string]any{"filename": configFile})
	return adapted, err
}

// cliAPIError is a non-2xx answer of the admin API.
type cliAPIError struct {
	Status  int
	Code    string
	Message string
}

func (e *cliAPIError) Error() string {
	if e.Code != "" {
		return e.Message + " (" + e.Code + ")"
	}
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

// AdminAPIRequest turns an answer of status 400 or more into this error.
var cliAdminErrorRE = regexp.MustCompile(`(?s)^caddy responded with error: HTTP (\d{3}): (.*)$`)

// cliRequestError makes an error of caddycmd.AdminAPIRequest readable: the
// API's message and code for an error answer, a hint when Caddy cannot be
// reached.
func cliRequestError(addr string, err error) error {
	m := cliAdminErrorRE.FindStringSubmatch(err.Error())
	if m == nil {
		if strings.HasPrefix(err.Error(), "performing request:") {
			return fmt.Errorf("cannot reach Caddy's admin endpoint at %s: is Caddy running? (set --address or --config): %v", addr, err)
		}
		return err
	}
	status, _ := strconv.Atoi(m[1])
	e := &cliAPIError{Status: status}
	var body struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal([]byte(m[2]), &body) == nil {
		e.Code, e.Message = body.Error, body.Message
		if e.Message == "" {
			// Caddy's own admin errors are {"error": "<message>"}.
			e.Code, e.Message = "", body.Error
		}
	} else {
		e.Message = strings.TrimSpace(m[2])
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
}

// call sends a request to the admin endpoint and returns the body of a
// 2xx answer. body is marshalled to JSON unless it is a []byte already.
func (c *cli) call(method, uri string, body any) ([]byte, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(raw)
	}
	if err := c.findAdmin(); err != nil {
		return nil, err
	}
	resp, err := caddycmd.AdminAPIRequest(c.addr, method, uri, nil, r)
	if err != nil {
		return nil, cliRequestError(c.addr, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the admin endpoint's answer: %v", err)
	}
	return raw, nil
}

// findAdmin sets c.addr, the admin endpoint's address (--address,
// --config), once.
func (c *cli) findAdmin() error {
	if c.addr != "" {
		return nil
	}
	fs := c.cmd.Flags()
	address, _ := fs.GetString("address")
	configFile, _ := fs.GetString("config")
	adapter, _ := fs.GetString("adapter")
	addr, err := cliAdminAddress(address, configFile, adapter, c.cmd.InOrStdin())
	if err != nil {
		return err
	}
	c.addr = addr
	return nil
}

// decode unmarshals an answer, saying which request it came from.
func cliDecode(raw []byte, v any, what string) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("unexpected answer to %s: %v", what, err)
	}
	return nil
}

func cliKeyPath(id string) string { return "/apikey/keys/" + url.PathEscape(id) }

func cliString(c *cli, name string) string {
	s, _ := c.cmd.Flags().GetString(name)
	return s
}

// cliNoSubcommand runs for caddy apikey and caddy apikey account when no
// subcommand matched: without arguments it prints the help; otherwise the
// first argument is an unknown subcommand, an error.
func cliNoSubcommand(c *cli, args []string) error {
	if len(args) == 0 {
		return c.cmd.Help()
	}
	return cliUnknownSubcommand(c.cmd, args[0])
}

// cliFlagError is the error of a flag cobra cannot parse. Flags after an
// unknown subcommand are parsed as the flags of its parent (caddy apikey
// crate --name x): then the unknown subcommand is the error to report.
func cliFlagError(cmd *cobra.Command, err error) error {
	if args := cmd.Flags().Args(); len(args) > 0 && cmd.HasAvailableSubCommands() {
		return cliUnknownSubcommand(cmd, args[0])
	}
	return err
}

// cliUnknownSubcommand is the error of an unknown subcommand of cmd.
func cliUnknownSubcommand(cmd *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, cmd.CommandPath())
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return fmt.Errorf("%s: run '%s --help' for the list of commands", msg, cmd.CommandPath())
}

// cliScopeFlag adds --scope: repeatable, each value one scope or several
// separated by commas.
func cliScopeFlag(cmd *cobra.Command, usage string) {
	cmd.Flags().StringArray("scope", nil, usage)
}

// cliScopes is the scopes of --scope, split and checked.
func cliScopes(c *cli) ([]string, error) {
	values, _ := c.cmd.Flags().GetStringArray("scope")
	return cliSplitScopes(values)
}

// cliLimitFlags adds --rate-limit, --burst and --quota, and with clear
// (update) --no-rate-limit and --no-quota; noneMeans says what a record
// without a rate limit of its own gets.
func cliLimitFlags(cmd *cobra.Command, clear bool, noneMeans string) {
	fs := cmd.Flags()
	fs.String("rate-limit", "", "Own rate limit: <requests>/<window> such as 100/1m, or unlimited")
	fs.Int("burst", 0, "Bucket size of --rate-limit <requests>/<window> (default: requests)")
	fs.String("quota", "", "Quota: <requests>/day or <requests>/month, such as 10000/day")
	if clear {
		fs.Bool("no-rate-limit", false, "Remove the own rate limit: "+noneMeans)
		fs.Bool("no-quota", false, "Remove the quota")
	}
}

// cliLimitBody puts rate_limit and quota into a request body, from the
// flags that were given; --no-rate-limit and --no-quota send null.
func cliLimitBody(c *cli, body map[string]any) error {
	fs := c.cmd.Flags()
	clearRL, _ := fs.GetBool("no-rate-limit")
	clearQuota, _ := fs.GetBool("no-quota")
	switch {
	case clearRL && (fs.Changed("rate-limit") || fs.Changed("burst")):
		return errors.New("--no-rate-limit does not go with --rate-limit or --burst")
	case clearRL:
		body["rate_limit"] = nil
	case fs.Changed("rate-limit"):
		burst, _ := fs.GetInt("burst")
		rl, err := cliParseRateLimit(cliString(c, "rate-limit"), burst)
		if err != nil {
			return err
		}
		body["rate_limit"] = rl
	case fs.Changed("burst"):
		return errors.New("--burst needs --rate-limit <requests>/<window>")
	}
	switch {
	case clearQuota && fs.Changed("quota"):
		return errors.New("--no-quota does not go with --quota")
	case clearQuota:
		body["quota"] = nil
	case fs.Changed("quota"):
		q, err := cliParseQuota(cliString(c, "quota"))
		if err != nil {
			return err
		}
		body["quota"] = q
	}
	return nil
}

func cliCreate(c *cli, _ []string) error {
	name := cliString(c, "name")
	if strings.TrimSpace(name) == "" {
		return errors.New("--name is required")
	}
	scopes, err := cliScopes(c)
	if err != nil {
		return err
	}
	if len(scopes) == 0 {
		return errors.New("at least one --scope is required, such as --scope contacts:read")
	}
	body := map[string]any{"name": name, "scopes": scopes}
	if err := cliLimitBody(c, body); err != nil {
		return err
	}
	if pairs, _ := c.cmd.Flags().GetStringArray("metadata"); len(pairs) > 0 {
		m := map[string]string{}
		if err := cliParseMetadata(m, pairs); err != nil {
			return err
		}
		body["metadata"] = m
	}
	if a := cliString(c, "account"); a != "" {
		body["account"] = a
	}
	if t := cliString(c, "type"); t != "" {
		body["type"] = t
	}
	if e := cliString(c, "expires"); e != "" {
		at, err := cliParseExpiry(e, c.now())
		if err != nil {
			return err
		}
		body["expires_at"] = at.Format(time.RFC3339Nano)
	}
	raw, err := c.call(http.MethodPost, "/apikey/keys", body)
	if err != nil {
		return err
	}
	return c.printNewKey(raw, "Created", "")
}

func (c *cli) printNewKey(raw []byte, verb, note string) error {
	if c.json {
		return cliWriteJSON(c.out, raw)
	}
	var k cliKey
	if err := cliDecode(raw, &k, "the request"); err != nil {
		return err
	}
	if k.Plain == "" {
		return errors.New("the admin endpoint's answer has no key")
	}
	if err := cliRenderNewKey(c.out, verb, &k); err != nil {
		return err
	}
	if st := k.status(c.now()); st != keystore.StatusActive {
		note = "The key is " + st + ": it is refused until it is activated."
		if st == keystore.StatusExpired {
			note = "The key has expired: it is refused."
		}
	}
	if note != "" {
		_, err := fmt.Fprintln(c.out, note)
		return err
	}
	return nil
}

// cliListPage is the admin API's answer to GET /keys.
type cliListPage struct {
	Keys       []json.RawMessage `json:"keys"`
	NextCursor *string           `json:"next_cursor"`
}

// cliMaxPage is the admin API's largest page.
const cliMaxPage = 1000

func cliList(c *cli, _ []string) error {
	status := cliString(c, "status")
	switch status {
	case "", keystore.StatusActive, keystore.StatusRevoked, keystore.StatusExpired:
	default:
		return fmt.Errorf("--status must be active, revoked or expired, not %q", status)
	}
	limit, _ := c.cmd.Flags().GetInt("limit")
	if limit < 0 {
		return errors.New("--limit must not be negative")
	}
	q := url.Values{}
	for flag, param := range map[string]string{"account": "account", "status": "status", "search": "q"} {
		if v := cliString(c, flag); v != "" {
			q.Set(param, v)
		}
	}
	var all cliListPage
	for {
		page := cliMaxPage
		if limit > 0 {
			page = min(limit-len(all.Keys), cliMaxPage)
		}
		q.Set("limit", strconv.Itoa(page))
		raw, err := c.call(http.MethodGet, "/apikey/keys?"+q.Encode(), nil)
		if err != nil {
			return err
		}
		var p cliListPage
		if err := cliDecode(raw, &p, "the list"); err != nil {
			return err
		}
		all.Keys = append(all.Keys, p.Keys...)
		all.NextCursor = p.NextCursor
		if p.NextCursor == nil || *p.NextCursor == "" || len(p.Keys) == 0 || (limit > 0 && len(all.Keys) >= limit) {
			break
		}
		q.Set("cursor", *p.NextCursor)
	}
	if all.Keys == nil {
		all.Keys = []json.RawMessage{}
	}
	if c.json {
		raw, err := json.Marshal(all)
		if err != nil {
			return err
		}
		return cliWriteJSON(c.out, raw)
	}
	keys := make([]cliKey, len(all.Keys))
	for i, raw := range all.Keys {
		if err := cliDecode(raw, &keys[i], "the list"); err != nil {
			return err
		}
	}
	return cliRenderKeyTable(c.out, keys, c.now())
}

func cliShow(c *cli, args []string) error {
	raw, err := c.call(http.MethodGet, cliKeyPath(args[0]), nil)
	if err != nil {
		return err
	}
	if c.json {
		return cliWriteJSON(c.out, raw)
	}
	var k cliKey
	if err := cliDecode(raw, &k, "show"); err != nil {
		return err
	}
	return cliRenderKey(c.out, &k, c.now())
}

// cliKeyAction is revoke.
func cliKeyAction(action, done string) func(c *cli, args []string) error {
	return func(c *cli, args []string) error {
		raw, err := c.call(http.MethodPost, cliKeyPath(args[0])+"/"+action, nil)
		if err != nil {
			return err
		}
		if c.json {
			return cliWriteJSON(c.out, raw)
		}
		var k cliKey
		if err := cliDecode(raw, &k, action); err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.out, "%s key %s (%s): %s.\n", done, k.ID, cliSafe(k.Name), k.status(c.now()))
		return err
	}
}

func cliRegenerate(c *cli, args []string) error {
	var body any
	note := "The old key no longer works."
	if g := cliString(c, "grace"); g != "" {
		d, err := cliParseDuration(g)
		if err != nil || d <= 0 {
			return fmt.Errorf("--grace %q must be a positive duration such as 24h", g)
		}
		body = map[string]string{"grace_period": d.String()}
		note = fmt.Sprintf("The old key keeps working for %s (not past the key's expiry).", g)
	}
	raw, err := c.call(http.MethodPost, cliKeyPath(args[0])+"/regenerate", body)
	if err != nil {
		return err
	}
	return c.printNewKey(raw, "Regenerated", note)
}

func cliDelete(c *cli, args []string) error {
	if _, err := c.call(http.MethodDelete, cliKeyPath(args[0]), nil); err != nil {
		return err
	}
	if c.json {
		// The API answers 204 without a body.
		raw, _ := json.Marshal(map[string]any{"id": args[0], "deleted": true})
		return cliWriteJSON(c.out, raw)
	}
	_, err := fmt.Fprintf(c.out, "Deleted key %s.\n", args[0])
	return err
}

// cliReadFile reads a file argument, - for stdin.
func cliReadFile(c *cli, name string) ([]byte, error) {
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(c.cmd.InOrStdin())
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %v", name, err)
	}
	return data, nil
}

func cliImport(c *cli, args []string) error {
	data, err := cliReadFile(c, args[0])
	if err != nil {
		return err
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(data, &entries); err != nil {
		return fmt.Errorf("%s must hold a JSON array of keys: %v", args[0], err)
	}
	raw, err := c.call(http.MethodPost, "/apikey/keys/import", data)
	if err != nil {
		return err
	}
	if c.json {
		return cliWriteJSON(c.out, raw)
	}
	n := len(entries)
	var ans struct {
		Imported *int              `json:"imported"`
		Count    *int              `json:"count"`
		Keys     []json.RawMessage `json:"keys"`
	}
	if json.Unmarshal(raw, &ans) == nil {
		switch {
		case ans.Imported != nil:
			n = *ans.Imported
		case ans.Count != nil:
			n = *ans.Count
		case ans.Keys != nil:
			n = len(ans.Keys)
		}
	}
	noun := "keys"
	if n == 1 {
		noun = "key"
	}
	_, err = fmt.Fprintf(c.out, "Imported %d %s.\n", n, noun)
	return err
}

func cliCheckAccountStatus(s string) error {
	if !keystore.ValidAccountStatus(s) {
		return fmt.Errorf("account status must be open, pending_cancel, suspended, past_due or terminated, not %q", s)
	}
	return nil
}

func (c *cli) printAccount(raw []byte, verb string) error {
	if c.json {
		return cliWriteJSON(c.out, raw)
	}
	var a cliAccount
	if err := cliDecode(raw, &a, "the account request"); err != nil {
		return err
	}
	_, err := fmt.Fprintf(c.out, "%s account %s (%s): %s.\n", verb, a.ID, cliOrDash(cliSafe(a.Name)), a.Status)
	return err
}

func cliAccountCreate(c *cli, _ []string) error {
	id := cliString(c, "id")
	if id == "" {
		return errors.New("--id is required")
	}
	body := map[string]any{"id": id}
	if n := cliString(c, "name"); n != "" {
		body["name"] = n
	}
	if s := cliString(c, "status"); s != "" {
		if err := cliCheckAccountStatus(s); err != nil {
			return err
		}
		body["status"] = s
	}
	if err := cliAccountLimitBody(c, body); err != nil {
		return err
	}
	if n, ok := body["max_keys"]; ok && n == nil {
		delete(body, "max_keys") // none is the default
	}
	raw, err := c.call(http.MethodPost, "/apikey/accounts", body)
	if err != nil {
		return err
	}
	return c.printAccount(raw, "Created")
}

func cliAccountList(c *cli, _ []string) error {
	raw, err := c.call(http.MethodGet, "/apikey/accounts", nil)
	if err != nil {
		return err
	}
	if c.json {
		return cliWriteJSON(c.out, raw)
	}
	// {"accounts": [...]}, or a bare array.
	var accounts []cliAccount
	var wrapped struct {
		Accounts []cliAccount `json:"accounts"`
	}
	if err := json.Unmarshal(raw, &wrapped); err == nil {
		accounts = wrapped.Accounts
	} else if err := cliDecode(raw, &accounts, "account list"); err != nil {
		return err
	}
	return cliRenderAccountTable(c.out, accounts, c.now())
}

func cliAccountSetStatus(c *cli, args []string) error {
	if err := cliCheckAccountStatus(args[1]); err != nil {
		return err
	}
	raw, err := c.call(http.MethodPatch, cliAccountPath(args[0]), map[string]string{"status": args[1]})
	if err != nil {
		return err
	}
	return c.printAccount(raw, "Updated")
}
