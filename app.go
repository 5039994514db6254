package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	"gatehouse/configs"
	"gatehouse/modules/auth"
	"gatehouse/modules/gateway"
	"gatehouse/modules/rbac"
	"gatehouse/modules/tenant"
	"gatehouse/platform/audit"
	"gatehouse/platform/config"
	"gatehouse/platform/db"
	"gatehouse/platform/fault"
	"gatehouse/platform/health"
	"gatehouse/platform/httpx"
	"gatehouse/platform/kv"
	"gatehouse/platform/metrics"
	"gatehouse/platform/ratelimit"
	"gatehouse/platform/token"
	"gatehouse/web"
)

// newTokens returns the token service for the configuration; on first
// start it makes the signing key.
func newTokens(ctx context.Context, cfg config.Config, log *slog.Logger, conn *db.DB) (*token.Service, error) {
	issuer := cfg.Auth.Issuer
	if issuer == "" {
		issuer = cfg.HTTP.PublicURL
	}
	tokens, err := token.New(ctx, conn, token.Config{Issuer: issuer, Audience: cfg.Auth.Audience,
		AccessTTL: cfg.Auth.AccessTTL, Leeway: cfg.Auth.Leeway, Algorithm: cfg.Auth.SigningAlgorithm,
		MasterKey: cfg.Auth.MasterKeyBytes()}, log)
	if err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	return tokens, nil
}

// newApp builds the HTTP application: the modules, the chain with their
// slots, every route, the health endpoints, the OpenAPI document and the
// docs page. It is the one place that wires modules together.
// app is the built application: the server, and the modules whose
// services commands use.
type app struct {
	auth    *auth.Module
	rbac    *rbac.Module
	tenants *tenant.Service
	mirror  *kv.Mirror // nil on the in-process store
	limiter limiterCloser
	limits  *planLimits
	metrics *metrics.Metrics
	audit   *audit.Writer
	// auditDrain bounds how long Close waits for the audit queue.
	auditDrain time.Duration
	log        *slog.Logger

	// current is the server in use; Reload replaces it whole.
	current     atomic.Pointer[httpx.Server]
	build       func(*gateway.Gateway) (*httpx.Server, error)
	reloadMu    sync.Mutex
	gateway     *gateway.Gateway // guarded by reloadMu
	gatewayDeps gateway.Deps
	routesFile  string
	// gatewayRoutes counts the routes of the file in use.
	gatewayRoutes atomic.Int64
	// stopReassert ends the reassert loop, and reassertDone says
	// it has; both nil on the in-process store.
	stopReassert context.CancelFunc
	reassertDone chan struct{}
}

// reassertEvery is the period of reassert; every reassertAllEvery
// periods it re-asserts every denial still needed, not only the last
// minute's.
const (
	reassertEvery    = 5 * time.Second
	reassertAllEvery = 12
)

