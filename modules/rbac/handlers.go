package rbac

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/audit"
	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
)

// PermissionResponse is one permission of the catalogue.
type PermissionResponse struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Platform permissions are held only by super admins.
	Platform bool `json:"platform"`
}

// PermissionsResponse is the catalogue.
type PermissionsResponse struct {
	Permissions []PermissionResponse `json:"permissions"`
}

// MyPermissionsResponse lists the caller's effective permissions: names
// from the catalogue, ":own" ones limited to the caller's own records.
type MyPermissionsResponse struct {
	Permissions []string `json:"permissions"`
	SuperAdmin  bool     `json:"super_admin"`
}

// RoleResponse is a role as clients see it.
type RoleResponse struct {
	ID string `json:"id"`
	// TenantID is null for a system role.
	TenantID    *string   `json:"tenant_id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	System      bool      `json:"system"`
	Permissions []string  `json:"permissions"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// RolesResponse lists roles: the system roles first, then the tenant's, each
// group by name.
type RolesResponse struct {
	Roles []RoleResponse `json:"roles"`
}

// CreateRoleRequest is the body of POST /v1/roles.
type CreateRoleRequest struct {
	// Name is 1 to 64 of a-z, 0-9, _ and -, and not a system role's.
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Permissions []string `json:"permissions"`
}

// UpdateRoleRequest is the body of PATCH /v1/roles/{id}. A role's name
// cannot change.
type UpdateRoleRequest struct {
	Description *string `json:"description"`
}

// Validate requires the description.
func (r UpdateRoleRequest) Validate() error {
	if r.Description == nil {
		return fault.Field("description", "description is required")
	}
	return nil
}

// GrantRequest is the body of POST /v1/roles/{id}/permissions.
type GrantRequest struct {
	Permissions []string `json:"permissions"`
}

// AssignRoleRequest is the body of POST /v1/tenants/{id}/members/{user}/roles.
type AssignRoleRequest struct {
	RoleID string `json:"role_id"`
}

// Validate requires the role id.
func (r AssignRoleRequest) Validate() error {
	if r.RoleID == "" {
		return fault.Field("role_id", "role_id is required")
	}
	return nil
}

// MemberRolesResponse is a member's roles after a change.
type MemberRolesResponse struct {
	TenantID string   `json:"tenant_id"`
	UserID   string   `json:"user_id"`
	Roles    []string `json:"roles"`
}

func roleResponse(r Role) RoleResponse {
	perms := r.Permissions
	if perms == nil {
		perms = []string{}
	}
	return RoleResponse{ID: r.ID, TenantID: r.TenantID, Name: r.Name, Description: r.Description, System: r.System,
		Permissions: perms, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
}

func (m *Module) permissions(c echo.Context) error {
	perms := m.svc.cat.Permissions()
	out := PermissionsResponse{Permissions: make([]PermissionResponse, len(perms))}
	for i, p := range perms {
		out.Permissions[i] = PermissionResponse{Name: p.Name, Description: p.Description, Platform: p.Platform}
	}
	return c.JSON(http.StatusOK, out)
}

func (m *Module) myPermissions(c echo.Context) error {
	id := httpx.IdentityOf(c)
	g, err := m.svc.Permissions(c.Request().Context(), id.TenantID, id.UserID)
	if err != nil {
		return err
	}
	return c.JSONBlob(http.StatusOK, g.mine)
}

func (m *Module) roles(c echo.Context) error {
	list, err := m.svc.Roles(c.Request().Context(), httpx.IdentityOf(c))
	if err != nil {
		return err
	}
	out := RolesResponse{Roles: make([]RoleResponse, len(list))}
	for i, r := range list {
		out.Roles[i] = roleResponse(r)
	}
	return c.JSON(http.StatusOK, out)
}

func (m *Module) role(c echo.Context) error {
	r, err := m.svc.Role(c.Request().Context(), httpx.IdentityOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, roleResponse(r))
}

func (m *Module) createRole(c echo.Context) error {
	var req CreateRoleRequest
	if err := httpx.Bind(c, &req); err != nil {
		return err
	}
	r, err := m.svc.CreateRole(audit.RequestContext(c), httpx.IdentityOf(c), req.Name, strings.TrimSpace(req.Description), req.Permissions)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, roleResponse(r))
}

func (m *Module) updateRole(c echo.Context) error {
	var req UpdateRoleRequest
	if err := httpx.Bind(c, &req); err != nil {
		return err
	}
	r, err := m.svc.UpdateRole(audit.RequestContext(c), httpx.IdentityOf(c), c.Param("id"), strings.TrimSpace(*req.Description))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, roleResponse(r))
}

func (m *Module) deleteRole(c echo.Context) error {
	if err := m.svc.DeleteRole(audit.RequestContext(c), httpx.IdentityOf(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (m *Module) grant(c echo.Context) error {
	var req GrantRequest
	if err := httpx.Bind(c, &req); err != nil {
		return err
	}
	r, err := m.svc.GrantPermissions(audit.RequestContext(c), httpx.IdentityOf(c), c.Param("id"), req.Permissions)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, roleResponse(r))
}

func (m *Module) revoke(c echo.Context) error {
	// A client may percent-encode the colons; Echo hands the segment over
	// as it came.
	p := c.Param("permission")
	if u, err := url.PathUnescape(p); err == nil {
		p = u
	}
	if err := m.svc.RevokePermission(audit.RequestContext(c), httpx.IdentityOf(c), c.Param("id"), p); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (m *Module) assign(c echo.Context) error {
	var req AssignRoleRequest
	if err := httpx.Bind(c, &req); err != nil {
		return err
	}
	id := httpx.IdentityOf(c)
	roles, err := m.svc.AssignMemberRole(audit.RequestContext(c), id, c.Param("id"), c.Param("user"), req.RoleID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, MemberRolesResponse{TenantID: id.TenantID, UserID: strings.ToLower(c.Param("user")), Roles: roles})
}

func (m *Module) unassign(c echo.Context) error {
	_, err := m.svc.RevokeMemberRole(audit.RequestContext(c), httpx.IdentityOf(c), c.Param("id"), c.Param("user"), c.Param("role"))
	if err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
