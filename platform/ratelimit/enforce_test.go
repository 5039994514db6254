package ratelimit

import (
	"context"
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

// An IPv6 client is counted by its /64, the block one subscriber is given:
// keyed by full address, it would have 2^64 allowances. An IPv4-mapped
// address counts as the IPv4 client.
func TestIPv6ClientsCountedBySlash64(t *testing.T) {
	m := NewMemory(nil)
	defer m.Close()
	e, err := NewEnforcer(m, []Rule{{Key: KeyIP, OnError: "deny",
		Policy: Policy{Name: "per-ip", Algorithm: SlidingWindow, Limit: 1, Period: time.Hour}}}, []string{"per-ip"}, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httpx.New(httpx.Options{Logger: slog.New(slog.DiscardHandler), MaxBodyBytes: 1024, Slots: httpx.Slots{IPLimit: e.Before}})
	if err := srv.Mount(httpx.Route{Method: "GET", Path: "/x", Auth: httpx.Public,
		Handle: func(c echo.Context) error { return c.NoContent(http.StatusNoContent) }}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		addr string
		want int
	}{
		{"[2001:db8:1:2::1]:1000", 204},
		{"[2001:db8:1:2:ffff:ffff:ffff:fffe]:1001", 429}, // the same /64
		{"[2001:db8:1:2::1%eth0]:1002", 429},             // a zone changes nothing
		{"[2001:db8:1:3::1]:1000", 204},                  // the next /64
		{"192.0.2.7:1000", 204},
		{"192.0.2.8:1000", 204}, // IPv4 clients are whole addresses
		{"[::ffff:192.0.2.7]:1000", 429},
	} {
		r := httptest.NewRequest("GET", "/x", nil)
		r.RemoteAddr = step.addr
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		if w.Code != step.want {
			t.Errorf("from %s: %d, want %d", step.addr, w.Code, step.want)
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
