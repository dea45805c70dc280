package keystore

import (
	"fmt"
	"strconv"
	"time"
)

// The store's layout in its engine (see package kv): keys and what they hold.
//
//	k/<id>             key record (binary since schema 3, see record.go;
//	                   JSON with hashes in hex before)
//	h/<sha256>         for a key's current string: what verification needs
//	                   of the key (its hash entry, binary since schema 2; see
//	                   hashentry.go), so that a cache miss is one read; for
//	                   the string a regenerate with a grace period replaced:
//	                   the key's id (stores written before hash entries
//	                   existed have ids for current strings too; the next
//	                   change of the key rewrites them)
//	ak/<account>/<id>  index of keys by account (empty value)
//	a/<account>        account (JSON)
//	e/<id>/<event id>  audit event (binary since schema 3, see audit.go;
//	                   JSON before)
//	q/k/<id>           a key's quota count (JSON {period, used})
//	q/a/<account>      an account's quota count
//	u/<id>             a key's last use (unix nanos, 8 bytes big-endian):
//	                   the flush writes it apart from the record, so that
//	                   recording a use never re-encodes the record
//	r/<revoked>/<id>   index of revoked keys by revocation time (16 hex
//	                   digits of unix nanos), so that the purge reads only
//	                   the keys it deletes
//	d/<id>             a deleted key whose audit events are still being
//	                   deleted (too many for one transaction); the
//	                   purge sweep finishes what a crash interrupted
//	x/<id>             the expiry notices told of a key (see expiry.go):
//	                   its expires_at then and the last notice
//	s/k/<id>/<i>/<start>
//	                   a key's usage in one interval (i: h for an hour, d
//	                   for a UTC day; start: 16 hex digits of the
//	                   interval's start in unix seconds): requests by
//	                   outcome code (see usage.go), written with a TTL
//	                   (the interval's end plus its retention)
//	s/a/<account>/<i>/<start>
//	                   an account's usage, the sum of its keys'
//	ws/<sha256>        a session of the API Keys page, by the SHA-256 of
//	                   its token (see session.go), written with a TTL
//	wk/<id>/<created>/<sha256>
//	                   index of a key's page sessions by age (16 hex
//	                   digits of unix nanos), written with a TTL
//	m/revoked-index    present once every revoked key is in r/
//	m/schema           the layout's version: "3" (binary key records and
//	                   audit events); Open marks a store of "2" (binary
//	                   hash entries, JSON records) or "1" (JSON
//	                   throughout) "3"
const (
	pfxKey      = "k/"
	pfxHash     = "h/"
	pfxAcctKey  = "ak/"
	pfxAccount  = "a/"
	pfxEvent    = "e/"
	pfxQuotaKey = "q/k/"
	pfxQuotaAcc = "q/a/"
	pfxLastUsed = "u/"
	pfxRevoked  = "r/"
	pfxDeleting = "d/"
	schemaKey   = "m/schema"
	schemaValue = "3" // binary key records and audit events
	schema2     = "2" // binary hash entries, JSON key records
	schema1     = "1" // JSON hash entries and key records
	revIndexKey = "m/revoked-index"
)

func keyK(id string) []byte  { return appendKeyK(make([]byte, 0, len(pfxKey)+len(id)), id) }
func keyA(id string) []byte  { return []byte(pfxAccount + id) }
func keyQK(id string) []byte { return []byte(pfxQuotaKey + id) }
func keyQA(id string) []byte { return []byte(pfxQuotaAcc + id) }
func keyU(id string) []byte  { return []byte(pfxLastUsed + id) }

func keyAK(acct, id string) []byte {
	return appendKeyAK(make([]byte, 0, len(pfxAcctKey)+len(acct)+1+len(id)), acct, id)
}

func keyE(id, eventID string) []byte {
	return appendKeyE(make([]byte, 0, len(pfxEvent)+len(id)+1+len(eventID)), id, eventID)
}

func keyH(h Hash) []byte {
	return appendKeyH(make([]byte, 0, len(pfxHash)+len(h)), h)
}

func keyR(at time.Time, id string) []byte {
	return fmt.Appendf(nil, "%s%016x/%s", pfxRevoked, uint64(unixNano(at)), id)
}

// parseKeyR returns the revocation time and id of an r/ key.
func parseKeyR(key []byte) (int64, string, bool) {
	rest := key[len(pfxRevoked):]
	if len(rest) < 18 || rest[16] != '/' {
		return 0, "", false
	}
	n, err := strconv.ParseUint(string(rest[:16]), 16, 64)
	if err != nil {
		return 0, "", false
	}
	return int64(n), string(rest[17:]), true
}

// appendKeyK, appendKeyAK, appendKeyE and appendKeyH append keyK, keyAK,
// keyE and keyH to b: for a bulk load's buffers, which hold a batch's
// entries together.
func appendKeyK(b []byte, id string) []byte {
	return append(append(b, pfxKey...), id...)
}

func appendKeyAK(b []byte, acct, id string) []byte {
	b = append(append(b, pfxAcctKey...), acct...)
	return append(append(b, '/'), id...)
}

func appendKeyE(b []byte, id, eventID string) []byte {
	b = append(append(b, pfxEvent...), id...)
	return append(append(b, '/'), eventID...)
}

func appendKeyH(b []byte, h Hash) []byte {
	return append(append(b, pfxHash...), h[:]...)
}
