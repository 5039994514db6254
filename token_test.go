package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"gatehouse/platform/token"
)

// signingKey reads the app's active RS256 key from the database, as an
// attacker who stole it would hold it: tokens it signs are validly signed,
// so only the claim checks can refuse them.
func signingKey(t *testing.T, app testApp) (string, *rsa.PrivateKey, []byte) {
	t.Helper()
	var row struct {
		KID        string `gorm:"column:kid"`
		PrivateKey string `gorm:"column:private_key"`
		PublicKey  string `gorm:"column:public_key"`
	}
	err := app.db.Conn(context.Background()).Table("signing_keys").Select("kid, private_key, public_key").
		Where("retired_at IS NULL").Take(&row).Error
	if err != nil {
		t.Fatal(err)
	}
	der, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(row.PrivateKey, "plain:"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatal(err)
	}
	return row.KID, k.(*rsa.PrivateKey), []byte(row.PublicKey)
}

// Every kind of bad access token is refused with 401 invalid_token and the
// WWW-Authenticate challenge, one case each.
func TestBadAccessTokens(t *testing.T) {
	t.Parallel()
	app := newTestApp(t, backends[0], nil)
	reg := app.register(t, "mallory@example.com", "correct horse battery", "")
	good := app.login(t, "mallory@example.com", "correct horse battery", "")
	me := decode[struct {
		SessionID string `json:"session_id"`
	}](t, app.me(t, good.AccessToken))
	kid, key, publicPEM := signingKey(t, app)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)

	now := time.Now()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"iss": "http://localhost:8080", "aud": []string{"gatehouse"}, "sub": reg.User.ID,
			"tid": reg.Tenant.ID, "sid": me.SessionID, "jti": "0123456789abcdef0123456789abcdef",
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(), "roles": []string{"member"}}
		if mod != nil {
			mod(c)
		}
		return c
	}
	sign := func(method jwt.SigningMethod, c jwt.MapClaims, kid string, k any) string {
		tok := jwt.NewWithClaims(method, c)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// The forger's control: a token made this way with nothing wrong passes.
	valid := sign(jwt.SigningMethodRS256, claims(nil), kid, key)
	wantStatus(t, app.me(t, valid), 200, "")

	tampered := func() string {
		parts := strings.Split(good.AccessToken, ".")
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		payload = []byte(strings.Replace(string(payload), `"member"`, `"admin!"`, 1))
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
	}()
	none := sign(jwt.SigningMethodNone, claims(nil), kid, jwt.UnsafeAllowNoneSignatureType)
	hsConfusion := sign(jwt.SigningMethodHS256, claims(nil), kid, publicPEM)
	block, _ := pem.Decode(publicPEM)
	hsConfusionDER := sign(jwt.SigningMethodHS256, claims(nil), kid, block.Bytes)

	// Revoked session and denied jti: real tokens whose revocation is recorded.
	revoked := app.login(t, "mallory@example.com", "correct horse battery", "")
	wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/logout", bearer: revoked.AccessToken}), 204, "")
	denied := app.login(t, "mallory@example.com", "correct horse battery", "")
	deniedTok, _, err := jwt.NewParser().ParseUnverified(denied.AccessToken, &token.Claims{})
	if err != nil {
		t.Fatal(err)
	}
	jti := deniedTok.Claims.(*token.Claims).ID
	if err := app.kv.Set(context.Background(), "deny:jti:"+jti, []byte{1}, time.Minute); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name, header string
	}{
		{"missing", ""},
		{"not bearer", "Basic " + basic("a", "b")},
		{"bearer without token", "Bearer "},
		{"malformed", "Bearer not.a.jwt"},
		{"garbage", "Bearer " + strings.Repeat("x", 50)},
		{"oversized", "Bearer " + strings.Repeat("a", 9000)},
		{"expired", "Bearer " + sign(jwt.SigningMethodRS256, claims(func(c jwt.MapClaims) {
			c["exp"] = now.Add(-2 * time.Minute).Unix()
		}), kid, key)},
		{"not yet valid", "Bearer " + sign(jwt.SigningMethodRS256, claims(func(c jwt.MapClaims) {
			c["nbf"] = now.Add(5 * time.Minute).Unix()
		}), kid, key)},
		{"wrong issuer", "Bearer " + sign(jwt.SigningMethodRS256, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }), kid, key)},
		{"wrong audience", "Bearer " + sign(jwt.SigningMethodRS256, claims(func(c jwt.MapClaims) { c["aud"] = []string{"billing"} }), kid, key)},
		{"unknown kid", "Bearer " + sign(jwt.SigningMethodRS256, claims(nil), "no-such-key", other)},
		{"known kid, other key", "Bearer " + sign(jwt.SigningMethodRS256, claims(nil), kid, other)},
		{"no kid", "Bearer " + sign(jwt.SigningMethodRS256, claims(nil), "", key)},
		{"alg none", "Bearer " + none},
		{"HS256 with the public key (PEM)", "Bearer " + hsConfusion},
		{"HS256 with the public key (DER)", "Bearer " + hsConfusionDER},
		{"tampered payload", "Bearer " + tampered},
		{"revoked session", "Bearer " + revoked.AccessToken},
		{"denied jti", "Bearer " + denied.AccessToken},
		{"refresh token as access token", "Bearer " + good.RefreshToken},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := req{method: "GET", path: "/v1/auth/me"}
			if c.header != "" {
				r.header = map[string]string{"Authorization": c.header}
			}
			rec := app.do(t, r)
			wantRejected(t, rec)
			if strings.Contains(rec.Body.String(), "crypto") || strings.Contains(rec.Body.String(), "signature") {
				t.Errorf("the answer explains the failure: %s", rec.Body)
			}
		})
	}
	// The good token still works: nothing above touched it.
	wantStatus(t, app.me(t, good.AccessToken), 200, "")
}

