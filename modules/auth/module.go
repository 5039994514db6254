// Package auth is the identity core: accounts, sign-in, sessions with
// rotating refresh tokens, and the authenticate step of the chain.
//
// Users are global (one email, one password); a membership ties a user to a
// tenant. Signing in opens a session in one tenant: a family of refresh
// tokens, each used once. Access tokens are short-lived JWTs from
// platform/token; revoking a session or a token denies it in kv, so every
// instance refuses it on the next request.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/audit"
	"gatehouse/platform/db"
	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
	"gatehouse/platform/kv"
	"gatehouse/platform/token"
)

// Deps is what the module needs from the platform.
type Deps struct {
	DB      *db.DB
	KV      kv.Store
	Tokens  *token.Service
	Roles   Roles
	Tenants Tenants
	Limits  Limits
	Log     *slog.Logger
	Events  audit.Recorder
	Config  Config
	// CookieSecure marks the refresh cookie Secure (off only for plain-http
	// development).
	CookieSecure bool
	// IntrospectClients are the service credentials allowed to call
	// /v1/oauth/introspect, as "client_id:sha256-hex-of-secret".
	IntrospectClients []string
}

// Module serves /v1/auth and fills the chain's authenticate slot.
type Module struct {
	svc          *Service
	tokens       *token.Service
	log          *slog.Logger
	cookieSecure bool
	clients      map[string][]byte // client id -> SHA-256 of its secret
}

// New returns the module, creating the default tenant if it is missing.
func New(ctx context.Context, d Deps) (*Module, error) {
	st := store{db: d.DB}
	if err := d.Tenants.EnsureTenant(ctx, d.Config.DefaultTenant, "Default"); err != nil {
		return nil, err
	}
	svc, err := newService(st, d.Tenants, d.Roles, d.Limits, d.Tokens, d.KV, d.Config, d.Log, d.Events)
	if err != nil {
		return nil, err
	}
	m := &Module{svc: svc, tokens: d.Tokens, log: d.Log, cookieSecure: d.CookieSecure, clients: map[string][]byte{}}
	for _, c := range d.IntrospectClients {
		id, sum, _ := strings.Cut(c, ":")
		h, err := hex.DecodeString(sum)
		if err != nil || len(h) != sha256.Size {
			return nil, errors.New("auth: introspect client " + id + ": want client_id:sha256-hex")
		}
		m.clients[id] = h
	}
	return m, nil
}

// Service returns the module's service, for other modules' adapters.
func (m *Module) Service() *Service { return m.svc }

// Routes declares the module's endpoints.
func (m *Module) Routes() []httpx.Route {
	tags := []string{"auth"}
	return []httpx.Route{
		{Method: http.MethodPost, Path: "/v1/auth/register", Summary: "Create an account and join a tenant", Tags: tags,
			Auth: httpx.Public, Limits: []string{"register"}, Audit: "auth.register",
			In: RegisterRequest{}, Out: RegisterResponse{}, Status: http.StatusCreated, Handle: m.register},
		{Method: http.MethodPost, Path: "/v1/auth/login", Summary: "Sign in: a token pair for a session in one tenant", Tags: tags,
			Description: "Wrong email and wrong password give the same 401 invalid_credentials in the same time. " +
				"After auth.lockout_threshold failures the account answers 423 account_locked with Retry-After; " +
				"a check that would take the account's failures and its checks under way past that many answers 429 too_many_attempts (Retry-After: 1).",
			Auth: httpx.Public, Limits: []string{"login"}, Audit: "auth.login", In: LoginRequest{}, Out: Pair{}, Handle: m.login},
		{Method: http.MethodPost, Path: "/v1/auth/refresh", Summary: "Rotate a refresh token for a new pair", Tags: tags,
			Description: "Each refresh token works once. Presenting one that was already rotated revokes its whole session " +
				"and answers 401 refresh_token_reused. In cookie mode send {} and the X-CSRF-Token header.",
			Auth: httpx.Public, Limits: []string{"refresh"}, LimitsInHandler: true, Audit: "auth.refresh", In: RefreshRequest{}, Out: Pair{}, Handle: m.refresh},
		{Method: http.MethodPost, Path: "/v1/auth/logout", Summary: "End this session", Tags: tags,
			Auth: httpx.Authenticated, Audit: "auth.logout", In: LogoutRequest{}, Status: http.StatusNoContent, Handle: m.logout},
		{Method: http.MethodPost, Path: "/v1/auth/logout-all", Summary: "End every session of this account", Tags: tags,
			Auth: httpx.Authenticated, Audit: "auth.logout_all", Status: http.StatusNoContent, Handle: m.logoutAll},
		{Method: http.MethodGet, Path: "/v1/auth/me", Summary: "The caller's account, tenant and roles", Tags: tags,
			Description: "roles are the caller's roles in the tenant now, which the access token's may not be.",
			Auth:        httpx.Authenticated, Out: MeResponse{}, Handle: m.me},
		{Method: http.MethodGet, Path: "/v1/auth/sessions", Summary: "The caller's live sessions", Tags: tags,
			Auth: httpx.Authenticated, Out: SessionsResponse{}, Handle: m.sessions},
		{Method: http.MethodDelete, Path: "/v1/auth/sessions/{id}", Summary: "End one of the caller's sessions", Tags: tags,
			Auth: httpx.Authenticated, Audit: "auth.session_revoke", Status: http.StatusNoContent, Handle: m.revokeSession},
		{Method: http.MethodPost, Path: "/v1/auth/password", Summary: "Change the password; ends every other session", Tags: tags,
			Description: "A wrong current password counts as a failed sign-in of the account: after auth.lockout_threshold " +
				"failures the account answers 423 account_locked with Retry-After, here and at sign-in.",
			Auth: httpx.Authenticated, Audit: "auth.password_change", In: PasswordRequest{}, Status: http.StatusNoContent,
			Handle: m.changePassword},
		{Method: http.MethodPost, Path: "/v1/auth/switch-tenant", Summary: "A token pair for another of the caller's tenants", Tags: tags,
			Description: "refresh_token is the current refresh token of the caller's session (in cookie mode, send the cookie and " +
				"X-CSRF-Token instead; the answer then stays in cookie mode): 401 invalid_refresh_token otherwise, and " +
				"401 refresh_token_reused, ending the sign-in, for a rotated one outside the tenant's grace. The new " +
				"session belongs to the same sign-in: logout, a refresh token's reuse and a session's revocation end them all.",
			Auth: httpx.Authenticated, Audit: "auth.switch_tenant", In: SwitchTenantRequest{}, Out: Pair{}, Handle: m.switchTenant},
		{Method: http.MethodPost, Path: "/v1/oauth/introspect", Summary: "RFC 7662 token introspection for services", Tags: []string{"oauth"},
			Description: "HTTP Basic with a client from auth.introspect_clients; form body token=…. " +
				"Unknown, expired or revoked tokens answer {\"active\": false}. roles are the user's roles in the tenant now, " +
				"not those the token was issued with.",
			Auth: httpx.Public, Out: IntrospectResponse{}, Handle: m.introspect},
	}
}

