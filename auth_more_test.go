package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"gatehouse/modules/auth"
	"gatehouse/modules/tenant"
	"gatehouse/platform/config"
	"gatehouse/platform/kv"
)

// Invalid email, empty or oversized fields, unknown tenant: 400 naming the
// field. Duplicate registration: 409, the same answer whichever tenant
// holds the email.
func TestRegisterBadInput(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, backends[0], nil)
	insertTenant(t, app, "acme")
	app.register(t, "dave@example.com", "correct horse battery", "")
	long := strings.Repeat("a", 250) + "@example.com"
	for _, c := range []struct {
		name  string
		body  any
		code  string
		field string
	}{
		{"missing email", auth.RegisterRequest{Password: "correct horse battery"}, "validation_failed", "email"},
		{"invalid email", auth.RegisterRequest{Email: "not-an-email", Password: "correct horse battery"}, "validation_failed", "email"},
		{"email with a name part", auth.RegisterRequest{Email: "Eve <eve@example.com>", Password: "correct horse battery"}, "validation_failed", "email"},
		{"email without a domain dot", auth.RegisterRequest{Email: "eve@localhost", Password: "correct horse battery"}, "validation_failed", "email"},
		{"oversized email", auth.RegisterRequest{Email: long, Password: "correct horse battery"}, "validation_failed", "email"},
		{"empty password", auth.RegisterRequest{Email: "eve@example.com"}, "validation_failed", "password"},
		{"short password", auth.RegisterRequest{Email: "eve@example.com", Password: "short"}, "validation_failed", "password"},
		{"password over bcrypt's 72 bytes", auth.RegisterRequest{Email: "eve@example.com", Password: strings.Repeat("p", 73)}, "validation_failed", "password"},
		{"oversized name", auth.RegisterRequest{Email: "eve@example.com", Password: "correct horse battery", Name: strings.Repeat("n", 201)}, "validation_failed", "name"},
		{"unknown tenant", auth.RegisterRequest{Email: "eve@example.com", Password: "correct horse battery", Tenant: "nope"}, "validation_failed", "tenant"},
		{"unknown field", `{"email":"eve@example.com","password":"correct horse battery","role":"admin"}`, "invalid_json", "role"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := app.do(t, req{method: "POST", path: "/v1/auth/register", body: c.body})
			wantStatus(t, rec, 400, c.code)
			if !strings.Contains(rec.Body.String(), `"field":"`+c.field+`"`) {
				t.Errorf("field %q not named: %s", c.field, rec.Body)
			}
		})
	}
	same := app.do(t, req{method: "POST", path: "/v1/auth/register",
		body: auth.RegisterRequest{Email: "DAVE@example.com", Password: "another password1"}})
	other := app.do(t, req{method: "POST", path: "/v1/auth/register",
		body: auth.RegisterRequest{Email: "dave@example.com", Password: "another password1", Tenant: "acme"}})
	wantStatus(t, same, 409, "already_registered")
	wantStatus(t, other, 409, "already_registered")
	strip := func(s string) string { return s[:strings.Index(s, `"request_id"`)] }
	if strip(same.Body.String()) != strip(other.Body.String()) {
		t.Errorf("the answers differ by tenant:\n%s\n%s", same.Body, other.Body)
	}
	// The 72-byte limit is on bytes, not characters: 24 three-byte runes fit, 25 do not.
	wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/register",
		body: auth.RegisterRequest{Email: "utf@example.com", Password: strings.Repeat("€", 25)}}), 400, "validation_failed")
	app.register(t, "utf@example.com", strings.Repeat("€", 24), "")
}

// insertTenant adds an active tenant (the tenants API comes with RBAC).
func insertTenant(t *testing.T, app testApp, slug string) string {
	t.Helper()
	id := "0190f0f0-0000-7000-8000-" + hex.EncodeToString([]byte(slug + "______"))[:12]
	err := app.db.Conn(context.Background()).Exec(
		"INSERT INTO tenants (id, slug, name, status, refresh_grace_uses, refresh_grace_window_ms, created_at) VALUES (?, ?, ?, 'active', 0, 10000, CURRENT_TIMESTAMP)",
		id, slug, strings.ToUpper(slug)).Error
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func addMembership(t *testing.T, app testApp, userID, tenantID, role string) {
	t.Helper()
	ctx := context.Background()
	err := app.db.Conn(ctx).Exec(
		"INSERT INTO memberships (user_id, tenant_id, status, created_at) VALUES (?, ?, 'active', CURRENT_TIMESTAMP)",
		userID, tenantID).Error
	if err != nil {
		t.Fatal(err)
	}
	if err := app.rbac.Service().AssignRole(ctx, tenantID, userID, role); err != nil {
		t.Fatal(err)
	}
}

// Unknown email, wrong password and a tenant the user is not in give one
// answer; five failures lock the account with 423 and Retry-After; a
// success before the lock resets the count.
func TestLoginFailuresAndLockout(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, backends[0], nil)
	insertTenant(t, app, "acme")
	app.register(t, "erin@example.com", "correct horse battery", "")
	login := func(email, pw, tenant string) *httptestRecorder {
		return app.do(t, req{method: "POST", path: "/v1/auth/login", body: auth.LoginRequest{Email: email, Password: pw, Tenant: tenant}})
	}
	bodies := map[string]string{}
	for name, rec := range map[string]*httptestRecorder{
		"unknown email":  login("nobody@example.com", "correct horse battery", ""),
		"wrong password": login("erin@example.com", "wrong password!", ""),
		"not a member":   login("erin@example.com", "correct horse battery", "acme"),
		"unknown tenant": login("erin@example.com", "correct horse battery", "nope"),
		"72+ bytes":      login("erin@example.com", strings.Repeat("x", 100), ""),
	} {
		wantStatus(t, rec, 401, "invalid_credentials")
		bodies[name] = rec.Body.String()[:strings.Index(rec.Body.String(), `"request_id"`)]
	}
	for name, b := range bodies {
		if b != bodies["unknown email"] {
			t.Errorf("%s answers differently: %s", name, b)
		}
	}
	// 4 failures so far for erin; a success resets the count.
	app.login(t, "erin@example.com", "correct horse battery", "")
	for i := 1; i <= 4; i++ {
		wantStatus(t, login("erin@example.com", "wrong password!", ""), 401, "invalid_credentials")
	}
	rec := login("erin@example.com", "wrong password!", "")
	wantStatus(t, rec, 423, "account_locked")
	if s, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || s < 890 || s > 900 {
		t.Errorf("Retry-After %q, want about 900", rec.Header().Get("Retry-After"))
	}
	// Locked means locked, even with the right password.
	wantStatus(t, login("erin@example.com", "correct horse battery", ""), 423, "account_locked")
	// Other accounts are unaffected.
	app.register(t, "frank@example.com", "correct horse battery", "")
	app.login(t, "frank@example.com", "correct horse battery", "")
}

