package adminapi

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// checkMembers enforces, on a request body that is valid JSON and is to
// be decoded into a value of type t, what encoding/json does not:
//   - no object has the same member twice ({"name": "a", "name": "b"}
//     would otherwise keep the last, where a proxy or a log in front of
//     us may read the first);
//   - every member of a struct is one of its fields, spelt exactly:
//     encoding/json matches names case-insensitively, with Unicode
//     folding, so "NAME" and "ſcopes" would set name and scopes, and its
//     unknown-field error does not say where the field is. Maps
//     (metadata) take any names;
//   - no map member is null: encoding/json would store a null metadata
//     value as "", a value nobody sent.
//
// Errors name the member by its path (rate_limit.requests, or
// keys[3].scopes when root is "keys" and the body is an array). It is one
// pass over the bytes, without allocation for unescaped names: cheap
// enough for a 64 MiB import. A value whose JSON type does not match t is
// left to the decoder, which reports it.
func checkMembers(b []byte, t reflect.Type, root string) error {
	sc := memberScan{root: root}
	return sc.run(b, schemaOf(t))
}

// schema is the shape of the Go value a JSON value decodes into, as far
// as member names go.
type schema struct {
	kind   schemaKind
	fields map[string]*schema // struct: JSON name -> field
	elem   *schema            // map value or array element
}

type schemaKind uint8

const (
	kindAny    schemaKind = iota // unknown shape: names free
	kindStruct                   // names must be fields
	kindMap                      // names free
	kindArray
	kindScalar
)

var schemas sync.Map // reflect.Type -> *schema

var rawMessageType = reflect.TypeFor[json.RawMessage]()

// schemaOf derives the schema of t from its json tags.
func schemaOf(t reflect.Type) *schema {
	if s, ok := schemas.Load(t); ok {
		return s.(*schema)
	}
	s := buildSchema(t, map[reflect.Type]*schema{})
	schemas.Store(t, s)
	return s
}

func buildSchema(t reflect.Type, seen map[reflect.Type]*schema) *schema {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if s, ok := seen[t]; ok {
		return s
	}
	if t == rawMessageType || t.Implements(reflect.TypeFor[json.Unmarshaler]()) ||
		reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
		return &schema{kind: kindAny}
	}
	switch t.Kind() {
	case reflect.Struct:
		s := &schema{kind: kindStruct, fields: map[string]*schema{}}
		seen[t] = s
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || (!f.IsExported() && !f.Anonymous) {
				continue
			}
			if f.Anonymous && name == "" {
				if inner := buildSchema(f.Type, seen); inner.kind == kindStruct {
					for n, fs := range inner.fields {
						s.fields[n] = fs
					}
					continue
				}
			}
			if name == "" {
				name = f.Name
			}
			s.fields[name] = buildSchema(f.Type, seen)
		}
		return s
	case reflect.Map:
		return &schema{kind: kindMap, elem: buildSchema(t.Elem(), seen)}
	case reflect.Slice, reflect.Array:
		return &schema{kind: kindArray, elem: buildSchema(t.Elem(), seen)}
	case reflect.Interface:
		return &schema{kind: kindAny}
	}
	return &schema{kind: kindScalar}
}

type scanFrame struct {
	object  bool
	sch     *schema // nil: any
	wantKey bool
	via     []byte   // the member name whose value this is
	index   int      // in an array: the current element
	names   [][]byte // names seen, while few
	set     map[string]struct{}
}

type memberScan struct {
	stack []scanFrame
	root  string
}

func (sc *memberScan) top() *scanFrame {
	if len(sc.stack) == 0 {
		return nil
	}
	return &sc.stack[len(sc.stack)-1]
}

func (sc *memberScan) push(object bool, sch *schema, via []byte) {
	n := len(sc.stack)
	f := scanFrame{object: object, sch: sch, wantKey: object, via: via, index: -1}
	if n < cap(sc.stack) {
		sc.stack = sc.stack[:n+1]
		f.names = sc.stack[n].names[:0]
		sc.stack[n] = f
		return
	}
	sc.stack = append(sc.stack, f)
}

