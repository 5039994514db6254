package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gatehouse/modules/auth"
	"gatehouse/platform/config"
	"gatehouse/platform/testenv"
)

// limitedPath is a cheap public route governed by the anonymous policies
// (health probes are exempt from them).
const limitedPath = "/.well-known/jwks.json"

// limitOnly replaces the policies with one anonymous policy, so every
// public route is governed by it alone.
func limitOnly(cfg *config.Config, p config.Policy) {
	cfg.RateLimit.Policies = []config.Policy{p}
	cfg.RateLimit.Anonymous = []string{p.Name}
	cfg.RateLimit.Authenticated = nil
	cfg.RateLimit.Policies = append(cfg.RateLimit.Policies,
		config.Policy{Name: "login", Algorithm: "token_bucket", Limit: 10000, Period: time.Hour, Key: "ip", OnError: "allow"},
		config.Policy{Name: "register", Algorithm: "token_bucket", Limit: 10000, Period: time.Hour, Key: "ip", OnError: "allow"},
		config.Policy{Name: "refresh", Algorithm: "token_bucket", Limit: 10000, Period: time.Hour, Key: "user", OnError: "allow"})
}

// hammer sends n concurrent GET limitedPath to the apps in turn and counts
// the answers by status.
func hammer(t *testing.T, n int, apps ...testApp) map[int]int {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		codes = map[int]int{}
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			rec := httptest.NewRecorder()
			apps[i%len(apps)].ServeHTTP(rec, httptest.NewRequest("GET", limitedPath, nil))
			mu.Lock()
			codes[rec.Code]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return codes
}

// Acceptance 1: 200 concurrent requests, exactly limit pass, for each
// algorithm: on one instance in memory, and on two instances sharing Redis.
func TestRateLimitExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	for _, algo := range []string{"token_bucket", "sliding_window"} {
		for _, b := range backends {
			t.Run(algo+"/"+b.name, func(t *testing.T) {
				cfg := testConfig(t, b)
				limitOnly(&cfg, config.Policy{Name: "exact", Algorithm: algo, Limit: 50, Period: time.Hour, Key: "ip", OnError: "deny"})
				apps := []testApp{startApp(t, cfg)}
				if b.redisURL != nil {
					apps = append(apps, startApp(t, cfg)) // a second instance on the same Redis
				}
				codes := hammer(t, 200, apps...)
				if codes[200] != 50 || codes[429] != 150 {
					t.Fatalf("answers %v, want exactly 50 × 200 and 150 × 429", codes)
				}
			})
		}
	}
}

// Limited routes carry the RateLimit headers; a refusal is 429
// rate_limited with Retry-After.
func TestRateLimitHeaders(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[0])
	limitOnly(&cfg, config.Policy{Name: "tight", Algorithm: "sliding_window", Limit: 2, Period: time.Minute, Key: "ip", OnError: "deny"})
	app := startApp(t, cfg)
	for i, want := range []string{"1", "0"} {
		rec := app.do(t, req{method: "GET", path: limitedPath})
		wantStatus(t, rec, 200, "")
		if rec.Header().Get("RateLimit-Limit") != "2" || rec.Header().Get("RateLimit-Remaining") != want ||
			rec.Header().Get("X-RateLimit-Remaining") != want || rec.Header().Get("RateLimit-Reset") == "" {
			t.Errorf("request %d headers: %v", i+1, rec.Header())
		}
	}
	rec := app.do(t, req{method: "GET", path: limitedPath})
	wantStatus(t, rec, 429, "rate_limited")
	if s, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || s < 59 || s > 60 {
		t.Errorf("Retry-After %q, want 60", rec.Header().Get("Retry-After"))
	}
	if reset, _ := strconv.ParseInt(rec.Header().Get("X-RateLimit-Reset"), 10, 64); reset < time.Now().Unix() {
		t.Errorf("X-RateLimit-Reset %d is not a future Unix time", reset)
	}
}

