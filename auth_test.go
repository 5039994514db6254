package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"gatehouse/modules/auth"
	"gatehouse/platform/httpx"
)

// req is one request to a test App.
type req struct {
	method, path string
	body         any    // JSON-encoded; a string is sent as it is
	bearer       string // access token
	header       map[string]string
	cookies      []*http.Cookie
	ctx          context.Context // the request's; nil: background
}

func (a testApp) do(t testing.TB, r req) *httptest.ResponseRecorder {
	t.Helper()
	var body string
	switch b := r.body.(type) {
	case nil:
	case string:
		body = b
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		body = string(raw)
	}
	if r.ctx == nil {
		r.ctx = context.Background()
	}
	hr := httptest.NewRequestWithContext(r.ctx, r.method, r.path, strings.NewReader(body))
	if r.body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if r.bearer != "" {
		hr.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	for k, v := range r.header {
		if k == "Host" {
			hr.Host = v // Go reads the request's Host field, not the header
			continue
		}
		hr.Header.Set(k, v)
	}
	for _, c := range r.cookies {
		hr.AddCookie(c)
	}
	hr.Header.Set("User-Agent", "gatehouse-test/1.0")
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, hr)
	return rec
}

func decode[T any](t testing.TB, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %T: %v: %s", v, err, rec.Body)
	}
	return v
}

// wantStatus fails the test unless rec has the status and, for errors, the
// error code.
func wantStatus(t testing.TB, rec *httptest.ResponseRecorder, status int, code string) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d: %s", rec.Code, status, rec.Body)
	}
	if code != "" {
		if got := decode[httpx.ErrorBody](t, rec).Error.Code; got != code {
			t.Fatalf("code %q, want %q: %s", got, code, rec.Body)
		}
	}
}

func (a testApp) register(t testing.TB, email, password, tenant string) auth.RegisterResponse {
	t.Helper()
	rec := a.do(t, req{method: "POST", path: "/v1/auth/register",
		body: auth.RegisterRequest{Email: email, Password: password, Name: "Test User", Tenant: tenant}})
	wantStatus(t, rec, http.StatusCreated, "")
	return decode[auth.RegisterResponse](t, rec)
}

func (a testApp) login(t testing.TB, email, password, tenant string) auth.Pair {
	t.Helper()
	rec := a.do(t, req{method: "POST", path: "/v1/auth/login", body: auth.LoginRequest{Email: email, Password: password, Tenant: tenant}})
	wantStatus(t, rec, http.StatusOK, "")
	return decode[auth.Pair](t, rec)
}

func (a testApp) refresh(refresh string, t *testing.T) *httptest.ResponseRecorder {
	return a.do(t, req{method: "POST", path: "/v1/auth/refresh", body: auth.RefreshRequest{RefreshToken: refresh}})
}

func (a testApp) me(t *testing.T, access string) *httptest.ResponseRecorder {
	return a.do(t, req{method: "GET", path: "/v1/auth/me", bearer: access})
}

// wantRejected asserts the 401 every refused access token gets.
func wantRejected(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	wantStatus(t, rec, http.StatusUnauthorized, "invalid_token")
	if got := rec.Header().Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
		t.Fatalf("WWW-Authenticate %q", got)
	}
}

