package httpx

import (
	"time"

	"github.com/labstack/echo/v4"
)

// Identity is who is calling, as the authenticate step established it.
type Identity struct {
	UserID    string
	TenantID  string
	SessionID string
	TokenID   string // the access token's jti
	// Roles are the roles the access token names, as of its issue; the
	// gateway puts the current ones in their place. Shared with the
	// verified-token cache: never change the slice's elements.
	Roles     []string
	ExpiresAt time.Time // the access token's exp
	// HomeTenantID is the token's tid when a super admin acts inside
	// another tenant (TenantID is then that tenant); else empty.
	HomeTenantID string
	// Scope is set by the authorize step: "all" when the caller holds the
	// route's permission outright, "own" when only its ":own" form (the
	// handler then limits itself to the caller's own resources).
	Scope string
}

// Scopes of a granted permission.
const (
	ScopeAll = "all"
	ScopeOwn = "own"
)

// authed is the request's context once the authenticate step has admitted
// it: Echo's documented way to extend a context. The identity lives in it,
// where c.Set would make a map for it on every request and lock a mutex on
// every read.
type authed struct {
	echo.Context
	id Identity
}

// Error answers err with this context, so that the error handler (which
// audits a 403 with the caller) sees who is calling.
func (a *authed) Error(err error) { a.Echo().HTTPErrorHandler(err, a) }

// WithIdentity returns c carrying id: IdentityOf reads it, and the steps
// after may change it (the tenant acted in, the scope granted).
func WithIdentity(c echo.Context, id Identity) echo.Context {
	return &authed{Context: c, id: id}
}

// Admit runs the rest of the chain as id: the authenticate step's way on.
// next sees a context carrying id, and its error is answered here, with
// that context; steps before this one see the answer, not the error.
func Admit(c echo.Context, id Identity, next echo.HandlerFunc) error {
	a := WithIdentity(c, id)
	if err := next(a); err != nil {
		a.Error(err)
	}
	return nil
}

// IdentityOf returns the caller's identity, or nil on a public route or
// before authentication.
func IdentityOf(c echo.Context) *Identity {
	if a, ok := c.(*authed); ok {
		return &a.id
	}
	return nil
}
