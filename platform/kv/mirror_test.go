package kv

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"gatehouse/platform/testenv"
)

func mustMirror(t *testing.T, s Store) *Mirror {
	t.Helper()
	m, err := NewMirror(t.Context(), s, "mirror", slog.New(slog.DiscardHandler), "deny:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func exists(t *testing.T, s Store, keys ...string) bool {
	t.Helper()
	ok, err := s.ExistsAny(t.Context(), keys...)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// runMirrorContract checks Mirror on top of a store: two instances, each
// with its own Mirror over a shared store, as two Gatehouse instances.
func runMirrorContract(t *testing.T, open opener) {
	ctx := t.Context()
	prefix := newPrefix()
	rawA, rawB := open(t, prefix), open(t, prefix)
	a, b := mustMirror(t, rawA), mustMirror(t, rawB)

	// The property the request path relies on: once a write through one
	// instance's Mirror has returned, the other instance's very next read
	// sees it, although that instance had a copy saying otherwise.
	for i := range 300 {
		key := "deny:sid:" + strconv.Itoa(i)
		if exists(t, a, key, "deny:jti:x") {
			t.Fatalf("%s exists before it was set", key)
		}
		if exists(t, a, key, "deny:jti:x") { // now from a's copies
			t.Fatalf("%s exists before it was set (from the copy)", key)
		}
		if err := b.Set(ctx, key, []byte{1}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if !exists(t, a, key, "deny:jti:x") {
			t.Fatalf("iteration %d: instance a does not see b's Set on its next read", i)
		}
	}

	if _, err := a.Get(ctx, "deny:v"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get deny:v: %v", err)
	}
	if _, err := b.Incr(ctx, "deny:v", 5, 0); err != nil {
		t.Fatal(err)
	}
	if v, err := a.Get(ctx, "deny:v"); err != nil || string(v) != "5" {
		t.Fatalf("after b's Incr a reads %q, %v; want 5", v, err)
	}
	if err := b.Delete(ctx, "deny:v"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(ctx, "deny:v"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after b's Delete a reads %v; want ErrNotFound", err)
	}
	if ok, err := b.SetNX(ctx, "deny:v", []byte("7"), 0); err != nil || !ok {
		t.Fatalf("SetNX: %v %v", ok, err)
	}
	if v, err := a.Get(ctx, "deny:v"); err != nil || string(v) != "7" {
		t.Fatalf("after b's SetNX a reads %q, %v; want 7", v, err)
	}

	// The writer's own next read sees its change too.
	if exists(t, a, "deny:own") {
		t.Fatal("deny:own exists before it was set")
	}
	if err := a.Set(ctx, "deny:own", []byte{1}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if !exists(t, a, "deny:own") {
		t.Fatal("a does not see its own Set")
	}

	// Copies are really used: a change made behind the Mirrors' backs,
	// straight in the store with no message, is not seen at once...
	if exists(t, a, "deny:quiet") {
		t.Fatal("deny:quiet exists before it was set")
	}
	if err := rawB.Set(ctx, "deny:quiet", []byte{1}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if exists(t, a, "deny:quiet") {
		t.Fatal("a read the store although it had a copy: nothing is cached")
	}
	// ...but by a read from the shared store, and by every instance once
	// another announces that it rewrote keys behind the copies' backs.
	if !exists(t, Shared(a), "deny:quiet") {
		t.Fatal("Shared(a) answered from a's copy")
	}
	if err := Rewritten(ctx, b); err != nil {
		t.Fatal(err)
	}
	if !exists(t, a, "deny:quiet") {
		t.Fatal("a still answers from its copy after b's Rewritten")
	}
	// Keys stored in bulk through one instance are seen by the other, though
	// it holds copies saying they are missing.
	if exists(t, a, "deny:bulk:1") || exists(t, a, "deny:bulk:2") {
		t.Fatal("deny:bulk exists before it was set")
	}
	bulk := []Entry{{Key: "deny:bulk:1", Value: []byte{1}, TTL: time.Minute}, {Key: "deny:bulk:2", Value: []byte{1}, TTL: time.Minute}}
	if n, err := SetNXAll(ctx, b, bulk); n != 2 || err != nil {
		t.Fatalf("SetNXAll = %d, %v", n, err)
	}
	if !exists(t, a, "deny:bulk:2") {
		t.Fatal("a does not see b's SetNXAll on its next read")
	}
	// ...while keys outside the prefixes are always read from the store.
	if _, err := a.Get(ctx, "other"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if err := rawB.Set(ctx, "other", []byte("x"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, err := a.Get(ctx, "other"); err != nil || string(v) != "x" {
		t.Fatalf("unmirrored key: %q, %v", v, err)
	}
}

func TestMirrorReadsThroughWhileDown(t *testing.T) {
	ctx := t.Context()
	store := NewMemory()
	defer store.Close()
	m := mustMirror(t, store)

	if exists(t, m, "deny:a") || exists(t, m, "deny:b") {
		t.Fatal("keys exist before they were set")
	}
	m.event(Event{Kind: EventDown})
	if m.Live() {
		t.Fatal("Live after EventDown")
	}
	// Changes whose messages are lost while down.
	store.Set(ctx, "deny:a", []byte{1}, 0)
	if !exists(t, m, "deny:a") {
		t.Fatal("while down, a copy was used")
	}
	store.Set(ctx, "deny:b", []byte{1}, 0)
	m.event(Event{Kind: EventUp})
	if !m.Live() {
		t.Fatal("not Live after EventUp")
	}
	if !exists(t, m, "deny:b") {
		t.Fatal("after a break, a copy from before it was used")
	}
}

// slowGet is a store whose Get can be held between reading and returning.
type slowGet struct {
	Store
	read, release chan struct{}
}

func (s *slowGet) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := s.Store.Get(ctx, key)
	if s.read != nil {
		s.read <- struct{}{}
		<-s.release
	}
	return v, err
}

func TestMirrorKeepsNoReadThatRacedAMessage(t *testing.T) {
	ctx := t.Context()
	mem := NewMemory()
	defer mem.Close()
	store := &slowGet{Store: mem, read: make(chan struct{}), release: make(chan struct{})}
	m := mustMirror(t, store)

	done := make(chan error)
	go func() {
		_, err := m.Get(ctx, "deny:r")
		done <- err
	}()
	<-store.read // the read found nothing...
	// ...and before it returns, another instance sets the key and its
	// message arrives.
	mem.Set(ctx, "deny:r", []byte{1}, 0)
	m.event(Event{Kind: EventMessage, Payload: []byte("peer\x00n1\x00deny:r")})
	close(store.release)
	if err := <-done; !errors.Is(err, ErrNotFound) {
		t.Fatalf("the raced read: %v", err)
	}
	store.read = nil
	if _, err := m.Get(ctx, "deny:r"); err != nil {
		t.Fatalf("the stale answer of a raced read was kept: %v", err)
	}
}

func TestMirrorMaxAgeAndBound(t *testing.T) {
	ctx := t.Context()
	store := NewMemory()
	defer store.Close()
	m := mustMirror(t, store)
	m.maxAge = 50 * time.Millisecond
	m.max = 3

	exists(t, m, "deny:old")
	store.Set(ctx, "deny:old", []byte{1}, 0) // no message
	time.Sleep(60 * time.Millisecond)
	if !exists(t, m, "deny:old") {
		t.Fatal("a copy was used past maxAge")
	}
	for i := range 10 {
		exists(t, m, "deny:"+strconv.Itoa(i))
	}
	m.mu.RLock()
	n := len(m.copies)
	m.mu.RUnlock()
	if n > 3 {
		t.Fatalf("%d copies kept; the bound is 3", n)
	}
}

// TestRedisMirrorSurvivesABrokenSubscription kills the subscription's
// connection inside Redis: the Mirror must notice, read through while it is
// down, use no copy from before the break, and subscribe again by itself.
func TestRedisMirrorSurvivesABrokenSubscription(t *testing.T) {
	url := testenv.Need(t, testenv.EnvRedis)
	ctx := t.Context()
	prefix := newPrefix()
	name := "mirrortest" + testenv.Random(6)
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	open := redisOpener(t, url)
	rawA := open(t, prefix)
	redisA, err := NewRedis(ctx, url+sep+"client_name="+name, prefix)
	if err != nil {
		t.Fatal(err)
	}
	defer redisA.Close()
	a, b := mustMirror(t, redisA), mustMirror(t, rawA)
	admin := rawA.(*Redis).Client()

	for round := range 3 {
		key := "deny:k" + strconv.Itoa(round)
		if exists(t, a, key) || exists(t, a, key) {
			t.Fatal("key exists before it was set")
		}
		gen := a.gen.Load()
		list, err := admin.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		killed := 0
		for _, line := range strings.Split(list, "\n") {
			if !strings.Contains(line, " name="+name+" ") {
				continue
			}
			id := strings.TrimPrefix(strings.Fields(line)[0], "id=")
			if err := admin.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err == nil {
				killed++
			}
		}
		if killed == 0 {
			t.Fatalf("no connection named %s in CLIENT LIST", name)
		}
		waitFor(t, func() bool { return a.gen.Load() != gen }, "the Mirror to notice the break")
		// b's message may be lost; a must not answer from its copy.
		if err := b.Set(ctx, key, []byte{1}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if !exists(t, a, key) {
			t.Fatalf("round %d: a copy from before the break was used", round)
		}
		waitFor(t, a.Live, "the subscription to come back")
		other := key + "b"
		if exists(t, a, other) || exists(t, a, other) {
			t.Fatal("key exists before it was set")
		}
		if err := b.Set(ctx, other, []byte{1}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if !exists(t, a, other) {
			t.Fatalf("round %d: after resubscribing, a misses b's change", round)
		}
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkMirrorHit is the revocation check of a request on the Redis
// stack once warm: two denylist keys answered from the copies.
func BenchmarkMirrorHit(b *testing.B) {
	url := os.Getenv(testenv.EnvRedis)
	if url == "" {
		b.Skipf("%s is not set", testenv.EnvRedis)
	}
	r, err := NewRedis(b.Context(), url, newPrefix())
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	m, err := NewMirror(b.Context(), r, "mirror", slog.New(slog.DiscardHandler), "deny:")
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	if found, err := m.ExistsAny(ctx, "deny:sid:s", "deny:jti:j"); err != nil || found {
		b.Fatal(found, err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if found, err := m.ExistsAny(ctx, "deny:sid:s", "deny:jti:j"); err != nil || found {
				b.Error(found, err)
				return
			}
		}
	})
}

// lostReply is a go-redis hook that, while on, lets each write (SET, the
// Incr script, a pipeline) run in Redis and then loses its reply, as a
// timeout or a connection cut after the write does. Other commands are
// left alone: the messages that announce a write (a lost publish reply
// leaves nothing to wait for), and a new connection's HELLO, whose failure
// would keep the write from being sent at all.
type lostReply struct{ on *atomic.Bool }

func (h lostReply) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h lostReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil || !h.on.Load() || !slices.Contains([]string{"set", "evalsha", "eval"}, cmd.Name()) {
			return err
		}
		return errors.New("i/o timeout (reply lost)")
	}
}
func (h lostReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if err := next(ctx, cmds); err != nil || !h.on.Load() {
			return err
		}
		for _, c := range cmds {
			if b, ok := c.(*redis.BoolCmd); ok {
				b.SetVal(false) // never read
			}
		}
		return errors.New("i/o timeout (replies lost)")
	}
}

// A write whose reply is lost may have been made: the writer still has
// every Mirror drop its copies, so no copy saying "missing" outlives a key
// that is there, on the writer or the other instance. (A later SET NX
// finds the key and would send nothing.)
func TestRedisMirrorLostReply(t *testing.T) {
	ctx := t.Context()
	open, prefix := redisOpener(t, testenv.Need(t, testenv.EnvRedis)), newPrefix()
	ra, rb := open(t, prefix).(*Redis), open(t, prefix).(*Redis)
	a, b := mustMirror(t, ra), mustMirror(t, rb)
	var lose atomic.Bool
	rb.Client().AddHook(lostReply{&lose})
	keys := []string{"deny:sid:q", "deny:jti:j", "deny:n"}
	for _, k := range keys {
		if exists(t, a, k) || exists(t, a, k) || exists(t, b, k) {
			t.Fatalf("%s exists before it was set", k)
		}
	}
	lose.Store(true)
	if _, err := SetNXAll(ctx, b, []Entry{{Key: "deny:sid:q", Value: []byte{1}, TTL: time.Minute}}); err == nil {
		t.Fatal("SetNXAll: no error with its replies lost")
	}
	lose.Store(false)
	for _, k := range keys[1:] { // copied again, after SetNXAll's message
		if exists(t, a, k) || exists(t, b, k) {
			t.Fatalf("%s exists before it was set", k)
		}
	}
	lose.Store(true)
	if err := b.Set(ctx, "deny:jti:j", []byte{1}, time.Minute); err == nil {
		t.Fatal("Set: no error with its reply lost")
	}
	if _, err := b.Incr(ctx, "deny:n", 1, time.Minute); err == nil {
		t.Fatal("Incr: no error with its reply lost")
	}
	lose.Store(false)
	for _, k := range keys {
		if !exists(t, Shared(a), k) {
			t.Fatalf("%s is not in Redis: the hook did not let the write through", k)
		}
		if !exists(t, a, k) || !exists(t, b, k) {
			t.Errorf("%s is in Redis, but a answers %v and the writer b %v", k, exists(t, a, k), exists(t, b, k))
		}
	}
}

// downAtOnce reports the mirror channel's subscription broken as soon as
// it is made, before NewMirror returns.
type downAtOnce struct{ Store }

func (s downAtOnce) Subscribe(ctx context.Context, channel string, fn func(Event)) error {
	if err := s.Store.Subscribe(ctx, channel, fn); err != nil {
		return err
	}
	if channel == "mirror" {
		fn(Event{Kind: EventDown})
	}
	return nil
}

// An EventDown that comes while NewMirror subscribes stands: the Mirror is
// not live, and reads go to the store, until an EventUp.
func TestMirrorDownWhileSubscribing(t *testing.T) {
	mem := NewMemory()
	defer mem.Close()
	m := mustMirror(t, downAtOnce{mem})
	if m.Live() {
		t.Fatal("Live after an EventDown during NewMirror")
	}
	m.event(Event{Kind: EventUp})
	if !m.Live() {
		t.Fatal("not Live after EventUp")
	}
	m.Close()
	m.event(Event{Kind: EventUp}) // racing Close
	if m.Live() {
		t.Fatal("Live after Close")
	}
}

// privateCluster starts a Redis Cluster of one node, holding every slot,
// for a test that moves slots (which the shared cluster's other users
// would feel), and returns its URL. It needs the cluster the services
// give (TEST_REDIS_CLUSTER_URL), which says redis-server is here.
func privateCluster(t *testing.T) string {
	testenv.Need(t, testenv.EnvRedisCluster)
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("%s is set, but redis-server is not on PATH: %v", testenv.EnvRedisCluster, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	dir := t.TempDir()
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--cluster-enabled", "yes",
		"--cluster-config-file", dir+"/nodes.conf", "--dir", dir, "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	node := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port})
	defer node.Close()
	ctx := t.Context()
	waitFor(t, func() bool { return node.Ping(ctx).Err() == nil }, "the node to answer")
	if err := node.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		info, err := node.ClusterInfo(ctx).Result()
		return err == nil && strings.Contains(info, "cluster_state:ok")
	}, "cluster_state:ok")
	return "127.0.0.1:" + port + ",127.0.0.1:" + port
}

// On a Redis Cluster a server ends a shard channel's subscriptions when the
// channel's slot leaves it (a failover, a resharding; here the slot is
// deleted and added back). go-redis neither subscribes again nor drops the
// connection, whose PINGs still answer: the Mirror must not go on trusting
// copies that no message will correct. It subscribes again, and a change
// made through one instance is seen by the other's next read.
func TestRedisMirrorSlotMoved(t *testing.T) {
	ctx := t.Context()
	open, prefix := redisOpener(t, privateCluster(t)), newPrefix()
	ra, rb := open(t, prefix).(*Redis), open(t, prefix).(*Redis)
	a, b := mustMirror(t, ra), mustMirror(t, rb)
	admin := ra.Client()
	for round := range 2 {
		gen := a.gen.Load()
		slot := admin.ClusterKeySlot(ctx, prefix+"mirror").Val()
		if err := admin.Do(ctx, "CLUSTER", "DELSLOTS", slot).Err(); err != nil {
			t.Fatal(err)
		}
		if err := admin.Do(ctx, "CLUSTER", "ADDSLOTS", slot).Err(); err != nil {
			t.Fatal(err)
		}
		// Down, then up again on a new subscription.
		waitFor(t, func() bool { g := a.gen.Load(); return g != gen && g != 0 }, "a to subscribe again")
		waitFor(t, func() bool { g := b.gen.Load(); return g != 0 }, "b to subscribe again")
		key := "deny:x" + strconv.Itoa(round)
		if exists(t, a, key) || exists(t, a, key) { // the second from a's copy
			t.Fatalf("%s exists before it was set", key)
		}
		if err := b.Set(ctx, key, []byte{1}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if !exists(t, a, key) {
			t.Fatalf("round %d: a still answers from its copy after b's Set returned", round)
		}
	}
}
