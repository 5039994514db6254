package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/modules/auth"
	"gatehouse/modules/rbac"
	"gatehouse/modules/tenant"
	"gatehouse/platform/db"
	"gatehouse/platform/httpx"
	"gatehouse/platform/kv"
)

// world is two tenants with people in every role, signed in.
type world struct {
	app               testApp
	acme, globex      string // tenant ids
	member, manager   person // in acme
	admin, otherAdmin person // admin of acme; admin of globex
	super             person // a super admin, member of acme
	spareUserID       string // a member of globex, with no token here
}

type person struct {
	id    string
	token string
	pair  auth.Pair
}

func newWorld(t *testing.T, b backend) world {
	t.Helper()
	return newWorldOn(t, newTestApp(t, b, nil))
}

// newWorldOn builds the world in a running App.
func newWorldOn(t *testing.T, app testApp) world {
	t.Helper()
	w := world{app: app, acme: insertTenant(t, app, "acme"), globex: insertTenant(t, app, "globex")}
	ctx := context.Background()
	join := func(email, slug, role string, super bool) person {
		reg := app.register(t, email, "correct horse battery", slug)
		if role != "member" {
			if err := app.rbac.Service().AssignRole(ctx, reg.Tenant.ID, reg.User.ID, role); err != nil {
				t.Fatal(err)
			}
		}
		if super {
			if err := app.rbac.Service().SetSuperAdmin(ctx, reg.User.ID, true); err != nil {
				t.Fatal(err)
			}
		}
		p := app.login(t, email, "correct horse battery", slug)
		return person{id: reg.User.ID, token: p.AccessToken, pair: p}
	}
	w.member = join("member@acme.test", "acme", "member", false)
	w.manager = join("manager@acme.test", "acme", "manager", false)
	w.admin = join("admin@acme.test", "acme", "admin", false)
	w.otherAdmin = join("admin@globex.test", "globex", "admin", false)
	w.super = join("root@platform.test", "acme", "member", true)
	w.spareUserID = app.register(t, "spare@globex.test", "correct horse battery", "globex").User.ID
	return w
}

func (w world) as(t *testing.T, p person, method, path string, body any) *httpRecorder {
	t.Helper()
	return w.app.do(t, req{method: method, path: path, bearer: p.token, body: body})
}

// Acceptance 5: suspending a tenant stops its members' access and refresh
// tokens at once; resuming brings them back; other tenants are untouched.
func TestSuspendedTenant(t *testing.T) {
	t.Parallel()
	w := newWorld(t, backends[0])
	status := func(s string) tenant.UpdateTenantRequest { return tenant.UpdateTenantRequest{Status: &s} }
	wantStatus(t, w.as(t, w.admin, "PATCH", "/v1/tenants/"+w.acme, status("suspended")), 403, "forbidden")
	wantStatus(t, w.as(t, w.super, "PATCH", "/v1/tenants/"+w.acme, status("suspended")), 200, "")

	for _, p := range []person{w.member, w.manager, w.admin} {
		wantStatus(t, w.app.me(t, p.token), 403, "tenant_suspended")
		wantStatus(t, w.as(t, p, "GET", "/v1/tenants/"+w.acme+"/members", nil), 403, "tenant_suspended")
		wantStatus(t, w.app.refresh(p.pair.RefreshToken, t), 401, "invalid_refresh_token")
	}
	wantStatus(t, w.app.do(t, req{method: "POST", path: "/v1/auth/login",
		body: auth.LoginRequest{Email: "admin@acme.test", Password: "correct horse battery", Tenant: "acme"}}), 401, "invalid_credentials")
	wantStatus(t, w.app.me(t, w.otherAdmin.token), 200, "")
	// The super admin can still act, to resume it.
	wantStatus(t, w.as(t, w.super, "PATCH", "/v1/tenants/"+w.acme, status("active")), 200, "")
	wantStatus(t, w.app.me(t, w.admin.token), 200, "")
}

