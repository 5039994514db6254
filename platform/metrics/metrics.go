// Package metrics exposes Gatehouse's Prometheus metrics: HTTP traffic and
// latency per route, authentication and audit events, rate-limit decisions,
// Redis operations, gateway upstreams, database pools and the Go runtime.
//
// Every metric lives in the Metrics' own registry, never in the
// client library's global default, so two servers in one process (tests)
// never share counters, and main.go decides what is registered.
//
// Labels have bounded cardinality. They never carry user ids, emails,
// tokens, tenant ids or raw request paths: a route is named by its Path
// template (/v1/orders/{id}), never by the path requested, and a label whose
// value comes from an event (a failure reason, a denial code, a Redis
// command, an upstream outcome) only takes values from a fixed list, with
// "other" for the rest. Series whose label values are known in advance are
// created at zero, so dashboards find them before the first event and rate()
// does not miss the first increment.
package metrics

import (
	"database/sql"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds the registry and the metrics Gatehouse updates. It is safe
// for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	httpRequests *prometheus.CounterVec   // route, method, status
	httpDuration *prometheus.HistogramVec // route, method

	loginRequests prometheus.Counter
	authSuccess   prometheus.Counter
	authFailure   map[string]prometheus.Counter // by reason, read-only after New
	tokenRefresh  prometheus.Counter
	tokenReuse    prometheus.Counter
	accessDenied  map[string]prometheus.Counter // by code, read-only after New
	auditEvents   map[string]prometheus.Counter // by outcome, read-only after New
	errorEvents   prometheus.Counter            // class 5xx

	redisOps map[string]*[2]prometheus.Counter // by op: ok, error; read-only after New

	upstreamDuration *prometheus.HistogramVec // route
	upstreamErrors   *prometheus.CounterVec   // route, outcome

	// declared remembers the upstream routes already created at zero.
	declared sync.Map
}

// other stands for every label value outside a fixed list.
const other = "other"

// loginFailureReasons are the values the reason label of
// gatehouse_auth_failure_total takes; any other reason is counted as
// "other". They are the reasons the auth module records.
var loginFailureReasons = []string{
	"unknown_email", "wrong_password", "bad_password_length", "not_a_member",
	"password_login_disabled", "locked", "user_disabled", "user_suspended",
	"user_locked", "user_pending", "user_deleted",
}

// deniedCodes are the values the code label of gatehouse_access_denied_total
// takes; any other code is counted as "other". They are the error codes of
// 401 and 403 answers, and invalid_path (a 400 for a path the gateway will
// not forward, audited as a denial).
var deniedCodes = []string{
	"unauthenticated", "invalid_token", "invalid_credentials", "invalid_refresh_token", "refresh_token_reused",
	"invalid_client", "forbidden", "forbidden_tenant", "escalation", "system_role", "tenant_mismatch",
	"tenant_suspended", "not_a_member", "invalid_current_password", "csrf_failed", "login_method_not_allowed",
	"invalid_path",
}

// upstreamOutcomes are the values the outcome label of
// gatehouse_gateway_upstream_errors_total takes besides "other".
var upstreamOutcomes = []string{"error", "timeout", "canceled", "status_5xx", "circuit_open", "saturated"}

// New returns Metrics with a fresh registry holding the Go runtime and
// process collectors and every gatehouse_* metric of this package.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := factory{reg}
	m := &Metrics{
		reg: reg,
		httpRequests: f.counterVec("gatehouse_http_requests_total",
			"HTTP requests answered, by route template, method and status.", "route", "method", "status"),
		httpDuration: f.histogramVec("gatehouse_http_request_duration_seconds",
			"Time to answer an HTTP request, by route template and method.", "route", "method"),
		loginRequests: f.counter("gatehouse_login_requests_total", "Password logins attempted."),
		authSuccess:   f.counter("gatehouse_auth_success_total", "Password logins that succeeded."),
		tokenRefresh:  f.counter("gatehouse_token_refresh_total", "Refresh tokens rotated."),
		tokenReuse: f.counter("gatehouse_token_reuse_detected_total",
			"Rotated refresh tokens used again; each revokes its session family."),
		upstreamDuration: f.histogramVec("gatehouse_gateway_upstream_duration_seconds",
			"Time an upstream took to answer a proxied request, by gateway route.", "route"),
		upstreamErrors: f.counterVec("gatehouse_gateway_upstream_errors_total",
			"Proxied requests that failed, by gateway route and outcome.", "route", "outcome"),
	}
	m.authFailure = f.fixed("gatehouse_auth_failure_total", "Password logins that failed, by reason.",
		"reason", loginFailureReasons)
	m.accessDenied = f.fixed("gatehouse_access_denied_total", "Requests refused for identity or permission, by error code.",
		"code", deniedCodes)
	m.auditEvents = f.fixed("gatehouse_audit_events_total", "Audit events recorded, by outcome.",
		"outcome", []string{"success", "failure"})
	m.errorEvents = f.counterVec("gatehouse_error_events_total", "Requests answered with a server error, by status class.",
		"class").WithLabelValues("5xx")
	ops := f.counterVec("gatehouse_redis_operations_total", "Redis commands sent, by command and result.", "op", "result")
	m.redisOps = make(map[string]*[2]prometheus.Counter, len(redisCommands)+1)
	for _, op := range withOther(redisCommands) {
		m.redisOps[op] = &[2]prometheus.Counter{ops.WithLabelValues(op, "ok"), ops.WithLabelValues(op, "error")}
	}
	return m
}

