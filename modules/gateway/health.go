package gateway

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"time"
)

// watch runs the active health checks of one upstream until ctx ends: one
// at once, then one per interval.
func (g *Gateway) watch(ctx context.Context, rt *route, up *upstream) {
	defer g.checkers.Done()
	t := time.NewTicker(rt.cfg.HealthCheck.Interval)
	defer t.Stop()
	for {
		g.check(ctx, rt, up)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check sends one health check and records its result; it logs a change
// of state only.
func (g *Gateway) check(ctx context.Context, rt *route, up *upstream) {
	cctx, cancel := context.WithTimeout(ctx, min(rt.cfg.Timeout, rt.cfg.HealthCheck.Interval))
	defer cancel()
	// The health path is on the upstream's host, whatever its base path.
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, up.url.ResolveReference(rt.health).String(), nil)
	if err != nil {
		return // a checked path and URL: cannot happen
	}
	req.Header.Set("User-Agent", "gatehouse-health-check")
	res, err := g.transport.RoundTrip(req)
	reason := ""
	switch {
	case err != nil:
		reason = err.Error()
	default:
		// Drained a little, so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 4<<10))
		res.Body.Close()
		if res.StatusCode/100 != 2 {
			reason = "status " + strconv.Itoa(res.StatusCode)
		}
	}
	if ctx.Err() != nil {
		return // the gateway is closing: the check was cut short
	}
	if !up.checked(reason == "") {
		return
	}
	if reason != "" {
		g.log.Warn("gateway: upstream down: health check failed", "route", rt.cfg.Name, "upstream", up.name, "error", reason)
	} else {
		g.log.Info("gateway: upstream up: health check passed", "route", rt.cfg.Name, "upstream", up.name)
	}
}
