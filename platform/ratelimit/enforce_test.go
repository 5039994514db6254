package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/audit"
	"gatehouse/platform/httpx"
	"gatehouse/platform/testenv"
)

// A plan factor never turns a sliding window into an invalid policy, and
// the headers never show more remaining than the limit they state.
func TestEnforcerPlanAndHeaders(t *testing.T) {
	m := NewMemory(nil)
	defer m.Close()
	rules := []Rule{
		{Key: KeyTenant, OnError: "deny", Policy: Policy{Name: "tenant-window", Algorithm: SlidingWindow, Limit: 5000, Period: time.Hour}},
		{Key: KeyIP, OnError: "deny", Policy: Policy{Name: "bursty", Algorithm: TokenBucket, Limit: 2, Period: time.Hour, Burst: 10}},
		{Key: KeyUser, OnError: "allow", Policy: Policy{Name: "per-user", Algorithm: TokenBucket, Limit: 10, Period: time.Minute}},
	}
	e, err := NewEnforcer(m, rules, []string{"bursty"}, nil, func(context.Context, string) int { return 5 }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Check(context.Background(), "tenant-window", "t1"); err != nil {
		t.Fatalf("5000 × plan 5 on a sliding window: %v, want it capped and allowed", err)
	}
	if got := e.Counts("tenant-window"); got.Allowed.Load() != 1 || got.Errors.Load() != 0 {
		t.Errorf("counts: allowed %d errors %d", got.Allowed.Load(), got.Errors.Load())
	}

	srv := httpx.New(httpx.Options{Logger: slog.New(slog.DiscardHandler), MaxBodyBytes: 1024, Slots: httpx.Slots{IPLimit: e.Before}})
	if err := srv.Mount(httpx.Route{Method: "GET", Path: "/x", Auth: httpx.Public,
		Handle: func(c echo.Context) error { return c.NoContent(http.StatusNoContent) }}); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Header().Get("RateLimit-Limit") != "10" || rec.Header().Get("RateLimit-Remaining") != "9" {
		t.Errorf("burst 10 over limit 2: Limit %q Remaining %q, want 10 and 9",
			rec.Header().Get("RateLimit-Limit"), rec.Header().Get("RateLimit-Remaining"))
	}
	if err := e.CheckRoutes([]httpx.Route{{Method: "GET", Path: "/y", Limits: []string{"nope"}}}); err == nil {
		t.Error("a route naming an unknown policy was accepted")
	}
	// A public route has no user: a user-keyed policy it names would never
	// be decided, unless its handler decides it.
	if err := e.CheckRoutes([]httpx.Route{{Method: "GET", Path: "/p", Auth: httpx.Public, Limits: []string{"per-user"}}}); err == nil ||
		!strings.Contains(err.Error(), `"per-user" is keyed by user`) {
		t.Errorf("a public route naming a user-keyed policy: %v", err)
	}
	for _, r := range []httpx.Route{
		{Method: "POST", Path: "/refresh", Auth: httpx.Public, Limits: []string{"per-user"}, LimitsInHandler: true},
		{Method: "GET", Path: "/a", Auth: httpx.Authenticated, Limits: []string{"per-user", "bursty"}},
	} {
		if err := e.CheckRoutes([]httpx.Route{r}); err != nil {
			t.Errorf("%s %s: %v", r.Method, r.Path, err)
		}
	}
	// A factor that makes a tenant policy invalid shows before any request
	// (the start checks every plan), not as a 500 on each.
	tenant := Rule{Key: KeyTenant, Policy: Policy{Name: "api-tenant", Algorithm: TokenBucket, Limit: 6000, Period: time.Minute}}
	if err := tenant.ForPlan(100).Validate(); err != nil {
		t.Errorf("factor 100: %v", err)
	}
	if err := tenant.ForPlan(100000).Validate(); err == nil {
		t.Error("6000 a minute × 100000 passed Validate")
	}
}

// A counting key holds the email a body names, at most the longest an
// account's can be: a longer one (which no account has) is keyed by its
// hash, so one client cannot fill the limiter, nor the audit log, with
// megabyte keys; distinct long emails still count apart.
func TestLongEmailKeys(t *testing.T) {
	m := NewMemory(nil)
	defer m.Close()
	e, err := NewEnforcer(m, []Rule{{Key: KeyIPEmail, OnError: "deny",
		Policy: Policy{Name: "login", Algorithm: SlidingWindow, Limit: 1, Period: time.Hour}}}, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorded{}
	e.RecordRefusals(rec)
	srv := httpx.New(httpx.Options{Logger: slog.New(slog.DiscardHandler), MaxBodyBytes: 1 << 20, Slots: httpx.Slots{IPLimit: e.Before}})
	if err := srv.Mount(httpx.Route{Method: "POST", Path: "/login", Auth: httpx.Public, Limits: []string{"login"},
		Handle: func(c echo.Context) error { return c.NoContent(http.StatusNoContent) }}); err != nil {
		t.Fatal(err)
	}
	login := func(email string) int {
		r := httptest.NewRequest("POST", "/login", strings.NewReader(`{"email":"`+email+`"}`))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		return w.Code
	}
	long := "@" + strings.Repeat("a", 100000) + ".com" // a mask keeps the domain
	if a, b := login("1"+long), login("2"+long); a != 204 || b != 204 {
		t.Fatalf("two distinct long emails: %d %d, want each its own count", a, b)
	}
	if c := login("1" + long); c != http.StatusTooManyRequests {
		t.Fatalf("the same long email again: %d, want 429", c)
	}
	e.Close()
	if len(rec.events) != 1 {
		t.Fatalf("%d refusal events, want 1", len(rec.events))
	}
	if id := rec.events[0].Actor.ID; len(id) > 100 {
		t.Fatalf("the refusal names a key of %d bytes", len(id))
	}
	if login("bob@example.com") != 204 || login("bob@example.com") != 429 {
		t.Error("a usual email is not counted by itself")
	}
}

// An IPv6 client is counted by its prefix, a /56 by default: RFC 6177
// has end sites given a /56 or a /48, so one subscriber holds 256 or more
// /64s, and counted by /64 (as it was) a home user got 256 times each
// limit: 768 registrations an hour instead of 3. The prefix is a setting
// (ratelimit.ipv6_prefix, 32 to 64). An IPv4-mapped address counts as the
// IPv4 client, and a zone changes nothing.
func TestIPv6ClientsCountedByPrefix(t *testing.T) {
	newServer := func(t *testing.T, bits int) func(path, addr string) *httptest.ResponseRecorder {
		m := NewMemory(nil)
		t.Cleanup(func() { m.Close() })
		e, err := NewEnforcer(m, []Rule{{Key: KeyIP, OnError: "deny",
			Policy: Policy{Name: "register", Algorithm: SlidingWindow, Limit: 3, Period: time.Hour}}}, []string{"register"}, nil, nil, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if bits != 0 {
			if err := e.SetIPv6Prefix(bits); err != nil {
				t.Fatal(err)
			}
		}
		return serve(t, e, httpx.Route{Method: "GET", Path: "/x", Auth: httpx.Public})
	}
	t.Run("OneSubscriberSlash56", func(t *testing.T) {
		send := newServer(t, 0)
		created := 0
		for subnet := range 256 { // every /64 of 2001:db8:aa:bb00::/56
			for range 3 {
				if send("/x", fmt.Sprintf("[2001:db8:aa:bb%02x::1]:4000", subnet)).Code == 204 {
					created++
				}
			}
		}
		if created != 3 {
			t.Errorf("one /56 subscriber, 3 per hour: %d requests allowed from its /64s, want 3", created)
		}
		if w := send("/x", "[2001:db8:aa:bc00::1]:4000"); w.Code != 204 {
			t.Errorf("the next /56: %d, want 204", w.Code)
		}
	})
	for _, tc := range []struct {
		bits       int
		same, next string // an address in the first one's block, and one in the next block
	}{
		{64, "[2001:db8:1:2:ffff:ffff:ffff:fffe]:1001", "[2001:db8:1:3::1]:1000"},
		{48, "[2001:db8:1:ff00::1]:1001", "[2001:db8:2::1]:1000"},
	} {
		t.Run(fmt.Sprintf("Slash%d", tc.bits), func(t *testing.T) {
			send := newServer(t, tc.bits)
			for _, step := range []struct {
				addr string
				want int
			}{
				{"[2001:db8:1:2::1]:1000", 204},
				{"[2001:db8:1:2::1%eth0]:1002", 204}, // a zone changes nothing
				{tc.same, 204},
				{tc.same, 429},
				{tc.next, 204},
			} {
				if w := send("/x", step.addr); w.Code != step.want {
					t.Errorf("from %s: %d, want %d", step.addr, w.Code, step.want)
				}
			}
		})
	}
	t.Run("IPv4Mapped", func(t *testing.T) {
		send := newServer(t, 0)
		for _, step := range []struct {
			addr string
			want int
		}{
			{"192.0.2.7:1000", 204},
			{"[::ffff:192.0.2.7]:1000", 204},
			{"192.0.2.7:1001", 204},
			{"[::ffff:192.0.2.7]:1001", 429}, // the same client as 192.0.2.7
			{"192.0.2.8:1000", 204},          // IPv4 clients are whole addresses
		} {
			if w := send("/x", step.addr); w.Code != step.want {
				t.Errorf("from %s: %d, want %d", step.addr, w.Code, step.want)
			}
		}
	})
	m := NewMemory(nil)
	defer m.Close()
	e, _ := NewEnforcer(m, nil, nil, nil, nil, slog.New(slog.DiscardHandler))
	for _, bits := range []int{0, 31, 65, 128} {
		if err := e.SetIPv6Prefix(bits); err == nil {
			t.Errorf("SetIPv6Prefix(%d) accepted", bits)
		}
	}
}

type recorded struct{ events []audit.Event }

func (r *recorded) Record(_ context.Context, e audit.Event) { r.events = append(r.events, e) }

// Refusals reach the audit log once per policy, key and minute, with the
// count, and emails in keys masked.
func TestRefusalsAggregated(t *testing.T) {
	m := NewMemory(nil)
	defer m.Close()
	e, err := NewEnforcer(m, []Rule{{Key: KeyEmail, OnError: "deny",
		Policy: Policy{Name: "otp", Algorithm: SlidingWindow, Limit: 1, Period: time.Hour}}}, nil, nil, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorded{}
	e.RecordRefusals(rec)
	ctx := context.Background()
	for range 50 {
		e.Check(ctx, "otp", "alice@example.com")
	}
	e.Check(ctx, "otp", "bob@example.com")
	e.Check(ctx, "otp", "bob@example.com")
	e.Close()
	if len(rec.events) != 2 {
		t.Fatalf("%d events for 50 refusals of two keys, want 2: %+v", len(rec.events), rec.events)
	}
	got := map[string]any{}
	for _, ev := range rec.events {
		got[ev.Actor.ID] = ev.Metadata["refused"]
		if ev.Action != "ratelimit.refused" || ev.ResourceID != "otp" {
			t.Errorf("event %+v", ev)
		}
	}
	if got["a***@example.com"] != 49 || got["b***@example.com"] != 1 {
		t.Errorf("refusals per masked key: %v", got)
	}
}

// completing records events as audit.Writer does: completed (IP, user
// agent, request id) from the context Record is given.
type completing struct {
	mu  sync.Mutex
	got []audit.Event
}

func (c *completing) Record(ctx context.Context, e audit.Event) {
	audit.Complete(ctx, &e)
	c.mu.Lock()
	c.got = append(c.got, e)
	c.mu.Unlock()
}

func (c *completing) events() []audit.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// A minute's ratelimit.refused event names no request but the first one
// refused: the audit log must not show an attacker's refusals with the IP,
// user agent and request id of a bystander whose request happened to come
// next, as it did when the event was written inside that request.
func TestRefusalEventsNameNoOtherRequest(t *testing.T) {
	rec := &completing{}
	r := &refusals{events: rec}
	t0 := time.Unix(1_800_000_000, 0).Truncate(time.Minute)
	attacker := audit.WithRequest(context.Background(), audit.Request{IP: "203.0.113.66", UserAgent: "hydra", RequestID: "req-attacker"})
	bystander := audit.WithRequest(context.Background(), audit.Request{IP: "198.51.100.7", UserAgent: "Mozilla/5.0", RequestID: "req-bystander"})
	r.add(attacker, "login", "203.0.113.66|victim@example.com", t0.Add(10*time.Second))
	r.add(attacker, "login", "203.0.113.66|victim@example.com", t0.Add(20*time.Second))
	r.add(bystander, "login", "198.51.100.7|alice@example.com", t0.Add(70*time.Second)) // the next minute
	r.flush(t0.Add(70*time.Second).Unix() / 60)                                         // what the ticker does then
	got := rec.events()
	if len(got) != 1 {
		t.Fatalf("events = %+v, want the first minute's one", got)
	}
	e := got[0]
	if e.IP != "203.0.113.66" || e.UserAgent != "" || e.RequestID != "" || e.Metadata["refused"] != 2 {
		t.Errorf("the attacker's refusals recorded with ip %q, user agent %q, request id %q, count %v; "+
			"want the attacker's IP, no user agent or request id, count 2", e.IP, e.UserAgent, e.RequestID, e.Metadata["refused"])
	}
}

// A minute's refusals are written soon after it ends even if nothing else
// is refused: they used to wait for the next refusal, which might come
// hours later, or never before a crash lost them.
func TestRefusalsWrittenAfterTheirMinute(t *testing.T) {
	m := NewMemory(nil)
	defer m.Close()
	e, err := NewEnforcer(m, nil, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rec := &completing{}
	e.refusals.every = 10 * time.Millisecond // the ticker's period, shortened
	e.RecordRefusals(rec)
	defer e.Close()
	e.refusals.add(context.Background(), "otp", "alice@example.com", time.Now().Add(-time.Minute)) // a minute that has ended
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.events()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := rec.events(); len(got) != 1 || got[0].Actor.ID != "a***@example.com" || got[0].Metadata["refused"] != 1 {
		t.Fatalf("events written with no later refusal: %+v, want the ended minute's one", got)
	}
}

// The six rate-limit headers carry the decision's numbers, each cut whole
// from the one string they share: multi-digit values, a negative remaining
// shown as 0, Reset rounded up to whole seconds.
func TestSetHeaders(t *testing.T) {
	for _, tc := range []struct {
		d                       Decision
		limit, remaining, reset string
	}{
		{Decision{Limit: 1000000, Remaining: 999999, Reset: 2500 * time.Millisecond}, "1000000", "999999", "3"},
		{Decision{Limit: 5, Remaining: -1, Reset: 15 * time.Minute}, "5", "0", "900"},
		{Decision{Limit: 12, Remaining: 12}, "12", "12", "0"},
	} {
		h := http.Header{}
		before := time.Now().Unix()
		setHeaders(h, tc.d)
		after := time.Now().Unix()
		got := []string{h.Get("RateLimit-Limit"), h.Get("RateLimit-Remaining"), h.Get("RateLimit-Reset"),
			h.Get("X-RateLimit-Limit"), h.Get("X-RateLimit-Remaining")}
		want := []string{tc.limit, tc.remaining, tc.reset, tc.limit, tc.remaining}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%+v: headers %q, want %q", tc.d, got, want)
				break
			}
		}
		secs, _ := time.ParseDuration(tc.reset + "s")
		at, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64)
		if err != nil || at < before+int64(secs.Seconds()) || at > after+int64(secs.Seconds()) {
			t.Errorf("%+v: X-RateLimit-Reset %q, want the Unix time %s from now", tc.d, h.Get("X-RateLimit-Reset"), tc.reset+"s")
		}
	}
}

// serve mounts one route behind the Enforcer's two slots and a test
// authenticate step (X-User names the caller) and returns a function that
// sends a request from addr to path and returns the recorder.
func serve(t *testing.T, e *Enforcer, r httpx.Route) func(path, addr string) *httptest.ResponseRecorder {
	t.Helper()
	authn := func(httpx.Route) echo.MiddlewareFunc {
		return func(next echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error {
				u := c.Request().Header.Get("X-User")
				return httpx.Admit(c, httpx.Identity{UserID: u, TenantID: "t-" + u}, next)
			}
		}
	}
	srv := httpx.New(httpx.Options{Logger: slog.New(slog.DiscardHandler), MaxBodyBytes: 1024,
		Slots: httpx.Slots{IPLimit: e.Before, Authenticate: authn, UserLimit: e.After}})
	r.Handle = func(c echo.Context) error { return c.NoContent(http.StatusNoContent) }
	if err := srv.Mount(r); err != nil {
		t.Fatal(err)
	}
	return func(path, addr string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(r.Method, path, nil)
		if addr != "" {
			req.RemoteAddr = addr
		}
		req.Header.Set("X-User", "u1")
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		return w
	}
}

// When an IP-keyed policy (decided before authentication) and a
// user-keyed one (after it) both govern a request, the headers show the
// tightest of the two, as they do within one slot. The user slot used to
// overwrite the IP slot's headers: a client on its last IP allowance was
// told it had 9 requests left, and then refused.
func TestHeadersShowTheTightestAcrossSlots(t *testing.T) {
	m := NewMemory(nil)
	defer m.Close()
	rules := []Rule{
		{Key: KeyIP, OnError: "allow", Policy: Policy{Name: "ip-tight", Algorithm: SlidingWindow, Limit: 2, Period: time.Hour}},
		{Key: KeyUser, OnError: "allow", Policy: Policy{Name: "per-user", Algorithm: TokenBucket, Limit: 10, Period: time.Minute}},
		{Key: KeyUser, OnError: "allow", Policy: Policy{Name: "user-tight", Algorithm: SlidingWindow, Limit: 1, Period: time.Hour}},
		{Key: KeyIP, OnError: "allow", Policy: Policy{Name: "ip-loose", Algorithm: TokenBucket, Limit: 100, Period: time.Hour}},
	}
	e, err := NewEnforcer(m, rules, nil, []string{"per-user"}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	send := serve(t, e, httpx.Route{Method: "GET", Path: "/x", Auth: httpx.Authenticated, Limits: []string{"ip-tight"}})
	for i, want := range []struct {
		code             int
		limit, remaining string
	}{{204, "2", "1"}, {204, "2", "0"}, {429, "2", "0"}} {
		w := send("/x", "")
		if w.Code != want.code || w.Header().Get("RateLimit-Limit") != want.limit || w.Header().Get("RateLimit-Remaining") != want.remaining ||
			w.Header().Get("X-RateLimit-Remaining") != want.remaining {
			t.Errorf("request %d: %d, RateLimit-Limit %q Remaining %q (X- %q); want %d with the IP policy's %s and %s",
				i+1, w.Code, w.Header().Get("RateLimit-Limit"), w.Header().Get("RateLimit-Remaining"),
				w.Header().Get("X-RateLimit-Remaining"), want.code, want.limit, want.remaining)
		}
	}
	// The other way round: the user slot's policy is the tighter one, and
	// its headers replace the IP slot's.
	send = serve(t, e, httpx.Route{Method: "GET", Path: "/y", Auth: httpx.Authenticated, Limits: []string{"ip-loose", "user-tight"}})
	for i, want := range []struct {
		code             int
		limit, remaining string
	}{{204, "1", "0"}, {429, "1", "0"}} {
		w := send("/y", "192.0.2.99:1000")
		if w.Code != want.code || w.Header().Get("RateLimit-Limit") != want.limit || w.Header().Get("RateLimit-Remaining") != want.remaining {
			t.Errorf("/y request %d: %d, RateLimit-Limit %q Remaining %q; want %d with the user policy's %s and %s",
				i+1, w.Code, w.Header().Get("RateLimit-Limit"), w.Header().Get("RateLimit-Remaining"), want.code, want.limit, want.remaining)
		}
	}
}

// ratelimit.anonymous naming a user- or tenant-keyed policy (say
// GATEHOUSE_RATELIMIT_ANONYMOUS=api-user) used to be accepted, and then
// limited nothing: public routes have no user slot, so every public route
// was silently unlimited. It stops the start instead, as a route naming
// such a policy in its own Limits does.
func TestAnonymousDefaultsMustBeKeyedByAddressOrEmail(t *testing.T) {
	m := NewMemory(nil)
	defer m.Close()
	rules := []Rule{
		{Key: KeyIP, OnError: "allow", Policy: Policy{Name: "per-ip", Algorithm: TokenBucket, Limit: 100, Period: time.Minute}},
		{Key: KeyUser, OnError: "allow", Policy: Policy{Name: "per-user", Algorithm: TokenBucket, Limit: 600, Period: time.Minute}},
		{Key: KeyTenant, OnError: "allow", Policy: Policy{Name: "per-tenant", Algorithm: TokenBucket, Limit: 6000, Period: time.Minute}},
	}
	for _, anon := range [][]string{{"per-ip", "per-user"}, {"per-tenant"}} {
		_, err := NewEnforcer(m, rules, anon, nil, nil, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), "ratelimit.anonymous") || !strings.Contains(err.Error(), anon[len(anon)-1]) {
			t.Errorf("anonymous %v: err %v, want one naming ratelimit.anonymous and the policy", anon, err)
		}
	}
	if _, err := NewEnforcer(m, rules, []string{"per-ip"}, []string{"per-ip", "per-user", "per-tenant"}, nil, slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("anonymous keyed by ip, authenticated by any key: %v", err)
	}
}

// A client that hangs up before its decision is not an outage of the
// limiter. It used to be counted as a limiter error and logged as "rate
// limiter unavailable", and the next request logged "available again":
// any client could make the log flap, and the error metric climb, even on
// the in-process limiter, which is never unavailable.
func TestClientHangingUpIsNotALimiterOutage(t *testing.T) {
	m := NewMemory(nil)
	defer m.Close()
	var logs syncBuffer
	e, err := NewEnforcer(m, []Rule{{Key: KeyIP, OnError: "allow",
		Policy: Policy{Name: "per-ip", Algorithm: TokenBucket, Limit: 100, Period: time.Minute}}},
		[]string{"per-ip"}, nil, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httpx.New(httpx.Options{Logger: slog.New(slog.DiscardHandler), MaxBodyBytes: 1024, Slots: httpx.Slots{IPLimit: e.Before}})
	if err := srv.Mount(httpx.Route{Method: "GET", Path: "/x", Auth: httpx.Public,
		Handle: func(c echo.Context) error { return c.NoContent(http.StatusNoContent) }}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // the client went away
		srv.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil).WithContext(ctx))
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, httptest.NewRequest("GET", "/x", nil))
		if w.Code != 204 {
			t.Fatalf("a request after one that hung up: %d", w.Code)
		}
	}
	if n := e.Counts("per-ip").Errors.Load(); n != 0 {
		t.Errorf("%d requests that hung up counted as limiter errors, want 0", n)
	}
	if logs.String() != "" {
		t.Errorf("clients hanging up were logged:\n%s", logs.String())
	}
	// Through Check too (the refresh handler's way).
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.Check(ctx, "per-ip", "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Check with the request gone: %v, want context.Canceled", err)
	}
	if n := e.Counts("per-ip").Errors.Load(); n != 0 || logs.String() != "" {
		t.Errorf("Check with the request gone: %d errors, log %q", n, logs.String())
	}
}

