package httpx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

// maxRequestIDLen bounds an incoming X-Request-ID; a longer one is replaced.
const maxRequestIDLen = 128

// RequestID returns the id of the request being served.
func RequestID(c echo.Context) string {
	return c.Response().Header().Get(echo.HeaderXRequestID)
}

// front is the global part of the chain, run for every request, routed or
// not: request id, access log, panic recovery and security headers, in that
// order. They are one middleware because Echo rebuilds each global
// middleware's closure on every request; route steps are composed at Mount.
func (s *Server) front(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now() // one clock read for the request id and the log
		setRequestID(c, start)
		s.securityHeaders(c)
		// Deferred: a response aborted with http.ErrAbortHandler (the
		// gateway's, when an upstream fails mid-body) panics past recover,
		// and still gets its line.
		defer s.accessLog(c, start)
		// A route counts its requests in its own metrics step (Mount); a
		// request no route matches is counted here.
		h := next
		if mw := s.unmatchedStep(c); mw != nil {
			h = mw(next)
		}
		if err := s.recover(c, h); err != nil {
			c.Error(err)
		}
		return nil
	}
}

// setRequestID keeps a sane incoming X-Request-ID (so a proxy's id follows
// the request through) and otherwise makes one; either way it is echoed back.
func setRequestID(c echo.Context, now time.Time) {
	id := c.Request().Header.Get(echo.HeaderXRequestID)
	if !saneRequestID(id) {
		id = newRequestID(now)
	}
	c.Response().Header()[echo.HeaderXRequestID] = []string{id}
}

// saneRequestID accepts 1 to 128 visible ASCII characters: nothing that
// could split a header or a log line, or bloat either.
func saneRequestID(id string) bool {
	if len(id) == 0 || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// newRequestID returns a UUIDv7 for a request that arrived at now:
// time-ordered, so ids sort like the logs. Request ids are not secrets, so
// the fast runtime generator is enough and spares a system call per request.
func newRequestID(now time.Time) string {
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[0:8], uint64(now.UnixMilli())<<16|rand.Uint64()&0xffff)
	binary.BigEndian.PutUint64(u[8:16], rand.Uint64())
	u[6] = 0x70 | u[6]&0x0f // version 7
	u[8] = 0x80 | u[8]&0x3f // RFC 9562 variant
	return u.String()
}

// accessLog writes one structured line per request, after the error handler
// has answered, so the status logged is the status sent. The query string is
// left out: it can carry codes and tokens. Behind an AsyncHandler (as in the
// server) the line's fields are only queued: the line is formatted and
// written on the log's goroutine, not the request's (accesslog.go).
func (s *Server) accessLog(c echo.Context, start time.Time) {
	req, res := c.Request(), c.Response()
	ctx := req.Context()
	if !s.logh.Enabled(ctx, slog.LevelInfo) {
		return
	}
	end := time.Now()
	l := accessLine{at: end, id: res.Header().Get(echo.HeaderXRequestID), method: truncate(req.Method, 32),
		path: truncate(req.URL.Path, 256), route: c.Path(), status: res.Status, bytes: res.Size,
		dur: end.Sub(start), ip: c.RealIP()}
	if a, ok := s.logh.(*AsyncHandler); ok {
		a.access(&l)
		return
	}
	_ = s.logh.Handle(ctx, l.record())
}

var errPanic = errors.New("handler panicked")

// recover runs next, turning a panic into a 500 in the error model; the
// panic value and stack go to the log only.
func (s *Server) recover(c echo.Context, next echo.HandlerFunc) (err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if r == http.ErrAbortHandler {
			panic(r) // the server's own way to abort a response
		}
		s.log.Error("panic", "request_id", RequestID(c), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		err = errPanic
	}()
	return next(c)
}

// Security header values, shared by every response. Each slice has len ==
// cap, so a handler's Header().Add copies rather than writing into them.
var (
	hdrNosniff  = []string{"nosniff"}
	hdrDeny     = []string{"DENY"}
	hdrCSP      = []string{"default-src 'none'; frame-ancestors 'none'"}
	hdrReferrer = []string{"no-referrer"}
	hdrNoStore  = []string{"no-store"}
	hdrSameOrig = []string{"same-origin"}
)

// securityHeaders sets the headers every API response carries. API answers
// are JSON, never pages: the CSP forbids everything and no cache may keep
// them. Handlers that serve pages (the docs) set their own CSP and caching.
func (s *Server) securityHeaders(c echo.Context) {
	h := c.Response().Header()
	h["X-Content-Type-Options"] = hdrNosniff
	h["X-Frame-Options"] = hdrDeny
	h["Content-Security-Policy"] = hdrCSP
	h["Referrer-Policy"] = hdrReferrer
	h["Cache-Control"] = hdrNoStore
	h["Cross-Origin-Opener-Policy"] = hdrSameOrig
	if s.hsts != nil && (c.Request().TLS != nil || s.httpsPublic) {
		h["Strict-Transport-Security"] = s.hsts
	}
}
