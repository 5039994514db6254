package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/fault"
)

// ErrorBody is the JSON shape of every error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the content of an error response: a stable code to switch
// on, a message for people, the request id to quote, and optional details.
type ErrorDetail struct {
	Code      string         `json:"code"`
	Message   string         `json:"message"`
	RequestID string         `json:"request_id"`
	Details   map[string]any `json:"details,omitempty"`
}

// Errors of the HTTP layer itself.
var (
	errInvalidJSON   = fault.New(fault.Invalid, "invalid_json", "request body is not valid JSON")
	errEmptyBody     = fault.New(fault.Invalid, "invalid_json", "request body is empty")
	errUnsupported   = fault.New(fault.UnsupportedMedia, "unsupported_media_type", "request body must be application/json")
	errBodyTooLarge  = fault.New(fault.TooLarge, "body_too_large", "request body is too large")
	errRouteNotFound = fault.New(fault.NotFound, "not_found", "no such endpoint")
	errMethod        = fault.New(fault.MethodNotAllowed, "method_not_allowed", "method not allowed on this endpoint")
	errInternal      = fault.New(fault.Internal, "internal", "internal error")
)

var kindStatus = [...]int{
	fault.Internal:         http.StatusInternalServerError,
	fault.Invalid:          http.StatusBadRequest,
	fault.Unauthenticated:  http.StatusUnauthorized,
	fault.Forbidden:        http.StatusForbidden,
	fault.NotFound:         http.StatusNotFound,
	fault.MethodNotAllowed: http.StatusMethodNotAllowed,
	fault.Conflict:         http.StatusConflict,
	fault.TooLarge:         http.StatusRequestEntityTooLarge,
	fault.UnsupportedMedia: http.StatusUnsupportedMediaType,
	fault.Locked:           http.StatusLocked,
	fault.TooManyRequests:  http.StatusTooManyRequests,
	fault.BadGateway:       http.StatusBadGateway,
	fault.Unavailable:      http.StatusServiceUnavailable,
	fault.GatewayTimeout:   http.StatusGatewayTimeout,
	fault.RequestTimeout:   http.StatusRequestTimeout,
}

// Status returns the HTTP status of an error kind.
func Status(k fault.Kind) int {
	if int(k) < len(kindStatus) && kindStatus[k] != 0 {
		return kindStatus[k]
	}
	return http.StatusInternalServerError
}

// echoErrors maps the errors Echo raises itself (router, CORS) to ours.
// Their messages are not passed on: only fixed, known texts reach clients.
var echoErrors = map[int]*fault.Error{
	http.StatusNotFound:              errRouteNotFound,
	http.StatusMethodNotAllowed:      errMethod,
	http.StatusRequestEntityTooLarge: errBodyTooLarge,
	http.StatusUnsupportedMediaType:  errUnsupported,
	http.StatusBadRequest:            fault.New(fault.Invalid, "bad_request", "the request is malformed"),
	http.StatusUnauthorized:          fault.New(fault.Unauthenticated, "unauthenticated", "authentication required"),
	http.StatusForbidden:             fault.New(fault.Forbidden, "forbidden", "not allowed"),
	http.StatusTooManyRequests:       fault.New(fault.TooManyRequests, "rate_limited", "too many requests"),
	http.StatusServiceUnavailable:    fault.ErrUnavailable,
}

// classify finds the client-safe error for err. Anything it does not
// recognise is internal: an unknown error is a 500, never a 400.
func classify(err error) *fault.Error {
	if fe, ok := fault.As(err); ok {
		return fe
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		if fe, ok := echoErrors[he.Code]; ok {
			return fe
		}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errBodyTooLarge
	}
	return errInternal
}

// StatusClientClosed is the status logged and counted for a request whose
// client went away before its answer (nginx's convention); it is never sent.
const StatusClientClosed = 499

// handleError is the one error handler: it answers every error in the JSON
// error model and logs the cause of a 500, which the client never sees.
func (s *Server) handleError(err error, c echo.Context) {
	id := RequestID(c)
	if errors.Is(err, context.Canceled) && c.Request().Context().Err() != nil {
		// The client left before the answer (a load balancer's timeout,
		// a closed tab): nothing failed here and no one is listening.
		// Logged and counted as nginx's 499, not as a 500.
		c.Response().Status = StatusClientClosed
		if s.opts.Observe != nil {
			s.opts.Observe(c, StatusClientClosed, "client_closed_request")
		}
		return
	}
	fe := classify(err)
	status := Status(fe.Kind)
	if status >= 500 {
		s.log.Error("request failed", "request_id", id, "status", status, "error", err.Error())
	}
	if s.opts.Observe != nil {
		s.opts.Observe(c, status, fe.Code)
	}
	if c.Response().Committed {
		return
	}
	// An error that knows when to try again says so (lockouts, limits).
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		c.Response().Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(max(ra.RetryAfter(), time.Second).Seconds()))))
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	_ = c.JSON(status, ErrorBody{Error: ErrorDetail{Code: fe.Code, Message: fe.Message, RequestID: id, Details: fe.Details}})
}

// Bind decodes the JSON request body into v, strictly: the content type
// must be JSON, unknown fields and trailing data are refused, and the body
// limit holds. If v has a Validate method, it runs last.
func Bind(c echo.Context, v any) error {
	r := c.Request()
	mt, _, err := mime.ParseMediaType(r.Header.Get(echo.HeaderContentType))
	if err != nil || mt != echo.MIMEApplicationJSON {
		return errUnsupported
	}
	if r.Body == nil || r.Body == http.NoBody {
		return errEmptyBody
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err != nil {
			return jsonError(err)
		}
		return errInvalidJSON.With(map[string]any{"reason": "unexpected data after the JSON value"})
	}
	if val, ok := v.(interface{ Validate() error }); ok {
		return val.Validate()
	}
	return nil
}

// jsonError says what is wrong with a body without quoting Go's messages,
// which name Go types.
func jsonError(err error) error {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return errBodyTooLarge
	case errors.Is(err, io.EOF):
		return errEmptyBody
	case errors.As(err, &se):
		return errInvalidJSON.With(map[string]any{"offset": se.Offset})
	case errors.As(err, &te):
		return errInvalidJSON.With(map[string]any{"field": te.Field, "reason": "wrong type, want " + jsonKind(te.Type.Kind().String())})
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return errInvalidJSON.With(map[string]any{"field": truncate(field, 64), "reason": "unknown field"})
	}
	return errInvalidJSON
}

// jsonKind names a Go kind the way a JSON client thinks of it.
func jsonKind(k string) string {
	switch {
	case strings.HasPrefix(k, "int"), strings.HasPrefix(k, "uint"), strings.HasPrefix(k, "float"):
		return "number"
	case k == "bool":
		return "boolean"
	case k == "slice", k == "array":
		return "array"
	case k == "struct", k == "map":
		return "object"
	}
	return k
}