// A burst of concurrent guesses gets no more password checks than the
// lockout threshold: each check is counted before it is made, so the
// guesses past the threshold are refused (423) without one, although the
// lock is written only when a failure is counted. Then even the right
// password is refused.
func TestLockoutHoldsUnderABurst(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			app := newTestApp(t, b, nil)
			app.register(t, "burst@example.com", "correct horse battery", "")
			const n = 40
			codes := make([]int, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					codes[i] = app.do(t, req{method: "POST", path: "/v1/auth/login",
						body: auth.LoginRequest{Email: "burst@example.com", Password: "wrong password " + strconv.Itoa(i)}}).Code
				}()
			}
			close(start)
			wg.Wait()
			count := map[int]int{}
			for _, c := range codes {
				count[c]++
			}
			// The threshold's last check answers 423: it writes the lock.
			// The checks past it are not made: 429 while the five are under
			// way, 423 once the lock is written.
			if count[401] != 4 || count[423] < 1 || count[423]+count[429] != n-4 {
				t.Fatalf("answers to %d concurrent wrong guesses: %v; want 4 × 401, then 423 or 429", n, count)
			}
			wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/login",
				body: auth.LoginRequest{Email: "burst@example.com", Password: "correct horse battery"}}), 423, "account_locked")
			if checked, locks := signInAudit(t, app); checked != 5 || locks != 1 {
				t.Fatalf("%d failed logins and %d lockouts recorded, want the 5 whose password was checked and 1", checked, locks)
			}
		})
	}
}

// Right sign-ins at once (an app on many devices, a retry storm) are no
// failures: those past the threshold wait (429 with Retry-After), and the
// account is not locked.
func TestConcurrentRightSignInsDoNotLock(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, backends[0], nil)
	const pw = "correct horse battery"
	app.register(t, "busy@example.com", pw, "")
	const n = 20
	recs := make([]*httpRecorder, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			recs[i] = app.do(t, req{method: "POST", path: "/v1/auth/login", body: auth.LoginRequest{Email: "busy@example.com", Password: pw}})
		}()
	}
	close(start)
	wg.Wait()
	count := map[int]int{}
	for _, rec := range recs {
		if count[rec.Code]++; rec.Code == 429 && rec.Header().Get("Retry-After") != "1" {
			t.Errorf("429 with Retry-After %q, want 1", rec.Header().Get("Retry-After"))
		}
	}
	if count[200] < 1 || count[200]+count[429] != n {
		t.Fatalf("answers to %d concurrent right sign-ins: %v; want 200 or 429, never a lock", n, count)
	}
	app.login(t, "busy@example.com", pw, "") // not locked
}

// A password check that ends without an answer (here the client gone
// while the account is read) is no failure: as many as the lockout
// threshold neither lock the account nor hold up its next sign-in.
func TestAbandonedChecksDoNotHoldUpSignIns(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			app := newTestApp(t, b, nil)
			const pw = "correct horse battery"
			app.register(t, "gone@example.com", pw, "")
			hold := holdQueries(t, app, "users")
			for range 5 {
				ctx, cancel := context.WithCancel(context.Background())
				rec := hold.during(func() *httpRecorder {
					return app.do(t, req{method: "POST", path: "/v1/auth/login", ctx: ctx,
						body: auth.LoginRequest{Email: "gone@example.com", Password: pw}})
				}, cancel)
				if strings.Contains(rec.Body.String(), "access_token") {
					t.Fatalf("a sign-in whose client went away before its account was read answered 200: %s", rec.Body)
				}
			}
			app.login(t, "gone@example.com", pw, "")
			if failures, locks := signInAudit(t, app); failures != 0 || locks != 0 {
				t.Fatalf("%d failed logins and %d lockouts recorded, want none", failures, locks)
			}
		})
	}
}

// usersHold holds every query of the users table while armed, as a slow
// database would, and counts the requests it holds; open lets them go.
type usersHold struct {
	armed   atomic.Bool
	arrived atomic.Int64
	mu      sync.Mutex
	gate    chan struct{}
}

func holdUsers(t *testing.T, app testApp) *usersHold {
	h := &usersHold{gate: make(chan struct{})}
	if err := app.db.Conn(context.Background()).Callback().Query().Before("gorm:query").Register("test:hold-users", func(tx *gorm.DB) {
		if tx.Statement.Table == "users" && h.armed.Load() {
			h.mu.Lock()
			gate := h.gate
			h.mu.Unlock()
			h.arrived.Add(1)
			<-gate
		}
	}); err != nil {
		t.Fatal(err)
	}
	return h
}

// open lets the held requests go, and holds no more until armed again.
func (h *usersHold) open() {
	h.armed.Store(false)
	h.mu.Lock()
	close(h.gate)
	h.gate = make(chan struct{})
	h.mu.Unlock()
}

