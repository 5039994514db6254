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
const bucketSource = `
local now = tonumber(ARGV[1])
local emission = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' then
	redis.call('DEL', KEYS[1])
	v = false
end
local tat = tonumber(v) or now
if tat < now then tat = now end
local nxt = tat + emission
if nxt - now > tolerance then
	return {0, tat - now, nxt - tolerance - now}
end
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000))
return {1, nxt - now, 0}
`

// windowSource is entry.window in Lua, on a sorted set of the allowed
// requests scored by time. KEYS[1] is the set; ARGV is now and the period in
// microseconds, the limit, and a member name no other request uses. It
// returns {allowed, count, reset, retry}.
const windowSource = `
local now = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local r = redis.pcall('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - period))
if type(r) == 'table' then
	redis.call('DEL', KEYS[1])
end
local n = redis.call('ZCARD', KEYS[1])
local last = now
if n > 0 then
	last = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
end
if n >= limit then
	local first = tonumber(redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')[2])
	return {0, n, last + period - now, first + period - now}
end
local t = now
if last > t then t = last end
redis.call('ZADD', KEYS[1], string.format('%d', t), ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil((t + period - now) / 1000))
return {1, n + 1, t + period - now, 0}
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
	prefix string
	now    func() time.Time
	bucket *redis.Script
	window *redis.Script

	// A sliding window's members are this instance's random id and a
	// counter: unique across instances without drawing randomness per
	// request.
	id  string
	seq atomic.Uint64
}

// NewRedis returns a Limiter keeping its state in c under prefix, reading
// the time from now, or from time.Now if now is nil. It does not own c: the
// caller closes it.
func NewRedis(c redis.Scripter, prefix string, now func() time.Time) *Redis {
	if now == nil {
		now = time.Now
	}
	var id [8]byte
	rand.Read(id[:])
	return &Redis{
		client: c,
		prefix: prefix,
		now:    now,
		bucket: redis.NewScript(bucketSource),
		window: redis.NewScript(windowSource),
		id:     hex.EncodeToString(id[:]) + ":",
	}
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
		v, err := r.bucket.Run(ctx, r.client, k, now, sp.emission, sp.tolerance).Int64Slice()
		if err != nil {
			return Decision{}, fmt.Errorf("ratelimit: redis: %w", err)
		}
		if len(v) != 3 {
			return Decision{}, fmt.Errorf("ratelimit: redis: token bucket script returned %d values, want 3", len(v))
		}
		return bucketDecision(p, sp, v[0] == 1, v[1], v[2]), nil
	}
	member := r.id + strconv.FormatUint(r.seq.Add(1), 36)
	v, err := r.window.Run(ctx, r.client, k, now, sp.period, p.Limit, member).Int64Slice()
	if err != nil {
		return Decision{}, fmt.Errorf("ratelimit: redis: %w", err)
	}
	if len(v) != 4 {
		return Decision{}, fmt.Errorf("ratelimit: redis: sliding window script returned %d values, want 4", len(v))
	}
	return windowDecision(p, v[0] == 1, int(v[1]), v[2], v[3]), nil
}
