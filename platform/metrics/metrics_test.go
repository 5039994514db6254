package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"gatehouse/platform/audit"
	"gatehouse/platform/db"
	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
	"gatehouse/platform/metrics"
)

// newServer mounts routes on an httpx server whose metrics slot is m's.
func newServer(t testing.TB, m *metrics.Metrics, routes ...httpx.Route) *httpx.Server {
	t.Helper()
	s := httpx.New(httpx.Options{
		Logger:       slog.New(slog.DiscardHandler),
		MaxBodyBytes: 1 << 20,
		Slots:        httpx.Slots{Metrics: m.Slot},
	})
	if err := s.Mount(routes...); err != nil {
		t.Fatal(err)
	}
	return s
}

func route(method, path string, h echo.HandlerFunc) httpx.Route {
	return httpx.Route{Method: method, Path: path, Auth: httpx.Public, Handle: h}
}

// testRoutes answer 200, a fault's 403, a panic's 500 and a fault's 404.
func testRoutes() []httpx.Route {
	return []httpx.Route{
		route(http.MethodGet, "/ok", func(c echo.Context) error { return c.String(http.StatusOK, "ok") }),
		route(http.MethodGet, "/forbidden", func(c echo.Context) error {
			return fault.New(fault.Forbidden, "forbidden", "no")
		}),
		route(http.MethodGet, "/panic", func(c echo.Context) error { panic("boom") }),
		route(http.MethodGet, "/items/{id}", func(c echo.Context) error {
			return fault.ErrNotFound
		}),
	}
}

func do(t testing.TB, h http.Handler, method, path string) int {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, path, nil))
	return w.Code
}

// scrape fetches h's exposition and parses it.
func scrape(t *testing.T, h http.Handler, header string) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if header != "" {
		req.Header.Set("Authorization", header)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Fatalf("scrape: status %d: %s", w.Code, w.Body)
	}
	text := w.Body.String()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	return text, fams
}

// value returns the value of the series of fams named name whose labels
// include labels: a counter's or gauge's value, a histogram's count. It
// returns -1 when there is no such series.
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func TestSlotCountsByRouteTemplateAndStatus(t *testing.T) {
	m := metrics.New()
	s := newServer(t, m, testRoutes()...)
	cases := []struct {
		path, route string
		status, n   int
	}{
		{"/ok", "/ok", 200, 3},
		{"/forbidden", "/forbidden", 403, 2},
		{"/panic", "/panic", 500, 1},
		{"/items/42", "/items/{id}", 404, 2},
	}
	for _, c := range cases {
		for range c.n {
			if got := do(t, s, http.MethodGet, c.path); got != c.status {
				t.Fatalf("GET %s: status %d, want %d", c.path, got, c.status)
			}
		}
	}
	// An unrouted path never reaches a slot: nothing is counted for it.
	do(t, s, http.MethodGet, "/nowhere")

	_, fams := scrape(t, m.Handler(""), "")
	for _, c := range cases {
		l := map[string]string{"route": c.route, "method": "GET", "status": strconv.Itoa(c.status)}
		if got := value(fams, "gatehouse_http_requests_total", l); got != float64(c.n) {
			t.Errorf("requests %v = %v, want %d", l, got, c.n)
		}
		hl := map[string]string{"route": c.route, "method": "GET"}
		if got := value(fams, "gatehouse_http_request_duration_seconds", hl); got != float64(c.n) {
			t.Errorf("duration count %v = %v, want %d", hl, got, c.n)
		}
	}
	for _, m := range fams["gatehouse_http_requests_total"].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "route" && strings.Contains(lp.GetValue(), "nowhere") {
				t.Errorf("unrouted path counted: %v", m)
			}
		}
	}
}

