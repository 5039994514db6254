package rbac

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/configs"
	"gatehouse/platform/audit"
	"gatehouse/platform/db"
	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
	"gatehouse/platform/kv"
	"gatehouse/platform/testenv"
)

// backend opens a migrated database and a function returning kv stores
// that share their data, as the instances of one deployment do.
type backend struct {
	name string
	open func(t testing.TB) (*db.DB, func() kv.Store)
}

// backends are SQLite with the memory kv store, always, and PostgreSQL with
// Redis when TEST_POSTGRES_URL and TEST_REDIS_URL are set.
func backends() []backend {
	return []backend{
		{"sqlite", func(t testing.TB) (*db.DB, func() kv.Store) {
			d := openDB(t, db.Config{SQLitePath: filepath.Join(t.TempDir(), "rbac.db")})
			mem := kv.NewMemory()
			t.Cleanup(func() { mem.Close() })
			return d, func() kv.Store { return mem }
		}},
		{"postgres", func(t testing.TB) (*db.DB, func() kv.Store) {
			redisURL := testenv.Need(t, testenv.EnvRedis)
			d := openDB(t, db.Config{URL: testenv.PostgresURL(t), MaxOpenConns: 8})
			prefix := "test:rbac:" + testenv.Random(6) + ":"
			t.Cleanup(func() {
				// Cleanups run last-registered first, so the stores are
				// closed by now: a client of its own deletes what the test
				// left under its prefix.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				r, err := kv.NewRedis(ctx, redisURL, "")
				if err != nil {
					t.Errorf("redis cleanup: %v", err)
					return
				}
				defer r.Close()
				c := r.Client()
				iter := c.Scan(ctx, 0, prefix+"*", 100).Iterator()
				for iter.Next(ctx) {
					c.Del(ctx, iter.Val())
				}
			})
			return d, func() kv.Store {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				r, err := kv.NewRedis(ctx, redisURL, prefix)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Close() })
				return r
			}
		}},
	}
}

func openDB(t testing.TB, cfg db.Config) *db.DB {
	t.Helper()
	ctx := context.Background()
	d, err := db.Open(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return d
}

// eachBackend runs f once per backend, in parallel subtests.
func eachBackend(t *testing.T, f func(t *testing.T, e *env)) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f(t, newEnv(t, b))
		})
	}
}

// env is one Gatehouse deployment's worth of rbac: a database, a kv store
// and a module serving behind a test chain.
type env struct {
	db      *db.DB
	newKV   func() kv.Store
	kv      kv.Store
	cat     *Catalogue
	m       *Module
	svc     *Service
	srv     *httpx.Server
	events  *recorder
	members members
}

func newEnv(t testing.TB, b backend) *env {
	t.Helper()
	d, newKV := b.open(t)
	cat, err := LoadCatalogue(configs.Roles)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{db: d, newKV: newKV, cat: cat, members: members{d}}
	e.kv = newKV()
	e.m, e.srv, e.events = e.instance(t, e.kv)
	e.svc = e.m.Service()
	return e
}

// instance starts one more module and server on e's database and the kv
// store given.
func (e *env) instance(t testing.TB, store kv.Store) (*Module, *httpx.Server, *recorder) {
	t.Helper()
	ev := &recorder{}
	m, err := New(context.Background(), Deps{DB: e.db, KV: store, Events: ev, Catalogue: e.cat, Members: e.members})
	if err != nil {
		t.Fatal(err)
	}
	srv := httpx.New(httpx.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxBodyBytes: 1 << 20,
		Slots: httpx.Slots{Authenticate: testAuthenticate, Authorize: m.Authorize}})
	if err := srv.Mount(m.Routes()...); err != nil {
		t.Fatal(err)
	}
	if err := srv.Mount(probeRoutes()...); err != nil {
		t.Fatal(err)
	}
	return m, srv, ev
}

// probeRoutes need one permission each and answer with the scope granted.
func probeRoutes() []httpx.Route {
	probe := func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"scope": httpx.IdentityOf(c).Scope})
	}
	var out []httpx.Route
	for _, p := range []string{"orders:read", "orders:delete", "tenants:manage", "users:manage"} {
		out = append(out, httpx.Route{Method: http.MethodGet, Path: probePath(p), Auth: httpx.Permission(p), Handle: probe})
	}
	return out
}

// probePath is the probe of p; Echo would read a colon in a path as a
// parameter.
func probePath(p string) string { return "/probe/" + strings.ReplaceAll(p, ":", "-") }

// testAuthenticate is the authenticate slot of the tests: the caller is
// whoever the X-Test-User and X-Test-Tenant headers say.
func testAuthenticate(httpx.Route) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			u := c.Request().Header.Get("X-Test-User")
			if u == "" {
				return fault.New(fault.Unauthenticated, "invalid_token", "no test user")
			}
			return httpx.Admit(c, httpx.Identity{UserID: u, TenantID: c.Request().Header.Get("X-Test-Tenant")}, next)
		}
	}
}

// members is the tenant module's part, read from its tables.
type members struct{ db *db.DB }

func (m members) ActiveMember(ctx context.Context, tenantID, userID string) (bool, error) {
	var n int64
	err := m.db.Conn(ctx).Raw(`SELECT count(*) FROM memberships m JOIN tenants t ON t.id = m.tenant_id
		WHERE m.tenant_id = ? AND m.user_id = ? AND m.status = 'active' AND t.status = 'active'`, tenantID, userID).Scan(&n).Error
	return n > 0, err
}

