package gateway

import (
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// upstream is one server of a route, with its health.
//
// Passive health is a circuit breaker per upstream: closed, it takes
// traffic and counts failures in a row; after breaker.failures of them it
// opens for breaker.cooldown; then it lets one trial request through
// (half-open), whose success closes it and whose failure opens it again.
// Active health (sick) is set by the health checker alone. An upstream
// takes traffic only when both allow it, and while it has fewer than max
// requests in flight.
type upstream struct {
	url *url.URL // scheme, host and base path (no trailing slash)
	// name is the URL as configured, for logs.
	name string
	max  int32        // RouteConfig.MaxRequests
	busy atomic.Int32 // requests in flight: raised under mu, lowered by done

	mu    sync.Mutex
	fails int       // failures in a row
	open  bool      // the breaker is open (or half-open once until passes)
	until time.Time // end of the cooldown
	trial bool      // the half-open trial request is in flight
	sick  bool      // the last active health check failed
}

// acquire reports whether the upstream may take a request now, and if not
// whether only its bound on requests in flight stood in the way. Past the
// cooldown of an open breaker it admits one request, the trial, and
// refuses others until the trial's result is in. A request it admits must
// end with done.
func (u *upstream) acquire(now time.Time) (ok, full bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.sick, u.open && (u.trial || now.Before(u.until)):
		return false, false
	case u.busy.Load() >= u.max:
		return false, true
	}
	// Open here means past the cooldown with no trial out: this request
	// is the trial. (Closed, trial is already false.)
	u.trial = u.open
	u.busy.Add(1)
	return true, false
}

// done ends a request that acquire admitted.
func (u *upstream) done() { u.busy.Add(-1) }

// succeeded records a request the upstream answered well; it closes the
// breaker.
func (u *upstream) succeeded() {
	u.mu.Lock()
	u.fails, u.open, u.trial = 0, false, false
	u.mu.Unlock()
}

// failed records a failed request and reports whether it opened the
// breaker: the failures in a row reached the threshold, or the trial
// failed.
func (u *upstream) failed(now time.Time, b Breaker) (opened bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.fails++
	if u.trial || (!u.open && u.fails >= b.Failures) {
		u.open, u.trial, u.until = true, false, now.Add(b.Cooldown)
		return true
	}
	return false
}

// release ends a request that says nothing about the upstream (the client
// went away): a trial it was is given back, to the next request.
func (u *upstream) release() {
	u.mu.Lock()
	u.trial = false
	u.mu.Unlock()
}

// checked records an active health check and reports whether the
// upstream's state changed. A passing check also closes the breaker: it is
// the same evidence as a successful trial, and comes sooner.
func (u *upstream) checked(ok bool) (changed bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	changed = u.sick == ok
	u.sick = !ok
	if ok {
		u.fails, u.open, u.trial = 0, false, false
	}
	return changed
}

// pool balances a route's requests over its upstreams, round robin over
// those that may take traffic.
type pool struct {
	ups  []*upstream
	next atomic.Uint64
}

// pick returns the next upstream that may take a request and is not in
// tried, and adds it to tried; nil when there is none, with full set when
// some upstream was passed over only for its bound on requests in flight.
func (p *pool) pick(now time.Time, tried *uint64) (up *upstream, full bool) {
	n := uint64(len(p.ups))
	start := p.next.Add(1) - 1
	for i := range n {
		j := (start + i) % n
		if *tried&(1<<j) != 0 {
			continue
		}
		ok, busy := p.ups[j].acquire(now)
		if ok {
			*tried |= 1 << j
			return p.ups[j], false
		}
		full = full || busy
	}
	return nil, full
}

// retryAfter is how long until the first open breaker's cooldown ends, at
// least a second. An upstream down by its health check has no known end.
func (p *pool) retryAfter(now time.Time) time.Duration {
	var soonest time.Duration
	for _, u := range p.ups {
		u.mu.Lock()
		if u.open && !u.sick {
			if d := u.until.Sub(now); soonest == 0 || d < soonest {
				soonest = d
			}
		}
		u.mu.Unlock()
	}
	return max(soonest, time.Second)
}
