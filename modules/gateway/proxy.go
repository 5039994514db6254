package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/httpx"
)

// statusClientClosed is logged, never sent, when the client leaves before
// the upstream answers (nginx's 499).
const statusClientClosed = 499

// errTimeout cancels an exchange whose route timeout passed.
var errTimeout = errors.New("no response headers within the route timeout")

// errIdle cancels an exchange whose answer made no progress within the
// route's idle timeout.
var errIdle = errors.New("no progress on the answer within the route's idle timeout")

// errBodyBroken marks an exchange whose response body broke off after its
// headers went out, for outcome.
var errBodyBroken = errors.New("the response body broke off")

// exchangeKey finds the exchange in a request's context.
type exchangeKey struct{}

// exchange is one proxied request: what the handler works out before
// forwarding, which the ReverseProxy hooks read from the request context,
// and what they report back. It is also the ResponseWriter handed to the
// ReverseProxy, so Echo's response keeps the status and size it writes.
type exchange struct {
	g     *Gateway
	rt    *route
	c     echo.Context
	res   *echo.Response
	id    *httpx.Identity
	reqID string
	token string
	// path and rawPath are the upstream path after the route's prefix
	// mapping, before the upstream's base path; rawPath is empty when the
	// client's path had no unusual escaping.
	path, rawPath string
	ctx           context.Context // the exchange's context; its cause says why it ended
	cancel        context.CancelCauseFunc
	// timer is the route timeout until the response headers arrive, then
	// the idle timeout, pushed back by every read of the body.
	timer *time.Timer
	// idle: the timer is the idle timeout now. Set before it is
	// re-armed, read by its func on the timer's goroutine.
	idle     atomic.Bool
	upBody   idleBody    // the response body, watched for progress
	stream   bool        // the answer is an event stream
	up       *upstream   // the upstream of the current attempt
	err      error       // the current attempt's error, from the ReverseProxy
	answered bool        // the upstream's response headers arrived
	hint     http.Header // an informational response's headers (see Header)
	hints    int         // informational responses from the upstream
	hijacked bool        // the connection was taken over (an upgrade)
	body     body
}