// recorder keeps the audit events.
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
}

func (r *recorder) Record(_ context.Context, e audit.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

// find returns the last event with this action and outcome and, if given,
// this reason.
func (r *recorder) find(action, outcome string, reason ...string) (audit.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.events) - 1; i >= 0; i-- {
		e := r.events[i]
		if e.Action == action && e.Outcome == outcome && (len(reason) == 0 || e.Metadata["reason"] == reason[0]) {
			return e, true
		}
	}
	return audit.Event{}, false
}

// exec runs SQL the tests use to stand in for other modules.
func (e *env) exec(t testing.TB, q string, args ...any) {
	t.Helper()
	if err := e.db.Conn(context.Background()).Exec(q, args...).Error; err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func (e *env) tenant(t testing.TB) string {
	id := newID()
	e.exec(t, "INSERT INTO tenants (id, slug, name, status, created_at) VALUES (?, ?, ?, 'active', ?)", id, "t-"+id, "T", now())
	return id
}

// member makes a new user, an active member of the tenant holding the
// system roles named.
func (e *env) member(t testing.TB, tenantID string, roles ...string) string {
	t.Helper()
	u := newID()
	e.exec(t, "INSERT INTO users (id, email, name, password_hash, status, created_at, updated_at) VALUES (?, ?, '', 'x', 'active', ?, ?)",
		u, u+"@example.com", now(), now())
	e.join(t, tenantID, u, roles...)
	return u
}

// join makes an existing user an active member of the tenant.
func (e *env) join(t testing.TB, tenantID, userID string, roles ...string) {
	t.Helper()
	e.exec(t, "INSERT INTO memberships (user_id, tenant_id, status, created_at) VALUES (?, ?, 'active', ?)", userID, tenantID, now())
	for _, r := range roles {
		if err := e.svc.AssignRole(context.Background(), tenantID, userID, r); err != nil {
			t.Fatalf("assign %s: %v", r, err)
		}
	}
}

// caller is who a request is made as.
type caller struct{ user, tenant string }

// do sends a request through srv and returns the status and decoded body.
func do(t testing.TB, srv http.Handler, as caller, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req := httptest.NewRequest(method, path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if as.user != "" {
		req.Header.Set("X-Test-User", as.user)
		req.Header.Set("X-Test-Tenant", as.tenant)
	}
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, req)
	var out map[string]any
	if w.Body.Len() > 0 {
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, path, w.Body.String(), err)
		}
	}
	return w.Code, out
}

// errCode returns the error code of an error body.
func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// errDetail returns one detail of an error body.
func errDetail(body map[string]any, key string) any {
	e, _ := body["error"].(map[string]any)
	d, _ := e["details"].(map[string]any)
	return d[key]
}

// strs turns a decoded JSON array into strings.
func strs(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// scopeOf asks the probe for p as c: the scope, or "" and the status.
func scopeOf(t testing.TB, srv http.Handler, c caller, p string) (string, int) {
	t.Helper()
	code, body := do(t, srv, c, http.MethodGet, probePath(p), nil)
	if code != http.StatusOK {
		return "", code
	}
	s, _ := body["scope"].(string)
	return s, code
}

func sorted(s ...string) []string { return slices.Sorted(slices.Values(s)) }

// customRole creates a custom role as c and returns its id.
func (e *env) customRole(t testing.TB, c caller, name string, perms ...string) string {
	t.Helper()
	code, body := do(t, e.srv, c, http.MethodPost, "/v1/roles", map[string]any{"name": name, "permissions": perms})
	if code != http.StatusCreated {
		t.Fatalf("create role %s: %d %v", name, code, body)
	}
	return body["id"].(string)
}

// assign gives a member of c's tenant a role, as c.
func (e *env) assign(t testing.TB, c caller, userID, roleID string) {
	t.Helper()
	code, body := do(t, e.srv, c, http.MethodPost, "/v1/tenants/"+c.tenant+"/members/"+userID+"/roles", map[string]any{"role_id": roleID})
	if code != http.StatusOK {
		t.Fatalf("assign %s to %s: %d %v", roleID, userID, code, body)
	}
}

// mustGrant grants perms to a role as c and returns the role's id.
func mustGrant(t testing.TB, e *env, c caller, roleID string, perms ...string) string {
	t.Helper()
	code, body := do(t, e.srv, c, http.MethodPost, "/v1/roles/"+roleID+"/permissions", map[string]any{"permissions": perms})
	if code != http.StatusOK {
		t.Fatalf("grant %v: %d %v", perms, code, body)
	}
	return roleID
}

// mustRole returns the catalogue's grants of a system role.
func mustRole(t testing.TB, e *env, name string) []string {
	t.Helper()
	r, ok := e.cat.Role(name)
	if !ok {
		t.Fatalf("no system role %s", name)
	}
	return r.Permissions
}

func mustInvalidate(t testing.TB, e *env) {
	t.Helper()
	if err := e.svc.Invalidate(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func mustRead(testing.TB) []byte { return configs.Roles }

// testContext is an Echo context for calling middleware directly.
func testContext() echo.Context {
	return echo.New().NewContext(httptest.NewRequest(http.MethodGet, "/", nil), httptest.NewRecorder())
}
