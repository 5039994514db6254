package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"gatehouse/platform/config"
	"gatehouse/platform/db"
	"gatehouse/platform/httpx"
	"gatehouse/platform/kv"
	"gatehouse/platform/testenv"
)

// backend names a storage stack a test App runs on.
type backend struct {
	name string
	// dbURL and redisURL return the service URLs, skipping the test when
	// the service is not configured; nil means the embedded default.
	dbURL, redisURL func(t testing.TB) string
}

var backends = []backend{
	{name: "sqlite+memory"},
	{name: "postgres+redis", dbURL: func(t testing.TB) string { return testenv.PostgresURL(t) }, redisURL: func(t testing.TB) string {
		return testenv.Need(t, testenv.EnvRedis)
	}},
}

// testConfig returns the configuration of a test App on a backend, with
// its own database (file or schema) and key prefix.
func testConfig(t testing.TB, b backend) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Auth.BcryptCost = config.MinBcryptCost // tests make many hashes
	cfg.Auth.BcryptProcess = false             // in process; TestBcryptHelperProcess covers the helpers
	cfg.Auth.FailedLoginDelay = 0
	cfg.Auth.CookieSecure = false
	// Tests that are not about limits must not hit them.
	for i := range cfg.RateLimit.Policies {
		cfg.RateLimit.Policies[i].Limit = 10000
	}
	dir := t.TempDir()
	cfg.Database.SQLitePath = filepath.Join(dir, "g.db")
	cfg.Gateway.RoutesFile = filepath.Join(dir, "routes.yaml") // absent: no proxied routes
	if b.dbURL != nil {
		cfg.Database.URL = b.dbURL(t)
	}
	if b.redisURL != nil {
		cfg.Redis.URL = b.redisURL(t)
		cfg.Redis.Prefix = "test:" + testenv.Random(6) + ":"
		url, prefix := cfg.Redis.URL, cfg.Redis.Prefix
		t.Cleanup(func() {
			r, err := kv.NewRedis(context.Background(), url, "")
			if err != nil {
				return // the test took Redis away; nothing to clean
			}
			defer r.Close()
			testenv.DeleteKeys(t, r.Client(), prefix)
		})
	}
	return cfg
}

// testApp is a running App with handles on what it runs on.
type testApp struct {
	*app
	db   *db.DB
	kv   kv.Store
	logs *syncBuffer
}

type syncBuffer = testenv.SyncBuffer

// startApp builds an App from cfg; two calls with one cfg are two
// instances sharing the database and the key-value store.
func startApp(t testing.TB, cfg config.Config, extra ...httpx.Route) testApp {
	t.Helper()
	return startAppOn(t, cfg, nil, extra...)
}

// startAppOn is startApp with the App's key-value store passed through
// wrap (nil: as opened), for tests that make the store fail.
func startAppOn(t testing.TB, cfg config.Config, wrap func(kv.Store) kv.Store, extra ...httpx.Route) testApp {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if _, bench := t.(*testing.B); bench {
		// Benchmarks log as serve does, to nowhere: a buffer growing by
		// a line per request would be what they measure.
		l, h := newAsyncLogger(cfg.Log, io.Discard)
		t.Cleanup(func() { h.Close() })
		log = l
	}
	ctx := context.Background()
	conn, err := openDB(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	store, err := kv.Open(ctx, cfg.Redis.URL, cfg.Redis.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if wrap != nil {
		store = wrap(store)
	}
	a, err := newApp(ctx, cfg, log, conn, store, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return testApp{app: a, db: conn, kv: store, logs: logs}
}

// newTestApp builds the App on a backend; mod may change the settings.
func newTestApp(t *testing.T, b backend, mod func(*config.Config)) testApp {
	t.Helper()
	cfg := testConfig(t, b)
	if mod != nil {
		mod(&cfg)
	}
	return startApp(t, cfg)
}

func do(t *testing.T, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

func TestAppOnEachBackend(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			app := newTestApp(t, b, nil)
			for _, path := range []string{"/health", "/health/detailed", "/health/database", "/health/cache"} {
				rec := do(t, app, "GET", path)
				var rep struct{ Status string }
				if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &rep) != nil || rep.Status != "ok" {
					t.Errorf("%s: %d %s", path, rec.Code, rec.Body)
				}
			}
			rec := do(t, app, "GET", "/health/detailed")
			wantDB, wantKV := `"backend":"sqlite"`, `"backend":"memory"`
			if b.dbURL != nil {
				wantDB, wantKV = `"backend":"postgres"`, `"backend":"redis"`
			}
			if !strings.Contains(rec.Body.String(), wantDB) || !strings.Contains(rec.Body.String(), wantKV) {
				t.Errorf("detailed health names the wrong backends: %s", rec.Body)
			}
		})
	}
}

