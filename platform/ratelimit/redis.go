package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// bucketSource is gcra in Lua. KEYS[1] holds the theoretical arrival time;
// ARGV is now, the emission interval and the tolerance, in microseconds. It
// returns {allowed, reset, retry}. Lua numbers are doubles, exact for the
// integers used here (Validate keeps them below 2^53), and string.format
// '%d' stores the time without the exponent tostring would give it.
//
// A key of another type was left by the same policy as a sliding window: it
// is dropped rather than failing every request until it expires.
const bucketLua = `
local function bucket(key, now, emission, tolerance)
	local v = redis.pcall('GET', key)
	if type(v) == 'table' then
		redis.call('DEL', key)
		v = false
	end
	local tat = tonumber(v) or now
	if tat < now then tat = now end
	local nxt = tat + emission
	if nxt - now > tolerance then
		return {0, tat - now, nxt - tolerance - now}
	end
	redis.call('SET', key, string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000))
	return {1, nxt - now, 0}
end
`

const bucketSource = bucketLua + `return bucket(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))`

// windowSource is entry.window in Lua, on a sorted set of the allowed
// requests scored by time. KEYS[1] is the set; ARGV is now and the period in
// microseconds, the limit, and a member name no other request uses. It
// returns {allowed, count, reset, retry}.
const windowLua = `
local function window(key, now, period, limit, member)
	local r = redis.pcall('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now - period))
	if type(r) == 'table' then
		redis.call('DEL', key)
	end
	local n = redis.call('ZCARD', key)
	local last = now
	if n > 0 then
		last = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
	end
	if n >= limit then
		local first = tonumber(redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')[2])
		return {0, n, last + period - now, first + period - now}
	end
	local t = now
	if last > t then t = last end
	redis.call('ZADD', key, string.format('%d', t), member)
	redis.call('PEXPIRE', key, math.ceil((t + period - now) / 1000))
	return {1, n + 1, t + period - now, 0}
end
`

const windowSource = windowLua + `return window(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])`

// seqSource decides KEYS in order, stopping at the first refusal: the
// meaning of calling the two scripts above one after the other, in one
// round trip. ARGV is now, then per key "b", emission, tolerance (token
// bucket) or "w", period, limit, member (sliding window). It returns four
// numbers per decision made: allowed, count (0 for a bucket), reset, retry.
const seqSource = bucketLua + windowLua + `
local now = tonumber(ARGV[1])
local out = {}
local a = 2
for i = 1, #KEYS do
	local r
	if ARGV[a] == 'b' then
		r = bucket(KEYS[i], now, tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]))
		r = {r[1], 0, r[2], r[3]}
		a = a + 3
	else
		r = window(KEYS[i], now, tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3])
		a = a + 4
	end
	for _, x in ipairs(r) do out[#out + 1] = x end
	if r[1] == 0 then break end
end
return out
`

// Redis is a Limiter kept in Redis, one node or a Cluster, shared by every
// instance that uses the same server and prefix.
//
// Each decision is one script call, so one round trip (two the first time a
// node meets the script, which it then caches), and atomic, so instances
// never both take the last request. A key's state is one Redis key,
//
//	prefix + "rl:{" + policy name + ":" + key + "}"
//
// whose braces make a Cluster place it by policy and key alone. A name or
// key longer than 128 bytes, or holding a brace, a space or anything but
// printable ASCII (or, in a name, a colon), is replaced by '#' and its hex
// SHA-256, so any string is a safe key and no two collide. Every key carries
// an expiry, so idle keys vanish: a token bucket's when it is full again, a
// sliding window's when its newest request leaves the window.
type Redis struct {
	client redis.Scripter
	// async is client when it is a deferred autopipeliner, whose replies
	// can be waited for under a context (see run).
	async     *redis.AutoPipeliner
	prefix    string
	now       func() time.Time
	bucket    *redis.Script
	window    *redis.Script
	seqScript *redis.Script
	// cluster: keys of one request may live on different nodes, so
	// AllowSeq decides them one by one.
	cluster bool

	// A sliding window's members are this instance's random id and a
	// counter: unique across instances without drawing randomness per
	// request.
	id  string
	seq atomic.Uint64
}

