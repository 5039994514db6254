package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/audit"
	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
)

// RegisterRequest is the body of POST /v1/auth/register.
type RegisterRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Name     string `json:"name"`
	// Tenant is the slug of the tenant to join; empty for the default.
	Tenant string `json:"tenant"`
}

// UserResponse is an account as clients see it: never its password hash.
type UserResponse struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// TenantRef names a tenant.
type TenantRef struct {
	ID   string `json:"id"`
	Slug string `json:"slug"`
	Name string `json:"name"`
}

// RegisterResponse is the answer to a registration: the account and the
// tenant it joined. It carries no tokens: sign in next.
type RegisterResponse struct {
	User   UserResponse `json:"user"`
	Tenant TenantRef    `json:"tenant"`
}

// LoginRequest is the body of POST /v1/auth/login.
type LoginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	// Tenant is a slug; empty picks the user's only tenant.
	Tenant string `json:"tenant"`
	// UseCookie asks for the refresh token in an HttpOnly cookie instead of
	// the body (browser frontends).
	UseCookie bool `json:"use_cookie"`
}

// RefreshRequest is the body of POST /v1/auth/refresh. In cookie mode the
// token comes from the cookie and the body may be {}.
type RefreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

// LogoutRequest is the optional body of POST /v1/auth/logout.
type LogoutRequest struct {
	RefreshToken string `json:"refresh_token"`
}

// PasswordRequest is the body of POST /v1/auth/password.
type PasswordRequest struct {
	CurrentPassword string `json:"current_password"`
	NewPassword     string `json:"new_password"`
}

// SwitchTenantRequest is the body of POST /v1/auth/switch-tenant.
type SwitchTenantRequest struct {
	Tenant    string `json:"tenant"`
	UseCookie bool   `json:"use_cookie"`
}

// MeResponse describes the caller.
type MeResponse struct {
	User      UserResponse `json:"user"`
	Tenant    TenantRef    `json:"tenant"`
	Roles     []string     `json:"roles"`
	SessionID string       `json:"session_id"`
}