// The token's tenant is the truth: naming another tenant is a mismatch,
// except for a super admin, whose acting in another tenant is audited.
func TestTenantResolution(t *testing.T) {
	t.Parallel()
	w := newWorld(t, backends[0])
	named := func(p person, tid, path string) *httpRecorder {
		return w.app.do(t, req{method: "GET", path: path, bearer: p.token, header: map[string]string{"X-Tenant-ID": tid}})
	}
	wantStatus(t, named(w.admin, w.acme, "/v1/auth/me"), 200, "")
	wantStatus(t, named(w.admin, w.globex, "/v1/auth/me"), 403, "tenant_mismatch")
	wantStatus(t, named(w.admin, "not-a-uuid", "/v1/auth/me"), 403, "tenant_mismatch")
	wantStatus(t, named(w.admin, strings.ToUpper(w.acme), "/v1/auth/me"), 200, "")
	rec := named(w.super, w.globex, "/v1/tenants/"+w.globex+"/members")
	wantStatus(t, rec, 200, "")
	if !strings.Contains(rec.Body.String(), "admin@globex.test") {
		t.Errorf("super admin acting in globex sees: %s", rec.Body)
	}
	wantStatus(t, named(w.super, "01950000-0000-7000-8000-00000000ffff", "/v1/auth/me"), 404, "not_found")
	actions := strings.Join(auditActions(t, w.app), " ")
	if !strings.Contains(actions, "tenant.act_as") || !strings.Contains(actions, "tenant.mismatch") {
		t.Errorf("acting as another tenant, or the mismatch, was not audited: %s", actions)
	}
}

// Acceptance 4: another tenant's resources by id are 404, never 403.
func TestCrossTenantIsNotFound(t *testing.T) {
	t.Parallel()
	w := newWorld(t, backends[0])
	ctx := context.Background()
	// A custom role in globex, to be reached from acme.
	rec := w.as(t, w.otherAdmin, "POST", "/v1/roles", map[string]any{"name": "auditor", "description": "reads", "permissions": []string{"users:read"}})
	wantStatus(t, rec, http.StatusCreated, "")
	globexRole := decode[struct {
		ID string `json:"id"`
	}](t, rec).ID
	otherSessions := decode[auth.SessionsResponse](t, w.as(t, w.otherAdmin, "GET", "/v1/auth/sessions", nil)).Sessions
	_ = ctx
	for _, c := range []struct {
		name, method, path string
		body               any
	}{
		{"tenant", "GET", "/v1/tenants/" + w.globex, nil},
		{"tenant settings", "PATCH", "/v1/tenants/" + w.globex + "/settings", map[string]any{"default_role": "member"}},
		{"members", "GET", "/v1/tenants/" + w.globex + "/members", nil},
		{"member add", "POST", "/v1/tenants/" + w.globex + "/members", map[string]any{"email": "member@acme.test"}},
		{"member", "PATCH", "/v1/tenants/" + w.globex + "/members/" + w.otherAdmin.id, map[string]any{"status": "suspended"}},
		{"member remove", "DELETE", "/v1/tenants/" + w.globex + "/members/" + w.spareUserID, nil},
		{"member roles", "POST", "/v1/tenants/" + w.globex + "/members/" + w.spareUserID + "/roles", map[string]any{"role_id": globexRole}},
		{"role", "GET", "/v1/roles/" + globexRole, nil},
		{"role update", "PATCH", "/v1/roles/" + globexRole, map[string]any{"description": "mine now"}},
		{"role delete", "DELETE", "/v1/roles/" + globexRole, nil},
		{"role grant", "POST", "/v1/roles/" + globexRole + "/permissions", map[string]any{"permissions": []string{"users:read"}}},
		{"session", "DELETE", "/v1/auth/sessions/" + otherSessions[0].ID, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantStatus(t, w.as(t, w.admin, c.method, c.path, c.body), 404, "")
		})
	}
	// Nothing changed in globex.
	wantStatus(t, w.as(t, w.otherAdmin, "GET", "/v1/roles/"+globexRole, nil), 200, "")
	wantStatus(t, w.app.me(t, w.otherAdmin.token), 200, "")
	if n := len(decode[tenant.MemberList](t, w.as(t, w.otherAdmin, "GET", "/v1/tenants/"+w.globex+"/members", nil)).Members); n != 2 {
		t.Errorf("globex has %d members", n)
	}
}

