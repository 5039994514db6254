package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gatehouse/platform/testenv"
)

// clock is a time that moves only when told to, shared by the limiters of a
// test so that their decisions can be predicted to the microsecond.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_800_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newLimiter returns a limiter reading the time from c whose state lives
// under prefix. Two calls with the same prefix return limiters that share
// their counts, as two instances of a deployment do (for Memory, they are the
// same limiter). Whatever it opens is closed, and its keys deleted, when t
// ends.
type newLimiter func(t *testing.T, c *clock, prefix string) Limiter

func TestMemory(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	limiters := make(map[string]*Memory)
	runContract(t, func(t *testing.T, c *clock, prefix string) Limiter {
		mu.Lock()
		defer mu.Unlock()
		m, ok := limiters[prefix]
		if !ok {
			m = NewMemory(c.Now)
			limiters[prefix] = m
			t.Cleanup(func() { m.Close() })
		}
		return m
	})
}

// allow is Allow that fails t on an error.
func allow(t *testing.T, l Limiter, p Policy, key string) Decision {
	t.Helper()
	d, err := l.Allow(t.Context(), p, key)
	if err != nil {
		t.Fatalf("Allow(%s, %.20q): %v", p.Name, key, err)
	}
	return d
}

// expect fails t unless the next decision for key under p is want.
func expect(t *testing.T, l Limiter, p Policy, key string, step string, want Decision) {
	t.Helper()
	if got := allow(t, l, p, key); got != want {
		t.Fatalf("%s: Allow = %+v\n want %+v", step, got, want)
	}
}

// hostileKeys are keys that could break a Redis key built naively: braces
// that would move the Cluster hash tag, spaces, control bytes, invalid UTF-8,
// long strings, and strings made to look like what the encoding produces.
func hostileKeys() []string {
	long := strings.Repeat("x", 1024)
	sum := sha256.Sum256([]byte("}"))
	return []string{
		"}", "{", "{}", "}{", "a}b{c", "{user}", "",
		" spaced key ", "tab\there", "nl\n", "nul\x00byte",
		"\xff\xfe\xfd not utf-8", "émoji 🙂",
		long, long + "y", long[:128], long[:129],
		"#", "#" + hex.EncodeToString(sum[:]), "2001:db8::1", "1.2.3.4:alice@example.com",
	}
}