func newApp(ctx context.Context, cfg config.Config, log *slog.Logger, conn *db.DB, store kv.Store, extra ...httpx.Route) (*app, error) {
	tokens, err := newTokens(ctx, cfg, log, conn)
	if err != nil {
		return nil, err
	}
	met := metrics.New()
	ac := cfg.Audit
	writer := audit.NewWriter(conn, audit.WriterConfig{QueueSize: ac.QueueSize, BatchSize: ac.BatchSize,
		Interval: ac.FlushInterval, Overflow: ac.Overflow, BlockTimeout: ac.BlockTimeout}, log)
	events := met.Recorder(writer)
	met.Gauge("gatehouse_audit_queue_depth", "Audit events waiting for the writer.", func() float64 { return float64(writer.Queued()) })
	met.CounterFunc("gatehouse_audit_events_dropped_total", "Audit events lost to a full queue or a failing database.",
		func() float64 { return float64(writer.Dropped()) })
	if r, ok := store.(*kv.Redis); ok {
		r.Client().AddHook(met.RedisHook())
	}
	limiter, limits, err := newLimits(cfg, log, store, met.RedisHook())
	if err != nil {
		return nil, err
	}
	warnIfEvicting(ctx, store, log)
	shared, err := mirrorHotKeys(ctx, store, log)
	if err != nil {
		return nil, err
	}
	catalogue, err := rbac.LoadCatalogue(configs.Roles)
	if err != nil {
		return nil, fmt.Errorf("configs/roles.yaml: %w", err)
	}
	// rbac and tenant need each other: rbac asks tenant who is an active
	// member, tenant asks rbac about roles. members is bound to the tenant
	// module once it exists, before any request is served.
	members := &lateMembers{}
	authz, err := rbac.New(ctx, rbac.Deps{DB: conn, KV: shared, Log: log, Events: events, Catalogue: catalogue, Members: members})
	if err != nil {
		return nil, fmt.Errorf("rbac: %w", err)
	}
	// tenant and auth need each other too: users is bound to auth below.
	users := &tenantUsers{}
	tenants, err := tenant.New(ctx, tenant.Deps{DB: conn, KV: shared, Users: users, Roles: authz.Service(),
		Events: events, BaseDomain: cfg.Tenancy.BaseDomain, Plans: slices.Sorted(maps.Keys(cfg.RateLimit.Plans))})
	if err != nil {
		return nil, fmt.Errorf("tenant: %w", err)
	}
	a := cfg.Auth
	slots := bcryptSlots(a.BcryptConcurrency)
	var bcryptWorker func() *exec.Cmd
	if a.BcryptProcess {
		if exe, err := os.Executable(); err == nil {
			bcryptWorker = func() *exec.Cmd {
				cmd := exec.Command(exe, "bcrypt-worker")
				cmd.Env = []string{} // it needs none of our settings or secrets
				return cmd
			}
		} else {
			log.Warn("auth.bcrypt_process: cannot find this program's file; bcrypt runs in this process", "error", err.Error())
		}
	}
	authn, err := auth.New(ctx, auth.Deps{DB: conn, KV: shared, Tokens: tokens, Roles: authz.Service(),
		Tenants: authTenants{tenants.Service()}, Limits: limits, Log: log, Events: events,
		CookieSecure: a.CookieSecure, IntrospectClients: a.IntrospectClients,
		Config: auth.Config{AccessTTL: a.AccessTTL, Leeway: a.Leeway, RefreshTTL: a.RefreshTTL, SessionMaxAge: a.SessionMaxAge,
			BcryptCost: a.BcryptCost, BcryptConcurrency: slots, BcryptWorker: bcryptWorker, LockoutThreshold: a.LockoutThreshold, LockoutDuration: a.LockoutDuration,
			DefaultTenant: a.DefaultTenant, FailDelay: a.FailedLoginDelay}})
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	users.a = authn.Service()
	members.svc = tenants.Service()
	limits.plan = func(ctx context.Context, tenantID string) int {
		return max(cfg.RateLimit.Plans[tenants.Service().PlanOf(ctx, tenantID)], 1)
	}

	checks := health.New(cfg.Health.Timeout, log,
		health.Check{Name: "database", Backend: conn.Dialect(), Required: true, Ping: conn.Ping},
		health.Check{Name: "cache", Backend: kvBackend(cfg), Required: true, Ping: store.Ping},
	)
	if err := observe(ctx, met, cfg, conn, store, limits, authn.Service()); err != nil {
		return nil, err
	}
	// Every 403 and every invalid proxied path is an access.denied audit
	// event (tenant mismatches are recorded by the tenant step with more
	// detail), which events counts in gatehouse_access_denied_total; the
	// other refusals for identity or permission (every 401, tenant
	// mismatches) are counted there directly. Every 5xx is counted.
	observeErrors := func(c echo.Context, status int, code string) {
		if status >= 500 {
			met.ErrorEvent(status)
		}
		if (status == http.StatusForbidden && code != "tenant_mismatch") || code == "invalid_path" {
			e := audit.Event{Action: "access.denied", Outcome: audit.Failure, Actor: audit.Actor{Type: "anonymous"},
				ResourceType: "route", ResourceID: c.Request().Method + " " + c.Path(), Metadata: map[string]any{"code": code}}
			if id := httpx.IdentityOf(c); id != nil {
				e.Actor, e.TenantID = audit.User(id.UserID), id.TenantID
			}
			events.Record(audit.RequestContext(c), e)
		} else if status == http.StatusUnauthorized || status == http.StatusForbidden {
			met.AccessDenied(code)
		}
	}
	mirror, _ := shared.(*kv.Mirror)
	ap := &app{mirror: mirror, auth: authn, rbac: authz, tenants: tenants.Service(), limiter: limiter, limits: limits, metrics: met, audit: writer, log: log,
		auditDrain: cfg.Audit.ShutdownTimeout, routesFile: cfg.Gateway.RoutesFile,
		gatewayDeps: gateway.Deps{Signer: tokens, Roles: authz.Service(), Log: log, Observe: met.Upstream, WriteTimeout: cfg.HTTP.WriteTimeout,
			Reserved: []string{auth.CookiePath}, Cookies: auth.Cookies()}}
	// build makes the server for a gateway: the same modules and slots, the
	// gateway's routes, and a document describing exactly what is served.
	ap.build = func(gw *gateway.Gateway) (*httpx.Server, error) {
		srv := httpx.New(httpx.Options{
			Logger:       log,
			PublicURL:    cfg.HTTP.PublicURL,
			MaxBodyBytes: cfg.HTTP.MaxBodyBytes,
			HSTSMaxAge:   cfg.HTTP.HSTSMaxAge,
			CORS:         cfg.CORS,
			Observe:      observeErrors,
			Slots: httpx.Slots{Metrics: met.Slot, IPLimit: limits.Before, Authenticate: authn.Authenticate, Tenant: tenants.Resolve,
				UserLimit: limits.After, Authorize: authz.Authorize},
			TrustedProxies: cfg.HTTP.TrustedProxies,
			ClientIPHeader: cfg.HTTP.ClientIPHeader,
		})
		for _, routes := range [][]httpx.Route{checks.Routes(), tokens.Routes(), authn.Routes(), tenants.Routes(), authz.Routes(),
			audit.Routes(conn, authz.Service().IsSuperAdmin), {ap.reloadRoute()}, ap.metricsRoutes(cfg.Metrics), gw.Routes(), extra} {
			if err := srv.Mount(routes...); err != nil {
				return nil, err
			}
		}
		if cfg.HTTP.Docs {
			if err := srv.Mount(web.DocsRoutes()...); err != nil {
				return nil, err
			}
		}
		if err := limits.CheckRoutes(srv.Routes()); err != nil {
			return nil, err
		}
		doc, err := httpx.Document(httpx.Info{Title: "Gatehouse API", Version: version, ServerURL: cfg.HTTP.PublicURL,
			Description: "Sign-in, sessions, authorization, rate limits and an API gateway for a multi-tenant SaaS. " +
				"Errors use one JSON shape: {\"error\": {\"code\", \"message\", \"request_id\", \"details\"}}."}, srv.Routes())
		if err != nil {
			return nil, err
		}
		spec, err := json.Marshal(doc)
		if err != nil {
			return nil, fmt.Errorf("openapi: %w", err)
		}
		return srv, srv.Mount(httpx.Route{Method: http.MethodGet, Path: "/openapi.json", Summary: "This OpenAPI document",
			Tags: []string{"docs"}, Auth: httpx.Public, Hidden: true,
			Handle: func(c echo.Context) error {
				c.Response().Header().Set("Cache-Control", "no-cache")
				return c.JSONBlob(http.StatusOK, spec)
			}})
	}
	// Refusals are reported from here on, by a goroutine Close stops.
	limits.RecordRefusals(events)
	if err := ap.Reload(); err != nil {
		limits.Close()
		limiter.Close()
		return nil, err
	}
	if mirror != nil {
		// Only Redis can lose its latest writes and keep the rest.
		rctx, stop := context.WithCancel(context.Background())
		ap.stopReassert, ap.reassertDone = stop, make(chan struct{})
		go ap.reassert(rctx)
	}
	return ap, nil
}