// Members: added by email with the default role, listed, suspended (their
// sessions there end), removed; the last admin is protected.
func TestMembers(t *testing.T) {
	t.Parallel()
	w := newWorld(t, backends[0])
	base := "/v1/tenants/" + w.acme + "/members"
	wantStatus(t, w.as(t, w.admin, "POST", base, map[string]any{"email": "nobody@acme.test"}), 404, "user_not_found")
	wantStatus(t, w.as(t, w.admin, "POST", base, map[string]any{"email": "member@acme.test"}), 409, "already_member")
	wantStatus(t, w.as(t, w.member, "POST", base, map[string]any{"email": "spare@globex.test"}), 403, "forbidden")
	rec := w.as(t, w.admin, "POST", base, map[string]any{"email": "Spare@Globex.test"})
	wantStatus(t, rec, http.StatusCreated, "")
	if m := decode[tenant.MemberResponse](t, rec); m.UserID != w.spareUserID || strings.Join(m.Roles, ",") != "member" || m.Status != "active" {
		t.Errorf("added member: %+v", m)
	}
	spare := w.app.login(t, "spare@globex.test", "correct horse battery", "acme")
	wantStatus(t, w.app.me(t, spare.AccessToken), 200, "")

	list := decode[tenant.MemberList](t, w.as(t, w.manager, "GET", base+"?limit=2", nil))
	if len(list.Members) != 2 || list.NextCursor == "" {
		t.Fatalf("first page: %+v", list)
	}
	rest := decode[tenant.MemberList](t, w.as(t, w.manager, "GET", base+"?limit=100&cursor="+list.NextCursor, nil))
	// member, manager, admin, super and spare.
	if len(list.Members)+len(rest.Members) != 5 {
		t.Errorf("pages hold %d+%d members, want 5", len(list.Members), len(rest.Members))
	}
	wantStatus(t, w.as(t, w.manager, "GET", base+"?limit=1000", nil), 400, "validation_failed")

	// Suspension ends the member's sessions in acme at once.
	wantStatus(t, w.as(t, w.admin, "PATCH", base+"/"+w.spareUserID, map[string]any{"status": "suspended"}), 200, "")
	wantRejected(t, w.app.me(t, spare.AccessToken))
	wantStatus(t, w.app.refresh(spare.RefreshToken, t), 401, "invalid_refresh_token")
	wantStatus(t, w.app.do(t, req{method: "POST", path: "/v1/auth/login",
		body: auth.LoginRequest{Email: "spare@globex.test", Password: "correct horse battery", Tenant: "acme"}}), 401, "invalid_credentials")
	w.app.login(t, "spare@globex.test", "correct horse battery", "globex") // still fine at home
	wantStatus(t, w.as(t, w.admin, "DELETE", base+"/"+w.spareUserID, nil), 204, "")
	wantStatus(t, w.as(t, w.admin, "DELETE", base+"/"+w.spareUserID, nil), 404, "not_found")

	// The last admin can be neither suspended nor removed.
	wantStatus(t, w.as(t, w.admin, "PATCH", base+"/"+w.admin.id, map[string]any{"status": "suspended"}), 409, "last_admin")
	wantStatus(t, w.as(t, w.admin, "DELETE", base+"/"+w.admin.id, nil), 409, "last_admin")
	wantStatus(t, w.app.me(t, w.admin.token), 200, "")
}

