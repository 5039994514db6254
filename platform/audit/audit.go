// Package audit records the security events every module reports, keeps
// them tamper-evident, and serves them to administrators.
//
// Recording is one call on a Recorder, so capabilities added later add
// their events without touching the writer. Log writes events to the
// structured log; Writer queues them and writes them to the database in
// batches, in the background, so that recording never slows or fails a
// request.
//
// Each tenant's events (and the platform's own, under tenant "") form a
// hash chain: every stored event carries its position (seq), the hash of
// the event before it and a SHA-256 over its own content and those two, so
// Verify finds an event that was changed, deleted or slipped in later.
// Prune deletes old events from the start of a chain and leaves an anchor
// that keeps the rest verifiable. List and Stream query the log, and Routes
// serves it over HTTP, as JSON pages or as NDJSON and CSV exports.
package audit

import (
	"context"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"
)

// Outcomes.
const (
	Success = "success"
	Failure = "failure"
)

// Actor is who did it.
type Actor struct {
	Type string // user, service, system or anonymous
	ID   string // user id, client id, or the masked email of an anonymous login
}

// User returns the actor for a signed-in user.
func User(id string) Actor { return Actor{Type: "user", ID: id} }

// Service returns the actor for a service client.
func Service(id string) Actor { return Actor{Type: "service", ID: id} }

// Anonymous returns the actor for someone not signed in, named by the
// email they tried, masked: "alice@example.com" is "a***@example.com".
func Anonymous(email string) Actor { return Actor{Type: "anonymous", ID: MaskEmail(email)} }

// MaskEmail keeps the first character and the domain of an address.
func MaskEmail(email string) string {
	local, domain, ok := strings.Cut(email, "@")
	if !ok || local == "" {
		return "***"
	}
	// The first character, not byte: half of one is invalid UTF-8, which
	// PostgreSQL refuses, with the rest of the event's batch.
	_, n := utf8.DecodeRuneInString(local)
	return local[:n] + "***@" + domain
}

// Event is one security-relevant thing that happened.
type Event struct {
	Time         time.Time
	TenantID     string
	Actor        Actor
	Action       string // e.g. auth.login
	ResourceType string
	ResourceID   string
	Outcome      string
	IP           string
	UserAgent    string
	RequestID    string
	// Metadata holds details; never secrets.
	Metadata map[string]any
}

// Recorder records events. Record must not block the request for long and
// never fails the request: losing or delaying an event is the writer's
// concern, counted there. The caller hands e.Metadata over: it must not
// change the map after Record.
type Recorder interface {
	Record(ctx context.Context, e Event)
}

// Request is where a request came from, carried in its context so that
// services record it without knowing HTTP.
type Request struct{ IP, UserAgent, RequestID string }

type requestKey struct{}

// WithRequest returns ctx carrying r.
func WithRequest(ctx context.Context, r Request) context.Context {
	return context.WithValue(ctx, requestKey{}, r)
}

// Complete fills e's time and, from ctx, its request fields where unset.
func Complete(ctx context.Context, e *Event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	r, _ := ctx.Value(requestKey{}).(Request)
	if e.IP == "" {
		e.IP = r.IP
	}
	if e.UserAgent == "" {
		e.UserAgent = r.UserAgent
	}
	if e.RequestID == "" {
		e.RequestID = r.RequestID
	}
}

// Log is a Recorder that writes each event as a structured log line.
type Log struct{ Logger *slog.Logger }

// Record writes e to the log.
func (l Log) Record(ctx context.Context, e Event) {
	Complete(ctx, &e)
	l.Logger.LogAttrs(ctx, slog.LevelInfo, "audit",
		slog.String("action", e.Action), slog.String("outcome", e.Outcome),
		slog.String("tenant_id", e.TenantID), slog.String("actor_type", e.Actor.Type), slog.String("actor_id", e.Actor.ID),
		slog.String("resource_type", e.ResourceType), slog.String("resource_id", e.ResourceID),
		slog.String("ip", e.IP), slog.String("user_agent", e.UserAgent), slog.String("request_id", e.RequestID),
		slog.Any("metadata", e.Metadata))
}
