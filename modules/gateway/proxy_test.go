package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
)

// TestHeaders shows what reaches the upstream: the caller's identity from
// the gateway, never from the client; Authorization only where the route
// passes it; forwarding headers the gateway wrote itself.
func TestHeaders(t *testing.T) {
	up := newUpstream(t, echoHandler)
	svc := testRoute("svc", "/api/svc", "authenticated", up.URL)
	svc.InternalToken = true
	pass := testRoute("pass", "/api/pass", "public", up.URL)
	pass.PassAuthorization = true
	h := newHarness(t, []RouteConfig{svc, pass}, fakeSigner{})

	// Headers upstream frameworks believe from a proxy, as written.
	spoofed := []string{"X-Original-URL", "x-rewrite-url", "X_HTTP_Method_Override", "X-Http-Method", "X-Forwarded-Prefix",
		"X-Forwarded-Port", "X-FORWARDED-USER", "X-Auth-Request-Email", "True-Client-IP", "X-Client-IP", "Remote-User"}
	spoof := func(req *http.Request) {
		// Set as written: Go would otherwise canonicalize the names.
		req.Header["X-Gatehouse-User"] = []string{"mallory"}
		req.Header["x-gatehouse-tenant"] = []string{"other-tenant"}
		req.Header["X_Gatehouse_Roles"] = []string{"super_admin"}
		req.Header["X-GATEHOUSE-TOKEN"] = []string{"forged"}
		req.Header["X-Gatehouse-Anything"] = []string{"x"}
		req.Header.Set("Authorization", "Bearer client-secret")
		req.Header.Set("X-Forwarded-For", "6.6.6.6")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-Host", "evil.example")
		req.Header.Set("X-Real-IP", "6.6.6.6")
		req.Header.Set("Forwarded", "for=6.6.6.6;proto=https")
		req.Header.Set("X-Request-ID", "req-123")
		// The gateway sets these; a CGI-style upstream reads the
		// underscore spellings as the same names.
		req.Header["X_Real_IP"] = []string{"6.6.6.6"}
		req.Header["X_Request_ID"] = []string{"forged"}
		for _, k := range spoofed {
			req.Header[k] = []string{"/admin"}
		}
	}
	gatehouseKeys := func(hdr http.Header) []string {
		var keys []string
		for k := range hdr {
			if gatehouseHeader(k) {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		return keys
	}

	t.Run("authenticated route", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/api/svc/items", nil)
		spoof(req)
		req.Header.Set("X-Test-User", "u1|t1|admin,editor")
		res, body := h.send(req)
		s := decodeSeen(t, res, body)
		want := map[string]string{
			"X-Gatehouse-User": "u1", "X-Gatehouse-Tenant": "t1", "X-Gatehouse-Roles": "admin,editor",
			"X-Gatehouse-Token": "internal.svc.u1", "X-Forwarded-For": "127.0.0.1", "X-Real-Ip": "127.0.0.1",
			"X-Forwarded-Proto": "http", "X-Forwarded-Host": h.srv.Listener.Addr().String(), "X-Request-Id": "req-123",
		}
		for k, v := range want {
			if got := s.Header[k]; len(got) != 1 || got[0] != v {
				t.Errorf("%s = %q, want [%q]", k, got, v)
			}
		}
		if keys := gatehouseKeys(s.Header); !slices.Equal(keys, []string{"X-Gatehouse-Roles", "X-Gatehouse-Tenant", "X-Gatehouse-Token", "X-Gatehouse-User"}) {
			t.Errorf("X-Gatehouse headers upstream: %v", keys)
		}
		for _, k := range append([]string{"Authorization", "Forwarded"}, spoofed...) {
			if v, ok := s.Header[http.CanonicalHeaderKey(k)]; ok {
				t.Errorf("%s reached the upstream: %q", k, v)
			}
		}
		for k, v := range s.Header {
			if strings.Contains(k, "_") {
				t.Errorf("%s reached the upstream: %q", k, v)
			}
		}
		if s.Host != strings.TrimPrefix(up.URL, "http://") {
			t.Errorf("Host %q, want the upstream's", s.Host)
		}
		// The upstream's own headers replace the gateway's defaults.
		if cc := res.Header.Values("Cache-Control"); !slices.Equal(cc, []string{"max-age=60"}) {
			t.Errorf("Cache-Control %q, want the upstream's alone", cc)
		}
		if id := res.Header.Get("X-Request-ID"); id != "req-123" {
			t.Errorf("response X-Request-ID %q", id)
		}
		if strings.Contains(h.logs.String(), "internal.svc.u1") || strings.Contains(h.logs.String(), "client-secret") {
			t.Errorf("a token reached the log:\n%s", h.logs)
		}
	})

	t.Run("public route passing Authorization", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/api/pass", nil)
		spoof(req)
		res, body := h.send(req)
		s := decodeSeen(t, res, body)
		if keys := gatehouseKeys(s.Header); len(keys) != 0 {
			t.Errorf("a public route forwarded X-Gatehouse headers: %v", keys)
		}
		if got := s.Header.Get("Authorization"); got != "Bearer client-secret" {
			t.Errorf("Authorization %q, want it passed", got)
		}
		if got := s.Header.Values("X-Forwarded-For"); !slices.Equal(got, []string{"127.0.0.1"}) {
			t.Errorf("X-Forwarded-For %q", got)
		}
	})
}

