package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// sweepInterval is how often a Memory removes the state of keys that have
// gone idle, so that a stream of one-off keys (IP addresses, say) cannot grow
// it without bound.
const sweepInterval = time.Minute

// shardCount is how many independently locked parts a Memory's keys are
// spread over, so that requests for different keys seldom wait for each
// other. A power of two.
const shardCount = 64

// Memory is a Limiter held in the memory of one process: for a single
// instance and for tests. Instances that must share their counts need Redis.
//
// A key's state is dropped once it no longer affects any decision: for a
// token bucket, when the bucket is full again; for a sliding window, when its
// newest request leaves the window. A sliding window keeps one timestamp per
// allowed request in the window, so at most 8·Limit bytes per key.
type Memory struct {
	now    func() time.Time
	seed   maphash.Seed
	shards [shardCount]shard

	closed atomic.Bool
	done   chan struct{} // closed by Close to stop the sweeper
	swept  chan struct{} // closed by the sweeper when it has stopped
}

type shard struct {
	mu      sync.Mutex
	entries map[memKey]*entry
	_       [48]byte // keeps neighbouring shards' locks off one cache line
}

type memKey struct{ policy, key string }

// entry is one key's state under one policy.
type entry struct {
	alg     Algorithm
	expires int64 // µs; from then on the state makes no difference

	tat int64 // token bucket: theoretical arrival time, µs

	// Sliding window: the times of the allowed requests still in the
	// window, oldest first, in a ring of up to Limit slots that grows as
	// it fills.
	ring    []int64
	head, n int
}

// NewMemory returns an empty Memory reading the time from now, or from
// time.Now if now is nil, and starts the goroutine that drops idle keys;
// Close stops it.
func NewMemory(now func() time.Time) *Memory {
	return newMemory(now, sweepInterval)
}

func newMemory(now func() time.Time, sweepEvery time.Duration) *Memory {
	if now == nil {
		now = time.Now
	}
	m := &Memory{
		now:   now,
		seed:  maphash.MakeSeed(),
		done:  make(chan struct{}),
		swept: make(chan struct{}),
	}
	for i := range m.shards {
		m.shards[i].entries = make(map[memKey]*entry)
	}
	go m.sweeper(sweepEvery)
	return m
}

func (m *Memory) sweeper(every time.Duration) {
	defer close(m.swept)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
			m.sweep()
		}
	}
}

// sweep drops the state of every idle key, one shard at a time so that
// requests wait for at most one shard's sweep.
func (m *Memory) sweep() {
	for i := range m.shards {
		s := &m.shards[i]
		now := m.now().UnixMicro()
		s.mu.Lock()
		for k, e := range s.entries {
			if e.expires <= now {
				delete(s.entries, k)
			}
		}
		s.mu.Unlock()
	}
}

// size returns how many keys have state.
func (m *Memory) size() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.entries)
		s.mu.Unlock()
	}
	return n
}

// Close stops the sweeper. Allow returns ErrClosed afterwards. Calling Close
// more than once is harmless.
func (m *Memory) Close() error {
	if m.closed.Swap(true) {
		return nil
	}
	close(m.done)
	<-m.swept
	return nil
}

// Allow decides one request for key under p; see Limiter.
func (m *Memory) Allow(ctx context.Context, p Policy, key string) (Decision, error) {
	if err := p.Validate(); err != nil {
		return Decision{}, err
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, err
	}
	if m.closed.Load() {
		return Decision{}, ErrClosed
	}
	sp := p.spans()
	s := &m.shards[maphash.String(m.seed, key)&(shardCount-1)]
	k := memKey{p.Name, key}

	s.mu.Lock()
	defer s.mu.Unlock()
	// Read the clock under the lock, so that one key's decisions are made
	// in the order of their times.
	now := m.now().UnixMicro()
	e := s.entries[k]
	if e == nil {
		e = &entry{alg: p.Algorithm}
		s.entries[k] = e
	} else if e.alg != p.Algorithm {
		// The policy changed algorithm: its old state means nothing now.
		*e = entry{alg: p.Algorithm}
	}

	if p.Algorithm == TokenBucket {
		tat, allowed, reset, retry := gcra(e.tat, now, sp)
		if allowed {
			e.tat, e.expires = tat, tat
		}
		return bucketDecision(p, sp, allowed, reset, retry), nil
	}
	allowed, count, reset, retry := e.window(now, sp.period, p.Limit)
	return windowDecision(p, allowed, count, reset, retry), nil
}

// window is one step of the sliding log. It returns whether the request is
// allowed (and if so records it), how many requests the window then holds,
// and the microseconds until the window is empty and, if denied, until a
// request would pass. The Redis script windowSource is the same arithmetic;
// change both together.
func (e *entry) window(now, period int64, limit int) (allowed bool, count int, reset, retry int64) {
	for e.n > 0 && e.at(0) <= now-period {
		e.pop()
	}
	if e.n >= limit {
		// More than limit only if the policy's limit went down: then the
		// window must shed all but limit-1 requests before the next.
		return false, e.n, e.at(e.n-1) + period - now, e.at(e.n-limit) + period - now
	}
	// A clock that stepped back must not put a request before an older
	// one; recording it late only keeps it in the window longer.
	t := now
	if e.n > 0 {
		t = max(t, e.at(e.n-1))
	}
	e.push(t, limit)
	e.expires = t + period
	return true, e.n, t + period - now, 0
}

func (e *entry) at(i int) int64 { return e.ring[(e.head+i)%len(e.ring)] }

func (e *entry) pop() {
	e.head = (e.head + 1) % len(e.ring)
	e.n--
}

// push appends t, growing the ring (up to limit slots) when it is full. The
// caller ensures e.n < limit.
func (e *entry) push(t int64, limit int) {
	if e.n == len(e.ring) {
		grown := make([]int64, min(max(2*e.n, 4), limit))
		for i := range e.n {
			grown[i] = e.at(i)
		}
		e.ring, e.head = grown, 0
	}
	e.ring[(e.head+e.n)%len(e.ring)] = t
	e.n++
}

// AllowSeq decides checks one after the other; see Limiter.
func (m *Memory) AllowSeq(ctx context.Context, checks []Check) ([]Decision, error) {
	return sequential(ctx, m, checks)
}
