package ratelimit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/audit"
	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
)

// Key kinds: what a rule counts requests by.
const (
	KeyIP        = "ip"
	KeyUser      = "user"
	KeyTenant    = "tenant"
	KeyIPRoute   = "ip+route"
	KeyUserRoute = "user+route"
	KeyIPEmail   = "ip+email"
	KeyEmail     = "email"
)

// Rule is a policy as configured: what it counts by, and what to do when
// the limiter's backend fails.
type Rule struct {
	Policy
	Key string
	// OnError "deny" refuses requests while the backend is down (login,
	// OTP: better closed than open to guessing); "allow" lets them through.
	OnError string
}

// before reports whether the rule is decided before authentication: it
// needs only the connection and the body.
func (r Rule) before() bool {
	return r.Key == KeyIP || r.Key == KeyIPRoute || r.Key == KeyIPEmail || r.Key == KeyEmail
}

// Counts are a policy's decisions since start, for metrics.
type Counts struct {
	Allowed, Blocked, Errors atomic.Int64
}

// Errors of the rate-limit steps.
var (
	ErrLimited     = fault.New(fault.TooManyRequests, "rate_limited", "too many requests: slow down")
	ErrUnavailable = fault.New(fault.Unavailable, "rate_limiter_unavailable", "requests are refused while the rate limiter is unavailable")
)

// Exceeded is ErrLimited with the wait, which the error handler sends as
// Retry-After.
type Exceeded struct{ Wait time.Duration }

func (e Exceeded) Error() string             { return ErrLimited.Error() }
func (e Exceeded) Unwrap() error             { return ErrLimited }
func (e Exceeded) RetryAfter() time.Duration { return e.Wait }

// Enforcer applies rules to routes: it fills the chain's two rate-limit
// slots and decides in-service checks.
type Enforcer struct {
	limiter       Limiter
	rules         map[string]Rule
	anonymous     []string
	authenticated []string
	plan          func(ctx context.Context, tenantID string) int
	log           *slog.Logger
	counts        map[string]*Counts
	refusals      refusals

	// timeout bounds each decision; 0 for the in-process limiter, which
	// never waits and is spared the timer.
	timeout  time.Duration
	ipv6Bits int // the prefix an IPv6 client is counted by

	// An outage is logged once, and so is its end: once the limiter has
	// answered without an error for quiet since its last error. With one
	// Cluster node down, some decisions fail and others do not, and the
	// end of the outage must not be logged between each two of them.
	down    atomic.Bool
	lastErr atomic.Int64 // Unix nanoseconds of the last error
	quiet   time.Duration
}

// Defaults of the settings an Enforcer has beyond its rules.
const (
	// DefaultTimeout bounds a decision (ratelimit.timeout): a round trip
	// to Redis takes well under a millisecond, and a request held longer
	// by a Redis that never answers is an outage.
	DefaultTimeout = 250 * time.Millisecond
	// DefaultIPv6Prefix is the prefix an IPv6 client is counted by
	// (ratelimit.ipv6_prefix): the /56 RFC 6177 expects end sites such as
	// a home subscriber to get; some get a /48.
	DefaultIPv6Prefix = 56
	// recoveredAfter is how long the limiter must answer without an error
	// before the end of an outage is logged.
	recoveredAfter = 10 * time.Second
)

// refusals aggregates refused requests per policy, key and minute: one
// audit event per key and minute, never one per refused request, so a
// flood cannot flood the audit log too. A minute's events are written by a
// goroutine of their own shortly after the minute ends, never inside a
// request: a request's context would stamp them with its IP, user agent
// and request id, and a minute would wait for the next refusal to be
// written at all.
type refusals struct {
	events audit.Recorder
	every  time.Duration // how often ended minutes are written; refusalFlushEvery
	mu     sync.Mutex
	counts map[refusalKey]*refused
	stop   chan struct{} // closed by Close; nil until RecordRefusals
	done   chan struct{} // closed when the flushing goroutine has returned
	once   sync.Once
}

// refusalFlushEvery is how often the minutes that have ended are written:
// a minute's refusals reach the audit log within this of its end.
const refusalFlushEvery = 10 * time.Second

type refusalKey struct {
	minute      int64
	policy, key string
}

// refused is one key's refusals in a minute, and the address of the first
// of them (the key of a user- or email-keyed policy does not name it).
type refused struct {
	n  int
	ip string
}

