package token

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"gatehouse/platform/db"
	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
	"gatehouse/platform/testenv"
)

// clock is a settable time source shared by the services of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

const (
	testIssuer   = "https://gatehouse.test"
	testAudience = "gatehouse-api"
	testTTL      = 15 * time.Minute
	testLeeway   = 30 * time.Second
)

func testConfig(alg string) Config {
	return Config{Issuer: testIssuer, Audience: testAudience, AccessTTL: testTTL, Leeway: testLeeway, Algorithm: alg}
}

// TestSQLite runs the suite on a SQLite file per test.
func TestSQLite(t *testing.T) {
	t.Parallel()
	testSuite(t, func(t *testing.T) db.Config {
		return db.Config{SQLitePath: filepath.Join(t.TempDir(), "gatehouse.db")}
	})
}

// TestPostgres runs the suite on a PostgreSQL schema per test.
func TestPostgres(t *testing.T) {
	t.Parallel()
	testenv.Need(t, testenv.EnvPostgres)
	testSuite(t, func(t *testing.T) db.Config {
		return db.Config{URL: testenv.PostgresURL(t), MaxOpenConns: 8}
	})
}

// env is one test's database and clock.
type env struct {
	db    *db.DB
	clock *clock
}

// service returns a Service on e's database and clock.
func (e env) service(t *testing.T, cfg Config) *Service {
	t.Helper()
	s, err := newService(context.Background(), e.db, cfg, nil, e.clock.Now)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// rows returns the signing_keys rows, oldest first.
func (e env) rows(t *testing.T) []keyRow {
	t.Helper()
	var rows []keyRow
	if err := e.db.Conn(context.Background()).Order("created_at").Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	return rows
}

// testSuite is the behaviour every database must show. newConfig returns
// the configuration of a fresh, empty database.
func testSuite(t *testing.T, newConfig func(t *testing.T) db.Config) {
	newEnv := func(t *testing.T) env {
		t.Helper()
		ctx := context.Background()
		d, err := db.Open(ctx, newConfig(t), nil)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { d.Close() })
		if err := d.Migrate(ctx); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		return env{db: d, clock: newClock()}
	}

	t.Run("Roundtrip", func(t *testing.T) {
		t.Parallel()
		for _, alg := range []string{RS256, EdDSA} {
			t.Run(alg, func(t *testing.T) {
				t.Parallel()
				testRoundtrip(t, newEnv(t), alg)
			})
		}
	})
	t.Run("BadTokens", func(t *testing.T) {
		t.Parallel()
		testBadTokens(t, newEnv(t))
	})
	t.Run("Leeway", func(t *testing.T) {
		t.Parallel()
		testLeewayCase(t, newEnv(t))
	})
	t.Run("Rotation", func(t *testing.T) {
		t.Parallel()
		testRotation(t, newEnv(t))
	})
	t.Run("FirstStartRace", func(t *testing.T) {
		t.Parallel()
		testFirstStartRace(t, newEnv(t))
	})
	t.Run("MasterKey", func(t *testing.T) {
		t.Parallel()
		testMasterKey(t, newEnv(t), newEnv(t))
	})
	t.Run("JWKSIsStandard", func(t *testing.T) {
		t.Parallel()
		testJWKSIsStandard(t, newEnv(t))
	})
	t.Run("Cache", func(t *testing.T) {
		t.Parallel()
		testCache(t, newEnv(t))
	})
}