// burst sends n sign-ins of email with wrong passwords at once, under ctx,
// with h armed, and returns when each is held or answered: how many are
// held (their password checks admitted), and finish, which lets them go
// and returns the answers' status codes.
func (h *usersHold) burst(t *testing.T, app testApp, ctx context.Context, email string, n int) (int64, func() map[int]int) {
	h.arrived.Store(0)
	h.armed.Store(true)
	var answered atomic.Int64
	codes := make(chan int, n)
	for i := range n {
		go func() {
			rec := app.do(t, req{method: "POST", path: "/v1/auth/login", ctx: ctx,
				body: auth.LoginRequest{Email: email, Password: "wrong password " + strconv.Itoa(i)}})
			answered.Add(1)
			codes <- rec.Code
		}()
	}
	for h.arrived.Load()+answered.Load() < int64(n) {
		time.Sleep(time.Millisecond)
	}
	return h.arrived.Load(), func() map[int]int {
		h.open()
		count := map[int]int{}
		for range n {
			count[<-codes]++
		}
		return count
	}
}

// signInAudit counts the failed sign-ins and the lockouts in the audit
// log, once the app is closed (which writes its queue).
func signInAudit(t *testing.T, app testApp) (failures, locks int64) {
	t.Helper()
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	conn := app.db.Conn(context.Background())
	if err := conn.Raw("SELECT count(*) FROM audit_events WHERE action = 'auth.login' AND outcome = 'failure'").Scan(&failures).Error; err != nil {
		t.Fatal(err)
	}
	if err := conn.Raw("SELECT count(*) FROM audit_events WHERE action = 'auth.lockout'").Scan(&locks).Error; err != nil {
		t.Fatal(err)
	}
	return failures, locks
}

// One wrong password while four right sign-ins of the account are under
// way is one failure, not the fifth: it does not lock the account.
func TestOneTypoAmongRightSignInsDoesNotLock(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, backends[0], nil)
	const pw = "correct horse battery"
	app.register(t, "devices@example.com", pw, "")
	h := holdUsers(t, app)
	login := func(password string) *httpRecorder {
		return app.do(t, req{method: "POST", path: "/v1/auth/login", body: auth.LoginRequest{Email: "devices@example.com", Password: password}})
	}
	h.armed.Store(true)
	recs := make(chan *httpRecorder, 4)
	for i := range 4 {
		go func() { recs <- login(pw) }()
		for h.arrived.Load() <= int64(i) {
			time.Sleep(time.Millisecond)
		}
	}
	h.armed.Store(false)
	wantStatus(t, login("a typo in it"), 401, "invalid_credentials")
	h.open()
	for range 4 {
		wantStatus(t, <-recs, 200, "")
	}
	app.login(t, "devices@example.com", pw, "")
}

// Checks under way count until they end, however long the lockout window:
// four wrong guesses still being checked as the window ends, then a burst,
// get five checks in all, not four more than the threshold (review: a
// counter of checks that expired under them let them count below zero).
// The window is 5 s so that the four failures still count at the burst,
// however slow a loaded machine makes them.
func TestChecksUnderWayOutlastTheLockoutWindow(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, backends[0], func(c *config.Config) { c.Auth.LockoutDuration = 5 * time.Second })
	const email = "window@example.com"
	app.register(t, email, "correct horse battery", "")
	h := holdUsers(t, app)
	held, finish := h.burst(t, app, context.Background(), email, 4)
	if held != 4 {
		t.Fatalf("%d of 4 guesses checked", held)
	}
	time.Sleep(5300 * time.Millisecond) // the window ends under them
	if got := finish(); got[401] != 4 {
		t.Fatalf("answers to the 4 guesses: %v, want 4 × 401", got)
	}
	held, finish = h.burst(t, app, context.Background(), email, 20)
	codes := finish()
	if failures, _ := signInAudit(t, app); held != 1 || failures != 5 {
		t.Fatalf("after 4 failures a burst of 20 had %d checked (answers %v); %d failures audited, want 1 and 5",
			held, codes, failures)
	}
}

// Checks whose clients gave up bank no guesses: rounds of them, each held
// past the lockout window, leave a later burst its five checks, no more.
func TestAbandonedChecksBankNoGuesses(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, backends[0], func(c *config.Config) { c.Auth.LockoutDuration = 2 * time.Second })
	const email = "bank@example.com"
	app.register(t, email, "correct horse battery", "")
	h := holdUsers(t, app)
	for round := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		held, finish := h.burst(t, app, ctx, email, 40)
		time.Sleep(2300 * time.Millisecond)
		cancel()
		if codes := finish(); held != 5 || codes[429] != 35 {
			t.Fatalf("round %d: %d of 40 checked, answers %v; want 5 checked, 35 × 429", round+1, held, codes)
		}
	}
	// All 40 are held or answered before any check ends: the five holds,
	// not the failures' window, decide how many are checked.
	held, finish := h.burst(t, app, context.Background(), email, 40)
	codes := finish()
	if failures, _ := signInAudit(t, app); held != 5 || failures != 5 {
		t.Fatalf("a burst of 40 after abandoned rounds had %d checked (answers %v); %d failures audited, want 5 and 5",
			held, codes, failures)
	}
}

// A stolen access token is no way around the lockout: a wrong current
// password counts as a failed login of the account, so the fifth locks it,
// for sign-in and for password changes alike, the right password included.
func TestPasswordChangeCountsTowardLockout(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, backends[0], nil)
	app.register(t, "stolen@example.com", "correct horse battery", "")
	tok := app.login(t, "stolen@example.com", "correct horse battery", "").AccessToken
	change := func(current string) *httpRecorder {
		return app.do(t, req{method: "POST", path: "/v1/auth/password", bearer: tok,
			body: auth.PasswordRequest{CurrentPassword: current, NewPassword: "a brand new passphrase"}})
	}
	for i := range 4 {
		wantStatus(t, change("guess number "+strconv.Itoa(i)), 403, "invalid_current_password")
	}
	wantStatus(t, change("guess number 4"), 423, "account_locked")
	wantStatus(t, change("correct horse battery"), 423, "account_locked")
	wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/login",
		body: auth.LoginRequest{Email: "stolen@example.com", Password: "correct horse battery"}}), 423, "account_locked")
}

type httptestRecorder = httpRecorder