// TestHeadersBehindProxy shows the client address and scheme a trusted
// proxy in front reports are the ones passed on.
func TestHeadersBehindProxy(t *testing.T) {
	up := newUpstream(t, echoHandler)
	h := newHarness(t, []RouteConfig{testRoute("svc", "/svc", "public", up.URL)}, nil, func(s *setup) {
		s.opts.TrustedProxies = []string{"127.0.0.1"}
	})
	// The proxy appended the client it saw (203.0.113.7) to what the
	// client claimed (6.6.6.6): only the proxy's word is taken.
	res, body := h.do(http.MethodGet, "/svc", nil, map[string]string{
		"X-Forwarded-For": "6.6.6.6, 203.0.113.7", "X-Forwarded-Proto": "https"})
	s := decodeSeen(t, res, body)
	if got := s.Header.Values("X-Forwarded-For"); !slices.Equal(got, []string{"203.0.113.7"}) {
		t.Errorf("X-Forwarded-For %q, want the client the proxy saw", got)
	}
	if got := s.Header.Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto %q, want the trusted proxy's https", got)
	}
}

// TestPaths shows the path mapping (plain, strip_prefix, rewrite, base
// path) and that query strings and bodies arrive as sent.
func TestPaths(t *testing.T) {
	up := newUpstream(t, echoHandler)
	plain := testRoute("plain", "/api/plain", "public", up.URL)
	strip := testRoute("strip", "/api/strip", "public", up.URL)
	strip.StripPrefix = true
	rewrite := testRoute("rewrite", "/api/old", "public", up.URL)
	rewrite.Rewrite = "/v2"
	root := testRoute("root", "/api/root", "public", up.URL)
	root.Rewrite = "/"
	base := testRoute("base", "/api/base", "public", up.URL+"/base/")
	base.StripPrefix = true
	h := newHarness(t, []RouteConfig{plain, strip, rewrite, root, base}, nil)

	cases := []struct{ path, wantURI string }{
		{"/api/plain", "/api/plain"},
		{"/api/plain/a/b", "/api/plain/a/b"},
		{"/api/plain/a/b/", "/api/plain/a/b/"},
		{"/api/plain/a%20b/%C3%A9?x=1&x=2&y=%2F%3F", "/api/plain/a%20b/%C3%A9?x=1&x=2&y=%2F%3F"},
		// Kept as sent, though Go's ReverseProxy would drop the parts it
		// cannot parse.
		{"/api/plain/q?a=%zz&b=1;c=2&&d", "/api/plain/q?a=%zz&b=1;c=2&&d"},
		{"/api/strip", "/"},
		{"/api/strip/", "/"},
		{"/api/strip/a/b?q=1", "/a/b?q=1"},
		{"/api/old/a", "/v2/a"},
		{"/api/old", "/v2"},
		{"/api/root/a", "/a"},
		{"/api/base/a?z", "/base/a?z"},
		{"/api/base", "/base"},
	}
	for _, c := range cases {
		res, body := h.do(http.MethodGet, c.path, nil, nil)
		if s := decodeSeen(t, res, body); s.RequestURI != c.wantURI {
			t.Errorf("%s reached the upstream as %s, want %s", c.path, s.RequestURI, c.wantURI)
		}
	}

	// Bodies arrive byte for byte, with a length or chunked.
	data, _ := io.ReadAll(newPatterned(3<<20 + 17))
	sum := sha256.Sum256(data)
	for _, chunked := range []bool{false, true} {
		var r io.Reader = bytes.NewReader(data)
		if chunked {
			r = io.MultiReader(r) // hides the length
		}
		res, b := h.do(http.MethodPost, "/api/plain/upload", r, map[string]string{"Content-Type": "application/octet-stream"})
		s := decodeSeen(t, res, b)
		if s.BodySHA != hex.EncodeToString(sum[:]) || s.BodyLen != int64(len(data)) || s.Chunked != chunked || s.Method != "POST" {
			t.Errorf("chunked=%v: upstream got %d bytes, sha %s, chunked %v", chunked, s.BodyLen, s.BodySHA, s.Chunked)
		}
	}
}