// NewRedis returns a Limiter keeping its state in c under prefix, reading
// the time from now, or from time.Now if now is nil. It does not own c: the
// caller closes it.
//
// A decision waits for Redis no longer than its context lasts on a plain
// client only with go-redis's ContextTimeoutEnabled (else for the client's
// read timeout), and on a deferred autopipeliner (AsyncAutoPipeline). The
// blocking autopipeliner (AutoPipeline) runs commands on its own context
// and ignores the caller's: use NewRedisPipelined.
func NewRedis(c redis.Scripter, prefix string, now func() time.Time) *Redis {
	if now == nil {
		now = time.Now
	}
	var id [8]byte
	rand.Read(id[:])
	_, cluster := c.(*redis.ClusterClient)
	var async *redis.AutoPipeliner
	if ap, ok := c.(*redis.AutoPipeliner); ok && !ap.IsBlocking() {
		async = ap
	}
	return &Redis{
		client:    c,
		async:     async,
		cluster:   cluster,
		prefix:    prefix,
		now:       now,
		bucket:    redis.NewScript(bucketSource),
		window:    redis.NewScript(windowSource),
		seqScript: redis.NewScript(seqSource),
		id:        hex.EncodeToString(id[:]) + ":",
	}
}

// NewRedisPipelined returns a Limiter keeping its state in c under prefix,
// through go-redis's autopipeliner: the decisions of concurrent requests go
// out in one write and come back in one read (about three times the
// decisions per CPU second of a round trip each: BenchmarkRedisParallel).
// No decision waits for Redis much longer than timeout, so that a Redis
// that accepts connections but never answers is an outage (each rule's
// on_error) within it, not seconds later:
//   - on one server, the blocking autopipeliner of a clone of c whose reads
//     and writes time out after timeout. That face ignores a caller's
//     context, but a batch fails with its connection's timeout; and it is
//     the faster face for callers with one command each, by about a fifth
//     of a protected request on the Redis stack (BenchmarkProtectedRoute);
//   - on a Cluster, which has no such clone, the deferred autopipeliner,
//     whose replies are waited for under the decision's context (run).
//
// The autopipeliner belongs to c, which closes it. hooks are added to it:
// a clone starts without the hooks of the client it was made from.
func NewRedisPipelined(c redis.UniversalClient, prefix string, timeout time.Duration, now func() time.Time, hooks ...redis.Hook) (*Redis, error) {
	var ap *redis.AutoPipeliner
	var err error
	switch c := c.(type) {
	case *redis.Client:
		ap, err = c.WithTimeout(timeout).AutoPipeline()
	default:
		ap, err = c.AsyncAutoPipeline()
	}
	if err != nil {
		return nil, err
	}
	if _, clone := c.(*redis.Client); clone {
		for _, h := range hooks {
			ap.AddHook(h)
		}
	}
	r := NewRedis(ap, prefix, now)
	if _, cluster := c.(*redis.ClusterClient); cluster {
		r.OnCluster()
	}
	return r, nil
}

// OnCluster tells r that c, an autopipeliner say, talks to a Redis Cluster,
// whose nodes may hold the keys of one AllowSeq apart: it then decides them
// one by one. NewRedis sees a *redis.ClusterClient by itself.
func (r *Redis) OnCluster() *Redis {
	r.cluster = true
	return r
}

// key returns the Redis key holding key's state under policy.
func (r *Redis) key(policy, key string) string {
	return r.prefix + "rl:{" + keyPart(policy, true) + ":" + keyPart(key, false) + "}"
}

