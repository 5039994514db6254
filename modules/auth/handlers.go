package auth

import (
	"crypto/sha256"
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
	Tenant string `json:"tenant"`
	// RefreshToken is the current refresh token of the caller's session;
	// in cookie mode it is the cookie, with the X-CSRF-Token header.
	RefreshToken string `json:"refresh_token"`
	UseCookie    bool   `json:"use_cookie"`
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
// token too: the X-CSRF-Token header must be the cookie's csrfToken, a value
// the frontend got in the body of the token response and that another site
// can neither read nor guess. Bound to the cookie's token, it also picks
// the right cookie when a sibling subdomain has planted another
// gatehouse_refresh beside it (sent first, as its path is longer): a
// planted cookie matches no CSRF token the frontend holds, so the browser
// is never signed in to the planter's account.
func (m *Module) refreshToken(c echo.Context, body string) (string, bool, error) {
	if body != "" {
		return body, false, nil
	}
	header := c.Request().Header.Get(csrfHeader)
	// Every one: any number may have been planted ahead of the user's. One
	// hash each, bounded by the server's header limit.
	cookies := refreshCookies(c, -1)
	if len(cookies) == 0 {
		return "", false, fault.Field("refresh_token", "refresh_token is required")
	}
	for _, v := range cookies {
		if header != "" && subtle.ConstantTimeCompare([]byte(csrfToken(v)), []byte(header)) == 1 {
			return v, true, nil
		}
	}
	return "", false, ErrCSRF
}

// refreshCookies returns the values of the request's gatehouse_refresh
// cookies, at most max of them (-1: all): a browser sends its own and any
// planted beside it.
func refreshCookies(c echo.Context, max int) []string {
	var out []string
	for _, ck := range c.Request().Cookies() {
		if ck.Name == refreshCookie && ck.Value != "" {
			if out = append(out, ck.Value); len(out) == max {
				break
			}
		}
	}
	return out
}

// csrfToken is the CSRF token of a refresh token: a hash, so the token a
// page's scripts may read reveals nothing of the HttpOnly refresh token.
func csrfToken(refresh string) string {
	sum := sha256.Sum256([]byte("gatehouse csrf\x00" + refresh))
	return base64.RawURLEncoding.EncodeToString(sum[:24])
}

const (
	refreshCookie = "gatehouse_refresh"
	csrfHeader    = "X-CSRF-Token"
)

// Cookies returns the session cookies' names. Only Gatehouse may set them:
// the gateway drops an upstream's Set-Cookie for any (app.go).
func Cookies() []string { return []string{refreshCookie} }

// CookiePath is the path the session cookies are scoped to. Nothing under
// it may reach an upstream through the gateway (app.go reserves it), or
// the browser would hand the upstream the refresh cookie.
const CookiePath = "/v1/auth"

// sendPair answers with a token pair; in cookie mode the refresh token goes
// into an HttpOnly cookie, and the body carries its CSRF token instead.
func (m *Module) sendPair(c echo.Context, p Pair, cookie bool) error {
	if cookie {
		c.SetCookie(&http.Cookie{Name: refreshCookie, Value: p.RefreshToken, Path: CookiePath, MaxAge: p.RefreshExpiresIn,
			HttpOnly: true, Secure: m.cookieSecure, SameSite: http.SameSiteStrictMode})
		p.CSRFToken = csrfToken(p.RefreshToken)
		p.RefreshToken = ""
	}
	return c.JSON(http.StatusOK, p)
}

func (m *Module) clearCookies(c echo.Context) {
	c.SetCookie(&http.Cookie{Name: refreshCookie, Path: CookiePath, MaxAge: -1, HttpOnly: true, Secure: m.cookieSecure,
		SameSite: http.SameSiteStrictMode})
}

func (m *Module) logout(c echo.Context) error {
	var req LogoutRequest
	if c.Request().ContentLength != 0 {
		if err := httpx.Bind(c, &req); err != nil {
			return err
		}
	}
	// The bearer's session, and the refresh token's: in cookie mode, after
	// a switch-tenant that did not move the cookie, that is another one.
	// The bearer stands for the user here, so no CSRF token is needed.
	// A few: each costs a database read, and a planted one that hides the
	// user's is of the same sign-in's family only if it is the user's.
	refresh := refreshCookies(c, 8)
	if req.RefreshToken != "" {
		refresh = []string{req.RefreshToken}
	}
	if err := m.svc.Logout(audit.RequestContext(c), httpx.IdentityOf(c), refresh...); err != nil {
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
	raw, fromCookie, err := m.refreshToken(c, req.RefreshToken)
	if err != nil {
		return err
	}
	pair, err := m.svc.SwitchTenant(audit.RequestContext(c), httpx.IdentityOf(c), strings.TrimSpace(req.Tenant), raw, client(c))
	if err != nil {
		return err
	}
	// A session in cookie mode stays there: its scripts never see a
	// refresh token.
	return m.sendPair(c, pair, req.UseCookie || fromCookie)
}
