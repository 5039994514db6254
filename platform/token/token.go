// Package token issues and verifies Gatehouse's access tokens and publishes
// the public keys that verify them.
//
// An access token is a JWT signed with RS256 (the default) or EdDSA, naming
// its key in the kid header. The keys live in the signing_keys table, shared
// by every instance: the first instance to start on an empty database makes
// one, Rotate makes a new one and retires the old, and JWKS lists every key
// whose tokens may still be alive, so that other services can verify tokens
// themselves. With a master key configured, private keys are stored
// encrypted with AES-256-GCM.
//
// The package knows nothing of users or sessions. Verify says that a token
// is authentic and current; the caller must still check on every request
// that the token's session and jti have not been revoked.
package token

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"gatehouse/platform/db"
	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
)

// The signing algorithms a Service can use.
const (
	RS256 = "RS256" // RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys
	EdDSA = "EdDSA" // Ed25519 (RFC 8037)
)

// MaxTokenLen is the length in bytes of the longest token Verify parses.
// Gatehouse's own tokens are well under 2 KiB; the bound keeps a hostile
// header from costing base64 and JSON work on megabytes.
const MaxTokenLen = 8 << 10

const (
	// refreshEvery is how stale the in-memory keys may get before they
	// are read again from the database. It bounds how long an instance
	// keeps signing with a key another instance has retired, and it is
	// why a retired key stays published that much longer (see window).
	// Reading once a minute costs one small query per instance; reading
	// on every Issue would put a query on every sign-in.
	refreshEvery = time.Minute
	// unknownKIDGap is the least time between two reloads caused by a
	// token naming a key this instance does not know: a new key made by
	// another instance's Rotate is found at once, but a flood of tokens
	// with made-up kids costs at most one query a second.
	unknownKIDGap = time.Second
	// cacheSize bounds the verified-token cache.
	cacheSize = 10_000
)

// ErrInvalidToken is returned by Verify for any token it does not accept.
// The reason stays in the error's chain for the logs; clients see only this
// error's code and message.
var ErrInvalidToken = fault.New(fault.Unauthenticated, "invalid_token", "the access token is invalid or expired")

// Reasons Verify rejects a token before or beside the JWT library.
var (
	errEmpty         = errors.New("token is empty")
	errTooLong       = fmt.Errorf("token is longer than %d bytes", MaxTokenLen)
	errNoKID         = errors.New("token has no kid header")
	errUnknownKID    = errors.New("token's kid names no current signing key")
	errMissingClaims = errors.New("token lacks sub, tid, sid or jti")
)

// Config configures a Service.
type Config struct {
	// Issuer and Audience are the iss and aud of every token issued, and
	// the only ones Verify accepts. Both are required.
	Issuer, Audience string
	// AccessTTL is how long a token lives; it must be positive.
	AccessTTL time.Duration
	// Leeway is the clock skew allowed when checking exp, nbf and iat.
	Leeway time.Duration
	// Algorithm is RS256 or EdDSA; empty means RS256. Verify accepts
	// tokens of this algorithm only.
	Algorithm string
	// MasterKey is nil, or 32 bytes under which private keys are stored
	// encrypted with AES-256-GCM.
	MasterKey []byte
}

// Claims are the claims of an access token.
type Claims struct {
	jwt.RegisteredClaims // iss sub aud exp nbf iat jti
	// TenantID is the tenant the token acts in.
	TenantID string `json:"tid"`
	// SessionID is the session the token was issued for.
	SessionID string `json:"sid"`
	// Roles are the subject's roles in the tenant when the token was issued.
	Roles []string `json:"roles"`
}

// Service issues and verifies access tokens. It is safe for concurrent use.
type Service struct {
	db     *db.DB
	cfg    Config
	log    *slog.Logger
	method jwt.SigningMethod
	parser *jwt.Parser
	aead   cipher.AEAD // nil without a master key
	// window is how long a retired key stays published and accepted.
	window time.Duration
	// now is the clock; tests replace it.
	now func() time.Time

	// keys is the current key set, replaced whole on reload so that
	// Issue and Verify read it without a lock.
	keys atomic.Pointer[keySet]
	// reloadMu serializes reloads; lastLoad is when the last one was
	// tried (Unix nanoseconds by s.now), read without the lock.
	reloadMu sync.Mutex
	lastLoad atomic.Int64
	// loads counts reads of the key table, for tests.
	loads atomic.Int64

	cache *verifiedCache // nil disables the cache (benchmarks)

	// internal caches internal tokens by upstream and caller.
	internal      sync.Map
	internalCount atomic.Int64
}

// New returns a Service using the signing keys stored in d, which must be
// migrated. If d holds no active key for cfg.Algorithm, New makes one and
// stores it; of several instances doing so at once, one wins and the others
// use its key.
//
// New fails if cfg is incomplete, if stored keys are encrypted and
// cfg.MasterKey is missing or is not the key they were encrypted with, or if
// the database cannot be read. Keys stored unencrypted are encrypted when a
// master key is configured. log may be nil.
func New(ctx context.Context, d *db.DB, cfg Config, log *slog.Logger) (*Service, error) {
	return newService(ctx, d, cfg, log, time.Now)
}

