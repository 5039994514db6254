package httpx

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"gatehouse/platform/config"
)

// A Slot builds the middleware one step of the chain puts in front of a
// route, or returns nil when that step has nothing to do for the route. Slots
// run once, at mount time, so a route pays only for the steps it uses.
type Slot func(Route) echo.MiddlewareFunc

// Slots are the route-level steps of the chain, in the order they run.
// Later capabilities fill them; an empty slot is skipped.
type Slots struct {
	Metrics      Slot
	IPLimit      Slot
	Authenticate Slot
	Tenant       Slot
	UserLimit    Slot
	Authorize    Slot
	Audit        Slot
}

// Options configure a Server.
type Options struct {
	Logger       *slog.Logger
	PublicURL    string
	MaxBodyBytes int64
	HSTSMaxAge   time.Duration
	CORS         config.CORS
	Slots        Slots
	// TrustedProxies are the peers (IPs or CIDRs) whose ClientIPHeader
	// (x-forwarded-for or x-real-ip) names the client.
	TrustedProxies []string
	ClientIPHeader string
	// Observe, if set, is told of every error answer with its status and
	// code (audit of denials, error metrics). It must not block.
	Observe func(c echo.Context, status int, code string)
}

// Server is the Echo instance with Gatehouse's chain and error handler.
type Server struct {
	echo   *echo.Echo
	log    *slog.Logger
	logh   slog.Handler // the access log writes to the handler directly (Lossy if async)
	opts   Options
	routes []Route
	// mounted holds the method and Echo path of every route, to tell the
	// requests no route matches (answered 404 or 405 by the router).
	mounted map[[2]string]struct{}
	// unmatched holds the metrics step of those requests, by method
	// (unmatchedMethod), made on first use.
	unmatched sync.Map
	// hsts is the Strict-Transport-Security value (nil: never sent). It
	// goes on TLS responses, and on all of them when the public URL is
	// https, since TLS then ends at a proxy in front.
	hsts        []string
	httpsPublic bool
}

// New returns a Server with the global steps of the chain installed:
// request id, access log, panic recovery, security headers, then CORS. The
// access log wraps recovery so that a panicking request is logged with the
// 500 it was answered with.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{echo: echo.New(), log: opts.Logger, logh: opts.Logger.Handler(), opts: opts,
		mounted: map[[2]string]struct{}{}, httpsPublic: strings.HasPrefix(opts.PublicURL, "https://")}
	if a, ok := s.logh.(*AsyncHandler); ok {
		// The access log may drop lines rather than wait for a full
		// queue; the server's other lines may not.
		s.logh = a.Lossy()
	}
	e := s.echo
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = ipExtractor(opts.TrustedProxies, opts.ClientIPHeader)
	e.HTTPErrorHandler = s.handleError
	if opts.HSTSMaxAge > 0 {
		s.hsts = []string{"max-age=" + strconv.Itoa(int(opts.HSTSMaxAge.Seconds())) + "; includeSubDomains"}
	}
	e.Use(s.front)
	if c := opts.CORS; len(c.AllowedOrigins) > 0 {
		e.Use(middleware.CORSWithConfig(middleware.CORSConfig{
			AllowOrigins:     c.AllowedOrigins,
			AllowCredentials: c.AllowCredentials,
			AllowMethods:     []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete},
			// X-CSRF-Token: a cookie-mode refresh from the frontend's origin.
			AllowHeaders:  []string{echo.HeaderAuthorization, echo.HeaderContentType, echo.HeaderXRequestID, "X-Tenant-ID", "X-CSRF-Token"},
			ExposeHeaders: []string{echo.HeaderXRequestID, "Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"},
			MaxAge:        int(c.MaxAge.Seconds()),
		}))
	}
	return s
}

// ServeHTTP serves a request through the chain.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// Echo returns the underlying Echo instance, for the client-IP extractor.
func (s *Server) Echo() *echo.Echo { return s.echo }

// Routes returns every mounted route, in mount order.
func (s *Server) Routes() []Route { return s.routes }

