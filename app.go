package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/config"
	"gatehouse/platform/db"
	"gatehouse/platform/health"
	"gatehouse/platform/httpx"
	"gatehouse/platform/kv"
	"gatehouse/web"
)

// newApp builds the HTTP application: the chain, every module's routes,
// the health endpoints, the OpenAPI document and the docs page. It is the
// one place that wires modules together.
func newApp(cfg config.Config, log *slog.Logger, conn *db.DB, store kv.Store, extra ...httpx.Route) (*httpx.Server, error) {
	srv := httpx.New(httpx.Options{
		Logger:       log,
		PublicURL:    cfg.HTTP.PublicURL,
		MaxBodyBytes: cfg.HTTP.MaxBodyBytes,
		HSTSMaxAge:   cfg.HTTP.HSTSMaxAge,
		CORS:         cfg.CORS,
	})
	checks := health.New(cfg.Health.Timeout, log,
		health.Check{Name: "database", Backend: conn.Dialect(), Required: true, Ping: conn.Ping},
		health.Check{Name: "cache", Backend: kvBackend(cfg), Required: true, Ping: store.Ping},
	)
	if err := srv.Mount(checks.Routes()...); err != nil {
		return nil, err
	}
	if err := srv.Mount(extra...); err != nil {
		return nil, err
	}
	if cfg.HTTP.Docs {
		if err := srv.Mount(web.DocsRoutes()...); err != nil {
			return nil, err
		}
	}

	// The document describes every route mounted above; it is built once.
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
	err = srv.Mount(httpx.Route{Method: http.MethodGet, Path: "/openapi.json", Summary: "This OpenAPI document",
		Tags: []string{"docs"}, Auth: httpx.Public, Hidden: true,
		Handle: func(c echo.Context) error {
			c.Response().Header().Set("Cache-Control", "no-cache")
			return c.JSONBlob(http.StatusOK, spec)
		}})
	return srv, err
}
