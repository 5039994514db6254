package kv

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// sweepInterval is how often a Memory store removes expired keys that nobody
// reads, so that they do not hold memory until the process ends.
const sweepInterval = time.Minute

// Memory is a Store held in the memory of one process. It suits a single
// instance and tests; instances of a deployment that must share state need
// Redis. Its Subscribe delivers only what is published on the same Memory.
//
// Once closed, every method returns ErrClosed.
type Memory struct {
	mu     sync.Mutex
	items  map[string]item
	subs   map[string]map[*memorySub]struct{}
	closed bool

	done  chan struct{} // closed by Close to stop the sweeper
	swept chan struct{} // closed by the sweeper when it has stopped
}

type item struct {
	value   []byte
	expires time.Time            // zero: never
	holds   map[string]time.Time // Hold's members, with when each hold ends
}

func (it item) expired(now time.Time) bool {
	return !it.expires.IsZero() && !now.Before(it.expires)
}

type memorySub struct {
	mu    sync.Mutex // makes calls of fn one at a time
	fn    func(Event)
	ended atomic.Bool // no call starts once set; not under mu, as fn may hold the store
	stop  func() bool // stops the context.AfterFunc that ends the subscription
}

func (s *memorySub) deliver(msg []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended.Load() {
		s.fn(Event{Kind: EventMessage, Payload: msg})
	}
}

func (s *memorySub) end() { s.ended.Store(true) }

// NewMemory returns an empty Memory store and starts the goroutine that
// removes expired keys; Close stops it.
func NewMemory() *Memory {
	return newMemory(sweepInterval)
}

func newMemory(sweepEvery time.Duration) *Memory {
	m := &Memory{
		items: make(map[string]item),
		subs:  make(map[string]map[*memorySub]struct{}),
		done:  make(chan struct{}),
		swept: make(chan struct{}),
	}
	go m.sweep(sweepEvery)
	return m
}

func (m *Memory) sweep(every time.Duration) {
	defer close(m.swept)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case now := <-t.C:
			m.mu.Lock()
			for k, it := range m.items {
				if it.expired(now) {
					delete(m.items, k)
				}
			}
			m.mu.Unlock()
		}
	}
}

// lock takes the lock unless ctx has ended or the store is closed; on a nil
// error the caller must unlock.
func (m *Memory) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	return nil
}

// live returns the unexpired item at key, removing it if it has expired.
// The caller holds the lock. It reads the clock only for a key that has an
// expiry, and then with time.Until, which reads only the monotonic clock
// (expiries come from time.Now, which carries it): half the cost of
// time.Now, on reads every request makes.
func (m *Memory) live(key string) (item, bool) {
	it, ok := m.items[key]
	if ok && !it.expires.IsZero() && time.Until(it.expires) <= 0 {
		delete(m.items, key)
		return item{}, false
	}
	return it, ok
}

func expiry(now time.Time, ttl time.Duration) time.Time {
	if ttl == 0 {
		return time.Time{}
	}
	return now.Add(ttl)
}

// Get returns the value stored at key, or ErrNotFound.
func (m *Memory) Get(ctx context.Context, key string) ([]byte, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	it, ok := m.live(key)
	if !ok {
		return nil, ErrNotFound
	}
	// A copy, so the caller cannot change what is stored.
	return append([]byte{}, it.value...), nil
}

// ExistsAny reports whether any of the keys exists and has not expired.
func (m *Memory) ExistsAny(ctx context.Context, keys ...string) (bool, error) {
	if err := m.lock(ctx); err != nil {
		return false, err
	}
	defer m.mu.Unlock()
	for _, k := range keys {
		if _, ok := m.live(k); ok {
			return true, nil
		}
	}
	return false, nil
}

// Set stores value at key with the given ttl.
func (m *Memory) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl < 0 {
		return errNegativeTTL
	}
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	m.items[key] = item{value: append([]byte{}, value...), expires: expiry(time.Now(), ttl)}
	return nil
}

// SetNX stores value at key if the key does not exist, and reports whether it
// did so.
func (m *Memory) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if ttl < 0 {
		return false, errNegativeTTL
	}
	if err := m.lock(ctx); err != nil {
		return false, err
	}
	defer m.mu.Unlock()
	if _, ok := m.live(key); ok {
		return false, nil
	}
	m.items[key] = item{value: append([]byte{}, value...), expires: expiry(time.Now(), ttl)}
	return true, nil
}