// reassert runs auth's ReassertDenials and the tenant module's
// ReassertSuspensions every reassertEvery until ctx ends, so that denials
// and suspensions a Redis failover lost come back, and a denylist a flush
// took is rebuilt, within that period; denials older than a minute (a
// Redis restarted from an older snapshot) come back within
// reassertAllEvery periods, the first pass included. Such a full pass may
// take longer than a period (about a second per 100,000 sessions revoked
// within an access token's lifetime), so it has until the next one; the
// short passes wait for it, and it writes the newest denials first. A
// failure is logged when it starts and when it ends.
func (a *app) reassert(ctx context.Context) {
	defer close(a.reassertDone)
	tick := time.NewTicker(reassertEvery)
	defer tick.Stop()
	failing := false
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		all, budget := n%reassertAllEvery == 0, reassertEvery
		if all {
			budget = reassertAllEvery * reassertEvery
		}
		pass, cancel := context.WithTimeout(ctx, budget)
		err := errors.Join(a.auth.Service().ReassertDenials(pass, all), a.tenants.ReassertSuspensions(pass))
		cancel()
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			a.log.Error("revocations could not be re-asserted; retrying every "+reassertEvery.String(), "error", err.Error())
			failing = true
		case err == nil && failing:
			a.log.Info("revocations re-asserted again")
			failing = false
		}
	}
}

