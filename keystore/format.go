package keystore

import (
	"crypto/rand"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"unsafe"
)

// Key format defaults and bounds.
const (
	DefaultPrefix  = "ak_"
	DefaultLength  = 43
	MinLength      = 22
	MaxLength      = 128
	MaxPrefixLen   = 16
	ChecksumLength = 6
)

// base62 is the alphabet of the random part and of the checksum digits, in
// digit order: value 0 is '0', 61 is 'z'.
const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// ErrMalformed reports a credential that does not match the key format.
var ErrMalformed = errors.New("malformed key")

// Format is the shape of the keys a config issues and accepts:
// prefix, then Length base62 characters from crypto/rand, then (if Checksum)
// the 6-character base62 CRC32 of everything before it.
type Format struct {
	Prefix   string
	Length   int
	Checksum bool
}

// DefaultFormat is ak_ + 43 random characters + checksum.
func DefaultFormat() Format {
	return Format{Prefix: DefaultPrefix, Length: DefaultLength, Checksum: true}
}

// Validate reports whether the format's settings are within bounds.
func (f Format) Validate() error {
	if len(f.Prefix) < 1 || len(f.Prefix) > MaxPrefixLen {
		return fmt.Errorf("prefix must be 1 to %d characters, got %d", MaxPrefixLen, len(f.Prefix))
	}
	for i := 0; i < len(f.Prefix); i++ {
		c := f.Prefix[i]
		if !isBase62(c) && c != '_' {
			return fmt.Errorf("prefix %q: character %q is not in [A-Za-z0-9_]", f.Prefix, c)
		}
	}
	if f.Length < MinLength || f.Length > MaxLength {
		return fmt.Errorf("length must be %d to %d, got %d", MinLength, MaxLength, f.Length)
	}
	return nil
}

// KeyLen is the total length of a key of this format.
func (f Format) KeyLen() int {
	n := len(f.Prefix) + f.Length
	if f.Checksum {
		n += ChecksumLength
	}
	return n
}

// Generate returns a new random key of this format.
func (f Format) Generate() (string, error) {
	var sb strings.Builder
	sb.Grow(f.KeyLen())
	sb.WriteString(f.Prefix)
	// Rejection sampling keeps every character uniform: bytes >= 248
	// (the largest multiple of 62 that fits in a byte) are discarded.
	buf := make([]byte, f.Length+16)
	for n := 0; n < f.Length; {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("reading random bytes: %w", err)
		}
		for _, b := range buf {
			if b >= 248 {
				continue
			}
			sb.WriteByte(base62[b%62])
			n++
			if n == f.Length {
				break
			}
		}
	}
	if f.Checksum {
		sb.WriteString(Checksum(sb.String()))
	}
	return sb.String(), nil
}

// Check reports whether key matches the format exactly: prefix, length,
// alphabet and checksum. It does not allocate.
func (f Format) Check(key string) error {
	if err := f.CheckShape(key); err != nil {
		return err
	}
	if !f.Checksum {
		return nil
	}
	body := key[:len(key)-ChecksumLength]
	var want [ChecksumLength]byte
	putChecksum(&want, crc32.ChecksumIEEE(bytesOf(body)))
	if string(want[:]) != key[len(body):] {
		return ErrMalformed
	}
	return nil
}

// CheckShape is Check without the checksum: prefix, length and alphabet.
// The verifier checks the shape before hashing a key, and the checksum only
// when the hash is not in its cache (a cached hash is that of a stored key,
// whose checksum was checked when it was first verified): the checksum's
// tables are then not read by a request for a cached key.
func (f Format) CheckShape(key string) error {
	if len(key) != f.KeyLen() || !strings.HasPrefix(key, f.Prefix) {
		return ErrMalformed
	}
	var bad byte
	for i := len(f.Prefix); i < len(key); i++ {
		bad |= notBase62[key[i]]
	}
	if bad != 0 {
		return ErrMalformed
	}
	return nil
}

// Checksum is the public checksum of a key body (prefix + random part):
// CRC32 (IEEE) written in base62, most significant digit first, left-padded
// with '0' to 6 characters. Secret scanners can recompute it offline.
func Checksum(body string) string {
	var out [ChecksumLength]byte
	putChecksum(&out, crc32.ChecksumIEEE(bytesOf(body)))
	return string(out[:])
}

func putChecksum(out *[ChecksumLength]byte, v uint32) {
	for i := ChecksumLength - 1; i >= 0; i-- {
		out[i] = base62[v%62]
		v /= 62
	}
}

// Hint is the display form of a key stored at creation: the prefix, the
// first 4 characters after it, "…", and the last 4 characters
// (bme_xk7a…p9mz). A key with fewer than MinLength characters after its
// prefix (only imported foreign keys are that short) shows just "…" and
// its last 4 characters, so that a hint never reveals much of a short key.
func Hint(key, prefix string) string {
	if !strings.HasPrefix(key, prefix) {
		prefix = ""
	}
	rest := key[len(prefix):]
	if len(rest) < MinLength {
		if len(key) <= 4 {
			return "…"
		}
		return "…" + key[len(key)-4:]
	}
	return prefix + rest[:4] + "…" + key[len(key)-4:]
}

func isBase62(c byte) bool {
	return notBase62[c] == 0
}

// notBase62 is 1 for the bytes outside the base62 alphabet. Check ORs it
// over a key instead of branching on each character's class: keys are
// random, so such branches are mispredicted about once a character, which
// cost 230 ns of a 52-character key's check when requests spread over many
// keys (the branch predictor had learned the one key of a benchmark).
var notBase62 = func() (t [256]byte) {
	for i := range t {
		t[i] = 1
	}
	for i := range len(base62) {
		t[base62[i]] = 0
	}
	return t
}()

// bytesOf views s as a byte slice without copying. The slice must not be
// written to; it lets hashing and checksumming a string avoid an allocation.
func bytesOf(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
