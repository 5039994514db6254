// Package tenant manages tenants and their members, and fills the chain's
// tenant slot: which tenant a request acts in.
//
// The access token's tid is the truth. A request may also name its tenant
// (X-Tenant-ID, or a subdomain of the configured base domain); it must then
// agree, except for super admins, who may act in any tenant (audited).
package tenant

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/audit"
	"gatehouse/platform/db"
	"gatehouse/platform/httpx"
	"gatehouse/platform/kv"
)

// Deps is what the module needs.
type Deps struct {
	DB     *db.DB
	KV     kv.Store
	Users  Users
	Roles  Roles
	Events audit.Recorder
	// BaseDomain, when set, lets a request name its tenant by subdomain:
	// acme.example.com names tenant "acme" under example.com.
	BaseDomain string
	// Plans are the plan names a tenant may be given.
	Plans []string
}

// Module serves /v1/tenants and the tenant slot.
type Module struct {
	svc        *Service
	roles      Roles
	events     audit.Recorder
	baseDomain string
	slugs      sync.Map // slug -> id; slugs never change, so no invalidation
}

// New returns the module.
func New(ctx context.Context, d Deps) (*Module, error) {
	svc := &Service{store: store{db: d.DB}, kv: d.KV, users: d.Users, roles: d.Roles, events: d.Events,
		now: func() time.Time { return time.Now().UTC() }, plans: d.Plans}
	return &Module{svc: svc, roles: d.Roles, events: d.Events, baseDomain: strings.ToLower(d.BaseDomain)}, nil
}

// Service returns the module's service, for other modules' adapters.
func (m *Module) Service() *Service { return m.svc }

// Routes declares the module's endpoints.
func (m *Module) Routes() []httpx.Route {
	tags := []string{"tenants"}
	return []httpx.Route{
		{Method: http.MethodPost, Path: "/v1/tenants", Summary: "Create a tenant (super admins)", Tags: tags,
			Auth: httpx.Permission("tenants:manage"), Audit: "tenant.create", In: CreateTenantRequest{}, Out: TenantResponse{},
			Status: http.StatusCreated, Handle: m.createTenant},
		{Method: http.MethodGet, Path: "/v1/tenants", Summary: "List tenants (super admins)", Tags: tags,
			Auth: httpx.Permission("tenants:manage"), Out: TenantList{}, Handle: m.listTenants},
		{Method: http.MethodGet, Path: "/v1/tenants/{id}", Summary: "The caller's tenant", Tags: tags,
			Auth: httpx.Authenticated, Out: TenantResponse{}, Handle: m.getTenant},
		{Method: http.MethodPatch, Path: "/v1/tenants/{id}", Summary: "Rename, suspend or resume a tenant (super admins)", Tags: tags,
			Auth: httpx.Permission("tenants:manage"), Audit: "tenant.update", In: UpdateTenantRequest{}, Out: TenantResponse{},
			Handle: m.updateTenant},
		{Method: http.MethodPatch, Path: "/v1/tenants/{id}/settings", Summary: "Default role and allowed sign-in methods", Tags: tags,
			Auth: httpx.Permission("settings:manage"), Audit: "tenant.settings", In: SettingsRequest{}, Out: TenantResponse{},
			Handle: m.updateSettings},
		{Method: http.MethodPost, Path: "/v1/tenants/{id}/members", Summary: "Add an existing account as a member", Tags: tags,
			Auth: httpx.Permission("users:manage"), Audit: "tenant.member_add", In: AddMemberRequest{}, Out: MemberResponse{},
			Status: http.StatusCreated, Handle: m.addMember},
		{Method: http.MethodGet, Path: "/v1/tenants/{id}/members", Summary: "List members", Tags: tags,
			Auth: httpx.Permission("users:read"), Out: MemberList{}, Handle: m.listMembers},
		{Method: http.MethodPatch, Path: "/v1/tenants/{id}/members/{user}", Summary: "Suspend or reactivate a member", Tags: tags,
			Auth: httpx.Permission("users:manage"), Audit: "tenant.member_status", In: MemberStatusRequest{}, Out: MemberResponse{},
			Handle: m.setMemberStatus},
		{Method: http.MethodDelete, Path: "/v1/tenants/{id}/members/{user}", Summary: "Remove a member", Tags: tags,
			Auth: httpx.Permission("users:manage"), Audit: "tenant.member_remove", Status: http.StatusNoContent, Handle: m.removeMember},
	}
}

