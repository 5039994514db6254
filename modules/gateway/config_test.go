package gateway

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const goodRoutes = `
routes:
  - name: orders
    prefix: /api/orders
    methods: [get, POST]
    host: API.example.com
    upstreams: ["http://orders-1:8080", "http://orders-2:8080/base/"]
    strip_prefix: true
    auth: orders:read
    limits: [api-user]
    timeout: 5s
    idle_timeout: 2m
    retries: 2
    max_body_bytes: 1048576
    max_requests: 64
    pass_authorization: true
    internal_token: true
    health_check: {path: /healthz, interval: 2s}
    breaker: {failures: 3, cooldown: 10s}
  - name: files
    prefix: /files
    upstreams: ["https://files.internal"]
    rewrite: /v2
    auth: public
    websocket: true
`

func TestParseGood(t *testing.T) {
	cfg, err := Parse([]byte(goodRoutes))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Routes) != 2 {
		t.Fatalf("%d routes, want 2", len(cfg.Routes))
	}
	o, f := cfg.Routes[0], cfg.Routes[1]
	if o.Name != "orders" || o.Prefix != "/api/orders" || o.Host != "api.example.com" || !o.StripPrefix ||
		o.Auth != "orders:read" || o.Timeout != 5*time.Second || o.IdleTimeout != 2*time.Minute || o.Retries != 2 || o.MaxBodyBytes != 1<<20 || o.MaxRequests != 64 ||
		!o.PassAuthorization || !o.InternalToken || o.HealthCheck != (HealthCheck{"/healthz", 2 * time.Second}) ||
		o.Breaker != (Breaker{3, 10 * time.Second}) {
		t.Errorf("orders: %+v", o)
	}
	if !slices.Equal(o.Methods, []string{"GET", "POST"}) || !slices.Equal(o.Limits, []string{"api-user"}) ||
		len(o.Upstreams) != 2 {
		t.Errorf("orders lists: %+v", o)
	}
	// The defaults are filled in.
	if !slices.Equal(f.Methods, defaultMethods) || f.Timeout != DefaultTimeout || f.IdleTimeout != DefaultIdleTimeout || f.MaxBodyBytes != DefaultMaxBodyBytes || f.MaxRequests != DefaultMaxRequests ||
		f.Breaker != (Breaker{DefaultFailures, DefaultCooldown}) || f.HealthCheck != (HealthCheck{}) || f.Rewrite != "/v2" || !f.WebSocket {
		t.Errorf("files defaults: %+v", f)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, doc := range []string{"", "# nothing yet\n", "routes: []\n"} {
		cfg, err := Parse([]byte(doc))
		if err != nil || len(cfg.Routes) != 0 {
			t.Errorf("%q: %v, %+v", doc, err, cfg)
		}
	}
}

