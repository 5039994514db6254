package gateway

import (
	"time"

	"gatehouse/platform/fault"
)

// The errors the gateway answers with itself. An upstream's own error
// responses are passed on unchanged instead.
var (
	// ErrInvalidPath: the path has a segment of dots and spaces only, an
	// encoded slash or backslash, a backslash, an empty segment, a control
	// character, bytes that are not UTF-8, a semicolon, an encoded letter
	// or digit or an escape escaped twice, or names a nested route's
	// prefix in another letter case or form (see skeleton); or the query
	// has a space or a control character. Such paths can mean one thing to
	// the gateway's route table and another to an upstream, and such a
	// query would change the upstream's request line, so none is forwarded.
	ErrInvalidPath = fault.New(fault.Invalid, "invalid_path", "the request path is not allowed through the gateway")
	// ErrUpgradeRefused: an Upgrade request on a route that does not allow
	// it, or to a protocol other than WebSocket.
	ErrUpgradeRefused = fault.New(fault.Invalid, "upgrade_not_allowed", "this route does not allow this protocol upgrade")
	// ErrBadGateway: no upstream could be reached, or one broke the
	// exchange before its response.
	ErrBadGateway = fault.New(fault.BadGateway, "bad_gateway", "the upstream service could not be reached")
	// ErrGatewayTimeout: the upstream did not answer within the route's
	// timeout.
	ErrGatewayTimeout = fault.New(fault.GatewayTimeout, "gateway_timeout", "the upstream service did not answer in time")
	// ErrRequestTimeout: the client had not sent its whole body when the
	// route's timeout ran out. The upstream is not blamed for it.
	ErrRequestTimeout = fault.New(fault.RequestTimeout, "request_timeout", "the request body did not arrive within the route's timeout")
	// ErrUnavailable: every upstream of the route is down (open circuit);
	// none was contacted.
	ErrUnavailable = fault.New(fault.Unavailable, "upstream_unavailable", "the upstream service is unavailable: try again later")

	errNoRoute = fault.New(fault.NotFound, "not_found", "no such endpoint")
	errBadBody = fault.New(fault.Invalid, "invalid_body", "the request body could not be read")
)

// unavailable is ErrUnavailable with the time until an upstream's cooldown
// ends, which the error handler sends as Retry-After.
type unavailable struct {
	after time.Duration
}

func (u unavailable) Error() string             { return ErrUnavailable.Error() }
func (u unavailable) Unwrap() error             { return ErrUnavailable }
func (u unavailable) RetryAfter() time.Duration { return u.after }
