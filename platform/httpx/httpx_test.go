package httpx

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"gatehouse/platform/config"
	"gatehouse/platform/fault"
)

type createReq struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

func (r createReq) Validate() error {
	if r.Name == "" {
		return fault.Field("name", "name is required")
	}
	return nil
}

type createResp struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

var errTeapot = fault.New(fault.Conflict, "already_there", "it exists")

// testRoutes exercise every path through the chain.
func testRoutes() []Route {
	return []Route{
		{Method: http.MethodGet, Path: "/ok", Auth: Public, Handle: func(c echo.Context) error {
			return c.JSON(http.StatusOK, map[string]string{"ok": "yes"})
		}},
		{Method: http.MethodPost, Path: "/items", Auth: Public, In: createReq{}, Out: createResp{}, Status: http.StatusCreated,
			Handle: func(c echo.Context) error {
				var req createReq
				if err := Bind(c, &req); err != nil {
					return err
				}
				return c.JSON(http.StatusCreated, createResp{ID: "1", Name: req.Name})
			}},
		{Method: http.MethodGet, Path: "/items/{id}", Auth: Public, Out: createResp{}, Handle: func(c echo.Context) error {
			if c.Param("id") == "taken" {
				return fmt.Errorf("lookup %s: %w", c.Param("id"), errTeapot)
			}
			return c.JSON(http.StatusOK, createResp{ID: c.Param("id")})
		}},
		{Method: http.MethodGet, Path: "/panic", Auth: Public, Handle: func(c echo.Context) error {
			panic("secret-panic-value")
		}},
		{Method: http.MethodGet, Path: "/goerr", Auth: Public, Handle: func(c echo.Context) error {
			return errors.New("dial tcp 10.0.0.5:5432: password=hunter2 refused")
		}},
		{Method: http.MethodGet, Path: "/wait", Auth: Public, Handle: func(c echo.Context) error {
			<-c.Request().Context().Done() // a handler stopped by its client leaving
			return fmt.Errorf("waiting: %w", c.Request().Context().Err())
		}},
		{Method: http.MethodGet, Path: "/slow", Auth: Public, Handle: func(c echo.Context) error {
			time.Sleep(20 * time.Millisecond)
			return c.NoContent(http.StatusNoContent)
		}},
	}
}

type testServer struct {
	*Server
	logs *lockedBuffer
	logq *AsyncHandler
}

// logText returns the log so far. The server logs as in production,
// through an AsyncHandler, so the queue is flushed first.
func (s testServer) logText() string {
	s.logq.Flush()
	return s.logs.String()
}

func newTestServer(t *testing.T, mod func(*Options)) testServer {
	t.Helper()
	logs := &lockedBuffer{}
	logq := NewAsyncHandler(logs, 0, "json", slog.LevelInfo)
	t.Cleanup(func() { logq.Close() })
	opts := Options{
		Logger:       slog.New(logq),
		PublicURL:    "http://localhost:8080",
		MaxBodyBytes: 64,
		HSTSMaxAge:   time.Hour,
	}
	if mod != nil {
		mod(&opts)
	}
	s := New(opts)
	if err := s.Mount(testRoutes()...); err != nil {
		t.Fatal(err)
	}
	return testServer{s, logs, logq}
}

type scenario struct {
	name       string
	method     string
	path       string
	body       string
	header     map[string]string
	chunked    bool // send the body without Content-Length
	wantStatus int
	wantCode   string            // error code; "" for a success
	wantHeader map[string]string // exact values; "" means absent
	wantBody   string            // substring of the body
	notInBody  []string
}

