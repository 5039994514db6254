package rbac

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
	"gatehouse/platform/kv"
)

// TestEffectivePermissions checks, on each backend, what every system role
// holds in a tenant, that super admins hold everything everywhere, that a
// member's grants go with an inactive membership or tenant, and the
// service's helpers: RoleNames, AssignRole, IsLastAdmin.
func TestEffectivePermissions(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		ten := e.tenant(t)
		admin := e.member(t, ten, "admin")
		manager := e.member(t, ten, "manager")
		member := e.member(t, ten, "member")
		both := e.member(t, ten, "member", "manager")
		super := e.member(t, e.tenant(t), "member") // a member elsewhere
		if err := e.svc.SetSuperAdmin(ctx, super, true); err != nil {
			t.Fatal(err)
		}
		stranger := e.member(t, e.tenant(t), "admin")

		for _, tc := range []struct {
			name, user string
			want       []string
		}{
			{"admin", admin, mustRole(t, e, "admin")},
			{"manager", manager, mustRole(t, e, "manager")},
			{"member", member, mustRole(t, e, "member")},
			{"member+manager", both, sorted(append(mustRole(t, e, "manager"), "orders:read:own", "orders:write:own")...)},
			{"super admin", super, []string{"*"}},
			{"admin of another tenant", stranger, nil},
		} {
			g, err := e.svc.Permissions(ctx, ten, tc.user)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(g.list, tc.want) {
				t.Errorf("%s: %v, want %v", tc.name, g.list, tc.want)
			}
		}

		c := func(u string) caller { return caller{u, ten} }
		for _, tc := range []struct {
			who        string
			as         caller
			perm, want string
			status     int
		}{
			{"admin reads orders", c(admin), "orders:read", httpx.ScopeAll, 200},
			{"admin is no platform admin", c(admin), "tenants:manage", "", 403},
			{"manager reads all orders", c(manager), "orders:read", httpx.ScopeAll, 200},
			{"manager cannot manage users", c(manager), "users:manage", "", 403},
			{"member reads own orders", c(member), "orders:read", httpx.ScopeOwn, 200},
			{"member cannot delete", c(member), "orders:delete", "", 403},
			{"member+manager reads all", c(both), "orders:read", httpx.ScopeAll, 200},
			{"super admin anywhere", c(super), "orders:delete", httpx.ScopeAll, 200},
			{"super admin platform", c(super), "tenants:manage", httpx.ScopeAll, 200},
			{"admin of another tenant", c(stranger), "orders:read", "", 403},
			{"unknown user", c(newID()), "orders:read", "", 403},
			{"malformed ids", caller{"x", "y"}, "orders:read", "", 403},
		} {
			scope, status := scopeOf(t, e.srv, tc.as, tc.perm)
			if scope != tc.want || status != tc.status {
				t.Errorf("%s: %d %q, want %d %q", tc.who, status, scope, tc.status, tc.want)
			}
		}
		code, body := do(t, e.srv, c(member), http.MethodGet, probePath("orders:delete"), nil)
		if code != 403 || errCode(body) != "forbidden" || errDetail(body, "permission") != "orders:delete" {
			t.Errorf("403 body: %d %v", code, body)
		}

		// An inactive membership, then an inactive tenant, hold nothing.
		e.exec(t, "UPDATE memberships SET status = 'suspended' WHERE user_id = ? AND tenant_id = ?", manager, ten)
		mustInvalidate(t, e)
		if _, status := scopeOf(t, e.srv, c(manager), "orders:read"); status != 403 {
			t.Errorf("suspended member: %d", status)
		}
		if names, err := e.svc.CurrentRoles(ctx, ten, manager); err != nil || len(names) != 0 {
			t.Errorf("CurrentRoles of a suspended member: %v %v", names, err)
		}
		e.exec(t, "UPDATE tenants SET status = 'suspended' WHERE id = ?", ten)
		mustInvalidate(t, e)
		if _, status := scopeOf(t, e.srv, c(admin), "orders:read"); status != 403 {
			t.Errorf("suspended tenant: %d", status)
		}
		if _, status := scopeOf(t, e.srv, c(super), "orders:read"); status != 200 {
			t.Errorf("super admin in a suspended tenant: %d", status)
		}
		e.exec(t, "UPDATE tenants SET status = 'active' WHERE id = ?", ten)
		mustInvalidate(t, e)

		// RoleNames: sorted, with super_admin from the super_admins table.
		if names, _ := e.svc.RoleNames(ctx, ten, both); !slices.Equal(names, []string{"manager", "member"}) {
			t.Errorf("RoleNames: %v", names)
		}
		e.join(t, ten, super)
		if names, _ := e.svc.RoleNames(ctx, ten, super); !slices.Equal(names, []string{"super_admin"}) {
			t.Errorf("RoleNames of a super admin: %v", names)
		}
		if ok, _ := e.svc.IsSuperAdmin(ctx, super); !ok {
			t.Error("IsSuperAdmin is false")
		}
		// CurrentRoles: RoleNames for an active member or a super admin,
		// from the cache, and current after every change.
		for range 2 {
			if names, err := e.svc.CurrentRoles(ctx, ten, both); err != nil || !slices.Equal(names, []string{"manager", "member"}) {
				t.Errorf("CurrentRoles: %v %v", names, err)
			}
			if names, err := e.svc.CurrentRoles(ctx, ten, super); err != nil || !slices.Equal(names, []string{"super_admin"}) {
				t.Errorf("CurrentRoles of a super admin: %v %v", names, err)
			}
		}
		if err := e.svc.SetSuperAdmin(ctx, super, false); err != nil {
			t.Fatal(err)
		}
		if names, err := e.svc.CurrentRoles(ctx, ten, super); err != nil || len(names) != 0 {
			t.Errorf("CurrentRoles of a former super admin: %v %v", names, err)
		}
		if _, status := scopeOf(t, e.srv, c(super), "orders:read"); status != 403 {
			t.Errorf("former super admin: %d", status)
		}
		if err := e.svc.SetSuperAdmin(ctx, newID(), true); !errors.Is(err, fault.ErrNotFound) {
			t.Errorf("SetSuperAdmin of no user: %v", err)
		}

		// AssignRole: unknown names and super_admin are refused; it joins
		// the caller's transaction, so a rollback undoes it.
		if err := e.svc.AssignRole(ctx, ten, member, "nope"); !errors.Is(err, ErrUnknownRole) {
			t.Errorf("unknown role: %v", err)
		}
		if err := e.svc.AssignRole(ctx, ten, member, "super_admin"); err == nil {
			t.Error("AssignRole gave super_admin")
		}
		if err := e.svc.AssignRole(ctx, ten, newID(), "member"); !errors.Is(err, ErrMemberNotFound) {
			t.Errorf("no membership: %v", err)
		}
		rollback := errors.New("roll back")
		err := e.db.InTx(ctx, func(ctx context.Context) error {
			if err := e.svc.AssignRole(ctx, ten, member, "manager"); err != nil {
				return err
			}
			return rollback
		})
		if !errors.Is(err, rollback) {
			t.Fatal(err)
		}
		if names, _ := e.svc.RoleNames(ctx, ten, member); !slices.Equal(names, []string{"member"}) {
			t.Errorf("after the rollback: %v", names)
		}

		// IsLastAdmin counts only other active admins.
		if last, _ := e.svc.IsLastAdmin(ctx, ten, admin); !last {
			t.Error("the only admin is not the last")
		}
		if last, _ := e.svc.IsLastAdmin(ctx, ten, member); last {
			t.Error("a member is the last admin")
		}
		e.join(t, ten, stranger, "admin")
		if last, _ := e.svc.IsLastAdmin(ctx, ten, admin); last {
			t.Error("last admin with another active admin")
		}
		e.exec(t, "UPDATE memberships SET status = 'suspended' WHERE user_id = ? AND tenant_id = ?", stranger, ten)
		if last, _ := e.svc.IsLastAdmin(ctx, ten, admin); !last {
			t.Error("a suspended admin counted")
		}
	})
}