// TestSlotCountsStatusSentAfterPartialWrite checks that a handler that
// answers and then fails is counted with the status it sent.
func TestSlotCountsStatusSentAfterPartialWrite(t *testing.T) {
	m := metrics.New()
	s := newServer(t, m,
		route(http.MethodGet, "/late-error", func(c echo.Context) error {
			_ = c.String(http.StatusAccepted, "partly")
			return errors.New("after the answer")
		}),
		route(http.MethodGet, "/late-panic", func(c echo.Context) error {
			_ = c.String(http.StatusCreated, "partly")
			panic("after the answer")
		}))
	if got := do(t, s, http.MethodGet, "/late-error"); got != http.StatusAccepted {
		t.Fatalf("status %d", got)
	}
	if got := do(t, s, http.MethodGet, "/late-panic"); got != http.StatusCreated {
		t.Fatalf("status %d", got)
	}
	_, fams := scrape(t, m.Handler(""), "")
	for r, st := range map[string]string{"/late-error": "202", "/late-panic": "201"} {
		if got := value(fams, "gatehouse_http_requests_total", map[string]string{"route": r, "status": st}); got != 1 {
			t.Errorf("%s status %s counted %v times, want 1", r, st, got)
		}
	}
}

func TestRouteLabelIsTemplate(t *testing.T) {
	m := metrics.New()
	s := newServer(t, m, route(http.MethodGet, "/x/{id}", func(c echo.Context) error {
		return c.NoContent(http.StatusNoContent)
	}))
	for i := range 200 {
		do(t, s, http.MethodGet, "/x/"+strconv.Itoa(i)+"-user@example.com")
	}
	_, fams := scrape(t, m.Handler(""), "")
	for _, name := range []string{"gatehouse_http_requests_total", "gatehouse_http_request_duration_seconds"} {
		routes := map[string]bool{}
		for _, mt := range fams[name].GetMetric() {
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "route" {
					routes[lp.GetValue()] = true
				}
			}
		}
		if len(routes) != 1 || !routes["/x/{id}"] {
			t.Errorf("%s route label values = %v, want only /x/{id}", name, routes)
		}
	}
	if got := value(fams, "gatehouse_http_requests_total", map[string]string{"route": "/x/{id}", "status": "204"}); got != 200 {
		t.Errorf("count = %v, want 200", got)
	}
}

// counters returns every gatehouse_* counter series of fams by a key that
// names the metric and its labels.
func counters(fams map[string]*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for name, f := range fams {
		if !strings.HasPrefix(name, "gatehouse_") || f.GetType() != dto.MetricType_COUNTER {
			continue
		}
		for _, m := range f.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName()+"="+lp.GetValue())
			}
			sort.Strings(ls)
			out[name+"{"+strings.Join(ls, ",")+"}"] = m.Counter.GetValue()
		}
	}
	return out
}

type recorded struct{ events []audit.Event }

func (r *recorded) Record(_ context.Context, e audit.Event) { r.events = append(r.events, e) }