// Acceptance 4, through the command: a token signed before `gatehouse keys
// rotate` still verifies after it, and the JWKS lists both keys.
func TestKeysRotateCommand(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[0])
	before := startApp(t, cfg)
	before.register(t, "nina@example.com", "correct horse battery", "")
	old := before.login(t, "nina@example.com", "correct horse battery", "")

	code, out, errOut := runCmd(t, map[string]string{"GATEHOUSE_DATABASE_SQLITE_PATH": cfg.Database.SQLitePath}, "keys", "rotate")
	if code != 0 || !strings.HasPrefix(out, "new signing key ") {
		t.Fatalf("keys rotate: %d %q %q", code, out, errOut)
	}
	newKID := strings.Fields(out)[3]
	var recorded int64
	before.db.Conn(context.Background()).Raw("SELECT count(*) FROM audit_events WHERE action = 'keys.rotate' AND resource_id = ?", newKID).Scan(&recorded)
	if recorded != 1 {
		t.Errorf("the rotation was audited %d times, want once", recorded)
	}

	after := startApp(t, cfg) // an instance started after the rotation
	wantStatus(t, after.me(t, old.AccessToken), 200, "")
	wantStatus(t, before.me(t, old.AccessToken), 200, "")
	set := decode[token.JWKSet](t, after.do(t, req{method: "GET", path: "/.well-known/jwks.json"}))
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	oldHeader, _, err := jwt.NewParser().ParseUnverified(old.AccessToken, &token.Claims{})
	if err != nil {
		t.Fatal(err)
	}
	if len(kids) != 2 || kids[0] != newKID || kids[1] != oldHeader.Header["kid"] {
		t.Fatalf("JWKS kids %v, want [%s %v]", kids, newKID, oldHeader.Header["kid"])
	}
	fresh := after.login(t, "nina@example.com", "correct horse battery", "")
	tok, _, _ := jwt.NewParser().ParseUnverified(fresh.AccessToken, &token.Claims{})
	if tok.Header["kid"] != newKID {
		t.Errorf("new tokens are signed with %v, want %s", tok.Header["kid"], newKID)
	}
	// The older instance finds the new key on its own: an unknown kid makes
	// it reread the keys, at most once a second (it loaded them at start).
	time.Sleep(1100 * time.Millisecond)
	wantStatus(t, before.me(t, fresh.AccessToken), 200, "")
}
