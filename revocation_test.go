package main

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"gorm.io/gorm"

	"gatehouse/modules/tenant"
	"gatehouse/platform/kv"
	"gatehouse/platform/testenv"
	"gatehouse/platform/token"
)

// Acceptance (issue 8): on the Redis stack every instance answers the
// revocation denylist, the permissions version and tenant suspension from
// its in-process copies (kv.Mirror), and the verified-token cache skips the
// signature check. None of that may outlive a revocation: with two
// instances sharing PostgreSQL and Redis, each revocation made through one
// is refused by the other on its very next request, although the other had
// just answered the same caller from its copies.
func TestCachedStateRevokedAcrossInstances(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[1])
	a := startApp(t, cfg)
	w := newWorldOn(t, a)
	b := startApp(t, cfg)
	if b.mirror == nil || !b.mirror.Live() {
		t.Fatal("the Redis stack runs without its live Mirror")
	}
	const pw = "correct horse battery"
	// warm has b answer the token twice: the second answer comes from
	// b's copies and its verified-token cache.
	warm := func(t *testing.T, tok string) {
		t.Helper()
		for range 2 {
			wantStatus(t, b.me(t, tok), 200, "")
		}
	}
	ctx := context.Background()

	t.Run("logout", func(t *testing.T) {
		for range 5 {
			tok := b.login(t, "member@acme.test", pw, "acme").AccessToken
			warm(t, tok)
			wantStatus(t, a.do(t, req{method: "POST", path: "/v1/auth/logout", bearer: tok}), 204, "")
			wantRejected(t, b.me(t, tok))
		}
	})

	t.Run("one session revoked", func(t *testing.T) {
		doomed := a.login(t, "member@acme.test", pw, "acme").AccessToken
		keeper := a.login(t, "member@acme.test", pw, "acme").AccessToken
		warm(t, doomed)
		wantStatus(t, a.do(t, req{method: "DELETE", path: "/v1/auth/sessions/" + claims(t, doomed).SessionID, bearer: keeper}), 204, "")
		wantRejected(t, b.me(t, doomed))
		wantStatus(t, b.me(t, keeper), 200, "")
	})

	t.Run("logout everywhere", func(t *testing.T) {
		one := a.login(t, "member@acme.test", pw, "acme").AccessToken
		two := a.login(t, "member@acme.test", pw, "acme").AccessToken
		warm(t, one)
		warm(t, two)
		wantStatus(t, a.do(t, req{method: "POST", path: "/v1/auth/logout-all", bearer: one}), 204, "")
		wantRejected(t, b.me(t, two))
		wantRejected(t, b.me(t, one))
	})

	t.Run("password changed", func(t *testing.T) {
		a.register(t, "changer@acme.test", pw, "acme")
		here := a.login(t, "changer@acme.test", pw, "acme").AccessToken
		there := b.login(t, "changer@acme.test", pw, "acme").AccessToken
		warm(t, there)
		wantStatus(t, a.do(t, req{method: "POST", path: "/v1/auth/password", bearer: here,
			body: map[string]string{"current_password": pw, "new_password": "another correct horse"}}), 204, "")
		wantRejected(t, b.me(t, there))
	})

	t.Run("super admin removed", func(t *testing.T) {
		path := "/v1/tenants/" + w.globex + "/members"
		asSuper := req{method: "GET", path: path, bearer: w.super.token, header: map[string]string{"X-Tenant-ID": w.globex}}
		for range 2 {
			wantStatus(t, b.do(t, asSuper), 200, "")
		}
		if err := a.rbac.Service().SetSuperAdmin(ctx, w.super.id, false); err != nil {
			t.Fatal(err)
		}
		if rec := b.do(t, asSuper); rec.Code == 200 {
			t.Fatalf("b still lets the former super admin act in another tenant: %d", rec.Code)
		}
	})

	t.Run("tenant suspended and resumed", func(t *testing.T) {
		status := func(s string) tenant.UpdateTenantRequest { return tenant.UpdateTenantRequest{Status: &s} }
		super := a.register(t, "root2@platform.test", pw, "globex")
		if err := a.rbac.Service().SetSuperAdmin(ctx, super.User.ID, true); err != nil {
			t.Fatal(err)
		}
		superTok := a.login(t, "root2@platform.test", pw, "globex").AccessToken
		for range 3 {
			warm(t, w.manager.token)
			wantStatus(t, a.do(t, req{method: "PATCH", path: "/v1/tenants/" + w.acme, bearer: superTok, body: status("suspended")}), 200, "")
			wantStatus(t, b.me(t, w.manager.token), 403, "tenant_suspended")
			wantStatus(t, b.me(t, w.manager.token), 403, "tenant_suspended")
			wantStatus(t, a.do(t, req{method: "PATCH", path: "/v1/tenants/" + w.acme, bearer: superTok, body: status("active")}), 200, "")
		}
		wantStatus(t, b.me(t, w.manager.token), 200, "")
	})

	t.Run("membership suspended", func(t *testing.T) {
		reg := a.register(t, "suspended@acme.test", pw, "acme")
		tok := a.login(t, "suspended@acme.test", pw, "acme").AccessToken
		warm(t, tok)
		path := "/v1/tenants/" + w.acme + "/members/" + reg.User.ID
		wantStatus(t, a.do(t, req{method: "PATCH", path: path, bearer: w.admin.token, body: map[string]string{"status": "suspended"}}), 200, "")
		if rec := b.me(t, tok); rec.Code == 200 {
			t.Fatalf("b still serves a suspended member: %d", rec.Code)
		}
	})
}

