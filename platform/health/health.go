// Package health serves Gatehouse's health endpoints.
//
// GET /health is liveness: it answers 200 as long as the process serves
// HTTP and touches no dependency, so it stays cheap under any load.
// /health/detailed checks every dependency; /health/database and
// /health/cache check one each. A check answers 503 when a required
// dependency is down, and recovers on its own when the dependency returns.
// These routes are public and exempt from the default rate limits (a probe
// must not be refused), so a dependency is pinged at most once a second
// (Reuse) whatever the request rate: a flood of health requests cannot
// tie up the database's connections.
package health

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/httpx"
)

// Check is one dependency.
type Check struct {
	// Name is the component's name and the path under /health/.
	Name string
	// Backend says which implementation serves it (sqlite, postgres,
	// memory, redis).
	Backend string
	// Required dependencies turn the answer to 503 when down.
	Required bool
	Ping     func(ctx context.Context) error
}

// Component is the state of one dependency.
type Component struct {
	Name      string  `json:"name"`
	Backend   string  `json:"backend"`
	Status    string  `json:"status"` // up or down
	Required  bool    `json:"required"`
	LatencyMS float64 `json:"latency_ms"`
	// Error says why a component is down in a word (timeout or
	// unreachable); the cause goes to the log, never to the client.
	Error string `json:"error,omitempty"`
}

// Report is the answer of the health endpoints.
type Report struct {
	// Status is ok, degraded (an optional dependency is down) or down.
	Status     string      `json:"status"`
	Components []Component `json:"components,omitempty"`
}

// Reuse is how long a check's result answers later requests.
const Reuse = time.Second

// Checker runs the checks with a timeout each.
type Checker struct {
	checks  []Check
	timeout time.Duration
	log     *slog.Logger
	last    []result      // per check
	reuse   time.Duration // Reuse; tests change it
	now     func() time.Time
}

// result is a check's latest result. Its lock is held while the check
// runs, so requests arriving meanwhile wait for it rather than ping again.
type result struct {
	mu   sync.Mutex
	at   time.Time
	comp Component
	down bool // so that an outage is logged once
}

// New returns a Checker; each check gets at most timeout.
func New(timeout time.Duration, log *slog.Logger, checks ...Check) *Checker {
	return &Checker{checks: checks, timeout: timeout, log: log, last: make([]result, len(checks)), reuse: Reuse, now: time.Now}
}

// Run checks the named components (all when names is empty) concurrently.
func (h *Checker) Run(ctx context.Context, names ...string) Report {
	var (
		wg  sync.WaitGroup
		out = make([]Component, 0, len(h.checks))
		mu  sync.Mutex
	)
	for i, c := range h.checks {
		if len(names) > 0 && !contains(names, c.Name) {
			continue
		}
		wg.Go(func() {
			comp := h.check(ctx, i, c)
			mu.Lock()
			out = append(out, comp)
			mu.Unlock()
		})
	}
	wg.Wait()
	// Keep the order of h.checks, whatever order the goroutines ended in.
	sorted := make([]Component, 0, len(out))
	for _, c := range h.checks {
		for _, comp := range out {
			if comp.Name == c.Name {
				sorted = append(sorted, comp)
			}
		}
	}
	rep := Report{Status: "ok", Components: sorted}
	for _, comp := range sorted {
		switch {
		case comp.Status == "up":
		case comp.Required:
			rep.Status = "down"
		case rep.Status == "ok":
			rep.Status = "degraded"
		}
	}
	return rep
}

func (h *Checker) check(ctx context.Context, i int, c Check) Component {
	last := &h.last[i]
	last.mu.Lock()
	defer last.mu.Unlock()
	if !last.at.IsZero() && h.now().Sub(last.at) < h.reuse {
		return last.comp
	}
	// Not cancelled with the request that runs it: others may be waiting
	// for its answer.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.timeout)
	defer cancel()
	start := time.Now()
	err := c.Ping(ctx)
	comp := Component{Name: c.Name, Backend: c.Backend, Status: "up", Required: c.Required,
		LatencyMS: float64(time.Since(start).Microseconds()) / 1000}
	if err != nil {
		comp.Status, comp.Error = "down", "unreachable"
		if errors.Is(err, context.DeadlineExceeded) {
			comp.Error = "timeout"
		}
		if !last.down {
			h.log.Error("dependency down", "component", c.Name, "backend", c.Backend, "error", err.Error())
		}
	} else if last.down {
		h.log.Info("dependency recovered", "component", c.Name, "backend", c.Backend)
	}
	last.at, last.comp, last.down = h.now(), comp, comp.Status == "down"
	return comp
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Routes returns the health endpoints: /health, /health/detailed, and
// /health/{name} for each check.
func (h *Checker) Routes() []httpx.Route {
	routes := []httpx.Route{
		{Method: http.MethodGet, Path: "/health", Summary: "Liveness: the process serves HTTP",
			Tags: []string{"health"}, Auth: httpx.Public, Out: Report{}, NoDefaultLimits: true,
			Handle: func(c echo.Context) error { return c.JSON(http.StatusOK, Report{Status: "ok"}) }},
		{Method: http.MethodGet, Path: "/health/detailed", Summary: "Every dependency's status and latency",
			Tags: []string{"health"}, Auth: httpx.Public, Out: Report{}, NoDefaultLimits: true,
			Handle: func(c echo.Context) error { return h.answer(c) }},
	}
	for _, ch := range h.checks {
		routes = append(routes, httpx.Route{Method: http.MethodGet, Path: "/health/" + ch.Name,
			Summary: "Status and latency of the " + ch.Name, Tags: []string{"health"}, Auth: httpx.Public, Out: Report{},
			NoDefaultLimits: true,
			Handle:          func(c echo.Context) error { return h.answer(c, ch.Name) }})
	}
	return routes
}

func (h *Checker) answer(c echo.Context, names ...string) error {
	rep := h.Run(c.Request().Context(), names...)
	status := http.StatusOK
	if rep.Status == "down" {
		status = http.StatusServiceUnavailable
	}
	return c.JSON(status, rep)
}
