package auth

import "context"

// Roles is what sign-in needs from the rbac module: the role names that go
// into access tokens, and the default role a new member gets.
type Roles interface {
	RoleNames(ctx context.Context, tenantID, userID string) ([]string, error)
	// AssignRole joins the transaction carried by ctx.
	AssignRole(ctx context.Context, tenantID, userID, roleName string) error
}

// Limits is the rate limiter, for the limits sign-in applies itself: the
// refresh policy counts per user, known only once the token is looked up.
type Limits interface {
	// Check returns an error (with a RetryAfter) when the request is over
	// the named policy's limit for key.
	Check(ctx context.Context, policy, key string) error
}