func (sc scenario) run(t *testing.T, s http.Handler) *httptest.ResponseRecorder {
	t.Helper()
	var body io.Reader
	if sc.body != "" {
		body = strings.NewReader(sc.body)
		if sc.chunked {
			body = io.MultiReader(body) // hides the length from NewRequest
		}
	}
	req := httptest.NewRequest(sc.method, sc.path, body)
	for k, v := range sc.header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != sc.wantStatus {
		t.Errorf("status %d, want %d (body %s)", rec.Code, sc.wantStatus, rec.Body)
	}
	if sc.wantCode != "" {
		var eb ErrorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil {
			t.Fatalf("error body is not the JSON error model: %v: %s", err, rec.Body)
		}
		if eb.Error.Code != sc.wantCode {
			t.Errorf("code %q, want %q", eb.Error.Code, sc.wantCode)
		}
		if eb.Error.RequestID == "" || eb.Error.RequestID != rec.Header().Get("X-Request-Id") {
			t.Errorf("request_id %q does not match header %q", eb.Error.RequestID, rec.Header().Get("X-Request-Id"))
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("Content-Type %q", ct)
		}
	}
	for k, v := range sc.wantHeader {
		if got := rec.Header().Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if !strings.Contains(rec.Body.String(), sc.wantBody) {
		t.Errorf("body %s does not contain %q", rec.Body, sc.wantBody)
	}
	for _, bad := range append(sc.notInBody, "goroutine", ".go:") {
		if strings.Contains(rec.Body.String(), bad) {
			t.Errorf("body leaks %q: %s", bad, rec.Body)
		}
	}
	return rec
}

func TestBadInput(t *testing.T) {
	json := map[string]string{"Content-Type": "application/json"}
	s := newTestServer(t, nil)
	for _, sc := range []scenario{
		{name: "valid body", method: "POST", path: "/items", body: `{"name":"a","count":1}`, header: json,
			wantStatus: 201, wantBody: `"name":"a"`},
		{name: "charset parameter is fine", method: "POST", path: "/items", body: `{"name":"a"}`,
			header: map[string]string{"Content-Type": "application/json; charset=utf-8"}, wantStatus: 201},
		{name: "malformed JSON", method: "POST", path: "/items", body: `{"name":`, header: json,
			wantStatus: 400, wantCode: "invalid_json"},
		{name: "not JSON at all", method: "POST", path: "/items", body: `name=a`, header: json,
			wantStatus: 400, wantCode: "invalid_json", wantBody: `"offset"`},
		{name: "trailing data", method: "POST", path: "/items", body: `{"name":"a"}{}`, header: json,
			wantStatus: 400, wantCode: "invalid_json", wantBody: "after the JSON value"},
		{name: "unknown field", method: "POST", path: "/items", body: `{"name":"a","admin":true}`, header: json,
			wantStatus: 400, wantCode: "invalid_json", wantBody: `"field":"admin"`},
		{name: "wrong type", method: "POST", path: "/items", body: `{"name":"a","count":"many"}`, header: json,
			wantStatus: 400, wantCode: "invalid_json", wantBody: `"reason":"wrong type, want number"`, notInBody: []string{"int"}},
		{name: "empty body", method: "POST", path: "/items", header: json,
			wantStatus: 400, wantCode: "invalid_json", wantBody: "empty"},
		{name: "validation names the field", method: "POST", path: "/items", body: `{"count":1}`, header: json,
			wantStatus: 400, wantCode: "validation_failed", wantBody: `"field":"name"`},
		{name: "wrong content type", method: "POST", path: "/items", body: `{"name":"a"}`,
			header: map[string]string{"Content-Type": "text/plain"}, wantStatus: 415, wantCode: "unsupported_media_type"},
		{name: "missing content type", method: "POST", path: "/items", body: `{"name":"a"}`,
			wantStatus: 415, wantCode: "unsupported_media_type"},
		{name: "body over limit by Content-Length", method: "POST", path: "/items", header: json,
			body: `{"name":"` + strings.Repeat("a", 100) + `"}`, wantStatus: 413, wantCode: "body_too_large"},
		{name: "body over limit while streaming", method: "POST", path: "/items", header: json, chunked: true,
			body: `{"name":"` + strings.Repeat("a", 100) + `"}`, wantStatus: 413, wantCode: "body_too_large"},
		{name: "unknown path", method: "GET", path: "/nope", wantStatus: 404, wantCode: "not_found"},
		{name: "wrong method", method: "DELETE", path: "/items", wantStatus: 405, wantCode: "method_not_allowed",
			wantHeader: map[string]string{"Allow": "OPTIONS, POST"}},
		{name: "module error keeps its code, not its wrapping", method: "GET", path: "/items/taken",
			wantStatus: 409, wantCode: "already_there", notInBody: []string{"lookup"}},
		{name: "panic is a bare 500", method: "GET", path: "/panic", wantStatus: 500, wantCode: "internal",
			wantBody: `"message":"internal error"`, notInBody: []string{"secret-panic-value"}},
		{name: "Go error is a bare 500", method: "GET", path: "/goerr", wantStatus: 500, wantCode: "internal",
			notInBody: []string{"hunter2", "10.0.0.5", "dial"}},
	} {
		t.Run(sc.name, func(t *testing.T) { sc.run(t, s) })
	}
}

func TestObserveErrors(t *testing.T) {
	var seen []string
	s := newTestServer(t, func(o *Options) {
		o.Observe = func(c echo.Context, status int, code string) { seen = append(seen, fmt.Sprint(status, " ", code)) }
	})
	for _, p := range []string{"/ok", "/nope", "/panic", "/items/taken"} {
		s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	if got := strings.Join(seen, ", "); got != "404 not_found, 500 internal, 409 already_there" {
		t.Errorf("observed %q", got)
	}
}

func TestHeadErrorHasNoBody(t *testing.T) {
	s := newTestServer(t, nil)
	rec := scenario{method: "HEAD", path: "/nope", wantStatus: 404}.run(t, s)
	if rec.Body.Len() != 0 {
		t.Errorf("HEAD answered with a body: %q", rec.Body)
	}
}

var uuidV7 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestRequestID(t *testing.T) {
	s := newTestServer(t, nil)
	for _, c := range []struct {
		name, in string
		kept     bool
	}{
		{"absent", "", false},
		{"sane is echoed", "abc-123_DEF.456:proxy", true},
		{"128 characters is kept", strings.Repeat("a", 128), true},
		{"129 characters is replaced", strings.Repeat("a", 129), false},
		{"control character is replaced", "abc\x01def", false},
		{"tab is replaced", "abc\tdef", false},
		{"space is replaced", "abc def", false},
		{"non-ASCII is replaced", "abcé", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, path := range []string{"/ok", "/nope"} {
				req := httptest.NewRequest("GET", path, nil)
				if c.in != "" {
					req.Header.Set("X-Request-ID", c.in)
				}
				rec := httptest.NewRecorder()
				s.ServeHTTP(rec, req)
				got := rec.Header().Get("X-Request-Id")
				if c.kept && got != c.in {
					t.Errorf("%s: id %q, want it kept as %q", path, got, c.in)
				}
				if !c.kept && !uuidV7.MatchString(got) {
					t.Errorf("%s: id %q, want a fresh UUIDv7", path, got)
				}
			}
		})
	}
	now := time.Now()
	a, b := newRequestID(now), newRequestID(now)
	if a == b {
		t.Errorf("two ids are equal: %s", a)
	}
	// UUIDv7: the first 48 bits are the arrival time in Unix milliseconds.
	if ms, err := strconv.ParseInt(strings.ReplaceAll(a, "-", "")[:12], 16, 64); err != nil || ms != now.UnixMilli() {
		t.Errorf("id %s carries the time %d ms, want %d", a, ms, now.UnixMilli())
	}
}

func TestSecurityHeaders(t *testing.T) {
	base := map[string]string{
		"X-Content-Type-Options":  "nosniff",
		"X-Frame-Options":         "DENY",
		"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
		"Referrer-Policy":         "no-referrer",
		"Cache-Control":           "no-store",
	}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	plain := newTestServer(t, nil)
	t.Run("on success, no HSTS over plain http", func(t *testing.T) {
		scenario{method: "GET", path: "/ok", wantStatus: 200,
			wantHeader: with(map[string]string{"Strict-Transport-Security": ""})}.run(t, plain)
	})
	t.Run("on errors too", func(t *testing.T) {
		scenario{method: "GET", path: "/nope", wantStatus: 404, wantCode: "not_found", wantHeader: base}.run(t, plain)
		scenario{method: "GET", path: "/panic", wantStatus: 500, wantCode: "internal", wantHeader: base}.run(t, plain)
	})
	t.Run("HSTS on direct TLS", func(t *testing.T) {
		req := httptest.NewRequest("GET", "/ok", nil)
		req.TLS = &tls.ConnectionState{}
		rec := httptest.NewRecorder()
		plain.ServeHTTP(rec, req)
		if got := rec.Header().Get("Strict-Transport-Security"); got != "max-age=3600; includeSubDomains" {
			t.Errorf("HSTS %q", got)
		}
	})
	t.Run("HSTS behind a TLS proxy when the public URL is https", func(t *testing.T) {
		s := newTestServer(t, func(o *Options) { o.PublicURL = "https://auth.example.com" })
		scenario{method: "GET", path: "/ok", wantStatus: 200,
			wantHeader: with(map[string]string{"Strict-Transport-Security": "max-age=3600; includeSubDomains"})}.run(t, s)
	})
}

func TestCORS(t *testing.T) {
	none := newTestServer(t, nil)
	t.Run("no allow-list: no CORS headers", func(t *testing.T) {
		scenario{method: "GET", path: "/ok", header: map[string]string{"Origin": "https://evil.example"}, wantStatus: 200,
			wantHeader: map[string]string{"Access-Control-Allow-Origin": ""}}.run(t, none)
	})
	s := newTestServer(t, func(o *Options) {
		o.CORS = config.CORS{AllowedOrigins: []string{"https://app.example.com"}, AllowCredentials: true, MaxAge: time.Minute}
	})
	t.Run("allowed origin", func(t *testing.T) {
		scenario{method: "GET", path: "/ok", header: map[string]string{"Origin": "https://app.example.com"}, wantStatus: 200,
			wantHeader: map[string]string{"Access-Control-Allow-Origin": "https://app.example.com",
				"Access-Control-Allow-Credentials": "true", "Vary": "Origin"}}.run(t, s)
	})
	t.Run("other origin gets nothing", func(t *testing.T) {
		scenario{method: "GET", path: "/ok", header: map[string]string{"Origin": "https://evil.example"}, wantStatus: 200,
			wantHeader: map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Allow-Credentials": ""}}.run(t, s)
	})
	t.Run("preflight", func(t *testing.T) {
		scenario{method: "OPTIONS", path: "/items", wantStatus: 204, header: map[string]string{
			"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "content-type"},
			wantHeader: map[string]string{"Access-Control-Allow-Origin": "https://app.example.com", "Access-Control-Max-Age": "60"}}.run(t, s)
	})
	// A cookie-mode refresh sends the CSRF token in a header.
	t.Run("preflight of a cookie-mode refresh", func(t *testing.T) {
		scenario{method: "OPTIONS", path: "/items", wantStatus: 204, header: map[string]string{
			"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "content-type,x-csrf-token"},
			wantHeader: map[string]string{"Access-Control-Allow-Headers": "Authorization,Content-Type,X-Request-Id,X-Tenant-ID,X-CSRF-Token",
				"Access-Control-Allow-Credentials": "true"}}.run(t, s)
	})
}

func TestAccessLog(t *testing.T) {
	s := newTestServer(t, nil)
	req := httptest.NewRequest("GET", "/items/7?token=sekrit", nil)
	req.Header.Set("X-Request-ID", "log-test-1")
	s.ServeHTTP(httptest.NewRecorder(), req)
	scenario{method: "GET", path: "/panic", wantStatus: 500, wantCode: "internal"}.run(t, s)
	// Any token is a method to net/http, up to the header limit: the line
	// keeps 32 bytes of it, as it keeps 256 of the path.
	s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(strings.Repeat("X", 60000), "/ok", nil))

	logs := s.logText()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		lines = append(lines, m)
	}
	first := lines[0]
	for k, want := range map[string]any{"msg": "request", "request_id": "log-test-1", "method": "GET",
		"path": "/items/7", "route": "/items/:id", "status": float64(200)} {
		if first[k] != want {
			t.Errorf("access log %s = %v, want %v", k, first[k], want)
		}
	}
	if strings.Contains(logs, "sekrit") {
		t.Error("the query string reached the log")
	}
	for _, l := range lines {
		if len(fmt.Sprint(l["method"])) > 40 {
			t.Errorf("an access line carries a method of %d bytes", len(fmt.Sprint(l["method"])))
		}
	}
	// The panic: a log line with the stack, and the access line says 500.
	var sawStack, saw500 bool
	for _, m := range lines[1:] {
		if m["msg"] == "panic" && strings.Contains(m["stack"].(string), "goroutine") && m["panic"] == "secret-panic-value" {
			sawStack = true
		}
		if m["msg"] == "request" && m["status"] == float64(500) {
			saw500 = true
		}
	}
	if !sawStack || !saw500 {
		t.Errorf("panic logged with stack: %v; access line with 500: %v\n%s", sawStack, saw500, logs)
	}
}

func TestMountRefuses(t *testing.T) {
	h := func(c echo.Context) error { return nil }
	for _, c := range []struct {
		name  string
		route Route
		want  string
	}{
		{"Auth unset", Route{Method: "GET", Path: "/x", Handle: h}, "Auth is not set"},
		{"no handler", Route{Method: "GET", Path: "/x", Auth: Public}, "no handler"},
		{"relative path", Route{Method: "GET", Path: "x", Auth: Public, Handle: h}, "absolute path"},
		{"bad permission", Route{Method: "GET", Path: "/x", Auth: Permission("orders"), Handle: h}, "resource:action"},
		{"inner wildcard", Route{Method: "GET", Path: "/x/*/y", Auth: Public, Handle: h}, "last segment"},
		{"identity with no authenticator", Route{Method: "GET", Path: "/x", Auth: Authenticated, Handle: h}, "no authenticator"},
		{"declared twice", Route{Method: "GET", Path: "/ok", Auth: Public, Handle: h}, "declared twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newTestServer(t, nil)
			err := s.Mount(c.route)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Mount: %v, want error containing %q", err, c.want)
			}
		})
	}
}

