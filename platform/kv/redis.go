package kv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// incrSource adds ARGV[1] to the counter at KEYS[1] and, only if the key did
// not exist before, sets its expiry to ARGV[2] milliseconds (0: none). One
// key, so it runs unchanged on a Redis Cluster; and a script runs atomically,
// so the counter and its expiry are set in one round trip with no window in
// which a crash leaves a counter that never expires. EXISTS rather than
// EXPIRE NX, because a key stored by Set without a ttl must keep having none.
const incrSource = `
local created = redis.call('EXISTS', KEYS[1]) == 0
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if created and tonumber(ARGV[2]) > 0 then
	redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return n
`

// holdSource adds ARGV[1] to the sorted set at KEYS[1], scored by when its
// hold ends (ARGV[2] milliseconds from now by the server's clock, the one
// clock every instance shares), drops the holds that have ended, keeps the
// key as long as its last hold, and returns how many hold it.
const holdSource = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
	redis.call('PEXPIRE', KEYS[1], ttl)
end
return redis.call('ZCARD', KEYS[1])
`

// Redis is a Store kept in Redis, shared by every instance that uses the same
// server and prefix. The prefix goes in front of every key and channel name,
// so several deployments, or tests, can share one server.
type Redis struct {
	client redis.UniversalClient
	prefix string
	incr   *redis.Script
	hold   *redis.Script

	mu     sync.Mutex
	closed bool
	done   chan struct{}  // closed by Close to end the subscriptions
	subs   sync.WaitGroup // one per running subscription
}

// NewRedis connects to Redis and pings it with ctx.
//
// The url is either one redis:// or rediss:// URL, naming a single node as
// go-redis ParseURL reads it (redis://user:password@host:6379/0?dial_timeout=3s),
// or a Redis Cluster given as two or more comma-separated addresses, each a
// redis:// URL or a bare host:port. For a cluster, the user, password, TLS
// and query options come from the first address; the others contribute only
// their host and port.
//
// Errors are one line and never contain the password.
func NewRedis(ctx context.Context, url, prefix string) (*Redis, error) {
	client, where, secrets, err := newClient(url)
	if err != nil {
		return nil, err
	}
	if err := client.Ping(ctx).Err(); err != nil {
		client.Close()
		return nil, redact(fmt.Errorf("kv: %s: ping: %w", where, err), secrets)
	}
	return &Redis{
		client: client,
		prefix: prefix,
		incr:   redis.NewScript(incrSource),
		hold:   redis.NewScript(holdSource),
		done:   make(chan struct{}),
	}, nil
}

// newClient parses raw into a client, without connecting. It also returns a
// description of the target safe to print, and the secrets any later error
// text must not show.
func newClient(raw string) (client redis.UniversalClient, where string, secrets []string, err error) {
	parts := strings.Split(raw, ",")
	hosts := make([]string, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if !strings.Contains(p, "://") {
			p = "redis://" + p
		}
		parts[i] = p
		u, err := url.Parse(p)
		if err != nil || u.Host == "" {
			// The text of a parse error quotes the URL, password and
			// all, so it is left out.
			return nil, "", nil, fmt.Errorf("kv: redis address %d of %d is not a valid URL (a password must be percent-encoded)", i+1, len(parts))
		}
		if pw, ok := u.User.Password(); ok && pw != "" {
			secrets = append(secrets, pw, u.User.String())
		}
		hosts[i] = u.Host
	}

	if len(parts) == 1 {
		where = "redis " + hosts[0]
		opt, err := redis.ParseURL(parts[0])
		if err != nil {
			return nil, "", nil, redact(fmt.Errorf("kv: %s: %w", where, err), secrets)
		}
		opt.MaxRetries = noRetries(opt.MaxRetries)
		return redis.NewClient(opt), where, secrets, nil
	}

	where = "redis cluster " + strings.Join(hosts, ",")
	opt, err := redis.ParseClusterURL(parts[0])
	if err != nil {
		return nil, "", nil, redact(fmt.Errorf("kv: %s: %w", where, err), secrets)
	}
	// ParseClusterURL ignores the path; a cluster has only database 0, so
	// say so rather than quietly use another.
	if u, _ := url.Parse(parts[0]); strings.Trim(u.Path, "/") != "" && strings.Trim(u.Path, "/") != "0" {
		return nil, "", nil, fmt.Errorf("kv: %s: a Redis Cluster has only database 0", where)
	}
	// On replicas, a subscription would be counted by no primary's SPUBLISH
	// (a writer would not wait for it), and a read could find what a
	// replica has not yet caught up with and keep it as a copy.
	if opt.ReadOnly || opt.RouteByLatency || opt.RouteRandomly {
		return nil, "", nil, fmt.Errorf("kv: %s: read_only, route_by_latency and route_randomly are not supported: the revocation state must be read from primaries", where)
	}
	for _, p := range parts[1:] {
		u, _ := url.Parse(p) // parsed above
		port := u.Port()
		if port == "" {
			port = "6379"
		}
		opt.Addrs = append(opt.Addrs, net.JoinHostPort(u.Hostname(), port))
	}
	opt.MaxRetries = noRetries(opt.MaxRetries)
	return redis.NewClusterClient(opt), where, secrets, nil
}

// noRetries turns go-redis's default of three retries off, unless the URL
// set max_retries. A command whose reply was lost after Redis ran it would
// run again: a counter added to twice, a rate-limit script charging one
// request twice and refusing it. A lost reply is an error instead, which
// the caller handles as any other (on_error; the Mirror's announcement).
// Redirects within a cluster (MOVED, ASK) are not retries and still work.
func noRetries(set int) int {
	if set == 0 {
		return -1
	}
	return set
}

// redactedError is an error whose text has had secrets cut out. Unwrap still
// gives the cause, so errors.Is(err, context.DeadlineExceeded) works.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redact returns err with every secret replaced and its text on one line.
func redact(err error, secrets []string) error {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, "xxxxx")
	}
	return &redactedError{msg: msg, err: errors.Unwrap(err)}
}

// fail wraps an error from go-redis, turning its "client is closed" into
// ErrClosed so that both backends answer alike after Close.
func fail(op string, err error) error {
	if errors.Is(err, redis.ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("kv: %s: %w", op, err)
}

// Client returns the go-redis client underneath, a *redis.Client or a
// *redis.ClusterClient, for code that needs commands Store does not offer.
// Keys it uses are not prefixed for it.
func (r *Redis) Client() redis.UniversalClient {
	return r.client
}

// EvictionPolicy returns the server's maxmemory-policy when it may evict
// keys (a maxmemory is set and the policy is not noeviction), else "". Such
// a server may drop revocation denials, whose loss the marker that says
// the denylist is whole does not show: a volatile-* policy evicts only keys
// with a ttl, the denials, and keeps the marker. A server that refuses CONFIG, as
// managed services often do, gives an error.
func (r *Redis) EvictionPolicy(ctx context.Context) (string, error) {
	cfg, err := r.client.ConfigGet(ctx, "maxmemory*").Result()
	if err != nil {
		return "", fail("config get", err)
	}
	if policy := cfg["maxmemory-policy"]; cfg["maxmemory"] != "0" && policy != "noeviction" {
		return policy, nil
	}
	return "", nil
}

// Get returns the value stored at key, or ErrNotFound.
func (r *Redis) Get(ctx context.Context, key string) ([]byte, error) {
	b, err := r.client.Get(ctx, r.prefix+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fail("get", err)
	}
	return b, nil
}

// ExistsAny reports whether any of the keys exists. The keys may live on
// different Cluster slots, so it pipelines one EXISTS per key: one round
// trip to a single node (one per node involved on a Cluster, concurrently).
func (r *Redis) ExistsAny(ctx context.Context, keys ...string) (bool, error) {
	if len(keys) == 0 {
		return false, nil
	}
	cmds := make([]*redis.IntCmd, len(keys))
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Exists(ctx, r.prefix+k)
		}
		return nil
	})
	if err != nil {
		return false, fail("exists", err)
	}
	for _, c := range cmds {
		if c.Val() > 0 {
			return true, nil
		}
	}
	return false, nil
}

// Set stores value at key with the given ttl.
func (r *Redis) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl < 0 {
		return errNegativeTTL
	}
	// go-redis sends PX for a ttl that is not whole seconds, so
	// sub-second ttls keep their precision.
	if err := r.client.Set(ctx, r.prefix+key, value, ttl).Err(); err != nil {
		return fail("set", err)
	}
	return nil
}

// SetNX stores value at key if the key does not exist, and reports whether it
// did so.
func (r *Redis) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if ttl < 0 {
		return false, errNegativeTTL
	}
	ok, err := r.client.SetNX(ctx, r.prefix+key, value, ttl).Result()
	if err != nil {
		return false, fail("setnx", err)
	}
	return ok, nil
}

// setNXBatch is how many SETs setNXAll pipelines in one round trip: enough
// to spread a round trip's cost, few enough to bound the memory of the
// commands and their replies.
const setNXBatch = 1000

// setNXAll is SetNXAll on Redis: SET NX, a batch at a time. Pipelined, so a
// Cluster client sends each key to its own node.
func (r *Redis) setNXAll(ctx context.Context, entries []Entry) (int, error) {
	stored := 0
	for len(entries) > 0 {
		batch := entries[:min(len(entries), setNXBatch)]
		entries = entries[len(batch):]
		cmds := make([]*redis.BoolCmd, len(batch))
		_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, e := range batch {
				cmds[i] = p.SetNX(ctx, r.prefix+e.Key, e.Value, e.TTL)
			}
			return nil
		})
		for _, c := range cmds {
			if c.Val() {
				stored++
			}
		}
		if err != nil {
			return stored, fail("setnx", err)
		}
	}
	return stored, nil
}

// Delete removes the keys.
func (r *Redis) Delete(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	// A cluster refuses a DEL whose keys hash to different slots, and
	// go-redis v9.23 sends it whole. One DEL per key, pipelined, reaches
	// each key's own node, still in one round trip per node.
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Del(ctx, r.prefix+k)
		}
		return nil
	})
	if err != nil {
		return fail("delete", err)
	}
	return nil
}

// Incr adds delta to the integer at key; see Store.Incr.
func (r *Redis) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if ttl < 0 {
		return 0, errNegativeTTL
	}
	ms := ttl.Milliseconds()
	if ttl > 0 && ms == 0 {
		ms = 1 // Redis counts in milliseconds; never round a ttl to "none"
	}
	n, err := r.incr.Run(ctx, r.client, []string{r.prefix + key}, delta, ms).Int64()
	if err != nil {
		return 0, fail("incr", err)
	}
	return n, nil
}

// Hold records member as holding key; see Store.Hold.
func (r *Redis) Hold(ctx context.Context, key, member string, ttl time.Duration) (int64, error) {
	if ttl <= 0 {
		return 0, errors.New("kv: hold: the ttl must be positive")
	}
	n, err := r.hold.Run(ctx, r.client, []string{r.prefix + key}, member, max(ttl.Milliseconds(), 1)).Int64()
	if err != nil {
		return 0, fail("hold", err)
	}
	return n, nil
}

// Release ends member's hold on key; see Store.Release.
func (r *Redis) Release(ctx context.Context, key, member string) error {
	if err := r.client.ZRem(ctx, r.prefix+key, member).Err(); err != nil {
		return fail("release", err)
	}
	return nil
}

// Publish sends msg to the subscribers of channel on every instance.
func (r *Redis) Publish(ctx context.Context, channel string, msg []byte) (int64, error) {
	n, err := r.client.SPublish(ctx, r.prefix+channel, msg).Result()
	if err != nil {
		return 0, fail("publish", err)
	}
	return n, nil
}

// Subscribe calls fn with the messages later published on channel by any
// instance; see Store.Subscribe. It uses sharded publish/subscribe (Redis 7):
// on a Cluster the channel lives on the node that owns its slot, and a
// message is handed to every subscriber's connection before Publish returns.
//
// A quiet subscription checks its connection with a PING every pingEvery.
// When that goes unanswered for another pingEvery, or the connection fails,
// fn gets EventDown; go-redis reconnects and subscribes again by itself, and
// fn gets EventUp once it has. Messages published in between are lost, as
// Redis publish/subscribe keeps nothing.
func (r *Redis) Subscribe(ctx context.Context, channel string, fn func(Event)) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	r.subs.Add(1)
	r.mu.Unlock()

	ps := r.client.SSubscribe(ctx, r.prefix+channel)
	// Wait for the server to confirm the subscription: only then is a
	// message published after we return sure to reach us.
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		r.subs.Done()
		return fail("subscribe", err)
	}
	// Closing the subscription is what ends a Receive that is waiting;
	// receive may replace it (resubscribe), so the current one is closed.
	var cur atomic.Pointer[redis.PubSub]
	cur.Store(ps)
	go func() {
		defer r.subs.Done()
		select {
		case <-r.done:
		case <-ctx.Done():
		}
		cur.Load().Close()
	}()
	r.subs.Add(1)
	go func() {
		defer r.subs.Done()
		r.receive(ctx, &cur, r.prefix+channel, fn)
	}()
	return nil
}

// resubscribe replaces the subscription to channel in cur by a new one, on
// the node that now serves its slot. The old one is closed.
func (r *Redis) resubscribe(ctx context.Context, cur *atomic.Pointer[redis.PubSub], channel string) {
	cur.Load().Close()
	if cc, ok := r.client.(*redis.ClusterClient); ok {
		cc.ReloadState(ctx) // which node has the slot now
	}
	cur.Store(r.client.SSubscribe(ctx, channel))
}

// pingEvery is how long a subscription stays quiet before it checks its
// connection, and how long it waits for the answer. It bounds how long a
// silently dead connection passes for a live one.
const pingEvery = time.Second

// receive reads the subscription in cur until ctx ends or r closes,
// turning what it reads into fn's events. The subscription is live only
// while the server confirms it: a server can end it (on a Redis Cluster,
// when its channel's slot moves to another node, in a failover or a
// resharding), and go-redis then neither subscribes again nor closes the
// connection, whose PINGs still answer. It is replaced then, and when a
// new one is refused (a node that no longer serves the slot answers MOVED).
func (r *Redis) receive(ctx context.Context, cur *atomic.Pointer[redis.PubSub], channel string, fn func(Event)) {
	live, pinged, subscribed := true, false, true
	var backoff time.Duration
	down := func() {
		if live {
			live = false
			fn(Event{Kind: EventDown})
		}
	}
	for {
		ps := cur.Load()
		msg, err := ps.ReceiveTimeout(ctx, pingEvery)
		if ctx.Err() != nil || r.isClosed() {
			ps.Close() // if resubscribe made it after the closer ran
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if pinged {
					down() // the last PING went unanswered
				}
				if ps.Ping(ctx) == nil {
					pinged = true
					continue
				}
			}
			if errors.Is(err, redis.ErrClosed) {
				return
			}
			down()
			var re redis.Error
			if errors.As(err, &re) && !subscribed {
				r.resubscribe(ctx, cur, channel) // refused where it was sent
			} else if !errors.As(err, &re) {
				subscribed = false // go-redis subscribes again on a new connection
			}
			// Not a busy loop while Redis is away: go-redis redials on
			// the next Receive.
			backoff = min(max(2*backoff, 50*time.Millisecond), 2*time.Second)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			case <-r.done:
				return
			}
			continue
		}
		backoff, pinged = 0, false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "sunsubscribe" || m.Kind == "unsubscribe" {
				// Ended by the server: nothing more will arrive on it.
				subscribed = false
				down()
				r.resubscribe(ctx, cur, channel)
				continue
			}
			// A confirmation after the first is go-redis subscribing
			// again on a new connection, or a new subscription.
			subscribed, live = true, true
			fn(Event{Kind: EventUp})
		case *redis.Message:
			if !live && subscribed {
				// Answers came back on the same connection after a
				// PING went unanswered; say so, as messages may
				// have been held up meanwhile.
				live = true
				fn(Event{Kind: EventUp})
			}
			fn(Event{Kind: EventMessage, Payload: []byte(m.Payload)})
		case *redis.Pong:
			if !live && subscribed {
				live = true
				fn(Event{Kind: EventUp})
			}
		}
	}
}

func (r *Redis) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// Ping reports whether Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fail("ping", err)
	}
	return nil
}

// Close ends every subscription, waits for them to stop, and closes the
// client.
func (r *Redis) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.done)
	r.mu.Unlock()
	r.subs.Wait()
	return r.client.Close()
}