// TestRoleCRUD drives custom roles through the API: create, list, read,
// describe, grant, revoke, assign, delete, with the events they record.
func TestRoleCRUD(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ten := e.tenant(t)
		admin := caller{e.member(t, ten, "admin"), ten}
		u := e.member(t, ten, "member")
		user := caller{u, ten}

		code, body := do(t, e.srv, admin, http.MethodPost, "/v1/roles",
			map[string]any{"name": "support", "description": "Helps", "permissions": []string{"users:read", "orders:read", "users:read"}})
		if code != 201 || body["name"] != "support" || body["system"] != false || body["tenant_id"] != ten ||
			!slices.Equal(strs(body["permissions"]), []string{"orders:read", "users:read"}) {
			t.Fatalf("create: %d %v", code, body)
		}
		id := body["id"].(string)
		ev, ok := e.events.find("rbac.role_create", "success")
		if !ok || ev.TenantID != ten || ev.Actor.ID != admin.user || ev.ResourceID != id || ev.Metadata["before"] != nil ||
			ev.Metadata["after"].(map[string]any)["name"] != "support" {
			t.Errorf("create event: %+v", ev)
		}

		for _, tc := range []struct {
			name string
			body any
			code int
			err  string
		}{
			{"taken", map[string]any{"name": "support", "permissions": []string{}}, 409, "role_exists"},
			{"system name", map[string]any{"name": "admin", "permissions": []string{}}, 409, "role_exists"},
			{"bad name", map[string]any{"name": "Support Team"}, 400, "validation_failed"},
			{"empty name", map[string]any{"name": ""}, 400, "validation_failed"},
			{"long name", map[string]any{"name": strings.Repeat("a", 65)}, 400, "validation_failed"},
			{"unknown field", map[string]any{"name": "x", "color": "red"}, 400, "invalid_json"},
			{"unknown permission", map[string]any{"name": "x", "permissions": []string{"orders:fly"}}, 400, "unknown_permission"},
			{"star", map[string]any{"name": "x", "permissions": []string{"*"}}, 400, "unknown_permission"},
		} {
			code, body := do(t, e.srv, admin, http.MethodPost, "/v1/roles", tc.body)
			if code != tc.code || errCode(body) != tc.err {
				t.Errorf("create %s: %d %v, want %d %s", tc.name, code, body, tc.code, tc.err)
			}
		}

		code, body = do(t, e.srv, admin, http.MethodGet, "/v1/roles", nil)
		var names []string
		for _, r := range body["roles"].([]any) {
			names = append(names, r.(map[string]any)["name"].(string))
		}
		if code != 200 || !slices.Equal(names, []string{"admin", "manager", "member", "super_admin", "support"}) {
			t.Errorf("list: %d %v", code, names)
		}
		code, body = do(t, e.srv, admin, http.MethodGet, "/v1/roles/"+id, nil)
		if code != 200 || body["description"] != "Helps" {
			t.Errorf("get: %d %v", code, body)
		}
		code, body = do(t, e.srv, admin, http.MethodGet, "/v1/roles/"+adminRoleID, nil)
		if code != 200 || body["system"] != true || body["tenant_id"] != nil || slices.Contains(strs(body["permissions"]), "tenants:manage") {
			t.Errorf("get system role: %d %v", code, body)
		}

		code, body = do(t, e.srv, admin, http.MethodPatch, "/v1/roles/"+id, map[string]any{"description": "Helps customers"})
		if code != 200 || body["description"] != "Helps customers" || body["name"] != "support" {
			t.Errorf("patch: %d %v", code, body)
		}
		if ev, _ := e.events.find("rbac.role_update", "success"); ev.Metadata["before"].(map[string]any)["description"] != "Helps" {
			t.Errorf("update event: %+v", ev)
		}
		if code, body := do(t, e.srv, admin, http.MethodPatch, "/v1/roles/"+id, map[string]any{"name": "x"}); code != 400 {
			t.Errorf("patch name: %d %v", code, body)
		}

		code, body = do(t, e.srv, admin, http.MethodPost, "/v1/roles/"+id+"/permissions", map[string]any{"permissions": []string{"orders:delete"}})
		if code != 200 || !slices.Equal(strs(body["permissions"]), []string{"orders:delete", "orders:read", "users:read"}) {
			t.Errorf("grant: %d %v", code, body)
		}
		if code, body := do(t, e.srv, admin, http.MethodPost, "/v1/roles/"+id+"/permissions", map[string]any{"permissions": []string{}}); code != 400 {
			t.Errorf("grant nothing: %d %v", code, body)
		}

		// Assigned, the role's grants reach the member.
		code, body = do(t, e.srv, admin, http.MethodPost, "/v1/tenants/"+ten+"/members/"+u+"/roles", map[string]any{"role_id": id})
		if code != 200 || !slices.Equal(strs(body["roles"]), []string{"member", "support"}) {
			t.Fatalf("assign: %d %v", code, body)
		}
		if ev, _ := e.events.find("rbac.role_assign", "success"); ev.ResourceID != u || ev.Metadata["role"] != "support" ||
			!slices.Equal(ev.Metadata["after"].([]string), []string{"member", "support"}) {
			t.Errorf("assign event: %+v", ev)
		}
		if s, _ := scopeOf(t, e.srv, user, "orders:delete"); s != httpx.ScopeAll {
			t.Errorf("assigned role not in effect: %q", s)
		}

		// Revoking, with the colon written either way.
		if code, body := do(t, e.srv, admin, http.MethodDelete, "/v1/roles/"+id+"/permissions/orders:delete", nil); code != 204 {
			t.Errorf("revoke: %d %v", code, body)
		}
		if code, body := do(t, e.srv, admin, http.MethodDelete, "/v1/roles/"+id+"/permissions/orders%3Aread", nil); code != 204 {
			t.Errorf("revoke %%3A: %d %v", code, body)
		}
		if code, body := do(t, e.srv, admin, http.MethodDelete, "/v1/roles/"+id+"/permissions/orders:read", nil); code != 404 {
			t.Errorf("revoke again: %d %v", code, body)
		}
		if _, status := scopeOf(t, e.srv, user, "orders:delete"); status != 403 {
			t.Errorf("revoked permission still in effect: %d", status)
		}
		if ev, _ := e.events.find("rbac.permission_revoke", "success"); !slices.Equal(ev.Metadata["after"].(map[string]any)["permissions"].([]string), []string{"users:read"}) {
			t.Errorf("revoke event: %+v", ev)
		}

		// Taking the role back, then deleting it.
		if code, body := do(t, e.srv, admin, http.MethodDelete, "/v1/tenants/"+ten+"/members/"+u+"/roles/"+id, nil); code != 204 {
			t.Errorf("unassign: %d %v", code, body)
		}
		if code, _ := do(t, e.srv, admin, http.MethodDelete, "/v1/tenants/"+ten+"/members/"+u+"/roles/"+id, nil); code != 404 {
			t.Errorf("unassign again: %d", code)
		}
		do(t, e.srv, admin, http.MethodPost, "/v1/tenants/"+ten+"/members/"+u+"/roles", map[string]any{"role_id": id})
		if code, body := do(t, e.srv, admin, http.MethodDelete, "/v1/roles/"+id, nil); code != 204 {
			t.Errorf("delete: %d %v", code, body)
		}
		if code, _ := do(t, e.srv, admin, http.MethodGet, "/v1/roles/"+id, nil); code != 404 {
			t.Errorf("deleted role: %d", code)
		}
		if names, _ := e.svc.RoleNames(context.Background(), ten, u); !slices.Equal(names, []string{"member"}) {
			t.Errorf("deleting the role did not take it from its member: %v", names)
		}
		if _, ok := e.events.find("rbac.role_delete", "success"); !ok {
			t.Error("no delete event")
		}

		// The catalogue is open to anyone signed in.
		code, body = do(t, e.srv, user, http.MethodGet, "/v1/permissions", nil)
		if code != 200 || len(body["permissions"].([]any)) != len(e.cat.Permissions()) {
			t.Errorf("permissions: %d %v", code, body)
		}
		if code, _ := do(t, e.srv, caller{}, http.MethodGet, "/v1/permissions", nil); code != 401 {
			t.Errorf("permissions anonymously: %d", code)
		}
	})
}