// TestHost shows a route with a host answers for that host only.
func TestHost(t *testing.T) {
	up := newUpstream(t, echoHandler)
	r := testRoute("hosted", "/api/hosted", "public", up.URL)
	r.Host = "api.example.com"
	h := newHarness(t, []RouteConfig{r}, nil)
	for _, host := range []string{"api.example.com", "API.Example.com", "api.example.com:8443"} {
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/api/hosted/x", nil)
		req.Host = host
		res, body := h.send(req)
		if s := decodeSeen(t, res, body); s.Header.Get("X-Forwarded-Host") != host {
			t.Errorf("host %s: X-Forwarded-Host %q", host, s.Header.Get("X-Forwarded-Host"))
		}
	}
	n := up.hits.Load()
	for _, host := range []string{"other.example.com", "api.example.com.evil", h.srv.Listener.Addr().String()} {
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/api/hosted/x", nil)
		req.Host = host
		res, body := h.send(req)
		wantError(t, res, body, http.StatusNotFound, "not_found")
	}
	if got := up.hits.Load(); got != n {
		t.Errorf("requests for other hosts reached the upstream: %d", got-n)
	}
}

// TestUnauthenticated shows the chain refuses before the upstream is
// contacted.
func TestUnauthenticated(t *testing.T) {
	up := newUpstream(t, echoHandler)
	h := newHarness(t, []RouteConfig{
		testRoute("user", "/api/user", "authenticated", up.URL),
		testRoute("perm", "/api/perm", "orders:read", up.URL),
	}, nil)
	for _, p := range []string{"/api/user", "/api/user/x", "/api/perm/x?y=1"} {
		res, body := h.do(http.MethodGet, p, nil, map[string]string{"Authorization": "Bearer nonsense"})
		wantError(t, res, body, http.StatusUnauthorized, "invalid_token")
	}
	if n := up.hits.Load(); n != 0 {
		t.Errorf("the upstream got %d unauthenticated requests", n)
	}
}

