package ratelimit

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"gatehouse/platform/httpx"
	"gatehouse/platform/kv"
	"gatehouse/platform/testenv"
)

func TestRedis(t *testing.T) {
	url := testenv.Need(t, testenv.EnvRedis)
	t.Parallel()
	b := newRedisBackend(t, url)
	if _, ok := b.admin.(*redis.Client); !ok {
		t.Fatalf("%s: want a single-node client", testenv.EnvRedis)
	}
	runContract(t, b.open)
	runRedis(t, b)
}

// The same contract through go-redis's autopipeliner, as app.go runs it
// (NewRedisPipelined): concurrent decisions share a pipeline, and counts
// must stay exact.
func TestRedisAutoPipeline(t *testing.T) {
	url := testenv.Need(t, testenv.EnvRedis)
	t.Parallel()
	b := newRedisBackend(t, url)
	b.auto = true
	runContract(t, b.open)
	runScriptFlushed(t, b)
}

func TestRedisClusterAutoPipeline(t *testing.T) {
	url := testenv.Need(t, testenv.EnvRedisCluster)
	t.Parallel()
	b := newRedisBackend(t, url)
	b.auto = true
	runContract(t, b.open)
	runScriptFlushed(t, b)
}

// runScriptFlushed checks that decisions go on when Redis has lost the
// scripts (a restart, SCRIPT FLUSH): EVALSHA's NOSCRIPT is answered by
// sending the script itself.
func runScriptFlushed(t *testing.T, b *redisBackend) {
	t.Run("ScriptFlushed", func(t *testing.T) {
		r := b.limiter(t, newClock(), "test:"+testenv.Random(6)+":")
		if err := b.admin.ScriptFlush(t.Context()).Err(); err != nil {
			t.Fatal(err)
		}
		for _, p := range []Policy{
			{Name: "flushed-tb", Algorithm: TokenBucket, Limit: 10, Period: time.Hour},
			{Name: "flushed-sw", Algorithm: SlidingWindow, Limit: 10, Period: time.Hour},
		} {
			if d, err := r.Allow(t.Context(), p, "k"); err != nil || !d.Allowed {
				t.Errorf("%s after SCRIPT FLUSH: %+v, %v", p.Name, d, err)
			}
		}
		if err := b.admin.ScriptFlush(t.Context()).Err(); err != nil {
			t.Fatal(err)
		}
		ds, err := r.AllowSeq(t.Context(), []Check{
			{Policy: Policy{Name: "flushed-tb", Algorithm: TokenBucket, Limit: 10, Period: time.Hour}, Key: "{k}"},
			{Policy: Policy{Name: "flushed-sw", Algorithm: SlidingWindow, Limit: 10, Period: time.Hour}, Key: "{k}"},
		})
		if err != nil || len(ds) != 2 || !ds[0].Allowed || !ds[1].Allowed {
			t.Errorf("AllowSeq after SCRIPT FLUSH: %+v, %v", ds, err)
		}
	})
}

func TestRedisCluster(t *testing.T) {
	url := testenv.Need(t, testenv.EnvRedisCluster)
	t.Parallel()
	b := newRedisBackend(t, url)
	if _, ok := b.admin.(*redis.ClusterClient); !ok {
		t.Fatalf("%s: want a cluster client", testenv.EnvRedisCluster)
	}
	runContract(t, b.open)
	runRedis(t, b)
}

// redisBackend opens Redis limiters on one server, each with its own client,
// and deletes their keys when their test ends.
type redisBackend struct {
	url   string
	admin redis.UniversalClient
	auto  bool // decide through the client's autopipeliner
}

func newRedisBackend(t *testing.T, url string) *redisBackend {
	return &redisBackend{url: url, admin: newClient(t, url)}
}

// newClient connects to url as kv does, and closes the client when t ends.
func newClient(t testing.TB, url string) redis.UniversalClient {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := kv.NewRedis(ctx, url, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Client()
}

func (b *redisBackend) limiter(t *testing.T, c *clock, prefix string) *Redis {
	client := newClient(t, b.url)
	r := NewRedis(client, prefix, c.Now)
	if b.auto {
		var err error
		if r, err = NewRedisPipelined(client, prefix, DefaultTimeout, c.Now); err != nil {
			t.Fatal(err)
		}
	}
	// Registered after the client's Close, so it runs before it.
	t.Cleanup(func() { testenv.DeleteKeys(t, b.admin, prefix) })
	return r
}

func (b *redisBackend) open(t *testing.T, c *clock, prefix string) Limiter {
	return b.limiter(t, c, prefix)
}

// countHook counts the commands and pipelines a client sends, by name.
type countHook struct {
	mu    sync.Mutex
	names map[string]int
	n     atomic.Int64
}

func newCountHook() *countHook { return &countHook{names: map[string]int{}} }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		h.mu.Lock()
		h.names[cmd.Name()]++
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		h.mu.Lock()
		h.names["pipeline"]++
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (h *countHook) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.names = map[string]int{}
	h.n.Store(0)
}