// serve forwards one request to the route's upstreams.
func (g *Gateway) serve(c echo.Context, rt *route) error {
	req := c.Request()
	if rt.cfg.Host != "" && !hostMatches(req.Host, rt.cfg.Host) {
		return errNoRoute
	}
	if !safePath(req.URL) || !safeQuery(req.URL.RawQuery) {
		return ErrInvalidPath
	}
	for _, p := range rt.reserved {
		if underPrefix(req.URL.Path, p) {
			return errNoRoute // see Deps.Reserved
		}
	}
	if len(rt.nested) > 0 {
		skel := skeleton(req.URL.Path)
		for _, p := range rt.nested {
			if underPrefix(skel, p) {
				return ErrInvalidPath // p in another letter case or form: see route.nested and skeleton
			}
		}
	}
	if upg := req.Header.Get("Upgrade"); upg != "" && (!rt.cfg.WebSocket || !strings.EqualFold(upg, "websocket")) {
		return ErrUpgradeRefused
	}
	rest, ok := strings.CutPrefix(req.URL.Path, rt.cfg.Prefix)
	if !ok || rest != "" && rest[0] != '/' {
		return errNoRoute // Echo's match makes this impossible; the check keeps it so
	}
	ex := &exchange{g: g, rt: rt, c: c, res: c.Response(), id: httpx.IdentityOf(c),
		reqID: httpx.RequestID(c), path: rt.replace + rest}
	if req.URL.RawPath != "" {
		// The prefix is plain characters, so it begins the raw path too.
		ex.rawPath = rt.replace + strings.TrimPrefix(req.URL.RawPath, rt.cfg.Prefix)
	}
	if ex.id != nil && g.roles != nil {
		// The identity is this request's own; its roles came from the
		// token and may be stale, and an upstream may decide by them.
		roles, err := g.roles.CurrentRoles(req.Context(), ex.id.TenantID, ex.id.UserID)
		if err != nil {
			return fmt.Errorf("gateway: route %s: current roles: %w", rt.cfg.Name, err)
		}
		ex.id.Roles = roles
	}
	if rt.cfg.InternalToken {
		tok, err := g.signer.SignInternal(req.Context(), rt.cfg.Name, ex.id)
		if err != nil {
			return fmt.Errorf("gateway: route %s: internal token: %w", rt.cfg.Name, err)
		}
		ex.token = tok
	}

	ctx, cancel := context.WithCancelCause(context.WithValue(req.Context(), exchangeKey{}, ex))
	defer cancel(nil)
	ex.ctx, ex.cancel = ctx, cancel
	// One timer for the whole exchange, retries included: the route
	// timeout until the response headers arrive, then the idle timeout,
	// so a stream may run as long as it needs while it makes progress.
	ex.timer = time.AfterFunc(rt.cfg.Timeout, func() {
		if ex.idle.Load() {
			cancel(errIdle)
			return
		}
		cancel(errTimeout)
		if !ex.body.done.Load() {
			// The transport waits for its read of the body to end, and a
			// client that stalls would hold the handler (and its place
			// under max_requests) until the server's read timeout: the
			// read ends now. The connection cannot serve another request
			// anyway, with its body unread.
			_ = http.NewResponseController(ex.res.Writer).SetReadDeadline(time.Now())
		}
	})
	defer ex.timer.Stop()
	out := req.WithContext(ctx)

	// A retry is safe only for a request the upstream may see twice and
	// that has no body to send again.
	retries := 0
	if idempotent(req.Method) && req.ContentLength == 0 {
		retries = rt.cfg.Retries
	}
	var tried uint64
	var last error
	for attempt := 0; ; attempt++ {
		up, full := rt.pool.pick(g.now(), &tried)
		if up == nil {
			switch {
			case last != nil:
				return last
			case full:
				g.report(rt.cfg.Name, 0, "saturated")
				return unavailable{after: time.Second}
			}
			g.report(rt.cfg.Name, 0, "circuit_open")
			return unavailable{after: rt.pool.retryAfter(g.now())}
		}
		ex.up, ex.err = up, nil
		began := time.Now()
		func() {
			// Deferred: the ReverseProxy panics (http.ErrAbortHandler) when
			// a body breaks off after the headers went out, either way; the
			// report below is then skipped, so this one makes it.
			broken := true
			defer func() {
				up.done()
				if broken {
					ex.err = errBodyBroken
					if context.Cause(ctx) == errIdle {
						g.log.Warn("gateway: answer cut off: no progress within the route's idle_timeout",
							"route", rt.cfg.Name, "upstream", up.name, "request_id", ex.reqID,
							"idle_timeout", rt.cfg.IdleTimeout.String())
					}
					g.report(rt.cfg.Name, time.Since(began), outcome(ex, req))
				}
			}()
			g.proxy.ServeHTTP(ex, out)
			broken = false
		}()
		g.report(rt.cfg.Name, time.Since(began), outcome(ex, req))
		if ex.err == nil {
			return nil
		}
		var retry bool
		retry, last = g.failure(ex, req)
		if last == nil || !retry || attempt >= retries {
			return last
		}
	}
}

// failure deals with an attempt that ended in an error: it records it
// against the upstream, logs it, and returns whether another upstream may
// be tried and the error to answer with (nil when no answer can or need be
// sent).
func (g *Gateway) failure(ex *exchange, in *http.Request) (retry bool, answer error) {
	err := ex.err
	switch {
	case ex.hijacked || ex.res.Committed:
		// The response has begun: nothing more can be said to the client.
		ex.up.release()
		g.log.Warn("gateway: exchange broken after the response began", "route", ex.rt.cfg.Name,
			"upstream", ex.up.name, "request_id", ex.reqID, "error", err.Error())
		return false, nil
	case context.Cause(ex.ctx) == errTimeout && !ex.body.done.Load():
		// The time ran out while the client was still sending its body:
		// a slow client, not a slow upstream, whose breaker it must not
		// be able to open. (Cutting its read off also ends the request's
		// context, so this comes before the client-left case.)
		ex.up.release()
		return false, ErrRequestTimeout
	case in.Context().Err() != nil:
		// The client left: that says nothing about the upstream.
		ex.up.release()
		ex.res.Status = statusClientClosed
		return false, nil
	case ex.body.tooLarge.Load():
		ex.up.release()
		return false, &http.MaxBytesError{Limit: ex.rt.cfg.MaxBodyBytes}
	case ex.body.failed.Load():
		ex.up.release()
		return false, errBadBody
	}
	if context.Cause(ex.ctx) == errInformational {
		err = errInformational // http.Transport reports only that it was cancelled
	}
	timeout := errors.Is(err, errTimeout) || context.Cause(ex.ctx) == errTimeout || errors.Is(err, context.DeadlineExceeded)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		timeout = true
	}
	g.upstreamFailed(ex, err.Error())
	if timeout {
		return false, ErrGatewayTimeout
	}
	// Only an upstream that never answered leaves the request unseen, so
	// only then may one fit to retry go to another. One that sent the
	// client informational responses has answered: the client has them,
	// and the next upstream's would be counted with them.
	return !ex.answered && ex.hints == 0, ErrBadGateway
}