// TestPathSafety shows paths that could mean something else upstream are
// refused before any upstream sees them.
func TestPathSafety(t *testing.T) {
	up := newUpstream(t, echoHandler)
	h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", up.URL)}, nil)
	bad := []string{
		"/api/../admin", "/api/%2e%2e/admin", "/api/%2E%2E/admin", "/api/.%2E/x", "/api/%2e/x", "/api/./x",
		"/api/x/..", "/api/x/.", "/api/x%2fy", "/api/x%2Fy", "/api/x%5cy", "/api/x%5Cy", `/api/x\y`, `/api/x\..\y`,
		"/api//x", "/api/x//", "/api/%6Frders", "/api/x%41", "/api/x%00y", "/api/x%0d%0ay",
		"/api/x;y", "/api/x;jsessionid=1/y", "/api/x/...", "/api/..%20/x", "/api/x%C2%85y", "/api/x%3By", "/api/x%3by", "/api/..;/admin",
		"/api/%252e%252e/admin", "/api/x%252Fy", "/api/%25%32e%25%32e/admin", "/api/x%2541",
		"/api/%C0%AE%C0%AE/admin", "/api/x%FFy", "/api/%E2%82", // not UTF-8
	}
	for _, p := range bad {
		res, body := h.raw("GET " + p + " HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"invalid_path"`) {
			t.Errorf("%s: %d %s, want 400 invalid_path", p, res.StatusCode, body)
		}
	}
	if n := up.hits.Load(); n != 0 {
		t.Fatalf("the upstream got %d unsafe paths", n)
	}
	// With no nested route to reach, a trailing dot or space, or an
	// invisible character, is an ordinary name.
	for _, p := range []string{"/api/x/", "/api/a..b/...c", "/api/.well-known", "/api/x%20y", "/api/%E2%82%AC", "/api/100%25", "/api/%25zz", "/api/x%25",
		"/api/x%20", "/api/x./y", "/api/%E2%80%8Bx"} {
		res, body := h.raw("GET " + p + " HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
		if s := decodeSeen(t, res, body); s.RequestURI != p {
			t.Errorf("%s arrived as %s", p, s.RequestURI)
		}
	}
}

// TestNestedRouteCase shows a path that names a nested route in another
// letter case refused by the route above it: an upstream that ignores case
// would otherwise serve the nested route's resource under the outer
// route's weaker auth.
func TestNestedRouteCase(t *testing.T) {
	up := newUpstream(t, echoHandler)
	h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", up.URL),
		testRoute("admin", "/api/admin", "authenticated", up.URL)}, nil)
	for _, p := range []string{"/api/ADMIN", "/api/Admin/x", "/api/aDmin/"} {
		res, body := h.do(http.MethodGet, p, nil, nil)
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"invalid_path"`) {
			t.Errorf("%s: %d %s, want 400 invalid_path", p, res.StatusCode, body)
		}
	}
	if n := up.hits.Load(); n != 0 {
		t.Fatalf("the upstream got %d requests", n)
	}
	if res, body := h.do(http.MethodGet, "/api/admin/x", nil, nil); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/api/admin/x without credentials: %d %s", res.StatusCode, body)
	}
	for _, p := range []string{"/api/administrator", "/api/x/ADMIN", "/api/adm"} {
		res, body := h.do(http.MethodGet, p, nil, nil)
		if s := decodeSeen(t, res, body); s.RequestURI != p {
			t.Errorf("%s arrived as %s", p, s.RequestURI)
		}
	}
}

// TestNestedRouteLookalikes shows a path naming a nested route's prefix
// with a trailing dot or white space, or with an invisible character,
// refused by the route above it: an upstream that trims such characters
// (IIS and Windows drop trailing dots and spaces, Spring trims tokens)
// would serve the nested route's resource under the outer route's auth.
func TestNestedRouteLookalikes(t *testing.T) {
	outer := newUpstream(t, echoHandler)
	inner := newUpstream(t, echoHandler)
	h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", outer.URL),
		testRoute("admin", "/api/admin", "authenticated", inner.URL)}, nil)
	for _, p := range []string{"/api/admin%20/users", "/api/admin./users", "/api/admin../users",
		"/api/admin.%20/users", "/api/admin%C2%A0/users", "/api/admin%E2%80%8B/users", "/api/admin%20",
		"/api/admin.", "/api/%20admin/users", "/api/ad%E2%80%8Bmin/users", "/api/admin%E3%80%80/users",
		"/api/admin%C2%85/users", "/api/...",
		// Compatibility forms and other invisible characters (review):
		// NFKC folds a fullwidth full stop, slash or letter to ASCII, and
		// default-ignorable characters are dropped by stacks that strip them.
		"/api/admin%EF%BC%8E/users", "/api/admin%EF%BC%8Fusers", "/api/%EF%BD%81dmin/users",
		"/api/admin%CD%8F/users", "/api/admin%EF%B8%8F/users", "/api/admin%E3%85%A4/users",
		// Letters whose other case is ASCII, as stacks that ignore case
		// read them: the dotless i, the dotted capital I.
		"/api/adm%C4%B1n/users", "/api/adm%C4%B0n/users"} {
		res, body := h.raw("GET " + p + " HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"invalid_path"`) {
			t.Errorf("%s: %d %.90s, want 400 invalid_path", p, res.StatusCode, body)
		}
	}
	if n := outer.hits.Load(); n != 0 {
		t.Errorf("the public outer route's upstream got %d requests naming the authenticated /api/admin", n)
	}
	// A space inside a segment, dots inside or in front of one, letters
	// beyond ASCII, and what names nothing nested are ordinary names: a
	// zone with its trailing dot, emoji joined by U+200D, a Persian word
	// with U+200C (review: all were refused by a first version).
	for _, p := range []string{"/api/my%20file", "/api/a.b/.well-known", "/api/x...y", "/api/%C3%A9t%C3%A9",
		"/api/servers/localhost/zones/example.org.", "/api/servers/localhost/zones/example.org./records",
		"/api/tags/%F0%9F%91%A8%E2%80%8D%F0%9F%92%BB", "/api/wiki/%D9%85%DB%8C%E2%80%8C%D8%AE%D9%88%D8%A7%D9%87%D9%85",
		"/api/administrator.", "/api/x/admin.", "/api/k%C4%B1z"} {
		res, body := h.raw("GET " + p + " HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
		if s := decodeSeen(t, res, body); s.RequestURI != p {
			t.Errorf("%s arrived as %s", p, s.RequestURI)
		}
	}
}