// SessionResponse is one session in the caller's list.
type SessionResponse struct {
	ID         string    `json:"id"`
	TenantID   string    `json:"tenant_id"`
	Device     string    `json:"device"`
	IP         string    `json:"ip"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	Current    bool      `json:"current"`
}

// SessionsResponse lists the caller's live sessions.
type SessionsResponse struct {
	Sessions []SessionResponse `json:"sessions"`
}

func userResponse(u User) UserResponse {
	return UserResponse{ID: u.ID, Email: u.Email, Name: u.Name, CreatedAt: u.CreatedAt}
}

func tenantRef(t Tenant) TenantRef { return TenantRef{ID: t.ID, Slug: t.Slug, Name: t.Name} }

func client(c echo.Context) Client {
	return Client{IP: c.RealIP(), UserAgent: c.Request().UserAgent()}
}

func (m *Module) register(c echo.Context) error {
	var req RegisterRequest
	if err := httpx.Bind(c, &req); err != nil {
		return err
	}
	u, t, err := m.svc.Register(audit.RequestContext(c), req.Email, req.Password, req.Name, req.Tenant)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, RegisterResponse{User: userResponse(u), Tenant: tenantRef(t)})
}

func (m *Module) login(c echo.Context) error {
	var req LoginRequest
	if err := httpx.Bind(c, &req); err != nil {
		return err
	}
	pair, err := m.svc.Login(audit.RequestContext(c), req.Email, req.Password, req.Tenant, client(c))
	if err != nil {
		return err
	}
	return m.sendPair(c, pair, req.UseCookie)
}

func (m *Module) refresh(c echo.Context) error {
	var req RefreshRequest
	if err := httpx.Bind(c, &req); err != nil {
		return err
	}
	raw, fromCookie, err := m.refreshToken(c, req.RefreshToken)
	if err != nil {
		return err
	}
	pair, err := m.svc.Refresh(audit.RequestContext(c), raw, client(c))
	if err != nil {
		if fromCookie {
			m.clearCookies(c)
		}
		return err
	}
	return m.sendPair(c, pair, fromCookie)
}

// refreshToken takes the token from the body or, in cookie mode, from the
// cookie. A browser sends cookies on its own, so reading one needs the CSRF
// token too (double submit): the X-CSRF-Token header must repeat the CSRF
// cookie, a value the frontend got in the body of the token response and
// that another site can neither read nor guess.
func (m *Module) refreshToken(c echo.Context, body string) (string, bool, error) {
	if body != "" {
		return body, false, nil
	}
	ck, err := c.Cookie(refreshCookie)
	if err != nil || ck.Value == "" {
		return "", false, fault.Field("refresh_token", "refresh_token is required")
	}
	csrf, err := c.Cookie(csrfCookie)
	header := c.Request().Header.Get(csrfHeader)
	if err != nil || header == "" || subtle.ConstantTimeCompare([]byte(csrf.Value), []byte(header)) != 1 {
		return "", false, ErrCSRF
	}
	return ck.Value, true, nil
}

const (
	refreshCookie = "gatehouse_refresh"
	csrfCookie    = "gatehouse_csrf"
	csrfHeader    = "X-CSRF-Token"
)

// Cookies returns the session cookies' names. Only Gatehouse may set them:
// the gateway drops an upstream's Set-Cookie for either (app.go).
func Cookies() []string { return []string{refreshCookie, csrfCookie} }

// CookiePath is the path the session cookies are scoped to. Nothing under
// it may reach an upstream through the gateway (app.go reserves it), or
// the browser would hand the upstream the refresh cookie.
const CookiePath = "/v1/auth"

// sendPair answers with a token pair; in cookie mode the refresh token goes
// into an HttpOnly cookie, with a fresh CSRF cookie beside it.
func (m *Module) sendPair(c echo.Context, p Pair, cookie bool) error {
	if cookie {
		csrf := make([]byte, 24)
		rand.Read(csrf)
		maxAge := p.RefreshExpiresIn
		c.SetCookie(&http.Cookie{Name: refreshCookie, Value: p.RefreshToken, Path: CookiePath, MaxAge: maxAge,
			HttpOnly: true, Secure: m.cookieSecure, SameSite: http.SameSiteStrictMode})
		p.CSRFToken = base64.RawURLEncoding.EncodeToString(csrf)
		c.SetCookie(&http.Cookie{Name: csrfCookie, Value: p.CSRFToken, Path: CookiePath, MaxAge: maxAge,
			HttpOnly: true, Secure: m.cookieSecure, SameSite: http.SameSiteStrictMode})
		p.RefreshToken = ""
	}
	return c.JSON(http.StatusOK, p)
}

func (m *Module) clearCookies(c echo.Context) {
	c.SetCookie(&http.Cookie{Name: refreshCookie, Path: CookiePath, MaxAge: -1, HttpOnly: true, Secure: m.cookieSecure,
		SameSite: http.SameSiteStrictMode})
	c.SetCookie(&http.Cookie{Name: csrfCookie, Path: CookiePath, MaxAge: -1, HttpOnly: true, Secure: m.cookieSecure,
		SameSite: http.SameSiteStrictMode})
}

func (m *Module) logout(c echo.Context) error {
	var req LogoutRequest
	if c.Request().ContentLength != 0 {
		if err := httpx.Bind(c, &req); err != nil {
			return err
		}
	}
	if err := m.svc.Logout(audit.RequestContext(c), httpx.IdentityOf(c), req.RefreshToken); err != nil {
		return err
	}
	m.clearCookies(c)
	return c.NoContent(http.StatusNoContent)
}

func (m *Module) logoutAll(c echo.Context) error {
	if err := m.svc.LogoutAll(audit.RequestContext(c), httpx.IdentityOf(c)); err != nil {
		return err
	}
	m.clearCookies(c)
	return c.NoContent(http.StatusNoContent)
}

func (m *Module) me(c echo.Context) error {
	id := httpx.IdentityOf(c)
	u, t, roles, err := m.svc.Me(c.Request().Context(), id)
	if err != nil {
		return err
	}
	if roles == nil {
		roles = []string{}
	}
	return c.JSON(http.StatusOK, MeResponse{User: userResponse(u), Tenant: tenantRef(t), Roles: roles, SessionID: id.SessionID})
}

func (m *Module) sessions(c echo.Context) error {
	id := httpx.IdentityOf(c)
	list, err := m.svc.Sessions(c.Request().Context(), id)
	if err != nil {
		return err
	}
	out := SessionsResponse{Sessions: make([]SessionResponse, 0, len(list))}
	for _, s := range list {
		out.Sessions = append(out.Sessions, SessionResponse{ID: s.ID, TenantID: s.TenantID, Device: s.UserAgent, IP: s.IP,
			CreatedAt: s.CreatedAt, LastUsedAt: s.LastUsedAt, ExpiresAt: s.ExpiresAt, Current: s.ID == id.SessionID})
	}
	return c.JSON(http.StatusOK, out)
}

func (m *Module) revokeSession(c echo.Context) error {
	if err := m.svc.RevokeSession(audit.RequestContext(c), httpx.IdentityOf(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (m *Module) changePassword(c echo.Context) error {
	var req PasswordRequest
	if err := httpx.Bind(c, &req); err != nil {
		return err
	}
	if err := m.svc.ChangePassword(audit.RequestContext(c), httpx.IdentityOf(c), req.CurrentPassword, req.NewPassword); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (m *Module) switchTenant(c echo.Context) error {
	var req SwitchTenantRequest
	if err := httpx.Bind(c, &req); err != nil {
		return err
	}
	pair, err := m.svc.SwitchTenant(audit.RequestContext(c), httpx.IdentityOf(c), strings.TrimSpace(req.Tenant), client(c))
	if err != nil {
		return err
	}
	return m.sendPair(c, pair, req.UseCookie)
}