// Acceptance 3: two instances share PostgreSQL and Redis; a role revoked
// on one is refused by the other on the very next request.
func TestRevocationAcrossInstances(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[1])
	a := startApp(t, cfg)
	w := world{app: a, acme: insertTenant(t, a, "acme")}
	ctx := context.Background()
	admin := a.register(t, "admin@acme.test", "correct horse battery", "acme")
	if err := a.rbac.Service().AssignRole(ctx, w.acme, admin.User.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	mgr := a.register(t, "manager@acme.test", "correct horse battery", "acme")
	if err := a.rbac.Service().AssignRole(ctx, w.acme, mgr.User.ID, "manager"); err != nil {
		t.Fatal(err)
	}
	b := startApp(t, cfg)
	adminTok := a.login(t, "admin@acme.test", "correct horse battery", "acme").AccessToken
	mgrTok := b.login(t, "manager@acme.test", "correct horse battery", "acme").AccessToken
	members := "/v1/tenants/" + w.acme + "/members"
	wantStatus(t, b.do(t, req{method: "GET", path: members, bearer: mgrTok}), 200, "") // b caches the grants
	rec := a.do(t, req{method: "DELETE", path: members + "/" + mgr.User.ID + "/roles/01950000-0000-7000-8000-000000000003", bearer: adminTok})
	wantStatus(t, rec, 204, "")
	rec = b.do(t, req{method: "GET", path: members, bearer: mgrTok})
	wantStatus(t, rec, 403, "forbidden")
	if !strings.Contains(rec.Body.String(), "users:read") {
		t.Errorf("the 403 does not name the permission: %s", rec.Body)
	}
}

// The tenant step hands handlers the tenant through the context, from the
// token (or the tenant a super admin acts in), for db.Scoped; and a
// subdomain of the base domain names a tenant like X-Tenant-ID does.
func TestTenantInContextAndSubdomain(t *testing.T) {
	t.Parallel()
	probe := httpx.Route{Method: "GET", Path: "/test/tenant", Auth: httpx.Authenticated, Hidden: true,
		Handle: func(c echo.Context) error {
			id, _ := db.TenantOf(c.Request().Context())
			return c.String(200, id)
		}}
	cfg := testConfig(t, backends[0])
	cfg.Tenancy.BaseDomain = "example.com"
	app := startApp(t, cfg, probe)
	w := world{app: app, acme: insertTenant(t, app, "acme"), globex: insertTenant(t, app, "globex")}
	reg := app.register(t, "sub@acme.test", "correct horse battery", "acme")
	tok := app.login(t, "sub@acme.test", "correct horse battery", "acme").AccessToken
	if err := app.rbac.Service().SetSuperAdmin(context.Background(), reg.User.ID, true); err != nil {
		t.Fatal(err)
	}
	get := func(host, named string) *httpRecorder {
		r := req{method: "GET", path: "/test/tenant", bearer: tok, header: map[string]string{}}
		if host != "" {
			r.header["Host"] = host
		}
		if named != "" {
			r.header["X-Tenant-ID"] = named
		}
		return app.do(t, r)
	}
	if rec := get("", ""); rec.Code != 200 || rec.Body.String() != w.acme {
		t.Errorf("token's tenant: %d %q, want %s", rec.Code, rec.Body, w.acme)
	}
	if rec := get("acme.example.com", ""); rec.Code != 200 || rec.Body.String() != w.acme {
		t.Errorf("own subdomain: %d %q", rec.Code, rec.Body)
	}
	if rec := get("", w.globex); rec.Code != 200 || rec.Body.String() != w.globex {
		t.Errorf("super admin acting in globex: %d %q", rec.Code, rec.Body)
	}
	if err := app.rbac.Service().SetSuperAdmin(context.Background(), reg.User.ID, false); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, get("globex.example.com:8080", ""), 403, "tenant_mismatch")
	wantStatus(t, get("nosuch.example.com", ""), 403, "tenant_mismatch")
	if rec := get("example.com", ""); rec.Code != 200 || rec.Body.String() != w.acme {
		t.Errorf("bare base domain names no tenant: %d %q", rec.Code, rec.Body)
	}
}

