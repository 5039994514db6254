package tenant

import "context"

// User is what this module knows of an account.
type User struct {
	ID, Email, Name string
}

// Users is what the tenant module needs from the auth module.
type Users interface {
	// UserByEmail returns the account with this email, or an error that
	// wraps fault.ErrNotFound.
	UserByEmail(ctx context.Context, email string) (User, error)
	Users(ctx context.Context, ids []string) (map[string]User, error)
	// EndTenantSessions ends the user's sessions in the tenant at once.
	EndTenantSessions(ctx context.Context, tenantID, userID, reason string) error
}

// Roles is what the tenant module needs from the rbac module.
type Roles interface {
	// AssignRole joins the transaction carried by ctx.
	AssignRole(ctx context.Context, tenantID, userID, roleName string) error
	RoleNames(ctx context.Context, tenantID, userID string) ([]string, error)
	IsLastAdmin(ctx context.Context, tenantID, userID string) (bool, error)
	IsSuperAdmin(ctx context.Context, userID string) (bool, error)
	// CheckRoleGrantable returns nil if the tenant has the role and actor
	// holds each of its permissions there; else a client error (not found,
	// or forbidden naming what actor lacks).
	CheckRoleGrantable(ctx context.Context, tenantID, actorID, roleName, action string) error
	// CheckHoldsMember returns nil if actor holds each permission that
	// member's roles give in the tenant; else a forbidden client error
	// naming what actor lacks.
	CheckHoldsMember(ctx context.Context, tenantID, actorID, member, action string) error
	// Invalidate drops every cached permission set, on every instance.
	Invalidate(ctx context.Context) error
}
