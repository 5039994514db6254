package token

import (
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"time"
)

// verifiedCache remembers tokens that passed Verify, by the SHA-256 of the
// raw token, so that a client sending the same token on every request pays
// for one signature check. It is safe for concurrent use.
type verifiedCache struct {
	mu      sync.RWMutex
	max     int
	entries map[[sha256.Size]byte]cacheEntry
	hits    atomic.Int64 // for tests
}

type cacheEntry struct {
	claims   *Claims // shared with Verify's callers, who only read it
	kid      string
	deadline time.Time // exp plus the leeway: the token is invalid from then on
}

func newVerifiedCache(max int) *verifiedCache {
	return &verifiedCache{max: max, entries: make(map[[sha256.Size]byte]cacheEntry)}
}

// get returns the entry of the token hashed to sum, if it was verified
// before. The caller still checks the deadline and the key.
func (c *verifiedCache) get(sum [sha256.Size]byte) (cacheEntry, bool) {
	c.mu.RLock()
	e, ok := c.entries[sum]
	c.mu.RUnlock()
	if ok {
		c.hits.Add(1)
	}
	return e, ok
}

// put remembers e under sum. When the cache is full it first drops the
// expired entries, then, if that freed too little, a tenth of the rest:
// map order makes those arbitrary, and dropping many at once keeps the
// scan rare.
func (c *verifiedCache) put(sum [sha256.Size]byte, e cacheEntry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k, v := range c.entries {
			if !now.Before(v.deadline) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries {
			if len(c.entries) < c.max*9/10 {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[sum] = e
}