// runContract runs the cases every Limiter must pass. Each case has its own
// clock and prefix, so the cases run in parallel.
func runContract(t *testing.T, open newLimiter) {
	newPrefix := func() string { return "test:" + testenv.Random(6) + ":" }

	t.Run("SequenceStopsAtFirstRefusal", func(t *testing.T) {
		t.Parallel()
		l := open(t, newClock(), newPrefix())
		one := Policy{Name: "one", Algorithm: TokenBucket, Limit: 1, Period: time.Hour}
		five := Policy{Name: "five", Algorithm: SlidingWindow, Limit: 5, Period: time.Hour}
		bucket := Policy{Name: "bucket", Algorithm: TokenBucket, Limit: 5, Period: time.Hour}
		decide := func(checks ...Check) []Decision {
			t.Helper()
			ds, err := l.AllowSeq(t.Context(), checks)
			if err != nil {
				t.Fatal(err)
			}
			return ds
		}
		if ds := decide(Check{one, "k"}, Check{five, "k"}); len(ds) != 2 || !ds[0].Allowed || !ds[1].Allowed || ds[1].Remaining != 4 {
			t.Fatalf("first sequence: %+v", ds)
		}
		if ds := decide(Check{one, "k"}, Check{five, "k"}); len(ds) != 1 || ds[0].Allowed {
			t.Fatalf("second sequence: %+v, want one refusal", ds)
		}
		// The refused sequence did not count the check after the refusal.
		if d, err := l.Allow(t.Context(), five, "k"); err != nil || !d.Allowed || d.Remaining != 3 {
			t.Fatalf("five after: %+v, %v; want 3 remaining", d, err)
		}
		// A refusal later in the sequence leaves the earlier counted.
		if ds := decide(Check{bucket, "k"}, Check{one, "k"}); len(ds) != 2 || !ds[0].Allowed || ds[1].Allowed {
			t.Fatalf("bucket then one: %+v", ds)
		}
		if d, err := l.Allow(t.Context(), bucket, "k"); err != nil || d.Remaining != 3 {
			t.Fatalf("bucket after: %+v, %v; want 3 remaining", d, err)
		}
	})

	t.Run("SequenceExactUnderConcurrency", func(t *testing.T) {
		t.Parallel()
		l := open(t, newClock(), newPrefix())
		first := Policy{Name: "first", Algorithm: TokenBucket, Limit: 50, Period: time.Hour}
		second := Policy{Name: "second", Algorithm: SlidingWindow, Limit: 1000, Period: time.Hour}
		var passed atomic.Int64
		var wg sync.WaitGroup
		for range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ds, err := l.AllowSeq(context.Background(), []Check{{first, "u"}, {second, "t"}})
				if err != nil {
					t.Error(err)
					return
				}
				if len(ds) == 2 && ds[0].Allowed && ds[1].Allowed {
					passed.Add(1)
				}
			}()
		}
		wg.Wait()
		if passed.Load() != 50 {
			t.Fatalf("%d sequences passed, want exactly 50", passed.Load())
		}
		// Only the 50 that passed the first check were counted by the second.
		if d, err := l.Allow(t.Context(), second, "t"); err != nil || d.Remaining != 1000-51 {
			t.Fatalf("second after: %+v, %v; want %d remaining", d, err, 1000-51)
		}
	})

	t.Run("TokenBucketExact", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		l := open(t, c, newPrefix())
		// One request per second, five at once.
		p := Policy{Name: "tb", Algorithm: TokenBucket, Limit: 10, Period: 10 * time.Second, Burst: 5}
		for i := 1; i <= 5; i++ {
			expect(t, l, p, "k", "burst", Decision{Allowed: true, Limit: 10, Remaining: 5 - i, Reset: time.Duration(i) * time.Second})
		}
		expect(t, l, p, "k", "after the burst", Decision{Limit: 10, Reset: 5 * time.Second, RetryAfter: time.Second})
		c.Advance(400 * time.Millisecond)
		expect(t, l, p, "k", "0.4s on", Decision{Limit: 10, Reset: 4600 * time.Millisecond, RetryAfter: 600 * time.Millisecond})
		c.Advance(599999 * time.Microsecond)
		expect(t, l, p, "k", "1µs early", Decision{Limit: 10, Reset: 4000001 * time.Microsecond, RetryAfter: time.Microsecond})
		c.Advance(time.Microsecond)
		expect(t, l, p, "k", "one interval on", Decision{Allowed: true, Limit: 10, Remaining: 0, Reset: 5 * time.Second})
		expect(t, l, p, "k", "again at once", Decision{Limit: 10, Reset: 5 * time.Second, RetryAfter: time.Second})
		c.Advance(2500 * time.Millisecond)
		// 2.5 tokens back: one request leaves 1.5, rounded down.
		expect(t, l, p, "k", "2.5s on", Decision{Allowed: true, Limit: 10, Remaining: 1, Reset: 3500 * time.Millisecond})
		c.Advance(time.Minute)
		expect(t, l, p, "k", "idle", Decision{Allowed: true, Limit: 10, Remaining: 4, Reset: time.Second})
	})

	t.Run("TokenBucketBurstZeroIsLimit", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		l := open(t, c, newPrefix())
		p := Policy{Name: "tb0", Algorithm: TokenBucket, Limit: 3, Period: time.Minute}
		for i := 1; i <= 3; i++ {
			expect(t, l, p, "k", "burst", Decision{Allowed: true, Limit: 3, Remaining: 3 - i, Reset: time.Duration(i) * 20 * time.Second})
		}
		expect(t, l, p, "k", "denied", Decision{Limit: 3, Reset: time.Minute, RetryAfter: 20 * time.Second})
	})

	t.Run("TokenBucketSteadyRate", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		l := open(t, c, newPrefix())
		p := Policy{Name: "steady", Algorithm: TokenBucket, Limit: 60, Period: time.Minute, Burst: 10}
		admitted := 0
		for range 11 {
			if allow(t, l, p, "k").Allowed {
				admitted++
			}
		}
		if admitted != 10 {
			t.Fatalf("from idle: %d of 11 admitted, want the burst of 10", admitted)
		}
		// A request every 250ms for a minute: one a second gets in, on
		// the second.
		var at []time.Duration
		for i := 1; i <= 240; i++ {
			c.Advance(250 * time.Millisecond)
			if allow(t, l, p, "k").Allowed {
				at = append(at, time.Duration(i)*250*time.Millisecond)
			}
		}
		if len(at) != 60 {
			t.Fatalf("over a minute at 4/s: %d admitted, want 60: %v", len(at), at)
		}
		for i, d := range at {
			if d != time.Duration(i+1)*time.Second {
				t.Fatalf("admission %d at %s, want %s", i, d, time.Duration(i+1)*time.Second)
			}
		}
	})

	t.Run("SlidingWindowExact", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		l := open(t, c, newPrefix())
		p := Policy{Name: "sw", Algorithm: SlidingWindow, Limit: 3, Period: time.Minute}
		for i := 1; i <= 3; i++ {
			expect(t, l, p, "k", "fill", Decision{Allowed: true, Limit: 3, Remaining: 3 - i, Reset: time.Minute})
			c.Advance(10 * time.Second)
		}
		// Requests at 0s, 10s, 20s; now 30s.
		expect(t, l, p, "k", "full", Decision{Limit: 3, Reset: 50 * time.Second, RetryAfter: 30 * time.Second})
		c.Advance(30*time.Second - time.Microsecond)
		expect(t, l, p, "k", "1µs early", Decision{Limit: 3, Reset: 20*time.Second + time.Microsecond, RetryAfter: time.Microsecond})
		c.Advance(time.Microsecond)
		expect(t, l, p, "k", "oldest left", Decision{Allowed: true, Limit: 3, Remaining: 0, Reset: time.Minute})
		expect(t, l, p, "k", "full again", Decision{Limit: 3, Reset: time.Minute, RetryAfter: 10 * time.Second})
		c.Advance(time.Minute)
		expect(t, l, p, "k", "a period later", Decision{Allowed: true, Limit: 3, Remaining: 2, Reset: time.Minute})
	})

	t.Run("SlidingWindowBoundary", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		l := open(t, c, newPrefix())
		p := Policy{Name: "edge", Algorithm: SlidingWindow, Limit: 5, Period: time.Minute}
		start := c.Now()
		var at []time.Duration
		try := func(n int) {
			for range n {
				if allow(t, l, p, "k").Allowed {
					at = append(at, c.Now().Sub(start))
				}
			}
		}
		c.Advance(59 * time.Second) // the end of a fixed window
		try(6)
		c.Advance(2 * time.Second) // the start of the next
		try(10)
		if len(at) != 5 {
			t.Fatalf("bursts either side of a minute boundary: %d admitted, want 5 (a fixed window would let 10 through)", len(at))
		}
		for range 36 {
			c.Advance(5 * time.Second)
			try(3)
		}
		// The 59s burst leaves at 119s: 3 get in at 121s, 2 at 126s,
		// then the same a minute later, and 3 at 241s.
		if len(at) != 18 {
			t.Fatalf("admitted %d over four minutes, want 18: %v", len(at), at)
		}
		most := 0
		for i := range at {
			n := 0
			for _, s := range at {
				if s > at[i]-p.Period && s <= at[i] {
					n++
				}
			}
			most = max(most, n)
		}
		if most != p.Limit {
			t.Fatalf("the busiest window of %s holds %d admissions, want %d: %v", p.Period, most, p.Limit, at)
		}
	})

	t.Run("SlidingWindowLimitChanges", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		l := open(t, c, newPrefix())
		p := Policy{Name: "changing", Algorithm: SlidingWindow, Limit: 6, Period: time.Minute}
		for range 6 {
			allow(t, l, p, "k")
			c.Advance(time.Second)
		}
		// Requests at 0..5s; now 6s. A lowered limit counts them all:
		// four must leave before the next request.
		p.Limit = 2
		expect(t, l, p, "k", "limit lowered to 2", Decision{Limit: 2, Reset: 59 * time.Second, RetryAfter: 58 * time.Second})
		p.Limit = 20
		for i := range 14 {
			expect(t, l, p, "k", "limit raised to 20", Decision{Allowed: true, Limit: 20, Remaining: 13 - i, Reset: time.Minute})
		}
		expect(t, l, p, "k", "20 in the window", Decision{Limit: 20, Reset: time.Minute, RetryAfter: 54 * time.Second})
	})

	t.Run("ClockStepsBack", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		l := open(t, c, newPrefix())
		tb := Policy{Name: "back-tb", Algorithm: TokenBucket, Limit: 2, Period: time.Minute}
		sw := Policy{Name: "back-sw", Algorithm: SlidingWindow, Limit: 2, Period: time.Minute}
		c.Advance(10 * time.Second)
		expect(t, l, tb, "k", "bucket at 10s", Decision{Allowed: true, Limit: 2, Remaining: 1, Reset: 30 * time.Second})
		expect(t, l, sw, "k", "window at 10s", Decision{Allowed: true, Limit: 2, Remaining: 1, Reset: time.Minute})
		// As an instance whose clock runs 5s behind would see it: the
		// request at 10s still counts in full.
		c.Advance(-5 * time.Second)
		expect(t, l, tb, "k", "bucket at 5s", Decision{Limit: 2, Reset: 35 * time.Second, RetryAfter: 5 * time.Second})
		expect(t, l, sw, "k", "window at 5s", Decision{Allowed: true, Limit: 2, Remaining: 0, Reset: 65 * time.Second})
		expect(t, l, sw, "k", "window full at 5s", Decision{Limit: 2, Reset: 65 * time.Second, RetryAfter: 65 * time.Second})
	})

	t.Run("Independent", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		l := open(t, c, newPrefix())
		for _, alg := range []Algorithm{TokenBucket, SlidingWindow} {
			one := Policy{Name: "one-" + string(alg), Algorithm: alg, Limit: 2, Period: time.Hour}
			two := one
			two.Name = "two-" + string(alg)
			exhaust(t, l, one, "k")
			if d := allow(t, l, two, "k"); !d.Allowed || d.Remaining != 1 {
				t.Errorf("%s: same key, other policy: %+v, want allowed with 1 remaining", alg, d)
			}
			if d := allow(t, l, one, "k2"); !d.Allowed || d.Remaining != 1 {
				t.Errorf("%s: same policy, other key: %+v, want allowed with 1 remaining", alg, d)
			}
			// Where policy name and key meet: "a:b"+"c" is not "a"+"b:c".
			left, right := one, one
			left.Name, right.Name = "x:"+string(alg), "x"
			exhaust(t, l, left, "b:c")
			if d := allow(t, l, right, string(alg)+":b:c"); !d.Allowed || d.Remaining != 1 {
				t.Errorf("%s: policy %q key %q after exhausting policy %q key %q: %+v, want allowed",
					alg, right.Name, string(alg)+":b:c", left.Name, "b:c", d)
			}
		}
	})

	t.Run("HostileKeys", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		l := open(t, c, newPrefix())
		for _, alg := range []Algorithm{TokenBucket, SlidingWindow} {
			p := Policy{Name: "hostile {}" + string(alg), Algorithm: alg, Limit: 2, Period: time.Hour}
			// Each key starts full, so none shares state with a key
			// before it.
			for _, k := range hostileKeys() {
				exhaust(t, l, p, k)
			}
		}
	})

	t.Run("ChangedAlgorithm", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		l := open(t, c, newPrefix())
		tb := Policy{Name: "moving", Algorithm: TokenBucket, Limit: 2, Period: time.Hour}
		sw := tb
		sw.Algorithm = SlidingWindow
		allow(t, l, tb, "k")
		if d := allow(t, l, sw, "k"); !d.Allowed || d.Remaining != 1 {
			t.Fatalf("token bucket, then sliding window under the same name: %+v, want a fresh start", d)
		}
		if d := allow(t, l, tb, "k"); !d.Allowed || d.Remaining != 1 {
			t.Fatalf("and back to token bucket: %+v, want a fresh start", d)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		t.Parallel()
		c := newClock() // frozen: nothing refills while they race
		prefix := newPrefix()
		one := open(t, c, prefix)
		two := []Limiter{one, open(t, c, prefix)}
		for _, alg := range []Algorithm{TokenBucket, SlidingWindow} {
			p := Policy{Name: "race-" + string(alg), Algorithm: alg, Limit: 50, Period: time.Hour}
			if n := race(t, []Limiter{one}, p, "k", 200); n != 50 {
				t.Errorf("%s, one limiter: %d of 200 concurrent requests allowed, want 50", alg, n)
			}
			if n := race(t, two, p, "k2", 200); n != 50 {
				t.Errorf("%s, two limiters sharing state: %d of 200 concurrent requests allowed, want 50", alg, n)
			}
		}
	})

	t.Run("InvalidPolicy", func(t *testing.T) {
		t.Parallel()
		l := open(t, newClock(), newPrefix())
		for _, p := range []Policy{
			{},
			{Name: "zero", Algorithm: TokenBucket, Period: time.Minute},
			{Name: "alg", Algorithm: "leaky", Limit: 1, Period: time.Minute},
		} {
			if _, err := l.Allow(t.Context(), p, "k"); !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("Allow(%+v): err = %v, want ErrInvalidPolicy", p, err)
			}
		}
	})

	t.Run("CanceledContext", func(t *testing.T) {
		t.Parallel()
		l := open(t, newClock(), newPrefix())
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		p := Policy{Name: "ctx", Algorithm: TokenBucket, Limit: 1, Period: time.Minute}
		if _, err := l.Allow(ctx, p, "k"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Allow with a canceled context: err = %v, want context.Canceled", err)
		}
	})
}

