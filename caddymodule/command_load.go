package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/caddy-apikey/caddy-apikey/adminapi"
	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// cliLoadCommand is caddy apikey load: the offline bulk loader.
func cliLoadCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "load [--config <path> [--adapter <name>]] <file>",
		Short: "Loads keys into a new store, with Caddy stopped (for migrations)",
		Long: `Loads existing keys into a store that holds none yet, all or nothing, from a
JSON array of entries in the format of import ("key" or "sha256", and the
fields of create). It writes the store's files directly, faster than import
(about 2.6 times for 100,000 keys into an empty store), so Caddy must not be running with the store: start it
after the load. Keys are added to a store in use with import.

The store and the key format are those of the apikey global options of
--config (or of the Caddyfile in the current directory): storage, prefix,
length, checksum and accept_foreign_keys. The store's accounts are kept;
entries naming other accounts are refused.`,
		Args: cobra.ExactArgs(1),
		RunE: cliRunE(cliLoad),
	}
}

func cliLoad(c *cli, args []string) error {
	fs := c.cmd.Flags()
	configFile, _ := fs.GetString("config")
	adapter, _ := fs.GetString("adapter")
	app, err := cliAppOptions(configFile, adapter, c.cmd.InOrStdin())
	if err != nil {
		return err
	}
	format, dir, err := app.formatAndDir()
	if err != nil {
		return err
	}
	if app.StoreRaw != nil {
		var b struct {
			Backend string `json:"backend"`
			Dir     string `json:"dir"`
		}
		_ = json.Unmarshal(app.StoreRaw, &b)
		if b.Backend != "badger" {
			return fmt.Errorf("load writes an embedded Badger store, and this config's store is %q: create the keys through the admin API's import (POST /apikey/keys/import), or load them into Badger and migrate it", b.Backend)
		}
		if b.Dir != "" {
			if dir, err = filepath.Abs(b.Dir); err != nil {
				return err
			}
		}
	}
	data, err := cliReadFile(c, args[0])
	if err != nil {
		return err
	}
	in, err := adminapi.ParseImport(data, format, app.AcceptForeignKeys, 0)
	if err != nil {
		return cliEntryError(args[0], err, adminapi.FieldOf(err))
	}
	start := time.Now()
	keys, err := keystore.Load(keystore.Options{Dir: dir}, in, format, "cli")
	if ie := (*keystore.InvalidError)(nil); errors.As(err, &ie) {
		return cliEntryError(args[0], err, ie.Field)
	}
	if cliStoreLocked(err) {
		return fmt.Errorf("the store at %s is in use: stop Caddy first (caddy stop), then run load again", dir)
	}
	if err != nil {
		return err
	}
	took := time.Since(start)
	if c.json {
		return json.NewEncoder(c.out).Encode(map[string]any{"loaded": len(keys), "storage": dir, "seconds": took.Seconds()})
	}
	noun := "keys"
	if len(keys) == 1 {
		noun = "key"
	}
	_, err = fmt.Fprintf(c.out, "Loaded %d %s into %s in %s.\n", len(keys), noun, dir, took.Round(time.Millisecond))
	return err
}

// cliAppOptions reads the apikey global options of a config file (or of
// ./Caddyfile), as Caddy would adapt it.
func cliAppOptions(configFile, adapter string, stdin io.Reader) (*App, error) {
	configFile, err := cliConfigFile(configFile, adapter)
	if err != nil {
		return nil, err
	}
	if configFile == "" {
		return nil, errors.New("load needs the config that names the store: --config <path> (or a Caddyfile in the current directory)")
	}
	config, err := cliLoadConfig(configFile, adapter, stdin)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %v", configFile, err)
	}
	var cfg struct {
		Apps struct {
			APIKey json.RawMessage `json:"apikey"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(config, &cfg); err != nil {
		return nil, fmt.Errorf("reading %s: %v", configFile, err)
	}
	app := new(App)
	if len(cfg.Apps.APIKey) > 0 {
		if err := json.Unmarshal(cfg.Apps.APIKey, app); err != nil {
			return nil, fmt.Errorf("the apikey options of %s: %v", configFile, err)
		}
	}
	return app, nil
}

// cliEntryError names the file and, if known, the entry's field.
func cliEntryError(file string, err error, field string) error {
	if field == "" {
		return fmt.Errorf("%s: %v", file, err)
	}
	return fmt.Errorf("%s: %v (field %s)", file, err, field)
}

// cliStoreLocked reports whether err is Badger's refusal to open a store
// that another process (a running Caddy) holds open. Badger formats the
// lock error with %+v, so it can only be recognized by its text.
func cliStoreLocked(err error) bool {
	return err != nil && strings.Contains(err.Error(), "Cannot acquire directory lock")
}
