package main

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"gatehouse/modules/auth"
	"gatehouse/platform/token"
)

// upstream is a service behind the gateway that counts what reaches it.
type upstream struct {
	*httptest.Server
	hits atomic.Int32
	mu   sync.Mutex
	last http.Header
	path string
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		u.mu.Lock()
		u.last, u.path = r.Header.Clone(), r.URL.RequestURI()
		u.mu.Unlock()
		w.Write([]byte("upstream says hi"))
	}))
	t.Cleanup(u.Close)
	return u
}

func writeRoutes(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Acceptance 1 and 2 through the whole app: identity headers arrive, spoofed
// ones and the client's Authorization do not, the internal token verifies
// against the JWKS with only the standard library, and requests without
// identity or permission never reach the upstream.
func TestGatewayThroughTheChain(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	cfg := testConfig(t, backends[0])
	writeRoutes(t, cfg.Gateway.RoutesFile, `routes:
  - name: reports
    prefix: /api/reports
    upstreams: [`+up.URL+`]
    auth: analytics:read
    internal_token: true
`)
	w := newWorldOn(t, startApp(t, cfg))
	get := func(p *person, spoof bool) *httpRecorder {
		r := req{method: "GET", path: "/api/reports/q1?year=2026&x=%2B1", header: map[string]string{}}
		if p != nil {
			r.bearer = p.token
		}
		if spoof {
			r.header["X-Gatehouse-User"] = "someone-else"
			r.header["X-Gatehouse-Roles"] = "super_admin"
		}
		return w.app.do(t, r)
	}
	wantRejected(t, get(nil, false))
	wantStatus(t, get(&w.member, true), 403, "forbidden")
	if n := up.hits.Load(); n != 0 {
		t.Fatalf("refused requests reached the upstream %d times", n)
	}
	rec := get(&w.manager, true)
	wantStatus(t, rec, 200, "")
	if rec.Body.String() != "upstream says hi" || up.hits.Load() != 1 {
		t.Fatalf("proxied answer %q, hits %d", rec.Body, up.hits.Load())
	}
	up.mu.Lock()
	h, path := up.last, up.path
	up.mu.Unlock()
	if path != "/api/reports/q1?year=2026&x=%2B1" {
		t.Errorf("upstream path %q", path)
	}
	for k, want := range map[string]string{"X-Gatehouse-User": w.manager.id, "X-Gatehouse-Tenant": w.acme,
		"X-Gatehouse-Roles": "manager,member", "Authorization": ""} {
		if got := h.Get(k); got != want {
			t.Errorf("upstream got %s = %q, want %q", k, got, want)
		}
	}
	if h.Get("X-Request-Id") != rec.Header().Get("X-Request-Id") || h.Get("X-Request-Id") == "" {
		t.Errorf("request id %q not passed on", h.Get("X-Request-Id"))
	}

	// The internal token, checked as an upstream in any language would:
	// fetch the JWKS, rebuild the RSA key, verify PKCS#1 v1.5 over SHA-256.
	raw := h.Get("X-Gatehouse-Token")
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("X-Gatehouse-Token %q", raw)
	}
	var header struct{ Kid, Alg string }
	var claims struct {
		Aud []string `json:"aud"`
		Sub string   `json:"sub"`
		Tid string   `json:"tid"`
	}
	b64 := base64.RawURLEncoding
	hb, _ := b64.DecodeString(parts[0])
	cb, _ := b64.DecodeString(parts[1])
	json.Unmarshal(hb, &header)
	json.Unmarshal(cb, &claims)
	set := decode[token.JWKSet](t, w.app.do(t, req{method: "GET", path: "/.well-known/jwks.json"}))
	var pub *rsa.PublicKey
	for _, k := range set.Keys {
		if k.KeyID == header.Kid {
			n, _ := b64.DecodeString(k.N)
			e, _ := b64.DecodeString(k.E)
			pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		}
	}
	sig, _ := b64.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if pub == nil || header.Alg != "RS256" || rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) != nil {
		t.Fatalf("the internal token does not verify against the JWKS (kid %s)", header.Kid)
	}
	if len(claims.Aud) != 1 || claims.Aud[0] != "reports" || claims.Sub != w.manager.id || claims.Tid != w.acme {
		t.Errorf("internal token claims %+v", claims)
	}
	// And Gatehouse itself refuses it as an access token.
	wantRejected(t, w.app.me(t, raw))
	if got := h.Get("X-Gatehouse-Scope"); got != "all" {
		t.Errorf("manager's scope %q, want all", got)
	}
}

