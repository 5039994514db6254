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

const identityKey = "gatehouse.identity"

// SetIdentity records the caller's identity on the request; only the
// authenticate step calls it.
func SetIdentity(c echo.Context, id *Identity) { c.Set(identityKey, id) }

// IdentityOf returns the caller's identity, or nil on a public route or
// before authentication.
func IdentityOf(c echo.Context) *Identity {
	id, _ := c.Get(identityKey).(*Identity)
	return id
}