// segments returns a token's decoded header and payload.
func segments(t *testing.T, raw string) (header, payload map[string]any) {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	for i, dst := range []*map[string]any{&header, &payload} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("segment %d is not base64url without padding: %v", i, err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	return header, payload
}

// testRoundtrip: an issued token verifies, with the claims and header the
// design names, and the JWKS publishes its key in the standard form.
func testRoundtrip(t *testing.T, e env, alg string) {
	ctx := context.Background()
	s := e.service(t, testConfig(alg))
	now := e.clock.Now()
	raw, issued, err := s.Issue(ctx, "user-1", "tenant-1", "session-1", []string{"admin", "member"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Verify(ctx, raw)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if c.Issuer != testIssuer || !slices.Equal(c.Audience, []string{testAudience}) || c.Subject != "user-1" ||
		c.TenantID != "tenant-1" || c.SessionID != "session-1" || !slices.Equal(c.Roles, []string{"admin", "member"}) {
		t.Errorf("claims: %+v", c)
	}
	if !c.IssuedAt.Equal(now) || !c.NotBefore.Equal(now) || !c.ExpiresAt.Equal(now.Add(testTTL)) {
		t.Errorf("times: iat %v nbf %v exp %v, issued at %v", c.IssuedAt, c.NotBefore, c.ExpiresAt, now)
	}
	if len(c.ID) != 32 || c.ID != issued.ID || !c.ExpiresAt.Equal(issued.ExpiresAt.Time) {
		t.Errorf("jti %q, issued %q", c.ID, issued.ID)
	}
	_, again, _ := s.Issue(ctx, "user-1", "tenant-1", "session-1", nil)
	if again.ID == issued.ID {
		t.Error("two tokens share a jti")
	}
	header, payload := segments(t, raw)
	if header["kid"] != s.KeyID() || header["typ"] != "JWT" || header["alg"] != alg {
		t.Errorf("header %v, KeyID %s", header, s.KeyID())
	}
	for _, name := range []string{"iss", "aud", "sub", "tid", "sid", "jti", "iat", "nbf", "exp", "roles"} {
		if _, ok := payload[name]; !ok {
			t.Errorf("payload lacks %s: %v", name, payload)
		}
	}
	if _, _, err := s.Issue(ctx, "", "tenant-1", "session-1", nil); err == nil {
		t.Error("Issue without a subject succeeded")
	}

	// The JWKS key verifies the token without a JWT library.
	var set struct{ Keys []map[string]string }
	body, err := s.JWKS(ctx)
	if err != nil || json.Unmarshal(body, &set) != nil || len(set.Keys) != 1 {
		t.Fatalf("JWKS: %s %v", body, err)
	}
	k := set.Keys[0]
	if k["kid"] != s.KeyID() || k["alg"] != alg || k["use"] != "sig" {
		t.Errorf("JWK %v", k)
	}
	signed, sig := splitSigned(t, raw)
	switch alg {
	case RS256:
		if k["kty"] != "RSA" || verifyRS256(t, k, signed, sig) != nil {
			t.Errorf("RSA JWK %v does not verify the token", k)
		}
	case EdDSA:
		x, err := base64.RawURLEncoding.DecodeString(k["x"])
		if k["kty"] != "OKP" || k["crv"] != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			t.Fatalf("OKP JWK %v", k)
		}
		if !ed25519.Verify(ed25519.PublicKey(x), []byte(signed), sig) {
			t.Error("OKP JWK does not verify the token")
		}
	}
}

// splitSigned returns the signed part of a token and its decoded signature.
func splitSigned(t *testing.T, raw string) (string, []byte) {
	t.Helper()
	i := strings.LastIndexByte(raw, '.')
	sig, err := base64.RawURLEncoding.DecodeString(raw[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	return raw[:i], sig
}

// verifyRS256 checks an RS256 signature with the RSA key rebuilt from a
// JWK's n and e, using only math/big and crypto/rsa.
func verifyRS256(t *testing.T, k map[string]string, signed string, sig []byte) error {
	t.Helper()
	n, err1 := base64.RawURLEncoding.DecodeString(k["n"])
	e, err2 := base64.RawURLEncoding.DecodeString(k["e"])
	if err1 != nil || err2 != nil || len(n) != 256 {
		t.Fatalf("JWK n/e are not 2048-bit base64url without padding: %v", k)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	sum := sha256.Sum256([]byte(signed))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig)
}

// baseClaims returns valid claims issued now by s's settings.
func baseClaims(now time.Time) *Claims {
	return &Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: testIssuer, Subject: "user-1", Audience: jwt.ClaimStrings{testAudience},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(testTTL)), ID: "jti-1",
		},
		TenantID: "tenant-1", SessionID: "session-1", Roles: []string{"member"},
	}
}

// sign signs claims with s's active key, letting mod change the token first.
func sign(t *testing.T, s *Service, c jwt.Claims, mod func(*jwt.Token)) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, c)
	tok.Header["kid"] = s.KeyID()
	if mod != nil {
		mod(tok)
	}
	raw, err := tok.SignedString(s.keys.Load().active.private)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// wantInvalid checks that err is ErrInvalidToken, with cause in its chain
