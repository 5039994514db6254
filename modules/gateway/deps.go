package gateway

import (
	"context"
	"log/slog"
	"time"

	"gatehouse/platform/httpx"
)

// Signer makes the short-lived internal token of a request: a token for
// the route's audience, naming the caller, that the upstream verifies with
// Gatehouse's JWKS. main.go hands the gateway one built on platform/token.
type Signer interface {
	SignInternal(ctx context.Context, audience string, id *httpx.Identity) (string, error)
}

// Roles gives a caller's roles in a tenant as they are now, which an
// access token's roles may not be: up to its lifetime old. The slice is
// shared: never changed.
type Roles interface {
	CurrentRoles(ctx context.Context, tenantID, userID string) ([]string, error)
}

// Deps is what the gateway needs from elsewhere. Signer may be nil when no
// route asks for an internal token.
type Deps struct {
	Signer Signer
	// Roles, if set, gives the roles X-Gatehouse-Roles and the internal
	// token carry; if nil (tests), they are the identity's own.
	Roles Roles
	Log   *slog.Logger
	// Observe, if set, is told of every upstream attempt: the route's name,
	// how long the exchange took, and its outcome (ok, status_5xx, error,
	// timeout, canceled, circuit_open when no upstream could be tried, or
	// saturated when those that could were at their max_requests).
	Observe func(route string, d time.Duration, outcome string)
	// WriteTimeout is the server's http.write_timeout (0: none). Every
	// route's timeout must be below it: it counts from the request's
	// arrival, so once it passes the server writes nothing more, and a
	// route timing out later could not send its 504.
	WriteTimeout time.Duration
	// Reserved are path prefixes Gatehouse keeps to itself: no route's
	// prefix may be one or lie under one, and a request under one that
	// reaches a route with a shorter prefix is answered 404 not_found.
	// app.go reserves the auth module's cookie path, so the browser never
	// sends the refresh cookie to an upstream.
	Reserved []string
	// Cookies are cookie names only Gatehouse may set (app.go passes the
	// session cookies'). An upstream's Set-Cookie for one is dropped and
	// logged: an upstream shares Gatehouse's origin, and could otherwise
	// plant a session of its choosing in a user's browser (signing the
	// user in as someone else) or overwrite the user's own.
	Cookies []string
}
