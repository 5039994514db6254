package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"gatehouse/platform/httpx"
)

// nobody is a well-formed id that names nothing: requests that pass
// authorization then stop at 404, so the walk changes no data.
const nobody = "01950000-0000-7000-8000-00000000dead"

// routeCase is how the walk calls one route: the path with its parameters
// filled, and a body that authorized callers get refused for (400, 404)
// rather than changing anything.
type routeCase struct {
	path string
	body any
}

// Acceptance 1: every route in the route table, as anonymous, member,
// manager, admin, another tenant's admin and super admin. A route needing a
// permission answers 403 forbidden exactly to those without it; every
// authenticated route answers 401 to anonymous. A route added without a
// case here fails the test.
func TestEveryRouteEnforcesItsAuth(t *testing.T) {
	t.Parallel()
	w := newWorld(t, backends[0])
	acme := w.acme
	cases := map[string]routeCase{
		"GET /health":                                         {path: "/health"},
		"GET /health/detailed":                                {path: "/health/detailed"},
		"GET /health/database":                                {path: "/health/database"},
		"GET /health/cache":                                   {path: "/health/cache"},
		"GET /docs":                                           {path: "/docs"},
		"GET /docs/*":                                         {path: "/docs/docs.js"},
		"GET /openapi.json":                                   {path: "/openapi.json"},
		"GET /.well-known/jwks.json":                          {path: "/.well-known/jwks.json"},
		"POST /v1/auth/register":                              {path: "/v1/auth/register", body: map[string]any{}},
		"POST /v1/auth/login":                                 {path: "/v1/auth/login", body: map[string]any{}},
		"POST /v1/auth/refresh":                               {path: "/v1/auth/refresh", body: map[string]any{}},
		"POST /v1/auth/logout":                                {path: "/v1/auth/logout", body: "{"},
		"POST /v1/auth/logout-all":                            {path: "/v1/auth/logout-all"},
		"GET /v1/auth/me":                                     {path: "/v1/auth/me"},
		"GET /v1/auth/sessions":                               {path: "/v1/auth/sessions"},
		"DELETE /v1/auth/sessions/{id}":                       {path: "/v1/auth/sessions/" + nobody},
		"POST /v1/auth/password":                              {path: "/v1/auth/password", body: map[string]any{"current_password": "wrong guess", "new_password": "long enough pw"}},
		"POST /v1/auth/switch-tenant":                         {path: "/v1/auth/switch-tenant", body: map[string]any{"tenant": "nope"}},
		"POST /v1/oauth/introspect":                           {path: "/v1/oauth/introspect"},
		"POST /v1/tenants":                                    {path: "/v1/tenants", body: map[string]any{"slug": "Not A Slug", "name": "x"}},
		"GET /v1/tenants":                                     {path: "/v1/tenants"},
		"GET /v1/tenants/{id}":                                {path: "/v1/tenants/" + acme},
		"PATCH /v1/tenants/{id}":                              {path: "/v1/tenants/" + acme, body: map[string]any{"status": "bogus"}},
		"PATCH /v1/tenants/{id}/settings":                     {path: "/v1/tenants/" + acme + "/settings", body: map[string]any{"login_methods": []string{}}},
		"POST /v1/tenants/{id}/members":                       {path: "/v1/tenants/" + acme + "/members", body: map[string]any{"email": "nobody@nowhere.test"}},
		"GET /v1/tenants/{id}/members":                        {path: "/v1/tenants/" + acme + "/members"},
		"PATCH /v1/tenants/{id}/members/{user}":               {path: "/v1/tenants/" + acme + "/members/" + nobody, body: map[string]any{"status": "suspended"}},
		"DELETE /v1/tenants/{id}/members/{user}":              {path: "/v1/tenants/" + acme + "/members/" + nobody},
		"POST /v1/tenants/{id}/members/{user}/roles":          {path: "/v1/tenants/" + acme + "/members/" + nobody + "/roles", body: map[string]any{"role_id": nobody}},
		"DELETE /v1/tenants/{id}/members/{user}/roles/{role}": {path: "/v1/tenants/" + acme + "/members/" + nobody + "/roles/" + nobody},
		"GET /v1/audit":                                       {path: "/v1/audit"},
		"POST /v1/admin/gateway/reload":                       {path: "/v1/admin/gateway/reload"},
		"GET /v1/permissions":                                 {path: "/v1/permissions"},
		"GET /v1/permissions/mine":                            {path: "/v1/permissions/mine"},
		"GET /v1/roles":                                       {path: "/v1/roles"},
		"POST /v1/roles":                                      {path: "/v1/roles", body: map[string]any{"name": "Not A Name!"}},
		"GET /v1/roles/{id}":                                  {path: "/v1/roles/" + nobody},
		"PATCH /v1/roles/{id}":                                {path: "/v1/roles/" + nobody, body: map[string]any{"description": "x"}},
		"DELETE /v1/roles/{id}":                               {path: "/v1/roles/" + nobody},
		"POST /v1/roles/{id}/permissions":                     {path: "/v1/roles/" + nobody + "/permissions", body: map[string]any{"permissions": []string{"users:read"}}},
		"DELETE /v1/roles/{id}/permissions/{permission}":      {path: "/v1/roles/" + nobody + "/permissions/users:read"},
	}
	routes := slices.Clone(w.app.Routes())
	for _, r := range routes {
		if _, ok := cases[r.Method+" "+r.Path]; !ok {
			t.Errorf("route %s %s has no case in TestEveryRouteEnforcesItsAuth: add one", r.Method, r.Path)
		}
	}
	// logout-all ends the caller's sessions: walk it last.
	slices.SortStableFunc(routes, func(a, b httpx.Route) int {
		return boolInt(a.Path == "/v1/auth/logout-all") - boolInt(b.Path == "/v1/auth/logout-all")
	})

	ctx := context.Background()
	for _, who := range []struct {
		name   string
		p      *person
		tenant string
	}{
		{"anonymous", nil, ""}, {"member", &w.member, acme}, {"manager", &w.manager, acme}, {"admin", &w.admin, acme},
		{"other tenant's admin", &w.otherAdmin, w.globex}, {"super admin", &w.super, acme},
	} {
		t.Run(who.name, func(t *testing.T) {
			denied := 0
			for _, r := range routes {
				c := cases[r.Method+" "+r.Path]
				rq := req{method: r.Method, path: c.path, body: c.body}
				if who.p != nil {
					rq.bearer = who.p.token
				}
				rec := w.app.do(t, rq)
				var eb struct {
					Error struct{ Code string }
				}
				json.Unmarshal(rec.Body.Bytes(), &eb)
				refused := (rec.Code == 401 && eb.Error.Code == "invalid_token") ||
					(rec.Code == 403 && slices.Contains([]string{"forbidden", "tenant_mismatch", "tenant_suspended"}, eb.Error.Code))
				want := "allowed"
				switch {
				case r.Auth.IsPublic():
				case who.p == nil:
					want = "401"
				case r.Auth.Permission() != "":
					g, err := w.app.rbac.Service().Permissions(ctx, who.tenant, who.p.id)
					if err != nil {
						t.Fatal(err)
					}
					if g.Scope(r.Auth.Permission()) == "" {
						want = "403"
					}
				}
				switch {
				case want == "allowed" && refused:
					t.Errorf("%s %s: refused with %d %s", r.Method, r.Path, rec.Code, eb.Error.Code)
				case want == "401" && (rec.Code != 401 || eb.Error.Code != "invalid_token"):
					t.Errorf("%s %s: %d %s, want 401 invalid_token", r.Method, r.Path, rec.Code, eb.Error.Code)
				case want == "403" && (rec.Code != 403 || eb.Error.Code != "forbidden" || !strings.Contains(rec.Body.String(), r.Auth.Permission())):
					t.Errorf("%s %s: %d %s, want 403 forbidden naming %s", r.Method, r.Path, rec.Code, rec.Body, r.Auth.Permission())
				}
				if want != "allowed" {
					denied++
				}
			}
			// The walk is not vacuous: who may do least is refused most.
			minDenied := map[string]int{"anonymous": 20, "member": 10, "manager": 5, "admin": 3, "other tenant's admin": 3, "super admin": 0}
			if denied < minDenied[who.name] || (who.name == "super admin" && denied != 0) {
				t.Errorf("%s was refused %d routes", who.name, denied)
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
