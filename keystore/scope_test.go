package keystore

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

func TestParseScope(t *testing.T) {
	res64 := "a" + strings.Repeat("b", 63)
	for i, tc := range []struct {
		in   string
		want Scope
		ok   bool
	}{
		{"contacts:read", Scope{"contacts", AccessRead}, true},
		{"contacts:write", Scope{"contacts", AccessWrite}, true},
		{"contacts:delete", Scope{"contacts", AccessDelete}, true},
		{"*:read", Scope{"*", AccessRead}, true},
		{"*:write", Scope{"*", AccessWrite}, true},
		{"*:delete", Scope{"*", AccessDelete}, true},
		{"a:read", Scope{"a", AccessRead}, true},
		{"a0:read", Scope{"a0", AccessRead}, true},
		{"billing.invoices:write", Scope{"billing.invoices", AccessWrite}, true},
		{"team_members:read", Scope{"team_members", AccessRead}, true},
		{"mcp-tools:delete", Scope{"mcp-tools", AccessDelete}, true},
		{"a-._9:read", Scope{"a-._9", AccessRead}, true},
		{res64 + ":read", Scope{res64, AccessRead}, true},

		{"", Scope{}, false},
		{":", Scope{}, false},
		{"contacts", Scope{}, false},
		{"contacts:", Scope{}, false},
		{":read", Scope{}, false},
		{"contacts:read:write", Scope{}, false},
		{"contacts::read", Scope{}, false},
		{"a:b:read", Scope{}, false},
		{"Contacts:read", Scope{}, false},
		{"contacts:READ", Scope{}, false},
		{"contacts:Read", Scope{}, false},
		{"conTacts:read", Scope{}, false},
		{"1contacts:read", Scope{}, false},
		{"_contacts:read", Scope{}, false},
		{".contacts:read", Scope{}, false},
		{"-contacts:read", Scope{}, false},
		{res64 + "c:read", Scope{}, false}, // 65 characters
		{"*:admin", Scope{}, false},
		{"contacts:admin", Scope{}, false},
		{"contacts:*", Scope{}, false},
		{"**:read", Scope{}, false},
		{"*a:read", Scope{}, false},
		{"a*:read", Scope{}, false},
		{" contacts:read", Scope{}, false},
		{"contacts:read ", Scope{}, false},
		{"contacts :read", Scope{}, false},
		{"con tacts:read", Scope{}, false},
		{"contacts/x:read", Scope{}, false},
		{"contacts:read\n", Scope{}, false},
		{"contäcts:read", Scope{}, false},
		{"contacts\x00:read", Scope{}, false},
	} {
		got, err := ParseScope(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("test %d: ParseScope(%q) error = %v, want ok=%v", i, tc.in, err, tc.ok)
			continue
		}
		if !tc.ok {
			if got != (Scope{}) {
				t.Errorf("test %d: ParseScope(%q) = %+v with an error", i, tc.in, got)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("test %d: ParseScope(%q) = %+v, want %+v", i, tc.in, got, tc.want)
		}
		if got.String() != tc.in {
			t.Errorf("test %d: String() = %q, want %q", i, got.String(), tc.in)
		}
	}
}

func TestAccessString(t *testing.T) {
	for i, tc := range []struct {
		a    Access
		want string
	}{
		{AccessRead, "read"},
		{AccessWrite, "write"},
		{AccessDelete, "delete"},
		{AccessFromMethod, ""},
		{Access(99), ""},
	} {
		if got := tc.a.String(); got != tc.want {
			t.Errorf("test %d: %d.String() = %q, want %q", i, tc.a, got, tc.want)
		}
	}
}

func TestScopeSatisfies(t *testing.T) {
	// The implication matrix of the contract: a granted access satisfies
	// the same access, and write and delete also satisfy read.
	implies := map[Access]map[Access]bool{
		AccessRead:   {AccessRead: true},
		AccessWrite:  {AccessRead: true, AccessWrite: true},
		AccessDelete: {AccessRead: true, AccessDelete: true},
	}
	accesses := []Access{AccessRead, AccessWrite, AccessDelete}
	for i, tc := range []struct {
		granted, required string
		sameResource      bool
	}{
		{"contacts", "contacts", true},
		{"contacts", "invoices", false},
		{"contacts", "contacts.notes", false}, // no hierarchy
		{"contacts.notes", "contacts", false},
		{"*", "contacts", true},
		{"*", "*", true},
		{"contacts", "*", false}, // a resource grant never covers *
	} {
		for _, g := range accesses {
			for _, r := range accesses {
				granted := Scope{tc.granted, g}
				required := Scope{tc.required, r}
				want := tc.sameResource && implies[g][r]
				if got := granted.Satisfies(required); got != want {
					t.Errorf("test %d: %s satisfies %s = %v, want %v", i, granted, required, got, want)
				}
			}
		}
	}
	// Spelled out, the rows that matter most.
	for i, tc := range []struct {
		granted, required string
		want              bool
	}{
		{"contacts:write", "contacts:read", true},
		{"contacts:delete", "contacts:read", true},
		{"contacts:read", "contacts:write", false},
		{"contacts:read", "contacts:delete", false},
		{"contacts:write", "contacts:delete", false},
		{"contacts:delete", "contacts:write", false},
		{"*:read", "contacts:read", true},
		{"*:write", "contacts:read", true},
		{"*:read", "contacts:write", false},
		{"*:delete", "contacts:delete", true},
		{"*:delete", "contacts:write", false},
		{"invoices:write", "contacts:read", false},
	} {
		g, err := ParseScope(tc.granted)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseScope(tc.required)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.Satisfies(r); got != tc.want {
			t.Errorf("row %d: %s satisfies %s = %v, want %v", i, g, r, got, tc.want)
		}
	}
}

func TestGranted(t *testing.T) {
	mustScopes := func(ss ...string) []Scope {
		out, err := ParseScopes(ss)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for i, tc := range []struct {
		granted  []Scope
		required string
		want     bool
	}{
		{nil, "contacts:read", false},
		{[]Scope{}, "contacts:read", false},
		{mustScopes("contacts:read"), "contacts:read", true},
		{mustScopes("contacts:read"), "contacts:write", false},
		{mustScopes("contacts:read", "contacts:write"), "contacts:write", true},
		{mustScopes("invoices:write", "contacts:read"), "contacts:read", true},
		{mustScopes("invoices:write", "contacts:read"), "invoices:read", true},
		{mustScopes("invoices:write", "contacts:read"), "invoices:delete", false},
		{mustScopes("invoices:write", "contacts:read"), "orders:read", false},
		{mustScopes("contacts:read", "*:write"), "orders:write", true},
		{mustScopes("contacts:read", "*:write"), "orders:delete", false},
		{mustScopes("*:read", "*:write", "*:delete"), "anything:delete", true},
	} {
		req, err := ParseScope(tc.required)
		if err != nil {
			t.Fatal(err)
		}
		if got := Granted(tc.granted, req); got != tc.want {
			t.Errorf("test %d: Granted(%v, %s) = %v, want %v", i, tc.granted, req, got, tc.want)
		}
	}
}

func TestParseScopes(t *testing.T) {
	for i, tc := range []struct {
		in   []string
		want []string
		ok   bool
	}{
		{nil, []string{}, true},
		{[]string{}, []string{}, true},
		{[]string{"contacts:read"}, []string{"contacts:read"}, true},
		{
			[]string{"orders:write", "contacts:read", "*:read", "contacts:delete"},
			[]string{"*:read", "contacts:delete", "contacts:read", "orders:write"},
			true,
		},
		{
			[]string{"contacts:read", "contacts:read", "a:write", "contacts:read", "a:write"},
			[]string{"a:write", "contacts:read"},
			true,
		},
		{[]string{"contacts:read", "contacts"}, nil, false},
		{[]string{"contacts:read", ""}, nil, false},
		{[]string{"Contacts:read"}, nil, false},
		{[]string{"contacts:read", "*:admin", "x:read"}, nil, false},
	} {
		got, err := ParseScopes(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("test %d: ParseScopes(%q) error = %v, want ok=%v", i, tc.in, err, tc.ok)
			continue
		}
		if !tc.ok {
			if got != nil {
				t.Errorf("test %d: ParseScopes(%q) = %v with an error", i, tc.in, got)
			}
			continue
		}
		if strs := ScopeStrings(got); !reflect.DeepEqual(strs, tc.want) {
			t.Errorf("test %d: ParseScopes(%q) = %q, want %q", i, tc.in, strs, tc.want)
		}
	}
}

func TestParseRequirement(t *testing.T) {
	for i, tc := range []struct {
		in   string
		want Requirement
		ok   bool
	}{
		{"contacts:read", Requirement{Scope{"contacts", AccessRead}}, true},
		{"contacts:write", Requirement{Scope{"contacts", AccessWrite}}, true},
		{"contacts:delete", Requirement{Scope{"contacts", AccessDelete}}, true},
		{"*:read", Requirement{Scope{"*", AccessRead}}, true},
		{"contacts", Requirement{Scope{"contacts", AccessFromMethod}}, true},
		{"billing.invoices", Requirement{Scope{"billing.invoices", AccessFromMethod}}, true},
		{"*", Requirement{Scope{"*", AccessFromMethod}}, true},
		{"", Requirement{}, false},
		{":", Requirement{}, false},
		{"contacts:", Requirement{}, false},
		{":read", Requirement{}, false},
		{"Contacts", Requirement{}, false},
		{"1contacts", Requirement{}, false},
		{"contacts:admin", Requirement{}, false},
		{"contacts:read:write", Requirement{}, false},
		{"contacts read", Requirement{}, false},
		{"a" + strings.Repeat("b", 64), Requirement{}, false},
	} {
		got, err := ParseRequirement(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("test %d: ParseRequirement(%q) error = %v, want ok=%v", i, tc.in, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		if got != tc.want {
			t.Errorf("test %d: ParseRequirement(%q) = %+v, want %+v", i, tc.in, got, tc.want)
		}
		if got.String() != tc.in {
			t.Errorf("test %d: String() = %q, want %q", i, got.String(), tc.in)
		}
		if got.IsZero() {
			t.Errorf("test %d: %q IsZero", i, tc.in)
		}
	}
	if !(Requirement{}).IsZero() {
		t.Error("the zero Requirement is not IsZero")
	}
}

func TestRequirementFor(t *testing.T) {
	bare, err := ParseRequirement("contacts")
	if err != nil {
		t.Fatal(err)
	}
	full, err := ParseRequirement("contacts:read")
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		method string
		want   Access
	}{
		{http.MethodGet, AccessRead},
		{http.MethodHead, AccessRead},
		{http.MethodOptions, AccessRead},
		{http.MethodPost, AccessWrite},
		{http.MethodPut, AccessWrite},
		{http.MethodPatch, AccessWrite},
		{http.MethodDelete, AccessDelete},
		{http.MethodTrace, AccessWrite},
		{http.MethodConnect, AccessWrite},
		{"PROPFIND", AccessWrite},
		{"get", AccessWrite}, // methods are case-sensitive (RFC 9110 §9.1)
		{"", AccessWrite},
	} {
		if got := AccessForMethod(tc.method); got != tc.want {
			t.Errorf("test %d: AccessForMethod(%q) = %v, want %v", i, tc.method, got, tc.want)
		}
		if got, want := bare.For(tc.method), (Scope{"contacts", tc.want}); got != want {
			t.Errorf("test %d: bare For(%q) = %v, want %v", i, tc.method, got, want)
		}
		// A full scope ignores the method.
		if got := full.For(tc.method); got != (Scope{"contacts", AccessRead}) {
			t.Errorf("test %d: full For(%q) = %v, want contacts:read", i, tc.method, got)
		}
	}
}

// TestAccessForMethodCase: a case variant of a known method needs at least
// that method's access (backends such as Werkzeug upper-case the method),
// and never less than write: delete needs delete, get still fails closed.
func TestAccessForMethodCase(t *testing.T) {
	for _, tc := range []struct {
		method string
		want   Access
	}{
		{"delete", AccessDelete},
		{"Delete", AccessDelete},
		{"dELETE", AccessDelete},
		{"DELETe", AccessDelete},
		{"get", AccessWrite},
		{"Get", AccessWrite},
		{"head", AccessWrite},
		{"options", AccessWrite},
		{"post", AccessWrite},
		{"put", AccessWrite},
		{"patch", AccessWrite},
		{"Patch", AccessWrite},
		{"trace", AccessWrite},
		// Not a case variant of DELETE.
		{"DELETES", AccessWrite},
		{"DELET", AccessWrite},
		{"DEL\u0130TE", AccessWrite},
		{"delete ", AccessWrite},
	} {
		if got := AccessForMethod(tc.method); got != tc.want {
			t.Errorf("AccessForMethod(%q) = %v, want %v", tc.method, got, tc.want)
		}
	}
	for _, m := range []string{http.MethodGet, http.MethodDelete, "delete", "get", "PROPFIND"} {
		if n := testing.AllocsPerRun(100, func() { AccessForMethod(m) }); n != 0 {
			t.Errorf("AccessForMethod(%q) allocates %v times", m, n)
		}
	}
}

// TestResourcesInterned: a route's required resource and a key's granted
// one share their bytes, whichever was parsed first, so that the scope
// check compares pointers, not the cached key's bytes.
func TestResourcesInterned(t *testing.T) {
	req, err := ParseRequirement(strings.Clone("interned-contacts"))
	if err != nil {
		t.Fatal(err)
	}
	full, err := ParseRequirement(strings.Clone("interned-contacts:write"))
	if err != nil {
		t.Fatal(err)
	}
	granted, err := ParseScope(strings.Clone("interned-contacts:read"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{req.Resource, full.Resource} {
		if unsafe.StringData(r) != unsafe.StringData(granted.Resource) {
			t.Errorf("resource %q of a requirement does not share its bytes with the granted scope's", r)
		}
	}
	// A resource parsed from a longer string does not keep it alive.
	big := strings.Repeat("q", 1<<10) + "zz-unique:read"
	sc, err := ParseScope(big[1<<10:])
	if err != nil {
		t.Fatal(err)
	}
	if sc.Resource != "zz-unique" || unsafe.StringData(sc.Resource) == unsafe.StringData(big[1<<10:]) {
		t.Errorf("resource %q shares the bytes of the string it was parsed from", sc.Resource)
	}
}
