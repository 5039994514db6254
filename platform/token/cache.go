package token

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// verifiedCache remembers tokens that passed Verify, so that a client
// sending the same token on every request pays for one signature check. It
// is safe for concurrent use.
//
// An entry is found by the first sigPrefix characters of the token's
// signature (192 bits), and answers only a token whose keyed 64-bit hash
// (maphash, with a seed made at start and never shown) is the one verified.
// A signature cannot be predicted without the private key, so two tokens
// share those 192 bits only by a chance of 2^-192; and the hash rejects a
// token that copies a cached signature's start but changes anything else
// (it then fails the full check). A hit costs no cryptographic hash:
// hashing a whole RS256 token with SHA-256 took most of its time. An entry
// keeps those 32 characters and the 64-bit hash, never the token itself.
type verifiedCache struct {
	mu      sync.RWMutex
	max     int
	seed    maphash.Seed
	entries map[[sigPrefix]byte]cacheEntry
	hits    atomic.Int64 // for tests
}

// sigPrefix is how many characters of a signature name a cache entry:
// 192 bits of base64url. The shortest signature accepted (Ed25519) has
// 86.
const sigPrefix = 32

type cacheEntry struct {
	claims   *Claims // shared with Verify's callers, who only read it
	kid      string
	sum      uint64    // maphash of the whole token
	deadline time.Time // exp plus the leeway: the token is invalid from then on
}

// cacheKey is where a token is cached: its signature's prefix, and the
// maphash of the token.
type cacheKey struct {
	sig [sigPrefix]byte
	sum uint64
}

func newVerifiedCache(max int) *verifiedCache {
	return &verifiedCache{max: max, seed: maphash.MakeSeed(), entries: make(map[[sigPrefix]byte]cacheEntry)}
}

// key returns raw's cache key; ok is false when raw has no signature part
// of sigPrefix characters (it will fail the full check).
func (c *verifiedCache) key(raw string) (k cacheKey, ok bool) {
	// A compact JWS has two dots. IndexByte is vectorized, LastIndexByte
	// is not; a token with more dots fails the full check either way.
	i := strings.IndexByte(raw, '.')
	if i < 0 {
		return k, false
	}
	j := strings.IndexByte(raw[i+1:], '.')
	if j < 0 {
		return k, false
	}
	sig := raw[i+1+j+1:]
	if len(sig) < sigPrefix {
		return k, false
	}
	copy(k.sig[:], sig)
	k.sum = maphash.String(c.seed, raw)
	return k, true
}

// get returns the entry of the token with key k, if it was verified
// before. The caller still checks the deadline and the key.
func (c *verifiedCache) get(k cacheKey) (cacheEntry, bool) {
	c.mu.RLock()
	e, ok := c.entries[k.sig]
	c.mu.RUnlock()
	if !ok || e.sum != k.sum {
		return cacheEntry{}, false
	}
	c.hits.Add(1)
	return e, true
}

// put remembers e under k. When the cache is full it first drops the
// expired entries, then, if that freed too little, a tenth of the rest:
// map order makes those arbitrary, and dropping many at once keeps the
// scan rare.
func (c *verifiedCache) put(k cacheKey, e cacheEntry, now time.Time) {
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
	e.sum = k.sum
	c.entries[k.sig] = e
}
