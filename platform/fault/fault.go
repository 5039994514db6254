// Package fault defines the error values every layer of Gatehouse returns.
//
// An *Error carries a Kind (what went wrong, in terms the HTTP layer maps to
// a status), a stable snake_case Code a client can switch on, and a Message
// written for people. Modules declare sentinels built with New and wrap them
// with context (fmt.Errorf("order %s: %w", id, ErrNotFound)); the HTTP error
// handler finds the *Error with errors.As and answers with its code and
// message only, so wrapping text never reaches a client. An error that holds
// no *Error is internal.
package fault

import "errors"

// Kind classifies an error by what the caller can do about it.
type Kind uint8

// The kinds, each with the HTTP status the error handler gives it.
const (
	Internal         Kind = iota // 500
	Invalid                      // 400
	Unauthenticated              // 401
	Forbidden                    // 403
	NotFound                     // 404
	MethodNotAllowed             // 405
	Conflict                     // 409
	TooLarge                     // 413
	UnsupportedMedia             // 415
	Locked                       // 423
	TooManyRequests              // 429
	BadGateway                   // 502
	Unavailable                  // 503
	GatewayTimeout               // 504
	RequestTimeout               // 408
)

// Error is an error with a kind, a stable code and a message safe to show.
type Error struct {
	Kind    Kind
	Code    string
	Message string
	// Details holds structured context for the client, such as the name of
	// an invalid field. It must never hold secrets or internal messages.
	Details map[string]any
}

// New returns an error of the given kind, code and message.
func New(kind Kind, code, message string) *Error {
	return &Error{Kind: kind, Code: code, Message: message}
}

// Error returns the code and message.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Is reports whether target is an *Error with the same kind and code, so
// a copy made by With still matches its sentinel.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Kind == e.Kind && t.Code == e.Code
}

// With returns a copy of e carrying details; e itself is not changed, so
// sentinels stay safe to share.
func (e *Error) With(details map[string]any) *Error {
	c := *e
	c.Details = details
	return &c
}

// Field returns a validation error (400) naming the offending field.
func Field(field, message string) *Error {
	return &Error{Kind: Invalid, Code: "validation_failed", Message: message,
		Details: map[string]any{"field": field}}
}

// As returns the *Error in err's chain, if there is one.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// Sentinels shared by every store and module. Modules may declare their own
// with more specific codes.
var (
	// ErrNotFound: the resource does not exist, or belongs to another tenant.
	ErrNotFound = New(NotFound, "not_found", "resource not found")
	// ErrConflict: a unique value is already taken.
	ErrConflict = New(Conflict, "conflict", "resource already exists")
	// ErrUnavailable: a dependency (database, cache) cannot be reached.
	ErrUnavailable = New(Unavailable, "unavailable", "a dependency is unavailable")
)