// newService is New with a clock.
func newService(ctx context.Context, d *db.DB, cfg Config, log *slog.Logger, now func() time.Time) (*Service, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Algorithm == "" {
		cfg.Algorithm = RS256
	}
	s := &Service{db: d, cfg: cfg, log: log, now: now, cache: newVerifiedCache(cacheSize),
		// A token may be signed with a key up to refreshEvery after
		// another instance retired it, and is accepted until its exp
		// plus the leeway.
		window: cfg.AccessTTL + cfg.Leeway + refreshEvery}
	switch cfg.Algorithm {
	case RS256:
		s.method = jwt.SigningMethodRS256
	case EdDSA:
		s.method = jwt.SigningMethodEdDSA
	default:
		return nil, fmt.Errorf("token signing algorithm must be %s or %s, got %q", RS256, EdDSA, cfg.Algorithm)
	}
	switch {
	case cfg.Issuer == "" || cfg.Audience == "":
		return nil, errors.New("token issuer and audience are required")
	case cfg.AccessTTL <= 0:
		return nil, fmt.Errorf("token lifetime must be positive, got %s", cfg.AccessTTL)
	case cfg.Leeway < 0:
		return nil, fmt.Errorf("token leeway must not be negative, got %s", cfg.Leeway)
	}
	if cfg.MasterKey != nil {
		aead, err := newAEAD(cfg.MasterKey)
		if err != nil {
			return nil, err
		}
		s.aead = aead
	}
	s.parser = jwt.NewParser(
		// An explicit allow-list: "none", HMAC keyed with the public key,
		// and the other asymmetric algorithm are all refused before any
		// key is looked up.
		jwt.WithValidMethods([]string{cfg.Algorithm}),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(func() time.Time { return s.now() }),
	)
	if err := s.checkStored(ctx); err != nil {
		return nil, err
	}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// KeyID returns the kid of the key Issue signs with.
func (s *Service) KeyID() string { return s.keys.Load().active.kid }

// Issue returns a signed access token for subject in tenantID, for the
// session sessionID, and its claims: iat and nbf are now, exp is now plus
// the configured lifetime, and jti is 128 random bits in hex. subject,
// tenantID and sessionID must not be empty.
func (s *Service) Issue(ctx context.Context, subject, tenantID, sessionID string, roles []string) (string, *Claims, error) {
	if subject == "" || tenantID == "" || sessionID == "" {
		return "", nil, errors.New("issue token: subject, tenant and session are required")
	}
	return s.sign(ctx, s.cfg.Audience, subject, tenantID, sessionID, roles, s.cfg.AccessTTL)
}

func (s *Service) sign(ctx context.Context, audience, subject, tenantID, sessionID string, roles []string, ttl time.Duration) (string, *Claims, error) {
	s.refresh(ctx, s.now())
	key := s.keys.Load().active
	now := s.now()
	var id [16]byte
	rand.Read(id[:])
	if roles == nil {
		roles = []string{} // "roles": [] rather than null
	}
	c := &Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.cfg.Issuer,
			Subject:   subject,
			Audience:  jwt.ClaimStrings{audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        hex.EncodeToString(id[:]),
		},
		TenantID:  tenantID,
		SessionID: sessionID,
		Roles:     slices.Clone(roles),
	}
	t := jwt.NewWithClaims(s.method, c)
	t.Header["kid"] = key.kid
	raw, err := t.SignedString(key.private)
	if err != nil {
		return "", nil, fmt.Errorf("sign token with key %s: %w", key.kid, err)
	}
	return raw, c, nil
}

// InternalTTL is the lifetime of an internal token.
const InternalTTL = time.Minute

// SignInternal returns a short-lived token telling an upstream service who
// is calling through the gateway: audience is the upstream's name, and the
// claims are the caller's sub, tid and roles. It carries no sid, so
// Gatehouse itself never accepts it as an access token. An RS256 signature
// costs about a millisecond, so a token is reused for the same caller and
// upstream while it has more than half its life left.
func (s *Service) SignInternal(ctx context.Context, audience string, id *httpx.Identity) (string, error) {
	key := audience + "\x00" + id.UserID + "\x00" + id.TenantID + "\x00" + strings.Join(id.Roles, ",")
	now := s.now()
	if v, ok := s.internal.Load(key); ok && v.(internalToken).exp.Sub(now) > InternalTTL/2 {
		return v.(internalToken).raw, nil
	}
	raw, c, err := s.sign(ctx, audience, id.UserID, id.TenantID, "", id.Roles, InternalTTL)
	if err != nil {
		return "", err
	}
	if s.internalCount.Add(1) > maxInternal {
		s.internal.Clear() // rare: a wave of distinct callers; refilled on demand
		s.internalCount.Store(0)
	}
	s.internal.Store(key, internalToken{raw: raw, exp: c.ExpiresAt.Time})
	return raw, nil
}

