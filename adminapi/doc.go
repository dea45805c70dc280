// Package adminapi is the JSON admin API of the key store: a plain
// net/http handler over *keystore.Store, mounted twice by the Caddy glue
// (under /apikey/ on Caddy's admin endpoint with an operator caller, and as
// the apikey_admin site handler with a key caller). Paths are relative to
// the mount point.
//
// Keys:
//
//	POST   /keys                  create; 201 record + "key" (shown once)
//	GET    /keys                  list, newest first: ?account= ?status= ?q= ?limit= ?cursor=
//	POST   /keys/import           import existing keys (operator only)
//	GET    /keys/{id}             record
//	PATCH  /keys/{id}             change name, scopes, expires_at, active, type, rate_limit, metadata
//	DELETE /keys/{id}             204
//	POST   /keys/{id}/revoke      200 record
//	POST   /keys/{id}/activate    200 record
//	POST   /keys/{id}/regenerate  200 record + new "key"; body {"grace_period": "24h"} optional
//	GET    /keys/{id}/audit       {"events": [...]}, newest first
//
// Accounts (operator only):
//
//	POST   /accounts              201 account
//	GET    /accounts              {"accounts": [...]}
//	GET    /accounts/{id}         account
//	PATCH  /accounts/{id}         change name, status, rate_limit
//	DELETE /accounts/{id}         204, or 409 while it has keys
//
// Every error is {"error": "<code>", "message": "<one sentence>"}, with
// "field" naming the offending request field when there is one and
// "required_scope" on insufficient_scope. Codes: invalid_request (400),
// forbidden and insufficient_scope (403), not_found (404),
// method_not_allowed (405, with Allow), conflict (409), payload_too_large
// (413), unsupported_media_type (415), internal (500).
//
// Request bodies:
//   - are at most MaxBody bytes (MaxImportBody for /keys/import);
//   - are JSON: a request with a body and a Content-Type other than
//     application/json (or a +json type) gets 415; a missing Content-Type
//     is accepted;
//   - are decoded strictly: one JSON value and nothing after it, no
//     unknown fields, no member twice in an object, and field names spelt
//     exactly as documented (encoding/json alone would accept "NAME" for
//     "name"); metadata keys are free-form strings;
//   - may be empty (or {}) for revoke, activate and regenerate.
//
// Query strings name only the parameters an endpoint documents, each at
// most once; anything else is a 400.
//
// Records are the keystore.Key fields (id, name, account, type, scopes,
// hint, created_at, updated_at, expires_at, last_used_at, revoked_at,
// rate_limit, metadata; times RFC 3339 UTC, absent values null) plus
// "status" (active, revoked or expired on the store's clock); never a
// hash, and the plaintext "key" only in the answers to create and
// regenerate. Other choices:
//   - GET /keys: limit defaults to 50 (1 to 1000); cursor is the opaque
//     next_cursor of the previous page (base64url of the last id);
//     ?account= naming an account that does not exist is a 400 for the
//     operator;
//   - PATCH: null clears expires_at, rate_limit and metadata ({} clears
//     metadata too) and is a 400 for name, scopes, active and type; {}
//     changes nothing and records no audit event;
//   - revoking a revoked key, or activating an active one, answers the
//     record and records no audit event;
//   - DELETE /accounts/default is a 409: keys created without an account
//     go to it, and the store recreates it at every start;
//
// POST /keys/import takes a JSON array (not an object) of at most 100,000
// entries in at most MaxImportBody bytes. Each entry has the plaintext
// "key" or its "sha256" (hex), exactly one of them, and the fields of
// POST /keys (name, account, scopes, expires_at, type, rate_limit,
// metadata):
//
//	[{"sha256": "<64 hex>", "name": "legacy", "scopes": ["contacts:read"]},
//	 {"key": "<plaintext>", "name": "old", "scopes": ["contacts:write"]}]
//
// It is all or nothing: one invalid entry refuses the batch with a 400
// whose field and message name it by index (keys[12].scopes). The answer,
// 201, is {"imported": n, "keys": [records]}, the records in the order of
// the entries, without any key string: a plaintext is hashed and
// forgotten, and its hint shows its first and last 4 characters (a hash
// alone gives the hint "…").
//
// Key callers (apikey_admin) need apikeys:read for GET, apikeys:write for
// POST and PATCH, apikeys:delete for DELETE (write and delete imply read),
// and are confined to their own account:
//   - another account's key id answers 404 not_found, exactly like an
//     unknown id;
//   - GET /keys lists only their account's keys; ?account= naming another
//     account filters everything out (an empty page), it never widens the
//     listing;
//   - POST /keys without an account creates in their account; naming
//     another account is 403 forbidden;
//   - /accounts and /keys/import are 403 forbidden, and so is every
//     endpoint for a key caller without an account;
//   - no escalation: every scope of a created key, of a key's new scopes
//     (PATCH), and of a key that is patched, activated or regenerated,
//     must be satisfied by one of the caller's scopes (keystore.Granted:
//     write and delete imply read, *:x covers any resource, write does not
//     imply delete); otherwise 403 insufficient_scope naming the first
//     scope not held. Regenerating hands out a key string, so a caller
//     cannot obtain a new string for a key more powerful than itself.
//     Revoke and delete only take access away and need only
//     apikeys:write and apikeys:delete;
//   - nothing outlives or outranks the caller's own key, read inside the
//     write's transaction (see API.issuer): no expires_at later than its
//     own, nor null while its own expires (403 naming the latest time; a
//     create without one gets its own); a created or regenerated key gets
//     its own rate_limit and quota (not an exemption); only its own type.
//
// An account's max_keys bounds the keys it holds, revoked ones included:
// a create or import past it is 409 key_limit_reached and stores nothing.
package adminapi
