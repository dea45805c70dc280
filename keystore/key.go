package keystore

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Hash is the SHA-256 of a key: the only form in which a key is stored.
type Hash [sha256.Size]byte

// HashKey hashes a credential. It does not allocate.
func HashKey(key string) Hash {
	return sha256.Sum256(bytesOf(key))
}

// String returns the hash in hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ParseHash parses a SHA-256 hash in hex (64 characters, either case).
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*sha256.Size {
		return h, fmt.Errorf("sha256 must be %d hex characters", 2*sha256.Size)
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("sha256 is not hex: %v", err)
	}
	return h, nil
}

// Key statuses, as the admin API shows them. Status is derived from
// revoked_at and expires_at, never stored.
const (
	StatusActive  = "active"
	StatusRevoked = "revoked"
	StatusExpired = "expired"
)

// DefaultKeyType is the type of a key created without one.
const DefaultKeyType = "api"

// Bounds of key fields.
const (
	MaxNameLen      = 255
	MaxMetadataSize = 4 << 10
)

// RateLimit is a key's (or account's) own rate limit. A nil *RateLimit means
// the configured default applies.
type RateLimit struct {
	// Requests allowed per Window.
	Requests int `json:"requests,omitempty"`
	// Window is a Go duration such as 1s or 1m.
	Window string `json:"window,omitempty"`
	// Burst is the bucket size; 0 means Requests.
	Burst int `json:"burst,omitempty"`
	// Unlimited exempts the key from rate limiting.
	Unlimited bool `json:"unlimited,omitempty"`
}

// Validate checks a rate limit's fields.
func (rl *RateLimit) Validate() error {
	if rl == nil {
		return nil
	}
	if rl.Unlimited {
		if rl.Requests != 0 || rl.Window != "" || rl.Burst != 0 {
			return fmt.Errorf("rate_limit: unlimited excludes requests, window and burst")
		}
		return nil
	}
	if rl.Requests < 1 {
		return fmt.Errorf("rate_limit.requests must be at least 1")
	}
	d, err := time.ParseDuration(rl.Window)
	if err != nil || d <= 0 {
		return fmt.Errorf("rate_limit.window must be a positive duration such as 1s or 1m")
	}
	if rl.Burst < 0 {
		return fmt.Errorf("rate_limit.burst must not be negative")
	}
	return nil
}

// Key is a key's record. The key itself is never part of it: only its hash,
// which is not serialized into API output.
type Key struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Account    string            `json:"account"`
	Type       string            `json:"type"`
	Scopes     []string          `json:"scopes"`
	Hint       string            `json:"hint"`
	CreatedAt  time.Time         `json:"created_at"`
	UpdatedAt  time.Time         `json:"updated_at"`
	ExpiresAt  *time.Time        `json:"expires_at"`
	LastUsedAt *time.Time        `json:"last_used_at"`
	RevokedAt  *time.Time        `json:"revoked_at"`
	RateLimit  *RateLimit        `json:"rate_limit"`
	Quota      *Quota            `json:"quota"`
	Metadata   map[string]string `json:"metadata,omitempty"`

	// Hash is the SHA-256 of the current key string.
	Hash Hash `json:"-"`
	// PrevHash is the hash of the string that a regenerate with a grace
	// period replaced; it keeps working until PrevUntil.
	PrevHash  *Hash     `json:"-"`
	PrevUntil time.Time `json:"-"`
}

// Status derives active, revoked or expired at the given time.
func (k *Key) Status(now time.Time) string {
	switch {
	case k.RevokedAt != nil:
		return StatusRevoked
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		return StatusExpired
	}
	return StatusActive
}

// clone returns a deep copy, so that a stored snapshot is never mutated.
func (k *Key) clone() *Key {
	c := *k
	c.Scopes = append([]string(nil), k.Scopes...)
	if k.Metadata != nil {
		c.Metadata = make(map[string]string, len(k.Metadata))
		for n, v := range k.Metadata {
			c.Metadata[n] = v
		}
	}
	if k.RateLimit != nil {
		rl := *k.RateLimit
		c.RateLimit = &rl
	}
	if k.Quota != nil {
		q := *k.Quota
		c.Quota = &q
	}
	return &c
}

var keyTypeRE = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)

func validateName(name string) error {
	n := utf8.RuneCountInString(name)
	if strings.TrimSpace(name) == "" || n > MaxNameLen || !utf8.ValidString(name) {
		return fmt.Errorf("name must be 1 to %d characters", MaxNameLen)
	}
	// The name is forwarded in X-Api-Key-Name: control characters would
	// make the header invalid.
	if strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return fmt.Errorf("name must not contain control characters")
	}
	return nil
}

func validateType(t string) error {
	if !keyTypeRE.MatchString(t) {
		return fmt.Errorf("type must match [a-z0-9_-]{1,32}")
	}
	return nil
}

func validateMetadata(md map[string]string) error {
	size := 0
	for n, v := range md {
		if n == "" {
			return fmt.Errorf("metadata keys must not be empty")
		}
		if !utf8.ValidString(n) || !utf8.ValidString(v) {
			return fmt.Errorf("metadata must be valid UTF-8")
		}
		size += len(n) + len(v)
	}
	if size > MaxMetadataSize {
		return fmt.Errorf("metadata must be at most %d bytes of keys and values, got %d", MaxMetadataSize, size)
	}
	return nil
}

// Account statuses. Keys of accounts in any other status than open or
// pending_cancel are refused.
const (
	AccountOpen          = "open"
	AccountPendingCancel = "pending_cancel"
	AccountSuspended     = "suspended"
	AccountPastDue       = "past_due"
	AccountTerminated    = "terminated"
)

// DefaultAccount exists from the first start.
const DefaultAccount = "default"

// Account is a tenant: a customer or workspace that owns keys.
type Account struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Status    string     `json:"status"`
	RateLimit *RateLimit `json:"rate_limit"`
	Quota     *Quota     `json:"quota"`
	// MaxKeys bounds the keys the account holds (revoked ones included);
	// nil means no bound. See Store.CreateKey.
	MaxKeys   *int      `json:"max_keys"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

var accountIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidAccountStatus reports whether s is one of the account statuses.
func ValidAccountStatus(s string) bool {
	switch s {
	case AccountOpen, AccountPendingCancel, AccountSuspended, AccountPastDue, AccountTerminated:
		return true
	}
	return false
}

// AccountActive reports whether keys of an account in status s may be used.
func AccountActive(s string) bool {
	return s == AccountOpen || s == AccountPendingCancel
}
