// Package ratelimit decides whether a request may go ahead under a rate-limit
// policy, counting it if so.
//
// Two algorithms are offered. TokenBucket is the generic cell rate algorithm
// (GCRA): a client may send Burst requests at once from idle, and then one
// every Period/Limit; it keeps one timestamp per key. SlidingWindow is an
// exact sliding log: a request is allowed if fewer than Limit requests were
// allowed in the Period before it, so no window of length Period ever holds
// more than Limit allowed requests; it keeps one timestamp per allowed request
// in the window, which is why its Limit is capped at 10000.
//
// Two backends implement Limiter with the same arithmetic: Memory, for one
// instance and for tests, and Redis (one node or a Redis Cluster), which the
// instances of a deployment share. Times are whole microseconds since the Unix
// epoch, read from a clock the caller supplies; Redis is given that time
// rather than asked for its own, so every instance must keep its clock in
// step (NTP). An instance whose clock runs ahead by d sees old requests leave
// the window, and the bucket refill, d early: it may admit requests up to d
// before it should. One whose clock runs behind is stricter by d.
package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Algorithm names how a policy counts requests.
type Algorithm string

// The algorithms a Policy may use.
const (
	// TokenBucket allows Burst requests at once from idle and then Limit
	// per Period, evenly spaced (GCRA).
	TokenBucket Algorithm = "token_bucket"
	// SlidingWindow allows at most Limit requests in any window of length
	// Period (an exact sliding log).
	SlidingWindow Algorithm = "sliding_window"
)

// MaxWindowLimit is the largest Limit a SlidingWindow policy may have: it
// keeps one timestamp per allowed request in the window, per key, so its
// memory is proportional to Limit.
const MaxWindowLimit = 10000

// maxSpan bounds every span of time the algorithms add to the current time.
// Redis scripts compute in Lua numbers, which are doubles and exact only up
// to 2^53 (some 285 years of microseconds since 1970); ten years leaves room.
const maxSpan = 10 * 365 * 24 * time.Hour

// ErrInvalidPolicy is wrapped by the errors Policy.Validate returns, and so
// by Allow given an invalid policy: a configuration mistake, unlike a backend
// that cannot be reached.
var ErrInvalidPolicy = errors.New("ratelimit: invalid policy")

// ErrClosed is returned by Memory.Allow after Close.
var ErrClosed = errors.New("ratelimit: limiter closed")

// Policy is a rate limit: at most Limit requests per Period for each key.
type Policy struct {
	// Name tells policies apart: each policy counts its keys separately.
	Name string
	// Algorithm is how requests are counted.
	Algorithm Algorithm
	// Limit is how many requests a key may make per Period.
	Limit int
	// Period is the span Limit applies to.
	Period time.Duration
	// Burst, for TokenBucket only, is how many requests a key may make at
	// once after being idle; 0 means Limit. SlidingWindow ignores it.
	Burst int
}

// Validate returns an error, wrapping ErrInvalidPolicy, if p cannot be used:
// Name must be set; Algorithm must be TokenBucket or SlidingWindow; Limit at
// least 1 (and at most MaxWindowLimit for SlidingWindow); Period from one
// second to ten years and at least Limit microseconds; Burst not negative,
// and a token bucket's Burst·Period/Limit at most ten years.
func (p Policy) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidPolicy, p.Name, fmt.Sprintf(format, args...))
	}
	switch {
	case p.Name == "":
		return fmt.Errorf("%w: the name must be set", ErrInvalidPolicy)
	case p.Algorithm != TokenBucket && p.Algorithm != SlidingWindow:
		return bad("algorithm must be %s or %s, got %q", TokenBucket, SlidingWindow, p.Algorithm)
	case p.Limit < 1:
		return bad("limit must be at least 1, got %d", p.Limit)
	case p.Algorithm == SlidingWindow && p.Limit > MaxWindowLimit:
		return bad("limit must be at most %d for %s, got %d", MaxWindowLimit, SlidingWindow, p.Limit)
	case p.Period < time.Second:
		return bad("period must be at least 1s, got %s", p.Period)
	case p.Period > maxSpan:
		return bad("period must be at most %s, got %s", maxSpan, p.Period)
	case int64(p.Limit) > p.Period.Microseconds():
		// The emission interval is counted in whole microseconds.
		return bad("limit must be at most one per microsecond of the period, got %d per %s", p.Limit, p.Period)
	case p.Burst < 0:
		return bad("burst must not be negative, got %d", p.Burst)
	}
	if p.Algorithm == TokenBucket {
		if s := p.spans(); int64(s.burst) > int64(maxSpan/time.Microsecond)/s.emission {
			return bad("burst %d at %d per %s takes more than %s to refill", s.burst, p.Limit, p.Period, maxSpan)
		}
	}
	return nil
}

