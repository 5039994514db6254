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

// subscribeBuffer is how many messages a subscription holds for a reader that
// has not yet taken them. Publish never waits for a reader: a message that
// finds the buffer full is dropped and counted (see Memory.Dropped and
// Redis.Dropped), so one stuck subscriber cannot stall the publisher or the
// other subscribers.
const subscribeBuffer = 256

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

	// Publish sends msg to every current subscriber of channel.
	Publish(ctx context.Context, channel string, msg []byte) error

	// Subscribe returns a channel that delivers the messages published on
	// channel after Subscribe returns, by any instance sharing the store.
	// The returned channel is closed when ctx ends or the store is closed.
	// Publish does not wait for a slow reader: a subscriber that falls 256
	// messages behind loses the messages that do not fit.
	Subscribe(ctx context.Context, channel string) (<-chan []byte, error)

	// Ping reports whether the store can be reached.
	// ExistsAny reports whether any of the keys exists, in one round trip
	// (the revocation checks of every authenticated request).
	ExistsAny(ctx context.Context, keys ...string) (bool, error)
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