// exhaust checks that key starts with p's whole allowance, uses it, and is
// then denied.
func exhaust(t *testing.T, l Limiter, p Policy, key string) {
	t.Helper()
	for i := range p.Limit {
		if d := allow(t, l, p, key); !d.Allowed || d.Remaining != p.Limit-1-i {
			t.Fatalf("%s key %.40q request %d: %+v, want allowed with %d remaining", p.Name, key, i+1, d, p.Limit-1-i)
		}
	}
	if d := allow(t, l, p, key); d.Allowed {
		t.Fatalf("%s key %.40q: request %d allowed, want denied", p.Name, key, p.Limit+1)
	}
}

// race sends n requests for key at once, spread over the limiters, and
// returns how many were allowed.
func race(t *testing.T, ls []Limiter, p Policy, key string, n int) int {
	var allowed atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			d, err := ls[i%len(ls)].Allow(t.Context(), p, key)
			if err != nil {
				t.Error(err)
			}
			if d.Allowed {
				allowed.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	return int(allowed.Load())
}

func TestValidate(t *testing.T) {
	ok := Policy{Name: "ok", Algorithm: TokenBucket, Limit: 10, Period: time.Minute}
	with := func(f func(*Policy)) Policy { p := ok; f(&p); return p }
	for _, tc := range []struct {
		p    Policy
		want string // in the error; empty: valid
	}{
		{ok, ""},
		{with(func(p *Policy) { p.Algorithm = SlidingWindow; p.Limit = MaxWindowLimit }), ""},
		{with(func(p *Policy) { p.Limit = 1_000_000; p.Period = time.Second }), ""},
		{with(func(p *Policy) { p.Burst = 1000 }), ""},
		{with(func(p *Policy) { p.Name = "" }), "name must be set"},
		{with(func(p *Policy) { p.Algorithm = "" }), "algorithm must be"},
		{with(func(p *Policy) { p.Limit = 0 }), "limit must be at least 1"},
		{with(func(p *Policy) { p.Limit = -1 }), "limit must be at least 1"},
		{with(func(p *Policy) { p.Algorithm = SlidingWindow; p.Limit = MaxWindowLimit + 1 }), "at most 10000"},
		{with(func(p *Policy) { p.Period = 999 * time.Millisecond }), "period must be at least 1s"},
		{with(func(p *Policy) { p.Period = 0 }), "period must be at least 1s"},
		{with(func(p *Policy) { p.Period = 11 * 365 * 24 * time.Hour }), "period must be at most"},
		{with(func(p *Policy) { p.Limit = 1_000_001; p.Period = time.Second }), "one per microsecond"},
		{with(func(p *Policy) { p.Burst = -1 }), "burst must not be negative"},
		{with(func(p *Policy) { p.Limit = 1; p.Period = 24 * time.Hour; p.Burst = 10 * 366 }), "to refill"},
	} {
		err := tc.p.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Validate(%+v) = %v, want nil", tc.p, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Validate(%+v) = %v, want an error containing %q", tc.p, err, tc.want)
		case err != nil && (!errors.Is(err, ErrInvalidPolicy) || strings.Contains(err.Error(), "\n")):
			t.Errorf("Validate(%+v) = %q: want one line wrapping ErrInvalidPolicy", tc.p, err)
		}
	}
}

