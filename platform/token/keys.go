package token

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"gatehouse/platform/db"
	"gatehouse/platform/fault"
)

// rsaBits is the size of the RSA keys made. 2048 bits (112-bit strength)
// is what RS256 verifiers expect and what NIST SP 800-57 accepts for
// signatures through 2030; keys are rotated, and a token lives minutes. 3072
// bits would cost every request and every sign-in: measured with Go 1.26 on
// the 2-core test machine, a signature goes from 0.85 ms to 2.6 ms and a
// verification from 29 µs to 151 µs. Verifications outnumber signatures, so
// the second figure is the one that matters.
const rsaBits = 2048

// The markers before a stored private key: kept as it is, or sealed with
// AES-256-GCM under the master key (12-byte nonce, then ciphertext and tag).
const (
	markPlain  = "plain:"
	markSealed = "aesgcm:"
)

// keyRow is a row of signing_keys.
type keyRow struct {
	KID        string `gorm:"column:kid;primaryKey"`
	Algorithm  string
	PublicKey  string // PEM, PKIX
	PrivateKey string // a marker, then PKCS#8 DER in standard base64, maybe sealed
	CreatedAt  time.Time
	RetiredAt  *time.Time
}

// TableName tells gorm the table's name.
func (keyRow) TableName() string { return "signing_keys" }

// keySet is the keys of the service's algorithm that can still matter: the
// active one, with its private part, and the retired ones whose tokens may
// still be alive. It is never changed once built.
type keySet struct {
	active *signingKey
	byKID  map[string]*publicKey
	// list is byKID's values, the active key first, then the newest.
	list []*publicKey
}

// signingKey is the key Issue signs with.
type signingKey struct {
	kid     string
	private crypto.Signer // *rsa.PrivateKey or ed25519.PrivateKey
}

// publicKey is a key Verify may accept tokens from.
type publicKey struct {
	kid       string
	public    crypto.PublicKey // *rsa.PublicKey or ed25519.PublicKey
	retiredAt time.Time        // zero while active
	jwk       JWK
}

// alive reports whether tokens signed with k may still be valid at now:
// k is active, or was retired less than window ago.
func (k *publicKey) alive(now time.Time, window time.Duration) bool {
	return k.retiredAt.IsZero() || now.Before(k.retiredAt.Add(window))
}

// errNoActiveKey is load's answer when no key of the algorithm is active.
var errNoActiveKey = errors.New("no active signing key")

// load reads the keys of s's algorithm that are active or retired within
// the window. Keys already parsed in prev are reused rather than parsed
// (and decrypted) again.
func (s *Service) load(ctx context.Context, prev *keySet) (*keySet, error) {
	s.loads.Add(1)
	now := s.now().UTC()
	var rows []keyRow
	err := s.db.Conn(ctx).
		Where("algorithm = ? AND (retired_at IS NULL OR retired_at > ?)", s.cfg.Algorithm, now.Add(-s.window)).
		Order("created_at DESC").Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("read signing keys: %w", err)
	}
	ks := &keySet{byKID: make(map[string]*publicKey, len(rows))}
	for _, r := range rows {
		var retired time.Time
		if r.RetiredAt != nil {
			retired = r.RetiredAt.UTC()
		}
		var pub *publicKey
		if p, ok := prev.lookup(r.KID); ok {
			c := *p
			c.retiredAt = retired
			pub = &c
		} else {
			key, err := s.parsePublic(r)
			if err != nil {
				return nil, err
			}
			pub = &publicKey{kid: r.KID, public: key, retiredAt: retired, jwk: s.jwk(r.KID, key)}
		}
		if r.RetiredAt == nil {
			if ks.active != nil {
				// The unique index forbids this; refuse rather than guess.
				return nil, fmt.Errorf("signing keys %s and %s are both active", ks.active.kid, r.KID)
			}
			if prev != nil && prev.active.kid == r.KID {
				ks.active = prev.active
			} else {
				priv, err := s.parsePrivate(r, pub.public)
				if err != nil {
					return nil, err
				}
				ks.active = &signingKey{kid: r.KID, private: priv}
			}
			ks.list = append([]*publicKey{pub}, ks.list...)
		} else {
			ks.list = append(ks.list, pub)
		}
		ks.byKID[r.KID] = pub
	}
	if ks.active == nil {
		return nil, errNoActiveKey
	}
	return ks, nil
}