// The slots run in the documented order, and public routes skip the
// identity steps but not the others.
func TestSlotOrder(t *testing.T) {
	var trace []string
	step := func(name string) Slot {
		return func(r Route) echo.MiddlewareFunc {
			return func(next echo.HandlerFunc) echo.HandlerFunc {
				return func(c echo.Context) error {
					trace = append(trace, name)
					return next(c)
				}
			}
		}
	}
	s := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxBodyBytes: 10, Slots: Slots{
		Metrics: step("metrics"), IPLimit: step("ip_limit"), Authenticate: step("authenticate"), Tenant: step("tenant"),
		UserLimit: step("user_limit"), Authorize: step("authorize"), Audit: step("audit"),
	}})
	h := func(c echo.Context) error { trace = append(trace, "handler"); return c.NoContent(204) }
	if err := s.Mount(Route{Method: "GET", Path: "/private", Auth: Permission("x:read"), Handle: h},
		Route{Method: "GET", Path: "/public", Auth: Public, Handle: h}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/private": "metrics ip_limit authenticate tenant user_limit authorize audit handler",
		"/public":  "metrics ip_limit audit handler",
	} {
		trace = nil
		s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
		if got := strings.Join(trace, " "); got != want {
			t.Errorf("%s: steps %q, want %q", path, got, want)
		}
	}
}