// Sessions: listed with device, IP and times; one revoked by id (another
// user's id is 404); a password change ends every other session.
func TestSessionsAndPassword(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, backends[0], nil)
	app.register(t, "gina@example.com", "correct horse battery", "")
	app.register(t, "hank@example.com", "correct horse battery", "")
	a := app.login(t, "gina@example.com", "correct horse battery", "")
	b := app.login(t, "gina@example.com", "correct horse battery", "")
	c := app.login(t, "gina@example.com", "correct horse battery", "")
	h := app.login(t, "hank@example.com", "correct horse battery", "")

	rec := app.do(t, req{method: "GET", path: "/v1/auth/sessions", bearer: a.AccessToken})
	wantStatus(t, rec, 200, "")
	list := decode[auth.SessionsResponse](t, rec).Sessions
	if len(list) != 3 {
		t.Fatalf("sessions: %+v", list)
	}
	current := 0
	for _, s := range list {
		if s.Device != "gatehouse-test/1.0" || s.IP != "192.0.2.1" || s.CreatedAt.IsZero() || s.LastUsedAt.IsZero() {
			t.Errorf("session %+v lacks device, IP or times", s)
		}
		if s.Current {
			current++
		}
	}
	if current != 1 {
		t.Errorf("%d sessions marked current", current)
	}
	hankSessions := decode[auth.SessionsResponse](t, app.do(t, req{method: "GET", path: "/v1/auth/sessions", bearer: h.AccessToken})).Sessions
	wantStatus(t, app.do(t, req{method: "DELETE", path: "/v1/auth/sessions/" + hankSessions[0].ID, bearer: a.AccessToken}), 404, "not_found")
	wantStatus(t, app.do(t, req{method: "DELETE", path: "/v1/auth/sessions/not-a-uuid", bearer: a.AccessToken}), 404, "not_found")
	wantStatus(t, app.me(t, h.AccessToken), 200, "") // hank's session untouched

	// Revoke b's session from a.
	bMe := decode[auth.MeResponse](t, app.me(t, b.AccessToken))
	wantStatus(t, app.do(t, req{method: "DELETE", path: "/v1/auth/sessions/" + bMe.SessionID, bearer: a.AccessToken}), 204, "")
	wantRejected(t, app.me(t, b.AccessToken))
	wantStatus(t, app.refresh(b.RefreshToken, t), 401, "invalid_refresh_token")

	// Password change: wrong current password refused; then every other session ends.
	pw := func(cur, next string) *httpRecorder {
		return app.do(t, req{method: "POST", path: "/v1/auth/password", bearer: a.AccessToken,
			body: auth.PasswordRequest{CurrentPassword: cur, NewPassword: next}})
	}
	wantStatus(t, pw("wrong one!", "a brand new password"), 403, "invalid_current_password")
	wantStatus(t, pw("correct horse battery", "short"), 400, "validation_failed")
	wantStatus(t, pw("correct horse battery", "a brand new password"), 204, "")
	wantStatus(t, app.me(t, a.AccessToken), 200, "")
	wantRejected(t, app.me(t, c.AccessToken))
	wantStatus(t, app.refresh(c.RefreshToken, t), 401, "invalid_refresh_token")
	wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/login",
		body: auth.LoginRequest{Email: "gina@example.com", Password: "correct horse battery"}}), 401, "invalid_credentials")
	app.login(t, "gina@example.com", "a brand new password", "")

	// logout-all ends everything, in every tenant.
	wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/logout-all", bearer: a.AccessToken}), 204, "")
	wantRejected(t, app.me(t, a.AccessToken))
	rec = app.do(t, req{method: "GET", path: "/v1/auth/sessions", bearer: app.login(t, "gina@example.com", "a brand new password", "").AccessToken})
	if n := len(decode[auth.SessionsResponse](t, rec).Sessions); n != 1 {
		t.Errorf("after logout-all and one login: %d live sessions", n)
	}
}

// switch-tenant gives a pair for another membership, and refuses a tenant
// the caller is not in; login with several memberships needs a tenant.
func TestSwitchTenant(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, backends[0], nil)
	acme := insertTenant(t, app, "acme")
	insertTenant(t, app, "other")
	reg := app.register(t, "ivan@example.com", "correct horse battery", "")
	p := app.login(t, "ivan@example.com", "correct horse battery", "")
	addMembership(t, app, reg.User.ID, acme, "admin")

	sw := func(tenant string) *httpRecorder {
		return app.do(t, req{method: "POST", path: "/v1/auth/switch-tenant", bearer: p.AccessToken,
			body: auth.SwitchTenantRequest{Tenant: tenant, RefreshToken: p.RefreshToken}})
	}
	wantStatus(t, sw("other"), 403, "not_a_member")
	wantStatus(t, sw("nope"), 403, "not_a_member")
	wantStatus(t, sw(""), 400, "validation_failed")
	rec := sw("acme")
	wantStatus(t, rec, 200, "")
	me := decode[auth.MeResponse](t, app.me(t, decode[auth.Pair](t, rec).AccessToken))
	if me.Tenant.Slug != "acme" || strings.Join(me.Roles, ",") != "admin" {
		t.Errorf("after switch: %+v", me)
	}
	// Asked again and again, with the right password: never a lockout.
	for range 8 {
		wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/login",
			body: auth.LoginRequest{Email: "ivan@example.com", Password: "correct horse battery"}}), 400, "tenant_required")
	}
	app.login(t, "ivan@example.com", "correct horse battery", "acme")
}