// TestH2QueryCannotBreakRequestLine shows a query with bytes an HTTP/1.1
// request line cannot carry refused: an HTTP/2 client may put raw spaces
// in its :path, which would reach the upstream's request line as sent. The
// characters browsers leave unencoded in a query still pass. (Controls
// never arrive: the HTTP/2 server resets such a stream, and the client
// tries again without end.)
func TestH2QueryCannotBreakRequestLine(t *testing.T) {
	lines := make(chan string, 1)
	upURL, _ := rawUpstream(t, func(n int64, c net.Conn, br *bufio.Reader) {
		l, _ := br.ReadString('\n')
		select {
		case lines <- l:
		default:
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	up := newUpstream(t, echoHandler)
	h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", upURL),
		testRoute("echo", "/echo", "public", up.URL)}, nil)
	ts := httptest.NewUnstartedServer(h.srv.Config.Handler)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	for _, q := range []string{"a HTTP/1.0 /api/admin/y HTTP/1.1"} {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/x", nil)
		req.URL.RawQuery = q
		res, err := ts.Client().Do(req)
		if err != nil {
			t.Fatalf("%q: %v", q, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.ProtoMajor != 2 {
			t.Fatalf("%q: %s, want HTTP/2", q, res.Proto)
		}
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"invalid_path"`) {
			t.Errorf("%q: %d %.90s, want 400 invalid_path", q, res.StatusCode, body)
		}
	}
	select {
	case l := <-lines:
		t.Fatalf("the upstream got the request line %q", l)
	default:
	}
	for _, q := range []string{"f={a|b}&c=^`\\", "q=%20%22"} {
		res, body := h.raw("GET /echo/x?" + q + " HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
		if s := decodeSeen(t, res, body); s.RawQuery != q {
			t.Errorf("%q arrived as %q", q, s.RawQuery)
		}
	}
	// Bytes beyond ASCII (curl sends "?q=café" raw) pass, percent-encoded:
	// the upstream decodes them to the same text.
	res, body := h.raw("GET /echo/x?q=caf\xc3\xa9&b=\x85 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
	if s := decodeSeen(t, res, body); s.RawQuery != "q=caf%C3%A9&b=%85" {
		t.Errorf("a query beyond ASCII arrived as %q", s.RawQuery)
	}
}

// rolesFunc is a Roles answering from a function.
type rolesFunc func(tenantID, userID string) ([]string, error)

func (f rolesFunc) CurrentRoles(_ context.Context, tenantID, userID string) ([]string, error) {
	return f(tenantID, userID)
}

// TestCurrentRoles shows X-Gatehouse-Roles carries the roles Deps.Roles
// gives, not the identity's (a token's, possibly stale), and that a caller
// whose roles cannot be read is not forwarded.
func TestCurrentRoles(t *testing.T) {
	up := newUpstream(t, echoHandler)
	var fail atomic.Bool
	roles := rolesFunc(func(tenantID, userID string) ([]string, error) {
		if fail.Load() {
			return nil, fmt.Errorf("rbac: %w", fault.ErrUnavailable)
		}
		return []string{"now-" + tenantID + "-" + userID}, nil
	})
	h := newHarness(t, []RouteConfig{testRoute("svc", "/svc", "authenticated", up.URL)}, nil,
		func(s *setup) { s.deps.Roles = roles })
	user := map[string]string{"X-Test-User": "u1|t1|admin,editor"}
	res, body := h.do(http.MethodGet, "/svc/x", nil, user)
	if got := decodeSeen(t, res, body).Header["X-Gatehouse-Roles"]; !slices.Equal(got, []string{"now-t1-u1"}) {
		t.Errorf("X-Gatehouse-Roles %q, want the current roles", got)
	}
	fail.Store(true)
	if res, body := h.do(http.MethodGet, "/svc/x", nil, user); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("roles unreadable: %d %s, want 503", res.StatusCode, body)
	}
	if n := up.hits.Load(); n != 1 {
		t.Fatalf("the upstream got %d requests, want 1", n)
	}
}

// TestUpstreamCannotSetOurCookies shows an upstream's Set-Cookie for one
// of Gatehouse's cookies is dropped and logged, on both transports, while
// its other cookies pass.
func TestUpstreamCannotSetOurCookies(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		// With no name, a cookie is sent back as its bare value, which
		// reads as "gatehouse_refresh=planted", ahead of the real one.
		w.Header()["Set-Cookie"] = []string{"gatehouse_refresh=planted; Path=/v1/auth; HttpOnly", "theme=dark; Path=/",
			" gatehouse_csrf =x; Path=/v1/auth", "gatehouse_refresh_not=1", "=gatehouse_refresh=planted; Path=/v1/auth/refresh",
			" = gatehouse_csrf=x", "gatehouse_csrf; Path=/v1/auth", "=nameless"}
	})
	h := newHarness(t, []RouteConfig{testRoute("svc", "/svc", "public", up.URL)}, nil,
		func(s *setup) { s.deps.Cookies = []string{"gatehouse_refresh", "gatehouse_csrf"} })
	for _, method := range []string{http.MethodGet, http.MethodPost} { // the direct path, then http.Transport
		res, _ := h.do(method, "/svc/x", strings.NewReader(""), nil)
		if got := res.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"theme=dark; Path=/", "gatehouse_refresh_not=1", "=nameless"}) {
			t.Errorf("%s: Set-Cookie %q", method, got)
		}
	}
	if n := strings.Count(h.logs.String(), "Set-Cookie for a Gatehouse cookie was dropped"); n != 2 {
		t.Errorf("%d drops logged, want 2:\n%s", n, h.logs)
	}
}