// The metrics step sees a request the body limit refuses (413) and one no
// route matches (404, 405), the latter under the one route "unmatched" and
// a bounded method: a flood of either used to show nowhere on the
// dashboard.
func TestMetricsStepSeesRefusedAndUnmatched(t *testing.T) {
	var seen []string
	step := func(r Route) echo.MiddlewareFunc {
		return func(next echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error {
				if err := next(c); err != nil {
					c.Error(err)
				}
				seen = append(seen, r.Method+" "+r.Path+" "+strconv.Itoa(c.Response().Status))
				return nil
			}
		}
	}
	s := New(Options{Logger: slog.New(slog.DiscardHandler), MaxBodyBytes: 10, Slots: Slots{Metrics: step}})
	if err := s.Mount(Route{Method: "POST", Path: "/items/{id}", Auth: Public, Status: 204,
		Handle: func(c echo.Context) error { return c.NoContent(204) }}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, path, body, want string }{
		{"POST", "/items/1", "small", "POST /items/{id} 204"},
		{"POST", "/items/1", "more than ten bytes", "POST /items/{id} 413"},
		{"GET", "/nowhere/42", "", "GET unmatched 404"},
		{"DELETE", "/items/1", "", "DELETE unmatched 405"},
		{"FROB", "/items/1", "", "other unmatched 405"},
	} {
		seen = nil
		s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(c.method, c.path, strings.NewReader(c.body)))
		if len(seen) != 1 || seen[0] != c.want {
			t.Errorf("%s %s: the metrics step saw %q, want %q", c.method, c.path, seen, c.want)
		}
	}
}