// partial fails the decisions of some keys, as a Redis Cluster with one of
// its primaries down does.
type partial struct{ Limiter }

func (p partial) Allow(ctx context.Context, pol Policy, key string) (Decision, error) {
	if strings.HasPrefix(key, "down-") {
		return Decision{}, errors.New("dial tcp 10.0.0.3:7002: connect: connection refused")
	}
	return p.Limiter.Allow(ctx, pol, key)
}

func (p partial) AllowSeq(ctx context.Context, checks []Check) ([]Decision, error) {
	return sequential(ctx, p, checks)
}

// With one Cluster node down, the decisions of keys on it fail and the
// others succeed. The outage used to be logged, and its end, on every
// pair of such requests; it is logged once, and its end once, when the
// limiter has answered without an error for a while.
func TestPartialOutageLoggedOnce(t *testing.T) {
	m := NewMemory(nil)
	defer m.Close()
	var logs syncBuffer
	e, err := NewEnforcer(partial{m}, []Rule{{Key: KeyUser, OnError: "allow",
		Policy: Policy{Name: "api-user", Algorithm: TokenBucket, Limit: 600, Period: time.Minute}}}, nil, nil, nil,
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		e.Check(context.Background(), "api-user", "up-user")
		e.Check(context.Background(), "api-user", "down-user"+strconv.Itoa(i))
	}
	if n, m := strings.Count(logs.String(), "rate limiter unavailable"), strings.Count(logs.String(), "available again"); n != 1 || m != 0 {
		t.Errorf("a partial outage logged %d times and its end %d times, want once and not yet", n, m)
	}
	if n := e.Counts("api-user").Errors.Load(); n != 100 {
		t.Errorf("%d errors counted, want 100", n)
	}
	// The node is back: the end is logged once the limiter has answered
	// without an error for the quiet time (10 s; shortened here).
	e.quiet = 50 * time.Millisecond
	time.Sleep(60 * time.Millisecond)
	for range 10 {
		e.Check(context.Background(), "api-user", "up-user")
	}
	if n, m := strings.Count(logs.String(), "rate limiter unavailable"), strings.Count(logs.String(), "available again"); n != 1 || m != 1 {
		t.Errorf("after the outage: logged %d times and its end %d times, want once each", n, m)
	}
}

// ip+route and user+route count an in-process route by its template: the
// requests for /orders/1 and /orders/2 are one route's, and another route
// has its own count.
func TestRouteKeysAreTheTemplate(t *testing.T) {
	m := NewMemory(nil)
	defer m.Close()
	e, err := NewEnforcer(m, []Rule{{Key: KeyIPRoute, OnError: "deny",
		Policy: Policy{Name: "per-route", Algorithm: SlidingWindow, Limit: 1, Period: time.Hour}}}, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	orders := serve(t, e, httpx.Route{Method: "GET", Path: "/orders/{id}", Auth: httpx.Public, Limits: []string{"per-route"}})
	items := serve(t, e, httpx.Route{Method: "GET", Path: "/items/{id}", Auth: httpx.Public, Limits: []string{"per-route"}})
	if a, b, c := orders("/orders/1", "").Code, orders("/orders/2", "").Code, items("/items/1", "").Code; a != 204 || b != 429 || c != 204 {
		t.Errorf("/orders/1 %d, /orders/2 %d, /items/1 %d; want 204, 429 (the same route), 204", a, b, c)
	}
}

type syncBuffer = testenv.SyncBuffer