// runRedis runs the cases that look inside Redis.
func runRedis(t *testing.T, b *redisBackend) {
	newPrefix := func() string { return "test:" + testenv.Random(6) + ":" }

	t.Run("KeyTTL", func(t *testing.T) {
		t.Parallel()
		prefix := newPrefix()
		r := b.limiter(t, newClock(), prefix)
		tb := Policy{Name: "ttl-tb", Algorithm: TokenBucket, Limit: 10, Period: time.Hour}
		sw := Policy{Name: "ttl-sw", Algorithm: SlidingWindow, Limit: 10, Period: time.Hour}
		for range 3 {
			allow(t, r, tb, "k")
			allow(t, r, sw, "k")
		}
		for _, tc := range []struct {
			p        Policy
			min, max time.Duration
		}{
			{tb, 17 * time.Minute, 18 * time.Minute}, // three intervals of 6m: until the bucket is full
			{sw, 59 * time.Minute, time.Hour},        // until the newest request leaves the window
		} {
			ttl, err := b.admin.PTTL(t.Context(), r.key(tc.p.Name, "k")).Result()
			if err != nil {
				t.Fatal(err)
			}
			if ttl < tc.min || ttl > tc.max {
				t.Errorf("%s: key ttl %s, want from %s to %s", tc.p.Algorithm, ttl, tc.min, tc.max)
			}
		}
	})

	t.Run("KeysOnOneSlot", func(t *testing.T) {
		t.Parallel()
		prefix := newPrefix()
		r := b.limiter(t, newClock(), prefix)
		_, cluster := b.admin.(*redis.ClusterClient)
		for _, name := range []string{"plain", "br{ace}s", "co:lon"} {
			p := Policy{Name: name, Algorithm: SlidingWindow, Limit: 1, Period: time.Hour}
			for _, k := range hostileKeys() {
				allow(t, r, p, k)
				key := r.key(p.Name, k)
				rest, ok := strings.CutPrefix(key, prefix+"rl:{")
				if !ok || !strings.HasSuffix(rest, "}") || strings.ContainsAny(rest[:len(rest)-1], "{}") {
					t.Fatalf("policy %q key %.40q: Redis key %q: want the hash tag to span the whole name and key", name, k, key)
				}
				if n, err := b.admin.Exists(t.Context(), key).Result(); n != 1 || err != nil {
					t.Fatalf("policy %q key %.40q: Redis key %q: EXISTS = %d, %v; want 1", name, k, key, n, err)
				}
				if !cluster {
					continue
				}
				slot, err := b.admin.ClusterKeySlot(t.Context(), key).Result()
				if err != nil {
					t.Fatal(err)
				}
				want, _ := b.admin.ClusterKeySlot(t.Context(), rest[:len(rest)-1]).Result()
				if slot != want {
					t.Fatalf("policy %q key %.40q: slot %d, want %d, the slot of the name and key alone", name, k, slot, want)
				}
			}
		}
	})

	t.Run("OneRoundTrip", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, b.url)
		h := newCountHook()
		c.AddHook(h)
		prefix := newPrefix()
		t.Cleanup(func() { testenv.DeleteKeys(t, b.admin, prefix) })
		r := NewRedis(c, prefix, newClock().Now)
		policies := []Policy{
			{Name: "rt-tb", Algorithm: TokenBucket, Limit: 10, Period: time.Hour},
			{Name: "rt-sw", Algorithm: SlidingWindow, Limit: 10, Period: time.Hour},
		}
		decide := func() {
			for i := range 20 {
				for _, p := range policies {
					allow(t, r, p, string(rune('a'+i)))
				}
			}
		}
		// The first pass loads the script on every node these keys reach
		// (a fresh cluster node answers NOSCRIPT once); the second counts.
		decide()
		h.reset()
		decide()
		if n := h.n.Load(); n != 40 || h.names["evalsha"] != 40 {
			t.Fatalf("40 decisions sent %d commands %v, want 40 EVALSHA", n, h.names)
		}
	})

	t.Run("MatchesMemory", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		mem := NewMemory(c.Now)
		defer mem.Close()
		red := b.limiter(t, c, newPrefix())
		policies := []Policy{
			{Name: "tb-a", Algorithm: TokenBucket, Limit: 5, Period: 10 * time.Second, Burst: 3},
			{Name: "tb-b", Algorithm: TokenBucket, Limit: 7, Period: time.Minute}, // 8.571428…s: rounded up
			{Name: "sw-a", Algorithm: SlidingWindow, Limit: 4, Period: 10 * time.Second},
			{Name: "sw-b", Algorithm: SlidingWindow, Limit: 3, Period: 7*time.Second + 777*time.Microsecond},
		}
		rng := rand.New(rand.NewPCG(1, 2))
		var allowed, denied int
		for i := range 600 {
			switch n := rng.IntN(10); {
			case n < 4: // same instant
			case n < 7:
				c.Advance(time.Duration(rng.IntN(1000)) * time.Microsecond)
			case n < 9:
				c.Advance(time.Duration(rng.IntN(1_000_000)) * time.Microsecond)
			default:
				c.Advance(time.Duration(rng.IntN(5_000_000)) * time.Microsecond)
			}
			p := policies[rng.IntN(len(policies))]
			k := []string{"a", "b"}[rng.IntN(2)]
			dm, dr := allow(t, mem, p, k), allow(t, red, p, k)
			if dm != dr {
				t.Fatalf("step %d, %s key %s: memory %+v, redis %+v", i, p.Name, k, dm, dr)
			}
			if dm.Allowed {
				allowed++
			} else {
				denied++
			}
		}
		if allowed < 100 || denied < 100 {
			t.Fatalf("%d allowed, %d denied: want plenty of both to compare", allowed, denied)
		}
	})

	t.Run("Unreachable", func(t *testing.T) {
		t.Parallel()
		p := Policy{Name: "down", Algorithm: TokenBucket, Limit: 1, Period: time.Minute}
		closed := newClient(t, b.url)
		closed.Close()
		if _, err := NewRedis(closed, newPrefix(), nil).Allow(t.Context(), p, "k"); err == nil {
			t.Error("Allow on a closed client: err = nil, want an error")
		}
		// A port nobody listens on.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		down := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
		defer down.Close()
		if _, err := NewRedis(down, newPrefix(), nil).Allow(t.Context(), p, "k"); err == nil {
			t.Error("Allow with Redis down: err = nil, want an error")
		}
	})
}