func TestDocumentIsValidOpenAPI(t *testing.T) {
	routes := append(testRoutes(), Route{Method: "GET", Path: "/api/things/*", Summary: "Proxied", Auth: Public,
		Handle: func(c echo.Context) error { return nil }}, Route{Method: "DELETE", Path: "/v1/orders/{id}", Summary: "Delete an order",
		Tags: []string{"orders"}, Auth: Permission("orders:delete"), Limits: []string{"api-user"}, Status: 204,
		Handle: func(c echo.Context) error { return nil }})
	doc, err := Document(Info{Title: "t", Version: "1", ServerURL: "http://localhost:8080"}, routes)
	if err != nil {
		t.Fatal(err)
	}
	// Validate what a client gets: the JSON, loaded and resolved.
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	doc, err = openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("invalid OpenAPI document: %v", err)
	}
	op := doc.Paths.Find("/v1/orders/{id}").Delete
	if op == nil || op.Extensions["x-required-permission"] != "orders:delete" || op.Responses.Value("403") == nil ||
		op.Responses.Value("429") == nil || op.Parameters[0].Value.Name != "id" || op.OperationID != "delete_v1_orders_id" {
		t.Errorf("DELETE operation: %+v", op)
	}
	if op := doc.Paths.Find("/api/things/{path}"); op == nil || op.Get.Parameters[0].Value.Name != "path" {
		t.Errorf("wildcard route in the document: %+v", op)
	}
	post := doc.Paths.Find("/items").Post
	if post.RequestBody == nil || post.Responses.Value("201") == nil || post.Responses.Value("415") == nil {
		t.Errorf("POST /items: %+v", post)
	}
	if _, ok := doc.Components.Schemas["createReq"]; !ok {
		t.Errorf("request schema not in components: %v", doc.Components.Schemas)
	}
}