// A caller holding only the ":own" form of a route's permission is let
// through with X-Gatehouse-Scope: own, so the upstream limits itself.
func TestGatewayOwnScope(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	cfg := testConfig(t, backends[0])
	writeRoutes(t, cfg.Gateway.RoutesFile, "routes:\n  - name: orders\n    prefix: /api/orders\n    upstreams: ["+up.URL+"]\n    auth: orders:read\n")
	w := newWorldOn(t, startApp(t, cfg))
	for _, c := range []struct {
		who   person
		scope string
	}{{w.member, "own"}, {w.manager, "all"}} {
		wantStatus(t, w.as(t, c.who, "GET", "/api/orders/list", nil), 200, "")
		up.mu.Lock()
		got := up.last.Get("X-Gatehouse-Scope")
		up.mu.Unlock()
		if got != c.scope {
			t.Errorf("X-Gatehouse-Scope %q, want %q", got, c.scope)
		}
	}
	wantStatus(t, w.app.do(t, req{method: "GET", path: "/api/orders/list", bearer: w.member.token,
		header: map[string]string{"X-Gatehouse-Scope": "all"}}), 200, "")
	up.mu.Lock()
	defer up.mu.Unlock()
	if got := up.last.Get("X-Gatehouse-Scope"); got != "own" {
		t.Errorf("a client's own X-Gatehouse-Scope got through: %q", got)
	}
}

// Acceptance 5: reload with a valid file adds the routes (and documents
// them); an invalid file is refused and the routes in use stay.
func TestGatewayReload(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	cfg := testConfig(t, backends[0])
	w := newWorldOn(t, startApp(t, cfg))
	reload := func(p person) *httpRecorder {
		return w.app.do(t, req{method: "POST", path: "/v1/admin/gateway/reload", bearer: p.token})
	}
	wantStatus(t, w.app.do(t, req{method: "GET", path: "/open/hello"}), 404, "not_found")
	writeRoutes(t, cfg.Gateway.RoutesFile, "routes:\n  - name: open\n    prefix: /open\n    upstreams: ["+up.URL+"]\n    auth: public\n")
	wantStatus(t, reload(w.admin), 403, "forbidden") // a tenant admin may not
	rec := reload(w.super)
	wantStatus(t, rec, 200, "")
	if strings.TrimSpace(rec.Body.String()) != `{"routes":1}` {
		t.Errorf("reload answered %s", rec.Body)
	}
	wantStatus(t, w.app.do(t, req{method: "GET", path: "/open/hello"}), 200, "")
	if !strings.Contains(w.app.do(t, req{method: "GET", path: "/openapi.json"}).Body.String(), `"/open/{path}"`) {
		t.Error("the reloaded route is not in the OpenAPI document")
	}
	for _, bad := range []string{"routes: [\n", "routes:\n  - name: open\n    prefix: relative\n    upstreams: [" + up.URL + "]\n    auth: public\n",
		// Not below http.write_timeout (60s): its 504 could not be sent.
		"routes:\n  - name: open\n    prefix: /open\n    upstreams: [" + up.URL + "]\n    auth: public\n    timeout: 60s\n",
		// Under the session cookies' path.
		"routes:\n  - name: open\n    prefix: /v1/auth/open\n    upstreams: [" + up.URL + "]\n    auth: public\n"} {
		writeRoutes(t, cfg.Gateway.RoutesFile, bad)
		wantStatus(t, reload(w.super), 400, "gateway_config")
		wantStatus(t, w.app.do(t, req{method: "GET", path: "/open/hello"}), 200, "") // the old routes stay
	}
	if !strings.Contains(w.app.logs.String(), "gateway reload refused") {
		t.Error("the refused reload was not logged")
	}
}