// gatehouse admin super-admin add|remove EMAIL, against the database file
// of an App.
func TestSuperAdminCommand(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[0])
	app := startApp(t, cfg)
	reg := app.register(t, "ops@example.com", "correct horse battery", "")
	env := map[string]string{"GATEHOUSE_DATABASE_SQLITE_PATH": cfg.Database.SQLitePath, "GATEHOUSE_AUTH_BCRYPT_COST": "10"}
	code, out, errOut := runCmd(t, env, "admin", "super-admin", "add", "OPS@example.com")
	if code != 0 || out != "ops@example.com is now a super admin\n" {
		t.Fatalf("add: %d %q %q", code, out, errOut)
	}
	fresh := startApp(t, cfg) // a new instance reads the database
	if ok, err := fresh.rbac.Service().IsSuperAdmin(context.Background(), reg.User.ID); err != nil || !ok {
		t.Fatalf("after add: %v %v", ok, err)
	}
	tok := fresh.login(t, "ops@example.com", "correct horse battery", "").AccessToken
	wantStatus(t, fresh.do(t, req{method: "GET", path: "/v1/tenants", bearer: tok}), 200, "")
	if code, out, _ := runCmd(t, env, "admin", "super-admin", "remove", "ops@example.com"); code != 0 || !strings.Contains(out, "is no longer") {
		t.Fatalf("remove: %d %q", code, out)
	}
	if code, _, errOut := runCmd(t, env, "admin", "super-admin", "add", "ghost@example.com"); code != 1 || !strings.Contains(errOut, "register it first") {
		t.Errorf("unknown account: %d %q", code, errOut)
	}
	if code, _, _ := runCmd(t, env, "admin", "super-admin", "grant", "ops@example.com"); code != 2 {
		t.Errorf("bad verb: exit %d, want 2", code)
	}
}

// GET /v1/permissions/mine tells each caller what it may do in its tenant.
func TestMyPermissions(t *testing.T) {
	t.Parallel()
	w := newWorld(t, backends[0])
	mine := func(p person) rbac.MyPermissionsResponse {
		t.Helper()
		rec := w.as(t, p, "GET", "/v1/permissions/mine", nil)
		wantStatus(t, rec, 200, "")
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		var out rbac.MyPermissionsResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if m := mine(w.member); slices.Contains(m.Permissions, "users:read") || m.SuperAdmin || len(m.Permissions) == 0 {
		t.Errorf("member: %+v", m)
	}
	if m := mine(w.manager); !slices.Contains(m.Permissions, "users:read") || m.SuperAdmin {
		t.Errorf("manager: %+v", m)
	}
	if m := mine(w.super); !m.SuperAdmin {
		t.Errorf("super admin: %+v", m)
	}
	wantRejected(t, w.app.do(t, req{method: "GET", path: "/v1/permissions/mine"}))
}

// The key-value store only caches a tenant's status: when it loses the key
// (Redis restarted without persistence), the suspension is read again from
// the database, never forgotten. On Redis a fresh instance, with no
// in-process copy, shows it too.
func TestSuspensionSurvivesALostKey(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t, b)
			app := startApp(t, cfg)
			w := newWorldOn(t, app)
			status := func(s string) tenant.UpdateTenantRequest { return tenant.UpdateTenantRequest{Status: &s} }
			wantStatus(t, w.as(t, w.super, "PATCH", "/v1/tenants/"+w.acme, status("suspended")), 200, "")
			wantStatus(t, app.me(t, w.member.token), 403, "tenant_suspended")
			if err := app.kv.Delete(context.Background(), "tenant:status:"+w.acme); err != nil {
				t.Fatal(err)
			}
			check := app
			if b.redisURL != nil {
				check = startApp(t, cfg)
			}
			wantStatus(t, check.me(t, w.member.token), 403, "tenant_suspended")
			wantStatus(t, check.me(t, w.member.token), 403, "tenant_suspended")
			wantStatus(t, w.as(t, w.super, "PATCH", "/v1/tenants/"+w.acme, status("active")), 200, "")
			wantStatus(t, check.me(t, w.member.token), 200, "")
		})
	}
}