// A switch-tenant needs the session's current refresh token besides its
// access token: an access token alone (all a script in a cookie-mode page
// can take) must not buy a refresh token that lives for months. The new
// session stays in its sign-in's family: the origin's logout, a reuse of
// its refresh token and its revocation end it too. A switch proven by the
// cookie answers in cookie mode, and logout reads the cookie.
func TestSwitchTenantStaysInItsSignIn(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, backends[0], nil)
	acme := insertTenant(t, app, "acme")
	const pw = "correct horse battery"
	reg := app.register(t, "olga@example.com", pw, "")
	addMembership(t, app, reg.User.ID, acme, "member")
	sw := func(from auth.Pair, refresh string) *httpRecorder {
		return app.do(t, req{method: "POST", path: "/v1/auth/switch-tenant", bearer: from.AccessToken,
			body: auth.SwitchTenantRequest{Tenant: "acme", RefreshToken: refresh}})
	}
	p := app.login(t, "olga@example.com", pw, "default")
	other := app.login(t, "olga@example.com", pw, "default")
	wantStatus(t, sw(p, ""), 400, "validation_failed")
	wantStatus(t, sw(p, "not-a-token"), 401, "invalid_refresh_token")
	wantStatus(t, sw(p, other.RefreshToken), 401, "invalid_refresh_token") // another session's

	// A thief replays the stolen refresh token first, and switches.
	rec := app.refresh(p.RefreshToken, t)
	wantStatus(t, rec, 200, "")
	thief := decode[auth.Pair](t, rec)
	rec = sw(thief, thief.RefreshToken)
	wantStatus(t, rec, 200, "")
	child := decode[auth.Pair](t, rec)
	// The owner's copy comes back: reuse ends the family, the child with it.
	wantStatus(t, app.refresh(p.RefreshToken, t), 401, "refresh_token_reused")
	wantRejected(t, app.me(t, child.AccessToken))
	wantStatus(t, app.refresh(child.RefreshToken, t), 401, "invalid_refresh_token")
	wantStatus(t, app.me(t, other.AccessToken), 200, "") // another sign-in

	// A rotated token is a reuse at switch-tenant too, as at refresh:
	// whoever holds the other copy loses the sign-in.
	reused := func() {
		t.Helper()
		r := app.login(t, "olga@example.com", pw, "default")
		rec := app.refresh(r.RefreshToken, t)
		wantStatus(t, rec, 200, "")
		r2 := decode[auth.Pair](t, rec)
		wantStatus(t, sw(r2, r.RefreshToken), 401, "refresh_token_reused")
		wantRejected(t, app.me(t, r2.AccessToken))
		wantStatus(t, app.refresh(r2.RefreshToken, t), 401, "invalid_refresh_token")
		wantStatus(t, app.me(t, other.AccessToken), 200, "") // another sign-in
	}
	setTenants := func(set string) {
		t.Helper()
		if err := app.db.Conn(context.Background()).Exec("UPDATE tenants SET " + set).Error; err != nil {
			t.Fatal(err)
		}
	}
	reused() // no grace uses: the default
	// Within a grace a refresh may race the switch: no reuse then, but
	// the token is not current either.
	setTenants("refresh_grace_uses = 1")
	g := app.login(t, "olga@example.com", pw, "default")
	rec = app.refresh(g.RefreshToken, t)
	wantStatus(t, rec, 200, "")
	g2 := decode[auth.Pair](t, rec)
	wantStatus(t, sw(g2, g.RefreshToken), 401, "invalid_refresh_token")
	wantStatus(t, app.me(t, g2.AccessToken), 200, "")
	setTenants("refresh_grace_window_ms = 0") // past the grace's window
	reused()
	setTenants("refresh_grace_uses = 0, refresh_grace_window_ms = 10000")

	// Logout from the switched-to session ends the one it came from.
	q := app.login(t, "olga@example.com", pw, "default")
	rec = sw(q, q.RefreshToken)
	wantStatus(t, rec, 200, "")
	wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/logout", bearer: decode[auth.Pair](t, rec).AccessToken}), 204, "")
	wantRejected(t, app.me(t, q.AccessToken))
	wantStatus(t, app.refresh(q.RefreshToken, t), 401, "invalid_refresh_token")

	// Cookie mode: proven by the cookie, the answer stays in cookie mode.
	rec = app.do(t, req{method: "POST", path: "/v1/auth/login",
		body: auth.LoginRequest{Email: "olga@example.com", Password: pw, Tenant: "default", UseCookie: true}})
	wantStatus(t, rec, 200, "")
	page := decode[auth.Pair](t, rec)
	cookie := (&http.Response{Header: rec.Header()}).Cookies()[0]
	rec = app.do(t, req{method: "POST", path: "/v1/auth/switch-tenant", bearer: page.AccessToken, cookies: []*http.Cookie{cookie},
		body: auth.SwitchTenantRequest{Tenant: "acme"}})
	wantStatus(t, rec, 403, "csrf_failed")
	rec = app.do(t, req{method: "POST", path: "/v1/auth/switch-tenant", bearer: page.AccessToken, cookies: []*http.Cookie{cookie},
		body: auth.SwitchTenantRequest{Tenant: "acme"}, header: map[string]string{"X-CSRF-Token": page.CSRFToken}})
	wantStatus(t, rec, 200, "")
	if got := decode[auth.Pair](t, rec); got.RefreshToken != "" || got.CSRFToken == "" {
		t.Fatalf("a switch proven by the cookie answered with %+v, want cookie mode", got)
	}
	// Logout as a browser sends it, with the first tenant's cookie (the
	// old one, as a client that kept it would): that session ends too.
	wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/logout", bearer: other.AccessToken,
		cookies: []*http.Cookie{cookie}}), 204, "")
	rec = app.do(t, req{method: "POST", path: "/v1/auth/refresh", body: "{}", cookies: []*http.Cookie{cookie},
		header: map[string]string{"Content-Type": "application/json", "X-CSRF-Token": page.CSRFToken}})
	wantStatus(t, rec, 401, "invalid_refresh_token")
}

