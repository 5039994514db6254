// Package httpx is Gatehouse's HTTP layer: the route table, the middleware
// chain every request passes, the JSON error model and the OpenAPI document.
//
// Every endpoint is declared once, as a Route. Server.Mount reads it to put
// the right middleware in front of the handler, and Document reads the same
// values to describe the API, so the docs, the authorization rule and the
// limits of an endpoint cannot drift apart.
package httpx

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// Auth says who may call a route. The zero Auth is invalid, so a route that
// forgets to say is refused at mount time rather than served to anyone.
type Auth struct {
	kind       authKind
	permission string
}

type authKind uint8

const (
	authUnset authKind = iota
	authPublic
	authUser
	authPermission
)

var (
	// Public routes are served to anyone: the identity steps are skipped.
	Public = Auth{kind: authPublic}
	// Authenticated routes need a valid access token, whatever its roles.
	Authenticated = Auth{kind: authUser}
)

// Permission returns the Auth of a route that needs the given permission,
// a "resource:action" string, in the caller's tenant.
func Permission(p string) Auth { return Auth{kind: authPermission, permission: p} }

// IsPublic reports whether the route skips the identity steps.
func (a Auth) IsPublic() bool { return a.kind == authPublic }

// Permission returns the permission a route needs, or "" if none.
func (a Auth) Permission() string { return a.permission }

// Route declares one endpoint.
type Route struct {
	Method string
	// Path is written in OpenAPI form: /v1/orders/{id}. A final "/*"
	// matches any rest of the path (proxied routes); the OpenAPI document
	// shows it as a {path} parameter.
	Path        string
	Summary     string
	Description string
	Tags        []string
	Auth        Auth
	// Limits names the rate-limit policies (configs/gatehouse.yaml) that
	// apply to the route, on top of the global ones.
	Limits []string
	// LimitsInHandler says that the handler decides the user- and
	// tenant-keyed policies among Limits itself (ratelimit.Enforcer.Check),
	// as a public route has no user for the chain to key them by: refresh
	// does, once the token names its user. Without it a public route may
	// not name such a policy.
	LimitsInHandler bool
	// NoDefaultLimits exempts the route from the rate-limit policies every
	// route gets by default (probes and scrapes: a health check limited
	// like an anonymous client would fail its orchestrator's probes). The
	// route's own Limits still apply.
	NoDefaultLimits bool
	// Audit is the audit action recorded for the route; empty for none
	// beyond the access log.
	Audit string
	// In and Out are zero values of the request and response body types;
	// nil for none. They feed the OpenAPI document.
	In, Out any
	// Status is the success status; 0 means 200.
	Status int
	// MaxBodyBytes overrides the server's body limit for this route.
	MaxBodyBytes int64
	// Hidden keeps the route out of the OpenAPI document (asset files).
	Hidden bool
	Handle echo.HandlerFunc
}

// echoPath turns /v1/orders/{id} into Echo's /v1/orders/:id.
func (r Route) echoPath() string {
	if !strings.Contains(r.Path, "{") {
		return r.Path
	}
	var b strings.Builder
	for _, seg := range strings.SplitAfter(r.Path, "/") {
		if strings.HasPrefix(seg, "{") {
			name, slash := strings.CutSuffix(seg, "/")
			seg = ":" + strings.Trim(name, "{}")
			if slash {
				seg += "/"
			}
		}
		b.WriteString(seg)
	}
	return b.String()
}

func (r Route) check() error {
	switch {
	case r.Method == "" || r.Path == "" || !strings.HasPrefix(r.Path, "/"):
		return fmt.Errorf("route %s %q: method and an absolute path are required", r.Method, r.Path)
	case strings.Contains(strings.TrimSuffix(r.Path, "/*"), "*"):
		return fmt.Errorf("route %s %s: \"*\" may only be the last segment", r.Method, r.Path)
	case r.Handle == nil:
		return fmt.Errorf("route %s %s: no handler", r.Method, r.Path)
	case r.Auth.kind == authUnset:
		return fmt.Errorf("route %s %s: Auth is not set (use httpx.Public, Authenticated or Permission)", r.Method, r.Path)
	case r.Auth.kind == authPermission && !strings.Contains(r.Auth.permission, ":"):
		return fmt.Errorf("route %s %s: permission %q is not resource:action", r.Method, r.Path, r.Auth.permission)
	case r.Status != 0 && (r.Status < 100 || r.Status > 599):
		return fmt.Errorf("route %s %s: status %d", r.Method, r.Path, r.Status)
	}
	return nil
}

// docPath is the path as the OpenAPI document shows it.
func (r Route) docPath() string {
	if p, ok := strings.CutSuffix(r.Path, "/*"); ok {
		return p + "/{path}"
	}
	return r.Path
}

func (r Route) status() int {
	if r.Status == 0 {
		return http.StatusOK
	}
	return r.Status
}