// spans is a policy in the microseconds the algorithms count in.
type spans struct {
	period    int64 // Period, rounded up
	emission  int64 // Period/Limit, rounded up: the rate never exceeds Limit per Period
	burst     int   // Burst, or Limit when Burst is 0
	tolerance int64 // burst·emission: how far ahead of now a bucket may run
}

func (p Policy) spans() spans {
	s := spans{period: ceilDiv(int64(p.Period), int64(time.Microsecond)), burst: p.Burst}
	s.emission = ceilDiv(s.period, int64(p.Limit))
	if s.burst == 0 {
		s.burst = p.Limit
	}
	s.tolerance = int64(s.burst) * s.emission
	return s
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

func micros(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

// Decision is the answer to one request.
type Decision struct {
	// Allowed reports whether the request may go ahead; if so, it has been
	// counted.
	Allowed bool
	// Limit is the policy's Limit, requests per Period, as the
	// RateLimit-Limit header gives it. A token bucket whose Burst exceeds
	// its Limit can report a Remaining above Limit.
	Limit int
	// Remaining is how many more requests would be allowed right now.
	Remaining int
	// Reset is how long until the key has its whole allowance again (the
	// RateLimit-Reset header): Burst requests for a token bucket, Limit
	// for a sliding window.
	Reset time.Duration
	// RetryAfter, when the request is denied, is how long until the next
	// request would be allowed (the Retry-After header); zero otherwise.
	RetryAfter time.Duration
}

// Limiter decides requests under rate-limit policies. Implementations are
// safe for concurrent use.
type Limiter interface {
	// Allow decides one request for key under p and, if allowed, counts it.
	// Any string is a valid key. It returns an error wrapping
	// ErrInvalidPolicy if p does not validate, or the backend's error, in
	// which case nothing is decided and the caller applies the policy's
	// choice for when the limiter fails.
	Allow(ctx context.Context, p Policy, key string) (Decision, error)

	// AllowSeq decides several checks as if one after the other: in order,
	// each allowed one counted, and the first refusal ending the sequence
	// (the checks after it are neither decided nor counted). It returns
	// the decisions made, the last being the refusal if there was one.
	// Redis makes it one round trip.
	AllowSeq(ctx context.Context, checks []Check) ([]Decision, error)
}

// A Check is one decision of a sequence: a policy and the key it counts.
type Check struct {
	Policy Policy
	Key    string
}

// sequential is AllowSeq by calling Allow for each check in turn.
func sequential(ctx context.Context, l Limiter, checks []Check) ([]Decision, error) {
	out := make([]Decision, 0, len(checks))
	for _, c := range checks {
		d, err := l.Allow(ctx, c.Policy, c.Key)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
		if !d.Allowed {
			break
		}
	}
	return out, nil
}

// gcra is one step of the token bucket. Given the key's stored theoretical
// arrival time (0 for none) and now, it returns the arrival time to store
// (when allowed), and reset and retry, the microseconds until the bucket is
// full and, if denied, until a request would pass. The Redis script
// bucketSource is the same arithmetic; change both together.
func gcra(stored, now int64, s spans) (tat int64, allowed bool, reset, retry int64) {
	tat = max(stored, now)
	next := tat + s.emission
	if next-now > s.tolerance {
		return tat, false, tat - now, next - s.tolerance - now
	}
	return next, true, next - now, 0
}

func bucketDecision(p Policy, s spans, allowed bool, reset, retry int64) Decision {
	d := Decision{Allowed: allowed, Limit: p.Limit, Reset: micros(reset)}
	if allowed {
		// Whole requests that still fit in the tolerance, rounded down.
		d.Remaining = int((s.tolerance - reset) / s.emission)
	} else {
		d.RetryAfter = micros(retry)
	}
	return d
}

func windowDecision(p Policy, allowed bool, count int, reset, retry int64) Decision {
	d := Decision{Allowed: allowed, Limit: p.Limit, Reset: micros(reset)}
	if allowed {
		d.Remaining = p.Limit - count
	} else {
		d.RetryAfter = micros(retry)
	}
	return d
}

// maxRawPart is the longest name or key put into a Redis key as it is;
// longer ones are hashed.
const maxRawPart = 128

// keyPart returns s as it goes between the braces of a Redis key's hash tag.
// Printable ASCII without braces (and, for a policy name, without colons, so
// the first colon ends the name) is kept as it is, for people reading the
// keys; anything else, and anything starting with '#', becomes '#' and the
// hex SHA-256 of s. A kept part never starts with '#' and a hashed one
// always does, so two different strings never share a part.
func keyPart(s string, name bool) string {
	if rawPart(s, name) {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return "#" + hex.EncodeToString(sum[:])
}

func rawPart(s string, name bool) bool {
	if len(s) > maxRawPart || (s != "" && s[0] == '#') {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c > '~' || c == '{' || c == '}' || (name && c == ':') {
			return false
		}
	}
	return true
}