// ServeHTTP serves a request on the current server.
func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.current.Load().ServeHTTP(w, r) }

// Routes returns the current server's routes.
func (a *app) Routes() []httpx.Route { return a.current.Load().Routes() }

// Reload reads the gateway's routes file and swaps in a server built with
// them. Requests in flight finish on the old server. A bad file changes
// nothing: the error says what is wrong and the old routes stay.
func (a *app) Reload() error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	gwCfg, err := gateway.Load(a.routesFile)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	gw, err := gateway.New(gwCfg, a.gatewayDeps)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	for _, r := range gwCfg.Routes {
		a.metrics.DeclareUpstreams(r.Name)
	}
	srv, err := a.build(gw)
	if err != nil {
		gw.Close()
		return fmt.Errorf("gateway: %w", err)
	}
	a.current.Store(srv)
	if a.gateway != nil {
		a.gateway.Close()
	}
	a.gateway = gw
	a.gatewayRoutes.Store(int64(len(gwCfg.Routes)))
	a.log.Info("gateway routes loaded", "file", a.routesFile, "routes", len(gwCfg.Routes))
	return nil
}

// ReloadResponse answers a reload.
type ReloadResponse struct {
	Routes int `json:"routes"`
}

// reloadRoute is POST /v1/admin/gateway/reload, for super admins.
func (a *app) reloadRoute() httpx.Route {
	return httpx.Route{Method: http.MethodPost, Path: "/v1/admin/gateway/reload", Summary: "Re-read the gateway's routes file",
		Description: "A file with an error is refused with 400 gateway_config, naming the problem; the routes in use stay.",
		Tags:        []string{"gateway"}, Auth: httpx.Permission("gateway:manage"), Audit: "gateway.reload", Out: ReloadResponse{},
		Handle: func(c echo.Context) error {
			if err := a.Reload(); err != nil {
				a.log.Error("gateway reload refused", "error", err.Error())
				return fault.New(fault.Invalid, "gateway_config", err.Error())
			}
			return c.JSON(http.StatusOK, ReloadResponse{Routes: int(a.gatewayRoutes.Load())})
		}}
}

// Close stops what the app runs in the background, after the server has
// stopped serving: the last minute of rate-limit refusals is reported, and
// the audit writer flushes before the database closes.
func (a *app) Close() error {
	if a.stopReassert != nil {
		a.stopReassert()
		<-a.reassertDone
	}
	a.reloadMu.Lock()
	if a.gateway != nil {
		a.gateway.Close()
	}
	a.reloadMu.Unlock()
	a.limits.Close() // stops the refusal flusher, reports the current minute
	if a.mirror != nil {
		a.mirror.Close()
	}
	a.auth.Service().Close()
	ctx, cancel := context.WithTimeout(context.Background(), a.auditDrain)
	defer cancel()
	return errors.Join(a.limiter.Close(), a.audit.Close(ctx))
}

// warnIfEvicting logs an error when the store is a Redis that may evict
// keys, which could drop revocation denials unnoticed (kv.Redis.
// EvictionPolicy). Told, not refused: managed Redis services often set an
// evicting policy by default, and may not let it be read.
func warnIfEvicting(ctx context.Context, store kv.Store, log *slog.Logger) {
	r, ok := store.(*kv.Redis)
	if !ok {
		return
	}
	if policy, err := r.EvictionPolicy(ctx); err != nil {
		log.Warn("redis: could not read maxmemory-policy; it must be noeviction, or revoked tokens may pass again", "error", err.Error())
	} else if policy != "" {
		log.Error("redis: maxmemory-policy "+policy+" may evict revocation denials, and a revoked token would then pass "+
			"again until the denial is re-asserted, up to a minute later: set maxmemory-policy noeviction", "maxmemory_policy", policy)
	}
}