// RecordRefusals makes the Enforcer report refusals to events, aggregated
// per policy, key and minute, each minute's shortly after it ends. Call
// Close at shutdown to stop that and report the current minute.
func (e *Enforcer) RecordRefusals(events audit.Recorder) {
	r := &e.refusals
	r.events = events
	if r.stop != nil {
		return // already flushing
	}
	if r.every <= 0 {
		r.every = refusalFlushEvery
	}
	r.stop, r.done = make(chan struct{}), make(chan struct{})
	go r.run()
}

// Close stops reporting refusals and reports those not yet reported, the
// current minute's included. It may be called more than once.
func (e *Enforcer) Close() {
	r := &e.refusals
	if r.stop != nil {
		r.once.Do(func() { close(r.stop) })
		<-r.done
	}
	r.flush(math.MaxInt64)
}

func (r *refusals) run() {
	defer close(r.done)
	tick := time.NewTicker(r.every)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case now := <-tick.C:
			r.flush(now.Unix() / 60)
		}
	}
}

// add counts a refusal at now. ctx is the refused request's: only its
// client address is kept.
func (r *refusals) add(ctx context.Context, policy, key string, now time.Time) {
	if r.events == nil {
		return
	}
	k := refusalKey{now.Unix() / 60, policy, key}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.counts[k]; c != nil {
		c.n++
		return
	}
	var from audit.Event
	audit.Complete(ctx, &from) // the only way to read the request's address
	if r.counts == nil {
		r.counts = map[refusalKey]*refused{}
	}
	r.counts[k] = &refused{n: 1, ip: from.IP}
}

// flush reports the refusals of the minutes before the one given.
func (r *refusals) flush(before int64) {
	r.mu.Lock()
	var done map[refusalKey]*refused
	for k, c := range r.counts {
		if k.minute < before {
			if done == nil {
				done = map[refusalKey]*refused{}
			}
			done[k] = c
			delete(r.counts, k)
		}
	}
	r.mu.Unlock()
	// No request's context: the events name no request, and the IP is the
	// first refused request's, set here.
	ctx := context.Background()
	for k, c := range done {
		r.events.Record(ctx, audit.Event{Action: "ratelimit.refused", Outcome: audit.Failure,
			Actor: audit.Actor{Type: "anonymous", ID: maskKey(k.key)}, ResourceType: "rate_limit_policy", ResourceID: k.policy,
			IP: c.ip, Metadata: map[string]any{"refused": c.n, "minute": time.Unix(k.minute*60, 0).UTC().Format(time.RFC3339)}})
	}
}

// maskKey masks the email in a counting key (ip|email, email).
func maskKey(key string) string {
	parts := strings.Split(key, "|")
	for i, p := range parts {
		if strings.Contains(p, "@") {
			parts[i] = audit.MaskEmail(p)
		}
	}
	return strings.Join(parts, "|")
}

// NewEnforcer returns an Enforcer. anonymous and authenticated name the
// rules every public and every authenticated route gets on top of its own;
// anonymous ones must be keyed by address or email, since a public route
// has no user. plan gives the factor of a tenant's plan (nil: 1). Each
// decision waits at most DefaultTimeout (SetTimeout), and IPv6 clients are
// counted by their DefaultIPv6Prefix (SetIPv6Prefix).
func NewEnforcer(l Limiter, rules []Rule, anonymous, authenticated []string,
	plan func(ctx context.Context, tenantID string) int, log *slog.Logger) (*Enforcer, error) {
	e := &Enforcer{limiter: l, rules: map[string]Rule{}, anonymous: anonymous, authenticated: authenticated,
		plan: plan, log: log, counts: map[string]*Counts{}, ipv6Bits: DefaultIPv6Prefix, quiet: recoveredAfter}
	if _, local := l.(*Memory); !local {
		e.timeout = DefaultTimeout
	}
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			return nil, err
		}
		e.rules[r.Name] = r
		e.counts[r.Name] = &Counts{}
	}
	// Public routes have no user slot: such a default would never be
	// decided, and every public route would be unlimited.
	for _, n := range anonymous {
		if r, ok := e.rules[n]; ok && !r.before() {
			return nil, fmt.Errorf("ratelimit.anonymous: the policy %q is keyed by %s, and a public route has none: use a policy keyed by ip, ip+route, ip+email or email", n, r.Key)
		}
	}
	return e, nil
}