// /openapi.json is a valid OpenAPI 3 document describing the mounted routes.
func TestOpenAPIDocument(t *testing.T) {
	app := newTestApp(t, backends[0], nil)
	rec := do(t, app, "GET", "/openapi.json")
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("/openapi.json: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	doc, err := openapi3.NewLoader().LoadFromData(rec.Body.Bytes())
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("invalid OpenAPI 3 document: %v", err)
	}
	for _, r := range app.Routes() {
		item := doc.Paths.Find(r.Path)
		if r.Hidden != (item == nil || item.GetOperation(r.Method) == nil) {
			t.Errorf("%s %s: hidden=%v but in document=%v", r.Method, r.Path, r.Hidden, item != nil)
		}
	}
	if doc.Paths.Find("/health/detailed").Get.Responses.Value("200") == nil {
		t.Error("health has no documented 200")
	}
}

// /docs works offline: every asset it names is served by Gatehouse itself,
// and its CSP forbids the browser to load anything from elsewhere.
func TestDocsPageIsSelfContained(t *testing.T) {
	app := newTestApp(t, backends[0], nil)
	rec := do(t, app, "GET", "/docs")
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("/docs: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	csp := rec.Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("docs CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-eval") || strings.Contains(csp, "script-src 'self' 'unsafe-inline'") {
		t.Errorf("docs CSP too loose: %q", csp)
	}
	page := rec.Body.String()
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 3 {
		t.Fatalf("found %d asset references in %s", len(refs), page)
	}
	for _, m := range refs {
		u, err := url.Parse(m[1])
		if err != nil || u.Host != "" || !strings.HasPrefix(u.Path, "/docs/") {
			t.Errorf("asset %q is not served by Gatehouse", m[1])
			continue
		}
		if a := do(t, app, "GET", u.Path); a.Code != 200 || a.Body.Len() == 0 {
			t.Errorf("asset %s: %d", u.Path, a.Code)
		}
	}
	if !strings.Contains(do(t, app, "GET", "/docs/docs.js").Body.String(), `url: "/openapi.json"`) {
		t.Error("docs.js does not load the local document")
	}
	for _, path := range []string{"/docs/", "/docs/vendor/", "/docs/nope.js", "/docs/../main.go", "/docs/%2e%2e/web.go"} {
		if rec := do(t, app, "GET", path); rec.Code != 404 || !strings.Contains(rec.Body.String(), `"code":"not_found"`) {
			t.Errorf("%s: %d %s", path, rec.Code, rec.Body)
		}
	}
	disabled := newTestApp(t, backends[0], func(c *config.Config) { c.HTTP.Docs = false })
	if rec := do(t, disabled, "GET", "/docs"); rec.Code != 404 {
		t.Errorf("/docs with docs off: %d", rec.Code)
	}
}

// relay forwards TCP to a real service and can cut it, so a test can take
// Postgres or Redis away from a running App and give it back.
type relay struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

func newRelay(t *testing.T, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); r.setCut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			if r.cut {
				r.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				r.mu.Unlock()
				c.Close()
				continue
			}
			r.conns = append(r.conns, c, up)
			r.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return r
}

// setCut drops every open connection and refuses new ones, or lets them
// through again.
func (r *relay) setCut(cut bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cut = cut
	if cut {
		for _, c := range r.conns {
			c.Close()
		}
		r.conns = nil
	}
}

// through rewrites a service URL to go through the relay.
func (r *relay) through(t testing.TB, raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = r.ln.Addr().String()
	return u.String()
}

// A dependency that goes away under a running App turns its health answer
// to 503; when it returns, the answer is 200 again with no restart.
func TestHealthFollowsDependencies(t *testing.T) {
	pg := testenv.PostgresURL(t)
	rd := testenv.Need(t, testenv.EnvRedis)
	pgAddr, _ := url.Parse(pg)
	rdAddr, _ := url.Parse(rd)
	pgRelay, rdRelay := newRelay(t, pgAddr.Host), newRelay(t, rdAddr.Host)
	app := newTestApp(t, backend{name: "relayed",
		dbURL:    func(t testing.TB) string { return pgRelay.through(t, pg) },
		redisURL: func(t testing.TB) string { return rdRelay.through(t, rd) },
	}, func(c *config.Config) { c.Health.Timeout = 500 * time.Millisecond })

	expect := func(path string, want int) {
		t.Helper()
		// A pool may need a moment to notice; poll briefly for the change.
		deadline := time.Now().Add(5 * time.Second)
		for {
			rec := do(t, app, "GET", path)
			if rec.Code == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d %s, want %d", path, rec.Code, rec.Body, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	expect("/health/detailed", 200)
	for _, step := range []struct {
		relay *relay
		path  string
	}{{rdRelay, "/health/cache"}, {pgRelay, "/health/database"}} {
		step.relay.setCut(true)
		expect(step.path, 503)
		expect("/health/detailed", 503)
		expect("/health", 200) // liveness does not depend on it
		step.relay.setCut(false)
		expect(step.path, 200)
		expect("/health/detailed", 200)
	}
}
