// Package rbac is role-based access control: the permission catalogue,
// system and custom roles, the roles of each member, super admins, and the
// authorize step of the chain.
//
// A permission is a "resource:action" string; "resource:action:own" is its
// form limited to the caller's own resources. The catalogue
// (configs/roles.yaml) lists every permission and the grants of the system
// roles, which every tenant has; tenants add custom roles holding catalogue
// permissions and "resource:*" wildcards. A user's effective permissions in
// a tenant are everything if it is a super admin, else the union of its
// roles' grants while its membership and the tenant are active.
//
// The authorize step answers from memory on almost every request, yet a
// revoked permission is gone on the very next one, on every instance: see
// cache.go for how one version number in kv makes both true.
//
// No one gives what they do not hold: creating or changing a role, and
// assigning or revoking one, needs the caller to hold every permission
// involved.
package rbac

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/audit"
	"gatehouse/platform/db"
	"gatehouse/platform/httpx"
	"gatehouse/platform/kv"
)

// Deps is what the module needs. Events may be nil, which records nothing.
type Deps struct {
	DB        *db.DB
	KV        kv.Store
	Log       *slog.Logger
	Events    audit.Recorder
	Catalogue *Catalogue
	Members   Members
}

// Module serves /v1/roles and /v1/permissions and fills the chain's
// authorize slot.
type Module struct {
	svc *Service
}

