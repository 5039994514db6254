package auth

import "gatehouse/platform/fault"

// The errors of sign-in and sessions. Their messages are what clients see.
var (
	ErrInvalidCredentials = fault.New(fault.Unauthenticated, "invalid_credentials", "email or password is wrong")
	ErrAccountLocked      = fault.New(fault.Locked, "account_locked", "too many failed sign-ins: try again later")
	ErrChecksInFlight     = fault.New(fault.TooManyRequests, "too_many_attempts",
		"too many sign-ins of this account are being checked at once: try again in a moment")
	ErrAlreadyRegistered = fault.New(fault.Conflict, "already_registered", "this email cannot be registered")
	ErrUnknownTenant     = fault.Field("tenant", "no such tenant")
	ErrTenantRequired    = fault.New(fault.Invalid, "tenant_required", "this account belongs to several tenants: name one").
				With(map[string]any{"field": "tenant"})
	ErrInvalidRefresh = fault.New(fault.Unauthenticated, "invalid_refresh_token", "the refresh token is invalid, expired or revoked")
	ErrRefreshReused  = fault.New(fault.Unauthenticated, "refresh_token_reused",
		"the refresh token was already used: every session of its family is revoked")
	ErrWrongPassword    = fault.New(fault.Forbidden, "invalid_current_password", "the current password is wrong")
	ErrNotMember        = fault.New(fault.Forbidden, "not_a_member", "you are not a member of that tenant")
	ErrSessionMissing   = fault.New(fault.NotFound, "not_found", "no such session")
	ErrInvalidClient    = fault.New(fault.Unauthenticated, "invalid_client", "client authentication failed")
	ErrCSRF             = fault.New(fault.Forbidden, "csrf_failed", "the CSRF token is missing or does not match")
	ErrMethodNotAllowed = fault.New(fault.Forbidden, "login_method_not_allowed", "this tenant does not allow password sign-in")
)
