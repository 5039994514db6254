// Package web holds what Gatehouse serves to browsers, embedded in the
// binary so that every page works offline: the API reference at /docs
// (Swagger UI, vendored under docs/vendor) and, later, the admin pages.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
)

//go:embed docs
var files embed.FS

// docsCSP lets the docs page load its own scripts, styles and the OpenAPI
// document, and nothing from anywhere else. Swagger UI sets inline styles,
// hence 'unsafe-inline' for styles only.
const docsCSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; " +
	"script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// DocsRoutes serves the API reference page and its assets. The page reads
// the OpenAPI document from /openapi.json.
func DocsRoutes() []httpx.Route {
	docs, _ := fs.Sub(files, "docs")
	serve := func(c echo.Context, name, cache string) error {
		if !fs.ValidPath(name) || strings.HasSuffix(name, "/") {
			return fault.ErrNotFound
		}
		if st, err := fs.Stat(docs, name); err != nil || st.IsDir() {
			return fault.ErrNotFound
		}
		h := c.Response().Header()
		h.Set("Content-Security-Policy", docsCSP)
		h.Set("Cache-Control", cache)
		if name == "index.html" {
			// ServeFileFS would redirect .../index.html to the folder.
			page, err := fs.ReadFile(docs, name)
			if err != nil {
				return err
			}
			return c.HTMLBlob(http.StatusOK, page)
		}
		http.ServeFileFS(c.Response(), c.Request(), docs, name)
		return nil
	}
	return []httpx.Route{
		{Method: http.MethodGet, Path: "/docs", Summary: "API reference page", Tags: []string{"docs"},
			Auth: httpx.Public, Hidden: true,
			Handle: func(c echo.Context) error { return serve(c, "index.html", "no-cache") }},
		{Method: http.MethodGet, Path: "/docs/*", Summary: "API reference assets", Auth: httpx.Public, Hidden: true,
			Handle: func(c echo.Context) error { return serve(c, c.Param("*"), "public, max-age=3600") }},
	}
}
