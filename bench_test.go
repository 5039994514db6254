package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"gatehouse/platform/config"
	"gatehouse/platform/ratelimit"
)

// BenchmarkBcrypt is the ceiling of logins: one bcrypt comparison at the
// default cost (12), nothing else.
func BenchmarkBcrypt(b *testing.B) {
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse battery"), 12)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := bcrypt.CompareHashAndPassword(hash, []byte("correct horse battery")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLogin is POST /v1/auth/login through the whole app at the
// default cost, on the embedded default: bcrypt (in a helper process, as
// serve runs it), a session row, a refresh token and a signed access token. Compare its ns/op with BenchmarkBcrypt.
func BenchmarkLogin(b *testing.B) {
	cfg := config.Default()
	cfg.Auth.FailedLoginDelay = 0
	cfg.Database.SQLitePath = b.TempDir() + "/g.db"
	relaxLimits(&cfg)
	app := startApp(b, cfg)
	app.register(b, "bench@example.com", "correct horse battery", "")
	body := `{"email":"bench@example.com","password":"correct horse battery"}`
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/v1/auth/login", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		app.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK {
			b.Fatalf("login: %d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkProtectedRoute is an authenticated GET through the whole chain
// (request id, JWT, tenant, rate limits, authorize, handler, access log to
// a buffer) on each backend, served in process: what the chain costs a
// request, without the network. /v1/auth/me reads the user and the tenant
// from the database; /v1/permissions/mine answers from memory.
func BenchmarkProtectedRoute(b *testing.B) {
	for _, bk := range backends {
		for _, path := range []string{"/v1/auth/me", "/v1/permissions/mine"} {
			b.Run(bk.name+path, func(b *testing.B) {
				cfg := testConfig(b, bk)
				relaxLimits(&cfg)
				app := startApp(b, cfg)
				app.register(b, "bench@example.com", "correct horse battery", "")
				tok := app.login(b, "bench@example.com", "correct horse battery", "").AccessToken
				// Start, migrations and two bcrypt hashes are not the route's cost.
				b.ResetTimer()
				b.ReportAllocs()
				b.SetParallelism(16) // requests in flight at once, as on a loaded server
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						r := httptest.NewRequest(http.MethodGet, path, nil)
						r.Header.Set("Authorization", "Bearer "+tok)
						rec := httptest.NewRecorder()
						app.ServeHTTP(rec, r)
						if rec.Code != http.StatusOK {
							b.Errorf("%s: %d %s", path, rec.Code, rec.Body)
							return
						}
					}
				})
			})
		}
	}
}

// BenchmarkGatewayRoute is an authenticated GET proxied to a trivial
// upstream on loopback, through the whole chain (orders:read authorized),
// on each backend.
func BenchmarkGatewayRoute(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	b.Cleanup(up.Close)
	for _, bk := range backends {
		b.Run(bk.name, func(b *testing.B) {
			cfg := testConfig(b, bk)
			relaxLimits(&cfg)
			writeRoutes(b, cfg.Gateway.RoutesFile, "routes:\n  - name: bench\n    prefix: /api/bench\n    upstreams: ["+up.URL+"]\n    auth: orders:read\n")
			app := startApp(b, cfg)
			app.register(b, "bench@example.com", "correct horse battery", "")
			tok := app.login(b, "bench@example.com", "correct horse battery", "").AccessToken
			b.ResetTimer() // as in BenchmarkProtectedRoute
			b.ReportAllocs()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := httptest.NewRequest(http.MethodGet, "/api/bench/x", nil)
					r.Header.Set("Authorization", "Bearer "+tok)
					rec := httptest.NewRecorder()
					app.ServeHTTP(rec, r)
					if rec.Code != http.StatusOK {
						b.Errorf("%d %s", rec.Code, rec.Body)
						return
					}
				}
			})
		})
	}
}

// relaxLimits keeps every policy decided on every request but never
// refusing one: benchmarks measure the decision, not refusals.
func relaxLimits(cfg *config.Config) {
	most := 1
	for _, f := range cfg.RateLimit.Plans {
		most = max(most, f)
	}
	for i := range cfg.RateLimit.Policies {
		p := &cfg.RateLimit.Policies[i]
		p.Limit, p.Period = 1_000_000, time.Second
		if p.Key == "tenant" {
			// A plan multiplies it, and the start checks every plan's
			// product against the limit of one a microsecond (as .ci/bench's
			// benchtool does).
			p.Limit /= most
		}
		if p.Algorithm == string(ratelimit.SlidingWindow) {
			p.Limit = min(p.Limit, ratelimit.MaxWindowLimit)
		}
	}
}