// loggedOut registers email, signs in and logs out, and returns the
// access token of the ended session and its claims.
func loggedOut(t *testing.T, app testApp, email string) (string, *token.Claims) {
	t.Helper()
	app.register(t, email, "correct horse battery", "")
	tok := app.login(t, email, "correct horse battery", "").AccessToken
	wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/logout", bearer: tok}), 204, "")
	return tok, claims(t, tok)
}

// claims reads a token's claims without verifying it.
func claims(t *testing.T, tok string) *token.Claims {
	t.Helper()
	c := &token.Claims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok, c); err != nil {
		t.Fatal(err)
	}
	return c
}

// refusedWithin polls app with tok until it is refused, failing the test
// if that takes longer than limit.
func refusedWithin(t *testing.T, app testApp, tok string, limit time.Duration, after string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for app.me(t, tok).Code != 401 {
		if time.Now().After(deadline) {
			t.Fatalf("the revoked token still passes %s after %s", limit, after)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// revokedAgo moves the revocation of session sid back by d in the database.
func revokedAgo(t *testing.T, app testApp, sid string, d time.Duration) {
	t.Helper()
	if err := app.db.Conn(context.Background()).Exec("UPDATE sessions SET revoked_at = ? WHERE id = ?",
		time.Now().Add(-d).UTC(), sid).Error; err != nil {
		t.Fatal(err)
	}
}

// The hot path on the Redis stack: once an authenticated caller's state is
// in the Mirror and the caches, a request costs Redis exactly one script,
// deciding both its rate limits (api-user, then api-tenant), and nothing
// for revocation, permissions or tenant status.
func TestAuthenticatedRequestRedisCommands(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[1])
	cfg.Metrics.Token = metricsToken
	a := startApp(t, cfg)
	a.register(t, "counted@example.com", "correct horse battery", "")
	tok := a.login(t, "counted@example.com", "correct horse battery", "").AccessToken
	for range 2 {
		wantStatus(t, a.do(t, req{method: "GET", path: "/v1/permissions/mine", bearer: tok}), 200, "")
	}
	// Counted by gatehouse_redis_operations_total, whose hook every client
	// the app makes carries (the rate limiter's is a clone).
	ops := func() map[string]float64 {
		out := map[string]float64{}
		for k, v := range scrape(t, a) {
			if strings.HasPrefix(k, "gatehouse_redis_operations_total{") {
				out[k] = v
			}
		}
		return out
	}
	before := ops()
	const n = 50
	for range n {
		wantStatus(t, a.do(t, req{method: "GET", path: "/v1/permissions/mine", bearer: tok}), 200, "")
	}
	sent := map[string]float64{}
	for k, v := range ops() {
		if d := v - before[k]; d != 0 {
			sent[k] = d
		}
	}
	if want := `gatehouse_redis_operations_total{op="evalsha",result="ok"}`; sent[want] != n || len(sent) != 1 {
		t.Fatalf("%d requests sent %v; want exactly %d evalsha", n, sent, n)
	}
}

// A key-value store that lost the denylist (Redis restarted without
// persistence, or the in-process store of a restarted server) must not let
// revoked sessions' tokens back in: the denylist is rebuilt from the
// database before any token is trusted. On Redis a fresh instance, with no
// in-process copies, checks it.
func TestDenylistSurvivesALostStore(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t, b)
			app := startApp(t, cfg)
			app.register(t, "lost@example.com", "correct horse battery", "")
			revoked := app.login(t, "lost@example.com", "correct horse battery", "").AccessToken
			kept := app.login(t, "lost@example.com", "correct horse battery", "").AccessToken
			wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/logout", bearer: revoked}), 204, "")
			wantRejected(t, app.me(t, revoked))
			// The store loses every denylist key.
			if err := app.kv.Delete(context.Background(), "deny:sid:"+claims(t, revoked).SessionID,
				"deny:jti:"+claims(t, revoked).ID, "deny:epoch"); err != nil {
				t.Fatal(err)
			}
			check := app
			if b.redisURL != nil {
				check = startApp(t, cfg)
			}
			wantRejected(t, check.me(t, revoked))
			wantStatus(t, check.me(t, kept), 200, "")
		})
	}
}

