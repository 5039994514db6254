package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"gatehouse/platform/testenv"
)

// opener returns a store whose keys and channels carry prefix. Two calls with
// the same prefix return stores that share data and messages, as two
// instances of a deployment do. The store is closed when t ends.
type opener func(t *testing.T, prefix string) Store

func TestMemory(t *testing.T) {
	t.Parallel()
	// A Memory shares nothing with another Memory, so "two instances with
	// the same prefix" can only be the same Memory; a different prefix
	// gets a different one.
	var mu sync.Mutex
	stores := make(map[string]*Memory)
	runContract(t, func(t *testing.T, prefix string) Store {
		mu.Lock()
		defer mu.Unlock()
		m, ok := stores[prefix]
		if !ok {
			m = NewMemory()
			stores[prefix] = m
			t.Cleanup(func() { m.Close() })
		}
		return m
	})
}

func TestRedis(t *testing.T) {
	url := testenv.Need(t, testenv.EnvRedis)
	t.Parallel()
	open := redisOpener(t, url)
	if _, ok := open(t, newPrefix()).(*Redis).Client().(*redis.Client); !ok {
		t.Fatalf("%s: want a single-node client", testenv.EnvRedis)
	}
	runContract(t, open)
}

// TestRedisEvictionPolicy reads the server's eviction settings: safe
// without a maxmemory or with noeviction, named otherwise. It changes the
// test server's settings for a moment (maxmemory 1 GB, far above what the
// tests use) and puts them back.
func TestRedisEvictionPolicy(t *testing.T) {
	url := testenv.Need(t, testenv.EnvRedis)
	s := redisOpener(t, url)(t, newPrefix()).(*Redis)
	ctx := context.Background()
	old, err := s.Client().ConfigGet(ctx, "maxmemory*").Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Client().ConfigSet(ctx, "maxmemory-policy", old["maxmemory-policy"])
		s.Client().ConfigSet(ctx, "maxmemory", old["maxmemory"])
	})
	for _, c := range []struct{ maxmemory, policy, want string }{
		{"0", "volatile-lru", ""}, {"1gb", "noeviction", ""}, {"1gb", "volatile-ttl", "volatile-ttl"}, {"1gb", "allkeys-lru", "allkeys-lru"},
	} {
		if err := s.Client().ConfigSet(ctx, "maxmemory", c.maxmemory).Err(); err != nil {
			t.Fatal(err)
		}
		if err := s.Client().ConfigSet(ctx, "maxmemory-policy", c.policy).Err(); err != nil {
			t.Fatal(err)
		}
		if got, err := s.EvictionPolicy(ctx); err != nil || got != c.want {
			t.Errorf("maxmemory %s, %s: %q %v, want %q", c.maxmemory, c.policy, got, err, c.want)
		}
	}
}

func TestRedisCluster(t *testing.T) {
	url := testenv.Need(t, testenv.EnvRedisCluster)
	t.Parallel()
	open := redisOpener(t, url)
	if _, ok := open(t, newPrefix()).(*Redis).Client().(*redis.ClusterClient); !ok {
		t.Fatalf("%s: want a cluster client", testenv.EnvRedisCluster)
	}
	runContract(t, open)
}