// Authenticate is the chain's authenticate slot: it admits a request with
// a valid, unrevoked bearer access token and records who is calling.
func (m *Module) Authenticate(httpx.Route) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			raw, ok := bearer(c.Request().Header.Get(echo.HeaderAuthorization))
			if !ok {
				return m.unauthorized(c, errors.New("no bearer token"))
			}
			id, err := m.svc.Authenticate(c.Request().Context(), raw)
			if errors.Is(err, token.ErrInvalidToken) {
				return m.unauthorized(c, err)
			}
			if err != nil {
				return err
			}
			return httpx.Admit(c, id, next)
		}
	}
}

// unauthorized answers 401 invalid_token; the reason goes to the debug log
// only, so a client learns nothing about which check failed.
func (m *Module) unauthorized(c echo.Context, cause error) error {
	m.log.Debug("access token refused", "request_id", httpx.RequestID(c), "reason", cause.Error())
	c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer error="invalid_token"`)
	return token.ErrInvalidToken
}

// bearer extracts the token of an "Authorization: Bearer" header.
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" ||
		strings.IndexByte(tok, ' ') >= 0 || strings.IndexByte(tok, '\t') >= 0 { // IndexByte: vectorized, unlike ContainsAny
		return "", false
	}
	return tok, true
}

// IntrospectResponse is the RFC 7662 answer. An inactive token is only
// {"active": false}.
type IntrospectResponse struct {
	Active    bool     `json:"active"`
	TokenType string   `json:"token_type,omitempty"`
	Sub       string   `json:"sub,omitempty"`
	TenantID  string   `json:"tid,omitempty"`
	SessionID string   `json:"sid,omitempty"`
	JTI       string   `json:"jti,omitempty"`
	Iss       string   `json:"iss,omitempty"`
	Aud       []string `json:"aud,omitempty"`
	Exp       int64    `json:"exp,omitempty"`
	Iat       int64    `json:"iat,omitempty"`
	Nbf       int64    `json:"nbf,omitempty"`
	Roles     []string `json:"roles,omitempty"`
}

// dummySecret is compared against for unknown client ids, so a probe cannot
// tell an unknown id from a wrong secret by timing.
var dummySecret = sha256.Sum256([]byte("no such client"))

func (m *Module) introspect(c echo.Context) error {
	id, secret, ok := c.Request().BasicAuth()
	want, known := m.clients[id]
	if !known {
		want = dummySecret[:]
	}
	got := sha256.Sum256([]byte(secret))
	if !ok || subtle.ConstantTimeCompare(got[:], want) != 1 || !known {
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Basic realm="gatehouse"`)
		return ErrInvalidClient
	}
	if mt, _, _ := mime.ParseMediaType(c.Request().Header.Get(echo.HeaderContentType)); mt != echo.MIMEApplicationForm {
		return fault.New(fault.UnsupportedMedia, "unsupported_media_type", "request body must be application/x-www-form-urlencoded")
	}
	raw := c.FormValue("token")
	if raw == "" {
		return fault.Field("token", "token is required")
	}
	cl, err := m.svc.Introspect(audit.RequestContext(c), raw, id)
	if err != nil || cl == nil {
		return c.JSON(http.StatusOK, IntrospectResponse{Active: false})
	}
	return c.JSON(http.StatusOK, IntrospectResponse{Active: true, TokenType: "Bearer", Sub: cl.Subject, TenantID: cl.TenantID,
		SessionID: cl.SessionID, JTI: cl.ID, Iss: cl.Issuer, Aud: cl.Audience, Exp: cl.ExpiresAt.Unix(),
		Iat: cl.IssuedAt.Unix(), Nbf: cl.NotBefore.Unix(), Roles: cl.Roles})
}
