package tenant

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/audit"
	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
)

// TenantResponse is a tenant as clients see it.
type TenantResponse struct {
	ID           string    `json:"id"`
	Slug         string    `json:"slug"`
	Name         string    `json:"name"`
	Status       string    `json:"status"`
	DefaultRole  string    `json:"default_role"`
	LoginMethods []string  `json:"login_methods"`
	Plan         string    `json:"plan"`
	CreatedAt    time.Time `json:"created_at"`
}

// TenantList is a page of tenants.
type TenantList struct {
	Tenants    []TenantResponse `json:"tenants"`
	NextCursor string           `json:"next_cursor,omitempty"`
}

// CreateTenantRequest is the body of POST /v1/tenants.
type CreateTenantRequest struct {
	Slug string `json:"slug"`
	Name string `json:"name"`
}

// UpdateTenantRequest is the body of PATCH /v1/tenants/{id}.
type UpdateTenantRequest struct {
	Name   *string `json:"name"`
	Status *string `json:"status"` // active or suspended
	Plan   *string `json:"plan"`   // one of ratelimit.plans
}

// SettingsRequest is the body of PATCH /v1/tenants/{id}/settings.
type SettingsRequest struct {
	DefaultRole  *string  `json:"default_role"`
	LoginMethods []string `json:"login_methods"`
}

// AddMemberRequest is the body of POST /v1/tenants/{id}/members.
type AddMemberRequest struct {
	Email string `json:"email"`
}

// MemberStatusRequest is the body of PATCH /v1/tenants/{id}/members/{user}.
type MemberStatusRequest struct {
	Status string `json:"status"`
}

// MemberResponse is a member as clients see it.
type MemberResponse struct {
	UserID    string    `json:"user_id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	Status    string    `json:"status"`
	Roles     []string  `json:"roles"`
	CreatedAt time.Time `json:"created_at"`
}

// MemberList is a page of members.
type MemberList struct {
	Members    []MemberResponse `json:"members"`
	NextCursor string           `json:"next_cursor,omitempty"`
}

func tenantResponse(t Tenant) TenantResponse {
	return TenantResponse{ID: t.ID, Slug: t.Slug, Name: t.Name, Status: t.Status, DefaultRole: t.DefaultRole,
		LoginMethods: fields(t.LoginMethods), Plan: t.Plan, CreatedAt: t.CreatedAt}
}

func memberResponse(m Member) MemberResponse {
	roles := m.Roles
	if roles == nil {
		roles = []string{}
	}
	return MemberResponse{UserID: m.UserID, Email: m.Email, Name: m.Name, Status: m.Status, Roles: roles, CreatedAt: m.CreatedAt}
}

// page reads ?limit= (1 to 100, default 50) and ?cursor=.
func page(c echo.Context) (string, int, error) {
	limit := 50
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return "", 0, fault.Field("limit", "limit must be a number from 1 to 100")
		}
		limit = n
	}
	return c.QueryParam("cursor"), limit, nil
}

// ctxOf returns the caller and the request's context for the service.
func ctxOf(c echo.Context) (actor string, ctx context.Context) {
	return httpx.IdentityOf(c).UserID, audit.RequestContext(c)
}

func (m *Module) createTenant(c echo.Context) error {
	var req CreateTenantRequest
	if err := httpx.Bind(c, &req); err != nil {
		return err
	}
	actor, ctx := ctxOf(c)
	t, err := m.svc.Create(ctx, actor, req.Slug, req.Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, tenantResponse(t))
}

func (m *Module) listTenants(c echo.Context) error {
	cursor, limit, err := page(c)
	if err != nil {
		return err
	}
	ts, err := m.svc.List(c.Request().Context(), cursor, limit)
	if err != nil {
		return err
	}
	out := TenantList{Tenants: make([]TenantResponse, 0, len(ts))}
	for _, t := range ts {
		out.Tenants = append(out.Tenants, tenantResponse(t))
	}
	if len(ts) == limit {
		out.NextCursor = ts[len(ts)-1].ID
	}
	return c.JSON(http.StatusOK, out)
}

func (m *Module) getTenant(c echo.Context) error {
	id, err := m.scope(c)
	if err != nil {
		return err
	}
	t, err := m.svc.Get(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, tenantResponse(t))
}

func (m *Module) updateTenant(c echo.Context) error {
	var req UpdateTenantRequest
	if err := httpx.Bind(c, &req); err != nil {
		return err
	}
	actor, ctx := ctxOf(c)
	t, err := m.svc.Update(ctx, actor, c.Param("id"), req.Name, req.Status, req.Plan)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, tenantResponse(t))
}

func (m *Module) updateSettings(c echo.Context) error {
	id, err := m.scope(c)
	if err != nil {
		return err
	}
	var req SettingsRequest
	if err := httpx.Bind(c, &req); err != nil {
		return err
	}
	actor, ctx := ctxOf(c)
	t, err := m.svc.UpdateSettings(ctx, actor, id, req.DefaultRole, req.LoginMethods)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, tenantResponse(t))
}

func (m *Module) addMember(c echo.Context) error {
	id, err := m.scope(c)
	if err != nil {
		return err
	}
	var req AddMemberRequest
	if err := httpx.Bind(c, &req); err != nil {
		return err
	}
	actor, ctx := ctxOf(c)
	member, err := m.svc.AddMember(ctx, actor, id, req.Email)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, memberResponse(member))
}

func (m *Module) listMembers(c echo.Context) error {
	id, err := m.scope(c)
	if err != nil {
		return err
	}
	cursor, limit, err := page(c)
	if err != nil {
		return err
	}
	ms, err := m.svc.Members(c.Request().Context(), id, cursor, limit)
	if err != nil {
		return err
	}
	out := MemberList{Members: make([]MemberResponse, 0, len(ms))}
	for _, mm := range ms {
		out.Members = append(out.Members, memberResponse(mm))
	}
	if len(ms) == limit {
		out.NextCursor = ms[len(ms)-1].UserID
	}
	return c.JSON(http.StatusOK, out)
}

func (m *Module) setMemberStatus(c echo.Context) error {
	id, err := m.scope(c)
	if err != nil {
		return err
	}
	var req MemberStatusRequest
	if err := httpx.Bind(c, &req); err != nil {
		return err
	}
	actor, ctx := ctxOf(c)
	ms, err := m.svc.SetMemberStatus(ctx, actor, id, c.Param("user"), req.Status)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, memberResponse(Member{Membership: ms}))
}

func (m *Module) removeMember(c echo.Context) error {
	id, err := m.scope(c)
	if err != nil {
		return err
	}
	actor, ctx := ctxOf(c)
	if err := m.svc.RemoveMember(ctx, actor, id, c.Param("user")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