func TestRecorderMapping(t *testing.T) {
	login := func(outcome string, meta map[string]any) audit.Event {
		return audit.Event{Action: "auth.login", Outcome: outcome, Actor: audit.Anonymous("a@example.com"), Metadata: meta}
	}
	cases := []struct {
		name  string
		event audit.Event
		want  []string // the counters that move by one, and no other
	}{
		{"login success", login(audit.Success, nil), []string{
			"gatehouse_login_requests_total{}", "gatehouse_auth_success_total{}", "gatehouse_audit_events_total{outcome=success}"}},
		{"login wrong password", login(audit.Failure, map[string]any{"reason": "wrong_password"}), []string{
			"gatehouse_login_requests_total{}", "gatehouse_auth_failure_total{reason=wrong_password}",
			"gatehouse_audit_events_total{outcome=failure}"}},
		{"login unknown reason", login(audit.Failure, map[string]any{"reason": "user 7 typed hunter2"}), []string{
			"gatehouse_login_requests_total{}", "gatehouse_auth_failure_total{reason=other}",
			"gatehouse_audit_events_total{outcome=failure}"}},
		{"login reason not a string", login(audit.Failure, map[string]any{"reason": 7}), []string{
			"gatehouse_login_requests_total{}", "gatehouse_auth_failure_total{reason=other}",
			"gatehouse_audit_events_total{outcome=failure}"}},
		{"refresh", audit.Event{Action: "auth.refresh", Outcome: audit.Success}, []string{
			"gatehouse_token_refresh_total{}", "gatehouse_audit_events_total{outcome=success}"}},
		{"refresh failed", audit.Event{Action: "auth.refresh", Outcome: audit.Failure}, []string{
			"gatehouse_audit_events_total{outcome=failure}"}},
		{"refresh reuse", audit.Event{Action: "auth.refresh_token_reused", Outcome: audit.Failure}, []string{
			"gatehouse_token_reuse_detected_total{}", "gatehouse_audit_events_total{outcome=failure}"}},
		{"access denied", audit.Event{Action: "access.denied", Outcome: audit.Failure, Metadata: map[string]any{"code": "forbidden"}}, []string{
			"gatehouse_access_denied_total{code=forbidden}", "gatehouse_audit_events_total{outcome=failure}"}},
		{"access denied unknown code", audit.Event{Action: "access.denied", Outcome: audit.Failure, Metadata: map[string]any{"code": "/v1/users/42"}}, []string{
			"gatehouse_access_denied_total{code=other}", "gatehouse_audit_events_total{outcome=failure}"}},
		{"other action", audit.Event{Action: "order.create", Outcome: audit.Success}, []string{
			"gatehouse_audit_events_total{outcome=success}"}},
		{"odd outcome", audit.Event{Action: "order.create", Outcome: "maybe"}, []string{
			"gatehouse_audit_events_total{outcome=other}"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := metrics.New()
			_, fams := scrape(t, m.Handler(""), "")
			before := counters(fams)
			next := &recorded{}
			m.Recorder(next).Record(context.Background(), c.event)
			_, fams = scrape(t, m.Handler(""), "")
			after := counters(fams)
			var moved []string
			for k, v := range after {
				if v != before[k] {
					if v-before[k] != 1 {
						t.Errorf("%s moved by %v", k, v-before[k])
					}
					moved = append(moved, k)
				}
			}
			sort.Strings(moved)
			want := slices.Clone(c.want)
			sort.Strings(want)
			if !slices.Equal(moved, want) {
				t.Errorf("moved %v, want %v", moved, want)
			}
			if len(next.events) != 1 || next.events[0].Action != c.event.Action {
				t.Errorf("next got %v, want the event passed on", next.events)
			}
		})
	}
	// A nil next counts only.
	metrics.New().Recorder(nil).Record(context.Background(), login(audit.Success, nil))
}

func TestRateLimits(t *testing.T) {
	m := metrics.New()
	var ipAllowed, ipBlocked atomic.Int64
	ipAllowed.Store(5)
	ipBlocked.Store(2)
	m.RateLimits([]string{"ip", "login"}, func(p string) (int64, int64) {
		if p == "ip" {
			return ipAllowed.Load(), ipBlocked.Load()
		}
		return 0, 0
	})
	check := func(policy string, allowed, blocked float64) {
		t.Helper()
		_, fams := scrape(t, m.Handler(""), "")
		if got := value(fams, "gatehouse_rate_limits_allowed_total", map[string]string{"policy": policy}); got != allowed {
			t.Errorf("%s allowed = %v, want %v", policy, got, allowed)
		}
		if got := value(fams, "gatehouse_rate_limits_blocked_total", map[string]string{"policy": policy}); got != blocked {
			t.Errorf("%s blocked = %v, want %v", policy, got, blocked)
		}
		if fams["gatehouse_rate_limits_blocked_total"].GetType() != dto.MetricType_COUNTER {
			t.Errorf("blocked is not a counter")
		}
	}
	check("ip", 5, 2)
	check("login", 0, 0)
	ipBlocked.Add(3)
	check("ip", 5, 5)
}

func TestHandlerToken(t *testing.T) {
	const token = "0123456789abcdef-metrics"
	h := metrics.New().Handler(token)
	for _, c := range []struct {
		name, header string
		want         int
	}{
		{"none", "", 401},
		{"wrong", "Bearer not-the-token-at-all", 401},
		{"prefix", "Bearer " + token[:10], 401},
		{"basic", "Basic " + token, 401},
		{"right", "Bearer " + token, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			if c.header != "" {
				req.Header.Set("Authorization", c.header)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != c.want {
				t.Fatalf("status %d, want %d", w.Code, c.want)
			}
			if c.want == 401 {
				var body httpx.ErrorBody
				if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error.Code != "unauthenticated" {
					t.Errorf("body %q (%v), want code unauthenticated", w.Body, err)
				}
				if w.Header().Get("WWW-Authenticate") == "" {
					t.Error("no WWW-Authenticate")
				}
				return
			}
			if !strings.Contains(w.Body.String(), "gatehouse_http_requests_total") && !strings.Contains(w.Body.String(), "go_goroutines") {
				t.Errorf("scrape lacks metrics: %.200s", w.Body)
			}
		})
	}
	// No token: open.
	if got := do(t, metrics.New().Handler(""), http.MethodGet, "/metrics"); got != 200 {
		t.Errorf("no token configured: status %d, want 200", got)
	}
}