// TestParseBad checks that each mistake is refused with one line naming
// the route and the field.
func TestParseBad(t *testing.T) {
	const base = "  - name: svc\n    prefix: /api/svc\n    upstreams: [\"http://svc:8080\"]\n    auth: public\n"
	cases := []struct {
		name, doc, want string
	}{
		{"unknown key", base + "    colour: blue\n", `route "svc": colour: unknown key (line 6)`},
		{"unknown nested key", base + "    breaker: {failures: 2, cooldwn: 1s}\n", `route "svc": breaker.cooldwn: unknown key`},
		{"unknown top key", "routez: []\n", `routez: unknown key (line 1)`},
		{"duration as number", base + "    timeout: 5\n", `route "svc": timeout: want a duration such as 30s, got "5"`},
		{"retries as text", base + "    retries: many\n", `route "svc": retries: want a whole number, got "many"`},
		{"missing name", "  - prefix: /a\n    upstreams: [\"http://a\"]\n    auth: public\n", `route #1: name: want 1 to 63`},
		{"bad name", strings.Replace(base, "name: svc", "name: Svc_1", 1), `route "Svc_1": name:`},
		{"relative prefix", strings.Replace(base, "/api/svc", "api/svc", 1), `route "svc": prefix: want an absolute path`},
		{"trailing slash", strings.Replace(base, "/api/svc", "/api/svc/", 1), `route "svc": prefix: "/api/svc/" must not end with /`},
		{"root prefix", strings.Replace(base, "/api/svc", "/", 1), `route "svc": prefix: "/" would take every path`},
		{"dot prefix", strings.Replace(base, "/api/svc", "/api/../svc", 1), `route "svc": prefix: "/api/../svc" is not a clean path`},
		{"wildcard prefix", strings.Replace(base, "/api/svc", "/api/*", 1), `route "svc": prefix: "/api/*" may hold only`},
		{"param prefix", strings.Replace(base, "/api/svc", "/api/:id", 1), `route "svc": prefix: "/api/:id" may hold only`},
		{"brace prefix", strings.Replace(base, "/api/svc", "/api/{id}", 1), `route "svc": prefix: "/api/{id}" may hold only`},
		{"no upstreams", strings.Replace(base, `["http://svc:8080"]`, "[]", 1), `route "svc": upstreams: at least one is required`},
		{"upstream scheme", strings.Replace(base, "http://svc:8080", "ftp://svc", 1), `route "svc": upstreams[0]: "ftp://svc": want http:// or https://`},
		{"upstream no host", strings.Replace(base, "http://svc:8080", "http://", 1), `route "svc": upstreams[0]: "http://" has no host`},
		{"upstream creds", strings.Replace(base, "http://svc:8080", "http://u:p@svc", 1), `route "svc": upstreams[0]: "http://u:p@svc" must not carry credentials`},
		{"upstream query", strings.Replace(base, "http://svc:8080", "http://svc/?a=1", 1), `route "svc": upstreams[0]: "http://svc/?a=1" must not have a query`},
		{"upstream twice", strings.Replace(base, `["http://svc:8080"]`, `["http://a", "http://a"]`, 1), `route "svc": upstreams[1]: "http://a" is listed twice`},
		{"method", base + "    methods: [GET, TRACE]\n", `route "svc": methods[1]: "TRACE" is not one of`},
		{"method twice", base + "    methods: [GET, get]\n", `route "svc": methods[1]: GET is listed twice`},
		{"host", base + "    host: \"bad host\"\n", `route "svc": host: want a host name`},
		{"no auth", strings.Replace(base, "    auth: public\n", "", 1), `route "svc": auth: is required`},
		{"bad auth", strings.Replace(base, "auth: public", "auth: admin", 1), `route "svc": auth: want public, authenticated or a permission`},
		{"own auth", strings.Replace(base, "auth: public", "auth: orders:read:own", 1), `route "svc": auth: want public`},
		{"token on public", base + "    internal_token: true\n", `route "svc": internal_token: needs a route that is not public`},
		{"strip and rewrite", base + "    strip_prefix: true\n    rewrite: /v2\n", `route "svc": rewrite: strip_prefix and rewrite exclude each other`},
		{"bad rewrite", base + "    rewrite: v2\n", `route "svc": rewrite: want an absolute path`},
		{"limit name", base + "    limits: [\"Bad Name\"]\n", `route "svc": limits[0]: "Bad Name" is not a policy name`},
		{"negative timeout", base + "    timeout: -1s\n", `route "svc": timeout: must not be negative`},
		{"negative idle timeout", base + "    idle_timeout: -1s\n", `route "svc": idle_timeout: must not be negative`},
		{"retries", base + "    retries: 11\n", `route "svc": retries: want 0 to 10, got 11`},
		{"body", base + "    max_body_bytes: -1\n", `route "svc": max_body_bytes: must not be negative`},
		{"max requests", base + "    max_requests: -1\n", `route "svc": max_requests: want 1 to 1048576, got -1`},
		{"max requests high", base + "    max_requests: 2000000\n", `route "svc": max_requests: want 1 to 1048576, got 2000000`},
		{"websocket without get", base + "    methods: [POST]\n    websocket: true\n", `route "svc": websocket: a WebSocket handshake is a GET`},
		{"health interval alone", base + "    health_check: {interval: 1s}\n", `route "svc": health_check.interval: is set but health_check.path is not`},
		{"health path", base + "    health_check: {path: healthz}\n", `route "svc": health_check.path: want an absolute path`},
		{"breaker", base + "    breaker: {failures: -1}\n", `route "svc": breaker.failures: must not be negative`},
		{"cooldown", base + "    breaker: {cooldown: -1s}\n", `route "svc": breaker.cooldown: must not be negative`},
		{"duplicate name", base + strings.Replace(base, "/api/svc", "/api/other", 1), `route "svc": name: another route has this name`},
		{"duplicate prefix", base + strings.Replace(base, "name: svc", "name: other", 1), `route "other": prefix: route "svc" has this prefix too`},
		{"two documents", base + "---\nroutes: []\n", "want one YAML document"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := c.doc
			if !strings.HasPrefix(doc, "route") {
				doc = "routes:\n" + doc
			}
			_, err := Parse([]byte(doc))
			if err == nil {
				t.Fatalf("accepted:\n%s", doc)
			}
			if msg := err.Error(); !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q, want one line holding %q", msg, c.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	cfg, err := Load(filepath.Join(dir, "missing.yaml"))
	if err != nil || len(cfg.Routes) != 0 {
		t.Fatalf("missing file: %v, %+v", err, cfg)
	}
	path := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(path, []byte("routes:\n  - name: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+`: route "x": prefix: is required`) {
		t.Fatalf("error %v, want it to name the file, route and field", err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "gateway routes:") {
		t.Fatalf("a directory: %v", err)
	}
}

// TestNewChecks shows New refuses what Parse refuses, and a route that
// wants tokens without a signer.
func TestNewChecks(t *testing.T) {
	if _, err := New(&Config{Routes: []RouteConfig{{Name: "x", Prefix: "/x/", Auth: "public", Upstreams: []string{"http://a"}}}}, Deps{}); err == nil ||
		!strings.Contains(err.Error(), `route "x": prefix:`) {
		t.Errorf("bad prefix: %v", err)
	}
	r := RouteConfig{Name: "x", Prefix: "/x", Auth: "authenticated", Upstreams: []string{"http://a"}, InternalToken: true}
	if _, err := New(&Config{Routes: []RouteConfig{r}}, Deps{}); err == nil || !strings.Contains(err.Error(), "no signer") {
		t.Errorf("no signer: %v", err)
	}
	r = RouteConfig{Name: "x", Prefix: "/x", Auth: "public", Upstreams: []string{"http://a"}} // timeout 30s by default
	if _, err := New(&Config{Routes: []RouteConfig{r}}, Deps{WriteTimeout: DefaultTimeout}); err == nil ||
		!strings.Contains(err.Error(), "must be below http.write_timeout") {
		t.Errorf("timeout not below the write timeout: %v", err)
	}
	r.Timeout = DefaultTimeout - time.Second
	g, err := New(&Config{Routes: []RouteConfig{r}}, Deps{WriteTimeout: DefaultTimeout})
	if err != nil {
		t.Fatalf("timeout below the write timeout: %v", err)
	}
	g.Close()
	for _, prefix := range []string{"/v1/auth", "/v1/auth/x", "/V1/Auth/x"} {
		r := RouteConfig{Name: "x", Prefix: prefix, Auth: "public", Upstreams: []string{"http://a"}}
		if _, err := New(&Config{Routes: []RouteConfig{r}}, Deps{Reserved: []string{"/v1/auth"}}); err == nil ||
			!strings.Contains(err.Error(), "which Gatehouse keeps to itself") {
			t.Errorf("prefix %s under a reserved one: %v", prefix, err)
		}
	}
	g, err = New(nil, Deps{})
	if err != nil || len(g.Routes()) != 0 {
		t.Fatalf("nil config: %v", err)
	}
	g.Close()
	g.Close() // idempotent
}

// TestShippedRoutes parses configs/routes.yaml and the example in its
// comments, so the documentation stays true.
func TestShippedRoutes(t *testing.T) {
	const path = "../../configs/routes.yaml"
	if _, err := Load(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, example, ok := strings.Cut(string(data), "# Example:\n#\n")
	if !ok {
		t.Fatal("no example in routes.yaml")
	}
	var b strings.Builder
	for line := range strings.Lines(example) {
		if !strings.HasPrefix(line, "#") {
			break
		}
		b.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "#"), " "))
	}
	cfg, err := Parse([]byte(b.String()))
	if err != nil || len(cfg.Routes) != 2 {
		t.Fatalf("example: %v\n%s", err, b.String())
	}
}
