package token

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/httpx"
)

// JWKSet is a JSON Web Key Set (RFC 7517, section 5).
type JWKSet struct {
	Keys []JWK `json:"keys"`
}

// JWK is a public signing key as a JSON Web Key: kty RSA with n and e
// (RFC 7518, section 6.3), or kty OKP with crv Ed25519 and x (RFC 8037).
// Binary values are base64url without padding.
type JWK struct {
	KeyType   string `json:"kty"`
	Use       string `json:"use"`
	Algorithm string `json:"alg"`
	KeyID     string `json:"kid"`
	N         string `json:"n,omitempty"`
	E         string `json:"e,omitempty"`
	Curve     string `json:"crv,omitempty"`
	X         string `json:"x,omitempty"`
}

// jwk returns key as a JWK named kid.
func (s *Service) jwk(kid string, key crypto.PublicKey) JWK {
	j := JWK{Use: "sig", Algorithm: s.cfg.Algorithm, KeyID: kid}
	b64 := base64.RawURLEncoding.EncodeToString
	switch k := key.(type) {
	case *rsa.PublicKey:
		j.KeyType = "RSA"
		j.N = b64(k.N.Bytes())
		j.E = b64(big.NewInt(int64(k.E)).Bytes())
	case ed25519.PublicKey:
		j.KeyType, j.Curve, j.X = "OKP", "Ed25519", b64(k)
	}
	return j
}

// JWKS returns the JSON Web Key Set of every key whose tokens may still be
// alive: the active key first, then the retired keys that signed tokens
// which have not yet expired, newest first. A retired key leaves the set,
// and its tokens stop verifying, once it has been retired for the token
// lifetime plus the leeway plus a minute (the most an instance may keep
// signing with it before it learns of the rotation).
func (s *Service) JWKS(ctx context.Context) ([]byte, error) {
	s.refresh(ctx, s.now())
	now := s.now()
	set := JWKSet{Keys: []JWK{}}
	for _, k := range s.keys.Load().list {
		if k.alive(now, s.window) {
			set.Keys = append(set.Keys, k.jwk)
		}
	}
	return json.Marshal(set)
}

// Routes returns GET /.well-known/jwks.json, the public keys as JWKS
// returns them. Clients may cache the answer for five minutes; a verifier
// meeting an unknown kid should fetch it again.
func (s *Service) Routes() []httpx.Route {
	return []httpx.Route{{
		Method: http.MethodGet, Path: "/.well-known/jwks.json",
		Summary:     "Public keys that verify access tokens",
		Description: "A JSON Web Key Set (RFC 7517) listing every key whose access tokens may still be valid.",
		Tags:        []string{"auth"}, Auth: httpx.Public, Out: JWKSet{},
		Handle: func(c echo.Context) error {
			body, err := s.JWKS(c.Request().Context())
			if err != nil {
				return err
			}
			c.Response().Header().Set("Cache-Control", "public, max-age=300")
			return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, body)
		},
	}}
}
