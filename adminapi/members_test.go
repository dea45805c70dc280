package adminapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"testing"
)

func TestCheckMembers(t *testing.T) {
	createT := reflect.TypeFor[keyFields]()
	importT := reflect.TypeFor[[]importEntry]()
	anyT := reflect.TypeFor[any]()
	tests := []struct {
		body  string
		t     reflect.Type
		root  string
		field string // "" if accepted
	}{
		{`{"name": "a", "scopes": ["x:read"], "metadata": {"A": "1", "a": "2"}}`, createT, "", ""},
		{`{"name": "a", "name": "b"}`, createT, "", "name"},
		{`{"name": "a", "\u006eame": "b"}`, createT, "", "name"},
		{`{"name": "a\"name\": ", "scopes": []}`, createT, "", ""},
		{`{"name": "a\\", "scopes": []}`, createT, "", ""},
		{`{"Name": "a"}`, createT, "", "Name"},
		{`{"naMe": "a"}`, createT, "", "naMe"},
		{`{"ſcopes": []}`, createT, "", "ſcopes"},
		{`{"rate_limit": {"requests": 1, "requests": 2}}`, createT, "", "rate_limit.requests"},
		{`{"rate_limit": {"Window": "1s"}}`, createT, "", "rate_limit.Window"},
		{`{"rate_limit": null, "metadata": {"x": "1", "y": {"z": 1, "z": 2}}}`, createT, "", "metadata.y.z"},
		{`{"metadata": {"rate_limit": {"anything": 1}}}`, createT, "", ""},
		{`{"name": {"Anything": 1}}`, createT, "", ""}, // a type error, left to the decoder
		{`{"scopes": [{"a": 1, "a": 2}]}`, createT, "", "scopes[0].a"},
		{`[{"sha256": "x", "name": "a"}, {"sha256": "y", "sha256": "z"}]`, importT, "keys", "keys[1].sha256"},
		{`[{}, {}, {"rate_limit": {"burst": 1, "Burst": 2}}]`, importT, "keys", "keys[2].rate_limit.Burst"},
		{`[{}, 1, "x", null, {"key": "k", "nope": 1}]`, importT, "keys", "keys[4].nope"},
		{`[{"metadata": {"k": "1", "K": "2"}}]`, importT, "keys", ""},
		// Bytes that are not UTF-8 decode as U+FFFD: two such names are one.
		{"{\"metadata\": {\"\x8e\": \"1\", \"\x92\": \"2\"}}", createT, "", "metadata.\ufffd"},
		{"{\"metadata\": {\"\x8e\": \"1\", \"\ufffd\": \"2\"}}", createT, "", "metadata.\ufffd"},
		{`{"a": 1, "b": [1, 2, {"c": true, "c": false}]}`, anyT, "", "b[2].c"},
		{`{"a": -1.5e10, "b": null, "c": true, "a": 0}`, anyT, "", "a"},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			if !json.Valid([]byte(tt.body)) {
				t.Fatal("test body is not valid JSON")
			}
			err := checkMembers([]byte(tt.body), tt.t, tt.root)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ae *apiError
			if !errors.As(err, &ae) || ae.Field != tt.field || ae.Status != http.StatusBadRequest {
				t.Fatalf("got %v (%+v), want field %s", err, ae, tt.field)
			}
		})
	}
}

// TestCheckMembersLargeMap: a map with many names switches to a set and
// still finds a repeat.
func TestCheckMembersLargeMap(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(`{"metadata": {`)
	for i := range 100 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `": "v"`)
	}
	if err := checkMembers(append(bytes.Clone(b.Bytes()), "}}"...), reflect.TypeFor[keyFields](), ""); err != nil {
		t.Fatal(err)
	}
	b.WriteString(`, "kcb": "again"}}`)
	if err := checkMembers(b.Bytes(), reflect.TypeFor[keyFields](), ""); err == nil {
		t.Fatal("a repeat in a large map was accepted")
	}
}

// hasDuplicate is the reference for checkMembers's duplicate rule: a walk
// over the tokens of valid JSON.
func hasDuplicate(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	type frame struct {
		object bool
		names  map[string]bool
		key    bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return false
		}
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.key {
			if d, ok := tok.(json.Delim); !ok || d != '}' {
				name := tok.(string)
				if top.names[name] {
					return true
				}
				top.names[name] = true
				top.key = false
				continue
			}
		}
		if top != nil && top.object {
			top.key = true // after a value, a name comes next
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, names: map[string]bool{}, key: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].object {
				stack[len(stack)-1].key = true
			}
		}
	}
}

// FuzzCheckMembers compares checkMembers's duplicate detection with the
// token-level reference, on any valid JSON.
func FuzzCheckMembers(f *testing.F) {
	for _, s := range []string{
		`{"a": 1, "a": 2}`, `{"a": {"b": [1, {"c": 1, "c": 2}]}}`, `[{"x": "\"y\"", "y": 1}]`,
		`{"\u0061": 1, "a": 2}`, `{"a\\": 1, "a\\\\": 2}`, `{"": 1, "": 2}`, `[]`, `"s"`, `{"a": [], "b": {}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		err := checkMembers(b, reflect.TypeFor[any](), "")
		if want := hasDuplicate(b); (err != nil) != want {
			t.Fatalf("checkMembers(%q) = %v, reference says duplicate=%v", b, err, want)
		}
	})
}

// FuzzRequestBodies sends any body to the endpoints that decode one:
// never a 5xx, always our JSON.
func FuzzRequestBodies(f *testing.F) {
	for _, s := range []string{
		`{"name": "n", "scopes": ["a:read"]}`, `{"name": "n", "scopes": ["a:read"], "metadata": {"a": "b"}, "rate_limit": {"unlimited": true}}`,
		`{"expires_at": null, "rate_limit": null}`, `[{"sha256": "` + sha("x") + `", "name": "n", "scopes": ["a:read"]}]`,
		`{"grace_period": "1h"}`, `{"id": "acct", "status": "open"}`, `{"name": "a", "NAME": "b"}`, `{`, `[[[[`, `null`, ``,
	} {
		f.Add([]byte(s), uint8(0))
	}
	e := newEnv(f)
	id := e.createKey(map[string]any{"name": "target", "scopes": []string{"a:read"}})["id"].(string)
	targets := []struct{ method, path string }{
		{"POST", "/keys"},
		{"PATCH", "/keys/" + id},
		{"POST", "/keys/" + id + "/regenerate"},
		{"POST", "/keys/" + id + "/revoke"},
		{"POST", "/keys/import"},
		{"POST", "/accounts"},
		{"PATCH", "/accounts/default"},
	}
	f.Fuzz(func(t *testing.T, body []byte, which uint8) {
		tg := targets[int(which)%len(targets)]
		et := *e
		et.t = t
		r := et.do(op, req{method: tg.method, path: tg.path, body: body})
		if r.status >= 500 {
			t.Fatalf("%s %s %q: %d %s", tg.method, tg.path, body, r.status, r.body)
		}
		if r.status >= 400 {
			var m map[string]any
			if err := json.Unmarshal(r.body, &m); err != nil || m["error"] == nil || m["message"] == nil {
				t.Fatalf("error body %q", r.body)
			}
		}
	})
}