// Mount checks each route and serves it behind the route-level steps of the
// chain: metrics, body limit, then the other slots in order. A route that
// needs identity cannot be mounted while the authenticate slot is empty.
func (s *Server) Mount(routes ...Route) error {
	for _, r := range routes {
		if err := r.check(); err != nil {
			return err
		}
		if !r.Auth.IsPublic() && s.opts.Slots.Authenticate == nil {
			return fmt.Errorf("route %s %s needs authentication but no authenticator is configured", r.Method, r.Path)
		}
		for _, m := range s.routes {
			if m.Method == r.Method && m.Path == r.Path {
				return fmt.Errorf("route %s %s is declared twice", r.Method, r.Path)
			}
		}
		limit := r.MaxBodyBytes
		if limit == 0 {
			limit = s.opts.MaxBodyBytes
		}
		sl := s.opts.Slots
		// Metrics come first, so that a request the body limit refuses
		// (413) is counted like any other.
		var mws []echo.MiddlewareFunc
		if sl.Metrics != nil {
			if mw := sl.Metrics(r); mw != nil {
				mws = append(mws, mw)
			}
		}
		mws = append(mws, bodyLimit(limit))
		steps := []struct {
			slot     Slot
			identity bool // skipped by public routes
		}{
			{sl.IPLimit, false}, {sl.Authenticate, true}, {sl.Tenant, true},
			{sl.UserLimit, true}, {sl.Authorize, true}, {sl.Audit, false},
		}
		for _, st := range steps {
			if st.slot == nil || (st.identity && r.Auth.IsPublic()) {
				continue
			}
			if mw := st.slot(r); mw != nil {
				mws = append(mws, mw)
			}
		}
		// Composed once here: Echo's own route middleware would rebuild
		// the closures on every request.
		h := r.Handle
		for i := len(mws) - 1; i >= 0; i-- {
			h = mws[i](h)
		}
		s.echo.Add(r.Method, r.echoPath(), h)
		s.routes = append(s.routes, r)
		s.mounted[[2]string{r.Method, r.echoPath()}] = struct{}{}
	}
	return nil
}

// UnmatchedRoute is the route template metrics give the requests no route
// matches: one bounded label, never the path requested.
const UnmatchedRoute = "unmatched"

// unmatchedStep returns the metrics step for a request no route matches,
// or nil if it was matched or there are no metrics.
func (s *Server) unmatchedStep(c echo.Context) echo.MiddlewareFunc {
	if s.opts.Slots.Metrics == nil {
		return nil
	}
	method := c.Request().Method
	if _, ok := s.mounted[[2]string{method, c.Path()}]; ok {
		return nil
	}
	method = unmatchedMethod(method)
	if mw, ok := s.unmatched.Load(method); ok {
		return mw.(echo.MiddlewareFunc)
	}
	mw := s.opts.Slots.Metrics(Route{Method: method, Path: UnmatchedRoute, Status: http.StatusNotFound})
	if mw == nil {
		mw = func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	got, _ := s.unmatched.LoadOrStore(method, mw)
	return got.(echo.MiddlewareFunc)
}

// unmatchedMethod bounds the method label of unmatched requests: a client
// may send any token as a method.
func unmatchedMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// bodyLimit refuses bodies over n bytes: at once when Content-Length says so,
// else when reading passes the limit (Bind answers 413 then).
func bodyLimit(n int64) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			if r.ContentLength > n {
				return errBodyTooLarge
			}
			if r.Body != nil && r.Body != http.NoBody {
				r.Body = http.MaxBytesReader(c.Response(), r.Body, n)
			}
			return next(c)
		}
	}
}

// ipExtractor returns how the client's address is found. Echo's default
// believes X-Forwarded-For from anyone, and its trust options believe
// loopback and private peers: both are turned off, so only the configured
// proxies are believed, and from anyone else the header changes nothing.
func ipExtractor(trusted []string, header string) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, t := range trusted {
		if !strings.Contains(t, "/") {
			if ip := net.ParseIP(t); ip != nil && ip.To4() != nil {
				t += "/32"
			} else {
				t += "/128"
			}
		}
		if _, n, err := net.ParseCIDR(t); err == nil { // validated by config
			opts = append(opts, echo.TrustIPRange(n))
		}
	}
	if header == "x-real-ip" {
		return echo.ExtractIPFromRealIPHeader(opts...)
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// truncate bounds attacker-controlled strings before they reach a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
