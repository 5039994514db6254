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
// takes traffic only when both allow it.
type upstream struct {
	url *url.URL // scheme, host and base path (no trailing slash)
	// name is the URL as configured, for logs.
	name string

	mu    sync.Mutex
	fails int       // failures in a row
	open  bool      // the breaker is open (or half-open once until passes)
	until time.Time // end of the cooldown
	trial bool      // the half-open trial request is in flight
	sick  bool      // the last active health check failed
}

// acquire reports whether the upstream may take a request now. Past the
// cooldown of an open breaker it admits one request, the trial, and
// refuses others until the trial's result is in.
func (u *upstream) acquire(now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.sick:
		return false
	case !u.open:
		return true
	case u.trial || now.Before(u.until):
		return false
	}
	u.trial = true
	return true
}

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
// tried, and adds it to tried; nil when there is none.
func (p *pool) pick(now time.Time, tried *uint64) *upstream {
	n := uint64(len(p.ups))
	start := p.next.Add(1) - 1
	for i := range n {
		j := (start + i) % n
		if *tried&(1<<j) != 0 {
			continue
		}
		if p.ups[j].acquire(now) {
			*tried |= 1 << j
			return p.ups[j]
		}
	}
	return nil
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
