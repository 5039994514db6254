package rbac

import "gatehouse/platform/fault"

// The errors of roles and permissions. Their messages are what clients see;
// errors.Is matches a sentinel by kind and code, so the variants built with
// a permission's name in their message still match it.
var (
	// ErrForbidden: the caller lacks the route's permission.
	ErrForbidden = fault.New(fault.Forbidden, "forbidden", "you do not have the permission this requires")
	// ErrEscalation: the caller tried to give, or take, more than it holds.
	ErrEscalation = fault.New(fault.Forbidden, "escalation", "you cannot grant or revoke what you do not hold")
	// ErrSystemRole: system roles are defined by the catalogue, not the API.
	ErrSystemRole = fault.New(fault.Forbidden, "system_role", "system roles cannot be changed or deleted")
	// ErrLastAdmin: removing the role would leave the tenant without an admin.
	ErrLastAdmin = fault.New(fault.Conflict, "last_admin", "this is the tenant's last admin: make someone else admin first")
	// ErrRoleNotFound: no such role in the caller's tenant. Another
	// tenant's role gives this too.
	ErrRoleNotFound = fault.New(fault.NotFound, "not_found", "no such role")
	// ErrMemberNotFound: no such active member in the tenant.
	ErrMemberNotFound = fault.New(fault.NotFound, "not_found", "no such member")
	// ErrNotGranted: the role or member does not have what was to be removed.
	ErrNotGranted = fault.New(fault.NotFound, "not_found", "the role or member does not have this")
	// ErrRoleExists: the tenant already has a role of that name.
	ErrRoleExists = fault.New(fault.Conflict, "role_exists", "a role with this name already exists")
	// ErrRoleInUse: the role is its tenant's default role, which every
	// newcomer gets; deleting it would make every registration and member
	// addition fail, and let whoever recreates the name choose what
	// newcomers get, which is settings:manage's to decide.
	ErrRoleInUse = fault.New(fault.Conflict, "role_in_use", "this role is the tenant's default role: make another role the default first")
	// ErrRoleLimit: the tenant has as many custom roles as allowed.
	ErrRoleLimit = fault.New(fault.Conflict, "role_limit", "the tenant has the most custom roles allowed: delete one first")
	// ErrUnknownPermission: not in the catalogue, nor a wildcard of a
	// resource in it.
	ErrUnknownPermission = fault.New(fault.Invalid, "unknown_permission", "no such permission")
	// ErrPlatformPermission: platform permissions belong to super admins only.
	ErrPlatformPermission = fault.New(fault.Invalid, "platform_permission", "platform permissions cannot be given to a tenant role")
	// ErrUnknownRole: AssignRole was given a name no role in the tenant has.
	ErrUnknownRole = fault.New(fault.NotFound, "unknown_role", "no such role")
	// errNoIdentity: the authorize step ran without an identity, which the
	// authenticate step before it should make impossible.
	errNoIdentity = fault.New(fault.Unauthenticated, "invalid_token", "the access token is invalid or expired")
)

// forbidden is ErrForbidden naming the missing permission.
func forbidden(p string) *fault.Error {
	return &fault.Error{Kind: fault.Forbidden, Code: ErrForbidden.Code, Message: "you do not have the permission " + p,
		Details: map[string]any{"permission": p}}
}

// escalation is ErrEscalation naming what the caller does not hold.
func escalation(p string) *fault.Error {
	return &fault.Error{Kind: fault.Forbidden, Code: ErrEscalation.Code,
		Message: "you do not hold " + p + ", so you cannot grant or revoke it", Details: map[string]any{"permission": p}}
}

// permissionError is the client error for a name checkGrantable refused.
func permissionError(base *fault.Error, p string) *fault.Error {
	return &fault.Error{Kind: base.Kind, Code: base.Code, Message: base.Message + ": " + p,
		Details: map[string]any{"permission": p}}
}