// New returns the module after setting the system roles' grants in the
// database to the catalogue's. That is idempotent, so every instance does it
// at every start; when it changes anything, every cached answer is dropped.
func New(ctx context.Context, d Deps) (*Module, error) {
	switch {
	case d.DB == nil:
		return nil, errors.New("rbac: no database")
	case d.KV == nil:
		return nil, errors.New("rbac: no kv store")
	case d.Catalogue == nil:
		return nil, errors.New("rbac: no catalogue")
	case d.Members == nil:
		return nil, errors.New("rbac: no Members")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	st := store{db: d.DB}
	changed, err := syncSystemRoles(ctx, d.DB, st, d.Catalogue)
	if err != nil {
		return nil, err
	}
	svc := &Service{db: d.DB, st: st, kv: d.KV, log: d.Log, events: d.Events, cat: d.Catalogue, members: d.Members,
		memo: newMemo(memoMax, memoMaxAge)}
	if changed {
		if err := svc.bump(ctx); err != nil {
			return nil, err
		}
	}
	return &Module{svc: svc}, nil
}

// Service returns the module's service, for other modules' adapters.
func (m *Module) Service() *Service { return m.svc }

// Routes declares the module's endpoints.
func (m *Module) Routes() []httpx.Route {
	tags := []string{"rbac"}
	return []httpx.Route{
		{Method: http.MethodGet, Path: "/v1/permissions", Summary: "The permission catalogue", Tags: tags,
			Auth: httpx.Authenticated, Out: PermissionsResponse{}, Handle: m.permissions},
		{Method: http.MethodGet, Path: "/v1/permissions/mine", Summary: "The caller's effective permissions in its tenant", Tags: tags,
			Description: "What the caller may do here, for a frontend to show or hide what would be refused. " +
				"Answered from the permission cache, so it is as cheap as a request gets.",
			Auth: httpx.Authenticated, Out: MyPermissionsResponse{}, Handle: m.myPermissions},
		{Method: http.MethodGet, Path: "/v1/roles", Summary: "The system roles and the tenant's custom roles", Tags: tags,
			Auth: httpx.Permission("roles:read"), Out: RolesResponse{}, Handle: m.roles},
		{Method: http.MethodPost, Path: "/v1/roles", Summary: "Create a custom role", Tags: tags,
			Description: "Permissions must be in the catalogue (resource:* wildcards allowed), never platform ones, " +
				"and held by the caller: else 403 escalation naming the permission. A taken name answers 409 role_exists.",
			Auth: httpx.Permission("roles:manage"), Audit: "rbac.role_create", In: CreateRoleRequest{}, Out: RoleResponse{},
			Status: http.StatusCreated, Handle: m.createRole},
		{Method: http.MethodGet, Path: "/v1/roles/{id}", Summary: "One role", Tags: tags,
			Auth: httpx.Permission("roles:read"), Out: RoleResponse{}, Handle: m.role},
		{Method: http.MethodPatch, Path: "/v1/roles/{id}", Summary: "Change a custom role's description", Tags: tags,
			Description: "A role's name cannot change. System roles answer 403 system_role.",
			Auth:        httpx.Permission("roles:manage"), Audit: "rbac.role_update", In: UpdateRoleRequest{}, Out: RoleResponse{},
			Handle: m.updateRole},
		{Method: http.MethodDelete, Path: "/v1/roles/{id}", Summary: "Delete a custom role, taking it from its members", Tags: tags,
			Description: "System roles answer 403 system_role; the caller must hold every permission of the role. " +
				"The tenant's default role answers 409 role_in_use: make another role the default first.",
			Auth: httpx.Permission("roles:manage"), Audit: "rbac.role_delete", Status: http.StatusNoContent, Handle: m.deleteRole},
		{Method: http.MethodPost, Path: "/v1/roles/{id}/permissions", Summary: "Grant permissions to a custom role", Tags: tags,
			Description: "The rules of role creation apply to each permission.",
			Auth:        httpx.Permission("roles:manage"), Audit: "rbac.permission_grant", In: GrantRequest{}, Out: RoleResponse{},
			Handle: m.grant},
		{Method: http.MethodDelete, Path: "/v1/roles/{id}/permissions/{permission}", Summary: "Revoke a permission from a custom role",
			Tags: tags, Auth: httpx.Permission("roles:manage"), Audit: "rbac.permission_revoke", Status: http.StatusNoContent,
			Handle: m.revoke},
		{Method: http.MethodPost, Path: "/v1/tenants/{id}/members/{user}/roles", Summary: "Give a member a role", Tags: tags,
			Description: "{id} must be the caller's tenant and {user} an active member of it. super_admin cannot be given " +
				"this way, and the caller must hold every permission of the role (403 escalation).",
			Auth: httpx.Permission("roles:manage"), Audit: "rbac.role_assign", In: AssignRoleRequest{}, Out: MemberRolesResponse{},
			Handle: m.assign},
		{Method: http.MethodDelete, Path: "/v1/tenants/{id}/members/{user}/roles/{role}", Summary: "Take a role from a member",
			Description: "The rules of giving a role apply. Taking admin from the tenant's last active admin answers 409 last_admin.",
			Tags:        tags, Auth: httpx.Permission("roles:manage"), Audit: "rbac.role_revoke", Status: http.StatusNoContent,
			Handle: m.unassign},
	}
}

// Authorize is the chain's authorize slot. For a route that needs a
// permission it admits the caller only if its effective grants in its
// tenant satisfy it, and records the scope granted in the identity (see
// Grants.Scope); otherwise it answers 403 forbidden naming the permission.
// It returns nil for a route that needs no permission.
func (m *Module) Authorize(r httpx.Route) echo.MiddlewareFunc {
	p := r.Auth.Permission()
	if p == "" {
		return nil
	}
	if _, ok := m.svc.cat.Lookup(p); !ok {
		// Still enforced (a wildcard or a super admin can pass), but no
		// role can name it, so this is most likely a typo.
		m.svc.log.Warn("rbac: route needs a permission the catalogue does not have",
			"method", r.Method, "path", r.Path, "permission", p)
	}
	// Built once: a refusal allocates nothing either.
	denied := forbidden(p)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			id := httpx.IdentityOf(c)
			if id == nil {
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer error="invalid_token"`)
				return errNoIdentity
			}
			scope, err := m.svc.scope(c.Request().Context(), id.TenantID, id.UserID, p)
			if err != nil {
				return err
			}
			if scope == "" {
				return denied
			}
			id.Scope = scope
			return next(c)
		}
	}
}
