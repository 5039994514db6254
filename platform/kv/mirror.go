package kv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Mirror is a Store that answers reads of some keys from the process's
// memory, for the keys every request reads and that seldom change: the
// revocation denylist, the permissions version, tenant suspension. It wraps
// the shared store and passes everything else through.
//
// How a copy stays exact. A write of a mirrored key through a Mirror
// changes the shared store first, then drops the key from its own copy and
// publishes the key's name on the mirror channel; every Mirror drops its
// copy of that key when the message arrives, and its next read goes to the
// shared store. Messages carry no values, so two writers' messages arriving
// in either order cannot leave a wrong value behind. A read that raced a
// message (it began before the message was applied) is not kept. A
// message with no key name drops every copy (Rewritten).
//
// The write returns only when every Mirror the message reached has dropped
// its copy: each acknowledges on the writer's own channel, and the writer
// waits for as many acknowledgements as Publish counted receivers (at most
// ackTimeout; a Mirror that cannot answer in time is logged). So when the
// request that revoked something answers, no instance still holds a copy
// that contradicts it.
//
// What a copy is trusted for. A copy is used only while the subscription
// that brought the messages has been live since the copy was read: when
// the subscription drops, every copy is ignored and each read goes to the
// shared store until it is back (EventUp), and copies from before the break
// are never used again. Past maxAge a copy is read again anyway, which
// bounds the damage of a message lost some other way (a writer that could
// change the store but not publish, or a store written without a Mirror).
//
// Keys with a ttl are mirrored too, but a copy does not know the ttl: it
// may outlive the key by up to maxAge. That is harmless for the denylist,
// whose keys outlive the tokens they deny.
type Mirror struct {
	Store
	channel  string
	prefixes []string
	maxAge   time.Duration
	max      int

	// gen is the subscription's generation, 0 while it is down. Copies
	// carry the generation they were read in.
	gen    atomic.Uint64
	gens   atomic.Uint64
	closed atomic.Bool

	mu     sync.RWMutex
	seq    uint64 // counts the copies dropped by messages
	copies map[string]mirrorCopy

	// id names this Mirror's acknowledgement channel; waiting holds the
	// writes waiting for acknowledgements, by nonce.
	id      string
	nonces  atomic.Uint64
	waitMu  sync.Mutex
	waiting map[string]*ackWait
	log     *slog.Logger

	stop context.CancelFunc
}

type ackWait struct {
	acks   atomic.Int64
	notify chan struct{} // cap 1: an acknowledgement came
}

type mirrorCopy struct {
	gen   uint64
	found bool
	value []byte
	at    time.Time
}

const (
	// mirrorMaxAge bounds how long a copy is used without a fresh read.
	mirrorMaxAge = 30 * time.Second
	// mirrorMax bounds the copies kept. Past it all are dropped: they
	// refill at one read each, and keeping LRU order would cost every
	// hit a lock.
	mirrorMax = 100_000
	// ackTimeout bounds a write's wait for the other Mirrors.
	ackTimeout = 2 * time.Second
)

// NewMirror subscribes to channel on store and returns a Mirror of the keys
// that begin with one of prefixes. Close ends the subscriptions, not the
// store.
func NewMirror(ctx context.Context, store Store, channel string, log *slog.Logger, prefixes ...string) (*Mirror, error) {
	m := &Mirror{Store: store, channel: channel, prefixes: prefixes, log: log,
		maxAge: mirrorMaxAge, max: mirrorMax, copies: make(map[string]mirrorCopy),
		id: strconv.FormatUint(rand.Uint64(), 36), waiting: make(map[string]*ackWait)}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if err := store.Subscribe(sctx, m.ackChannel(m.id), m.ack); err != nil {
		cancel()
		return nil, fmt.Errorf("kv: mirror: %w", err)
	}
	// Live from the subscription on; set before it, so that an EventDown
	// that comes before Subscribe returns is not overwritten.
	m.gen.Store(m.gens.Add(1))
	if err := store.Subscribe(sctx, channel, m.event); err != nil {
		cancel()
		return nil, fmt.Errorf("kv: mirror: %w", err)
	}
	m.stop = cancel
	return m, nil
}