// when cause is not nil, and that a client sees only the fixed message.
func wantInvalid(t *testing.T, name string, err, cause error) {
	t.Helper()
	if !errors.Is(err, ErrInvalidToken) {
		t.Errorf("%s: error %v is not ErrInvalidToken", name, err)
		return
	}
	if cause != nil && !errors.Is(err, cause) {
		t.Errorf("%s: error %v does not hold %v", name, err, cause)
	}
	if f, ok := fault.As(err); !ok || f.Kind != fault.Unauthenticated || f.Code != "invalid_token" ||
		f.Message != "the access token is invalid or expired" {
		t.Errorf("%s: a client would see %+v", name, f)
	}
}

// testBadTokens: every kind of bad token is ErrInvalidToken.
func testBadTokens(t *testing.T, e env) {
	ctx := context.Background()
	s := e.service(t, testConfig(RS256))
	ed := e.service(t, testConfig(EdDSA)) // same database, its own key
	now := e.clock.Now()
	good := sign(t, s, baseClaims(now), nil)
	if _, err := s.Verify(ctx, good); err != nil {
		t.Fatalf("the baseline token is refused: %v", err)
	}
	with := func(mod func(c *Claims)) string {
		c := baseClaims(now)
		mod(c)
		return sign(t, s, c, nil)
	}
	pemKey := []byte(e.rows(t)[0].PublicKey)
	if !strings.Contains(string(pemKey), "PUBLIC KEY") {
		t.Fatal("first row is not the RSA key")
	}
	edToken, _, err := ed.Issue(ctx, "user-1", "tenant-1", "session-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(bytes.Replace(payload, []byte(`"user-1"`), []byte(`"user-2"`), 1)) + "." + parts[2]
	manyRoles := make([]string, 1000)
	for i := range manyRoles {
		manyRoles[i] = fmt.Sprintf("role-%d", i)
	}

	for _, tc := range []struct {
		name  string
		raw   string
		cause error
	}{
		{"empty", "", errEmpty},
		{"garbage", "not-a-token", jwt.ErrTokenMalformed},
		{"three garbage parts", "a.b.c", jwt.ErrTokenMalformed},
		{"expired", with(func(c *Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(-20 * time.Minute))
			c.NotBefore = c.IssuedAt
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-5 * time.Minute))
		}), jwt.ErrTokenExpired},
		{"no exp", with(func(c *Claims) { c.ExpiresAt = nil }), jwt.ErrTokenRequiredClaimMissing},
		{"not yet valid", with(func(c *Claims) { c.NotBefore = jwt.NewNumericDate(now.Add(5 * time.Minute)) }), jwt.ErrTokenNotValidYet},
		{"issued in the future", with(func(c *Claims) { c.IssuedAt = jwt.NewNumericDate(now.Add(5 * time.Minute)) }), jwt.ErrTokenUsedBeforeIssued},
		{"wrong issuer", with(func(c *Claims) { c.Issuer = "https://evil.test" }), jwt.ErrTokenInvalidIssuer},
		{"wrong audience", with(func(c *Claims) { c.Audience = jwt.ClaimStrings{"other-api"} }), jwt.ErrTokenInvalidAudience},
		{"unknown kid", sign(t, s, baseClaims(now), func(tok *jwt.Token) { tok.Header["kid"] = "no-such-key" }), errUnknownKID},
		{"missing kid", sign(t, s, baseClaims(now), func(tok *jwt.Token) { delete(tok.Header, "kid") }), errNoKID},
		{"alg none", func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodNone, baseClaims(now))
			tok.Header["kid"] = s.KeyID()
			raw, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
			if err != nil {
				t.Fatal(err)
			}
			return raw
		}(), jwt.ErrTokenSignatureInvalid},
		{"HS256 keyed with the public key", func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodHS256, baseClaims(now))
			tok.Header["kid"] = s.KeyID()
			raw, err := tok.SignedString(pemKey)
			if err != nil {
				t.Fatal(err)
			}
			return raw
		}(), jwt.ErrTokenSignatureInvalid},
		{"EdDSA token to an RS256 service", edToken, jwt.ErrTokenSignatureInvalid},
		{"tampered payload", tampered, jwt.ErrTokenSignatureInvalid},
		{"signature of another token", parts[0] + "." + parts[1] + "." + strings.Split(with(func(c *Claims) { c.ID = "x" }), ".")[2], jwt.ErrTokenSignatureInvalid},
		{"missing sid", with(func(c *Claims) { c.SessionID = "" }), errMissingClaims},
		{"missing tid", with(func(c *Claims) { c.TenantID = "" }), errMissingClaims},
		{"missing sub", with(func(c *Claims) { c.Subject = "" }), errMissingClaims},
		{"missing jti", with(func(c *Claims) { c.ID = "" }), errMissingClaims},
		{"oversized", with(func(c *Claims) { c.Roles = manyRoles }), errTooLong},
	} {
		c, err := s.Verify(ctx, tc.raw)
		if c != nil {
			t.Errorf("%s: got claims %+v", tc.name, c)
		}
		wantInvalid(t, tc.name, err, tc.cause)
	}
	// The EdDSA service takes its own token but not an RS256 one.
	if _, err := ed.Verify(ctx, edToken); err != nil {
		t.Errorf("EdDSA service refuses its own token: %v", err)
	}
	_, err = ed.Verify(ctx, good)
	wantInvalid(t, "RS256 token to an EdDSA service", err, jwt.ErrTokenSignatureInvalid)

	// Tokens naming unknown kids read the keys at most once a second.
	before := s.loads.Load()
	for i := range 20 {
		_, err := s.Verify(ctx, sign(t, s, baseClaims(now), func(tok *jwt.Token) { tok.Header["kid"] = fmt.Sprint("made-up-", i) }))
		wantInvalid(t, "made-up kid", err, errUnknownKID)
	}
	if n := s.loads.Load() - before; n > 1 {
		t.Errorf("20 unknown kids in one second read the keys %d times", n)
	}
}

