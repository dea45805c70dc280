package adminapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// importEntry is one key of an import: its plaintext "key" or its
// "sha256" (hex), exactly one of them, and the fields of a new key.
type importEntry struct {
	Key       string              `json:"key"`
	SHA256    string              `json:"sha256"`
	Name      string              `json:"name"`
	Account   string              `json:"account"`
	Scopes    []string            `json:"scopes"`
	ExpiresAt *string             `json:"expires_at"`
	Type      string              `json:"type"`
	RateLimit *keystore.RateLimit `json:"rate_limit"`
	Quota     *keystore.Quota     `json:"quota"`
	Metadata  map[string]string   `json:"metadata"`
}

// fields are the entry's fields of a new key. (keyFields is not embedded
// in importEntry: encoding/json would name it in type errors.)
func (e *importEntry) fields() *keyFields {
	return &keyFields{
		Name:      e.Name,
		Account:   e.Account,
		Scopes:    e.Scopes,
		ExpiresAt: e.ExpiresAt,
		Type:      e.Type,
		RateLimit: e.RateLimit,
		Quota:     e.Quota,
		Metadata:  e.Metadata,
	}
}

// importKeys is POST /keys/import (operator only): a JSON array of
// entries, all stored or none (see the package documentation). The answer
// lists the records in the order of the entries.
func (a *API) importKeys(w http.ResponseWriter, r *http.Request, c Caller) error {
	b, err := readBody(w, r, MaxImportBody)
	if err != nil {
		return err
	}
	in, err := ParseImport(b, a.format, a.acceptForeign, keystore.MaxImport)
	if err != nil {
		return err
	}
	start := time.Now()
	keys, err := a.store.ImportKeys(in, a.format, c.Actor())
	if err != nil {
		return err
	}
	a.log.Info("imported keys",
		zap.Int("count", len(keys)),
		zap.Duration("took", time.Since(start)),
		zap.String("actor", c.Actor()))
	a.writeImport(w, keys)
	return nil
}

// ParseImport reads an import body, a JSON array of entries, as POST
// /keys/import does (strictly: unknown or duplicate members, wrong types
// and trailing data are errors naming the entry and field), for keys of
// format f: a plaintext key of another format is refused unless
// acceptForeign. At most max entries (0: no bound). The caddy apikey load
// command reads its file with it.
func ParseImport(b []byte, f keystore.Format, acceptForeign bool, max int) ([]keystore.ImportKey, error) {
	entries, err := decodeImport(b, max)
	if err != nil {
		return nil, err
	}
	in := make([]keystore.ImportKey, len(entries))
	for i := range entries {
		e := &entries[i]
		at := "keys[" + strconv.Itoa(i) + "]"
		nk, err := e.fields().newKey(at)
		if err != nil {
			return nil, err
		}
		if e.Key != "" && !acceptForeign && f.Check(e.Key) != nil {
			return nil, invalidRequest(at+".key", "%s: the key is not in this server's key format (prefix %s, %d characters); to import keys of another format, enable accept_foreign_keys", at, f.Prefix, f.KeyLen())
		}
		in[i] = keystore.ImportKey{Key: e.Key, SHA256: e.SHA256, NewKey: nk}
	}
	return in, nil
}

// decodeImport decodes the import body entry by entry, so that an error
// names its entry. At most max entries (0: no bound).
func decodeImport(b []byte, max int) ([]importEntry, error) {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '[' {
		return nil, invalidRequest("", "the request body must be a JSON array of keys")
	}
	valid := json.Valid(b)
	if valid {
		if err := checkMembers(b, reflect.TypeFor[[]importEntry](), "keys"); err != nil {
			return nil, err
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if _, err := dec.Token(); err != nil {
		return nil, decodeError(err, "")
	}
	// An entry is 100 bytes or more.
	capacity := len(b)/100 + 1
	if max > 0 {
		capacity = min(capacity, max)
	}
	entries := make([]importEntry, 0, capacity)
	for i := 0; dec.More(); i++ {
		if i == max && max > 0 {
			return nil, invalidRequest("keys", "an import takes at most %d keys", max)
		}
		entries = append(entries, importEntry{})
		if err := dec.Decode(&entries[i]); err != nil {
			return nil, decodeError(err, fmt.Sprintf("keys[%d]", i))
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, decodeError(err, "")
	}
	if err := checkTrailing(b, dec.InputOffset()); err != nil {
		return nil, err
	}
	if !valid {
		return nil, invalidRequest("", "the request body is not valid JSON")
	}
	return entries, nil
}

// writeImport streams the answer, record by record, rather than building
// tens of megabytes in memory for a large import.
func (a *API) writeImport(w http.ResponseWriter, keys []*keystore.Key) {
	now := a.store.Now()
	setJSONHeaders(w)
	w.WriteHeader(http.StatusCreated)
	bw := bufio.NewWriterSize(w, 64<<10)
	fmt.Fprintf(bw, `{"imported":%d,"keys":[`, len(keys))
	for i, k := range keys {
		if i > 0 {
			bw.WriteByte(',')
		}
		rec, err := json.Marshal(a.keyView(k, now, ""))
		if err != nil {
			// Cannot happen for a stored record; the status is sent.
			a.log.Error("encoding an imported key", zap.String("id", k.ID), zap.Error(err))
			rec = []byte("null")
		}
		bw.Write(rec)
	}
	bw.WriteString("]}\n")
	if err := bw.Flush(); err != nil {
		a.log.Debug("writing the import answer", zap.Error(err))
	}
}