// mirrorHotKeys returns the store the modules use. On Redis it is a
// kv.Mirror of the keys every authenticated request reads: the revocation
// denylist (auth), the permissions version (rbac) and tenant status
// (tenant). Those are then answered from memory and still exact across
// instances (see kv.Mirror). The in-process store is already local, so it
// is used as it is.
func mirrorHotKeys(ctx context.Context, store kv.Store, log *slog.Logger) (kv.Store, error) {
	if _, ok := store.(*kv.Redis); !ok {
		return store, nil
	}
	m, err := kv.NewMirror(ctx, store, "mirror", log, "deny:", "rbac:version", "tenant:status:")
	if err != nil {
		return nil, fmt.Errorf("redis.url: %w", err)
	}
	return m, nil
}

// metricsRoutes serves /metrics on the main listener when a token guards
// it; on a separate listener (metrics.listen) serve starts it instead.
func (a *app) metricsRoutes(cfg config.Metrics) []httpx.Route {
	if cfg.Token == "" {
		return nil
	}
	h := echo.WrapHandler(a.metrics.Handler(cfg.Token))
	return []httpx.Route{{Method: http.MethodGet, Path: "/metrics", Summary: "Prometheus metrics (Authorization: Bearer <metrics.token>)",
		Tags: []string{"operations"}, Auth: httpx.Public, Hidden: true, NoDefaultLimits: true, Handle: h}}
}

// observe registers what the metrics read from the app's parts.
func observe(ctx context.Context, met *metrics.Metrics, cfg config.Config, conn *db.DB, store kv.Store,
	limits *planLimits, authn *auth.Service) error {
	met.DB("main", conn.SQL())
	names := make([]string, 0, len(cfg.RateLimit.Policies))
	for _, p := range cfg.RateLimit.Policies {
		names = append(names, p.Name)
	}
	met.RateLimits(names, func(p string) (int64, int64) {
		c := limits.Counts(p)
		return c.Allowed.Load(), c.Blocked.Load()
	})
	// Session counts are read from the database at most every 15 s, not
	// at every scrape.
	var (
		mu        sync.Mutex
		read      time.Time
		live, act int64
	)
	activity := func() (int64, int64) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(read) > 15*time.Second {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if s, u, err := authn.Activity(ctx); err == nil {
				live, act, read = s, u, time.Now()
			}
		}
		return live, act
	}
	met.Gauge("gatehouse_active_sessions", "Sessions neither revoked nor expired.", func() float64 {
		s, _ := activity()
		return float64(s)
	})
	met.Gauge("gatehouse_business_kpi_active_users", "Users who used a session in the last 24 hours.", func() float64 {
		_, u := activity()
		return float64(u)
	})
	return nil
}

// newLimits returns the rate limiter for the key-value backend (Redis when
// there is one, else in process) and the enforcer of the configured rules.
func newLimits(cfg config.Config, log *slog.Logger, store kv.Store, hooks ...redis.Hook) (limiterCloser, *planLimits, error) {
	rules := make([]ratelimit.Rule, 0, len(cfg.RateLimit.Policies))
	for _, p := range cfg.RateLimit.Policies {
		r := ratelimit.Rule{Key: p.Key, OnError: p.OnError, Policy: ratelimit.Policy{Name: p.Name,
			Algorithm: ratelimit.Algorithm(p.Algorithm), Limit: p.Limit, Period: p.Period, Burst: p.Burst}}
		if r.Key == ratelimit.KeyTenant {
			for _, plan := range slices.Sorted(maps.Keys(cfg.RateLimit.Plans)) {
				if err := r.ForPlan(cfg.RateLimit.Plans[plan]).Validate(); err != nil {
					return nil, nil, fmt.Errorf("ratelimit.plans.%s: %w", plan, err)
				}
			}
		}
		rules = append(rules, r)
	}
	var limiter limiterCloser
	if r, ok := store.(*kv.Redis); ok {
		// Through go-redis's autopipeliner: the decisions of concurrent
		// requests share one write and one read, and none waits for Redis
		// much past ratelimit.timeout (NewRedisPipelined says how). The
		// client closes it.
		rl, err := ratelimit.NewRedisPipelined(r.Client(), cfg.Redis.Prefix, cfg.RateLimit.Timeout, nil, hooks...)
		if err != nil {
			return nil, nil, fmt.Errorf("redis.url: %w", err)
		}
		limiter = nopClose{rl}
	} else {
		limiter = ratelimit.NewMemory(nil)
	}
	limits := &planLimits{}
	enf, err := ratelimit.NewEnforcer(limiter, rules, cfg.RateLimit.Anonymous, cfg.RateLimit.Authenticated,
		func(ctx context.Context, tenantID string) int { return limits.plan(ctx, tenantID) }, log)
	if err == nil {
		err = enf.SetTimeout(cfg.RateLimit.Timeout)
	}
	if err == nil {
		err = enf.SetIPv6Prefix(cfg.RateLimit.IPv6Prefix)
	}
	if err != nil {
		limiter.Close()
		return nil, nil, fmt.Errorf("ratelimit: %w", err)
	}
	limits.Enforcer = enf
	return limiter, limits, nil
}

