// Package gateway is Gatehouse's API gateway: it forwards the routes of
// configs/routes.yaml to upstream services, behind the same chain as every
// other route (authentication, tenant, rate limits, authorization).
//
// Each route is a path prefix served by a set of upstreams. A request that
// passes the chain is checked (path, host, upgrade), stripped of anything
// a client could use to impersonate the gateway, given the caller's
// identity in X-Gatehouse-* headers, and streamed to the next healthy
// upstream, round robin. Bodies stream both ways: an upload or a download
// of any size goes through in fixed-size pooled buffers. Each upstream has
// a circuit breaker fed by the requests it serves and, optionally, by
// active health checks.
package gateway

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/httpx"
)

// Gateway serves the proxied routes.
type Gateway struct {
	routes    []*route
	proxy     *httputil.ReverseProxy
	transport *direct
	signer    Signer
	roles     Roles
	cookies   []string // see Deps.Cookies
	observe   func(route string, d time.Duration, outcome string)
	log       *slog.Logger
	now       func() time.Time // the breakers' clock

	stop      context.CancelFunc
	checkers  sync.WaitGroup
	closeOnce sync.Once
}

// route is a RouteConfig made ready to serve.
type route struct {
	cfg     RouteConfig
	auth    httpx.Auth
	replace string // what takes the place of the prefix upstream
	pool    pool
	health  *url.URL // the health check's path and query; nil for none
	// nested are the prefixes of the routes under this one. A path that
	// begins with one in another letter case reaches this route, since
	// route matching heeds case; an upstream that ignores it would serve
	// the nested route's resource under this route's auth, so such a path
	// is refused.
	nested []string
	// reserved are the Deps.Reserved prefixes under this route's prefix.
	reserved []string
}

// New returns a gateway serving cfg, which it checks as Parse does, and
// starts the active health checks. Close stops them.
func New(cfg *Config, d Deps) (*Gateway, error) {
	return newGateway(cfg, d, time.Now)
}

