package rbac

import "context"

// Members is what rbac needs from the tenant module.
type Members interface {
	// ActiveMember reports whether userID has a membership in tenantID
	// that is active, in a tenant that is active.
	ActiveMember(ctx context.Context, tenantID, userID string) (bool, error)
}