// The request that begins a denylist rebuild may be given up by its
// client; the rebuild still finishes, for the requests waiting on it.
func TestDenylistRebuildOutlivesItsRequest(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			app := newTestApp(t, b, nil)
			app.register(t, "gave-up@example.com", "correct horse battery", "")
			revoked := app.login(t, "gave-up@example.com", "correct horse battery", "").AccessToken
			kept := app.login(t, "gave-up@example.com", "correct horse battery", "").AccessToken
			wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/logout", bearer: revoked}), 204, "")
			ctx := context.Background()
			sid := "deny:sid:" + claims(t, revoked).SessionID
			if err := app.kv.Delete(ctx, sid, "deny:jti:"+claims(t, revoked).ID, "deny:epoch"); err != nil {
				t.Fatal(err)
			}
			gone, cancel := context.WithCancel(ctx)
			holdQueries(t, app, "sessions").during(func() *httpRecorder {
				return app.do(t, req{method: "GET", path: "/v1/auth/me", bearer: kept, ctx: gone})
			}, cancel)
			for _, key := range []string{"deny:epoch", sid} {
				if _, err := app.kv.Get(ctx, key); err != nil {
					t.Errorf("%s after the rebuild's request was given up: %v", key, err)
				}
			}
			wantRejected(t, app.me(t, revoked))
		})
	}
}