// A client that leaves before its answer is logged as 499, not as a
// failure: no "request failed" line at error level, no 5xx counted.
func TestClientClosedRequest(t *testing.T) {
	var observed []int
	var mu sync.Mutex
	s := newTestServer(t, func(o *Options) {
		o.Observe = func(c echo.Context, status int, code string) {
			mu.Lock()
			observed = append(observed, status)
			mu.Unlock()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequest(http.MethodGet, "/wait", nil).WithContext(ctx)
	time.AfterFunc(20*time.Millisecond, cancel)
	s.ServeHTTP(httptest.NewRecorder(), req)
	logs := s.logText()
	if strings.Contains(logs, "request failed") || strings.Contains(logs, `"level":"ERROR"`) {
		t.Errorf("a client leaving was logged as a failure:\n%s", logs)
	}
	if !strings.Contains(logs, `"status":499`) {
		t.Errorf("the access line does not say 499:\n%s", logs)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(observed) != 1 || observed[0] != StatusClientClosed {
		t.Errorf("observed %v, want [499]", observed)
	}
}

// TestAccessLogAbortedResponse shows a response aborted with
// http.ErrAbortHandler (the gateway's ReverseProxy does so when an
// upstream fails mid-body) still logged, and the panic passed on to the
// server, which cuts the connection.
func TestAccessLogAbortedResponse(t *testing.T) {
	s := newTestServer(t, nil)
	if err := s.Mount(Route{Method: http.MethodGet, Path: "/abort", Auth: Public, Handle: func(c echo.Context) error {
		c.Response().WriteHeader(http.StatusOK)
		_, _ = c.Response().Write([]byte("part"))
		panic(http.ErrAbortHandler)
	}}); err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/abort", nil)
	req.Header.Set("X-Request-ID", "abort-1")
	func() {
		defer func() {
			if r := recover(); r != http.ErrAbortHandler {
				t.Errorf("panic %v, want http.ErrAbortHandler passed on", r)
			}
		}()
		s.ServeHTTP(httptest.NewRecorder(), req)
	}()
	for _, l := range strings.Split(strings.TrimSpace(s.logText()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" && m["request_id"] == "abort-1" && m["status"] == float64(200) {
			return
		}
	}
	t.Errorf("no access line for the aborted response:\n%s", s.logText())
}