// upstreamFailed records a failure of the current upstream and logs it:
// one line, without headers or tokens.
func (g *Gateway) upstreamFailed(ex *exchange, reason string) {
	opened := ex.up.failed(g.now(), ex.rt.cfg.Breaker)
	g.log.Warn("gateway: upstream failed", "route", ex.rt.cfg.Name, "upstream", ex.up.name,
		"request_id", ex.reqID, "error", reason, "marked_down", opened)
}

// report tells Deps.Observe of an attempt.
func (g *Gateway) report(route string, d time.Duration, outcome string) {
	if g.observe != nil {
		g.observe(route, d, outcome)
	}
}

// outcome names how an attempt ended, from a fixed list (metric labels).
func outcome(ex *exchange, in *http.Request) string {
	switch {
	case ex.err == nil && ex.res.Status >= 500:
		return "status_5xx"
	case ex.err == nil:
		return "ok"
	case in.Context().Err() != nil:
		return "canceled"
	case errors.Is(ex.err, errTimeout) || context.Cause(ex.ctx) == errTimeout || context.Cause(ex.ctx) == errIdle ||
		errors.Is(ex.err, context.DeadlineExceeded):
		return "timeout"
	}
	return "error"
}

// idempotent reports whether a request with this method may be sent twice.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// rewrite is the ReverseProxy's Rewrite hook: it aims the outgoing request
// at the attempt's upstream and sets the headers the upstream may trust.
// The ReverseProxy has already removed the hop-by-hop headers (keeping a
// WebSocket upgrade) and the client's Forwarded and X-Forwarded-* headers.
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	ex := pr.In.Context().Value(exchangeKey{}).(*exchange)
	in, out, base := pr.In, pr.Out, ex.up.url
	out.URL.Scheme, out.URL.Host = base.Scheme, base.Host
	out.URL.Path, out.URL.RawPath = base.Path+ex.path, ""
	if ex.rawPath != "" {
		out.URL.RawPath = base.Path + ex.rawPath
	}
	if out.URL.Path == "" {
		out.URL.Path = "/"
	}
	// Passed as sent: the ReverseProxy drops parameters it cannot parse,
	// but the gateway decides nothing by the query, so the upstream's
	// reading is the only one.
	out.URL.RawQuery = escapeHigh(in.URL.RawQuery)
	out.Host = "" // the upstream's own name; the client's goes in X-Forwarded-Host

	h := out.Header
	for k := range h {
		if gatehouseHeader(k) || spoofable(k) {
			delete(h, k)
		}
	}
	if !ex.rt.cfg.PassAuthorization {
		delete(h, "Authorization")
	}
	ip := ex.c.RealIP()
	// The client's own X-Forwarded-For is not passed on: unless it came
	// through a trusted proxy it is whatever the client wrote. RealIP
	// already read it if the peer is trusted.
	h.Set("X-Forwarded-For", ip)
	h.Set("X-Real-Ip", ip)
	h.Set("X-Forwarded-Host", in.Host)
	h.Set("X-Forwarded-Proto", proto(in, ip))
	h.Set("X-Request-Id", ex.reqID)
	if id := ex.id; id != nil {
		h.Set("X-Gatehouse-User", id.UserID)
		h.Set("X-Gatehouse-Tenant", id.TenantID)
		h.Set("X-Gatehouse-Roles", strings.Join(id.Roles, ","))
		// The caller may hold only the ":own" form of the route's
		// permission: the upstream must then serve its own resources only.
		if id.Scope != "" {
			h.Set("X-Gatehouse-Scope", id.Scope)
		}
	}
	if ex.token != "" {
		h.Set("X-Gatehouse-Token", ex.token)
	}
	if out.Body != nil && out.Body != http.NoBody {
		ex.body.rc = out.Body
		out.Body = &ex.body
	} else {
		ex.body.done.Store(true)
	}
}

// proto is the scheme the client used: TLS here, or what a trusted proxy
// in front says. A trusted proxy spoke for the client when the client IP
// differs from the peer's, since RealIP reads headers only from trusted
// peers.
func proto(in *http.Request, clientIP string) string {
	if in.TLS != nil {
		return "https"
	}
	if peer, _, err := net.SplitHostPort(in.RemoteAddr); err == nil && peer != clientIP {
		if p := in.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
			return p
		}
	}
	return "http"
}