// TestEscalation tries every way to get more than one holds, and each is
// refused with its own code; failures are audited.
func TestEscalation(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		ten := e.tenant(t)
		adminID := e.member(t, ten, "admin")
		admin := caller{adminID, ten}
		manager := caller{e.member(t, ten, "manager"), ten}
		u := e.member(t, ten, "member")

		// A delegate may manage roles but holds little else.
		delegateRole := e.customRole(t, admin, "delegate", "roles:manage", "roles:read", "orders:read")
		delegate := caller{e.member(t, ten), ten}
		e.assign(t, admin, delegate.user, delegateRole)

		other := e.tenant(t)
		otherAdmin := caller{e.member(t, other, "admin"), other}
		otherRole := e.customRole(t, otherAdmin, "theirs", "orders:read")

		outsider := e.member(t, other, "member") // no membership here
		members := "/v1/tenants/" + ten + "/members/"
		cases := []struct {
			name         string
			as           caller
			method, path string
			body         any
			code         int
			err          string
			perm         string // the permission the error names
		}{
			{"create with an unheld permission", delegate, "POST", "/v1/roles",
				map[string]any{"name": "r1", "permissions": []string{"orders:read", "orders:delete"}}, 403, "escalation", "orders:delete"},
			{"create with an unheld wildcard", delegate, "POST", "/v1/roles",
				map[string]any{"name": "r2", "permissions": []string{"orders:*"}}, 403, "escalation", "orders:*"},
			{"create with a platform permission", admin, "POST", "/v1/roles",
				map[string]any{"name": "r3", "permissions": []string{"tenants:manage"}}, 400, "platform_permission", "tenants:manage"},
			{"create with a platform wildcard", admin, "POST", "/v1/roles",
				map[string]any{"name": "r4", "permissions": []string{"tenants:*"}}, 400, "platform_permission", "tenants:*"},
			{"create without roles:manage", manager, "POST", "/v1/roles",
				map[string]any{"name": "r5", "permissions": []string{}}, 403, "forbidden", "roles:manage"},
			{"grant an unheld permission", delegate, "POST", "/v1/roles/" + delegateRole + "/permissions",
				map[string]any{"permissions": []string{"users:manage"}}, 403, "escalation", "users:manage"},
			{"revoke a held permission (allowed; the delegate loses it)", delegate, "DELETE",
				"/v1/roles/" + delegateRole + "/permissions/roles:manage", nil, 204, "", ""},
			{"assign a custom role one holds (allowed)", admin, "POST", members + u + "/roles",
				map[string]any{"role_id": delegateRole}, 200, "", ""},
			{"assign super_admin", admin, "POST", members + u + "/roles",
				map[string]any{"role_id": superAdminRoleID}, 403, "escalation", ""},
			{"revoke super_admin", admin, "DELETE", members + u + "/roles/" + superAdminRoleID, nil, 403, "escalation", ""},
			{"another tenant's role: get", admin, "GET", "/v1/roles/" + otherRole, nil, 404, "not_found", ""},
			{"another tenant's role: patch", admin, "PATCH", "/v1/roles/" + otherRole,
				map[string]any{"description": "mine"}, 404, "not_found", ""},
			{"another tenant's role: delete", admin, "DELETE", "/v1/roles/" + otherRole, nil, 404, "not_found", ""},
			{"another tenant's role: grant", admin, "POST", "/v1/roles/" + otherRole + "/permissions",
				map[string]any{"permissions": []string{"orders:read"}}, 404, "not_found", ""},
			{"another tenant's role: revoke", admin, "DELETE", "/v1/roles/" + otherRole + "/permissions/orders:read", nil, 404, "not_found", ""},
			{"another tenant's role: assign", admin, "POST", members + u + "/roles",
				map[string]any{"role_id": otherRole}, 404, "not_found", ""},
			{"unknown role", admin, "GET", "/v1/roles/" + newID(), nil, 404, "not_found", ""},
			{"role id not a uuid", admin, "GET", "/v1/roles/admin", nil, 404, "not_found", ""},
			{"another tenant's members", admin, "POST", "/v1/tenants/" + other + "/members/" + otherAdmin.user + "/roles",
				map[string]any{"role_id": adminRoleID}, 404, "not_found", ""},
			{"not a member", admin, "POST", members + outsider + "/roles", map[string]any{"role_id": adminRoleID}, 404, "not_found", ""},
			{"member not a uuid", admin, "POST", members + "bob/roles", map[string]any{"role_id": adminRoleID}, 404, "not_found", ""},
			{"delete a system role", admin, "DELETE", "/v1/roles/" + adminRoleID, nil, 403, "system_role", ""},
			{"patch a system role", admin, "PATCH", "/v1/roles/" + adminRoleID, map[string]any{"description": "x"}, 403, "system_role", ""},
			{"grant to a system role", admin, "POST", "/v1/roles/" + adminRoleID + "/permissions",
				map[string]any{"permissions": []string{"orders:read"}}, 403, "system_role", ""},
			{"revoke from a system role", admin, "DELETE", "/v1/roles/01950000-0000-7000-8000-000000000004/permissions/profile:read",
				nil, 403, "system_role", ""},
			{"take the last admin's admin", admin, "DELETE", members + adminID + "/roles/" + adminRoleID, nil, 409, "last_admin", ""},
		}
		for _, tc := range cases {
			code, body := do(t, e.srv, tc.as, tc.method, tc.path, tc.body)
			if code != tc.code || errCode(body) != tc.err {
				t.Errorf("%s: %d %v, want %d %s", tc.name, code, body, tc.code, tc.err)
				continue
			}
			if tc.perm != "" && errDetail(body, "permission") != tc.perm {
				t.Errorf("%s: names %v, want %s", tc.name, errDetail(body, "permission"), tc.perm)
			}
		}
		if ev, ok := e.events.find("rbac.role_create", "failure", "escalation: orders:delete"); !ok || ev.Actor.ID != delegate.user {
			t.Errorf("no failure event for an escalation: %+v", ev)
		}

		// The delegate lost roles:manage above; given a role it cannot
		// see all of, it cannot hand that role on.
		e.assign(t, admin, delegate.user, mustGrant(t, e, admin, delegateRole, "roles:manage"))
		if code, body := do(t, e.srv, delegate, http.MethodPost, members+u+"/roles", map[string]any{"role_id": "01950000-0000-7000-8000-000000000003"}); code != 403 || errCode(body) != "escalation" {
			t.Errorf("delegate assigns manager: %d %v", code, body)
		}
		if code, body := do(t, e.srv, delegate, http.MethodDelete, members+adminID+"/roles/"+adminRoleID, nil); code != 403 || errCode(body) != "escalation" {
			t.Errorf("delegate revokes admin: %d %v", code, body)
		}

		// With a second admin, the first may step down; the second then
		// is the last.
		e.assign(t, admin, u, adminRoleID)
		if code, body := do(t, e.srv, admin, http.MethodDelete, members+adminID+"/roles/"+adminRoleID, nil); code != 204 {
			t.Errorf("step down: %d %v", code, body)
		}
		if code, body := do(t, e.srv, caller{u, ten}, http.MethodDelete, members+u+"/roles/"+adminRoleID, nil); code != 409 || errCode(body) != "last_admin" {
			t.Errorf("last admin again: %d %v", code, body)
		}
		if last, _ := e.svc.IsLastAdmin(ctx, ten, u); !last {
			t.Error("IsLastAdmin disagrees")
		}
	})
}

