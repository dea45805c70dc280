package adminapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// apiError is an error answer: {"error": Code, "message": Message, ...}.
type apiError struct {
	Status        int    `json:"-"`
	Code          string `json:"error"`
	Message       string `json:"message"`
	Field         string `json:"field,omitempty"`
	RequiredScope string `json:"required_scope,omitempty"`
}

func (e *apiError) Error() string { return e.Message }

// WriteError writes the JSON error {"error": code, "message": msg} with
// status, Content-Type application/json and Cache-Control no-store: the
// shape of every error of the API, for the glue's own refusals.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	WriteJSON(w, status, &apiError{Code: code, Message: msg})
}

func invalidRequest(field, format string, args ...any) *apiError {
	return &apiError{
		Status:  http.StatusBadRequest,
		Code:    "invalid_request",
		Message: fmt.Sprintf(format, args...),
		Field:   field,
	}
}

func forbidden(msg string) *apiError {
	return &apiError{Status: http.StatusForbidden, Code: "forbidden", Message: msg}
}

func notFound(msg string) *apiError {
	return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: msg}
}

func conflict(msg string) *apiError {
	return &apiError{Status: http.StatusConflict, Code: "conflict", Message: msg}
}

// insufficientScope is the 403 of a key caller that lacks scope; msg says
// why it is needed.
func insufficientScope(scope, msg string) *apiError {
	return &apiError{
		Status:        http.StatusForbidden,
		Code:          "insufficient_scope",
		Message:       msg,
		RequiredScope: scope,
	}
}

var (
	errKeyNotFound     = notFound("there is no key with this id")
	errAccountNotFound = notFound("there is no account with this id")
)

func isNotFound(err error) bool { return errors.Is(err, keystore.ErrNotFound) }

// fail writes err as a JSON error: an *apiError as it is, the store's
// errors mapped to their status (ErrNotFound 404, ErrConflict 409,
// ErrKeyLimit 409 key_limit_reached, *keystore.InvalidError 400), anything else as a logged 500.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) (code string) {
	var ae *apiError
	var ie *keystore.InvalidError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &ie):
		ae = &apiError{Status: http.StatusBadRequest, Code: "invalid_request", Message: ie.Message, Field: ie.Field}
	case errors.Is(err, keystore.ErrNotFound):
		ae = notFound("not found")
	case errors.Is(err, keystore.ErrKeyLimit):
		ae = &apiError{
			Status:  http.StatusConflict,
			Code:    "key_limit_reached",
			Message: strings.TrimSuffix(err.Error(), ": "+keystore.ErrKeyLimit.Error()),
		}
	case errors.Is(err, keystore.ErrConflict):
		ae = conflict(strings.TrimSuffix(err.Error(), ": "+keystore.ErrConflict.Error()))
	default:
		// Store errors never contain a key's plaintext, so logging them
		// is safe.
		a.log.Error("admin API request failed",
			zap.String("method", r.Method),
			zap.String("path", r.URL.Path),
			zap.Error(err))
		ae = &apiError{Status: http.StatusInternalServerError, Code: "internal", Message: "an internal error occurred; the server log has the details"}
	}
	if ae.RequiredScope != "" {
		w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope", scope="`+ae.RequiredScope+`"`)
	}
	WriteJSON(w, ae.Status, ae)
	return ae.Code
}

// WriteJSON writes v as a JSON answer with status, Content-Type
// application/json, Cache-Control no-store and nosniff. The apikey
// handler's refusals use it too, so that every error has one shape.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := EncodeJSON(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":"internal","message":"the response could not be encoded"}` + "\n")
	}
	WriteJSONBody(w, status, body)
}

// EncodeJSON encodes v as WriteJSON does: without HTML escaping (messages
// name "<key>"; bodies are never HTML), with a final newline.
func EncodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteJSONBody writes an encoded JSON body with WriteJSON's headers: the
// apikey handler encodes the refusals that never change once, at
// provisioning.
func WriteJSONBody(w http.ResponseWriter, status int, body []byte) {
	setJSONHeaders(w)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// setJSONHeaders sets the headers of every JSON answer. The three values
// share one allocation, each in its own element (handlers may replace a
// value in place, so values are never shared between responses).
func setJSONHeaders(w http.ResponseWriter) {
	h := w.Header()
	vals := []string{"application/json", "no-store", "nosniff"}
	h["Content-Type"] = vals[0:1:1]
	h["Cache-Control"] = vals[1:2:2]
	h["X-Content-Type-Options"] = vals[2:3:3]
}

// noContent answers 204.
func noContent(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// FieldOf returns the request field that an error of this package names
// (keys[3].scopes), or "".
func FieldOf(err error) string {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Field
	}
	return ""
}
