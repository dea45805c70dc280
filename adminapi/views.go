package adminapi

import (
	"encoding/base64"
	"time"

	"github.com/google/uuid"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// keyView is a key record as the API shows it: the record's fields (never
// its hashes), its status, and, only in the answer to create and
// regenerate, the plaintext key.
type keyView struct {
	*keystore.Key
	// Metadata is always present: null when the key has none.
	Metadata map[string]string `json:"metadata"`
	Status   string            `json:"status"`
	Plain    string            `json:"key,omitempty"`
}

func newKeyView(k *keystore.Key, now time.Time, plain string) keyView {
	return keyView{Key: k, Metadata: k.Metadata, Status: k.Status(now), Plain: plain}
}

func (a *API) view(k *keystore.Key, plain string) keyView {
	return newKeyView(k, a.store.Now(), plain)
}

// Cursors are opaque to clients: the base64url of the last id of the
// previous page.
func encodeCursor(id string) *string {
	if id == "" {
		return nil
	}
	c := base64.RawURLEncoding.EncodeToString([]byte(id))
	return &c
}

func decodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", invalidRequest("cursor", "cursor is not one this API returned")
	}
	id := string(b)
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		return "", invalidRequest("cursor", "cursor is not one this API returned")
	}
	return id, nil
}