// Acceptance 1: register, login, me, refresh, reuse of the old refresh
// token (the family dies), login again, logout (the token dies at once).
func TestAuthFlow(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			app := newTestApp(t, b, nil)
			reg := app.register(t, "  Alice@Example.COM ", "correct horse battery", "")
			if reg.User.Email != "alice@example.com" || reg.Tenant.Slug != "default" || reg.User.ID == "" {
				t.Fatalf("register: %+v", reg)
			}
			p1 := app.login(t, "alice@example.com", "correct horse battery", "")
			if p1.TokenType != "Bearer" || p1.ExpiresIn != 900 || p1.RefreshToken == "" || p1.RefreshExpiresIn < 1000 {
				t.Fatalf("login pair: %+v", p1)
			}
			rec := app.me(t, p1.AccessToken)
			wantStatus(t, rec, 200, "")
			me := decode[auth.MeResponse](t, rec)
			if me.User.ID != reg.User.ID || me.Tenant.Slug != "default" || me.SessionID == "" ||
				strings.Join(me.Roles, ",") != "member" {
				t.Fatalf("me: %+v", me)
			}

			rec = app.refresh(p1.RefreshToken, t)
			wantStatus(t, rec, 200, "")
			p2 := decode[auth.Pair](t, rec)
			if p2.RefreshToken == p1.RefreshToken || p2.AccessToken == p1.AccessToken {
				t.Fatal("refresh did not rotate")
			}
			wantStatus(t, app.me(t, p2.AccessToken), 200, "")

			// The old refresh token comes back: the family is revoked.
			wantStatus(t, app.refresh(p1.RefreshToken, t), 401, "refresh_token_reused")
			wantStatus(t, app.refresh(p2.RefreshToken, t), 401, "invalid_refresh_token")
			wantRejected(t, app.me(t, p2.AccessToken))
			wantRejected(t, app.me(t, p1.AccessToken))

			p3 := app.login(t, "alice@example.com", "correct horse battery", "default")
			wantStatus(t, app.me(t, p3.AccessToken), 200, "")
			rec = app.do(t, req{method: "POST", path: "/v1/auth/logout", bearer: p3.AccessToken})
			wantStatus(t, rec, http.StatusNoContent, "")
			wantRejected(t, app.me(t, p3.AccessToken))
			wantStatus(t, app.refresh(p3.RefreshToken, t), 401, "invalid_refresh_token")

			// The session rows tell the same story.
			var reasons []string
			app.db.Conn(context.Background()).Table("sessions").Where("user_id = ?", reg.User.ID).
				Order("created_at").Pluck("revoked_reason", &reasons)
			if strings.Join(reasons, ",") != "refresh_token_reused,logout" {
				t.Errorf("sessions revoked for %v", reasons)
			}
		})
	}
}

// Acceptance 2: 20 concurrent refreshes with one token. Without grace one
// wins; with a grace of 2, exactly three. Uses past the bound are reuse,
// so the family does not survive either run: the winners' pairs die with
// it.
func TestConcurrentRefresh(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		for _, grace := range []int{0, 2} {
			t.Run(fmt.Sprintf("%s/grace=%d", b.name, grace), func(t *testing.T) {
				app := newTestApp(t, b, nil)
				setGrace(t, app, grace, 10*time.Second)
				app.register(t, "bob@example.com", "correct horse battery", "")
				p := app.login(t, "bob@example.com", "correct horse battery", "")
				codes, won := refreshAtOnce(t, app, p.RefreshToken, 20)
				if codes[200] != 1+grace || codes[401] != 20-(1+grace) {
					t.Fatalf("outcomes %v, want %d successes and the rest 401", codes, 1+grace)
				}
				// Some use fell outside the bound: the whole family is dead.
				for _, w := range won {
					wantStatus(t, app.refresh(w.RefreshToken, t), 401, "invalid_refresh_token")
					wantRejected(t, app.me(t, w.AccessToken))
				}
			})
		}
	}
}

// TestConcurrentRefreshWithinBound: with a grace of 2, three concurrent
// uses of one token (the rotation and two extra uses, as three browser tabs
// make) all get a pair, and the family lives on.
func TestConcurrentRefreshWithinBound(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			app := newTestApp(t, b, nil)
			setGrace(t, app, 2, 10*time.Second)
			app.register(t, "tabs@example.com", "correct horse battery", "")
			p := app.login(t, "tabs@example.com", "correct horse battery", "")
			codes, pairs := refreshAtOnce(t, app, p.RefreshToken, 3)
			if len(pairs) != 3 {
				t.Fatalf("outcomes %v: %d of 3 uses within the bound got a pair", codes, len(pairs))
			}
			for _, sib := range pairs {
				wantStatus(t, app.me(t, sib.AccessToken), 200, "")
			}
		})
	}
}