// Acceptance 5: X-Forwarded-For from an untrusted peer changes nothing;
// from a trusted proxy it names the client.
func TestClientIPFromTrustedProxiesOnly(t *testing.T) {
	t.Parallel()
	policy := config.Policy{Name: "per-ip", Algorithm: "sliding_window", Limit: 3, Period: time.Minute, Key: "ip", OnError: "deny"}
	send := func(app testApp, peer, xff string) int {
		r := httptest.NewRequest("GET", limitedPath, nil)
		r.RemoteAddr = peer + ":40000"
		r.Header.Set("X-Forwarded-For", xff)
		rec := httptest.NewRecorder()
		app.ServeHTTP(rec, r)
		return rec.Code
	}
	untrusted := testConfig(t, backends[0])
	limitOnly(&untrusted, policy)
	app := startApp(t, untrusted)
	var codes []int
	for i := range 5 {
		codes = append(codes, send(app, "198.51.100.7", fmt.Sprintf("203.0.113.%d", i))) // a spoofed, changing header
	}
	if fmt.Sprint(codes) != "[200 200 200 429 429]" {
		t.Errorf("spoofed X-Forwarded-For from an untrusted peer: %v, want the peer limited after 3", codes)
	}

	trusted := testConfig(t, backends[0])
	limitOnly(&trusted, policy)
	trusted.HTTP.TrustedProxies = []string{"10.0.0.0/8"}
	proxied := startApp(t, trusted)
	codes = nil
	for i := range 5 {
		codes = append(codes, send(proxied, "10.1.2.3", fmt.Sprintf("203.0.113.%d, 10.9.9.9", i))) // each from another client
	}
	if fmt.Sprint(codes) != "[200 200 200 200 200]" {
		t.Errorf("through a trusted proxy: %v, want each client counted apart", codes)
	}
	for range 3 {
		send(proxied, "10.1.2.3", "203.0.113.99")
	}
	if c := send(proxied, "10.1.2.3", "203.0.113.99"); c != 429 {
		t.Errorf("one client through the proxy, 4th request: %d, want 429", c)
	}
	// A loopback or private peer not in the list is not trusted either.
	codes = nil
	for i := range 4 {
		codes = append(codes, send(proxied, "127.0.0.1", fmt.Sprintf("203.0.113.%d", 200+i)))
	}
	if fmt.Sprint(codes) != "[200 200 200 429]" {
		t.Errorf("loopback peer not in trusted_proxies: %v", codes)
	}
}

// Login is limited per IP and email, refresh per user, and a tenant's
// ceiling is multiplied by its plan.
func TestPolicyKeys(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[0])
	cfg.Auth.LockoutThreshold = 100
	for i, p := range cfg.RateLimit.Policies {
		switch p.Name {
		case "login":
			cfg.RateLimit.Policies[i].Limit = 3
		case "refresh":
			cfg.RateLimit.Policies[i].Limit, cfg.RateLimit.Policies[i].Period = 2, time.Hour
		case "api-tenant":
			cfg.RateLimit.Policies[i].Limit, cfg.RateLimit.Policies[i].Period = 4, time.Hour
		}
	}
	app := startApp(t, cfg)
	basic := insertTenant(t, app, "basic")
	pro := insertTenant(t, app, "pro")
	if err := app.db.Conn(context.Background()).Exec("UPDATE tenants SET plan = 'pro' WHERE id = ?", pro).Error; err != nil {
		t.Fatal(err)
	}
	app.register(t, "pat@example.com", "correct horse battery", "basic")
	app.register(t, "quinn@example.com", "correct horse battery", "basic")
	app.register(t, "rita@example.com", "correct horse battery", "pro")

	t.Run("login per IP and email", func(t *testing.T) {
		login := func(email, pw string) *httpRecorder {
			return app.do(t, req{method: "POST", path: "/v1/auth/login", body: auth.LoginRequest{Email: email, Password: pw}})
		}
		for range 3 {
			wantStatus(t, login("pat@example.com", "wrong password!"), 401, "invalid_credentials")
		}
		wantStatus(t, login("PAT@example.com", "correct horse battery"), 429, "rate_limited") // normalised, and right: still over
		wantStatus(t, login("someone@example.com", "wrong password!"), 401, "invalid_credentials")
	})
	t.Run("refresh per user", func(t *testing.T) {
		p := app.login(t, "quinn@example.com", "correct horse battery", "")
		for range 2 {
			rec := app.refresh(p.RefreshToken, t)
			wantStatus(t, rec, 200, "")
			p = decode[auth.Pair](t, rec)
		}
		wantStatus(t, app.refresh(p.RefreshToken, t), 429, "rate_limited")
		// The refused token was not used up: it works once the limit allows.
	})
	t.Run("tenant ceiling times plan", func(t *testing.T) {
		count := func(email, slug string) int {
			tok := app.login(t, email, "correct horse battery", slug).AccessToken
			for n := 0; n < 100; n++ {
				if rec := app.me(t, tok); rec.Code == 429 {
					wantStatus(t, rec, 429, "rate_limited")
					return n
				}
			}
			return 100
		}
		if n := count("quinn@example.com", "basic"); n != 4 {
			t.Errorf("basic plan: %d requests passed, want 4", n)
		}
		if n := count("rita@example.com", "pro"); n != 20 {
			t.Errorf("pro plan (x5): %d requests passed, want 20", n)
		}
	})
	_ = basic
}

