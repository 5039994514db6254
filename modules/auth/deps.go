package auth

import "context"

// Roles is what sign-in needs from the rbac module: the role names that go
// into access tokens, and the default role a new member gets.
type Roles interface {
	RoleNames(ctx context.Context, tenantID, userID string) ([]string, error)
	// AssignRole joins the transaction carried by ctx.
	AssignRole(ctx context.Context, tenantID, userID, roleName string) error
}