// lookup returns the key named kid; ks may be nil.
func (ks *keySet) lookup(kid string) (*publicKey, bool) {
	if ks == nil {
		return nil, false
	}
	k, ok := ks.byKID[kid]
	return k, ok
}

// start loads the keys, first making an active key if there is none. When
// several instances start on an empty database together, the unique index
// on the active key lets one insert succeed; the others read its key.
func (s *Service) start(ctx context.Context) error {
	for range 3 {
		s.lastLoad.Store(s.now().UnixNano())
		ks, err := s.load(ctx, nil)
		if err == nil {
			s.keys.Store(ks)
			return nil
		}
		if !errors.Is(err, errNoActiveKey) {
			return err
		}
		row, err := s.newKey()
		if err != nil {
			return err
		}
		row.CreatedAt = s.now().UTC()
		err = db.Translate(s.db.Conn(ctx).Create(&row).Error)
		switch {
		case err == nil:
			s.log.InfoContext(ctx, "signing key created", "kid", row.KID, "algorithm", row.Algorithm)
		case errors.Is(err, fault.ErrConflict):
			// Another instance made the key first: use it.
		default:
			return fmt.Errorf("store signing key: %w", err)
		}
	}
	return errors.New("cannot create or load the active signing key")
}

// Rotate makes a new key, stores it as the active key and retires the one
// active before, which stays published and accepted until every token it
// signed has expired. It returns the new key's kid. Other instances start
// signing with the new key within a minute and accept its tokens at once.
func (s *Service) Rotate(ctx context.Context) (kid string, err error) {
	row, err := s.newKey()
	if err != nil {
		return "", err
	}
	for attempt := 1; ; attempt++ {
		err = db.Translate(s.db.InTx(ctx, func(ctx context.Context) error {
			now := s.now().UTC()
			conn := s.db.Conn(ctx)
			if err := conn.Model(&keyRow{}).Where("algorithm = ? AND retired_at IS NULL", s.cfg.Algorithm).
				Update("retired_at", now).Error; err != nil {
				return err
			}
			row.CreatedAt = now
			return conn.Create(&row).Error
		}))
		// A conflict means a concurrent Rotate made its key active after
		// this one looked: retire that one too.
		if err == nil || !errors.Is(err, fault.ErrConflict) || attempt == 3 {
			break
		}
	}
	if err != nil {
		return "", fmt.Errorf("rotate signing key: %w", err)
	}
	s.log.InfoContext(ctx, "signing key rotated", "kid", row.KID, "algorithm", row.Algorithm)
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if err := s.reload(ctx); err != nil {
		return "", fmt.Errorf("rotated to signing key %s but cannot load it: %w", row.KID, err)
	}
	return row.KID, nil
}

// newKey makes a key of s's algorithm and returns it as a row to store,
// without CreatedAt.
func (s *Service) newKey() (keyRow, error) {
	var priv crypto.Signer
	switch s.cfg.Algorithm {
	case RS256:
		k, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			return keyRow{}, fmt.Errorf("generate RSA key: %w", err)
		}
		priv = k
	default:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return keyRow{}, fmt.Errorf("generate Ed25519 key: %w", err)
		}
		priv = k
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return keyRow{}, fmt.Errorf("encode public key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return keyRow{}, fmt.Errorf("encode private key: %w", err)
	}
	var id [16]byte
	rand.Read(id[:])
	kid := base64.RawURLEncoding.EncodeToString(id[:])
	return keyRow{
		KID:        kid,
		Algorithm:  s.cfg.Algorithm,
		PublicKey:  string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})),
		PrivateKey: s.seal(kid, der),
	}, nil
}