// internalToken is a cached internal token.
type internalToken struct {
	raw string
	exp time.Time
}

// maxInternal bounds the internal-token cache.
const maxInternal = 10_000

// Verify returns the claims of raw if it is a token this service accepts:
// signed with a current key of the configured algorithm, named by its kid
// header; issued by the configured issuer for the configured audience;
// within exp, nbf and iat give or take the leeway; and carrying sub, tid,
// sid and jti. Otherwise it returns an error for which
// errors.Is(err, ErrInvalidToken) is true.
//
// Verify does not know about revocation: the caller checks the session and
// jti. A token verified before is answered from memory until it expires.
// The returned claims may be shared with the cache: read them, never change
// them (a hit then costs no allocation).
func (s *Service) Verify(ctx context.Context, raw string) (*Claims, error) {
	switch {
	case raw == "":
		return nil, invalid(errEmpty)
	case len(raw) > MaxTokenLen:
		return nil, invalid(errTooLong)
	}
	now := s.now() // one clock read for the reload check and a cache hit
	s.refresh(ctx, now)
	var (
		key    cacheKey
		cached bool
	)
	if s.cache != nil {
		key, cached = s.cache.key(raw)
	}
	if cached {
		if e, ok := s.cache.get(key); ok {
			if !now.Before(e.deadline) {
				return nil, invalid(jwt.ErrTokenExpired)
			}
			// A token's key stays accepted for longer than the token
			// lives, so the deadline alone settles this; checking the
			// key too keeps that true should the rule ever change.
			if k, ok := s.keys.Load().byKID[e.kid]; !ok || !k.alive(now, s.window) {
				return nil, invalid(errUnknownKID)
			}
			return e.claims, nil
		}
	}
	var (
		c   = new(Claims)
		kid string
	)
	_, err := s.parser.ParseWithClaims(raw, c, func(t *jwt.Token) (any, error) {
		kid, _ = t.Header["kid"].(string)
		return s.verificationKey(ctx, kid)
	})
	if err != nil {
		return nil, invalid(err)
	}
	if c.Subject == "" || c.TenantID == "" || c.SessionID == "" || c.ID == "" {
		return nil, invalid(errMissingClaims)
	}
	if cached {
		s.cache.put(key, cacheEntry{claims: c, kid: kid, deadline: c.ExpiresAt.Add(s.cfg.Leeway)}, s.now())
	}
	return c, nil
}

// invalid returns ErrInvalidToken with cause beside it in the chain.
func invalid(cause error) error {
	return fmt.Errorf("%w: %w", ErrInvalidToken, cause)
}

// verificationKey returns the public key named kid. A kid this instance does
// not know may belong to a key another instance has just made: the keys are
// read again, at most once per unknownKIDGap.
func (s *Service) verificationKey(ctx context.Context, kid string) (any, error) {
	if kid == "" {
		return nil, errNoKID
	}
	now := s.now()
	ks := s.keys.Load()
	if k, known := ks.byKID[kid]; known {
		if !k.alive(now, s.window) {
			return nil, errUnknownKID
		}
		return k.public, nil
	}
	s.reloadMu.Lock()
	// Another caller may have reloaded while this one waited.
	if s.keys.Load() == ks && now.UnixNano()-s.lastLoad.Load() >= int64(unknownKIDGap) {
		if err := s.reload(ctx); err != nil {
			s.log.WarnContext(ctx, "cannot reload signing keys", "error", err)
		}
	}
	s.reloadMu.Unlock()
	if k, known := s.keys.Load().byKID[kid]; known && k.alive(now, s.window) {
		return k.public, nil
	}
	return nil, errUnknownKID
}

// refresh reloads the keys if they were last read refreshEvery ago or more.
// It never waits: when another goroutine is already reloading, the caller
// goes on with the keys it has. A failed reload is logged and the keys
// loaded before stay in use.
func (s *Service) refresh(ctx context.Context, now time.Time) {
	if now.UnixNano()-s.lastLoad.Load() < int64(refreshEvery) || !s.reloadMu.TryLock() {
		return
	}
	defer s.reloadMu.Unlock()
	if s.now().UnixNano()-s.lastLoad.Load() < int64(refreshEvery) {
		return
	}
	if err := s.reload(ctx); err != nil {
		s.log.WarnContext(ctx, "cannot reload signing keys; using those loaded before", "error", err)
	}
}

// reload reads the keys from the database and installs them. The caller
// holds reloadMu.
func (s *Service) reload(ctx context.Context) error {
	s.lastLoad.Store(s.now().UnixNano())
	ks, err := s.load(ctx, s.keys.Load())
	if err != nil {
		return err
	}
	s.keys.Store(ks)
	return nil
}