// SetTimeout bounds each decision to d: past it, the rule's on_error
// applies, as when the backend is down. The in-process limiter never
// waits, and its decisions are left unbounded. Call it before serving.
func (e *Enforcer) SetTimeout(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("ratelimit: the timeout must be positive, got %s", d)
	}
	if _, local := e.limiter.(*Memory); !local {
		e.timeout = d
	}
	return nil
}

// SetIPv6Prefix makes the Enforcer count an IPv6 client by its first bits
// bits, from 32 to 64. Call it before serving.
func (e *Enforcer) SetIPv6Prefix(bits int) error {
	if bits < 32 || bits > 64 {
		return fmt.Errorf("ratelimit: the IPv6 prefix must be from 32 to 64 bits, got %d", bits)
	}
	e.ipv6Bits = bits
	return nil
}

// Counts returns the decision counts of a policy, or nil.
func (e *Enforcer) Counts(policy string) *Counts { return e.counts[policy] }

// CheckRoutes reports a route that names a policy no rule defines, or a
// public route that names a user- or tenant-keyed policy its handler does
// not decide (httpx.Route.LimitsInHandler): either must stop the start,
// not leave the route unlimited.
func (e *Enforcer) CheckRoutes(routes []httpx.Route) error {
	for _, r := range routes {
		for _, n := range r.Limits {
			rule, ok := e.rules[n]
			if !ok {
				return fmt.Errorf("route %s %s: no rate-limit policy named %q", r.Method, r.Path, n)
			}
			if r.Auth.IsPublic() && !rule.before() && !r.LimitsInHandler {
				return fmt.Errorf("route %s %s: the policy %q is keyed by %s, and a public route has none: use a policy keyed by ip, ip+route, ip+email or email", r.Method, r.Path, n, rule.Key)
			}
		}
	}
	return nil
}

// rulesFor returns the rules of a route decided before (or after)
// authentication. On a public route there is no user, so user- and
// tenant-keyed rules it names are left to the handler (Check).
func (e *Enforcer) rulesFor(r httpx.Route, before bool) []Rule {
	names := append([]string{}, r.Limits...)
	switch {
	case r.NoDefaultLimits:
	case r.Auth.IsPublic():
		names = append(names, e.anonymous...)
	default:
		names = append(names, e.authenticated...)
	}
	var out []Rule
	for _, n := range names {
		rule, ok := e.rules[n]
		if ok && rule.before() == before {
			out = append(out, rule)
		}
	}
	return out
}

// Before is the IP rate-limit slot: rules keyed by address, route and email.
func (e *Enforcer) Before(r httpx.Route) echo.MiddlewareFunc { return e.slot(e.rulesFor(r, true)) }

// After is the user rate-limit slot: rules keyed by user and tenant.
func (e *Enforcer) After(r httpx.Route) echo.MiddlewareFunc { return e.slot(e.rulesFor(r, false)) }

func (e *Enforcer) slot(rules []Rule) echo.MiddlewareFunc {
	if len(rules) == 0 {
		return nil
	}
	needEmail := false
	for _, r := range rules {
		needEmail = needEmail || r.Key == KeyIPEmail || r.Key == KeyEmail
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			email := ""
			if needEmail {
				var err error
				if email, err = peekEmail(c); err != nil {
					return err
				}
			}
			ds, err := e.decideAll(c.Request().Context(), rules, func(r Rule) string { return e.key(c, r, email) })
			if err != nil {
				return err
			}
			var tightest *Decision
			for i := range ds {
				if d := &ds[i]; tightest == nil || d.Remaining < tightest.Remaining || !d.Allowed {
					tightest = d
				}
			}
			h := c.Response().Header()
			if !tightest.Allowed {
				setHeaders(h, *tightest)
				return Exceeded{Wait: tightest.RetryAfter}
			}
			if !tighterSet(h, tightest.Remaining) {
				setHeaders(h, *tightest)
			}
			return next(c)
		}
	}
}

// tighterSet reports whether h already shows a decision with at most
// remaining requests left: the IP slot's, when the user slot decides after
// it. The headers show the tightest policy of both slots, not the last.
func tighterSet(h http.Header, remaining int) bool {
	v := h["Ratelimit-Remaining"]
	if len(v) != 1 {
		return false
	}
	n, err := strconv.Atoi(v[0])
	return err == nil && n <= max(remaining, 0)
}