// stallSessions makes the sessions table's queries wait, while armed, for
// release or for their context to end, as a stalled database that honours
// a query's context does (pgx); released, they fail. It counts them.
func stallSessions(t *testing.T, app testApp) (armed *atomic.Bool, ran *atomic.Int64, release chan struct{}) {
	armed, ran, release = new(atomic.Bool), new(atomic.Int64), make(chan struct{})
	if err := app.db.Conn(context.Background()).Callback().Query().Before("gorm:query").Register("test:stall-sessions", func(tx *gorm.DB) {
		if tx.Statement.Table == "sessions" && armed.Load() {
			ran.Add(1)
			select {
			case <-tx.Statement.Context.Done():
				tx.AddError(tx.Statement.Context.Err())
			case <-release:
				tx.AddError(errors.New("injected: the database went away"))
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	return armed, ran, release
}

// Shutting down does not wait for a denylist rebuild stalled on the
// database, neither the re-assertion loop's nor a request's (review: a
// rebuild detached from its caller held Close for up to a minute, and the
// audit queue was drained only after it).
func TestCloseDoesNotWaitForAStalledRebuild(t *testing.T) {
	t.Parallel()
	for _, byRequest := range []bool{false, true} {
		app := newTestApp(t, backends[1], nil)
		app.register(t, "stall@example.com", "correct horse battery", "")
		tok := app.login(t, "stall@example.com", "correct horse battery", "").AccessToken
		armed, ran, release := stallSessions(t, app)
		armed.Store(true)
		if err := app.kv.Delete(context.Background(), "deny:epoch"); err != nil {
			t.Fatal(err)
		}
		answered := make(chan struct{})
		if byRequest {
			go func() { app.me(t, tok); close(answered) }()
		}
		// Without a request, the loop's next pass finds the marker gone.
		for deadline := time.Now().Add(15 * time.Second); ran.Load() == 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("no rebuild began")
			}
		}
		start := time.Now()
		if err := app.Close(); err != nil {
			t.Logf("Close: %v", err)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("rebuild by a request %v: Close waited %s for a rebuild stalled on the database", byRequest, took.Round(time.Millisecond))
		}
		if byRequest {
			select {
			case <-answered:
			case <-time.After(3 * time.Second):
				t.Errorf("a request's rebuild stalled on the database went on after Close")
			}
		}
		close(release)
	}
}

// epochReads counts the reads of deny:epoch.
type epochReads struct {
	kv.Store
	n atomic.Int64
}

func (s *epochReads) Get(ctx context.Context, key string) ([]byte, error) {
	if key == "deny:epoch" {
		s.n.Add(1)
	}
	return s.Store.Get(ctx, key)
}

// Requests waiting for a denylist rebuild that fails take its error; they
// do not each try again in turn, which would hold the last one for the sum
// of their tries. The next request tries again.
func TestWaitersShareAFailedRebuild(t *testing.T) {
	t.Parallel()
	reads := &epochReads{}
	app := startAppOn(t, testConfig(t, backends[0]), func(s kv.Store) kv.Store { reads.Store = s; return reads })
	app.register(t, "waiters@example.com", "correct horse battery", "")
	tok := app.login(t, "waiters@example.com", "correct horse battery", "").AccessToken
	armed, ran, release := stallSessions(t, app)
	armed.Store(true)
	if err := app.kv.Delete(context.Background(), "deny:epoch"); err != nil {
		t.Fatal(err)
	}
	codes := make(chan int, 3)
	go func() { codes <- app.me(t, tok).Code }()
	for ran.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// The other two find the marker missing, then wait for the first's
	// rebuild.
	before := reads.n.Load()
	for range 2 {
		go func() { codes <- app.me(t, tok).Code }()
	}
	for reads.n.Load() < before+2 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	for range 3 {
		if code := <-codes; code == 200 {
			t.Error("a request passed while the denylist could not be rebuilt")
		}
	}
	if n := ran.Load(); n != 1 {
		t.Errorf("the rebuild was tried %d times by three requests that waited together, want once", n)
	}
	armed.Store(false)
	wantStatus(t, app.me(t, tok), 200, "")
}

// A store that loses only its latest writes keeps deny:epoch, so the
// denylist is not rebuilt: a Redis replica promoted before it had them, or
// a Redis restarted from an AOF fsynced every second. On Redis every
// instance re-asserts the last minute's denials every few seconds, so a
// revoked token that passes again after such a loss is refused again
// within that period, even by an instance that never saw the revocation.
func TestDenialsLostWithTheLatestWritesComeBack(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[1])
	a := startApp(t, cfg)
	tok, c := loggedOut(t, a, "failover@example.com")
	// The loss: the session's and the token's denials, not the epoch.
	ctx := context.Background()
	if err := a.kv.(*kv.Redis).Client().Del(ctx, cfg.Redis.Prefix+"deny:sid:"+c.SessionID, cfg.Redis.Prefix+"deny:jti:"+c.ID).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.kv.Get(ctx, "deny:epoch"); err != nil {
		t.Fatalf("deny:epoch: %v", err)
	}
	b := startApp(t, cfg) // no copies of its own: it reads Redis
	refusedWithin(t, b, tok, 3*reassertEvery, "its denial was lost")
}

// A Redis restarted from a snapshot minutes old keeps deny:epoch and loses
// the denials written since, older ones than the minute re-asserted every
// few seconds among them. Every instance re-asserts every denial still
// needed once a minute (and on its first pass), so a session revoked two
// minutes before the loss is refused again within that, even by an
// instance that never saw the revocation.
func TestOlderDenialsLostComeBack(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[1])
	a := startApp(t, cfg)
	tok, c := loggedOut(t, a, "snapshot@example.com")
	revokedAgo(t, a, c.SessionID, 2*time.Minute)
	ctx := context.Background()
	if err := a.kv.(*kv.Redis).Client().Del(ctx, cfg.Redis.Prefix+"deny:sid:"+c.SessionID, cfg.Redis.Prefix+"deny:jti:"+c.ID).Err(); err != nil {
		t.Fatal(err)
	}
	b := startApp(t, cfg) // no copies of its own: it reads Redis
	refusedWithin(t, b, tok, (reassertAllEvery+3)*reassertEvery, "its denial was lost")
}