func (sc *memberScan) run(b []byte, root *schema) error {
	var (
		pending = root // schema of the next value in an object (or the top-level value)
		via     []byte // name of the member whose value comes next
	)
	// valueSchema is called where a value starts: it returns the value's
	// schema and the member name it is the value of.
	valueSchema := func() (*schema, []byte) {
		f := sc.top()
		if f == nil || f.object {
			return pending, via
		}
		f.index++
		if f.sch != nil && f.sch.kind == kindArray {
			return f.sch.elem, nil
		}
		return nil, nil
	}
	for i := 0; i < len(b); {
		switch c := b[i]; c {
		case '{', '[':
			sch, name := valueSchema()
			want := kindStruct
			if c == '[' {
				want = kindArray
			}
			if sch != nil && sch.kind != want && !(c == '{' && sch.kind == kindMap) {
				sch = nil // a type mismatch: the decoder reports it
			}
			sc.push(c == '{', sch, name)
			i++
		case '}', ']':
			if len(sc.stack) > 0 {
				sc.stack = sc.stack[:len(sc.stack)-1]
			}
			i++
		case ',':
			if f := sc.top(); f != nil && f.object {
				f.wantKey = true
			}
			i++
		case ' ', '\t', '\r', '\n', ':':
			i++
		case '"':
			end := stringEnd(b, i)
			f := sc.top()
			if f == nil || !f.object || !f.wantKey {
				valueSchema() // a string value
				i = end
				continue
			}
			f.wantKey = false
			name := memberName(b[i:end])
			child, err := sc.add(f, name)
			if err != nil {
				return err
			}
			pending, via = child, name
			i = end
		default: // a number, true, false or null
			valueSchema()
			if f := sc.top(); c == 'n' && f != nil && f.object && f.sch != nil && f.sch.kind == kindMap {
				p := sc.path(via)
				return invalidRequest(p, "%s must not be null", p)
			}
			for i < len(b) && !endsScalar(b[i]) {
				i++
			}
		}
	}
	return nil
}

// add records a member name in its object and returns the schema of its
// value. It refuses a repeated name and, in a struct, a name that is not
// a field.
func (sc *memberScan) add(f *scanFrame, name []byte) (*schema, error) {
	var child *schema
	if f.sch != nil {
		switch f.sch.kind {
		case kindStruct:
			child = f.sch.fields[string(name)]
			if child == nil {
				p := sc.path(name)
				return nil, invalidRequest(p, "unknown field %q", p)
			}
		case kindMap:
			child = f.sch.elem
		}
	}
	if f.set != nil {
		if _, dup := f.set[string(name)]; dup {
			return nil, sc.dup(name)
		}
		f.set[string(name)] = struct{}{}
		return child, nil
	}
	for _, seen := range f.names {
		if bytes.Equal(seen, name) {
			return nil, sc.dup(name)
		}
	}
	f.names = append(f.names, name)
	if len(f.names) > 16 {
		// A large map: switch to a set.
		f.set = make(map[string]struct{}, 2*len(f.names))
		for _, s := range f.names {
			f.set[string(s)] = struct{}{}
		}
	}
	return child, nil
}

func (sc *memberScan) dup(name []byte) error {
	p := sc.path(name)
	return invalidRequest(p, "%s is given more than once", p)
}

// path is the dotted path of member name of the top object: root, array
// indexes in brackets, member names after dots.
func (sc *memberScan) path(name []byte) string {
	var sb strings.Builder
	for i, f := range sc.stack {
		if i == 0 {
			sb.WriteString(sc.root)
		} else if len(f.via) > 0 {
			if sb.Len() > 0 {
				sb.WriteByte('.')
			}
			sb.Write(f.via)
		}
		if !f.object && f.index >= 0 {
			sb.WriteString("[" + strconv.Itoa(f.index) + "]")
		}
	}
	if sb.Len() > 0 {
		sb.WriteByte('.')
	}
	sb.Write(name)
	return sb.String()
}

func endsScalar(c byte) bool {
	switch c {
	case ',', ']', '}', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

// stringEnd returns the index after the closing quote of the JSON string
// that starts at b[i].
func stringEnd(b []byte, i int) int {
	j := i + 1
	for {
		q := bytes.IndexByte(b[j:], '"')
		if q < 0 {
			return len(b)
		}
		j += q
		bs := 0
		for k := j - 1; k > i && b[k] == '\\'; k-- {
			bs++
		}
		j++
		if bs%2 == 0 {
			return j
		}
	}
}

// memberName returns the name in a quoted JSON string as encoding/json
// decodes it: unescaped, and with each byte that is not UTF-8 replaced by
// U+FFFD (so "\x8e" and "\x92" are the same name, as they are to the
// decoder).
func memberName(quoted []byte) []byte {
	inner := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return inner
	}
	var s string
	if err := json.Unmarshal(quoted, &s); err != nil {
		return inner
	}
	return []byte(s)
}
