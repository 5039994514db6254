package ratelimit

import (
	"cmp"
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"gatehouse/platform/testenv"
)

var benchPolicies = []Policy{
	{Name: "bench-tb", Algorithm: TokenBucket, Limit: 1000, Period: time.Second},
	{Name: "bench-sw", Algorithm: SlidingWindow, Limit: 100, Period: time.Second},
}

func benchKeys() []string {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	return keys
}

// BenchmarkMemory decides requests for 1024 keys on the real clock: mostly
// allowed for the token bucket, mostly denied (a full window) for the
// sliding window.
func BenchmarkMemory(b *testing.B) {
	keys := benchKeys()
	ctx := context.Background()
	for _, p := range benchPolicies {
		b.Run(string(p.Algorithm), func(b *testing.B) {
			m := NewMemory(nil)
			defer m.Close()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := m.Allow(ctx, p, keys[i%len(keys)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(string(p.Algorithm)+"/parallel", func(b *testing.B) {
			m := NewMemory(nil)
			defer m.Close()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := int(time.Now().UnixNano())
				for pb.Next() {
					if _, err := m.Allow(ctx, p, keys[i%len(keys)]); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
		})
	}
}

// BenchmarkRedis decides requests on the server at TEST_REDIS_URL, counting
// the commands the client sends to show each decision is one round trip.
func BenchmarkRedis(b *testing.B) {
	url := os.Getenv(testenv.EnvRedis)
	if url == "" {
		b.Skipf("%s is not set", testenv.EnvRedis)
	}
	keys := benchKeys()
	ctx := context.Background()
	for _, p := range benchPolicies {
		b.Run(string(p.Algorithm), func(b *testing.B) {
			c := newClient(b, url)
			h := newCountHook()
			c.AddHook(h)
			prefix := "bench:" + testenv.Random(6) + ":"
			b.Cleanup(func() { testenv.DeleteKeys(b, c, prefix) })
			r := NewRedis(c, prefix, nil)
			if _, err := r.Allow(ctx, p, "warm-up"); err != nil { // loads the script
				b.Fatal(err)
			}
			h.reset()
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				if _, err := r.Allow(ctx, p, keys[n%len(keys)]); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.StopTimer()
			if got := h.n.Load(); got != int64(n) || h.names["evalsha"] != n {
				b.Fatalf("%d decisions sent %d commands %v, want one EVALSHA each", n, got, h.names)
			}
			b.ReportMetric(float64(h.n.Load())/float64(n), "roundtrips/op")
		})
	}
}

// BenchmarkRedisParallel decides requests from many goroutines at once, as
// a loaded server does, through the plain client (a round trip per
// decision, each on its own pooled connection) and through go-redis's
// autopipeliner (concurrent decisions share one write and one read).
func BenchmarkRedisParallel(b *testing.B) {
	url := os.Getenv(testenv.EnvRedis)
	if url == "" {
		b.Skipf("%s is not set", testenv.EnvRedis)
	}
	keys := benchKeys()
	ctx := context.Background()
	p := benchPolicies[0]
	for _, auto := range []bool{false, true} {
		name := "client"
		if auto {
			name = "autopipeline"
		}
		b.Run(name, func(b *testing.B) {
			c := newClient(b, url)
			prefix := "bench:" + testenv.Random(6) + ":"
			b.Cleanup(func() { testenv.DeleteKeys(b, c, prefix) })
			r := NewRedis(c, prefix, nil)
			if auto {
				var err error
				if r, err = NewRedisPipelined(c, prefix, DefaultTimeout, nil); err != nil { // as app.go does
					b.Fatal(err)
				}
			}
			if _, err := r.Allow(ctx, p, "warm-up"); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetParallelism(benchParallelism)
			b.RunParallel(func(pb *testing.PB) {
				i := int(time.Now().UnixNano())
				for pb.Next() {
					if _, err := r.Allow(ctx, p, keys[i%len(keys)]); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
		})
	}
}

var benchParallelism, _ = strconv.Atoi(cmp.Or(os.Getenv("BENCH_PARALLELISM"), "32"))