// scope returns the tenant named by the path if the caller acts in it, or
// is a super admin; another tenant is not found, never forbidden.
func (m *Module) scope(c echo.Context) (string, error) {
	// As stored: the super admin's path below must not carry a spelling
	// that PostgreSQL matches and the checks after it, comparing strings,
	// do not.
	id, ok := db.ParseID(c.Param("id"))
	if !ok {
		return "", ErrNotFound
	}
	caller := httpx.IdentityOf(c)
	if id == caller.TenantID {
		return id, nil
	}
	if super, err := m.roles.IsSuperAdmin(c.Request().Context(), caller.UserID); err != nil {
		return "", err
	} else if super {
		return id, nil
	}
	return "", ErrNotFound
}

// Resolve is the chain's tenant slot. It settles the tenant the request
// acts in and refuses members of a suspended tenant.
func (m *Module) Resolve(httpx.Route) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			id := httpx.IdentityOf(c)
			ctx := c.Request().Context()
			named, err := m.named(c)
			if err != nil {
				return err
			}
			super := false
			if named != "" && named != id.TenantID {
				if super, err = m.roles.IsSuperAdmin(ctx, id.UserID); err != nil {
					return err
				}
				if !super {
					m.audit(c, id, "tenant.mismatch", audit.Failure, named)
					return ErrTenantMismatch
				}
				if _, err := m.svc.Get(ctx, named); err != nil {
					return err
				}
				m.audit(c, id, "tenant.act_as", audit.Success, named)
				id.HomeTenantID, id.TenantID = id.TenantID, named
			}
			suspended, err := m.svc.Suspended(ctx, id.TenantID)
			if err != nil {
				return err
			}
			if suspended {
				if !super {
					if super, err = m.roles.IsSuperAdmin(ctx, id.UserID); err != nil {
						return err
					}
				}
				if !super {
					return ErrTenantSuspended
				}
			}
			// Tenant-owned queries take their tenant from here (db.Scoped).
			c.SetRequest(c.Request().WithContext(db.WithTenant(ctx, id.TenantID)))
			return next(c)
		}
	}
}

// named returns the tenant id the request names, if any: X-Tenant-ID, else
// the subdomain under the base domain. A name that matches no tenant can
// never agree with the token, so it is a mismatch.
func (m *Module) named(c echo.Context) (string, error) {
	// The canonical form: Get would canonicalize "X-Tenant-ID" into a new
	// string on every request.
	if h := c.Request().Header.Get("X-Tenant-Id"); h != "" {
		id, ok := db.ParseID(h)
		if !ok {
			return "", ErrTenantMismatch
		}
		return id, nil
	}
	if m.baseDomain == "" {
		return "", nil
	}
	host := strings.ToLower(c.Request().Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	slug, ok := strings.CutSuffix(host, "."+m.baseDomain)
	if !ok || slug == "" || strings.Contains(slug, ".") {
		return "", nil
	}
	if id, ok := m.slugs.Load(slug); ok {
		return id.(string), nil
	}
	t, err := m.svc.store.bySlug(c.Request().Context(), slug)
	if err != nil {
		return "", ErrTenantMismatch
	}
	m.slugs.Store(slug, t.ID)
	return t.ID, nil
}

func (m *Module) audit(c echo.Context, id *httpx.Identity, action, outcome, named string) {
	if m.events == nil {
		return
	}
	ctx := audit.RequestContext(c)
	m.events.Record(ctx, audit.Event{Action: action, Outcome: outcome, TenantID: named, Actor: audit.User(id.UserID),
		ResourceType: "tenant", ResourceID: named, Metadata: map[string]any{"home_tenant": id.TenantID, "path": c.Path()}})
}

func fields(s string) []string {
	f := strings.Fields(s)
	if f == nil {
		return []string{}
	}
	return f
}
