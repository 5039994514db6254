package tenant

import "gatehouse/platform/fault"

// The errors of tenants and memberships.
var (
	ErrNotFound        = fault.New(fault.NotFound, "not_found", "no such tenant")
	ErrMemberNotFound  = fault.New(fault.NotFound, "not_found", "no such member")
	ErrUserNotFound    = fault.New(fault.NotFound, "user_not_found", "no account has that email: invitations come later")
	ErrSlugTaken       = fault.New(fault.Conflict, "slug_taken", "a tenant already has that slug")
	ErrAlreadyMember   = fault.New(fault.Conflict, "already_member", "that user is already a member")
	ErrLastAdmin       = fault.New(fault.Conflict, "last_admin", "the last admin of a tenant cannot be removed, suspended or demoted")
	ErrTenantSuspended = fault.New(fault.Forbidden, "tenant_suspended", "this tenant is suspended")
	ErrTenantMismatch  = fault.New(fault.Forbidden, "tenant_mismatch", "the tenant named by the request is not the token's tenant")
)