// Roles leave Gatehouse in four places: X-Gatehouse-Roles, the internal
// token, /v1/auth/me and introspection. Each tells the roles as they are
// now, not as the access token was issued: a role taken through one
// instance is gone from all four on the other's very next request, although
// the caller's token still names it.
func TestCurrentRolesAcrossInstances(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	cfg := testConfig(t, backends[1])
	sum := sha256.Sum256([]byte("s3rvice-secret"))
	cfg.Auth.IntrospectClients = []string{"orders:" + hex.EncodeToString(sum[:])}
	writeRoutes(t, cfg.Gateway.RoutesFile, "routes:\n  - name: reports\n    prefix: /api/reports\n    upstreams: ["+up.URL+
		"]\n    auth: authenticated\n    internal_token: true\n")
	a := startApp(t, cfg)
	w := newWorldOn(t, a)
	b := startApp(t, cfg)
	tok := w.manager.token
	const managerRole = "01950000-0000-7000-8000-000000000003" // seeded by migration 00004
	check := func(want string) {
		t.Helper()
		wantStatus(t, b.do(t, req{method: "GET", path: "/api/reports/q1", bearer: tok}), 200, "")
		up.mu.Lock()
		h := up.last
		up.mu.Unlock()
		if got := h.Get("X-Gatehouse-Roles"); got != want {
			t.Errorf("X-Gatehouse-Roles %q, want %q", got, want)
		}
		var internal struct{ Roles []string }
		if err := json.Unmarshal(jwtPart(t, h.Get("X-Gatehouse-Token"), 1), &internal); err != nil ||
			strings.Join(internal.Roles, ",") != want {
			t.Errorf("internal token roles %v (%v), want %q", internal.Roles, err, want)
		}
		me := decode[auth.MeResponse](t, b.me(t, tok))
		if got := strings.Join(me.Roles, ","); got != want {
			t.Errorf("/v1/auth/me roles %q, want %q", got, want)
		}
		rec := b.do(t, req{method: "POST", path: "/v1/oauth/introspect", body: url.Values{"token": {tok}}.Encode(),
			header: map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic " + basic("orders", "s3rvice-secret")}})
		wantStatus(t, rec, 200, "")
		if got := decode[auth.IntrospectResponse](t, rec); !got.Active || strings.Join(got.Roles, ",") != want {
			t.Errorf("introspection %+v, want active with roles %q", got, want)
		}
	}
	for range 2 { // the second time from b's caches
		check("manager,member")
	}
	wantStatus(t, a.do(t, req{method: "DELETE", path: "/v1/tenants/" + w.acme + "/members/" + w.manager.id + "/roles/" + managerRole,
		bearer: w.admin.token}), 204, "")
	check("member")
	if got := claims(t, tok).Roles; strings.Join(got, ",") != "manager,member" {
		t.Fatalf("the token itself names %v; the test shows nothing", got)
	}
}

// jwtPart decodes part i of a compact JWT.
func jwtPart(t *testing.T, raw string, i int) []byte {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", raw)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A route whose prefix lies above the session cookies' path proxies its
// own paths, but nothing under /v1/auth reaches the upstream, so the
// browser's refresh cookie (scoped to that path) is never handed to it;
// nor may the upstream set that cookie.
func TestGatewayKeepsTheCookiePath(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Add("Set-Cookie", "gatehouse_refresh=planted; Path=/v1/auth; HttpOnly")
		w.Header().Add("Set-Cookie", "theme=dark")
	}))
	t.Cleanup(up.Close)
	cfg := testConfig(t, backends[0])
	writeRoutes(t, cfg.Gateway.RoutesFile, "routes:\n  - name: v1\n    prefix: /v1\n    upstreams: ["+up.URL+"]\n    auth: public\n")
	a := startApp(t, cfg)
	rec := a.do(t, req{method: "GET", path: "/v1/catalogue"})
	wantStatus(t, rec, 200, "")
	if got := rec.Header().Values("Set-Cookie"); len(got) != 1 || got[0] != "theme=dark" {
		t.Errorf("Set-Cookie from the upstream: %q", got)
	}
	for _, p := range []string{"/v1/auth/callback", "/v1/auth/x/y"} {
		wantStatus(t, a.do(t, req{method: "GET", path: p, header: map[string]string{"Cookie": "gatehouse_refresh=r; gatehouse_csrf=c"}}),
			404, "not_found")
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("the upstream got %d requests, want 1", n)
	}
}

// Upstream latency and errors reach the metrics, labelled by route name.
func TestGatewayUpstreamMetrics(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close() // refuses connections
	cfg := testConfig(t, backends[0])
	cfg.Metrics.Token = metricsToken
	writeRoutes(t, cfg.Gateway.RoutesFile, "routes:\n"+
		"  - {name: live, prefix: /live, upstreams: ["+up.URL+"], auth: public}\n"+
		"  - {name: dead, prefix: /dead, upstreams: ["+dead.URL+"], auth: public}\n")
	app := startApp(t, cfg)
	wantStatus(t, app.do(t, req{method: "GET", path: "/live/a"}), 200, "")
	wantStatus(t, app.do(t, req{method: "GET", path: "/live/b"}), 200, "")
	wantStatus(t, app.do(t, req{method: "GET", path: "/dead/a"}), 502, "bad_gateway")
	m := scrape(t, app)
	for name, want := range map[string]float64{
		`gatehouse_gateway_upstream_duration_seconds_count{route="live"}`:       2,
		`gatehouse_gateway_upstream_errors_total{outcome="error",route="dead"}`: 1,
		`gatehouse_gateway_upstream_errors_total{outcome="error",route="live"}`: 0,
	} {
		if m[name] != want {
			t.Errorf("%s = %v, want %v", name, m[name], want)
		}
	}
}