// refreshAtOnce makes n refreshes with one token, released together, and
// returns how many answered each status and the pairs of those that won.
func refreshAtOnce(t *testing.T, app testApp, token string, n int) (map[int]int, []auth.Pair) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		codes = map[int]int{}
		won   []auth.Pair
	)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			rec := app.refresh(token, t)
			mu.Lock()
			defer mu.Unlock()
			codes[rec.Code]++
			if rec.Code == 200 {
				won = append(won, decode[auth.Pair](t, rec))
			}
		})
	}
	close(start)
	wg.Wait()
	return codes, won
}

// Uses within the grace bound do not count as reuse: the family lives on,
// and each extra use gave a working sibling pair.
func TestRefreshGraceWithinBound(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, backends[0], nil)
	setGrace(t, app, 2, 10*time.Second)
	app.register(t, "tabs@example.com", "correct horse battery", "")
	p := app.login(t, "tabs@example.com", "correct horse battery", "")
	var pairs []auth.Pair
	for range 3 { // the rotation and two extra uses
		rec := app.refresh(p.RefreshToken, t)
		wantStatus(t, rec, 200, "")
		pairs = append(pairs, decode[auth.Pair](t, rec))
	}
	for _, sib := range pairs {
		wantStatus(t, app.me(t, sib.AccessToken), 200, "")
	}
	wantStatus(t, app.refresh(pairs[2].RefreshToken, t), 200, "") // a sibling rotates normally
	// A fourth use of the original is past the bound: reuse.
	wantStatus(t, app.refresh(p.RefreshToken, t), 401, "refresh_token_reused")
	wantRejected(t, app.me(t, pairs[0].AccessToken))
}

// A grace use after the window has passed is reuse.
func TestRefreshGraceWindowEnds(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, backends[0], nil)
	setGrace(t, app, 5, 300*time.Millisecond)
	app.register(t, "slow@example.com", "correct horse battery", "")
	p := app.login(t, "slow@example.com", "correct horse battery", "")
	wantStatus(t, app.refresh(p.RefreshToken, t), 200, "")
	time.Sleep(500 * time.Millisecond)
	wantStatus(t, app.refresh(p.RefreshToken, t), 401, "refresh_token_reused")
}

// setGrace sets the default tenant's refresh grace (the tenant settings API
// comes with the RBAC issue).
func setGrace(t *testing.T, app testApp, uses int, window time.Duration) {
	t.Helper()
	err := app.db.Conn(context.Background()).Table("tenants").Where("slug = ?", "default").
		Updates(map[string]any{"refresh_grace_uses": uses, "refresh_grace_window_ms": window.Milliseconds()}).Error
	if err != nil {
		t.Fatal(err)
	}
}

// Acceptance 3: two instances share PostgreSQL and Redis; a logout on one
// is honoured by the other on the very next request.
func TestLogoutAcrossInstances(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[1])
	a, b := startApp(t, cfg), startApp(t, cfg)
	a.register(t, "carol@example.com", "correct horse battery", "")
	p := b.login(t, "carol@example.com", "correct horse battery", "")
	wantStatus(t, a.me(t, p.AccessToken), 200, "")
	wantStatus(t, b.me(t, p.AccessToken), 200, "") // both have verified (and cached) it
	wantStatus(t, a.do(t, req{method: "POST", path: "/v1/auth/logout", bearer: p.AccessToken}), 204, "")
	wantRejected(t, b.me(t, p.AccessToken))
	wantRejected(t, a.me(t, p.AccessToken))
}

type httpRecorder = httptest.ResponseRecorder

func basic(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// auditActions flushes the App's audit writer and returns the actions
// recorded, in order.
func auditActions(t *testing.T, app testApp) []string {
	t.Helper()
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	var actions []string
	if err := app.db.Conn(context.Background()).Raw("SELECT action FROM audit_events ORDER BY time, seq").Scan(&actions).Error; err != nil {
		t.Fatal(err)
	}
	return actions
}
