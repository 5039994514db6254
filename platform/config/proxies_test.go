package config_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/config"
	"gatehouse/platform/httpx"
)

// What a too-wide http.trusted_proxies does, seen through the server that
// uses it: if the IPv4-mapped "::ffff:0.0.0.0/96" (every IPv4 address)
// were accepted, any IPv4 client would count as a proxy and name its own
// address, and so its rate-limit key and audit IP, in X-Forwarded-For. A
// separate test package, as httpx imports config.
func TestTrustedProxiesCannotTakeInClients(t *testing.T) {
	for _, proxy := range []string{"0.0.0.0/0", "::ffff:0.0.0.0/96", "::ffff:128.0.0.0/97"} {
		cfg := config.Default()
		cfg.HTTP.TrustedProxies = []string{proxy}
		if err := cfg.Validate(); err != nil {
			continue // refused at start: the outcome wanted
		}
		srv := httpx.New(httpx.Options{Logger: slog.New(slog.DiscardHandler), PublicURL: cfg.HTTP.PublicURL,
			MaxBodyBytes: cfg.HTTP.MaxBodyBytes, TrustedProxies: cfg.HTTP.TrustedProxies, ClientIPHeader: cfg.HTTP.ClientIPHeader})
		if err := srv.Mount(httpx.Route{Method: http.MethodGet, Path: "/ip", Auth: httpx.Public, Hidden: true,
			Handle: func(c echo.Context) error { return c.String(http.StatusOK, c.RealIP()) }}); err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodGet, "/ip", nil)
		r.RemoteAddr = "203.0.113.9:40000" // a client on the internet
		r.Header.Set("X-Forwarded-For", "10.1.2.3")
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		if got := w.Body.String(); got != "203.0.113.9" {
			t.Errorf("trusted_proxies [%s] passed validation, and a direct client at 203.0.113.9 is seen as %q", proxy, got)
		}
	}
}