// TestUpstreamCannotSetOurCookiesInTrailers shows a Set-Cookie for one of
// Gatehouse's cookies dropped and logged when the upstream sends it as a
// response trailer, on both transports, while its other cookies pass.
func TestUpstreamCannotSetOurCookiesInTrailers(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/api/undeclared" {
			_, _ = io.WriteString(w, "page")
			w.(http.Flusher).Flush() // chunked, so there can be trailers
			w.Header()[http.TrailerPrefix+"Set-Cookie"] = []string{"gatehouse_refresh=planted; Path=/v1/auth"}
			w.Header().Set(http.TrailerPrefix+"X-Sum", "2")
			return
		}
		w.Header().Set("Trailer", "Set-Cookie, X-Sum")
		_, _ = io.WriteString(w, "page")
		w.Header()["Set-Cookie"] = []string{"gatehouse_refresh=planted; Path=/v1/auth", "theme=dark"}
		w.Header().Set("X-Sum", "1")
	})
	h := newHarness(t, []RouteConfig{testRoute("api", "/api", "public", up.URL)}, nil,
		func(s *setup) { s.deps.Cookies = []string{"gatehouse_refresh", "gatehouse_csrf"} })
	for _, method := range []string{http.MethodGet, http.MethodPost} { // the direct path, then http.Transport
		res, body := h.do(method, "/api/x", strings.NewReader(""), nil)
		wantBody(t, res, body, "page")
		if got := res.Trailer.Values("Set-Cookie"); !slices.Equal(got, []string{"theme=dark"}) || res.Trailer.Get("X-Sum") != "1" {
			t.Errorf("%s: the client got the trailers %q", method, res.Trailer)
		}
		res, body = h.do(method, "/api/undeclared", strings.NewReader(""), nil)
		wantBody(t, res, body, "page")
		if got := res.Trailer.Values("Set-Cookie"); len(got) != 0 || res.Trailer.Get("X-Sum") != "2" {
			t.Errorf("%s: the client got the undeclared trailers %q", method, res.Trailer)
		}
	}
	if n := strings.Count(h.logs.String(), "Set-Cookie for a Gatehouse cookie was dropped"); n != 4 {
		t.Errorf("%d drops logged, want 4:\n%s", n, h.logs)
	}
}

