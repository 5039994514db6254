package auth

import "context"

// Roles is what sign-in needs from the rbac module: the role names that go
// into access tokens, read from the database, and the roles as they are
// now, which /v1/auth/me and introspection report (a token's roles may be
// up to its lifetime old). CurrentRoles' slice is shared: never change it.
type Roles interface {
	RoleNames(ctx context.Context, tenantID, userID string) ([]string, error)
	CurrentRoles(ctx context.Context, tenantID, userID string) ([]string, error)
}

// Tenants is what sign-in needs from the tenant module. Lookups of a
// missing tenant or membership return an error wrapping fault.ErrNotFound.
type Tenants interface {
	TenantBySlug(ctx context.Context, slug string) (Tenant, error)
	TenantByID(ctx context.Context, id string) (Tenant, error)
	// MemberStatus returns the status of the user's membership.
	MemberStatus(ctx context.Context, tenantID, userID string) (string, error)
	// Suspended reports whether the tenant is suspended, as the tenant
	// step of every request reads it.
	Suspended(ctx context.Context, tenantID string) (bool, error)
	// ActiveTenants returns the ids of the user's active memberships.
	ActiveTenants(ctx context.Context, userID string) ([]string, error)
	// Join makes a new user a member with the tenant's default role, in
	// the transaction carried by ctx.
	Join(ctx context.Context, tenantID, userID string) error
	EnsureTenant(ctx context.Context, slug, name string) error
}

// Limits is the rate limiter, for the limits sign-in applies itself: the
// refresh policy counts per user, known only once the token is looked up.
type Limits interface {
	// Check returns an error (with a RetryAfter) when the request is over
	// the named policy's limit for key.
	Check(ctx context.Context, policy, key string) error
}