// testLeewayCase: exp 10s ago is still valid with 30s of leeway; 60s ago is
// not, whether the token was verified before (cached) or not.
func testLeewayCase(t *testing.T, e env) {
	ctx := context.Background()
	s := e.service(t, testConfig(RS256))
	cached, _, err := s.Issue(ctx, "user-1", "tenant-1", "session-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _, err := s.Issue(ctx, "user-1", "tenant-1", "session-2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, cached); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(testTTL + 10*time.Second)
	if _, err := s.Verify(ctx, cached); err != nil {
		t.Errorf("exp 10s ago, cached: %v", err)
	}
	e.clock.Advance(50 * time.Second)
	_, err = s.Verify(ctx, cached)
	wantInvalid(t, "exp 60s ago, cached", err, jwt.ErrTokenExpired)
	_, err = s.Verify(ctx, fresh)
	wantInvalid(t, "exp 60s ago, never verified", err, jwt.ErrTokenExpired)

	// And a token never verified before, 10s past exp.
	e.clock.Set(newClock().Now())
	other, _, err := s.Issue(ctx, "user-1", "tenant-1", "session-3", nil)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(testTTL + 10*time.Second)
	if _, err := s.Verify(ctx, other); err != nil {
		t.Errorf("exp 10s ago, never verified: %v", err)
	}
}

