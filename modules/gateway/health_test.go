package gateway

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestUpstreamFailures shows the gateway's own answers when the upstream
// fails: 502 when it cannot be reached, 504 when it is too slow.
func TestUpstreamFailures(t *testing.T) {
	slow := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	refused := testRoute("refused", "/refused", "public", deadURL(t))
	tooSlow := testRoute("slow", "/slow", "public", slow.URL)
	tooSlow.Timeout = 100 * time.Millisecond
	h := newHarness(t, []RouteConfig{refused, tooSlow}, nil)

	res, body := h.do(http.MethodGet, "/refused/x", nil, nil)
	wantError(t, res, body, http.StatusBadGateway, "bad_gateway")
	if strings.Contains(string(body), "127.0.0.1") {
		t.Errorf("the answer names the upstream: %s", body)
	}

	start := time.Now()
	res, body = h.do(http.MethodGet, "/slow/x", nil, nil)
	wantError(t, res, body, http.StatusGatewayTimeout, "gateway_timeout")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the timeout took %v", d)
	}
	logs := h.logs.String()
	for _, want := range []string{`route=refused`, `route=slow`, `msg="gateway: upstream failed"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
}

// flaky is an upstream whose answer can be switched between 200 and a
// failing status.
type flaky struct {
	*testUpstream
	status atomic.Int64
}

func newFlaky(t *testing.T, status int) *flaky {
	f := &flaky{}
	f.status.Store(int64(status))
	f.testUpstream = newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(f.status.Load()))
	})
	return f
}

// TestBreaker shows passive health: a failing upstream is marked down and
// traffic goes to the healthy one; with all down the circuit is open and
// answers at once; after the cooldown one trial decides.
func TestBreaker(t *testing.T) {
	t.Run("failing upstream marked down", func(t *testing.T) {
		bad, good := newFlaky(t, http.StatusServiceUnavailable), newFlaky(t, http.StatusOK)
		r := testRoute("pair", "/pair", "public", bad.URL, good.URL)
		r.Breaker = Breaker{Failures: 3, Cooldown: 10 * time.Second}
		h := newHarness(t, []RouteConfig{r}, nil)
		statuses := map[int]int{}
		for range 20 {
			res, _ := h.do(http.MethodGet, "/pair", nil, nil)
			statuses[res.StatusCode]++
		}
		// Round robin: the bad one got every other request until its
		// third failure in a row; its 503s were passed on as they were.
		if bad.hits.Load() != 3 || good.hits.Load() != 17 || statuses[503] != 3 || statuses[200] != 17 {
			t.Fatalf("bad %d, good %d, statuses %v", bad.hits.Load(), good.hits.Load(), statuses)
		}
		if !strings.Contains(h.logs.String(), "marked_down=true") {
			t.Errorf("no log of the upstream going down:\n%s", h.logs)
		}
	})

	t.Run("open circuit, then half-open trial", func(t *testing.T) {
		up := newFlaky(t, http.StatusBadGateway)
		r := testRoute("one", "/one", "public", up.URL)
		r.Breaker = Breaker{Failures: 2, Cooldown: 30 * time.Second}
		h := newHarness(t, []RouteConfig{r}, nil)
		for range 2 {
			if res, _ := h.do(http.MethodGet, "/one", nil, nil); res.StatusCode != http.StatusBadGateway {
				t.Fatalf("status %d, want the upstream's 502", res.StatusCode)
			}
		}
		open := func(what string) {
			t.Helper()
			n := up.hits.Load()
			start := time.Now()
			res, body := h.do(http.MethodGet, "/one/x", nil, nil)
			d := time.Since(start)
			wantError(t, res, body, http.StatusServiceUnavailable, "upstream_unavailable")
			if d > 50*time.Millisecond || up.hits.Load() != n {
				t.Fatalf("%s: open circuit took %v and reached the upstream %d times", what, d, up.hits.Load()-n)
			}
			if res.Header.Get("Retry-After") == "" {
				t.Errorf("%s: no Retry-After", what)
			}
		}
		open("after two failures")
		h.clock.advance(29 * time.Second)
		open("within the cooldown")

		// The trial fails: open again, for a new cooldown.
		h.clock.advance(2 * time.Second)
		n := up.hits.Load()
		if res, _ := h.do(http.MethodGet, "/one", nil, nil); res.StatusCode != http.StatusBadGateway || up.hits.Load() != n+1 {
			t.Fatalf("trial: status %d, hits %d", res.StatusCode, up.hits.Load()-n)
		}
		open("after a failed trial")

		// The trial succeeds: closed.
		up.status.Store(http.StatusOK)
		h.clock.advance(31 * time.Second)
		for i := range 5 {
			if res, body := h.do(http.MethodGet, "/one", nil, nil); res.StatusCode != http.StatusOK {
				t.Fatalf("request %d after a good trial: %d %s", i, res.StatusCode, body)
			}
		}
	})

	t.Run("one trial at a time", func(t *testing.T) {
		hold := make(chan struct{})
		var fail atomic.Bool
		fail.Store(true)
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			if fail.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			<-hold
		})
		r := testRoute("one", "/one", "public", up.URL)
		r.Breaker = Breaker{Failures: 1, Cooldown: time.Second}
		h := newHarness(t, []RouteConfig{r}, nil)
		h.do(http.MethodGet, "/one", nil, nil) // opens
		fail.Store(false)
		h.clock.advance(2 * time.Second)
		trial := make(chan int)
		go func() {
			res, _ := h.do(http.MethodGet, "/one", nil, nil)
			trial <- res.StatusCode
		}()
		eventually(t, 2*time.Second, "the trial reached the upstream", func() bool { return up.hits.Load() == 2 })
		res, body := h.do(http.MethodGet, "/one", nil, nil)
		wantError(t, res, body, http.StatusServiceUnavailable, "upstream_unavailable")
		close(hold)
		if s := <-trial; s != http.StatusOK {
			t.Fatalf("trial status %d", s)
		}
		if res, _ := h.do(http.MethodGet, "/one", nil, nil); res.StatusCode != http.StatusOK {
			t.Fatalf("after the trial: %d", res.StatusCode)
		}
	})

	t.Run("connection failures count", func(t *testing.T) {
		good := newFlaky(t, http.StatusOK)
		r := testRoute("dead", "/dead", "public", deadURL(t), good.URL)
		r.Breaker = Breaker{Failures: 1, Cooldown: time.Minute}
		h := newHarness(t, []RouteConfig{r}, nil)
		res, body := h.do(http.MethodPost, "/dead", strings.NewReader("x"), nil)
		wantError(t, res, body, http.StatusBadGateway, "bad_gateway")
		for range 4 {
			if res, _ := h.do(http.MethodPost, "/dead", strings.NewReader("x"), nil); res.StatusCode != http.StatusOK {
				t.Fatalf("status %d: the dead upstream still gets traffic", res.StatusCode)
			}
		}
	})
}

// TestActiveHealthCheck shows the health checker taking an upstream out
// of rotation when its check fails and back when it passes.
func TestActiveHealthCheck(t *testing.T) {
	var aHealthy atomic.Bool
	aHealthy.Store(true)
	var aTraffic, bTraffic atomic.Int64
	handler := func(healthy *atomic.Bool, traffic *atomic.Int64) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" {
				if healthy != nil && !healthy.Load() {
					w.WriteHeader(http.StatusInternalServerError)
				}
				return
			}
			traffic.Add(1)
		}
	}
	a := newUpstream(t, handler(&aHealthy, &aTraffic))
	b := newUpstream(t, handler(nil, &bTraffic))
	r := testRoute("checked", "/checked", "public", a.URL+"/base", b.URL)
	r.HealthCheck = HealthCheck{Path: "/healthz", Interval: 20 * time.Millisecond}
	h := newHarness(t, []RouteConfig{r}, nil)

	eventually(t, 2*time.Second, "health checks reach both upstreams", func() bool { return a.hits.Load() > 0 && b.hits.Load() > 0 })
	for range 4 {
		h.do(http.MethodGet, "/checked", nil, nil)
	}
	if aTraffic.Load() != 2 || bTraffic.Load() != 2 {
		t.Fatalf("traffic a %d, b %d: want round robin", aTraffic.Load(), bTraffic.Load())
	}

	aHealthy.Store(false)
	eventually(t, 2*time.Second, "a marked down", func() bool { return strings.Contains(h.logs.String(), "upstream down: health check failed") })
	before := aTraffic.Load()
	for range 6 {
		if res, _ := h.do(http.MethodGet, "/checked", nil, nil); res.StatusCode != http.StatusOK {
			t.Fatalf("status %d", res.StatusCode)
		}
	}
	if aTraffic.Load() != before {
		t.Fatalf("a got %d requests while down", aTraffic.Load()-before)
	}

	aHealthy.Store(true)
	eventually(t, 2*time.Second, "a back in rotation", func() bool {
		h.do(http.MethodGet, "/checked", nil, nil)
		return aTraffic.Load() > before
	})
	h.gw.Close()
	n := a.hits.Load()
	time.Sleep(60 * time.Millisecond)
	if a.hits.Load() != n {
		t.Errorf("health checks go on after Close")
	}
}

// TestRetries shows an idempotent request without a body moving on to
// the next upstream when one cannot be reached, and a POST not.
func TestRetries(t *testing.T) {
	live := newUpstream(t, echoHandler)
	get := testRoute("get", "/get", "public", deadURL(t), live.URL)
	get.Retries = 1
	post := testRoute("post", "/post", "public", deadURL(t), live.URL)
	post.Retries = 1
	none := testRoute("none", "/none", "public", deadURL(t), live.URL)
	h := newHarness(t, []RouteConfig{get, post, none}, nil)

	// Round robin starts at the first upstream: the dead one.
	res, body := h.do(http.MethodGet, "/get/a", nil, nil)
	if s := decodeSeen(t, res, body); s.RequestURI != "/get/a" || live.hits.Load() != 1 {
		t.Fatalf("GET was not retried on the live upstream: hits %d", live.hits.Load())
	}
	res, body = h.do(http.MethodPost, "/post/a", strings.NewReader("order"), nil)
	wantError(t, res, body, http.StatusBadGateway, "bad_gateway")
	res, body = h.do(http.MethodGet, "/none/a", nil, nil)
	wantError(t, res, body, http.StatusBadGateway, "bad_gateway")
	if live.hits.Load() != 1 {
		t.Fatalf("POST or a route without retries was retried: hits %d", live.hits.Load())
	}
}
