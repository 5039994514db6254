// Package kv is a small key-value store with expiry and publish/subscribe.
//
// Gatehouse keeps short-lived shared state here: the access-token denylist,
// login lockout counters, caches, and the messages that tell every instance to
// drop a cached value. Two backends implement Store: Memory, for a single
// instance and for tests, and Redis (one node or a Redis Cluster), which every
// instance of a deployment shares.
//
// Keys and channel names are plain strings; values and messages are bytes the
// store never interprets, except that Incr keeps its counter as a base-10
// integer, as Redis does.
package kv

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by Get when the key does not exist or has expired.
var ErrNotFound = errors.New("kv: key not found")

// ErrClosed is returned by a store's methods after Close.
var ErrClosed = errors.New("kv: store closed")

// An Event is what a subscription delivers: a published message, or news
// that the subscription lost its connection or has it back.
type Event struct {
	Kind EventKind
	// Payload is the message; nil unless Kind is EventMessage.
	Payload []byte
}

// EventKind says what an Event is.
type EventKind uint8

const (
	// EventMessage carries a message published on the channel.
	EventMessage EventKind = iota
	// EventDown: the subscription lost its connection. Messages published
	// from now until the next EventUp do not arrive.
	EventDown
	// EventUp: the subscription is receiving again after a break. Whatever
	// was published during the break is lost, so a reader that keeps state
	// from the messages must not trust what it kept from before.
	EventUp
)

// Store is a key-value store with expiry and publish/subscribe. Its methods
// are safe for concurrent use.
//
// A ttl of zero means the key never expires; a negative ttl is an error.
type Store interface {
	// Get returns the value stored at key, or ErrNotFound if the key does
	// not exist or has expired.
	Get(ctx context.Context, key string) ([]byte, error)

	// Set stores value at key, replacing any value and expiry it had.
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error

	// SetNX stores value at key only if the key does not exist, and reports
	// whether it did so.
	SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)

	// Delete removes the keys; keys that do not exist are ignored.
	Delete(ctx context.Context, keys ...string) error

	// Incr atomically adds delta to the integer stored at key and returns
	// the result. An absent key counts as zero. The ttl is applied only when
	// this call creates the key, and a later Incr never extends it, so a
	// counter lives for one fixed window from its first increment. Incr
	// returns an error if the value at key is not a base-10 integer or the
	// sum would overflow an int64.
	Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error)

	// Hold records member as holding key until ttl (positive) from now,
	// forgets the members whose time is up, and returns how many hold key,
	// member included. It counts work under way across instances: each
	// hold ends by Release or by its own ttl, so one whose instance died
	// ends by itself, and none ends another's. A key used for holds holds
	// nothing else.
	Hold(ctx context.Context, key, member string, ttl time.Duration) (int64, error)

	// Release ends member's hold on key, if it still holds it.
	Release(ctx context.Context, key, member string) error

	// Publish sends msg to every current subscriber of channel and returns
	// how many subscriptions it was handed to.
	Publish(ctx context.Context, channel string, msg []byte) (int64, error)

	// Subscribe calls fn with every message published on channel, by any
	// instance sharing the store, from the moment Subscribe returns until
	// ctx ends or the store is closed; and with EventDown and EventUp when
	// the subscription loses and regains its connection. Calls come one at
	// a time, in order. fn must be quick and must not call Subscribe or
	// Close: a slow fn holds up delivery (and, on Memory, the publisher).
	Subscribe(ctx context.Context, channel string, fn func(Event)) error

	// ExistsAny reports whether any of the keys exists, in one round trip
	// (the revocation checks of every authenticated request).
	ExistsAny(ctx context.Context, keys ...string) (bool, error)

	// Ping reports whether the store can be reached.
	Ping(ctx context.Context) error

	// Close releases the store's resources and closes every subscription.
	// Calling Close more than once is harmless.
	Close() error
}

// Open returns a Memory store if url is empty and a Redis store otherwise; see
// NewRedis for the forms url may take. The prefix is put in front of every key
// and channel of a Redis store; a Memory store shares its keys with no one and
// ignores it.
func Open(ctx context.Context, url, prefix string) (Store, error) {
	if url == "" {
		return NewMemory(), nil
	}
	return NewRedis(ctx, url, prefix)
}

// errNegativeTTL is returned for a ttl below zero, which both backends would
// otherwise read differently (go-redis takes -1 to mean "keep the old ttl").
var errNegativeTTL = errors.New("kv: negative ttl")

// Entry is one key for SetNXAll to store.
type Entry struct {
	Key   string
	Value []byte
	TTL   time.Duration
}

// SetNXAll stores each entry whose key does not exist, as SetNX does, and
// returns how many it stored; after an error, some may have been. It is for
// thousands of keys at once (the revocation denylist, written again): on
// Redis they go pipelined, many to a round trip, where SetNX would cost a
// round trip each. Under a Mirror they go to the shared store and, if any
// was stored or the call failed, one Rewritten message stands for them
// all, in place of a message per key.
func SetNXAll(ctx context.Context, s Store, entries []Entry) (int, error) {
	for _, e := range entries {
		if e.TTL < 0 {
			return 0, errNegativeTTL
		}
	}
	var n int
	var err error
	switch shared := Shared(s).(type) {
	case *Redis:
		n, err = shared.setNXAll(ctx, entries)
	default:
		for _, e := range entries {
			var ok bool
			if ok, err = shared.SetNX(ctx, e.Key, e.Value, e.TTL); err != nil {
				break
			}
			if ok {
				n++
			}
		}
	}
	// Even after an error: the keys stored must not stay hidden by copies
	// that say they are missing, and after an error some may be stored
	// whose replies were lost (n does not count them).
	if n > 0 || err != nil && !errors.Is(err, ErrClosed) {
		err = errors.Join(err, Rewritten(ctx, s))
	}
	return n, err
}