func TestKeyPart(t *testing.T) {
	for _, tc := range []struct {
		s    string
		name bool
		raw  bool
	}{
		{"api-user", true, true},
		{"user:42", false, true},
		{"user:42", true, false}, // a name's colon would blur where it ends
		{"a@b.example", false, true},
		{"", false, true},
		{"}", false, false},
		{"{", false, false},
		{"has space", false, false},
		{"\xff", false, false},
		{"#abc", false, false},
		{strings.Repeat("a", maxRawPart), false, true},
		{strings.Repeat("a", maxRawPart+1), false, false},
	} {
		got := keyPart(tc.s, tc.name)
		if (got == tc.s) != tc.raw {
			t.Errorf("keyPart(%q, %v) = %q; want kept as it is: %v", tc.s, tc.name, got, tc.raw)
		}
		if strings.ContainsAny(got, "{}") || (tc.name && strings.Contains(got, ":")) {
			t.Errorf("keyPart(%q, %v) = %q: has a brace or a name's colon", tc.s, tc.name, got)
		}
	}
	seen := map[string]string{}
	for _, k := range hostileKeys() {
		p := keyPart(k, false)
		if other, dup := seen[p]; dup {
			t.Errorf("keys %q and %q both encode as %q", other, k, p)
		}
		seen[p] = k
	}
}