// Registry returns the registry, for callers that add their own collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ErrorEvent counts an answer with the given status in
// gatehouse_error_events_total if it is a server error (5xx); other
// statuses are ignored.
func (m *Metrics) ErrorEvent(status int) {
	if status >= 500 && status <= 599 {
		m.errorEvents.Inc()
	}
}

// AccessDenied counts a refusal with error code code in
// gatehouse_access_denied_total (a known code, else "other"), for refusals
// that are not recorded as an access.denied audit event, which Recorder
// counts.
func (m *Metrics) AccessDenied(code string) {
	pick(m.accessDenied, code).Inc()
}

// RateLimits exposes the decisions of each policy as
// gatehouse_rate_limits_allowed_total and gatehouse_rate_limits_blocked_total,
// read from counts at every scrape (ratelimit.Enforcer keeps them). It panics
// if a policy is registered twice.
func (m *Metrics) RateLimits(policies []string, counts func(policy string) (allowed, blocked int64)) {
	for _, p := range policies {
		labels := prometheus.Labels{"policy": p}
		m.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gatehouse_rate_limits_allowed_total",
				Help: "Requests a rate-limit policy let through.", ConstLabels: labels},
				func() float64 { a, _ := counts(p); return float64(a) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gatehouse_rate_limits_blocked_total",
				Help: "Requests a rate-limit policy refused.", ConstLabels: labels},
				func() float64 { _, b := counts(p); return float64(b) }),
		)
	}
}

// Gauge registers a gauge named name whose value f returns at every scrape.
// f must be safe for concurrent use and quick. It panics if name is taken.
func (m *Metrics) Gauge(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// CounterFunc registers a counter named name whose value f returns at every
// scrape; the value must never go down. It panics if name is taken.
func (m *Metrics) CounterFunc(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
}

// DB exposes the connection-pool statistics of db as the go_sql_* metrics,
// labelled db_name=name. It panics if name is already registered.
func (m *Metrics) DB(name string, db *sql.DB) {
	m.reg.MustRegister(collectors.NewDBStatsCollector(db, name))
}

// DeclareUpstreams creates the upstream series of each gateway route at
// zero, so dashboards see a route before its first proxied request. Routes
// declared before are left alone.
func (m *Metrics) DeclareUpstreams(routes ...string) {
	for _, r := range routes {
		if _, loaded := m.declared.LoadOrStore(r, struct{}{}); loaded {
			continue
		}
		m.upstreamDuration.WithLabelValues(r)
		for _, o := range upstreamOutcomes {
			m.upstreamErrors.WithLabelValues(r, o)
		}
	}
}

// Upstream records one proxied request to the upstream of a gateway route:
// its duration d, and, when outcome is not "ok", an error of that outcome
// (error, timeout, canceled, status_5xx, circuit_open or saturated; any other is
// counted as "other"). route must come from
// the gateway's configuration, never from the request.
func (m *Metrics) Upstream(route string, d time.Duration, outcome string) {
	m.upstreamDuration.WithLabelValues(route).Observe(d.Seconds())
	if outcome == "ok" {
		return
	}
	if !contains(upstreamOutcomes, outcome) {
		outcome = other
	}
	m.upstreamErrors.WithLabelValues(route, outcome).Inc()
}

// withOther returns a copy of list with "other" added.
func withOther(list []string) []string {
	return append(list[:len(list):len(list)], other)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// factory makes metrics and registers them in one step.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) histogramVec(name, help string, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: prometheus.DefBuckets}, labels)
	f.reg.MustRegister(h)
	return h
}

// fixed returns the children of a one-label counter for values and "other",
// all created at zero.
func (f factory) fixed(name, help, label string, values []string) map[string]prometheus.Counter {
	vec := f.counterVec(name, help, label)
	out := make(map[string]prometheus.Counter, len(values)+1)
	for _, v := range withOther(values) {
		out[v] = vec.WithLabelValues(v)
	}
	return out
}