// modifyResponse is the ReverseProxy's ModifyResponse hook, run when the
// upstream's response headers arrive: the timeout stops, the upstream's
// health is recorded, and headers the upstream sets replace the gateway's
// defaults (security headers, Cache-Control) rather than being doubled.
func (g *Gateway) modifyResponse(res *http.Response) error {
	ex := res.Request.Context().Value(exchangeKey{}).(*exchange)
	if !ex.timer.Stop() {
		return errTimeout // it fired as the headers came
	}
	ex.answered = true
	if res.StatusCode == http.StatusSwitchingProtocols {
		// The ReverseProxy refuses a switch to another protocol than the
		// one asked for, or when none was, but leaves the upstream
		// connection open; refused here, it is closed. The request's
		// Upgrade is the ReverseProxy's own: it drops the client's
		// unless it upgrades.
		asked, got := res.Request.Header.Get("Upgrade"), res.Header.Get("Upgrade")
		if asked == "" || !strings.EqualFold(got, asked) {
			return fmt.Errorf("upstream switched protocols to %q when %q was asked", got, asked)
		}
		// Written as the ReverseProxy checks them, so it cannot refuse
		// the switch after this.
		res.Header.Set("Connection", "Upgrade")
		res.Header.Set("Upgrade", asked)
	} else { // a WebSocket's body is the connection itself
		ex.idle.Store(true)
		ex.timer.Reset(ex.rt.cfg.IdleTimeout)
		ex.upBody.rc, ex.upBody.ex, ex.upBody.res = res.Body, ex, res
		res.Body = &ex.upBody
	}
	switch res.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		// Passed on as sent, but the upstream is failing.
		g.upstreamFailed(ex, res.Status)
	default:
		ex.up.succeeded()
	}
	g.dropOwnCookies(ex, res.Header) // and from the trailers at the body's end: see idleBody
	// An event stream is open-ended: the server's write timeout, meant for
	// one response, would cut it off. Each of its writes gets the idle
	// timeout instead (Write).
	ex.stream = strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream")
	h := ex.res.Header()
	for k := range res.Header {
		delete(h, k)
	}
	return nil
}

// dropOwnCookies removes the Set-Cookie lines for Gatehouse's cookies
// from an upstream's response headers or trailers, and logs it.
func (g *Gateway) dropOwnCookies(ex *exchange, h http.Header) {
	sc := h["Set-Cookie"]
	if len(sc) == 0 || len(g.cookies) == 0 {
		return
	}
	kept := slices.DeleteFunc(slices.Clone(sc), g.ownCookie)
	if len(kept) < len(sc) {
		g.log.Warn("gateway: an upstream's Set-Cookie for a Gatehouse cookie was dropped",
			"route", ex.rt.cfg.Name, "upstream", ex.up.name, "request_id", ex.reqID)
		h["Set-Cookie"] = kept
	}
}

// ownCookie reports whether a Set-Cookie line sets one of Deps.Cookies,
// or a cookie a browser sends back as one: a cookie with no name
// ("=gatehouse_refresh=x", or "gatehouse_refresh" with no "=") is stored
// (RFC 6265bis) and sent back as its bare value, which a server reads as
// "name=value", ahead of the real one when its path is longer.
func (g *Gateway) ownCookie(line string) bool {
	pair, _, _ := strings.Cut(line, ";")
	name, value, ok := strings.Cut(pair, "=")
	if !ok {
		value = name
	}
	if !ok || strings.TrimSpace(name) == "" {
		name, _, _ = strings.Cut(value, "=")
	}
	return slices.Contains(g.cookies, strings.TrimSpace(name))
}

// proxyError is the ReverseProxy's ErrorHandler: it writes nothing, so the
// handler can try another upstream or answer in the JSON error model.
func (g *Gateway) proxyError(_ http.ResponseWriter, r *http.Request, err error) {
	ex := r.Context().Value(exchangeKey{}).(*exchange)
	ex.err = err
}

// Header, Write and WriteHeader go through Echo's response, which keeps
// the status and size for the access log.
//
// Until the upstream's final response arrives, Header is a map of its own:
// only an informational response (103 Early Hints) writes headers then,
// and the ReverseProxy clears the map after each. Echo's map keeps the
// gateway's headers (security headers, request id, rate limits, CORS) for
// the final response or an error answer.
func (ex *exchange) Header() http.Header {
	if ex.answered {
		return ex.res.Header()
	}
	if ex.hint == nil {
		ex.hint = http.Header{}
	}
	return ex.hint
}

func (ex *exchange) Write(p []byte) (int, error) {
	if ex.stream {
		_ = http.NewResponseController(ex.res.Writer).SetWriteDeadline(time.Now().Add(ex.rt.cfg.IdleTimeout))
	}
	return ex.res.Write(p)
}

