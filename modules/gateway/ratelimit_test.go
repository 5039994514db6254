package gateway

import (
	"log/slog"
	"net/http"
	"testing"
	"time"

	"gatehouse/platform/ratelimit"
)

// A gateway route is mounted as two Echo routes, its prefix and prefix/*,
// and ip+route and user+route policies used to be keyed by the Echo route:
// one gateway route had two counters, so a client got its limit twice by
// alternating /api/search and /api/search/anything. The whole gateway
// route shares one counter now, and another gateway route has its own.
func TestRouteKeyedLimitCoversTheWholeGatewayRoute(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	m := ratelimit.NewMemory(nil)
	t.Cleanup(func() { m.Close() })
	window := ratelimit.Policy{Algorithm: ratelimit.SlidingWindow, Limit: 2, Period: time.Hour}
	ipRoute, userRoute := window, window
	ipRoute.Name, userRoute.Name = "per-ip-route", "per-user-route"
	e, err := ratelimit.NewEnforcer(m, []ratelimit.Rule{
		{Key: ratelimit.KeyIPRoute, OnError: "deny", Policy: ipRoute},
		{Key: ratelimit.KeyUserRoute, OnError: "deny", Policy: userRoute},
	}, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	search := testRoute("search", "/api/search", "public", up.URL)
	search.Limits = []string{"per-ip-route"}
	orders := testRoute("orders", "/api/orders", "authenticated", up.URL)
	orders.Limits = []string{"per-user-route"}
	other := testRoute("other", "/api/other", "public", up.URL)
	other.Limits = []string{"per-ip-route"}
	h := newHarness(t, []RouteConfig{search, orders, other}, nil, func(s *setup) {
		s.opts.Slots.IPLimit, s.opts.Slots.UserLimit = e.Before, e.After
	})
	user := map[string]string{"X-Test-User": "u1|t1"}
	for _, step := range []struct {
		path string
		hdr  map[string]string
		want int
	}{
		{"/api/search", nil, 204},
		{"/api/search/q", nil, 204},
		{"/api/search/other/q", nil, 429}, // the route's third request
		{"/api/search", nil, 429},
		{"/api/other/q", nil, 204}, // another route, its own counter
		{"/api/orders/1", user, 204},
		{"/api/orders", user, 204},
		{"/api/orders/2", user, 429},
	} {
		if res, _ := h.do("GET", step.path, nil, step.hdr); res.StatusCode != step.want {
			t.Errorf("GET %s: %d, want %d (limit 2 an hour for the whole route)", step.path, res.StatusCode, step.want)
		}
	}
}
