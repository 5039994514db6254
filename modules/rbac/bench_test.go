package rbac

import (
	"context"
	"testing"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/db"
	"gatehouse/platform/httpx"
	"gatehouse/platform/kv"
	"gatehouse/platform/testenv"
)

// BenchmarkAuthorizeHit is the authorize step on the hot path: the version
// read from the memory kv store, the grants found in the in-process map
// under the same version, the scope decided. Its one allocation is the
// memory store's copy of the version value (kv.Memory.Get never hands out
// its own bytes).
func BenchmarkAuthorizeHit(b *testing.B) {
	e := newEnv(b, backends()[0])
	ten := e.tenant(b)
	user := e.member(b, ten, "member")
	h := e.m.Authorize(httpx.Route{Auth: httpx.Permission("orders:read")})(func(echo.Context) error { return nil })
	c := httpx.WithIdentity(testContext(), httpx.Identity{UserID: user, TenantID: ten})
	id := httpx.IdentityOf(c)
	if err := h(c); err != nil || id.Scope != httpx.ScopeOwn {
		b.Fatalf("warm-up: %v %q", err, id.Scope)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := h(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthorizeMiss is the authorize step after every change: each
// iteration bumps the version (an Incr on the memory kv store, well under a
// microsecond) so that the check misses both caches and reads the database:
// super_admins, the membership (the test's Members: one query), the union
// of role grants; then fills both caches.
func BenchmarkAuthorizeMiss(b *testing.B) {
	for _, be := range backends() {
		b.Run(be.name, func(b *testing.B) {
			if be.name == "postgres" {
				// Postgres with the memory kv store: this measures the
				// database, not Redis.
				be.open = postgresMemory
			}
			e := newEnv(b, be)
			ten := e.tenant(b)
			user := e.member(b, ten, "manager")
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := e.svc.Invalidate(ctx); err != nil {
					b.Fatal(err)
				}
				s, err := e.svc.scope(ctx, ten, user, "orders:read")
				if err != nil || s != httpx.ScopeAll {
					b.Fatalf("%q %v", s, err)
				}
			}
		})
	}
}

// postgresMemory opens PostgreSQL with the memory kv store.
func postgresMemory(t testing.TB) (*db.DB, func() kv.Store) {
	d := openDB(t, db.Config{URL: testenv.PostgresURL(t), MaxOpenConns: 8})
	mem := kv.NewMemory()
	t.Cleanup(func() { mem.Close() })
	return d, func() kv.Store { return mem }
}