// TestRevocationNextRequest shows a change takes effect on the very next
// request, on the instance that made it and on another sharing the
// database and kv store (Postgres with two Redis clients, or SQLite with
// one memory store), in both directions.
func TestRevocationNextRequest(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ten := e.tenant(t)
		admin := caller{e.member(t, ten, "admin"), ten}
		user := caller{e.member(t, ten, "member"), ten}
		role := e.customRole(t, admin, "deleter", "orders:delete")
		e.assign(t, admin, user.user, role)

		_, second, _ := e.instance(t, e.newKV())
		for _, srv := range []http.Handler{e.srv, second} {
			if s, _ := scopeOf(t, srv, user, "orders:delete"); s != httpx.ScopeAll {
				t.Fatalf("before: %q", s)
			}
		}
		// Warm both caches again, then revoke on the first: the second's
		// very next check refuses.
		scopeOf(t, second, user, "orders:delete")
		if code, _ := do(t, e.srv, admin, http.MethodDelete, "/v1/roles/"+role+"/permissions/orders:delete", nil); code != 204 {
			t.Fatal(code)
		}
		if _, status := scopeOf(t, second, user, "orders:delete"); status != 403 {
			t.Errorf("second instance after revoke: %d", status)
		}
		if _, status := scopeOf(t, e.srv, user, "orders:delete"); status != 403 {
			t.Errorf("first instance after revoke: %d", status)
		}
		// Granting back on the second reaches the first.
		if code, _ := do(t, second, admin, http.MethodPost, "/v1/roles/"+role+"/permissions", map[string]any{"permissions": []string{"orders:delete"}}); code != 200 {
			t.Fatal(code)
		}
		if s, _ := scopeOf(t, e.srv, user, "orders:delete"); s != httpx.ScopeAll {
			t.Errorf("first instance after grant: %q", s)
		}
		// Taking the role from the member, and deleting the role.
		scopeOf(t, second, user, "orders:delete")
		if code, _ := do(t, e.srv, admin, http.MethodDelete, "/v1/tenants/"+ten+"/members/"+user.user+"/roles/"+role, nil); code != 204 {
			t.Fatal(code)
		}
		if _, status := scopeOf(t, second, user, "orders:delete"); status != 403 {
			t.Errorf("second instance after unassign: %d", status)
		}
		e.assign(t, admin, user.user, role)
		scopeOf(t, second, user, "orders:delete")
		do(t, e.srv, admin, http.MethodDelete, "/v1/roles/"+role, nil)
		if _, status := scopeOf(t, second, user, "orders:delete"); status != 403 {
			t.Errorf("second instance after delete: %d", status)
		}
		// A super admin demoted through the first instance's service.
		if err := e.svc.SetSuperAdmin(context.Background(), user.user, true); err != nil {
			t.Fatal(err)
		}
		if s, _ := scopeOf(t, second, user, "tenants:manage"); s != httpx.ScopeAll {
			t.Errorf("second instance after promotion: %q", s)
		}
		if err := e.svc.SetSuperAdmin(context.Background(), user.user, false); err != nil {
			t.Fatal(err)
		}
		if _, status := scopeOf(t, second, user, "tenants:manage"); status != 403 {
			t.Errorf("second instance after demotion: %d", status)
		}
	})
}