// redisOpener opens Redis stores on url and, when each test ends, deletes
// the keys under its prefix.
func redisOpener(t *testing.T, url string) opener {
	admin, _, _, err := newClient(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	return func(t *testing.T, prefix string) Store {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := NewRedis(ctx, url, prefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		// Registered last, so it runs first, while s is still open.
		t.Cleanup(func() { testenv.DeleteKeys(t, admin, prefix) })
		return s
	}
}

func newPrefix() string {
	return "test:" + testenv.Random(6) + ":"
}

// runContract runs the cases every Store must pass. Each case has its own
// prefix, so they run in parallel, and the waits for expiry overlap.
func runContract(t *testing.T, open opener) {
	ctx := t.Context()

	t.Run("GetMissing", func(t *testing.T) {
		t.Parallel()
		s := open(t, newPrefix())
		if _, err := s.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get missing: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("SetGetBinary", func(t *testing.T) {
		t.Parallel()
		s := open(t, newPrefix())
		val := []byte{0, 1, 0xff, '\n', 0x80, 'a', 0}
		if err := s.Set(ctx, "bin", val, 0); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "bin")
		if err != nil || !bytes.Equal(got, val) {
			t.Fatalf("Get = %q, %v; want %q", got, err, val)
		}
		got[0] = 'X' // must not reach the stored value
		if got, _ := s.Get(ctx, "bin"); !bytes.Equal(got, val) {
			t.Fatalf("after changing the returned slice, Get = %q; want %q", got, val)
		}
		if err := s.Set(ctx, "bin", []byte("second"), 0); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Get(ctx, "bin"); string(got) != "second" {
			t.Fatalf("after overwrite, Get = %q; want %q", got, "second")
		}
		if err := s.Set(ctx, "neg", val, -time.Second); err == nil {
			t.Fatal("Set with negative ttl: err = nil, want an error")
		}
	})

	t.Run("Expiry", func(t *testing.T) {
		t.Parallel()
		s := open(t, newPrefix())
		const ttl = 500 * time.Millisecond
		start := time.Now()
		mustSet(t, s, "short", "v", ttl)
		mustSet(t, s, "renewed", "v", ttl)
		mustSet(t, s, "renewed", "v", 0) // Set replaces the expiry too
		if ok, err := s.SetNX(ctx, "nx", []byte("v"), ttl); !ok || err != nil {
			t.Fatalf("SetNX = %v, %v; want true", ok, err)
		}
		if got, err := s.Get(ctx, "short"); err != nil || string(got) != "v" {
			t.Fatalf("before expiry, Get = %q, %v; want %q", got, err, "v")
		}
		time.Sleep(time.Until(start.Add(ttl + 250*time.Millisecond)))
		if _, err := s.Get(ctx, "short"); !errors.Is(err, ErrNotFound) {
			t.Errorf("after expiry, Get: err = %v, want ErrNotFound", err)
		}
		if got, err := s.Get(ctx, "renewed"); err != nil || string(got) != "v" {
			t.Errorf("key re-set without ttl: Get = %q, %v; want %q", got, err, "v")
		}
		if ok, err := s.SetNX(ctx, "nx", []byte("w"), 0); !ok || err != nil {
			t.Errorf("SetNX on expired key = %v, %v; want true", ok, err)
		}
	})

	t.Run("SetNX", func(t *testing.T) {
		t.Parallel()
		s := open(t, newPrefix())
		if ok, err := s.SetNX(ctx, "k", []byte("first"), 0); !ok || err != nil {
			t.Fatalf("first SetNX = %v, %v; want true", ok, err)
		}
		if ok, err := s.SetNX(ctx, "k", []byte("second"), 0); ok || err != nil {
			t.Fatalf("second SetNX = %v, %v; want false", ok, err)
		}
		if got, _ := s.Get(ctx, "k"); string(got) != "first" {
			t.Fatalf("Get = %q; want %q", got, "first")
		}
	})

	t.Run("SetNXAll", func(t *testing.T) {
		t.Parallel()
		s := open(t, newPrefix())
		if err := s.Set(ctx, "kept", []byte("old"), 0); err != nil {
			t.Fatal(err)
		}
		// More than one of Redis's batches, with the kept key in the last.
		entries := make([]Entry, 0, 2502)
		for i := range 2500 {
			entries = append(entries, Entry{Key: "bulk:" + strconv.Itoa(i), Value: []byte(strconv.Itoa(i)), TTL: time.Minute})
		}
		entries = append(entries, Entry{Key: "short", Value: []byte{1}, TTL: 100 * time.Millisecond}, Entry{Key: "kept", Value: []byte("new")})
		if n, err := SetNXAll(ctx, s, entries); n != 2501 || err != nil {
			t.Fatalf("SetNXAll = %d, %v; want 2501 stored", n, err)
		}
		for _, i := range []int{0, 999, 1000, 2499} {
			if got, err := s.Get(ctx, "bulk:"+strconv.Itoa(i)); err != nil || string(got) != strconv.Itoa(i) {
				t.Fatalf("bulk:%d = %q, %v", i, got, err)
			}
		}
		if got, _ := s.Get(ctx, "kept"); string(got) != "old" {
			t.Fatalf("kept = %q; want the value it had", got)
		}
		if n, err := SetNXAll(ctx, s, entries[:10]); n != 0 || err != nil {
			t.Fatalf("SetNXAll of existing keys = %d, %v; want 0", n, err)
		}
		time.Sleep(300 * time.Millisecond)
		if _, err := s.Get(ctx, "short"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("short after its ttl: %v; want ErrNotFound", err)
		}
		bad := []Entry{{Key: "first", TTL: time.Minute}, {Key: "negative", TTL: -time.Second}}
		if _, err := SetNXAll(ctx, s, bad); !errors.Is(err, errNegativeTTL) {
			t.Fatalf("negative ttl: %v", err)
		}
		if exists(t, s, "first") {
			t.Fatal("an entry was stored from a call that was refused")
		}
	})

	t.Run("Delete", func(t *testing.T) {
		t.Parallel()
		s := open(t, newPrefix())
		for _, k := range []string{"a", "b", "c"} {
			mustSet(t, s, k, k, 0)
		}
		// On a cluster, a, b and c hash to different slots.
		if err := s.Delete(ctx, "a", "b", "never-set"); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"a", "b"} {
			if _, err := s.Get(ctx, k); !errors.Is(err, ErrNotFound) {
				t.Errorf("deleted %q: Get err = %v, want ErrNotFound", k, err)
			}
		}
		if got, _ := s.Get(ctx, "c"); string(got) != "c" {
			t.Errorf("untouched key: Get = %q; want %q", got, "c")
		}
		if err := s.Delete(ctx); err != nil {
			t.Errorf("Delete of no keys: %v", err)
		}
	})

	t.Run("ExistsAny", func(t *testing.T) {
		t.Parallel()
		s := open(t, newPrefix())
		mustSet(t, s, "present", "x", 0)
		mustSet(t, s, "brief", "x", 500*time.Millisecond)
		for _, c := range []struct {
			keys []string
			want bool
		}{
			{nil, false},
			{[]string{"absent"}, false},
			{[]string{"absent", "other-absent"}, false},
			// On a cluster these hash to different slots: still one answer.
			{[]string{"absent", "present"}, true},
			{[]string{"present", "absent"}, true},
			{[]string{"brief"}, true},
		} {
			if got, err := s.ExistsAny(ctx, c.keys...); got != c.want || err != nil {
				t.Errorf("ExistsAny(%q) = %v, %v; want %v", c.keys, got, err, c.want)
			}
		}
		time.Sleep(750 * time.Millisecond)
		if got, err := s.ExistsAny(ctx, "brief", "absent"); got || err != nil {
			t.Errorf("after expiry: %v, %v; want false", got, err)
		}
	})

	t.Run("Incr", func(t *testing.T) {
		t.Parallel()
		s := open(t, newPrefix())
		if n, err := s.Incr(ctx, "n", 5, 0); n != 5 || err != nil {
			t.Fatalf("Incr on absent key = %d, %v; want 5", n, err)
		}
		if n, err := s.Incr(ctx, "n", -2, 0); n != 3 || err != nil {
			t.Fatalf("second Incr = %d, %v; want 3", n, err)
		}
		if got, _ := s.Get(ctx, "n"); string(got) != "3" {
			t.Fatalf("Get counter = %q; want %q", got, "3")
		}
		mustSet(t, s, "text", "abc", 0)
		if _, err := s.Incr(ctx, "text", 1, 0); err == nil {
			t.Fatal("Incr on a non-integer: err = nil, want an error")
		}
	})

	t.Run("IncrFixedWindow", func(t *testing.T) {
		t.Parallel()
		s := open(t, newPrefix())
		const ttl = 600 * time.Millisecond
		start := time.Now()
		if n, err := s.Incr(ctx, "w", 1, ttl); n != 1 || err != nil {
			t.Fatalf("Incr = %d, %v; want 1", n, err)
		}
		// A key made by Set without a ttl: Incr did not create it, so
		// must not give it one.
		mustSet(t, s, "plain", "7", 0)
		if n, err := s.Incr(ctx, "plain", 1, ttl); n != 8 || err != nil {
			t.Fatalf("Incr on set key = %d, %v; want 8", n, err)
		}
		time.Sleep(time.Until(start.Add(ttl / 2)))
		if n, err := s.Incr(ctx, "w", 1, ttl); n != 2 || err != nil {
			t.Fatalf("Incr inside the window = %d, %v; want 2", n, err)
		}
		// Had the second Incr extended the ttl, the key would live
		// until 1.5 ttl.
		time.Sleep(time.Until(start.Add(ttl + 250*time.Millisecond)))
		if got, err := s.Get(ctx, "w"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("after the window, Get = %q, %v; want ErrNotFound", got, err)
		}
		if n, err := s.Incr(ctx, "w", 1, ttl); n != 1 || err != nil {
			t.Fatalf("Incr in a new window = %d, %v; want 1", n, err)
		}
		if got, err := s.Get(ctx, "plain"); string(got) != "8" {
			t.Fatalf("set key after the window: Get = %q, %v; want %q", got, err, "8")
		}
	})

	t.Run("IncrConcurrent", func(t *testing.T) {
		t.Parallel()
		s := open(t, newPrefix())
		const workers, each = 50, 10
		results := make(chan int64, workers*each)
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range each {
					n, err := s.Incr(ctx, "c", 1, time.Minute)
					if err != nil {
						t.Error(err)
						return
					}
					results <- n
				}
			})
		}
		wg.Wait()
		close(results)
		// Atomic increments hand out every value from 1 to 500 once.
		seen := make(map[int64]bool)
		for n := range results {
			if seen[n] || n < 1 || n > workers*each {
				t.Fatalf("Incr returned %d twice or out of range", n)
			}
			seen[n] = true
		}
		if len(seen) != workers*each {
			t.Fatalf("got %d distinct results, want %d", len(seen), workers*each)
		}
		if got, _ := s.Get(ctx, "c"); string(got) != strconv.Itoa(workers*each) {
			t.Fatalf("Get counter = %q; want %d", got, workers*each)
		}
	})

	t.Run("Hold", func(t *testing.T) {
		t.Parallel()
		s := open(t, newPrefix())
		hold := func(member string, ttl time.Duration, want int64) {
			t.Helper()
			if n, err := s.Hold(ctx, "h", member, ttl); n != want || err != nil {
				t.Fatalf("Hold(%s) = %d, %v; want %d", member, n, err, want)
			}
		}
		hold("a", time.Minute, 1)
		hold("b", time.Minute, 2)
		hold("a", time.Minute, 2) // held already: held longer, counted once
		if err := s.Release(ctx, "h", "a"); err != nil {
			t.Fatal(err)
		}
		for _, k := range [][2]string{{"h", "a"}, {"h", "nobody"}, {"absent", "a"}} {
			if err := s.Release(ctx, k[0], k[1]); err != nil {
				t.Fatalf("Release(%s, %s) of no hold: %v", k[0], k[1], err)
			}
		}
		hold("c", time.Minute, 2)
		// A hold ends by itself after its ttl, and only its own.
		hold("short", 300*time.Millisecond, 3)
		time.Sleep(500 * time.Millisecond)
		hold("d", time.Minute, 3)
		if _, err := s.Hold(ctx, "h", "e", 0); err == nil {
			t.Fatal("Hold with no ttl: err = nil, want an error")
		}
		// A key lasts as long as its last hold, no longer.
		if err := s.Release(ctx, "h2", "x"); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Hold(ctx, "h2", "x", 300*time.Millisecond); n != 1 || err != nil {
			t.Fatalf("Hold on a new key = %d, %v; want 1", n, err)
		}
		time.Sleep(500 * time.Millisecond)
		if ok, err := s.ExistsAny(ctx, "h2"); ok || err != nil {
			t.Fatalf("a key whose holds all ended: exists %v, %v; want gone", ok, err)
		}
		// A plain key is not touched by a Release.
		mustSet(t, s, "plain", "v", 0)
		if err := s.Release(ctx, "plain", "x"); err != nil && !strings.Contains(err.Error(), "WRONGTYPE") {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, "plain"); string(got) != "v" || err != nil {
			t.Fatalf("plain key after Release = %q, %v; want v", got, err)
		}
	})

	t.Run("HoldConcurrent", func(t *testing.T) {
		t.Parallel()
		s := open(t, newPrefix())
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				if _, err := s.Hold(ctx, "c", strconv.Itoa(i), time.Minute); err != nil {
					t.Error(err)
				}
				if i%4 == 0 {
					if err := s.Release(ctx, "c", strconv.Itoa(i)); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		if n, err := s.Hold(ctx, "c", "last", time.Minute); n != 31 || err != nil {
			t.Fatalf("after 40 holds, 10 released, one more: %d, %v; want 31", n, err)
		}
	})

	t.Run("PublishSubscribe", func(t *testing.T) {
		t.Parallel()
		prefix := newPrefix()
		a, b, c := open(t, prefix), open(t, prefix), open(t, prefix)
		chA := mustSubscribe(t, a, "inv")
		chB := mustSubscribe(t, b, "inv")
		msg := []byte{'u', 0, 0xfe, 'x'}
		if n, err := c.Publish(ctx, "inv", msg); err != nil || n != 2 {
			t.Fatalf("Publish = %d, %v; want 2 subscribers", n, err)
		}
		for name, ch := range map[string]<-chan []byte{"a": chA, "b": chB} {
			if got := receive(t, ch); !bytes.Equal(got, msg) {
				t.Errorf("subscriber %s got %q; want %q", name, got, msg)
			}
		}
	})

	t.Run("SubscribeEndsWithContext", func(t *testing.T) {
		t.Parallel()
		s := open(t, newPrefix())
		sctx, cancel := context.WithCancel(ctx)
		ch := make(chan []byte, 10)
		if err := s.Subscribe(sctx, "x", messagesTo(ch)); err != nil {
			t.Fatal(err)
		}
		cancel()
		time.Sleep(200 * time.Millisecond) // Redis unsubscribes asynchronously
		if _, err := s.Publish(ctx, "x", []byte("late")); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-ch:
			t.Fatalf("got %q after the subscription's context ended", m)
		case <-time.After(300 * time.Millisecond):
		}
		// The store itself goes on working.
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping after a subscription ended: %v", err)
		}
	})

	t.Run("Close", func(t *testing.T) {
		t.Parallel()
		s := open(t, newPrefix())
		mustSubscribe(t, s, "x")
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "k"); !errors.Is(err, ErrClosed) {
			t.Errorf("Get after Close: err = %v, want ErrClosed", err)
		}
		if err := s.Subscribe(ctx, "x", func(Event) {}); !errors.Is(err, ErrClosed) {
			t.Errorf("Subscribe after Close: err = %v, want ErrClosed", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})

	t.Run("PrefixIsolation", func(t *testing.T) {
		t.Parallel()
		one, two := open(t, newPrefix()), open(t, newPrefix())
		mustSet(t, one, "k", "one", 0)
		if _, err := two.Get(ctx, "k"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("other prefix sees the key: err = %v, want ErrNotFound", err)
		}
		mustSet(t, two, "k", "two", 0)
		if got, _ := one.Get(ctx, "k"); string(got) != "one" {
			t.Fatalf("Get = %q; want %q", got, "one")
		}
		ch := mustSubscribe(t, one, "ch")
		if _, err := two.Publish(ctx, "ch", []byte("wrong")); err != nil {
			t.Fatal(err)
		}
		if _, err := one.Publish(ctx, "ch", []byte("right")); err != nil {
			t.Fatal(err)
		}
		if got := receive(t, ch); string(got) != "right" {
			t.Fatalf("got %q from another prefix's channel; want %q", got, "right")
		}
	})

	t.Run("SubscribeDeliversEveryMessageInOrder", func(t *testing.T) {
		t.Parallel()
		s := open(t, newPrefix())
		const n = 1000
		ch := make(chan []byte, n)
		if err := s.Subscribe(ctx, "flood", messagesTo(ch)); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if _, err := s.Publish(ctx, "flood", []byte(strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		for i := range n {
			if got := receive(t, ch); string(got) != strconv.Itoa(i) {
				t.Fatalf("message %d is %q", i, got)
			}
		}
	})

	t.Run("Mirror", func(t *testing.T) {
		t.Parallel()
		runMirrorContract(t, open)
	})

	t.Run("Ping", func(t *testing.T) {
		t.Parallel()
		if err := open(t, newPrefix()).Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func mustSet(t *testing.T, s Store, key, value string, ttl time.Duration) {
	t.Helper()
	if err := s.Set(t.Context(), key, []byte(value), ttl); err != nil {
		t.Fatalf("Set %q: %v", key, err)
	}
}

// messagesTo returns a subscriber that sends each message to ch; it fails
// loudly rather than block when ch is full.
func messagesTo(ch chan []byte) func(Event) {
	return func(e Event) {
		if e.Kind != EventMessage {
			return
		}
		select {
		case ch <- e.Payload:
		default:
			panic("test subscriber's buffer is full")
		}
	}
}

func mustSubscribe(t *testing.T, s Store, channel string) <-chan []byte {
	t.Helper()
	ch := make(chan []byte, 1024)
	if err := s.Subscribe(t.Context(), channel, messagesTo(ch)); err != nil {
		t.Fatalf("Subscribe %q: %v", channel, err)
	}
	return ch
}

func receive(t *testing.T, ch <-chan []byte) []byte {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
	}
	return nil
}

func TestOpenEmptyURLIsMemory(t *testing.T) {
	s, err := Open(t.Context(), "", "p:")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(*Memory); !ok {
		t.Fatalf("Open(\"\") = %T; want *Memory", s)
	}
}

func TestNewClientCluster(t *testing.T) {
	c, where, _, err := newClient("redis://:pw@127.0.0.1:7001, redis://127.0.0.1:7002,127.0.0.1:7003")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("client = %T; want *redis.ClusterClient", c)
	}
	opt := cc.Options()
	want := []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"}
	if fmt.Sprint(opt.Addrs) != fmt.Sprint(want) {
		t.Errorf("Addrs = %v; want %v", opt.Addrs, want)
	}
	if opt.Password != "pw" {
		t.Errorf("Password = %q; want the first URL's %q", opt.Password, "pw")
	}
	if where != "redis cluster 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003" {
		t.Errorf("where = %q", where)
	}

	c, _, _, err = newClient("rediss://u:p@a.example:7001,b.example")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	opt = c.(*redis.ClusterClient).Options()
	if opt.TLSConfig == nil || opt.Username != "u" {
		t.Errorf("rediss cluster: TLSConfig = %v, Username = %q; want TLS and %q", opt.TLSConfig, opt.Username, "u")
	}
	if fmt.Sprint(opt.Addrs) != "[a.example:7001 b.example:6379]" {
		t.Errorf("Addrs = %v; want the default port for the bare host", opt.Addrs)
	}
	// Replicas: their subscribers are not counted by a primary's SPUBLISH,
	// and they may be behind.
	for _, q := range []string{"read_only=true", "route_by_latency=true", "route_randomly=true"} {
		if _, _, _, err := newClient("redis://127.0.0.1:7001?" + q + ",127.0.0.1:7002"); err == nil || !strings.Contains(err.Error(), "not supported") {
			t.Errorf("%s: %v, want it refused", q, err)
		}
	}
}

func TestNewClientSingle(t *testing.T) {
	for raw, want := range map[string]string{
		"redis://:pw@localhost:6380/3": "localhost:6380 db 3",
		"localhost:6381":               "localhost:6381 db 0",
	} {
		c, _, _, err := newClient(raw)
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		rc, ok := c.(*redis.Client)
		if !ok {
			t.Fatalf("%s: client = %T; want *redis.Client", raw, c)
		}
		if got := fmt.Sprintf("%s db %d", rc.Options().Addr, rc.Options().DB); got != want {
			t.Errorf("%s: got %s; want %s", raw, got, want)
		}
		c.Close()
	}
}

func TestNewRedisErrorsHidePassword(t *testing.T) {
	t.Parallel()
	const secret = "hunter2"
	for _, raw := range []string{
		"redis://u:" + secret + "@127.0.0.1:notaport",           // url.Parse fails
		"redis://u:" + secret + "#x@127.0.0.1:6379",             // unescaped '#' cuts the URL
		"redis://u:" + secret + "@127.0.0.1:6379/notadb",        // go-redis rejects the path
		"redis://u:" + secret + "@127.0.0.1:6379?bogus=1",       // go-redis rejects the option
		"redis://u:" + secret + "@127.0.0.1:7001/2,127.0.0.1:2", // cluster with a database
		"redis://u:" + secret + "@127.0.0.1:1",                  // nothing listens: ping fails
		"redis://u:" + secret + "@127.0.0.1:1,127.0.0.1:2",      // cluster ping fails
		"ftp://u:" + secret + "@127.0.0.1:1",                    // wrong scheme
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		s, err := NewRedis(ctx, raw, "p:")
		cancel()
		if err == nil {
			s.Close()
			t.Errorf("NewRedis(%q): err = nil, want an error", raw)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, secret) || strings.ContainsAny(msg, "\r\n") {
			t.Errorf("NewRedis error shows the password or spans lines: %q", msg)
		}
		t.Logf("%s", msg)
	}
}

func TestMemorySweepsIdleKeys(t *testing.T) {
	m := newMemory(10 * time.Millisecond)
	defer m.Close()
	mustSet(t, m, "gone", "v", 20*time.Millisecond)
	mustSet(t, m, "kept", "v", 0)
	deadline := time.Now().Add(2 * time.Second)
	for {
		m.mu.Lock()
		n := len(m.items)
		m.mu.Unlock()
		if n == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys held after expiry with nobody reading; want 1", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cutProxy forwards TCP to target, except that the first command holding
// marker reaches Redis and its reply is lost: the connection is cut.
func cutProxy(t *testing.T, target, marker string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var cut atomic.Bool
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			var lost atomic.Bool
			go func() { // replies
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 && !lost.Load() {
						c.Write(buf[:n])
					}
					if err != nil {
						return
					}
				}
			}()
			go func() { // commands
				defer s.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						lose := !cut.Load() && bytes.Contains(bytes.ToLower(buf[:n]), []byte(marker))
						lost.Store(lose)
						s.Write(buf[:n])
						if lose {
							cut.Store(true)
							time.Sleep(100 * time.Millisecond) // Redis has run it
							c.Close()
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// A reply lost after Redis ran the command is an error, not a second run
// (review: go-redis retried it, so an Incr added its delta twice, and a
// failed sign-in counted as two).
func TestRedisLostReplyIsNotRunAgain(t *testing.T) {
	url := testenv.Need(t, testenv.EnvRedis)
	target := strings.SplitN(strings.TrimPrefix(url, "redis://"), "/", 2)[0]
	prefix := newPrefix()
	admin, _, _, err := newClient(url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	defer testenv.DeleteKeys(t, admin, prefix)
	ctx := context.Background()
	s, err := NewRedis(ctx, "redis://"+cutProxy(t, target, "evalsha")+"/0", prefix)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Client().ScriptLoad(ctx, incrSource).Err(); err != nil {
		t.Fatal(err)
	}
	n, err := s.Incr(ctx, "fail:x", 1, time.Minute)
	if stored, _ := admin.Get(ctx, prefix+"fail:x").Result(); stored != "1" || (err == nil && n != 1) {
		t.Errorf("one Incr by 1 whose reply was lost: returned %d, %v; stored %q, want 1", n, err, stored)
	}
	if n, err := s.Incr(ctx, "fail:x", 1, time.Minute); n != 2 || err != nil {
		t.Errorf("the next Incr: %d, %v; want 2", n, err)
	}
}