func (ex *exchange) WriteHeader(code int) {
	if code >= 100 && code < 200 {
		// The ReverseProxy forwards each informational response here, and
		// http.Transport then reads any number, each with a header
		// allowance of its own: past maxInformational the exchange ends,
		// as the direct path ends it (the cancellation closes the
		// connection). This runs on the transport's reader goroutine,
		// under the ReverseProxy's lock, until RoundTrip returns.
		if ex.hints++; ex.hints > maxInformational {
			ex.cancel(errInformational)
			return
		}
		// An HTTP/1.0 client would take it for the final response
		// (RFC 9110, 15.2).
		if !ex.c.Request().ProtoAtLeast(1, 1) {
			return
		}
		// Nor may an upstream set Gatehouse's cookies this way.
		if sc := ex.hint["Set-Cookie"]; len(sc) > 0 {
			ex.hint["Set-Cookie"] = slices.DeleteFunc(slices.Clone(sc), ex.g.ownCookie)
		}
		// An informational response (103 Early Hints) goes straight out,
		// Echo would take it for the final status, with the gateway's
		// headers and its own, which are then taken off again.
		h := ex.res.Header()
		kept := make(http.Header, len(ex.hint))
		for k, v := range ex.hint {
			if old, ok := h[k]; ok {
				kept[k] = old
			}
			h[k] = v
		}
		ex.res.Writer.WriteHeader(code)
		for k := range ex.hint {
			if old, ok := kept[k]; ok {
				h[k] = old
			} else {
				delete(h, k)
			}
		}
		return
	}
	ex.res.WriteHeader(code)
}

// FlushError flushes what was written to the client.
func (ex *exchange) FlushError() error { return http.NewResponseController(ex.res.Writer).Flush() }

// Hijack takes over the client connection for an upgrade; the response
// counts as sent from then on.
func (ex *exchange) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	ex.hijacked = true
	ex.res.Status, ex.res.Committed = http.StatusSwitchingProtocols, true
	return http.NewResponseController(ex.res.Writer).Hijack()
}

// idleBody is a response body on its way to the client: each read that
// brings bytes pushes the exchange's idle timeout back. At its end the
// trailers have arrived, and go through the Set-Cookie filter before the
// ReverseProxy copies them.
type idleBody struct {
	rc  io.ReadCloser
	ex  *exchange
	res *http.Response
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.ex.timer.Reset(b.ex.rt.cfg.IdleTimeout)
	}
	if err == io.EOF {
		b.ex.g.dropOwnCookies(b.ex, b.res.Trailer)
	}
	return n, err
}

func (b *idleBody) Close() error { return b.rc.Close() }

// body is the request body on its way upstream. It notes whether reading
// it failed, or had not ended when the route's timeout ran out, so the
// client's failures (too large, broken off, too slow) are not held against
// the upstream. The transport reads it on its own goroutine, hence the
// atomics.
type body struct {
	rc       io.ReadCloser
	done     atomic.Bool // read to its end, or there is none
	failed   atomic.Bool
	tooLarge atomic.Bool
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.done.Store(true)
	case err != nil:
		b.fail(err)
	}
	return n, err
}

func (b *body) fail(err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		b.tooLarge.Store(true)
	}
	b.failed.Store(true)
}

func (b *body) Close() error { return b.rc.Close() }

// pooledConn is an upstream connection that copies a request body into
// itself with a pooled buffer. The transport hands a body of known length
// to the connection's ReadFrom, and net.TCPConn's allocates a fresh 32 KiB
// buffer for every body it cannot splice, which is every proxied one.
type pooledConn struct {
	net.Conn
	pool httputil.BufferPool
}

func (c *pooledConn) ReadFrom(r io.Reader) (int64, error) {
	buf := c.pool.Get()
	defer c.pool.Put(buf)
	return io.CopyBuffer(writerOnly{c.Conn}, r, buf)
}

// writerOnly hides a ReadFrom, so CopyBuffer uses the buffer it is given.
type writerOnly struct{ io.Writer }

// bufSize is the size of the copy buffers.
const bufSize = 32 << 10

// bufferPool lends 32 KiB copy buffers. It keeps array pointers, which
// fit in an interface without an allocation of their own.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if a, ok := b.p.Get().(*[bufSize]byte); ok {
		return a[:]
	}
	return new([bufSize]byte)[:]
}

func (b *bufferPool) Put(buf []byte) {
	if len(buf) == bufSize {
		b.p.Put((*[bufSize]byte)(buf))
	}
}
