package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
)

// The peers (issue 22): what Caddy users deploy today to authenticate
// requests, measured in the same run as apikey, each as a pair against
// respond alone.
//
//   - basic_auth: Caddy's own, one user whose bcrypt hash is made by the
//     built Caddy (caddy hash-password); the Caddyfile's basic_auth
//     caches bcrypt's result per credential, as Caddy does by default,
//     so a request pays a cache lookup, not a bcrypt.
//   - forward_auth: to a minimal local check, a second site of the
//     measured Caddy that answers 200 (with an X-Auth-User header, which
//     forward_auth copies onto the request) when X-Auth-Token carries the
//     known token, and 401 otherwise: what users deploy for API keys
//     today. The check's own work is in the measured process's CPU.
//
// Each pair's load sends the peer's credential to both sites (A ignores
// it), so that the load generator does the same work for A and B.

// peerTokenHeader carries the forward_auth check's token.
const peerTokenHeader = "X-Auth-Token"

// peerCreds are the peers' credentials, fresh for every run.
type peerCreds struct {
	user, password, hash string // basic_auth's user, password and bcrypt hash
	basic                string // Authorization value: "Basic " + base64(user:password)
	token                string // forward_auth's known token
	// The files wrk.lua reads (one credential a line): the Authorization
	// value, and the token.
	basicFile, tokenFile string
}

// newPeerCreds makes a password and a token, hashes the password with the
// built Caddy's hash-password (bcrypt, Caddy's default cost), and writes
// the credential files into out.
func newPeerCreds(ctx context.Context, caddyBin, out string) (peerCreds, error) {
	p := peerCreds{
		user:      "bench",
		basicFile: filepath.Join(out, "creds-basic-auth.txt"),
		tokenFile: filepath.Join(out, "creds-forward-auth.txt"),
	}
	p.password, p.token = randomToken(), randomToken()
	hash, err := outputCmd(ctx, "", caddyBin, "hash-password", "--plaintext", p.password)
	if err != nil {
		return p, fmt.Errorf("caddy hash-password: %w\n%s", err, hash)
	}
	p.hash = strings.TrimSpace(hash)
	if !strings.HasPrefix(p.hash, "$2") {
		return p, fmt.Errorf("caddy hash-password: %q is not a bcrypt hash", p.hash)
	}
	p.basic = basicValue(p.user, p.password)
	if err := writeLines(p.basicFile, []string{p.basic}); err != nil {
		return p, err
	}
	return p, writeLines(p.tokenFile, []string{p.token})
}

// wrongBasic is an Authorization value with the right user and a wrong
// password: the sanity check's proof that basic_auth checks the password.
func (p peerCreds) wrongBasic() string { return basicValue(p.user, p.password+"x") }

func basicValue(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// randomToken is 32 random characters of [A-Za-z0-9_-]: safe in a header
// value and in a Caddyfile token without quoting.
func randomToken() string {
	b := make([]byte, 24)
	rand.Read(b) // never fails (crypto/rand since Go 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}