// A session written by the release before families (family_id NULL, as an
// instance of it writes during a rolling upgrade) is a family of its own:
// a switch from it joins it, and a logout ends both.
func TestSessionWithoutAFamily(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			app := newTestApp(t, b, nil)
			acme := insertTenant(t, app, "acme")
			const pw = "correct horse battery"
			reg := app.register(t, "old@example.com", pw, "")
			addMembership(t, app, reg.User.ID, acme, "member")
			p := app.login(t, "old@example.com", pw, "default")
			other := app.login(t, "old@example.com", pw, "default")
			if err := app.db.Conn(context.Background()).Exec("UPDATE sessions SET family_id = NULL").Error; err != nil {
				t.Fatal(err)
			}
			rec := app.do(t, req{method: "POST", path: "/v1/auth/switch-tenant", bearer: p.AccessToken,
				body: auth.SwitchTenantRequest{Tenant: "acme", RefreshToken: p.RefreshToken}})
			wantStatus(t, rec, 200, "")
			child := decode[auth.Pair](t, rec)
			wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/logout", bearer: child.AccessToken}), 204, "")
			wantStatus(t, app.refresh(p.RefreshToken, t), 401, "invalid_refresh_token")
			wantStatus(t, app.refresh(other.RefreshToken, t), 200, "") // a family of its own
		})
	}
}

// A sign-in or a switch that was under way while the password changed
// ends with the password change, not after it: each checks again, as it
// writes its session, what it rested on (the password hash it compared,
// the session it came from), and the change reads again after revoking.
func TestSessionsOpenedDuringAPasswordChangeEnd(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			app := startApp(t, testConfig(t, b))
			const oldPW, newPW = "correct horse battery", "a brand new password"
			email := "dave" + strings.ReplaceAll(b.name, "+", "") + "@example.com"
			app.register(t, email, oldPW, "")
			owner := app.login(t, email, oldPW, "")
			var stolen auth.Pair // a second device's session
			hold := holdQueries(t, app, "memberships")
			for _, step := range []struct {
				name string
				send func() *httpRecorder
			}{
				{"login with the old password", func() *httpRecorder {
					return app.do(t, req{method: "POST", path: "/v1/auth/login", body: auth.LoginRequest{Email: email, Password: oldPW}})
				}},
				{"switch-tenant from a session the change ends", func() *httpRecorder {
					return app.do(t, req{method: "POST", path: "/v1/auth/switch-tenant", bearer: stolen.AccessToken,
						body: auth.SwitchTenantRequest{Tenant: "default", RefreshToken: stolen.RefreshToken}})
				}},
			} {
				stolen = app.login(t, email, oldPW, "")
				// Held past its checks, before its session is written.
				rec := hold.during(step.send, func() {
					wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/password", bearer: owner.AccessToken,
						body: auth.PasswordRequest{CurrentPassword: oldPW, NewPassword: newPW}}), 204, "")
				})
				if rec.Code == 200 {
					p := decode[auth.Pair](t, rec)
					if r := app.refresh(p.RefreshToken, t); r.Code == 200 {
						t.Errorf("%s: its session outlives the password change: refresh %d", step.name, r.Code)
					}
					if app.me(t, p.AccessToken).Code == 200 {
						t.Errorf("%s: its access token outlives the password change", step.name)
					}
				}
				// Back to the old password for the next step.
				wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/password", bearer: owner.AccessToken,
					body: auth.PasswordRequest{CurrentPassword: newPW, NewPassword: oldPW}}), 204, "")
			}
		})
	}
}

// After auth.bcrypt_cost is raised, an account hashed at the old cost is
// hashed again at its next sign-in; until then a wrong password for it is
// refused no sooner than an unknown email, which would otherwise tell that
// the account exists (the check is padded to a check at the new cost).
func TestBcryptCostRaised(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[0])
	const pw = "correct horse battery"
	before := startApp(t, cfg) // config.MinBcryptCost
	before.register(t, "frank@example.com", pw, "")
	before.register(t, "grace@example.com", pw, "")
	cfg.Auth.BcryptCost = config.MinBcryptCost + 2 // four times the work
	app := startApp(t, cfg)
	n := 0
	fastest := func(email string) time.Duration {
		best := time.Hour
		for range 3 {
			try := email
			if try == "" { // a new unknown email each time
				n++
				try = "nobody" + strconv.Itoa(n) + "@example.com"
			}
			start := time.Now()
			wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/login",
				body: auth.LoginRequest{Email: try, Password: "wrong password guess"}}), 401, "invalid_credentials")
			best = min(best, time.Since(start))
		}
		return best
	}
	unknown := fastest("")
	if known := fastest("frank@example.com"); known*2 < unknown {
		t.Errorf("a wrong password for an account hashed at the old cost is refused in %v, an unknown email in %v", known, unknown)
	}
	cost := func(email string) int {
		var hash string
		if err := app.db.Conn(context.Background()).Raw("SELECT password_hash FROM users WHERE email = ?", email).Row().Scan(&hash); err != nil {
			t.Fatal(err)
		}
		c, err := bcrypt.Cost([]byte(hash))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	app.login(t, "grace@example.com", pw, "")
	if got := cost("grace@example.com"); got != cfg.Auth.BcryptCost {
		t.Errorf("after a sign-in the hash's cost is %d, want %d", got, cfg.Auth.BcryptCost)
	}
	if got := cost("frank@example.com"); got != config.MinBcryptCost {
		t.Errorf("a failed sign-in changed the hash: cost %d", got)
	}
	app.login(t, "grace@example.com", pw, "") // the new hash checks
}

// Two sign-ins of one account overlapping after a cost raise both check
// the old hash; the first makes the new one, and the second, finding the
// hash changed, checks the new one and goes on: a right password is never
// refused, nor counted toward the lockout.
func TestOverlappingSignInsAfterACostRaise(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[0])
	const pw = "correct horse battery"
	startApp(t, cfg).register(t, "henry@example.com", pw, "")
	cfg.Auth.BcryptCost = config.MinBcryptCost + 1
	app := startApp(t, cfg)
	// The first sign-in is held once it has checked the old hash, while
	// the second rehashes it.
	rec := holdQueries(t, app, "memberships").during(func() *httpRecorder {
		return app.do(t, req{method: "POST", path: "/v1/auth/login", body: auth.LoginRequest{Email: "henry@example.com", Password: pw}})
	}, func() { app.login(t, "henry@example.com", pw, "") })
	wantStatus(t, rec, 200, "")
}