// A store that loses its latest writes and keeps the rest (a Redis replica
// promoted before it had them) can hold "active" again for a tenant
// suspended since. Every instance re-asserts the suspensions every few
// seconds, so even an instance that never saw the suspension refuses its
// members again within that; and a resumption afterwards is not undone.
func TestSuspensionLostWithTheLatestWritesComesBack(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[1])
	a := startApp(t, cfg)
	w := newWorldOn(t, a)
	status := func(s string) tenant.UpdateTenantRequest { return tenant.UpdateTenantRequest{Status: &s} }
	wantStatus(t, w.as(t, w.super, "PATCH", "/v1/tenants/"+w.acme, status("suspended")), 200, "")
	// The loss: Redis holds the status from before the suspension.
	if err := a.kv.(*kv.Redis).Client().Set(context.Background(), cfg.Redis.Prefix+"tenant:status:"+w.acme, "active", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	b := startApp(t, cfg) // no copies of its own: it reads Redis
	deadline := time.Now().Add(3 * reassertEvery)
	for b.me(t, w.member.token).Code != 403 {
		if time.Now().After(deadline) {
			t.Fatalf("the suspended tenant's member still passes %s after the suspension was lost", 3*reassertEvery)
		}
		time.Sleep(100 * time.Millisecond)
	}
	wantStatus(t, b.me(t, w.member.token), 403, "tenant_suspended")
	wantStatus(t, w.as(t, w.super, "PATCH", "/v1/tenants/"+w.acme, status("active")), 200, "")
	time.Sleep(reassertEvery + time.Second) // a pass after the resumption
	wantStatus(t, b.me(t, w.member.token), 200, "")
}

// The default role is given to everyone who joins the tenant, so setting it
// is giving it: the caller must hold each of its permissions, as to assign
// it (else a member holding only settings:manage could make admin the
// default, register a second account and be admin). It must name a role
// of the tenant, and the sign-in methods may not repeat.
func TestTenantSettingsGiveOnlyWhatTheCallerHolds(t *testing.T) {
	t.Parallel()
	w := newWorld(t, backends[0])
	w.giveMember(t, "settings-editor", "settings:manage")
	settings := "/v1/tenants/" + w.acme + "/settings"

	rec := w.as(t, w.member, "PATCH", settings, map[string]any{"default_role": "admin"})
	wantStatus(t, rec, http.StatusForbidden, "escalation")
	if p, _ := decode[httpx.ErrorBody](t, rec).Error.Details["permission"].(string); p == "" || p == "settings:manage" {
		t.Fatalf("the refusal names %q, want a permission of admin the member lacks: %s", p, rec.Body)
	}
	wantStatus(t, w.as(t, w.member, "PATCH", settings, map[string]any{"default_role": "super_admin"}), http.StatusForbidden, "escalation")
	wantStatus(t, w.as(t, w.member, "PATCH", settings, map[string]any{"default_role": "no-such-role"}), http.StatusBadRequest, "validation_failed")
	wantStatus(t, w.as(t, w.member, "PATCH", settings, map[string]any{"login_methods": []string{"password", "password"}}), http.StatusBadRequest, "validation_failed")
	// Nothing changed: a newcomer still joins as member.
	if roles := joinedWith(t, w.app, "newcomer@acme.test"); !slices.Equal(roles, []string{"member"}) {
		t.Fatalf("newcomer's roles %v after refused changes, want [member]", roles)
	}

	// A role whose permissions the caller holds, it may make the default.
	wantStatus(t, w.as(t, w.member, "PATCH", settings, map[string]any{"default_role": "settings-editor"}), 200, "")
	wantStatus(t, w.as(t, w.admin, "PATCH", settings, map[string]any{"default_role": "admin"}), 200, "")
	if roles := joinedWith(t, w.app, "second@acme.test"); !slices.Equal(roles, []string{"admin"}) {
		t.Fatalf("newcomer's roles %v, want [admin] once an admin made it the default", roles)
	}
	if err := w.app.Close(); err != nil { // writes the audit queue
		t.Fatal(err)
	}
	var refused []string
	if err := w.app.db.Conn(context.Background()).Raw("SELECT metadata FROM audit_events WHERE action = 'tenant.settings_update' AND outcome = 'failure' AND actor_id = ?",
		w.member.id).Scan(&refused).Error; err != nil || len(refused) != 2 ||
		!strings.Contains(refused[0]+refused[1], "escalation: ") || !strings.Contains(refused[0]+refused[1], "super_admin") {
		t.Fatalf("refused tenant.settings_update events of the member: %q (%v), want admin's and super_admin's", refused, err)
	}
}