// A full pass must scale with revocations: 50,000 sessions revoked two
// minutes ago (a mass sign-out) whose denials the store lost all come back
// in the first pass of an instance that starts, not only those a period's
// time allowed. Written one round trip and one message each, as they were,
// they took about 7 s here, over the pass's 5 s, and the same ones were cut
// off again every minute.
func TestManyLostDenialsComeBackInOnePass(t *testing.T) {
	t.Parallel()
	const n = 50000
	cfg := testConfig(t, backends[1])
	a := startApp(t, cfg)
	tok, c := loggedOut(t, a, "mass@example.com")
	// The sessions, revoked in the database with no denial written: lost.
	if err := a.db.Conn(context.Background()).Exec(`INSERT INTO sessions
		(id, user_id, tenant_id, created_at, last_used_at, expires_at, revoked_at, revoked_reason)
		SELECT gen_random_uuid(), user_id, tenant_id, created_at, created_at, expires_at, now() - interval '2 minutes', 'logout_all'
		FROM sessions, generate_series(1, ?) WHERE id = ?`, n, c.SessionID).Error; err != nil {
		t.Fatal(err)
	}
	revokedAgo(t, a, c.SessionID, 2*time.Minute)
	client := a.kv.(*kv.Redis).Client()
	if err := client.Del(context.Background(), cfg.Redis.Prefix+"deny:sid:"+c.SessionID, cfg.Redis.Prefix+"deny:jti:"+c.ID).Err(); err != nil {
		t.Fatal(err)
	}
	b := startApp(t, cfg)
	deadline := time.Now().Add(3 * reassertEvery)
	refusedWithin(t, b, tok, time.Until(deadline), "its denial was lost")
	for {
		denials := 0
		iter := client.Scan(context.Background(), 0, cfg.Redis.Prefix+"deny:sid:*", 1000).Iterator()
		for iter.Next(context.Background()) {
			denials++
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		if denials == n+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d denials in Redis %s after the instance started; want %d", denials, 3*reassertEvery, n+1)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if logs := b.logs.String(); strings.Contains(logs, "could not be re-asserted") {
		t.Fatalf("a pass failed:\n%s", logs)
	}
}

// A Redis flushed while every instance stays subscribed (FLUSHALL) sends
// no message, so an instance's copy of deny:epoch could keep the lost
// denylist trusted for up to the Mirror's 30 s, and a session revoked
// before the last minute (which the re-assertion writes again) would pass
// on an instance that held no copy of its denial. Every instance also reads
// the marker from Redis itself every few seconds, and rebuilds the whole
// denylist when it is gone.
func TestDenylistRebuiltAfterAFlush(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[1])
	a, b := startApp(t, cfg), startApp(t, cfg)
	a.register(t, "flushed@example.com", "correct horse battery", "")
	revoked := a.login(t, "flushed@example.com", "correct horse battery", "").AccessToken
	kept := a.login(t, "flushed@example.com", "correct horse battery", "").AccessToken
	wantStatus(t, a.me(t, kept), 200, "") // the first check writes the marker
	wantStatus(t, b.me(t, kept), 200, "") // b keeps a copy of it
	wantStatus(t, a.do(t, req{method: "POST", path: "/v1/auth/logout", bearer: revoked}), 204, "")
	// The logout happened two minutes ago: older than the minute re-asserted.
	sid := claims(t, revoked).SessionID
	revokedAgo(t, a, sid, 2*time.Minute)
	// The flush: every key of this deployment, behind the Mirrors' backs.
	testenv.DeleteKeys(t, a.kv.(*kv.Redis).Client(), cfg.Redis.Prefix)
	refusedWithin(t, b, revoked, 3*reassertEvery, "a flush")
	wantRejected(t, b.me(t, revoked))
	wantStatus(t, b.me(t, kept), 200, "")
	// Rebuilt for the rest of its window, which began at the revocation.
	ttl, err := a.kv.(*kv.Redis).Client().PTTL(context.Background(), cfg.Redis.Prefix+"deny:sid:"+sid).Result()
	if want := cfg.Auth.AccessTTL + 2*cfg.Auth.Leeway - 2*time.Minute; err != nil || ttl > want || ttl < want-3*reassertEvery {
		t.Fatalf("rebuilt deny:sid lives %s (%v), want about %s", ttl, err, want)
	}
	if logs := a.logs.String() + b.logs.String(); !strings.Contains(logs, "access-token denylist rebuilt from the database") {
		t.Fatalf("no rebuild logged:\n%s", logs)
	}
}