// RFC 7662 introspection, for a configured service client only.
func TestIntrospect(t *testing.T) {
	t.Parallel()
	sum := sha256.Sum256([]byte("s3rvice-secret"))
	cfg := testConfig(t, backends[0])
	cfg.Auth.IntrospectClients = []string{"orders:" + hex.EncodeToString(sum[:])}
	store := &getFails{prefix: "rbac:version"}
	app := startAppOn(t, cfg, func(s kv.Store) kv.Store { store.Store = s; return store })
	app.register(t, "judy@example.com", "correct horse battery", "")
	p := app.login(t, "judy@example.com", "correct horse battery", "")
	intro := func(user, pass, tok string) *httpRecorder {
		r := req{method: "POST", path: "/v1/oauth/introspect", body: url.Values{"token": {tok}}.Encode(),
			header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}
		if user != "" {
			r.header["Authorization"] = "Basic " + basic(user, pass)
		}
		return app.do(t, r)
	}
	rec := intro("orders", "s3rvice-secret", p.AccessToken)
	wantStatus(t, rec, 200, "")
	got := decode[auth.IntrospectResponse](t, rec)
	if !got.Active || got.Sub == "" || got.TenantID == "" || got.SessionID == "" || got.JTI == "" || got.Exp == 0 || got.TokenType != "Bearer" {
		t.Errorf("active token: %+v", got)
	}
	for name, rec := range map[string]*httpRecorder{
		"no credentials": intro("", "", p.AccessToken),
		"wrong secret":   intro("orders", "guess", p.AccessToken),
		"unknown client": intro("billing", "s3rvice-secret", p.AccessToken),
	} {
		t.Run(name, func(t *testing.T) {
			wantStatus(t, rec, 401, "invalid_client")
			if rec.Header().Get("WWW-Authenticate") != `Basic realm="gatehouse"` {
				t.Errorf("WWW-Authenticate %q", rec.Header().Get("WWW-Authenticate"))
			}
		})
	}
	inactive := func(tok string) {
		t.Helper()
		rec := intro("orders", "s3rvice-secret", tok)
		wantStatus(t, rec, 200, "")
		if strings.TrimSpace(rec.Body.String()) != `{"active":false}` {
			t.Errorf("inactive token answered %s", rec.Body)
		}
	}
	inactive("garbage")
	inactive(p.RefreshToken)
	// A store that cannot answer makes an active token read as inactive,
	// and says why in the log only.
	store.armed.Store(true)
	inactive(p.AccessToken)
	store.armed.Store(false)
	if !strings.Contains(app.logs.String(), "introspection answered inactive") || !strings.Contains(app.logs.String(), "store down") {
		t.Errorf("the failed introspection was not logged with its cause:\n%s", app.logs)
	}
	// A suspended tenant's tokens are refused on every request, and are
	// inactive here too, but a super admin's, as there; resumed, they are
	// active again.
	root := app.register(t, "root@example.com", "correct horse battery", "")
	if err := app.rbac.Service().SetSuperAdmin(context.Background(), root.User.ID, true); err != nil {
		t.Fatal(err)
	}
	rootTok := app.login(t, "root@example.com", "correct horse battery", "").AccessToken
	status := func(s string) {
		t.Helper()
		wantStatus(t, app.do(t, req{method: "PATCH", path: "/v1/tenants/" + got.TenantID, bearer: rootTok,
			body: tenant.UpdateTenantRequest{Status: &s}}), 200, "")
	}
	status(tenant.StatusSuspended)
	wantStatus(t, app.me(t, p.AccessToken), 403, "tenant_suspended")
	inactive(p.AccessToken)
	if rec := intro("orders", "s3rvice-secret", rootTok); !decode[auth.IntrospectResponse](t, rec).Active {
		t.Fatalf("a super admin's token in the suspended tenant: %s", rec.Body)
	}
	status(tenant.StatusActive)
	if rec := intro("orders", "s3rvice-secret", p.AccessToken); !decode[auth.IntrospectResponse](t, rec).Active {
		t.Fatalf("after resumption: %s", rec.Body)
	}
	wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/logout", bearer: p.AccessToken}), 204, "")
	inactive(p.AccessToken)
	wantStatus(t, app.do(t, req{method: "POST", path: "/v1/oauth/introspect", body: `{"token":"x"}`,
		header: map[string]string{"Authorization": "Basic " + basic("orders", "s3rvice-secret")}}), 415, "unsupported_media_type")
}