// limiterCloser is a limiter with background work to stop.
type limiterCloser interface {
	ratelimit.Limiter
	Close() error
}

// nopClose is the Redis limiter, with nothing to stop (Redis keeps the
// state).
type nopClose struct{ ratelimit.Limiter }

func (nopClose) Close() error { return nil }

// planLimits is the enforcer, with the tenant plan lookup bound once the
// tenant module exists.
type planLimits struct {
	*ratelimit.Enforcer
	plan func(ctx context.Context, tenantID string) int
}

// lateMembers gives rbac the tenant module's membership check, bound after
// both exist.
type lateMembers struct{ svc *tenant.Service }

func (m *lateMembers) ActiveMember(ctx context.Context, tenantID, userID string) (bool, error) {
	return m.svc.ActiveMember(ctx, tenantID, userID)
}

// tenantUsers gives the tenant module what it needs of auth's accounts,
// bound once auth exists.
type tenantUsers struct{ a *auth.Service }

func (u *tenantUsers) UserByEmail(ctx context.Context, email string) (tenant.User, error) {
	info, err := u.a.UserByEmail(ctx, email)
	return tenant.User(info), err
}

func (u *tenantUsers) Users(ctx context.Context, ids []string) (map[string]tenant.User, error) {
	infos, err := u.a.Users(ctx, ids)
	out := make(map[string]tenant.User, len(infos))
	for id, info := range infos {
		out[id] = tenant.User(info)
	}
	return out, err
}

func (u *tenantUsers) EndTenantSessions(ctx context.Context, tenantID, userID, reason string) error {
	return u.a.EndTenantSessions(ctx, tenantID, userID, reason)
}

// authTenants gives sign-in what it needs of the tenant module.
type authTenants struct{ t *tenant.Service }

func authTenant(t tenant.Tenant) auth.Tenant {
	return auth.Tenant{ID: t.ID, Slug: t.Slug, Name: t.Name, Status: t.Status, LoginMethods: t.LoginMethods,
		RefreshGraceUses: t.RefreshGraceUses, RefreshGraceWindow: time.Duration(t.RefreshGraceWindowMS) * time.Millisecond}
}

func (a authTenants) TenantBySlug(ctx context.Context, slug string) (auth.Tenant, error) {
	t, err := a.t.BySlug(ctx, slug)
	return authTenant(t), err
}

func (a authTenants) TenantByID(ctx context.Context, id string) (auth.Tenant, error) {
	t, err := a.t.Get(ctx, id)
	return authTenant(t), err
}

func (a authTenants) Suspended(ctx context.Context, id string) (bool, error) {
	return a.t.Suspended(ctx, id)
}

func (a authTenants) MemberStatus(ctx context.Context, tenantID, userID string) (string, error) {
	m, err := a.t.Membership(ctx, tenantID, userID)
	return m.Status, err
}

func (a authTenants) ActiveTenants(ctx context.Context, userID string) ([]string, error) {
	return a.t.ActiveTenants(ctx, userID)
}

func (a authTenants) Join(ctx context.Context, tenantID, userID string) error {
	return a.t.Join(ctx, tenantID, userID)
}

func (a authTenants) EnsureTenant(ctx context.Context, slug, name string) error {
	return a.t.EnsureTenant(ctx, slug, name)
}

// bcryptSlots is auth.bcrypt_concurrency, where 0 means one less than the
// cores (at least 1): a core stays free for everything else.
func bcryptSlots(n int) int {
	if n > 0 {
		return n
	}
	return max(runtime.GOMAXPROCS(0)-1, 1)
}
