package adminapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"
)

// readBody reads a request body of at most limit bytes: a larger one is a
// 413, and a non-empty one whose Content-Type is set but is not JSON is a
// 415. A missing Content-Type is accepted.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, tooLarge(limit)
	}
	if err != nil {
		return nil, invalidRequest("", "the request body could not be read")
	}
	if len(b) == 0 {
		return nil, nil
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return nil, &apiError{
				Status:  http.StatusUnsupportedMediaType,
				Code:    "unsupported_media_type",
				Message: "the request body must be JSON, sent with Content-Type: application/json",
			}
		}
	}
	// JSON is UTF-8 (RFC 8259); encoding/json would silently replace
	// invalid bytes with U+FFFD and store a name nobody sent.
	if !utf8.Valid(b) {
		return nil, invalidRequest("", "the request body is not valid UTF-8")
	}
	return b, nil
}

func tooLarge(limit int64) *apiError {
	size := fmt.Sprintf("%d KiB", limit>>10)
	if limit >= 1<<20 {
		size = fmt.Sprintf("%d MiB", limit>>20)
	}
	return &apiError{
		Status:  http.StatusRequestEntityTooLarge,
		Code:    "payload_too_large",
		Message: "the request body must be at most " + size,
	}
}

// decodeObject reads a body that must be a JSON object into v (a pointer
// to a struct) and returns the body's bytes.
func decodeObject(w http.ResponseWriter, r *http.Request, v any) ([]byte, error) {
	b, err := readBody(w, r, MaxBody)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, invalidRequest("", "the request body must be a JSON object")
	}
	return b, decodeStrict(b, v)
}

// decodeOptionalObject is decodeObject for a body that may be empty: v
// then stays as it is.
func decodeOptionalObject(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := readBody(w, r, MaxBody)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	return decodeStrict(b, v)
}

// decodeStrict decodes b, which must be one JSON object and nothing after
// it, into v: unknown fields (names not spelt exactly included) and
// members given twice are refused, with their path (see checkMembers).
func decodeStrict(b []byte, v any) error {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return invalidRequest("", "the request body must be a JSON object")
	}
	valid := json.Valid(b)
	if valid {
		if err := checkMembers(b, reflect.TypeOf(v), ""); err != nil {
			return err
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, "")
	}
	if err := checkTrailing(b, dec.InputOffset()); err != nil {
		return err
	}
	if !valid {
		return invalidRequest("", "the request body is not valid JSON")
	}
	return nil
}

func checkTrailing(b []byte, offset int64) error {
	if len(bytes.TrimSpace(b[offset:])) > 0 {
		return invalidRequest("", "the request body must hold a single JSON value, but more follows it")
	}
	return nil
}

// decodeError turns an encoding/json error into a 400 that names the
// field; prefix (keys[3]) locates the value in an import.
func decodeError(err error, prefix string) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	at := ""
	if prefix != "" {
		at = prefix + ": "
	}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return invalidRequest(prefix, "the request body is not valid JSON: it ends too early")
	case errors.As(err, &se):
		msg := strings.TrimPrefix(se.Error(), "json: ")
		return invalidRequest(prefix, "the request body is not valid JSON: %s (at byte %d)", msg, se.Offset)
	case errors.As(err, &te):
		field := joinField(prefix, te.Field)
		if field == "" {
			return invalidRequest("", "the request body must be %s, not %s", jsonType(te.Type), te.Value)
		}
		return invalidRequest(field, "%s has the wrong type: expected %s, got %s", field, jsonType(te.Type), te.Value)
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return invalidRequest(joinField(prefix, strings.Trim(name, `"`)), "%sunknown field %s", at, name)
	}
	return invalidRequest(prefix, "%sthe request body could not be decoded: %s", at, strings.TrimPrefix(err.Error(), "json: "))
}

func joinField(prefix, field string) string {
	switch {
	case prefix == "":
		return field
	case field == "":
		return prefix
	}
	return prefix + "." + field
}

// jsonType names the JSON type that decodes into t.
func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "another type"
}

// parseTime parses an RFC 3339 time of the named field.
func parseTime(field, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, invalidRequest(field, "%s must be an RFC 3339 time such as 2030-01-02T15:04:05Z", field)
	}
	return t.UTC(), nil
}

// presence reports, for each member of a JSON object that decoded
// already, whether it is present and whether it is null: PATCH tells
// "leave it" (absent) from "clear it" (null).
type presence map[string]json.RawMessage

// decodePatch decodes a PATCH body into v and returns which members it
// has, refusing null for the members named in notNull.
func decodePatch(w http.ResponseWriter, r *http.Request, v any, notNull ...string) (presence, error) {
	b, err := decodeObject(w, r, v)
	if err != nil {
		return nil, err
	}
	pr, err := presenceOf(b)
	if err != nil {
		return nil, err
	}
	return pr, pr.notNull(notNull...)
}

func presenceOf(b []byte) (presence, error) {
	var p presence
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, decodeError(err, "")
	}
	return p, nil
}

func (p presence) has(name string) bool {
	_, ok := p[name]
	return ok
}

func (p presence) null(name string) bool {
	v, ok := p[name]
	return ok && string(bytes.TrimSpace(v)) == "null"
}

// notNull refuses null for the named fields, which cannot be cleared.
func (p presence) notNull(names ...string) error {
	for _, n := range names {
		if p.null(n) {
			return invalidRequest(n, "%s cannot be null", n)
		}
	}
	return nil
}