// giveMember has acme's admin create a custom role with perms and give it
// to the world's member.
func (w world) giveMember(t *testing.T, role string, perms ...string) {
	t.Helper()
	rec := w.as(t, w.admin, "POST", "/v1/roles", map[string]any{"name": role, "description": "", "permissions": perms})
	wantStatus(t, rec, http.StatusCreated, "")
	id := decode[struct {
		ID string `json:"id"`
	}](t, rec).ID
	wantStatus(t, w.as(t, w.admin, "POST", "/v1/tenants/"+w.acme+"/members/"+w.member.id+"/roles", map[string]any{"role_id": id}), 200, "")
}

// joinedWith registers email in acme and returns the roles it got there.
func joinedWith(t *testing.T, app testApp, email string) []string {
	t.Helper()
	app.register(t, email, "correct horse battery", "acme")
	tok := app.login(t, email, "correct horse battery", "acme").AccessToken
	return decode[auth.MeResponse](t, app.me(t, tok)).Roles
}

// Two admins removing, or suspending, each other at the same moment: one
// wins and the other is refused, on both backends. The
// check and the change are one transaction; as two statements, both
// requests passed the check and the tenant was left with no admin.
func TestLastAdminRace(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			for _, method := range []string{"DELETE", "PATCH"} {
				for range 3 {
					w := newWorld(t, b)
					wantStatus(t, w.as(t, w.admin, "POST", "/v1/tenants/"+w.acme+"/members/"+w.manager.id+"/roles",
						map[string]any{"role_id": adminRole}), 200, "")
					var wg sync.WaitGroup
					codes := make([]int, 2)
					start := make(chan struct{})
					for i, pair := range [][2]person{{w.admin, w.manager}, {w.manager, w.admin}} {
						wg.Add(1)
						go func() {
							defer wg.Done()
							<-start
							var body any
							if method == "PATCH" {
								body = map[string]string{"status": "suspended"}
							}
							codes[i] = w.as(t, pair[0], method, "/v1/tenants/"+w.acme+"/members/"+pair[1].id, body).Code
						}()
					}
					close(start)
					wg.Wait()
					// The loser is refused by the guard (409), or, when it
					// came second, already as a non-admin (403) or with its
					// session ended (401).
					slices.Sort(codes)
					if codes[0] >= 300 || codes[1] < 400 {
						t.Fatalf("%s by each of two admins of the other at once: %v; want one done and one refused", method, codes)
					}
				}
			}
		})
	}
}

// adminRole is the id of the admin system role, seeded by migration 00004.
const adminRole = "01950000-0000-7000-8000-000000000002"

// Suspending, reactivating or removing a member takes away or gives back
// what the member's roles give, so, as revoking those roles, it needs the
// caller to hold all of it: a member given only users:manage can suspend a
// plain member but not an admin (403 escalation, audited).
func TestMemberChangesNeedWhatTheMemberHolds(t *testing.T) {
	t.Parallel()
	w := newWorld(t, backends[0])
	w.giveMember(t, "people", "users:manage", "users:read", "orders:read:own", "orders:write:own", "profile:read", "profile:write")
	members := "/v1/tenants/" + w.acme + "/members/"
	suspend := map[string]string{"status": "suspended"}

	wantStatus(t, w.as(t, w.member, "PATCH", members+w.admin.id, suspend), http.StatusForbidden, "escalation")
	wantStatus(t, w.as(t, w.member, "DELETE", members+w.admin.id, nil), http.StatusForbidden, "escalation")
	wantStatus(t, w.as(t, w.member, "PATCH", members+w.manager.id, suspend), http.StatusForbidden, "escalation")
	wantStatus(t, w.app.me(t, w.admin.token), 200, "") // untouched
	wantStatus(t, w.app.me(t, w.manager.token), 200, "")

	// A member whose roles it holds, it may suspend, reactivate and remove.
	plain := w.app.register(t, "plain@acme.test", "correct horse battery", "acme").User.ID
	wantStatus(t, w.as(t, w.member, "PATCH", members+plain, suspend), 200, "")
	wantStatus(t, w.as(t, w.member, "PATCH", members+plain, map[string]string{"status": "active"}), 200, "")
	wantStatus(t, w.as(t, w.member, "DELETE", members+plain, nil), http.StatusNoContent, "")

	if err := w.app.Close(); err != nil { // writes the audit queue
		t.Fatal(err)
	}
	var refused []string
	if err := w.app.db.Conn(context.Background()).Raw("SELECT action FROM audit_events WHERE outcome = 'failure' AND actor_id = ? AND action LIKE 'tenant.member_%' ORDER BY seq",
		w.member.id).Scan(&refused).Error; err != nil || !slices.Equal(refused, []string{"tenant.member_status", "tenant.member_remove", "tenant.member_status"}) {
		t.Fatalf("refusals audited: %q (%v)", refused, err)
	}
}