// Shared returns the store s keeps copies of when s is a Mirror, and s
// otherwise: a read from it never answers from a copy. For a check that
// must see a loss no message announces, such as a store flushed while
// every Mirror stayed subscribed (FLUSHALL), which a copy hides for up to
// maxAge.
func Shared(s Store) Store {
	if m, ok := s.(*Mirror); ok {
		return m.Store
	}
	return s
}

// Close ends the subscriptions; the Store underneath stays open.
func (m *Mirror) Close() error {
	m.closed.Store(true)
	m.stop()
	m.gen.Store(0)
	return nil
}

// Live reports whether copies are being used: false while the subscription
// is down.
func (m *Mirror) Live() bool { return m.gen.Load() != 0 }

func (m *Mirror) ackChannel(id string) string { return m.channel + ":ack:" + id }

// event handles the mirror channel. A message is "writer id, nonce, key",
// separated by NUL bytes.
func (m *Mirror) event(e Event) {
	switch e.Kind {
	case EventDown:
		m.gen.Store(0)
	case EventUp:
		if !m.closed.Load() { // an EventUp racing Close must not revive it
			m.gen.Store(m.gens.Add(1))
		}
	case EventMessage:
		parts := strings.SplitN(string(e.Payload), "\x00", 3)
		if len(parts) != 3 {
			return
		}
		m.drop(parts[2])
		// Acknowledged only once dropped; not from this goroutine, which
		// must keep reading.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
			defer cancel()
			if _, err := m.Store.Publish(ctx, m.ackChannel(parts[0]), []byte(parts[1])); err != nil {
				m.log.Warn("kv: mirror: acknowledging a change failed", "error", err.Error())
			}
		}()
	}
}