// A denial outlasts every instance's acceptance of the tokens it denies:
// up to the leeway past exp, on an instance whose clock runs up to the
// leeway behind the issuer's. So denials live until exp plus twice the
// leeway, whether written by a logout or by a rebuilt denylist.
func TestDenialsOutlastSkewedClocks(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[1])
	app := startApp(t, cfg)
	tok, c := loggedOut(t, app, "skew@example.com")
	rdb := app.kv.(*kv.Redis).Client()
	ctx := context.Background()
	ttl := func(key string) time.Duration {
		t.Helper()
		d, err := rdb.PTTL(ctx, cfg.Redis.Prefix+key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// want is taken before got is read; PTTL rounds to the millisecond,
	// and a VM's wall clock, by which Redis expires keys, may be stepped
	// back a few milliseconds meanwhile (seen once, by 31 ms).
	within := func(what string, want, got time.Duration) {
		t.Helper()
		if got > want+time.Second || got < want-5*time.Second {
			t.Errorf("%s lives %s, want %s", what, got, want)
		}
	}
	past := 2 * cfg.Auth.Leeway
	within("deny:sid", cfg.Auth.AccessTTL+past, ttl("deny:sid:"+c.SessionID))
	within("deny:jti", time.Until(c.ExpiresAt.Time)+past, ttl("deny:jti:"+c.ID))
	if err := app.kv.Delete(ctx, "deny:sid:"+c.SessionID, "deny:jti:"+c.ID, "deny:epoch"); err != nil {
		t.Fatal(err)
	}
	wantRejected(t, startApp(t, cfg).me(t, tok)) // rebuilds the denylist
	// The rebuilt denial lasts at least until the logout's would have
	// ended (the logout came after c was issued), however long the second
	// start took; lo is taken after the read.
	got := ttl("deny:sid:" + c.SessionID)
	lo := cfg.Auth.AccessTTL + past - time.Since(c.IssuedAt.Time)
	if got > cfg.Auth.AccessTTL+past+time.Millisecond || got < lo {
		t.Errorf("rebuilt deny:sid lives %s, want between %s and %s", got, lo, cfg.Auth.AccessTTL+past)
	}
}

// setFails is a key-value store whose writes (Set, Incr) of keys under
// prefix fail once left of them have gone through, while armed: a store
// that drops out in the middle of a change.
type setFails struct {
	kv.Store
	prefix string
	armed  atomic.Bool
	left   atomic.Int32
}

func (s *setFails) Set(ctx context.Context, key string, v []byte, ttl time.Duration) error {
	if err := s.fail(key); err != nil {
		return err
	}
	return s.Store.Set(ctx, key, v, ttl)
}

func (s *setFails) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if err := s.fail(key); err != nil {
		return 0, err
	}
	return s.Store.Incr(ctx, key, delta, ttl)
}

func (s *setFails) fail(key string) error {
	if s.armed.Load() && strings.HasPrefix(key, s.prefix) && s.left.Add(-1) < 0 {
		return errors.New("injected: connection reset by peer")
	}
	return nil
}