// Cookie mode: the refresh token travels in an HttpOnly, SameSite=Strict
// cookie scoped to /v1/auth, and reading it needs its CSRF token, which is
// bound to it: a cookie planted beside it by a sibling subdomain (sent
// first) is never taken with the victim's token.
func TestCookieMode(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, backends[0], func(c *config.Config) { c.Auth.CookieSecure = true })
	app.register(t, "kim@example.com", "correct horse battery", "")
	rec := app.do(t, req{method: "POST", path: "/v1/auth/login",
		body: auth.LoginRequest{Email: "kim@example.com", Password: "correct horse battery", UseCookie: true}})
	wantStatus(t, rec, 200, "")
	p := decode[auth.Pair](t, rec)
	if p.RefreshToken != "" || p.CSRFToken == "" || p.AccessToken == "" {
		t.Fatalf("cookie-mode body: %+v", p)
	}
	cookies := (&http.Response{Header: rec.Header()}).Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies set: %v, want the refresh cookie alone", cookies)
	}
	refresh := cookies[0]
	if refresh.Name != "gatehouse_refresh" || !refresh.HttpOnly || !refresh.Secure || refresh.SameSite != http.SameSiteStrictMode ||
		refresh.Path != "/v1/auth" || refresh.MaxAge < 1000 || strings.Contains(p.CSRFToken, refresh.Value) {
		t.Fatalf("refresh cookie: %+v", refresh)
	}
	// Another account's cookie, planted for the refresh path, comes first.
	app.register(t, "mallory@example.com", "correct horse battery", "")
	rec = app.do(t, req{method: "POST", path: "/v1/auth/login",
		body: auth.LoginRequest{Email: "mallory@example.com", Password: "correct horse battery", UseCookie: true}})
	wantStatus(t, rec, 200, "")
	planted := (&http.Response{Header: rec.Header()}).Cookies()[0]
	// Five planted: still none is taken for the user's, nor hides it.
	cookies = []*http.Cookie{planted}
	for _, v := range []string{"a", "b", "c", "d"} {
		cookies = append(cookies, &http.Cookie{Name: "gatehouse_refresh", Value: v})
	}
	cookies = append(cookies, refresh)
	viaCookie := func(header string) *httpRecorder {
		r := req{method: "POST", path: "/v1/auth/refresh", body: "{}", cookies: cookies,
			header: map[string]string{"Content-Type": "application/json"}}
		if header != "" {
			r.header["X-CSRF-Token"] = header
		}
		return app.do(t, r)
	}
	wantStatus(t, viaCookie(""), 403, "csrf_failed")
	wantStatus(t, viaCookie("forged"), 403, "csrf_failed")
	rec = viaCookie(p.CSRFToken)
	wantStatus(t, rec, 200, "")
	next := decode[auth.Pair](t, rec)
	if next.RefreshToken != "" || next.CSRFToken == "" || next.CSRFToken == p.CSRFToken {
		t.Errorf("refresh in cookie mode: %+v", next)
	}
	if me := decode[auth.MeResponse](t, app.me(t, next.AccessToken)); me.User.Email != "kim@example.com" {
		t.Fatalf("the victim's CSRF token refreshed %s's cookie", me.User.Email)
	}
	if !strings.Contains(strings.Join(rec.Header().Values("Set-Cookie"), ";"), "gatehouse_refresh=") {
		t.Error("refresh did not set the new cookie")
	}
	// The old cookie's token is now rotated: reuse.
	wantStatus(t, viaCookie(p.CSRFToken), 401, "refresh_token_reused")
	wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/refresh", body: "{}"}), 400, "validation_failed")
}

// A whole exchange, logged at debug level: no password and no token may
// appear anywhere in the log.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, backends[0], nil)
	const pw = "Sup3r-Secret-Passw0rd"
	app.register(t, "leak@example.com", pw, "")
	app.do(t, req{method: "POST", path: "/v1/auth/login", body: auth.LoginRequest{Email: "leak@example.com", Password: "Wr0ng-Secret-Guess"}})
	p := app.login(t, "leak@example.com", pw, "")
	next := decode[auth.Pair](t, app.refresh(p.RefreshToken, t))
	app.refresh(p.RefreshToken, t) // reuse
	app.me(t, next.AccessToken)
	app.do(t, req{method: "GET", path: "/v1/auth/me?access_token=" + next.AccessToken})
	app.do(t, req{method: "POST", path: "/v1/auth/password", bearer: next.AccessToken,
		body: auth.PasswordRequest{CurrentPassword: pw, NewPassword: "An0ther-Secret-Pw"}})
	logs := app.logs.String()
	if strings.Count(logs, `"msg":"request"`) < 8 {
		t.Fatalf("the exchange was not logged:\n%s", logs)
	}
	if actions := strings.Join(auditActions(t, app), " "); !strings.Contains(actions, "auth.refresh_token_reused") {
		t.Errorf("the reuse was not audited: %s", actions)
	}
	for _, secret := range []string{pw, "Wr0ng-Secret-Guess", "An0ther-Secret-Pw", p.AccessToken, p.RefreshToken,
		next.AccessToken, next.RefreshToken, "$2a$"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log contains a secret (%.12s…)", secret)
		}
	}
	if strings.Contains(logs, "leak@example.com") && !strings.Contains(logs, "l***@example.com") {
		t.Error("the failed login's email is not masked")
	}
}

// With auth.bcrypt_process (the default outside tests) bcrypt runs in
// helper processes of this binary: sign-ups and logins work through them,
// a helper that dies is replaced, and Close stops them.
func TestBcryptHelperProcess(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[0])
	cfg.Auth.BcryptProcess = true
	if runtime.GOOS != "linux" {
		t.Skip("finds the helpers through /proc")
	}
	app := startApp(t, cfg)
	h := helperPIDs
	app.register(t, "helper@example.com", "correct horse battery", "")
	app.login(t, "helper@example.com", "correct horse battery", "")
	wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/login",
		body: auth.LoginRequest{Email: "helper@example.com", Password: "wrong horse battery"}}), 401, "invalid_credentials")
	pids := h()
	if len(pids) == 0 {
		t.Fatal("no bcrypt helper process is running")
	}
	for _, pid := range pids {
		if nice := procNice(t, pid); nice != 19 {
			t.Errorf("helper %d runs at nice %d, want 19", pid, nice)
		}
		if p, err := os.FindProcess(pid); err == nil {
			p.Kill()
		}
	}
	// The dead helper fails its next request; a fresh one takes over.
	app.login(t, "helper@example.com", "correct horse battery", "")
	app.login(t, "helper@example.com", "correct horse battery", "")
	after := h()
	if len(after) == 0 || slices.Equal(after, pids) {
		t.Fatalf("helpers before %v, after %v: want a fresh one", pids, after)
	}
	app.auth.Service().Close()
	for _, pid := range after {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("helper %d still runs after Close", pid)
		}
	}
}

// helperPIDs lists this process's children running bcrypt-worker.
func helperPIDs() []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !strings.HasSuffix(string(cmdline), "\x00bcrypt-worker\x00") {
			continue
		}
		if fields := procStat(pid); len(fields) > 1 && fields[1] == strconv.Itoa(os.Getpid()) {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// procStat returns the fields of /proc/PID/stat after the command name:
// state, ppid, ...
func procStat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

// procNice is the nice value of the process's main thread (field 19).
func procNice(t *testing.T, pid int) int {
	t.Helper()
	f := procStat(pid)
	if len(f) < 17 {
		t.Fatalf("cannot read /proc/%d/stat", pid)
	}
	n, _ := strconv.Atoi(f[16])
	return n
}
