package metrics

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"gatehouse/platform/httpx"
)

// Slot is the chain's metrics step (httpx.Slots.Metrics). It counts each
// request of route r in gatehouse_http_requests_total and times it in
// gatehouse_http_request_duration_seconds, labelled with r's Path template
// and method, so requests to /x/1 and /x/2 are one series.
//
// The status recorded is the one sent. The slot runs inside the server's
// error handling, so it answers a handler's error itself (c.Error) before
// counting, and returns nil. A panic passes through it to the server's
// recovery, which answers 500; the slot counts that 500 on the way.
func (m *Metrics) Slot(r httpx.Route) echo.MiddlewareFunc {
	rm := &routeMetrics{
		requests: m.httpRequests.MustCurryWith(prometheus.Labels{"route": r.Path, "method": r.Method}),
		duration: m.httpDuration.WithLabelValues(r.Path, r.Method),
	}
	rm.byStatus.Store(&map[int]prometheus.Counter{})
	// The expected status exists from the start, at zero.
	want := r.Status
	if want == 0 {
		want = http.StatusOK
	}
	rm.counter(want)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			defer func() {
				if p := recover(); p != nil {
					status := http.StatusInternalServerError
					if res := c.Response(); res.Committed {
						status = res.Status
					}
					rm.observe(status, start)
					panic(p) // recovery and its log line belong to the server
				}
			}()
			if err := next(c); err != nil {
				c.Error(err)
			}
			rm.observe(c.Response().Status, start)
			return nil
		}
	}
}

// routeMetrics are one route's series.
type routeMetrics struct {
	requests *prometheus.CounterVec // curried with route and method
	duration prometheus.Observer
	// byStatus maps a status to its counter. It is copied on write: a
	// route sees a handful of statuses, so after the first few requests
	// every lookup is a lock-free read that allocates nothing.
	byStatus atomic.Pointer[map[int]prometheus.Counter]
	mu       sync.Mutex // serialises writers of byStatus
}

func (rm *routeMetrics) observe(status int, start time.Time) {
	rm.duration.Observe(time.Since(start).Seconds())
	rm.counter(status).Inc()
}

func (rm *routeMetrics) counter(status int) prometheus.Counter {
	if c, ok := (*rm.byStatus.Load())[status]; ok {
		return c
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	old := *rm.byStatus.Load()
	if c, ok := old[status]; ok {
		return c
	}
	c := rm.requests.WithLabelValues(strconv.Itoa(status))
	next := make(map[int]prometheus.Counter, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[status] = c
	rm.byStatus.Store(&next)
	return c
}

// Handler serves the registry in the Prometheus text format. If token is
// not empty, a request must carry "Authorization: Bearer <token>" or is
// answered 401 in the JSON error model.
func (m *Metrics) Handler(token string) http.Handler {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A failing collector (a closed database) should not hide the rest.
		ErrorHandling: promhttp.ContinueOnError,
	})
	if token == "" {
		return h
	}
	// Comparing digests keeps the comparison constant-time whatever the
	// length of the token presented.
	want := sha256.Sum256([]byte("Bearer " + token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			unauthorized(w)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// unauthorized answers 401 in the JSON error model, with the request id
// when a server in front has set one.
func unauthorized(w http.ResponseWriter) {
	body := httpx.ErrorBody{Error: httpx.ErrorDetail{Code: "unauthenticated",
		Message: "a valid metrics token is required", RequestID: w.Header().Get(echo.HeaderXRequestID)}}
	w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_ = json.NewEncoder(w).Encode(body)
}