// Acceptance 6: Redis stops under running apps. A policy that allows on
// error lets requests through, one that denies answers 503; the outage is
// logged once; when Redis returns, limits apply again with no restart.
func TestRateLimitWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	rd := testenv.Need(t, testenv.EnvRedis)
	rdAddr, _ := url.Parse(rd)
	start := func(onError string) (testApp, *relay) {
		rl := newRelay(t, rdAddr.Host)
		cfg := testConfig(t, backend{name: "relayed", redisURL: func(t testing.TB) string { return rl.through(t, rd) }})
		limitOnly(&cfg, config.Policy{Name: "guard", Algorithm: "token_bucket", Limit: 2, Period: time.Hour, Key: "ip", OnError: onError})
		return startApp(t, cfg), rl
	}
	for _, c := range []struct {
		onError  string
		whenDown int
		code     string
	}{{"allow", 200, ""}, {"deny", 503, "rate_limiter_unavailable"}} {
		t.Run(c.onError, func(t *testing.T) {
			app, rl := start(c.onError)
			health := func() *httpRecorder { return app.do(t, req{method: "GET", path: limitedPath}) }
			wantStatus(t, health(), 200, "")
			wantStatus(t, health(), 200, "")
			wantStatus(t, health(), 429, "rate_limited")
			rl.setCut(true)
			for range 3 {
				wantStatus(t, health(), c.whenDown, c.code)
			}
			if n := strings.Count(app.logs.String(), "rate limiter unavailable"); n != 1 {
				t.Errorf("the outage was logged %d times, want once", n)
			}
			rl.setCut(false)
			deadline := time.Now().Add(5 * time.Second)
			for {
				rec := health()
				if rec.Code == 429 {
					break // the count kept in Redis applies again
				}
				if time.Now().After(deadline) {
					t.Fatalf("after Redis returned: %d %s", rec.Code, rec.Body)
				}
				time.Sleep(100 * time.Millisecond)
			}
			// The end is logged once the limiter has answered without an
			// error for 10 s (a partial outage must not flap the log).
			for deadline := time.Now().Add(15 * time.Second); !strings.Contains(app.logs.String(), "rate limiter available again"); {
				if time.Now().After(deadline) {
					t.Fatal("the recovery was not logged")
				}
				time.Sleep(250 * time.Millisecond)
				health()
			}
			if n := strings.Count(app.logs.String(), "rate limiter available again"); n != 1 {
				t.Errorf("the recovery was logged %d times, want once", n)
			}
		})
	}
}

// Health probes and metric scrapes are exempt from the default policies:
// an orchestrator probing every few seconds must not be refused.
func TestProbesAreNotLimited(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[0])
	cfg.Metrics.Token = metricsToken
	limitOnly(&cfg, config.Policy{Name: "tight", Algorithm: "sliding_window", Limit: 2, Period: time.Hour, Key: "ip", OnError: "deny"})
	app := startApp(t, cfg)
	for range 10 {
		for _, path := range []string{"/health", "/health/detailed", "/health/database", "/health/cache"} {
			wantStatus(t, app.do(t, req{method: "GET", path: path}), 200, "")
		}
		wantStatus(t, app.do(t, req{method: "GET", path: "/metrics", header: map[string]string{"Authorization": "Bearer " + metricsToken}}), 200, "")
	}
	wantStatus(t, app.do(t, req{method: "GET", path: limitedPath}), 200, "")
	wantStatus(t, app.do(t, req{method: "GET", path: limitedPath}), 200, "")
	wantStatus(t, app.do(t, req{method: "GET", path: limitedPath}), 429, "rate_limited")
}

// A plan's factor multiplies the tenant-keyed policies; one that makes a
// policy invalid (over one request a microsecond, or past an int) would
// fail every request of that plan's tenants with 500, so the start refuses
// it, naming the plan and the policy.
func TestPlanFactorCheckedAtStart(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[0])
	cfg.RateLimit.Plans = map[string]int{"default": 1, "enterprise": 50, "unlimited": 100000}
	_, _, err := newLimits(cfg, slog.New(slog.DiscardHandler), nil)
	if err == nil || !strings.Contains(err.Error(), "ratelimit.plans.unlimited") || !strings.Contains(err.Error(), `"api-tenant"`) {
		t.Fatalf("start with a factor of 100000: %v", err)
	}
	cfg.RateLimit.Plans["unlimited"] = 100
	limiter, _, err := newLimits(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatalf("start with a factor of 100: %v", err)
	}
	limiter.Close()
}