// TestInvalidate shows answers are cached (a change made behind the
// module's back is not seen) and that Invalidate drops them everywhere;
// and that a kv store that lost the version does not revive old answers.
func TestInvalidate(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		ten := e.tenant(t)
		user := caller{e.member(t, ten, "manager"), ten}
		_, second, _ := e.instance(t, e.newKV())
		for _, srv := range []http.Handler{e.srv, second} {
			if s, _ := scopeOf(t, srv, user, "orders:read"); s != httpx.ScopeAll {
				t.Fatalf("before: %q", s)
			}
		}
		// The tenant module suspends the membership in its own table.
		e.exec(t, "UPDATE memberships SET status = 'suspended' WHERE user_id = ?", user.user)
		for _, srv := range []http.Handler{e.srv, second} {
			if s, _ := scopeOf(t, srv, user, "orders:read"); s != httpx.ScopeAll {
				t.Fatalf("cached answer not used: %q", s)
			}
		}
		mustInvalidate(t, e)
		for _, srv := range []http.Handler{e.srv, second} {
			if _, status := scopeOf(t, srv, user, "orders:read"); status != 403 {
				t.Errorf("after Invalidate: %d", status)
			}
		}

		// The version key vanishes (Redis restarted empty) while the
		// membership comes back behind the module's back: the new
		// version is a fresh random number, so nothing cached answers.
		e.exec(t, "UPDATE memberships SET status = 'active' WHERE user_id = ?", user.user)
		if err := e.kv.Delete(ctx, versionKey); err != nil {
			t.Fatal(err)
		}
		if s, _ := scopeOf(t, second, user, "orders:read"); s != httpx.ScopeAll {
			t.Errorf("after losing the version: %q", s)
		}
	})
}