// testRotation: tokens signed before a rotation verify after it, the JWKS
// lists both keys until the old one's tokens are all dead, another instance
// finds the new key, and an old-key token fails once the key has gone.
func testRotation(t *testing.T, e env) {
	ctx := context.Background()
	s1 := e.service(t, testConfig(RS256))
	s2 := e.service(t, testConfig(RS256)) // another instance, same database
	oldKID := s1.KeyID()
	oldKey := s1.keys.Load().active.private
	if s2.KeyID() != oldKID {
		t.Fatalf("instances disagree on the active key: %s %s", oldKID, s2.KeyID())
	}
	t0 := e.clock.Now()
	tokA, _, err := s1.Issue(ctx, "user-1", "tenant-1", "session-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	newKID, err := s1.Rotate(ctx)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if newKID == oldKID || s1.KeyID() != newKID {
		t.Fatalf("Rotate gave %s, KeyID %s, old %s", newKID, s1.KeyID(), oldKID)
	}
	tokNew, _, err := s1.Issue(ctx, "user-1", "tenant-1", "session-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := segments(t, tokNew); h["kid"] != newKID {
		t.Errorf("token after rotation has kid %v", h["kid"])
	}
	if _, err := s1.Verify(ctx, tokA); err != nil {
		t.Errorf("token signed before the rotation: %v", err)
	}
	if got := jwksKIDs(t, s1); !slices.Equal(got, []string{newKID, oldKID}) {
		t.Errorf("JWKS after rotation lists %v, want [%s %s]", got, newKID, oldKID)
	}
	if rows := e.rows(t); len(rows) != 2 || rows[0].RetiredAt == nil || !rows[0].RetiredAt.Equal(t0) || rows[1].RetiredAt != nil {
		t.Errorf("rows after rotation: %+v", rows)
	}

	// s2 read the keys less than a second ago: it does not read them again
	// for an unknown kid yet.
	_, err = s2.Verify(ctx, tokNew)
	wantInvalid(t, "unknown kid within a second", err, errUnknownKID)
	// 30s on, s2 has not yet refreshed, so it still signs with the old
	// key; the unknown kid makes it read the keys, and then it signs with
	// the new one.
	e.clock.Advance(30 * time.Second)
	tokB, claimsB, err := s2.Issue(ctx, "user-1", "tenant-1", "session-2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := segments(t, tokB); h["kid"] != oldKID {
		t.Fatalf("s2 before refresh signed with %v", h["kid"])
	}
	if _, err := s2.Verify(ctx, tokNew); err != nil {
		t.Errorf("s2 on the new key's token: %v", err)
	}
	if s2.KeyID() != newKID {
		t.Errorf("s2 after reload signs with %s", s2.KeyID())
	}
	if _, err := s1.Verify(ctx, tokB); err != nil { // now cached in s1
		t.Errorf("s1 on s2's late old-key token: %v", err)
	}

	// The last old-key token (tokB) dies before the old key leaves the
	// JWKS, so the cache's expiry check alone keeps it out.
	deadlineB := claimsB.ExpiresAt.Add(testLeeway)
	keyLeaves := t0.Add(s1.window)
	if deadlineB.After(keyLeaves) {
		t.Fatalf("a token signed with the old key lives until %v, after its key leaves at %v", deadlineB, keyLeaves)
	}
	e.clock.Set(deadlineB.Add(-time.Second))
	hits := s1.cache.hits.Load()
	if _, err := s1.Verify(ctx, tokB); err != nil {
		t.Errorf("tokB a second before its deadline: %v", err)
	}
	e.clock.Set(deadlineB)
	_, err = s1.Verify(ctx, tokB)
	wantInvalid(t, "tokB at its deadline", err, jwt.ErrTokenExpired)
	if s1.cache.hits.Load()-hits != 2 {
		t.Error("tokB was not answered from the cache")
	}
	if !slices.Contains(jwksKIDs(t, s1), oldKID) {
		t.Error("old key left the JWKS before its last token expired")
	}

	// Once retired for the window, the old key leaves the JWKS of both
	// instances and nothing signed with it verifies, even with a later exp.
	e.clock.Set(keyLeaves.Add(-time.Second))
	if !slices.Contains(jwksKIDs(t, s2), oldKID) {
		t.Error("old key left the JWKS too early")
	}
	e.clock.Set(keyLeaves)
	for _, s := range []*Service{s1, s2} {
		if got := jwksKIDs(t, s); !slices.Equal(got, []string{newKID}) {
			t.Errorf("JWKS after the window lists %v", got)
		}
	}
	forged := jwt.NewWithClaims(jwt.SigningMethodRS256, baseClaims(e.clock.Now()))
	forged.Header["kid"] = oldKID
	raw, err := forged.SignedString(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Service{s1, s2} {
		_, err = s.Verify(ctx, raw)
		wantInvalid(t, "fresh token signed with the gone key", err, errUnknownKID)
	}
	e.clock.Advance(time.Hour) // also after the keys are read again
	_, err = s1.Verify(ctx, sign(t, s1, baseClaims(e.clock.Now()), func(tok *jwt.Token) { tok.Header["kid"] = oldKID }))
	wantInvalid(t, "old kid after reload", err, errUnknownKID)
	if _, err := s1.Verify(ctx, sign(t, s1, baseClaims(e.clock.Now()), nil)); err != nil {
		t.Errorf("new key after the window: %v", err)
	}
}

// jwksKIDs returns the kids JWKS lists, in order.
func jwksKIDs(t *testing.T, s *Service) []string {
	t.Helper()
	body, err := s.JWKS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var set JWKSet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	kids := []string{}
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	return kids
}

// testFirstStartRace: instances starting together on an empty database end
// with one key, which all of them use.
func testFirstStartRace(t *testing.T, e env) {
	const n = 5
	var (
		wg   sync.WaitGroup
		kids [n]string
		errs [n]error
	)
	for i := range n {
		wg.Go(func() {
			s, err := newService(context.Background(), e.db, testConfig(RS256), nil, e.clock.Now)
			if err != nil {
				errs[i] = err
				return
			}
			kids[i] = s.KeyID()
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("New %d: %v", i, err)
		}
	}
	rows := e.rows(t)
	if len(rows) != 1 {
		t.Fatalf("%d signing keys after a racing start, want 1", len(rows))
	}
	for i, kid := range kids {
		if kid != rows[0].KID {
			t.Errorf("instance %d uses %s, the stored key is %s", i, kid, rows[0].KID)
		}
	}
}

// testMasterKey: with a master key the stored private key is sealed; the
// wrong master key or none refuses to start; a key stored plain is sealed
// when a master key appears.
func testMasterKey(t *testing.T, e, plainEnv env) {
	ctx := context.Background()
	master := make([]byte, 32)
	rand.Read(master)
	cfg := testConfig(RS256)
	cfg.MasterKey = master
	s := e.service(t, cfg)
	der, err := x509.MarshalPKCS8PrivateKey(s.keys.Load().active.private)
	if err != nil {
		t.Fatal(err)
	}
	stored := e.rows(t)[0].PrivateKey
	sealed, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(stored, markSealed))
	if !strings.HasPrefix(stored, markSealed) || err != nil || bytes.Contains(sealed, der[:64]) || bytes.Contains(sealed, der[len(der)/2:len(der)/2+64]) ||
		strings.Contains(stored, base64.StdEncoding.EncodeToString(der)[:64]) {
		t.Errorf("stored private key is not sealed: %.40s…", stored)
	}
	tok, _, err := s.Issue(ctx, "user-1", "tenant-1", "session-1", nil)
	if err != nil {
		t.Fatal(err)
	}

	// The same master key starts again and verifies the token.
	if _, err := e.service(t, cfg).Verify(ctx, tok); err != nil {
		t.Errorf("restart with the master key: %v", err)
	}
	wrong := testConfig(RS256)
	wrong.MasterKey = bytes.Repeat([]byte{7}, 32)
	none := testConfig(RS256)
	short := testConfig(RS256)
	short.MasterKey = master[:16]
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"wrong master key", wrong, "cannot be decrypted"},
		{"no master key", none, "no master key is configured"},
		{"short master key", short, "must be 32 bytes"},
	} {
		_, err := newService(ctx, e.db, tc.cfg, nil, e.clock.Now)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: New gave %v, want one line containing %q", tc.name, err, tc.want)
		}
	}
	if n := len(e.rows(t)); n != 1 {
		t.Errorf("a refused start left %d keys", n)
	}

	// A key stored plain is sealed when a master key is configured.
	plain := plainEnv.service(t, testConfig(EdDSA))
	before := plainEnv.rows(t)[0].PrivateKey
	if !strings.HasPrefix(before, markPlain) {
		t.Fatalf("key without a master key is stored as %.10s…", before)
	}
	tok, _, err = plain.Issue(ctx, "user-1", "tenant-1", "session-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	edCfg := testConfig(EdDSA)
	edCfg.MasterKey = master
	sealedSvc := plainEnv.service(t, edCfg)
	if after := plainEnv.rows(t)[0].PrivateKey; !strings.HasPrefix(after, markSealed) || sealedSvc.KeyID() != plain.KeyID() {
		t.Errorf("plain key was not sealed in place: %.10s…, kid %s vs %s", after, sealedSvc.KeyID(), plain.KeyID())
	}
	if _, err := sealedSvc.Verify(ctx, tok); err != nil {
		t.Errorf("token of the key before sealing: %v", err)
	}
	if _, err := newService(ctx, plainEnv.db, testConfig(EdDSA), nil, plainEnv.clock.Now); err == nil {
		t.Error("started without the master key after the key was sealed")
	}
}