// Every instance on Redis reads the suspended tenants every few seconds
// (ReassertSuspensions); the read, with its status bound as the store binds
// it, goes by the tenants_status index, not through every tenant's row.
func TestSuspendedTenantsReadByIndex(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			a := newTestApp(t, b, nil)
			var plan []string
			err := a.db.InTx(context.Background(), func(ctx context.Context) error {
				conn := a.db.Conn(ctx)
				q := "EXPLAIN QUERY PLAN SELECT id FROM tenants WHERE status = ?"
				if a.db.Dialect() == "postgres" {
					// A handful of rows: without this the planner rightly scans.
					if err := conn.Exec("SET LOCAL enable_seqscan = off").Error; err != nil {
						return err
					}
					q = "EXPLAIN SELECT id FROM tenants WHERE status = ?"
				}
				rows, err := conn.Raw(q, tenant.StatusSuspended).Rows()
				if err != nil {
					return err
				}
				defer rows.Close()
				cols, _ := rows.Columns()
				for rows.Next() {
					vals := make([]any, len(cols))
					for i := range vals {
						vals[i] = new(any)
					}
					if err := rows.Scan(vals...); err != nil {
						return err
					}
					plan = append(plan, fmt.Sprint(*vals[len(vals)-1].(*any)))
				}
				return rows.Err()
			})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(plan, "\n"), "tenants_status") {
				t.Fatalf("the suspended tenants are not read by the index:\n%s", strings.Join(plan, "\n"))
			}
		})
	}
}

// The member's id in the path is a UUID in any letter case PostgreSQL
// reads (upper case here): the escalation check and the last-admin guard
// must still see the admin behind it. A member holding only users:manage
// (and the member role's grants) must not suspend or remove the tenant's
// only admin by upper-casing its id; nor may a super admin suspend a
// tenant under an id whose status key no instance reads.
func TestMemberChangesNeedWhatTheMemberHoldsWhateverTheIDsCase(t *testing.T) {
	t.Parallel()
	w := newWorld(t, backends[1])
	w.giveMember(t, "people", "users:manage", "users:read", "orders:read:own", "orders:write:own", "profile:read", "profile:write")
	members := "/v1/tenants/" + w.acme + "/members/"
	upper := strings.ToUpper(w.admin.id)

	wantStatus(t, w.as(t, w.member, "PATCH", members+upper, map[string]string{"status": "suspended"}), http.StatusForbidden, "escalation")
	wantStatus(t, w.as(t, w.member, "DELETE", members+upper, nil), http.StatusForbidden, "escalation")
	if roles, _ := w.app.rbac.Service().RoleNames(context.Background(), w.acme, w.admin.id); !slices.Contains(roles, "admin") {
		t.Fatalf("acme has lost its only admin: the admin's roles there are now %v", roles)
	}
	wantStatus(t, w.app.me(t, w.admin.token), 200, "")
	// The last-admin guard, for a super admin naming the tenant in capitals.
	wantStatus(t, w.as(t, w.super, "DELETE", "/v1/tenants/"+strings.ToUpper(w.acme)+"/members/"+upper, nil), http.StatusConflict, "")
	// A suspension under the tenant's id in capitals takes effect.
	status := "suspended"
	wantStatus(t, w.as(t, w.super, "PATCH", "/v1/tenants/"+strings.ToUpper(w.acme), tenant.UpdateTenantRequest{Status: &status}), 200, "")
	wantStatus(t, w.app.me(t, w.admin.token), 403, "tenant_suspended")
}
