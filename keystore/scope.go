package keystore

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// Access is the access part of a scope.
type Access uint8

// The accesses a scope can grant or require. AccessFromMethod is only valid
// in a Requirement: the access then comes from the request method.
const (
	AccessFromMethod Access = iota
	AccessRead
	AccessWrite
	AccessDelete
)

// String returns read, write or delete.
func (a Access) String() string {
	switch a {
	case AccessRead:
		return "read"
	case AccessWrite:
		return "write"
	case AccessDelete:
		return "delete"
	}
	return ""
}

func parseAccess(s string) (Access, bool) {
	switch s {
	case "read":
		return AccessRead, true
	case "write":
		return AccessWrite, true
	case "delete":
		return AccessDelete, true
	}
	return 0, false
}

// AccessForMethod maps an HTTP method to the access it needs: GET, HEAD and
// OPTIONS read; POST, PUT and PATCH write; DELETE deletes. Any other method
// (TRACE, CONNECT, extension methods) needs write, the stronger of the two
// general accesses, so an unusual method is never cheaper than a POST.
//
// Method names are case-sensitive (RFC 9110, section 9.1), but some
// backends (Werkzeug, so Flask) upper-case the method before routing, and
// reverse_proxy forwards it as sent. A case variant of a known method
// (delete, Delete, get) therefore needs the stronger of that method's
// access and write: a variant of DELETE needs delete, every other variant
// write. So delete never passes with write alone, and get still fails
// closed (it needs write, as any unknown method does). The exact methods
// are matched first; only a method that is none of them is compared
// without regard to case, and neither allocates.
func AccessForMethod(method string) Access {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return AccessRead
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		return AccessWrite
	case http.MethodDelete:
		return AccessDelete
	}
	if strings.EqualFold(method, http.MethodDelete) {
		return AccessDelete
	}
	return AccessWrite
}

// AnyResource is the resource that grants every resource.
const AnyResource = "*"

// Scope is resource:access, as granted to a key or required by a route.
type Scope struct {
	Resource string
	Access   Access
}

// String returns resource:access.
func (s Scope) String() string {
	return s.Resource + ":" + s.Access.String()
}

// ParseScope parses resource:access, where resource is
// [a-z][a-z0-9_.-]{0,63} or *, and access is read, write or delete.
func ParseScope(s string) (Scope, error) {
	res, acc, ok := strings.Cut(s, ":")
	if !ok {
		return Scope{}, fmt.Errorf("invalid scope %q: want resource:access", s)
	}
	if !validResource(res) {
		return Scope{}, fmt.Errorf("invalid scope %q: resource must be * or match [a-z][a-z0-9_.-]{0,63}", s)
	}
	a, ok := parseAccess(acc)
	if !ok {
		return Scope{}, fmt.Errorf("invalid scope %q: access must be read, write or delete", s)
	}
	return Scope{Resource: internResource(res), Access: a}, nil
}

// resourceNames interns resource names (ParseScope and ParseRequirement
// return them): a request's required resource and the cached key's
// granted one are then the same bytes, and Go's string comparison returns
// at once for two equal strings that share their bytes, without reading
// them. The key's copy would be out of the CPU's caches under requests
// spread over many keys; the interned one is shared, and stays in them.
// Resource names come from scopes that an admin stored or configured; the
// table stops growing at maxInterned (then names are returned as they
// are, which only costs the comparison its shortcut).
var resourceNames struct {
	sync.RWMutex
	m map[string]string
}

const maxInterned = 4096

func internResource(r string) string {
	resourceNames.RLock()
	in, ok := resourceNames.m[r]
	resourceNames.RUnlock()
	if ok {
		return in
	}
	resourceNames.Lock()
	defer resourceNames.Unlock()
	if in, ok := resourceNames.m[r]; ok {
		return in
	}
	if len(resourceNames.m) >= maxInterned {
		return r
	}
	if resourceNames.m == nil {
		resourceNames.m = make(map[string]string)
	}
	r = strings.Clone(r) // not a substring that would keep a larger string alive
	resourceNames.m[r] = r
	return r
}

func validResource(r string) bool {
	if r == AnyResource {
		return true
	}
	if len(r) < 1 || len(r) > 64 || r[0] < 'a' || r[0] > 'z' {
		return false
	}
	for i := 1; i < len(r); i++ {
		c := r[i]
		if !('a' <= c && c <= 'z') && !('0' <= c && c <= '9') && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// Satisfies reports whether the granted scope s satisfies the required
// scope req: the same resource (or s grants *), and the same access, or req
// needs only read (write and delete imply read).
func (s Scope) Satisfies(req Scope) bool {
	if s.Resource != AnyResource && s.Resource != req.Resource {
		return false
	}
	return s.Access == req.Access || req.Access == AccessRead
}

// Granted reports whether any of the granted scopes satisfies req.
func Granted(granted []Scope, req Scope) bool {
	for _, g := range granted {
		if g.Satisfies(req) {
			return true
		}
	}
	return false
}

// ParseScopes parses, de-duplicates and sorts a list of scopes. It fails on
// the first invalid one.
func ParseScopes(in []string) ([]Scope, error) {
	out := make([]Scope, 0, len(in))
	for _, s := range in {
		sc, err := ParseScope(s)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	slices.SortFunc(out, func(a, b Scope) int { return strings.Compare(a.String(), b.String()) })
	return slices.Compact(out), nil
}

// ScopeStrings formats scopes as strings, in their order.
func ScopeStrings(scopes []Scope) []string {
	out := make([]string, len(scopes))
	for i, s := range scopes {
		out[i] = s.String()
	}
	return out
}

// Requirement is the scope a route requires: a full scope, or a bare
// resource whose access comes from the request method. The zero Requirement
// requires nothing.
type Requirement struct {
	Scope
}

// ParseRequirement parses contacts:read (a full scope) or contacts (a bare
// resource; the access comes from the method).
func ParseRequirement(s string) (Requirement, error) {
	if strings.Contains(s, ":") {
		sc, err := ParseScope(s)
		return Requirement{sc}, err
	}
	if !validResource(s) {
		return Requirement{}, fmt.Errorf("invalid scope %q: resource must be * or match [a-z][a-z0-9_.-]{0,63}", s)
	}
	return Requirement{Scope{Resource: internResource(s), Access: AccessFromMethod}}, nil
}

// IsZero reports whether nothing is required.
func (r Requirement) IsZero() bool { return r.Resource == "" }

// For returns the scope required for a request of the given method.
func (r Requirement) For(method string) Scope {
	if r.Access != AccessFromMethod {
		return r.Scope
	}
	return Scope{Resource: r.Resource, Access: AccessForMethod(method)}
}

// String returns the requirement as written in a config.
func (r Requirement) String() string {
	if r.Access == AccessFromMethod {
		return r.Resource
	}
	return r.Scope.String()
}