// testJWKSIsStandard: the JWKS route serves a key set from which plain
// crypto/rsa, with no JWT library, verifies an issued token.
func testJWKSIsStandard(t *testing.T, e env) {
	ctx := context.Background()
	s := e.service(t, testConfig(RS256))
	srv := httpx.New(httpx.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.Mount(s.Routes()...); err != nil {
		t.Fatal(err)
	}
	if _, err := httpx.Document(httpx.Info{Title: "t", Version: "1"}, srv.Routes()); err != nil {
		t.Errorf("OpenAPI document: %v", err)
	}
	raw, _, err := s.Issue(ctx, "user-1", "tenant-1", "session-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/.well-known/jwks.json", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Cache-Control") != "public, max-age=300" ||
		!strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("GET jwks: %d %v", rec.Code, rec.Header())
	}
	var set struct{ Keys []map[string]string }
	if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("JWKS body %s: %v", rec.Body, err)
	}
	k := set.Keys[0]
	if k["kty"] != "RSA" || k["alg"] != "RS256" || k["use"] != "sig" || k["kid"] != s.KeyID() || k["e"] != "AQAB" {
		t.Errorf("JWK %v", k)
	}
	signed, sig := splitSigned(t, raw)
	if err := verifyRS256(t, k, signed, sig); err != nil {
		t.Errorf("the published key does not verify an issued token: %v", err)
	}
	sig[0] ^= 1
	if verifyRS256(t, k, signed, sig) == nil {
		t.Error("the check accepts a changed signature")
	}
}