// parsePublic returns the public key stored in r, checked to be of s's
// algorithm.
func (s *Service) parsePublic(r keyRow) (crypto.PublicKey, error) {
	block, _ := pem.Decode([]byte(r.PublicKey))
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("signing key %s: public key is not PEM", r.KID)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", r.KID, err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if s.cfg.Algorithm == RS256 && k.N.BitLen() >= rsaBits {
			return k, nil
		}
	case ed25519.PublicKey:
		if s.cfg.Algorithm == EdDSA {
			return k, nil
		}
	}
	return nil, fmt.Errorf("signing key %s: public key of type %T does not suit %s", r.KID, key, s.cfg.Algorithm)
}

// parsePrivate returns the private key stored in r, checked to be the
// counterpart of pub.
func (s *Service) parsePrivate(r keyRow, pub crypto.PublicKey) (crypto.Signer, error) {
	der, err := s.open(r.KID, r.PrivateKey)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	clear(der)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", r.KID, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("signing key %s: private key of type %T cannot sign", r.KID, key)
	}
	if p, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !p.Equal(pub) {
		return nil, fmt.Errorf("signing key %s: private key does not match its public key", r.KID)
	}
	return signer, nil
}

// checkStored checks every stored private key against the master key
// before any is used: with keys sealed, the master key must be set and must
// open them; with a master key set, keys stored plain are sealed now. Each
// conditional update seals a key once however many instances start at once.
func (s *Service) checkStored(ctx context.Context) error {
	var rows []keyRow
	if err := s.db.Conn(ctx).Select("kid", "private_key").Find(&rows).Error; err != nil {
		return fmt.Errorf("read signing keys: %w", err)
	}
	for _, r := range rows {
		der, err := s.open(r.KID, r.PrivateKey)
		if err != nil {
			return err
		}
		if s.aead == nil || strings.HasPrefix(r.PrivateKey, markSealed) {
			clear(der)
			continue
		}
		sealed := s.seal(r.KID, der)
		clear(der)
		err = s.db.Conn(ctx).Model(&keyRow{}).Where("kid = ? AND private_key = ?", r.KID, r.PrivateKey).
			Update("private_key", sealed).Error
		if err != nil {
			return fmt.Errorf("encrypt signing key %s: %w", r.KID, err)
		}
		s.log.InfoContext(ctx, "signing key encrypted with the master key", "kid", r.KID)
	}
	return nil
}

// newAEAD returns AES-256-GCM under key.
func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("token master key must be 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("token master key: %w", err)
	}
	return cipher.NewGCM(block)
}

// aad binds a sealed private key to its kid, so that a sealed value copied
// into another row does not open there.
func aad(kid string) []byte { return []byte("gatehouse signing key " + kid) }

// seal returns der as stored: sealed under the master key if there is one,
// else plain.
func (s *Service) seal(kid string, der []byte) string {
	if s.aead == nil {
		return markPlain + base64.StdEncoding.EncodeToString(der)
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(der)+s.aead.Overhead())
	rand.Read(nonce)
	return markSealed + base64.StdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, der, aad(kid)))
}

// open returns the PKCS#8 DER of a stored private key. Its errors are one
// line, fit to stop the server at start.
func (s *Service) open(kid, stored string) ([]byte, error) {
	if b64, ok := strings.CutPrefix(stored, markPlain); ok {
		der, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: stored private key is corrupt", kid)
		}
		return der, nil
	}
	b64, ok := strings.CutPrefix(stored, markSealed)
	if !ok {
		return nil, fmt.Errorf("signing key %s: stored private key has an unknown format", kid)
	}
	if s.aead == nil {
		return nil, fmt.Errorf("signing key %s is encrypted but no master key is configured (auth.master_key)", kid)
	}
	sealed, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(sealed) < s.aead.NonceSize()+s.aead.Overhead() {
		return nil, fmt.Errorf("signing key %s: stored private key is corrupt", kid)
	}
	n := s.aead.NonceSize()
	der, err := s.aead.Open(nil, sealed[:n], sealed[n:], aad(kid))
	if err != nil {
		return nil, fmt.Errorf("signing key %s cannot be decrypted: the master key (auth.master_key) is not the one it was encrypted with", kid)
	}
	return der, nil
}