// Check decides one request under the named policy for key, for limits a
// handler applies itself (refresh per user). It returns Exceeded when the
// request is refused.
func (e *Enforcer) Check(ctx context.Context, policy, key string) error {
	rule, ok := e.rules[policy]
	if !ok {
		return fmt.Errorf("ratelimit: no policy named %q", policy)
	}
	d, err := e.decide(ctx, rule, key)
	if err != nil {
		return err
	}
	if !d.Allowed {
		return Exceeded{Wait: d.RetryAfter}
	}
	return nil
}

// decideAll decides the rules of one slot in order, stopping at the first
// refusal, in one step (one Redis round trip for all of them). It returns
// the decisions made.
func (e *Enforcer) decideAll(ctx context.Context, rules []Rule, key func(Rule) string) ([]Decision, error) {
	checks := make([]Check, len(rules))
	for i, rule := range rules {
		k := key(rule)
		checks[i] = Check{Policy: e.policy(ctx, rule, k), Key: k}
	}
	lctx, cancel := e.bound(ctx)
	ds, err := e.limiter.AllowSeq(lctx, checks)
	cancel()
	if err != nil {
		// Nothing was decided: each rule's on_error applies, in order.
		out := make([]Decision, 0, len(rules))
		for i, rule := range rules {
			d, err := e.outcome(ctx, rule, checks[i], Decision{}, err)
			if err != nil {
				return nil, err
			}
			out = append(out, d)
		}
		return out, nil
	}
	for i := range ds {
		if ds[i], err = e.outcome(ctx, rules[i], checks[i], ds[i], nil); err != nil {
			return nil, err
		}
	}
	return ds, nil
}

// decide asks the limiter about one rule.
func (e *Enforcer) decide(ctx context.Context, rule Rule, key string) (Decision, error) {
	c := Check{Policy: e.policy(ctx, rule, key), Key: key}
	lctx, cancel := e.bound(ctx)
	d, err := e.limiter.Allow(lctx, c.Policy, key)
	cancel()
	return e.outcome(ctx, rule, c, d, err)
}

// bound returns the context a decision is made under: ctx, ending after
// the timeout. A Redis that accepts connections but never answers would
// otherwise hold the request for go-redis's read timeout, seconds, before
// on_error applies.
func (e *Enforcer) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if e.timeout == 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, e.timeout)
}

// policy is the rule's policy with the plan factor applied to tenant rules.
func (e *Enforcer) policy(ctx context.Context, rule Rule, key string) Policy {
	if rule.Key == KeyTenant && e.plan != nil {
		return rule.ForPlan(e.plan(ctx, key))
	}
	return rule.Policy
}

// ForPlan is the rule's policy for a tenant whose plan has factor f: limit
// and burst multiplied by it. Check it with Validate for every factor at
// start: a policy a factor makes invalid fails every request it decides.
func (r Rule) ForPlan(f int) Policy {
	p := r.Policy
	if f > 1 {
		p.Limit *= f
		p.Burst *= f
		if p.Algorithm == SlidingWindow {
			p.Limit = min(p.Limit, MaxWindowLimit) // the log's size cap
		}
	}
	return p
}