// testCache: a second Verify of a token is answered from the cache, its
// claims cannot be changed through a returned copy, and a cached token past
// its exp is refused.
func testCache(t *testing.T, e env) {
	ctx := context.Background()
	s := e.service(t, testConfig(RS256))
	raw, _, err := s.Issue(ctx, "user-1", "tenant-1", "session-1", []string{"member"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.Verify(ctx, raw)
	if err != nil || s.cache.hits.Load() != 0 {
		t.Fatalf("first Verify: %v, hits %d", err, s.cache.hits.Load())
	}
	second, err := s.Verify(ctx, raw)
	if err != nil || s.cache.hits.Load() != 1 {
		t.Fatalf("second Verify: %v, hits %d", err, s.cache.hits.Load())
	}
	// A hit hands out the cached claims themselves (read-only by contract).
	if second != first || second.Subject != "user-1" || second.Roles[0] != "member" {
		t.Errorf("the hit returned other claims: %+v", second)
	}
	// The cache finds a token by its signature's first characters: a token
	// that copies them but changes its header, its payload or the rest of
	// its signature must not be found, and fails the full check.
	parts := strings.Split(raw, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Replace(payload, []byte(`"user-1"`), []byte(`"user-2"`), 1)
	for name, tok := range map[string]string{
		"payload": parts[0] + "." + base64.RawURLEncoding.EncodeToString(forged) + "." + parts[2],
		"header":  base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2],
		// Past the characters that find the entry.
		"signature": parts[0] + "." + parts[1] + "." + parts[2][:40] + flip(parts[2][40]) + parts[2][41:],
	} {
		c, err := s.Verify(ctx, tok)
		wantInvalid(t, "the cached token with a changed "+name, err, nil)
		if c != nil || s.cache.hits.Load() != 1 {
			t.Errorf("the cached token with a changed %s: claims %+v, hits %d", name, c, s.cache.hits.Load())
		}
	}
	if again, err := s.Verify(ctx, raw); err != nil || again != first || s.cache.hits.Load() != 2 {
		t.Fatalf("the cached token after the forgeries: %v, hits %d", err, s.cache.hits.Load())
	}
	e.clock.Advance(testTTL + testLeeway)
	_, err = s.Verify(ctx, raw)
	wantInvalid(t, "cached token past exp", err, jwt.ErrTokenExpired)
	if s.cache.hits.Load() != 3 {
		t.Errorf("expired token not answered from the cache: hits %d", s.cache.hits.Load())
	}
}

// flip returns another base64url character than b.
func flip(b byte) string {
	if b == 'A' {
		return "B"
	}
	return "A"
}

// TestCacheBound: a full cache drops expired entries first, then others,
// and never grows past its size.
func TestCacheBound(t *testing.T) {
	now := newClock().Now()
	c := newVerifiedCache(100)
	entry := func(deadline time.Time) cacheEntry { return cacheEntry{claims: &Claims{}, deadline: deadline} }
	key := func(i int) (k cacheKey) { copy(k.sig[:], fmt.Sprintf("%032d", i)); return k }
	for i := range 50 {
		c.put(key(i), entry(now.Add(-time.Second)), now) // expired
	}
	for i := 50; i < 100; i++ {
		c.put(key(i), entry(now.Add(time.Minute)), now)
	}
	c.put(key(100), entry(now.Add(time.Minute)), now)
	if len(c.entries) != 51 {
		t.Errorf("after dropping expired entries: %d, want 51", len(c.entries))
	}
	for i := 50; i <= 100; i++ {
		if _, ok := c.get(key(i)); !ok {
			t.Fatalf("live entry %d was dropped while expired ones remained", i)
		}
	}
	for i := 101; i < 1000; i++ {
		c.put(key(i), entry(now.Add(time.Minute)), now)
		if len(c.entries) > 100 {
			t.Fatalf("cache grew to %d", len(c.entries))
		}
	}
	if _, ok := c.get(key(999)); !ok {
		t.Error("the newest entry is missing")
	}
}

// TestConfig: New refuses incomplete settings before touching the database.
func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"no issuer", func(c *Config) { c.Issuer = "" }},
		{"no audience", func(c *Config) { c.Audience = "" }},
		{"no lifetime", func(c *Config) { c.AccessTTL = 0 }},
		{"negative leeway", func(c *Config) { c.Leeway = -time.Second }},
		{"HS256", func(c *Config) { c.Algorithm = "HS256" }},
		{"none", func(c *Config) { c.Algorithm = "none" }},
	} {
		cfg := testConfig(RS256)
		tc.mod(&cfg)
		if _, err := New(context.Background(), nil, cfg, nil); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
}