func TestErrorEventAndUpstream(t *testing.T) {
	m := metrics.New()
	m.ErrorEvent(500)
	m.ErrorEvent(503)
	m.ErrorEvent(404)
	m.DeclareUpstreams("billing")
	m.Upstream("billing", 20*time.Millisecond, "ok")
	m.Upstream("billing", time.Second, "timeout")
	m.Upstream("billing", time.Second, "something odd")
	_, fams := scrape(t, m.Handler(""), "")
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"gatehouse_error_events_total", map[string]string{"class": "5xx"}, 2},
		{"gatehouse_gateway_upstream_duration_seconds", map[string]string{"route": "billing"}, 3},
		{"gatehouse_gateway_upstream_errors_total", map[string]string{"route": "billing", "outcome": "timeout"}, 1},
		{"gatehouse_gateway_upstream_errors_total", map[string]string{"route": "billing", "outcome": "other"}, 1},
		{"gatehouse_gateway_upstream_errors_total", map[string]string{"route": "billing", "outcome": "error"}, 0},
	} {
		if got := value(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

func TestRedisHook(t *testing.T) {
	m := metrics.New()
	hook := m.RedisHook()
	ctx := context.Background()
	run := func(err error, args ...any) {
		cmd := redis.NewCmd(ctx, args...)
		_ = hook.ProcessHook(func(context.Context, redis.Cmder) error { cmd.SetErr(err); return err })(ctx, cmd)
	}
	run(nil, "GET", "k")
	run(redis.Nil, "GET", "k") // a missing key is not a failure
	run(errors.New("READONLY"), "SET", "k", "v")
	run(nil, "FLUSHALL")
	pipe := []redis.Cmder{redis.NewCmd(ctx, "incr", "n"), redis.NewCmd(ctx, "expire", "n", 10), redis.NewCmd(ctx, "get", "z")}
	pipe[2].SetErr(redis.Nil)
	_ = hook.ProcessPipelineHook(func(context.Context, []redis.Cmder) error { return nil })(ctx, pipe)
	broken := []redis.Cmder{redis.NewCmd(ctx, "del", "a")}
	_ = hook.ProcessPipelineHook(func(context.Context, []redis.Cmder) error { return io.ErrUnexpectedEOF })(ctx, broken)

	_, fams := scrape(t, m.Handler(""), "")
	for _, c := range []struct {
		op, result string
		want       float64
	}{
		{"get", "ok", 3}, {"get", "error", 0}, {"set", "error", 1}, {"other", "ok", 1},
		{"incr", "ok", 1}, {"expire", "ok", 1}, {"del", "error", 1},
	} {
		if got := value(fams, "gatehouse_redis_operations_total", map[string]string{"op": c.op, "result": c.result}); got != c.want {
			t.Errorf("redis %s %s = %v, want %v", c.op, c.result, got, c.want)
		}
	}
	if value(fams, "gatehouse_redis_operations_total", map[string]string{"op": "flushall"}) != -1 {
		t.Error("an unknown command got its own series")
	}
}

// populated returns Metrics registered the way main.go wires them, with
// traffic through one route.
func populated(t *testing.T) *metrics.Metrics {
	t.Helper()
	m := metrics.New()
	s := newServer(t, m, testRoutes()...)
	do(t, s, http.MethodGet, "/ok")
	m.DeclareUpstreams("api")
	m.RateLimits([]string{"ip"}, func(string) (int64, int64) { return 1, 0 })
	m.Gauge("gatehouse_active_sessions", "Sessions alive.", func() float64 { return 3 })
	m.Gauge("gatehouse_business_kpi_active_users", "Users active in the KPI window.", func() float64 { return 2 })
	m.Gauge("gatehouse_audit_queue_depth", "Audit events waiting to be written.", func() float64 { return 0 })
	m.CounterFunc("gatehouse_audit_events_dropped_total", "Audit events dropped because the queue was full.", func() float64 { return 0 })
	d, err := db.Open(context.Background(), db.Config{SQLitePath: filepath.Join(t.TempDir(), "gatehouse.db")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	m.DB("main", d.SQL())
	return m
}

// TestExposedBeforeAnyEvent checks that a fresh Metrics already exposes
// every metric this package owns, so dashboards and alerts find them.
func TestExposedBeforeAnyEvent(t *testing.T) {
	m := metrics.New()
	// A mounted route exposes its HTTP series at zero, before any request.
	newServer(t, m, testRoutes()...)
	m.DeclareUpstreams("api")
	m.RateLimits([]string{"ip"}, func(string) (int64, int64) { return 0, 0 })
	_, fams := scrape(t, m.Handler(""), "")
	for _, name := range []string{
		"gatehouse_http_requests_total", "gatehouse_http_request_duration_seconds", "gatehouse_login_requests_total",
		"gatehouse_auth_success_total", "gatehouse_auth_failure_total", "gatehouse_token_refresh_total",
		"gatehouse_token_reuse_detected_total", "gatehouse_error_events_total", "gatehouse_redis_operations_total",
		"gatehouse_rate_limits_allowed_total", "gatehouse_rate_limits_blocked_total", "gatehouse_access_denied_total",
		"gatehouse_audit_events_total", "gatehouse_gateway_upstream_duration_seconds", "gatehouse_gateway_upstream_errors_total",
		"go_goroutines",
	} {
		f, ok := fams[name]
		if !ok {
			t.Errorf("%s not exposed", name)
			continue
		}
		if name == "go_goroutines" {
			continue
		}
		for _, mt := range f.GetMetric() {
			if v := mt.GetCounter().GetValue() + float64(mt.GetHistogram().GetSampleCount()); v != 0 {
				t.Errorf("%s = %v before any event", name, v)
			}
		}
	}
}

var metricName = regexp.MustCompile(`\b(?:gatehouse|go)_\w+`)

// dashboardMetrics returns every metric name the panel targets of the
// dashboard JSON name, rows' nested panels included.
func dashboardMetrics(t *testing.T, path string) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var dash struct {
		UID           string            `json:"uid"`
		SchemaVersion int               `json:"schemaVersion"`
		Panels        []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if dash.UID == "" || dash.SchemaVersion == 0 {
		t.Errorf("dashboard uid %q, schemaVersion %d: both must be set", dash.UID, dash.SchemaVersion)
	}
	names := map[string][]string{} // metric -> panel titles
	var walk func([]json.RawMessage)
	walk = func(ps []json.RawMessage) {
		for _, r := range ps {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			for _, tg := range p.Targets {
				for _, n := range metricName.FindAllString(tg.Expr, -1) {
					names[n] = append(names[n], p.Title)
				}
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	if len(names) == 0 {
		t.Fatal("no metric found in the dashboard")
	}
	return names
}

func TestDashboardMetricsExist(t *testing.T) {
	names := dashboardMetrics(t, "../../configs/grafana/dashboards/gatehouse.json")
	_, fams := scrape(t, populated(t).Handler(""), "")
	var missing []string
	for name, panels := range names {
		if _, ok := fams[name]; ok {
			continue
		}
		// A histogram's series: name_bucket, name_sum, name_count.
		found := false
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok {
				if f, ok := fams[base]; ok && (f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY) {
					found = true
				}
			}
		}
		if !found {
			missing = append(missing, name+" (panels: "+strings.Join(slices.Compact(panels), ", ")+")")
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the dashboard names metrics the registry does not expose:\n  %s", strings.Join(missing, "\n  "))
	}
}

// TestPromtoolCheckMetrics lints a full scrape with promtool, when
// installed (Debian: apt-get install prometheus).
func TestPromtoolCheckMetrics(t *testing.T) {
	m := populated(t)
	s := newServer(t, m, route(http.MethodGet, "/x/{id}", func(c echo.Context) error { return c.NoContent(204) }))
	do(t, s, http.MethodGet, "/x/1")
	m.Recorder(nil).Record(context.Background(), audit.Event{Action: "auth.login", Outcome: audit.Failure})
	m.Upstream("api", time.Millisecond, "error")
	text, _ := scrape(t, m.Handler(""), "")

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install -y --no-install-recommends prometheus); skipping the lint")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