// newGateway is New with the breakers' clock, which tests move by hand.
func newGateway(cfg *Config, d Deps, now func() time.Time) (*Gateway, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	// Checked on a copy: check fills in defaults, and the caller's
	// configuration stays as it was given.
	own := Config{Routes: append([]RouteConfig(nil), cfg.Routes...)}
	if err := own.check(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	buffers := &bufferPool{}
	g := &Gateway{signer: d.Signer, roles: d.Roles, cookies: d.Cookies, observe: d.Observe, log: d.Log, now: now, transport: newTransport(buffers)}
	g.proxy = &httputil.ReverseProxy{
		Rewrite:   g.rewrite,
		Transport: g.transport,
		// 0: a response with a known length goes out in one write.
		// ReverseProxy still flushes every write of a streamed one
		// (text/event-stream, or no Content-Length), so SSE and
		// chunked streams are not held back. -1 cost every response
		// a separate early flush of its headers on a timer goroutine.
		FlushInterval:  0,
		BufferPool:     buffers,
		ModifyResponse: g.modifyResponse,
		ErrorHandler:   g.proxyError,
		ErrorLog:       log.New(slogWriter{d.Log}, "", 0),
	}
	for _, rc := range own.Routes {
		if rc.InternalToken && d.Signer == nil {
			return nil, fmt.Errorf("gateway: route %q: internal_token: no signer is configured", rc.Name)
		}
		if d.WriteTimeout > 0 && rc.Timeout >= d.WriteTimeout {
			return nil, fmt.Errorf("gateway: route %q: timeout %s must be below http.write_timeout (%s), or its 504 could not be sent",
				rc.Name, rc.Timeout, d.WriteTimeout)
		}
		rt := &route{cfg: rc, replace: rc.Prefix}
		for _, p := range d.Reserved {
			if underPrefix(rc.Prefix, p) {
				return nil, fmt.Errorf("gateway: route %q: prefix %s is under %s, which Gatehouse keeps to itself", rc.Name, rc.Prefix, p)
			}
			if underPrefix(p, rc.Prefix) {
				rt.reserved = append(rt.reserved, p)
			}
		}
		switch {
		case rc.StripPrefix || rc.Rewrite == "/":
			rt.replace = ""
		case rc.Rewrite != "":
			rt.replace = rc.Rewrite
		}
		switch rc.Auth {
		case "public":
			rt.auth = httpx.Public
		case "authenticated":
			rt.auth = httpx.Authenticated
		default:
			rt.auth = httpx.Permission(rc.Auth)
		}
		for _, raw := range rc.Upstreams {
			u, _ := parseUpstream(raw) // checked above
			rt.pool.ups = append(rt.pool.ups, &upstream{url: u, name: raw, max: int32(rc.MaxRequests)})
		}
		if rc.HealthCheck.Path != "" {
			rt.health, _ = url.Parse(rc.HealthCheck.Path) // checked above
		}
		g.routes = append(g.routes, rt)
	}
	for _, rt := range g.routes {
		for _, o := range g.routes {
			if len(o.cfg.Prefix) > len(rt.cfg.Prefix) && underPrefix(o.cfg.Prefix, rt.cfg.Prefix) {
				rt.nested = append(rt.nested, o.cfg.Prefix)
			}
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	g.stop = stop
	for _, rt := range g.routes {
		if rt.health == nil {
			continue
		}
		for _, up := range rt.pool.ups {
			g.checkers.Add(1)
			go g.watch(ctx, rt, up)
		}
	}
	return g, nil
}

// newTransport returns the one transport every route shares, so idle
// connections to an upstream are reused across requests and routes: the
// direct path (transport.go) in front of an http.Transport. It speaks
// HTTP/1.1 only, which WebSocket upgrades need. It leaves Accept-Encoding
// to the client, so bodies pass through as the upstream sent them, and
// ignores the proxy environment variables: upstreams are reached
// directly. The route's timeout is enforced per request, by the handler,
// up to the response headers. The http.Transport's connections copy
// request bodies with the proxy's pooled buffers.
func newTransport(buffers httputil.BufferPool) *direct {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return newDirect(&http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &pooledConn{Conn: c, pool: buffers}, nil
		},
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		// An upstream's headers are bounded on both paths: 1 MiB is far
		// beyond any real response's, and a tenth of the default.
		MaxResponseHeaderBytes: 1 << 20,
	}, dialer.DialContext)
}

// Routes declares one route per method for each proxied prefix and one
// for everything under it. The chain in front of them does what Auth and
// Limits say before the proxy sees a request.
func (g *Gateway) Routes() []httpx.Route {
	var routes []httpx.Route
	tags := []string{"gateway"}
	for _, rt := range g.routes {
		h := g.handler(rt)
		c := &rt.cfg
		for _, m := range c.Methods {
			for _, p := range [...]string{c.Prefix, c.Prefix + "/*"} {
				routes = append(routes, httpx.Route{Method: m, Path: p, Summary: "Proxied to " + c.Name, Tags: tags,
					Auth: rt.auth, Limits: c.Limits, MaxBodyBytes: c.MaxBodyBytes, Handle: h})
			}
		}
	}
	return routes
}

// Close stops the health checks and closes idle upstream connections. It
// may be called more than once.
func (g *Gateway) Close() {
	g.closeOnce.Do(func() {
		g.stop()
		g.checkers.Wait()
		g.transport.Close()
	})
}

// handler returns the Echo handler of a route.
func (g *Gateway) handler(rt *route) echo.HandlerFunc {
	return func(c echo.Context) error { return g.serve(c, rt) }
}

// slogWriter sends the ReverseProxy's own log lines (a response body
// broken mid-copy) to the structured log.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Warn("gateway: proxy", "error", string(trimNewline(p)))
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}
