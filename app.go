package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"gatehouse/configs"
	"gatehouse/modules/auth"
	"gatehouse/modules/rbac"
	"gatehouse/modules/tenant"
	"gatehouse/platform/audit"
	"gatehouse/platform/config"
	"gatehouse/platform/db"
	"gatehouse/platform/health"
	"gatehouse/platform/httpx"
	"gatehouse/platform/kv"
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
	*httpx.Server
	auth    *auth.Module
	rbac    *rbac.Module
	limiter limiterCloser
}

func newApp(ctx context.Context, cfg config.Config, log *slog.Logger, conn *db.DB, store kv.Store, extra ...httpx.Route) (*app, error) {
	tokens, err := newTokens(ctx, cfg, log, conn)
	if err != nil {
		return nil, err
	}
	events := audit.Log{Logger: log}
	limiter, limits, err := newLimits(cfg, log, store)
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
	authz, err := rbac.New(ctx, rbac.Deps{DB: conn, KV: store, Log: log, Events: events, Catalogue: catalogue, Members: members})
	if err != nil {
		return nil, fmt.Errorf("rbac: %w", err)
	}
	a := cfg.Auth
	authn, err := auth.New(ctx, auth.Deps{DB: conn, KV: store, Tokens: tokens, Roles: authz.Service(), Limits: limits,
		Log: log, Events: events,
		CookieSecure: a.CookieSecure, IntrospectClients: a.IntrospectClients,
		Config: auth.Config{AccessTTL: a.AccessTTL, Leeway: a.Leeway, RefreshTTL: a.RefreshTTL, SessionMaxAge: a.SessionMaxAge,
			BcryptCost: a.BcryptCost, LockoutThreshold: a.LockoutThreshold, LockoutDuration: a.LockoutDuration,
			DefaultTenant: a.DefaultTenant, FailDelay: a.FailedLoginDelay}})
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	tenants, err := tenant.New(ctx, tenant.Deps{DB: conn, KV: store, Users: tenantUsers{authn.Service()}, Roles: authz.Service(),
		Events: events, BaseDomain: cfg.Tenancy.BaseDomain, Plans: slices.Sorted(maps.Keys(cfg.RateLimit.Plans))})
	if err != nil {
		return nil, fmt.Errorf("tenant: %w", err)
	}
	members.svc = tenants.Service()
	limits.plan = func(ctx context.Context, tenantID string) int {
		return max(cfg.RateLimit.Plans[tenants.Service().PlanOf(ctx, tenantID)], 1)
	}

	srv := httpx.New(httpx.Options{
		Logger:       log,
		PublicURL:    cfg.HTTP.PublicURL,
		MaxBodyBytes: cfg.HTTP.MaxBodyBytes,
		HSTSMaxAge:   cfg.HTTP.HSTSMaxAge,
		CORS:         cfg.CORS,
		Slots: httpx.Slots{IPLimit: limits.Before, Authenticate: authn.Authenticate, Tenant: tenants.Resolve,
			UserLimit: limits.After, Authorize: authz.Authorize},
		TrustedProxies: cfg.HTTP.TrustedProxies,
		ClientIPHeader: cfg.HTTP.ClientIPHeader,
	})
	checks := health.New(cfg.Health.Timeout, log,
		health.Check{Name: "database", Backend: conn.Dialect(), Required: true, Ping: conn.Ping},
		health.Check{Name: "cache", Backend: kvBackend(cfg), Required: true, Ping: store.Ping},
	)
	if err := srv.Mount(checks.Routes()...); err != nil {
		return nil, err
	}
	for _, routes := range [][]httpx.Route{tokens.Routes(), authn.Routes(), tenants.Routes(), authz.Routes(), extra} {
		if err := srv.Mount(routes...); err != nil {
			return nil, err
		}
	}
	if cfg.HTTP.Docs {
		if err := srv.Mount(web.DocsRoutes()...); err != nil {
			return nil, err
		}
	}

	// The document describes every route mounted above; it is built once.
	if err := limits.CheckRoutes(srv.Routes()); err != nil {
		return nil, err
	}
	var doc *openapi3.T
	doc, err = httpx.Document(httpx.Info{Title: "Gatehouse API", Version: version, ServerURL: cfg.HTTP.PublicURL,
		Description: "Sign-in, sessions, authorization, rate limits and an API gateway for a multi-tenant SaaS. " +
			"Errors use one JSON shape: {\"error\": {\"code\", \"message\", \"request_id\", \"details\"}}."}, srv.Routes())
	if err != nil {
		return nil, err
	}
	spec, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	err = srv.Mount(httpx.Route{Method: http.MethodGet, Path: "/openapi.json", Summary: "This OpenAPI document",
		Tags: []string{"docs"}, Auth: httpx.Public, Hidden: true,
		Handle: func(c echo.Context) error {
			c.Response().Header().Set("Cache-Control", "no-cache")
			return c.JSONBlob(http.StatusOK, spec)
		}})
	return &app{Server: srv, auth: authn, rbac: authz, limiter: limiter}, err
}

// Close stops what the app runs in the background.
func (a *app) Close() error { return a.limiter.Close() }

// newLimits returns the rate limiter for the key-value backend (Redis when
// there is one, else in process) and the enforcer of the configured rules.
func newLimits(cfg config.Config, log *slog.Logger, store kv.Store) (limiterCloser, *planLimits, error) {
	var limiter limiterCloser
	if r, ok := store.(*kv.Redis); ok {
		limiter = nopClose{ratelimit.NewRedis(r.Client(), cfg.Redis.Prefix, nil)}
	} else {
		limiter = ratelimit.NewMemory(nil)
	}
	rules := make([]ratelimit.Rule, 0, len(cfg.RateLimit.Policies))
	for _, p := range cfg.RateLimit.Policies {
		rules = append(rules, ratelimit.Rule{Key: p.Key, OnError: p.OnError, Policy: ratelimit.Policy{Name: p.Name,
			Algorithm: ratelimit.Algorithm(p.Algorithm), Limit: p.Limit, Period: p.Period, Burst: p.Burst}})
	}
	limits := &planLimits{}
	enf, err := ratelimit.NewEnforcer(limiter, rules, cfg.RateLimit.Anonymous, cfg.RateLimit.Authenticated,
		func(ctx context.Context, tenantID string) int { return limits.plan(ctx, tenantID) }, log)
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

// nopClose is a limiter with nothing to stop (Redis keeps the state).
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

// tenantUsers gives the tenant module what it needs of auth's accounts.
type tenantUsers struct{ a *auth.Service }

func (u tenantUsers) UserByEmail(ctx context.Context, email string) (tenant.User, error) {
	info, err := u.a.UserByEmail(ctx, email)
	return tenant.User(info), err
}

func (u tenantUsers) Users(ctx context.Context, ids []string) (map[string]tenant.User, error) {
	infos, err := u.a.Users(ctx, ids)
	out := make(map[string]tenant.User, len(infos))
	for id, info := range infos {
		out[id] = tenant.User(info)
	}
	return out, err
}

func (u tenantUsers) EndTenantSessions(ctx context.Context, tenantID, userID, reason string) error {
	return u.a.EndTenantSessions(ctx, tenantID, userID, reason)
}