func (m *Mirror) ack(e Event) {
	if e.Kind != EventMessage {
		return
	}
	m.waitMu.Lock()
	w := m.waiting[string(e.Payload)]
	m.waitMu.Unlock()
	if w == nil {
		return // the writer stopped waiting
	}
	w.acks.Add(1)
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (m *Mirror) mirrored(key string) bool { return m.prefixOf(key) != "" }

// prefixOf returns the prefix that makes key mirrored, or "".
func (m *Mirror) prefixOf(key string) string {
	for _, p := range m.prefixes {
		if strings.HasPrefix(key, p) {
			return p
		}
	}
	return ""
}

// drop drops the copy of key; the empty key, which names no mirrored key,
// drops every copy (Rewritten).
func (m *Mirror) drop(key string) {
	m.mu.Lock()
	m.seq++
	if key == "" {
		clear(m.copies)
	} else {
		delete(m.copies, key)
	}
	m.mu.Unlock()
}

// Rewritten has every Mirror on the channel drop all its copies, and waits
// for them as a change does. It is for many mirrored keys written at once
// through Shared: one message in place of one per key. On a store that is
// not a Mirror it does nothing.
func Rewritten(ctx context.Context, s Store) error {
	m, ok := s.(*Mirror)
	if !ok {
		return nil
	}
	return m.changed(ctx, "")
}

// lookup returns the usable copy of key, if any, and the state a read from
// the store must be filed under.
func (m *Mirror) lookup(key string, now time.Time) (c mirrorCopy, ok bool, gen, seq uint64) {
	gen = m.gen.Load()
	m.mu.RLock()
	c, ok = m.copies[key]
	seq = m.seq
	m.mu.RUnlock()
	ok = ok && gen != 0 && c.gen == gen && now.Sub(c.at) < m.maxAge
	return c, ok, gen, seq
}

// keep files what a read found, unless a message or a break of the
// subscription came after the read began.
func (m *Mirror) keep(gen, seq uint64, now time.Time, keys []string, found bool, value []byte) {
	if gen == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seq != seq || m.gen.Load() != gen {
		return
	}
	if len(m.copies)+len(keys) > m.max {
		clear(m.copies)
	}
	for _, k := range keys {
		m.copies[k] = mirrorCopy{gen: gen, found: found, value: value, at: now}
	}
}

// changed drops the local copies of keys (every copy for the empty key)
// and has every other Mirror drop theirs, waiting for them to confirm. It
// runs after the store has changed, on a context the request's end cannot
// cancel.
func (m *Mirror) changed(ctx context.Context, keys ...string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
	defer cancel()
	var errs []error
	for _, k := range keys {
		if k == "" || m.mirrored(k) {
			m.drop(k)
			if err := m.announce(ctx, k); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kv: the change is made but other instances may not see it for %s: %w", m.maxAge, err)
	}
	return nil
}

func (m *Mirror) announce(ctx context.Context, key string) error {
	nonce := strconv.FormatUint(m.nonces.Add(1), 36)
	w := &ackWait{notify: make(chan struct{}, 1)}
	m.waitMu.Lock()
	m.waiting[nonce] = w
	m.waitMu.Unlock()
	defer func() {
		m.waitMu.Lock()
		delete(m.waiting, nonce)
		m.waitMu.Unlock()
	}()
	n, err := m.Store.Publish(ctx, m.channel, []byte(m.id+"\x00"+nonce+"\x00"+key))
	if err != nil {
		return err
	}
	for w.acks.Load() < n {
		select {
		case <-w.notify:
		case <-ctx.Done():
			// A Mirror that got the message but cannot answer: its
			// subscription broke after delivery (it then reads
			// through until resubscribed) or it is stuck.
			m.log.Warn("kv: mirror: not every instance confirmed a change in time",
				"key_prefix", m.prefixOf(key), "receivers", n, "confirmed", w.acks.Load())
			return nil
		}
	}
	return nil
}

// Get answers from the copy of a mirrored key when it can; the returned
// slice is shared and must not be changed.
func (m *Mirror) Get(ctx context.Context, key string) ([]byte, error) {
	if !m.mirrored(key) {
		return m.Store.Get(ctx, key)
	}
	now := time.Now()
	c, ok, gen, seq := m.lookup(key, now)
	if ok {
		if !c.found {
			return nil, ErrNotFound
		}
		return c.value, nil
	}
	v, err := m.Store.Get(ctx, key)
	switch {
	case err == nil:
		m.keep(gen, seq, now, []string{key}, true, v)
	case errors.Is(err, ErrNotFound):
		m.keep(gen, seq, now, []string{key}, false, nil)
	}
	return v, err
}

// ExistsAny answers from the copies when every key is mirrored and has one.
func (m *Mirror) ExistsAny(ctx context.Context, keys ...string) (bool, error) {
	now := time.Now()
	var gen, seq uint64
	all := true
	for i, k := range keys {
		if !m.mirrored(k) {
			all = false
			break
		}
		c, ok, g, s := m.lookup(k, now)
		if ok && c.found {
			return true, nil
		}
		if i == 0 {
			gen, seq = g, s
		}
		all = all && ok && g == gen && s == seq
	}
	if all {
		return false, nil
	}
	found, err := m.Store.ExistsAny(ctx, keys...)
	if err == nil && !found {
		mirroredKeys := keys[:0:0]
		for _, k := range keys {
			if m.mirrored(k) {
				mirroredKeys = append(mirroredKeys, k)
			}
		}
		m.keep(gen, seq, now, mirroredKeys, false, nil)
	}
	return found, err
}

// Set, SetNX, Delete and Incr change the store and then, for mirrored keys,
// every instance's copy.

func (m *Mirror) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	return m.written(ctx, m.Store.Set(ctx, key, value, ttl), key)
}

func (m *Mirror) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	ok, err := m.Store.SetNX(ctx, key, value, ttl)
	if err == nil && !ok {
		return false, nil // nothing changed
	}
	return ok, m.written(ctx, err, key)
}

func (m *Mirror) Delete(ctx context.Context, keys ...string) error {
	return m.written(ctx, m.Store.Delete(ctx, keys...), keys...)
}

func (m *Mirror) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	n, err := m.Store.Incr(ctx, key, delta, ttl)
	return n, m.written(ctx, err, key)
}

// written follows a write of keys that ended with err: the change is
// announced (changed), and so it is when the write failed, unless the
// store was closed. A reply lost after the store applied the write (a
// timeout, a connection cut) looks like any other failure, and copies
// saying otherwise would be trusted for up to maxAge; a needless message
// costs only its round trip.
func (m *Mirror) written(ctx context.Context, err error, keys ...string) error {
	if err == nil {
		return m.changed(ctx, keys...)
	}
	if !errors.Is(err, ErrClosed) {
		_ = m.changed(ctx, keys...)
	}
	return err
}