// outcome counts a decision, or applies the rule's choice when the backend
// failed. ctx is the request's.
func (e *Enforcer) outcome(ctx context.Context, rule Rule, c Check, d Decision, err error) (Decision, error) {
	p := c.Policy
	counts := e.counts[rule.Name]
	if errors.Is(err, ErrInvalidPolicy) {
		return Decision{}, err // a configuration bug, not an outage: a 500
	}
	if err != nil && ctx.Err() != nil {
		// The request ended (its client hung up): nothing is wrong with
		// the limiter, and no one waits for an answer. Not counted nor
		// logged, or any client could flap the outage log.
		return Decision{}, fmt.Errorf("ratelimit: %w", ctx.Err())
	}
	if err != nil {
		counts.Errors.Add(1)
		e.lastErr.Store(time.Now().UnixNano())
		if e.down.CompareAndSwap(false, true) {
			e.log.Error("rate limiter unavailable: applying each policy's on_error", "policy", rule.Name, "error", err.Error())
		}
		if rule.OnError == "deny" {
			return Decision{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return Decision{Allowed: true, Limit: p.Limit, Remaining: p.Limit}, nil
	}
	if e.down.Load() && time.Now().UnixNano()-e.lastErr.Load() >= int64(e.quiet) && e.down.CompareAndSwap(true, false) {
		e.log.Info("rate limiter available again")
	}
	// A burst above the limit can leave more than Limit remaining; the
	// headers then name the burst, so Remaining never exceeds Limit.
	d.Limit = max(d.Limit, p.Burst)
	if d.Allowed {
		counts.Allowed.Add(1)
	} else {
		counts.Blocked.Add(1)
		e.refusals.add(ctx, rule.Name, c.Key, time.Now())
	}
	return d, nil
}

// key builds the counting key of a rule for a request.
func (e *Enforcer) key(c echo.Context, rule Rule, email string) string {
	switch rule.Key {
	case KeyIP:
		return clientKey(c.RealIP(), e.ipv6Bits)
	case KeyIPRoute:
		return clientKey(c.RealIP(), e.ipv6Bits) + "|" + routeKey(c)
	case KeyIPEmail:
		return clientKey(c.RealIP(), e.ipv6Bits) + "|" + email
	case KeyEmail:
		return email
	}
	id := httpx.IdentityOf(c)
	switch rule.Key {
	case KeyUser:
		return id.UserID
	case KeyUserRoute:
		return id.UserID + "|" + routeKey(c)
	}
	return id.TenantID // KeyTenant
}

// routeKey names the route of a request for the +route keys: its template
// (/v1/orders/:id), and for a proxied route its prefix, which the gateway
// mounts as two routes, prefix and prefix/*, that must share one count.
func routeKey(c echo.Context) string {
	return strings.TrimSuffix(c.Path(), "/*")
}

// clientKey is the part of a client's address that names the client. An
// IPv6 client is its first bits bits: RFC 6177 has an end site, one home
// subscriber, given a /56 or a /48, many /64s, and keyed by full address
// it would have 2^64 allowances. An IPv4-mapped address is its IPv4
// address.
func clientKey(ip string, bits int) string {
	if strings.IndexByte(ip, ':') < 0 {
		return ip // IPv4, the common case: no parse
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	if a.Is4In6() {
		return a.Unmap().String()
	}
	p, _ := a.WithZone("").Prefix(bits)
	return p.String()
}

// peekEmail reads the "email" of a JSON body and puts the body back for
// the handler. The body limit already bounds what it reads.
func peekEmail(c echo.Context) (string, error) {
	r := c.Request()
	if r.Body == nil || r.Body == http.NoBody {
		return "", nil
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return "", err // over the limit: the error handler answers 413
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var v struct {
		Email string `json:"email"`
	}
	_ = json.Unmarshal(body, &v) // not JSON: the handler will say so
	email := strings.ToLower(strings.TrimSpace(v.Email))
	if len(email) > maxEmail {
		// No account has it, and a counting key (kept for the period, in
		// memory on the embedded default) must not be a megabyte long:
		// hashed, as the Redis keys' long parts are.
		email = keyPart(email, false)
	}
	return email, nil
}

// maxEmail is the longest address an account can have (RFC 5321's path).
const maxEmail = 254

// setHeaders writes the RateLimit fields (IETF draft: delta seconds) and
// the older X-RateLimit trio (Reset as a Unix time, as GitHub sends it).
func setHeaders(h http.Header, d Decision) {
	reset := int64(math.Ceil(d.Reset.Seconds()))
	// Every request carries these six. Their four numbers are cut from one
	// string, their values share one backing array, and the keys are in
	// canonical form already: two allocations, and no canonicalization.
	var buf [4 * 20]byte
	b := strconv.AppendInt(buf[:0], int64(d.Limit), 10)
	i := len(b)
	b = strconv.AppendInt(b, int64(max(d.Remaining, 0)), 10)
	j := len(b)
	b = strconv.AppendInt(b, reset, 10)
	k := len(b)
	b = strconv.AppendInt(b, time.Now().Add(time.Duration(reset)*time.Second).Unix(), 10)
	s := string(b)
	v := []string{s[:i], s[i:j], s[j:k], s[k:]}
	h["Ratelimit-Limit"] = v[0:1:1]
	h["Ratelimit-Remaining"] = v[1:2:2]
	h["Ratelimit-Reset"] = v[2:3:3]
	h["X-Ratelimit-Limit"] = v[0:1:1]
	h["X-Ratelimit-Remaining"] = v[1:2:2]
	h["X-Ratelimit-Reset"] = v[3:4:4]
}