// Delete removes the keys.
func (m *Memory) Delete(ctx context.Context, keys ...string) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	for _, k := range keys {
		delete(m.items, k)
	}
	return nil
}

// Incr adds delta to the integer at key; see Store.Incr.
func (m *Memory) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if ttl < 0 {
		return 0, errNegativeTTL
	}
	if err := m.lock(ctx); err != nil {
		return 0, err
	}
	defer m.mu.Unlock()
	it, ok := m.live(key)
	var n int64
	if ok {
		var err error
		if n, err = strconv.ParseInt(string(it.value), 10, 64); err != nil {
			return 0, errors.New("kv: incr: value is not an integer")
		}
	} else {
		it.expires = expiry(time.Now(), ttl)
	}
	if (delta > 0 && n > math.MaxInt64-delta) || (delta < 0 && n < math.MinInt64-delta) {
		return 0, errors.New("kv: incr: increment would overflow")
	}
	n += delta
	it.value = strconv.AppendInt(nil, n, 10)
	m.items[key] = it
	return n, nil
}

// Hold records member as holding key; see Store.Hold.
func (m *Memory) Hold(ctx context.Context, key, member string, ttl time.Duration) (int64, error) {
	if ttl <= 0 {
		return 0, errors.New("kv: hold: the ttl must be positive")
	}
	if err := m.lock(ctx); err != nil {
		return 0, err
	}
	defer m.mu.Unlock()
	now := time.Now()
	it, _ := m.live(key)
	if it.holds == nil {
		it.holds = make(map[string]time.Time)
	}
	for k, end := range it.holds {
		if !now.Before(end) {
			delete(it.holds, k)
		}
	}
	end := now.Add(ttl)
	it.holds[member] = end
	if end.After(it.expires) { // the key lasts as long as its last hold
		it.expires = end
	}
	m.items[key] = it
	return int64(len(it.holds)), nil
}

// Release ends member's hold on key; see Store.Release.
func (m *Memory) Release(ctx context.Context, key, member string) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if it, ok := m.live(key); ok && it.holds != nil {
		delete(it.holds, member)
		if len(it.holds) == 0 {
			delete(m.items, key)
		}
	}
	return nil
}

// Publish calls every subscriber of channel on this Memory before it
// returns, so a change published here is known to all of them at once.
func (m *Memory) Publish(ctx context.Context, channel string, msg []byte) (int64, error) {
	if err := m.lock(ctx); err != nil {
		return 0, err
	}
	subs := make([]*memorySub, 0, len(m.subs[channel]))
	for s := range m.subs[channel] {
		subs = append(subs, s)
	}
	m.mu.Unlock()
	// Outside the store's lock, so that fn may use the store.
	for _, s := range subs {
		// Each subscriber gets its own copy, so one cannot change another's.
		s.deliver(append([]byte{}, msg...))
	}
	return int64(len(subs)), nil
}

// Subscribe calls fn with the messages later published on channel; see
// Store.Subscribe. A Memory never loses its connection, so fn never sees
// EventDown or EventUp.
func (m *Memory) Subscribe(ctx context.Context, channel string, fn func(Event)) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	s := &memorySub{fn: fn}
	if m.subs[channel] == nil {
		m.subs[channel] = make(map[*memorySub]struct{})
	}
	m.subs[channel][s] = struct{}{}
	// The AfterFunc runs only once ctx ends, and takes the lock, which we
	// hold until s is fully set up.
	s.stop = context.AfterFunc(ctx, func() { m.unsubscribe(channel, s) })
	return nil
}

func (m *Memory) unsubscribe(channel string, s *memorySub) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.subs[channel], s)
	if len(m.subs[channel]) == 0 {
		delete(m.subs, channel)
	}
	s.end()
}

// Ping returns nil unless ctx has ended or the store is closed.
func (m *Memory) Ping(ctx context.Context) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	m.mu.Unlock()
	return nil
}

// Close stops the sweeper, closes every subscription and drops all keys.
func (m *Memory) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	for _, set := range m.subs {
		for s := range set {
			s.stop()
			s.end()
		}
	}
	m.subs = nil
	m.items = nil
	m.mu.Unlock()
	close(m.done)
	<-m.swept
	return nil
}