// TestSync shows New sets the system roles' grants to the catalogue's,
// idempotently, bumping the version only when something changed, and
// refuses a catalogue that does not match the database's system roles.
func TestSync(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		count := func() int64 {
			var n int64
			e.db.Conn(ctx).Raw("SELECT count(*) FROM role_permissions").Scan(&n)
			return n
		}
		version := func() string {
			v, err := e.svc.version(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return string(v)
		}
		want := int64(0)
		for _, r := range e.cat.Roles() {
			want += int64(len(r.Permissions))
		}
		if n := count(); n != want {
			t.Fatalf("%d grants, want %d", n, want)
		}
		v := version()
		e.instance(t, e.kv)
		if n := count(); n != want || version() != v {
			t.Errorf("second start: %d grants, version moved %v", n, version() != v)
		}
		// A stray grant on manager, and a missing one on member.
		e.exec(t, "INSERT INTO role_permissions (role_id, permission) VALUES ('01950000-0000-7000-8000-000000000003', 'users:manage')")
		e.exec(t, "DELETE FROM role_permissions WHERE role_id = '01950000-0000-7000-8000-000000000004' AND permission = 'profile:read'")
		e.instance(t, e.kv)
		if n := count(); n != want || version() == v {
			t.Errorf("repair: %d grants, version moved %v", n, version() != v)
		}
		r, err := e.svc.st.role(ctx, newID(), "01950000-0000-7000-8000-000000000003")
		if err != nil || !slices.Equal(r.Permissions, mustRole(t, e, "manager")) {
			t.Errorf("manager after repair: %v %v", r.Permissions, err)
		}

		short, err := LoadCatalogue([]byte("permissions:\n  - {name: a:b}\nroles:\n  - {name: admin}\n"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := New(ctx, Deps{DB: e.db, KV: e.kv, Catalogue: short, Members: e.members}); err == nil {
			t.Error("a catalogue without super_admin, manager and member was accepted")
		}
		if n := count(); n != want {
			t.Errorf("a refused sync was not rolled back: %d grants", n)
		}
		extra, err := LoadCatalogue([]byte(string(mustRead(t)) + "  - {name: auditor}\n"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := New(ctx, Deps{DB: e.db, KV: e.kv, Catalogue: extra, Members: e.members}); err == nil {
			t.Error("a catalogue role missing from the database was accepted")
		}
	})
}

// TestAuthorizeWithoutIdentity: a route behind the authorize step but with
// no identity (a miswired chain) answers 401 invalid_token, not a panic.
func TestAuthorizeWithoutIdentity(t *testing.T) {
	e := newEnv(t, backends()[0])
	mw := e.m.Authorize(httpx.Route{Auth: httpx.Permission("orders:read")})
	err := mw(func(echo.Context) error { return nil })(testContext())
	if fe, ok := fault.As(err); !ok || fe.Kind != fault.Unauthenticated || fe.Code != "invalid_token" {
		t.Errorf("err = %v", err)
	}
	if e.m.Authorize(httpx.Route{Auth: httpx.Authenticated}) != nil {
		t.Error("a route with no permission got middleware")
	}
}

// TestMemoBoundService: with a map bound of two, three users take turns and
// each still gets its own answer.
func TestMemoBoundService(t *testing.T) {
	e := newEnv(t, backends()[0])
	e.svc.memo = newMemo(2, memoMaxAge)
	ten := e.tenant(t)
	users := []string{e.member(t, ten, "admin"), e.member(t, ten, "member"), e.member(t, ten, "manager")}
	want := []string{httpx.ScopeAll, httpx.ScopeOwn, httpx.ScopeAll}
	for range 3 {
		for i, u := range users {
			if s, _ := scopeOf(t, e.srv, caller{u, ten}, "orders:read"); s != want[i] {
				t.Fatalf("user %d: %q, want %q", i, s, want[i])
			}
			if n := e.svc.memo.len(); n > 2 {
				t.Fatalf("map holds %d", n)
			}
		}
	}
}

// TestLastAdminRace: two admins take admin from each other at the same time.
// Exactly one succeeds and the tenant keeps one admin. The other gets
// last_admin, or escalation when it already lost admin (and with it the
// permissions of the role it was to revoke) before its check ran.
func TestLastAdminRace(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		for range 3 {
			ten := e.tenant(t)
			a, b := e.member(t, ten, "admin"), e.member(t, ten, "admin")
			errs := make(chan error, 2)
			for _, pair := range [][2]string{{a, b}, {b, a}} {
				go func() {
					id := &httpx.Identity{UserID: pair[0], TenantID: ten}
					_, err := e.svc.RevokeMemberRole(context.Background(), id, ten, pair[1], adminRoleID)
					errs <- err
				}()
			}
			var ok, refused int
			for range 2 {
				switch err := <-errs; {
				case err == nil:
					ok++
				case errors.Is(err, ErrLastAdmin), errors.Is(err, ErrEscalation):
					refused++
				default:
					t.Fatal(err)
				}
			}
			admins, err := e.svc.st.activeAdmins(context.Background(), ten)
			if ok != 1 || refused != 1 || len(admins) != 1 {
				t.Fatalf("%d succeeded, %d refused, admins left %v (%v)", ok, refused, admins, err)
			}
		}
	})
}

// TestRoutesDocument: the module's routes make a valid OpenAPI document,
// each permission recorded on its operation.
func TestRoutesDocument(t *testing.T) {
	e := newEnv(t, backends()[0])
	doc, err := httpx.Document(httpx.Info{Title: "t", Version: "1", ServerURL: "http://localhost:8080"}, e.m.Routes())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := loaded.Validate(context.Background()); err != nil {
		t.Fatalf("invalid OpenAPI document: %v", err)
	}
	op := loaded.Paths.Find("/v1/tenants/{id}/members/{user}/roles/{role}").Delete
	if op == nil || op.Extensions["x-required-permission"] != "roles:manage" {
		t.Errorf("revoke operation: %+v", op)
	}
}

// bumpFails is a kv store whose Incr fails while fail is set: the
// permissions version cannot be bumped.
type bumpFails struct {
	kv.Store
	fail atomic.Bool
}

func (s *bumpFails) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if s.fail.Load() {
		return 0, errors.New("injected: connection reset by peer")
	}
	return s.Store.Incr(ctx, key, delta, ttl)
}