// A revocation the store fails half-way through leaves no session revoked
// in the database whose access tokens still pass, and a retry finishes it.
// (In process only: wrapping the store hides Redis from the app, and the
// order of the two writes is the auth service's, the same on both.)
func TestLogoutAllRetriedAfterAStoreFailure(t *testing.T) {
	t.Parallel()
	store := &setFails{prefix: "deny:sid:"}
	app := startAppOn(t, testConfig(t, backends[0]), func(s kv.Store) kv.Store { store.Store = s; return store })
	const pw = "correct horse battery"
	app.register(t, "blip@example.com", pw, "")
	var toks []string
	for range 3 {
		toks = append(toks, app.login(t, "blip@example.com", pw, "").AccessToken)
	}
	revoked := func(tok string) bool {
		t.Helper()
		var n int64
		if err := app.db.Conn(context.Background()).Table("sessions").Where("id = ? AND revoked_at IS NOT NULL", claims(t, tok).SessionID).
			Count(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n == 1
	}

	store.left.Store(1) // the first denial lands, the second fails
	store.armed.Store(true)
	wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/logout-all", bearer: toks[0]}), 500, "internal")
	store.armed.Store(false)
	var live string
	for i, tok := range toks {
		switch code := app.me(t, tok).Code; {
		case code == 200 && revoked(tok):
			t.Fatalf("token %d passes although its session is revoked in the database", i)
		case code == 200:
			live = tok
		}
	}
	if live == "" {
		t.Fatal("every session ended although logout-all failed before its second denial")
	}

	wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/logout-all", bearer: live}), 204, "")
	for i, tok := range toks {
		wantRejected(t, app.me(t, tok))
		if !revoked(tok) {
			t.Errorf("session %d is not revoked in the database after the retry", i)
		}
	}
}

// A suspension whose status write fails after the database commit answers
// 500, and its retry finishes it: the members' tokens are refused.
func TestSuspensionRetriedAfterAStoreFailure(t *testing.T) {
	t.Parallel()
	store := &setFails{prefix: "tenant:status:"}
	app := startAppOn(t, testConfig(t, backends[0]), func(s kv.Store) kv.Store { store.Store = s; return store })
	w := newWorldOn(t, app)
	suspended := tenant.StatusSuspended
	body := tenant.UpdateTenantRequest{Status: &suspended}
	wantStatus(t, app.me(t, w.member.token), 200, "") // its tenant's status now cached as active

	store.armed.Store(true)
	wantStatus(t, w.as(t, w.super, "PATCH", "/v1/tenants/"+w.acme, body), 500, "internal")
	store.armed.Store(false)
	wantStatus(t, w.as(t, w.super, "PATCH", "/v1/tenants/"+w.acme, body), 200, "")
	wantStatus(t, app.me(t, w.member.token), 403, "tenant_suspended")
}

// getFails is a key-value store whose reads of keys under prefix fail
// while armed.
type getFails struct {
	kv.Store
	prefix string
	armed  atomic.Bool
}

func (s *getFails) Get(ctx context.Context, key string) ([]byte, error) {
	if s.armed.Load() && strings.HasPrefix(key, s.prefix) {
		return nil, errors.New("store down")
	}
	return s.Store.Get(ctx, key)
}

// setHook is a key-value store that, once armed, runs hook before the
// next Set of a key under prefix goes through: a competing change landing
// between another's commit and its write to kv.
type setHook struct {
	kv.Store
	prefix string
	armed  atomic.Bool
	hook   func()
}

func (s *setHook) Set(ctx context.Context, key string, v []byte, ttl time.Duration) error {
	if strings.HasPrefix(key, s.prefix) && s.armed.CompareAndSwap(true, false) {
		s.hook()
	}
	return s.Store.Set(ctx, key, v, ttl)
}

// A resumption and a suspension racing: the suspension commits and writes
// its status to kv between the resumption's commit and its own write. The
// store must end as the database is, suspended, and not let the members in.
func TestSuspensionRacingResumption(t *testing.T) {
	t.Parallel()
	store := &setHook{prefix: "tenant:status:"}
	app := startAppOn(t, testConfig(t, backends[0]), func(s kv.Store) kv.Store { store.Store = s; return store })
	w := newWorldOn(t, app)
	status := func(s string) tenant.UpdateTenantRequest { return tenant.UpdateTenantRequest{Status: &s} }
	path := "/v1/tenants/" + w.acme
	wantStatus(t, w.as(t, w.super, "PATCH", path, status(tenant.StatusSuspended)), 200, "")
	store.hook = func() { wantStatus(t, w.as(t, w.super, "PATCH", path, status(tenant.StatusSuspended)), 200, "") }
	store.armed.Store(true)
	rec := w.as(t, w.super, "PATCH", path, status(tenant.StatusActive))
	if store.armed.Load() {
		t.Fatal("the suspension did not run between the resumption's commit and its write")
	}
	wantStatus(t, rec, 200, "")
	if got := decode[tenant.TenantResponse](t, rec).Status; got != tenant.StatusSuspended {
		t.Errorf("the resumption answered status %q; the database holds suspended", got)
	}
	wantStatus(t, app.me(t, w.member.token), 403, "tenant_suspended")
}

// A refresh that read its session live while a logout ended it issues no
// tokens: its rotation commits only into a session still live. Otherwise
// its access token, issued after the logout, could outlive the session's
// denial.
func TestRefreshRacingLogout(t *testing.T) {
	t.Parallel()
	app := startApp(t, testConfig(t, backends[0]))
	const pw = "correct horse battery"
	app.register(t, "race@example.com", pw, "")
	p := app.login(t, "race@example.com", pw, "")
	// The refresh is held after it has read the session, at its check of
	// the membership, until the logout is done.
	rec := holdQueries(t, app, "memberships").during(func() *httpRecorder { return app.refresh(p.RefreshToken, t) }, func() {
		wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/logout", bearer: p.AccessToken}), 204, "")
	})
	wantStatus(t, rec, 401, "invalid_refresh_token")
}

// queryHold stops the next query of a table, once armed, until released:
// a request held between its checks and its writes.
type queryHold struct {
	armed         atomic.Bool
	held, release chan struct{}
}

func holdQueries(t *testing.T, app testApp, table string) *queryHold {
	h := &queryHold{held: make(chan struct{}), release: make(chan struct{})}
	if err := app.db.Conn(context.Background()).Callback().Query().Before("gorm:query").Register("test:hold", func(tx *gorm.DB) {
		if tx.Statement.Table == table && h.armed.CompareAndSwap(true, false) {
			h.held <- struct{}{}
			<-h.release
		}
	}); err != nil {
		t.Fatal(err)
	}
	return h
}

// during sends a request, holds it at its next query of the table while
// between runs, then lets it finish and returns its answer.
func (h *queryHold) during(send func() *httpRecorder, between func()) *httpRecorder {
	h.armed.Store(true)
	done := make(chan *httpRecorder)
	go func() { done <- send() }()
	<-h.held
	between()
	h.release <- struct{}{}
	return <-done
}

// A role revoke whose permissions-version bump fails answers 503; its
// retry finds the role already gone, and still makes the revoke take
// effect instead of leaving the cached permissions to age out.
func TestRoleRevokeRetriedAfterAStoreFailure(t *testing.T) {
	t.Parallel()
	store := &setFails{prefix: "rbac:version"}
	app := startAppOn(t, testConfig(t, backends[0]), func(s kv.Store) kv.Store { store.Store = s; return store })
	w := newWorldOn(t, app)
	mine := func() string {
		return w.as(t, w.member, "GET", "/v1/permissions/mine", nil).Body.String()
	}
	plain := mine()
	roles := "/v1/tenants/" + w.acme + "/members/" + w.member.id + "/roles"
	wantStatus(t, w.as(t, w.admin, "POST", roles, map[string]any{"role_id": adminRole}), 200, "")
	if mine() == plain {
		t.Fatal("the admin role changed nothing in the member's permissions")
	}

	store.armed.Store(true)
	wantStatus(t, w.as(t, w.admin, "DELETE", roles+"/"+adminRole, nil), 503, "")
	store.armed.Store(false)
	wantStatus(t, w.as(t, w.admin, "DELETE", roles+"/"+adminRole, nil), 404, "not_found")
	if got := mine(); got != plain {
		t.Fatalf("after the retried revoke the member still has %s, want %s", got, plain)
	}
}

// A member removal whose session denials fail after the membership is
// gone answers 500; its retry answers 404, and ends the sessions.
func TestMemberRemovalRetriedAfterAStoreFailure(t *testing.T) {
	t.Parallel()
	store := &setFails{prefix: "deny:sid:"}
	app := startAppOn(t, testConfig(t, backends[0]), func(s kv.Store) kv.Store { store.Store = s; return store })
	w := newWorldOn(t, app)
	member := "/v1/tenants/" + w.acme + "/members/" + w.member.id
	wantStatus(t, app.me(t, w.member.token), 200, "")

	store.armed.Store(true)
	wantStatus(t, w.as(t, w.admin, "DELETE", member, nil), 500, "internal")
	store.armed.Store(false)
	wantStatus(t, w.as(t, w.admin, "DELETE", member, nil), 404, "")
	wantRejected(t, app.me(t, w.member.token))
}