// benchService returns a Service on a fresh SQLite database.
func benchService(b *testing.B, alg string) *Service {
	b.Helper()
	ctx := context.Background()
	d, err := db.Open(ctx, db.Config{SQLitePath: filepath.Join(b.TempDir(), "g.db")}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	if err := d.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	s, err := New(ctx, d, testConfig(alg), nil)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkIssue(b *testing.B) {
	for _, alg := range []string{RS256, EdDSA} {
		b.Run(alg, func(b *testing.B) {
			s := benchService(b, alg)
			ctx := context.Background()
			roles := []string{"member"}
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := s.Issue(ctx, "user-1", "tenant-1", "session-1", roles); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyMiss verifies with the cache off: the signature check
// and claim validation every request would pay without it.
func BenchmarkVerifyMiss(b *testing.B) {
	for _, alg := range []string{RS256, EdDSA} {
		b.Run(alg, func(b *testing.B) {
			s := benchService(b, alg)
			s.cache = nil
			ctx := context.Background()
			raw, _, err := s.Issue(ctx, "user-1", "tenant-1", "session-1", []string{"member"})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Verify(ctx, raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerifyHit(b *testing.B) {
	for _, alg := range []string{RS256, EdDSA} {
		b.Run(alg, func(b *testing.B) {
			s := benchService(b, alg)
			ctx := context.Background()
			raw, _, err := s.Issue(ctx, "user-1", "tenant-1", "session-1", []string{"member"})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.Verify(ctx, raw); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Verify(ctx, raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// An internal token names the upstream as audience and the caller; it is
// reused while young, and Gatehouse never accepts it as an access token.
func TestSignInternal(t *testing.T) {
	ctx := context.Background()
	d, err := db.Open(ctx, db.Config{SQLitePath: filepath.Join(t.TempDir(), "g.db")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, d, Config{Issuer: "https://gh.test", Audience: "gatehouse", AccessTTL: 15 * time.Minute, Leeway: 30 * time.Second, Algorithm: RS256}, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := &httpx.Identity{UserID: "u1", TenantID: "t1", SessionID: "s1", Roles: []string{"admin"}}
	raw, err := s.SignInternal(ctx, "orders", id)
	if err != nil {
		t.Fatal(err)
	}
	c := &Claims{}
	if _, _, err := jwt.NewParser().ParseUnverified(raw, c); err != nil {
		t.Fatal(err)
	}
	if c.Audience[0] != "orders" || c.Subject != "u1" || c.TenantID != "t1" || c.SessionID != "" || c.Roles[0] != "admin" ||
		c.ExpiresAt.Sub(c.IssuedAt.Time) != InternalTTL {
		t.Errorf("claims %+v", c)
	}
	again, _ := s.SignInternal(ctx, "orders", id)
	other, _ := s.SignInternal(ctx, "billing", id)
	if again != raw || other == raw {
		t.Error("internal tokens are not reused per upstream and caller")
	}
	if _, err := s.Verify(ctx, raw); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Gatehouse accepted an internal token: %v", err)
	}
}