// TestRevokeRetriedAfterABumpFailure shows a permission revoke whose
// version bump failed (503) taking effect on its retry, which finds the
// permission already gone (404), rather than when the caches age out.
func TestRevokeRetriedAfterABumpFailure(t *testing.T) {
	e := newEnv(t, backends()[0])
	store := &bumpFails{Store: e.kv}
	_, srv, _ := e.instance(t, store)
	tenant := e.tenant(t)
	admin := caller{e.member(t, tenant, "admin"), tenant}
	user := caller{e.member(t, tenant, "member"), tenant}
	role := e.customRole(t, admin, "readers", "orders:delete")
	e.assign(t, admin, user.user, role)
	if s, code := scopeOf(t, srv, user, "orders:delete"); s == "" {
		t.Fatalf("the role's permission does not take: %d", code)
	}
	revoke := func() int {
		code, _ := do(t, srv, admin, http.MethodDelete, "/v1/roles/"+role+"/permissions/orders:delete", nil)
		return code
	}
	store.fail.Store(true)
	if code := revoke(); code != http.StatusServiceUnavailable {
		t.Fatalf("revoke without a bump: %d, want 503", code)
	}
	store.fail.Store(false)
	if code := revoke(); code != http.StatusNotFound {
		t.Fatalf("retried revoke: %d, want 404", code)
	}
	if s, code := scopeOf(t, srv, user, "orders:delete"); code != http.StatusForbidden {
		t.Fatalf("after the retried revoke: scope %q, %d, want 403", s, code)
	}
}