// TestMaxRequests shows an upstream at its max_requests is not sent more:
// the answer is at once 503 upstream_unavailable with Retry-After, and the
// outcome is reported as saturated. A request that ends, even with its body
// broken off, frees its place.
func TestMaxRequests(t *testing.T) {
	release := make(chan struct{})
	var held atomic.Int32
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/svc/hold":
			held.Add(1)
			<-release
		case "/svc/break":
			w.Header().Set("Content-Length", "100")
			w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection closes mid-body
		}
	})
	rc := testRoute("svc", "/svc", "public", up.URL)
	rc.MaxRequests = 2
	var mu sync.Mutex
	var outcomes []string
	h := newHarness(t, []RouteConfig{rc}, nil, func(s *setup) {
		s.deps.Observe = func(_ string, _ time.Duration, outcome string) {
			mu.Lock()
			outcomes = append(outcomes, outcome)
			mu.Unlock()
		}
	})
	for range 3 {
		res, err := h.srv.Client().Get(h.srv.URL + "/svc/break")
		if err == nil {
			io.ReadAll(res.Body)
			res.Body.Close()
		}
	}
	if res, body := h.do(http.MethodGet, "/svc/ok", nil, nil); res.StatusCode != http.StatusOK {
		t.Fatalf("after three broken bodies: %d %s", res.StatusCode, body)
	}
	mu.Lock()
	// Each broken body is reported before its connection closes.
	if n := len(slices.DeleteFunc(slices.Clone(outcomes), func(o string) bool { return o != "error" })); n != 3 {
		t.Errorf("outcomes %v, want the three broken bodies reported as errors", outcomes)
	}
	mu.Unlock()
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { h.do(http.MethodGet, "/svc/hold", nil, nil) })
	}
	eventually(t, 5*time.Second, "both requests held upstream", func() bool { return held.Load() == 2 })
	hits := up.hits.Load()
	res, body := h.do(http.MethodGet, "/svc/ok", nil, nil)
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"upstream_unavailable"`) ||
		res.Header.Get("Retry-After") != "1" {
		t.Errorf("a third request: %d %s (Retry-After %q), want 503 upstream_unavailable", res.StatusCode, body, res.Header.Get("Retry-After"))
	}
	if up.hits.Load() != hits {
		t.Error("the upstream got a request past its max_requests")
	}
	mu.Lock()
	if !slices.Contains(outcomes, "saturated") {
		t.Errorf("outcomes %v, want saturated among them", outcomes)
	}
	mu.Unlock()
	close(release)
	wg.Wait()
	if res, body := h.do(http.MethodGet, "/svc/ok", nil, nil); res.StatusCode != http.StatusOK {
		t.Fatalf("after the held requests ended: %d %s", res.StatusCode, body)
	}
}

// TestReservedPrefix shows a path Gatehouse keeps to itself (its session
// cookies' path) never reaches an upstream, even through a route whose
// prefix lies above it, while its neighbours do.
func TestReservedPrefix(t *testing.T) {
	up := newUpstream(t, echoHandler)
	h := newHarness(t, []RouteConfig{testRoute("v1", "/v1", "public", up.URL)}, nil,
		func(s *setup) { s.deps.Reserved = []string{"/v1/auth"} })
	for _, p := range []string{"/v1/auth", "/v1/auth/", "/v1/auth/steal", "/v1/AUTH/x"} {
		res, body := h.do(http.MethodGet, p, nil, map[string]string{"Cookie": "gatehouse_refresh=secret"})
		if res.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `"not_found"`) {
			t.Errorf("%s: %d %s, want 404 not_found", p, res.StatusCode, body)
		}
	}
	if n := up.hits.Load(); n != 0 {
		t.Fatalf("the upstream got %d requests", n)
	}
	for _, p := range []string{"/v1/authors", "/v1/x/auth", "/v1"} {
		res, body := h.do(http.MethodGet, p, nil, nil)
		if s := decodeSeen(t, res, body); s.RequestURI != p {
			t.Errorf("%s arrived as %s", p, s.RequestURI)
		}
	}
}

// TestUpstreamErrorPassesThrough shows an upstream's own error answers
// reach the client unchanged.
func TestUpstreamErrorPassesThrough(t *testing.T) {
	const teapot = `{"error":"teapot","detail":"short and stout"}`
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set("X-Upstream", "yes")
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, teapot)
	})
	h := newHarness(t, []RouteConfig{testRoute("tea", "/tea", "public", up.URL)}, nil)
	res, body := h.do(http.MethodGet, "/tea/pot", nil, nil)
	if res.StatusCode != http.StatusTeapot || string(body) != teapot ||
		res.Header.Get("Content-Type") != "application/problem+json" || res.Header.Get("X-Upstream") != "yes" {
		t.Fatalf("%d %q %v", res.StatusCode, body, res.Header)
	}
}

// TestInternalTokenFailure shows a token that cannot be made stops the
// request with a 500 that says nothing of the cause.
func TestInternalTokenFailure(t *testing.T) {
	up := newUpstream(t, echoHandler)
	r := testRoute("svc", "/svc", "authenticated", up.URL)
	r.InternalToken = true
	h := newHarness(t, []RouteConfig{r}, fakeSigner{err: errors.New("signing key locked")})
	res, body := h.do(http.MethodGet, "/svc", nil, map[string]string{"X-Test-User": "u1|t1|"})
	wantError(t, res, body, http.StatusInternalServerError, "internal")
	if strings.Contains(string(body), "signing key") || up.hits.Load() != 0 {
		t.Fatalf("body %s, upstream hits %d", body, up.hits.Load())
	}
}

// TestRoutes shows the declared routes: two paths per method, the route's
// auth, limits and body limit, and an OpenAPI document built from them.
func TestRoutes(t *testing.T) {
	r := testRoute("orders", "/api/orders", "orders:read", "http://orders:8080")
	r.Methods = []string{"GET", "POST"}
	r.Limits = []string{"api-user"}
	r.MaxBodyBytes = 1234
	g, err := New(&Config{Routes: []RouteConfig{r}}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	routes := g.Routes()
	var got []string
	for _, rt := range routes {
		got = append(got, rt.Method+" "+rt.Path)
		if rt.Summary != "Proxied to orders" || !slices.Equal(rt.Tags, []string{"gateway"}) || rt.Auth.Permission() != "orders:read" ||
			!slices.Equal(rt.Limits, []string{"api-user"}) || rt.MaxBodyBytes != 1234 || rt.Handle == nil {
			t.Errorf("route %+v", rt)
		}
	}
	want := []string{"GET /api/orders", "GET /api/orders/*", "POST /api/orders", "POST /api/orders/*"}
	if !slices.Equal(got, want) {
		t.Errorf("routes %v, want %v", got, want)
	}
	doc, err := httpx.Document(httpx.Info{Title: "t", Version: "1"}, routes)
	if err != nil {
		t.Fatal(err)
	}
	if doc.Paths.Find("/api/orders/{path}") == nil {
		t.Errorf("no /api/orders/{path} in the document")
	}
}