// A Redis that accepts connections and never answers (hung, overloaded,
// behind a blackholed path) used to hold every rate-limited request until
// go-redis gave up: 40 s through the autopipeliner while it retried, the
// read timeout (5 s and more) after; on_error allow did not keep the API
// up, every request stalled instead. Each decision now waits at most
// ratelimit.timeout, through the autopipeliner app.go uses, and on_error
// applies.
func TestHungRedisDecisionBoundedByTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var conns []net.Conn
	hungUp := false
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if hungUp {
				c.Close()
			} else {
				conns = append(conns, c)
				go io.Copy(io.Discard, c) // reads, never answers
			}
			mu.Unlock()
		}
	}()
	opt, err := redis.ParseURL("redis://" + ln.Addr().String() + "/0")
	if err != nil {
		t.Fatal(err)
	}
	opt.MaxRetries = -1 // as kv.NewRedis sets it
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	// Registered after the client's Close, so it runs before it: the
	// server hangs up, and Close need not wait out the stuck batch.
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		hungUp = true
		for _, c := range conns {
			c.Close()
		}
	})
	l, err := NewRedisPipelined(c, "hung:", 300*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	e, err := NewEnforcer(l, []Rule{
		{Key: KeyUser, OnError: "allow", Policy: Policy{Name: "api-user", Algorithm: TokenBucket, Limit: 600, Period: time.Minute}},
		{Key: KeyTenant, OnError: "allow", Policy: Policy{Name: "api-tenant", Algorithm: TokenBucket, Limit: 6000, Period: time.Minute}},
		{Key: KeyEmail, OnError: "deny", Policy: Policy{Name: "otp", Algorithm: SlidingWindow, Limit: 3, Period: time.Minute}},
	}, nil, []string{"api-user", "api-tenant"}, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetTimeout(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Both ways a decision is made: a slot's rules in one step (AllowSeq),
	// and a handler's Check (Allow).
	send := serve(t, e, httpx.Route{Method: "GET", Path: "/x", Auth: httpx.Authenticated})
	start := time.Now()
	w := send("/x", "")
	if took := time.Since(start); w.Code != 204 || took > 3*time.Second { // 10 s before; slack for a loaded machine
		t.Errorf("authenticated request, on_error allow, Redis hung: %d after %s; want 204 within the 300ms timeout", w.Code, took.Round(time.Millisecond))
	}
	start = time.Now()
	err = e.Check(context.Background(), "otp", "alice@example.com")
	if took := time.Since(start); !errors.Is(err, ErrUnavailable) || took > 3*time.Second {
		t.Errorf("Check, on_error deny, Redis hung: %v after %s; want ErrUnavailable within the 300ms timeout", err, took.Round(time.Millisecond))
	}
	if n := e.Counts("api-user").Errors.Load() + e.Counts("otp").Errors.Load(); n != 2 {
		t.Errorf("%d limiter errors counted, want 2", n)
	}
	if !strings.Contains(logs.String(), "rate limiter unavailable") {
		t.Errorf("the hung Redis was not logged:\n%s", logs.String())
	}
}