// Allow decides one request for key under p; see Limiter.
func (r *Redis) Allow(ctx context.Context, p Policy, key string) (Decision, error) {
	if err := p.Validate(); err != nil {
		return Decision{}, err
	}
	// Checked here: an autopipeliner sends a command whose context has
	// already ended, and a request that has gone must not be counted.
	if err := ctx.Err(); err != nil {
		return Decision{}, fmt.Errorf("ratelimit: redis: %w", err)
	}
	sp := p.spans()
	k := []string{r.key(p.Name, key)}
	now := r.now().UnixMicro()

	if p.Algorithm == TokenBucket {
		v, err := r.run(ctx, r.bucket, bucketSource, k, now, sp.emission, sp.tolerance)
		if err != nil {
			return Decision{}, fmt.Errorf("ratelimit: redis: %w", err)
		}
		if len(v) != 3 {
			return Decision{}, fmt.Errorf("ratelimit: redis: token bucket script returned %d values, want 3", len(v))
		}
		return bucketDecision(p, sp, v[0] == 1, v[1], v[2]), nil
	}
	member := r.id + strconv.FormatUint(r.seq.Add(1), 36)
	v, err := r.run(ctx, r.window, windowSource, k, now, sp.period, p.Limit, member)
	if err != nil {
		return Decision{}, fmt.Errorf("ratelimit: redis: %w", err)
	}
	if len(v) != 4 {
		return Decision{}, fmt.Errorf("ratelimit: redis: sliding window script returned %d values, want 4", len(v))
	}
	return windowDecision(p, v[0] == 1, int(v[1]), v[2], v[3]), nil
}

// AllowSeq decides checks in order, as Limiter says, in one script call:
// one round trip for all of a request's user-level limits. On a Cluster the
// keys may live on different nodes, so it decides them one by one.
func (r *Redis) AllowSeq(ctx context.Context, checks []Check) ([]Decision, error) {
	if r.cluster || len(checks) == 1 {
		return sequential(ctx, r, checks)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ratelimit: redis: %w", err)
	}
	keys := make([]string, len(checks))
	args := make([]any, 1, 1+4*len(checks))
	args[0] = r.now().UnixMicro()
	for i, c := range checks {
		if err := c.Policy.Validate(); err != nil {
			return nil, err
		}
		keys[i] = r.key(c.Policy.Name, c.Key)
		sp := c.Policy.spans()
		if c.Policy.Algorithm == TokenBucket {
			args = append(args, "b", sp.emission, sp.tolerance)
		} else {
			args = append(args, "w", sp.period, c.Policy.Limit, r.id+strconv.FormatUint(r.seq.Add(1), 36))
		}
	}
	v, err := r.run(ctx, r.seqScript, seqSource, keys, args...)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: redis: %w", err)
	}
	if len(v) == 0 || len(v)%4 != 0 || len(v)/4 > len(checks) {
		return nil, fmt.Errorf("ratelimit: redis: sequence script returned %d values for %d checks", len(v), len(checks))
	}
	out := make([]Decision, len(v)/4)
	for i := range out {
		c, x := checks[i], v[4*i:4*i+4]
		if c.Policy.Algorithm == TokenBucket {
			out[i] = bucketDecision(c.Policy, c.Policy.spans(), x[0] == 1, x[2], x[3])
		} else {
			out[i] = windowDecision(c.Policy, x[0] == 1, int(x[1]), x[2], x[3])
		}
	}
	return out, nil
}

// run runs the script s, whose source is src, and returns its numbers. On
// a deferred autopipeliner it stops waiting for the reply when ctx ends:
// the command is in a batch with other requests' and is not withdrawn, so
// Redis may still count the request once it answers. Elsewhere it is
// go-redis's Script.Run, EVALSHA then EVAL if Redis lacks the script.
func (r *Redis) run(ctx context.Context, s *redis.Script, src string, keys []string, args ...any) ([]int64, error) {
	if r.async == nil {
		return s.Run(ctx, r.client, keys, args...).Int64Slice()
	}
	cmd, err := r.submit(ctx, "evalsha", s.Hash(), keys, args)
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		cmd, err = r.submit(ctx, "eval", src, keys, args)
	}
	if err != nil {
		return nil, err
	}
	return cmd.Int64Slice()
}

// submit sends EVAL or EVALSHA through the deferred autopipeliner and
// waits for its reply while ctx lasts.
func (r *Redis) submit(ctx context.Context, name, script string, keys []string, args []any) (*redis.Cmd, error) {
	a := make([]any, 0, 3+len(keys)+len(args))
	a = append(a, name, script, len(keys))
	for _, k := range keys {
		a = append(a, k)
	}
	a = append(a, args...)
	cmd := redis.NewCmd(ctx, a...)
	cmd.SetFirstKeyPos(3) // a Cluster places it by its first key
	if err := r.async.Submit(ctx, cmd).WaitContext(ctx); err != nil {
		return nil, err
	}
	return cmd, nil
}
