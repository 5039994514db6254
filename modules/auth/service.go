package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"gatehouse/platform/audit"
	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
	"gatehouse/platform/kv"
	"gatehouse/platform/token"
)

// Config holds the settings of sign-in and sessions.
type Config struct {
	AccessTTL     time.Duration
	Leeway        time.Duration
	RefreshTTL    time.Duration // idle expiry of a refresh token
	SessionMaxAge time.Duration // absolute end of a session
	BcryptCost    int
	// BcryptConcurrency bounds bcrypt computations running at once.
	BcryptConcurrency int
	// BcryptWorker, when set, builds the command of a helper process
	// that runs bcrypt (ServeBcryptWorker); nil runs it in this process.
	BcryptWorker     func() *exec.Cmd
	LockoutThreshold int
	LockoutDuration  time.Duration
	DefaultTenant    string
	// FailDelay is the first of the growing delays put on failed logins
	// before the lockout; it doubles with each failure. 0 in tests.
	FailDelay time.Duration
}

// Password bounds. bcrypt reads only the first 72 bytes of a password, so
// longer ones are refused rather than silently truncated.
const (
	minPassword = 8
	maxPassword = 72
	maxEmail    = 254
	maxName     = 200
)

// Client describes where a request comes from, for session records.
type Client struct {
	IP, UserAgent string
}

// Pair is the OAuth 2.0 token response.
type Pair struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int    `json:"expires_in"`
	RefreshToken     string `json:"refresh_token,omitempty"`
	RefreshExpiresIn int    `json:"refresh_expires_in"`
	// CSRFToken is set in cookie mode only: send it back as X-CSRF-Token
	// when the refresh token travels in the cookie.
	CSRFToken string `json:"csrf_token,omitempty"`
}

// Service holds the rules of accounts, sign-in and sessions.
type Service struct {
	store   store
	tenants Tenants
	roles   Roles
	limits  Limits
	tokens  *token.Service
	kv      kv.Store
	cfg     Config
	log     *slog.Logger
	events  audit.Recorder
	now     func() time.Time
	// hasher runs bcrypt behind a concurrency bound; its dummy hash is
	// compared against when the email is unknown, so that an unknown email
	// costs the same bcrypt time as a wrong password.
	hasher *hasher
	// rebuilding lets one request rebuild the denylist while the others
	// wait for it, or for their contexts' end (see denylistReady); held,
	// it guards how the last rebuild that failed ended, and when.
	rebuilding chan struct{}
	rebuildErr error
	rebuiltAt  time.Time
	// life ends with Close: a rebuild begun by a request ends with it.
	life context.Context
	end  context.CancelFunc
}

func newService(st store, tenants Tenants, roles Roles, limits Limits, tokens *token.Service, store kv.Store, cfg Config, log *slog.Logger, events audit.Recorder) (*Service, error) {
	h := &hasher{gate: newGate(cfg.BcryptConcurrency), cost: cfg.BcryptCost, log: log}
	if cfg.BcryptWorker != nil {
		h.procs = newHelpers(cfg.BcryptConcurrency, cfg.BcryptWorker)
	}
	h.warm()
	life, end := context.WithCancel(context.Background())
	return &Service{store: st, tenants: tenants, roles: roles, limits: limits, tokens: tokens, kv: store, cfg: cfg, log: log, events: events,
		now: func() time.Time { return time.Now().UTC() }, hasher: h, life: life, end: end, rebuilding: make(chan struct{}, 1)}, nil
}

// Close ends a denylist rebuild under way and stops the idle bcrypt helper
// processes.
func (s *Service) Close() {
	s.end()
	if s.hasher.procs != nil {
		s.hasher.procs.close()
	}
}

// normalizeEmail trims and lower-cases an email, and checks its form.
func normalizeEmail(email string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(email))
	if e == "" {
		return "", fault.Field("email", "email is required")
	}
	if len(e) > maxEmail {
		return "", fault.Field("email", "email is too long")
	}
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || !strings.Contains(e[strings.LastIndexByte(e, '@'):], ".") {
		return "", fault.Field("email", "email is not a valid address")
	}
	return e, nil
}

func checkPassword(field, pw string) error {
	switch {
	case utf8.RuneCountInString(pw) < minPassword:
		return fault.Field(field, fmt.Sprintf("password must have at least %d characters", minPassword))
	case len(pw) > maxPassword:
		return fault.Field(field, fmt.Sprintf("password must be at most %d bytes (bcrypt's limit)", maxPassword))
	}
	return nil
}

// Register creates a user and its membership in the named tenant (or the
// default one). An email already registered anywhere answers
// ErrAlreadyRegistered, which says nothing about which tenant holds it.
func (s *Service) Register(ctx context.Context, email, password, name, tenantSlug string) (User, Tenant, error) {
	email, err := normalizeEmail(email)
	if err != nil {
		return User{}, Tenant{}, err
	}
	if err := checkPassword("password", password); err != nil {
		return User{}, Tenant{}, err
	}
	name = strings.TrimSpace(name)
	if utf8.RuneCountInString(name) > maxName {
		return User{}, Tenant{}, fault.Field("name", "name is too long")
	}
	t, err := s.tenant(ctx, tenantSlug)
	if err != nil {
		return User{}, Tenant{}, err
	}
	hash, err := s.hasher.hash(ctx, password)
	if err != nil {
		return User{}, Tenant{}, err
	}
	now := s.now()
	u := User{ID: newID(), Email: email, Name: name, PasswordHash: string(hash), Status: statusActive, CreatedAt: now, UpdatedAt: now}
	join := func(ctx context.Context) error { return s.tenants.Join(ctx, t.ID, u.ID) }
	if err := s.store.createUser(ctx, u, join); err != nil {
		if errors.Is(err, fault.ErrConflict) {
			s.record(ctx, audit.Event{Action: "auth.register", Outcome: audit.Failure, TenantID: t.ID,
				Actor: audit.Anonymous(email), Metadata: map[string]any{"reason": "already_registered"}})
			return User{}, Tenant{}, ErrAlreadyRegistered
		}
		return User{}, Tenant{}, err
	}
	s.record(ctx, audit.Event{Action: "auth.register", Outcome: audit.Success, TenantID: t.ID,
		Actor: audit.User(u.ID), ResourceType: "user", ResourceID: u.ID})
	return u, t, nil
}

// tenant returns the tenant named by slug, or the default tenant.
func (s *Service) tenant(ctx context.Context, slug string) (Tenant, error) {
	if slug == "" {
		slug = s.cfg.DefaultTenant
	}
	if len(slug) > 64 {
		return Tenant{}, ErrUnknownTenant
	}
	t, err := s.tenants.TenantBySlug(ctx, slug)
	if isNotFound(err) || (err == nil && t.Status != statusActive) {
		return Tenant{}, ErrUnknownTenant
	}
	return t, err
}

// Login checks the credentials and starts a session in the named tenant,
// or in the user's only tenant when none is named.
func (s *Service) Login(ctx context.Context, email, password, tenantSlug string, client Client) (Pair, error) {
	email, err := normalizeEmail(email)
	if err != nil {
		return Pair{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, maxCheck)
	defer cancel()
	a, err := s.claimAttempt(ctx, email)
	if err != nil {
		return Pair{}, err
	}
	defer a.done()
	if password == "" || len(password) > maxPassword {
		// No account has such a password; still cost what a check costs.
		if _, err := s.hasher.compare(ctx, nil, password); err != nil {
			return Pair{}, err
		}
		return Pair{}, s.failLogin(ctx, a, email, "", "bad_password_length")
	}
	u, err := s.store.userByEmail(ctx, email)
	if isNotFound(err) {
		if _, err := s.hasher.compare(ctx, nil, password); err != nil {
			return Pair{}, err
		}
		return Pair{}, s.failLogin(ctx, a, email, "", "unknown_email")
	}
	if err != nil {
		return Pair{}, err
	}
	if ok, err := s.hasher.compare(ctx, []byte(u.PasswordHash), password); err != nil {
		return Pair{}, err
	} else if !ok {
		return Pair{}, s.failLogin(ctx, a, email, u.ID, "wrong_password")
	}
	if u.Status != statusActive {
		return Pair{}, s.failLogin(ctx, a, email, u.ID, "user_"+u.Status)
	}
	t, err := s.pickMembership(ctx, u.ID, tenantSlug)
	if err != nil {
		if errors.Is(err, ErrTenantRequired) {
			// The password was right: a user who forgets to name a
			// tenant must not lock the account.
			if err := a.pass(ctx); err != nil {
				return Pair{}, err
			}
			return Pair{}, err
		}
		// Not a member there: the same answer as a wrong password, so
		// memberships cannot be probed.
		return Pair{}, s.failLogin(ctx, a, email, u.ID, "not_a_member")
	}
	// The password was right: its check does not count.
	if err := a.pass(ctx); err != nil {
		return Pair{}, err
	}
	if !slices.Contains(strings.Fields(t.LoginMethods), "password") {
		s.record(ctx, audit.Event{Action: "auth.login", Outcome: audit.Failure, TenantID: t.ID, Actor: audit.User(u.ID),
			Metadata: map[string]any{"reason": "password_login_disabled"}})
		return Pair{}, ErrMethodNotAllowed
	}
	if cost, _ := bcrypt.Cost([]byte(u.PasswordHash)); cost != s.cfg.BcryptCost {
		// Made at another auth.bcrypt_cost: hashed again at this one, so
		// that its checks take what the others' (and the dummy's) take.
		// Only where the hash is still the one just checked, or this would
		// undo a password change made meanwhile.
		hash, err := s.hasher.hash(ctx, password)
		if err != nil {
			return Pair{}, err
		}
		if ok, err := s.store.rehash(ctx, u.ID, u.PasswordHash, string(hash), s.now()); err != nil {
			return Pair{}, err
		} else if ok {
			u.PasswordHash = string(hash)
		} else if cur, err := s.store.userByID(ctx, u.ID); err != nil {
			return Pair{}, err
		} else if same, err := s.hasher.compare(ctx, []byte(cur.PasswordHash), password); err != nil {
			return Pair{}, err
		} else if same {
			// Another sign-in rehashed it first; a password change
			// would not match, and the session is then refused.
			u.PasswordHash = cur.PasswordHash
		}
	}
	pair, sid, err := s.startSession(ctx, u.ID, t, client, sessionCause{passwordHash: u.PasswordHash}, "")
	if errors.Is(err, errSessionCauseGone) {
		// The password changed since it was checked: this sign-in used
		// the old one.
		return Pair{}, s.failLogin(ctx, a, email, u.ID, "password_changed")
	}
	if err != nil {
		return Pair{}, err
	}
	s.record(ctx, audit.Event{Action: "auth.login", Outcome: audit.Success, TenantID: t.ID, Actor: audit.User(u.ID),
		ResourceType: "session", ResourceID: sid})
	return pair, nil
}

// pickMembership finds the tenant of the user's active membership named by
// slug, or of the only one when no tenant is named.
func (s *Service) pickMembership(ctx context.Context, userID, slug string) (Tenant, error) {
	if slug == "" {
		ids, err := s.tenants.ActiveTenants(ctx, userID)
		if err != nil {
			return Tenant{}, err
		}
		switch len(ids) {
		case 0:
			return Tenant{}, ErrNotMember
		case 1:
			t, err := s.tenants.TenantByID(ctx, ids[0])
			if err == nil && t.Status != statusActive {
				return Tenant{}, ErrNotMember
			}
			return t, err
		}
		return Tenant{}, ErrTenantRequired
	}
	t, err := s.tenant(ctx, slug)
	if err != nil {
		return Tenant{}, ErrNotMember
	}
	status, err := s.tenants.MemberStatus(ctx, t.ID, userID)
	if isNotFound(err) || (err == nil && status != statusActive) {
		return Tenant{}, ErrNotMember
	}
	return t, err
}

// An account's password checks are counted in two keys: login:fail: holds
// the failures within the lockout window, login:checks: a hold (kv.Hold)
// for each check under way. A check is made only while the failures and
// the checks under way together stay within the threshold, so concurrent
// guesses cannot all get past the lock that the first ones' failures are
// about to write; and only failures lock, so neither right sign-ins at
// once (an app on many devices, a retry storm) nor checks that end without
// an answer (the client gone, a store failing) lock the account or hold up
// its next sign-ins. Each check ends its own hold, or the hold ends by
// itself after checkHold: nothing a check does can count another's end,
// and an instance that dies mid-check holds the account up for no longer.

// maxCheck bounds a password check, its queue for bcrypt included: its
// context ends then. Its hold lasts longer, so that it never ends first.
const (
	maxCheck  = 2 * time.Minute
	checkHold = maxCheck + 30*time.Second
)

// attempt is a password check counted as under way, until it ends.
type attempt struct {
	s    *Service
	key  string // the email's digest
	id   string // its hold on login:checks:
	once sync.Once
}

// claimAttempt refuses a password check for email while its account is
// locked (423), or while the checks counted could lock it before this one
// is made (429 with a second's wait); otherwise it counts the check as
// under way. The caller ends it with fail or pass, and with done on every
// other way out, and makes it within maxCheck.
func (s *Service) claimAttempt(ctx context.Context, email string) (*attempt, error) {
	a := &attempt{s: s, key: digest(email), id: newID()}
	if until, err := s.kv.Get(ctx, "login:lock:"+a.key); err == nil {
		return nil, s.locked(until)
	} else if !errors.Is(err, kv.ErrNotFound) {
		return nil, err
	}
	busy, err := s.kv.Hold(ctx, "login:checks:"+a.key, a.id, checkHold)
	if err != nil {
		a.done() // the hold may have been made, its answer lost
		return nil, err
	}
	// Read after the hold: a failure is counted before its check's hold
	// ends (fail), so no check escapes both.
	failed, err := s.failures(ctx, a.key)
	switch {
	case err != nil:
		a.done()
		return nil, err
	case failed >= int64(s.cfg.LockoutThreshold):
		// The lock the last failure wrote is missing (its write failed):
		// written now, or every sign-in would wait for the window's end.
		a.done()
		return nil, s.lock(ctx, email, audit.Anonymous(email))
	case failed+busy > int64(s.cfg.LockoutThreshold):
		a.done()
		return nil, busyError{}
	}
	return a, nil
}

func (s *Service) failures(ctx context.Context, key string) (int64, error) {
	v, err := s.kv.Get(ctx, "login:fail:"+key)
	if errors.Is(err, kv.ErrNotFound) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(v), 10, 64)
}

// fail counts the check as a failure, then ends it, and returns the
// failures within the window. A client that goes away does not spare it.
func (a *attempt) fail(ctx context.Context) (int64, error) {
	defer a.done()
	return a.s.kv.Incr(context.WithoutCancel(ctx), "login:fail:"+a.key, 1, a.s.cfg.LockoutDuration)
}

// pass ends the check, whose password was right, and forgets the
// account's failures.
func (a *attempt) pass(ctx context.Context) error {
	defer a.done()
	return a.s.kv.Delete(ctx, "login:fail:"+a.key)
}

// done ends the check's hold, once, however the check ended. If the store
// cannot be reached, the hold ends by itself after checkHold.
func (a *attempt) done() {
	a.once.Do(func() {
		if err := a.s.kv.Release(context.Background(), "login:checks:"+a.key, a.id); err != nil {
			a.s.log.Warn("a password check's hold was not released: it ends by itself", "within", checkHold.String(), "error", err.Error())
		}
	})
}

// busyError is ErrChecksInFlight with the time to wait, for Retry-After.
type busyError struct{}

func (busyError) Error() string             { return ErrChecksInFlight.Error() }
func (busyError) Unwrap() error             { return ErrChecksInFlight }
func (busyError) RetryAfter() time.Duration { return time.Second }

// lock locks the account of email for the lockout duration, unless it is
// locked already, and returns the error that says so.
func (s *Service) lock(ctx context.Context, email string, actor audit.Actor) error {
	until := s.now().Add(s.cfg.LockoutDuration)
	v := []byte(strconv.FormatInt(until.Unix(), 10))
	stored, err := s.kv.SetNX(context.WithoutCancel(ctx), "login:lock:"+digest(email), v, s.cfg.LockoutDuration)
	if err != nil {
		return err
	}
	// The failures are left as they are: reset here, checks under way as
	// it was written would count from 1 again. They expire before the lock
	// does, as they began before it and live as long.
	if stored {
		s.record(ctx, audit.Event{Action: "auth.lockout", Outcome: audit.Success, Actor: actor,
			Metadata: map[string]any{"until": until}})
	}
	return s.locked(v)
}

// failLogin records a failed login, counts it against the account (a),
// locks the account at the threshold, and slows the next tries down
// before that.
func (s *Service) failLogin(ctx context.Context, a *attempt, email, userID, reason string) error {
	actor := audit.Anonymous(email)
	if userID != "" {
		actor = audit.User(userID)
	}
	s.record(ctx, audit.Event{Action: "auth.login", Outcome: audit.Failure, Actor: actor, Metadata: map[string]any{"reason": reason}})
	n, err := a.fail(ctx)
	if err != nil {
		return err
	}
	if n >= int64(s.cfg.LockoutThreshold) {
		return s.lock(ctx, email, actor)
	}
	if n >= 2 && s.cfg.FailDelay > 0 {
		delay := min(s.cfg.FailDelay<<(n-2), 2*time.Second)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
	}
	return ErrInvalidCredentials
}

// LockedError is ErrAccountLocked with the time to wait, for Retry-After.
// The error handler turns its RetryAfter into the Retry-After header.
type LockedError struct{ wait time.Duration }

func (e LockedError) Error() string             { return ErrAccountLocked.Error() }
func (e LockedError) Unwrap() error             { return ErrAccountLocked }
func (e LockedError) RetryAfter() time.Duration { return e.wait }

func (s *Service) locked(until []byte) error {
	sec, _ := strconv.ParseInt(string(until), 10, 64)
	return LockedError{wait: max(time.Unix(sec, 0).Sub(s.now()), time.Second)}
}

// startSession opens a session in the tenant and issues its first pair,
// if its cause still holds (errSessionCauseGone if not). The session joins
// family, or starts its own.
func (s *Service) startSession(ctx context.Context, userID string, t Tenant, client Client, cause sessionCause, family string) (Pair, string, error) {
	now := s.now()
	raw, hash := newRefreshToken()
	sess := Session{ID: newID(), UserID: userID, TenantID: t.ID, UserAgent: truncate(client.UserAgent, 256),
		IP: client.IP, CreatedAt: now, LastUsedAt: now, ExpiresAt: now.Add(s.cfg.SessionMaxAge)}
	if family == "" {
		family = sess.ID
	}
	sess.FamilyID = &family
	rt := RefreshToken{ID: newID(), SessionID: sess.ID, TokenHash: hash, CreatedAt: now, ExpiresAt: s.refreshExpiry(now, sess)}
	if err := s.store.createSession(ctx, sess, rt, cause); err != nil {
		return Pair{}, "", err
	}
	pair, err := s.pair(ctx, userID, t.ID, sess.ID, raw, rt.ExpiresAt)
	return pair, sess.ID, err
}

// refreshExpiry is the idle expiry, cut at the session's absolute end.
func (s *Service) refreshExpiry(now time.Time, sess Session) time.Time {
	exp := now.Add(s.cfg.RefreshTTL)
	if exp.After(sess.ExpiresAt) {
		return sess.ExpiresAt
	}
	return exp
}

func (s *Service) pair(ctx context.Context, userID, tenantID, sid string, refresh string, refreshExp time.Time) (Pair, error) {
	roles, err := s.roles.RoleNames(ctx, tenantID, userID)
	if err != nil {
		return Pair{}, err
	}
	access, _, err := s.tokens.Issue(ctx, userID, tenantID, sid, roles)
	if err != nil {
		return Pair{}, err
	}
	return Pair{AccessToken: access, TokenType: "Bearer", ExpiresIn: int(s.cfg.AccessTTL.Seconds()),
		RefreshToken: refresh, RefreshExpiresIn: int(refreshExp.Sub(s.now()).Seconds())}, nil
}

// Refresh rotates a refresh token: the token is used up and a new pair is
// issued in the same session. A token used again after its rotation, past
// the tenant's grace, revokes the whole session: whoever holds the other
// copy — the user or a thief — must sign in again.
func (s *Service) Refresh(ctx context.Context, raw string, client Client) (Pair, error) {
	rt, sess, err := s.liveRefresh(ctx, raw)
	if err != nil {
		return Pair{}, err
	}
	now := s.now()
	if s.limits != nil {
		if err := s.limits.Check(ctx, "refresh", sess.UserID); err != nil {
			return Pair{}, err
		}
	}
	t, err := s.tenants.TenantByID(ctx, sess.TenantID)
	if err != nil {
		return Pair{}, err
	}
	status, err := s.tenants.MemberStatus(ctx, sess.TenantID, sess.UserID)
	if isNotFound(err) || (err == nil && (status != statusActive || t.Status != statusActive)) {
		return Pair{}, ErrInvalidRefresh
	}
	if err != nil {
		return Pair{}, err
	}

	next, nextHash := newRefreshToken()
	parent := rt.ID
	child := RefreshToken{ID: newID(), SessionID: sess.ID, ParentID: &parent, TokenHash: nextHash, CreatedAt: now,
		ExpiresAt: s.refreshExpiry(now, sess)}
	won, claimed, err := s.store.rotate(ctx, rt.ID, t.RefreshGraceUses, now.Add(-t.RefreshGraceWindow), child, now)
	if err != nil {
		return Pair{}, err
	}
	if !claimed {
		return Pair{}, s.reused(ctx, sess)
	}
	s.record(ctx, audit.Event{Action: "auth.refresh", Outcome: audit.Success, TenantID: sess.TenantID,
		Actor: audit.User(sess.UserID), ResourceType: "session", ResourceID: sess.ID,
		Metadata: map[string]any{"grace": !won}})
	return s.pair(ctx, sess.UserID, sess.TenantID, sess.ID, next, child.ExpiresAt)
}

// liveRefresh finds a refresh token, used or not, with its session, if
// neither is revoked nor expired; else ErrInvalidRefresh.
func (s *Service) liveRefresh(ctx context.Context, raw string) (RefreshToken, Session, error) {
	hash, ok := parseRefreshToken(raw)
	if !ok {
		return RefreshToken{}, Session{}, ErrInvalidRefresh
	}
	rt, sess, err := s.store.refreshToken(ctx, hash)
	if isNotFound(err) {
		return RefreshToken{}, Session{}, ErrInvalidRefresh
	}
	if err != nil {
		return RefreshToken{}, Session{}, err
	}
	now := s.now()
	if sess.RevokedAt != nil || !now.Before(sess.ExpiresAt) || !now.Before(rt.ExpiresAt) {
		return RefreshToken{}, Session{}, ErrInvalidRefresh
	}
	return rt, sess, nil
}

// reused revokes the session whose rotated token came back, with every
// session switched to from its sign-in: whoever holds the other copy must
// not keep one of them.
func (s *Service) reused(ctx context.Context, sess Session) error {
	if _, err := s.endSessions(ctx, sess.UserID, "refresh_token_reused",
		func(q *gorm.DB) *gorm.DB { return q.Where("id = ?", sess.ID) }, true); err != nil {
		return err
	}
	s.record(ctx, audit.Event{Action: "auth.refresh_token_reused", Outcome: audit.Failure, TenantID: sess.TenantID,
		Actor: audit.User(sess.UserID), ResourceType: "session", ResourceID: sess.ID,
		Metadata: map[string]any{"family_revoked": true}})
	return ErrRefreshReused
}

// endSessions revokes the user's live sessions that where selects (nil:
// all; with families, their whole families) in the database, and denies
// them in kv so that every instance refuses their access tokens on the
// next request. A session's denial needs to outlive only the access tokens
// issued in it.
//
// It reads again after revoking, until nothing new turns up: a switch-tenant
// whose origin was live when it checked (and held its row) commits before
// the revocation of that origin does, so a session it opened after the
// first read is found by the next (sessionCause).
//
// The denials come first. Revoked first, a failed denial (kv down for a
// moment) would leave sessions revoked in the database whose access tokens
// still pass, and a retry would find no live session to deny. Denied
// first, a failure leaves them live and the retry does it all again; a
// session denied but not revoked only loses its access tokens early.
func (s *Service) endSessions(ctx context.Context, userID, reason string, where func(*gorm.DB) *gorm.DB, families bool) ([]string, error) {
	var all []string
	for range 10 { // each round needs a new switch, made with the last round's session
		ids, err := s.store.unrevokedSessions(ctx, userID, where, families)
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			break
		}
		for _, id := range ids {
			if err := s.kv.Set(ctx, "deny:sid:"+id, []byte{1}, s.denyWindow()); err != nil {
				return nil, err
			}
		}
		if err := s.store.revokeSessions(ctx, ids, reason, s.now()); err != nil {
			return nil, err
		}
		all = append(all, ids...)
	}
	return all, nil
}

// denyPastExp is how long a denial must outlast the exp of the tokens it
// denies: a token passes until exp + leeway on a verifier whose clock may
// run up to the leeway (the clock skew allowed) behind the issuer's or the
// revoker's.
func (s *Service) denyPastExp() time.Duration { return 2 * s.cfg.Leeway }

func (s *Service) denyToken(ctx context.Context, id *httpx.Identity) error {
	ttl := time.Until(id.ExpiresAt) + s.denyPastExp()
	if ttl <= 0 {
		return nil
	}
	return s.kv.Set(ctx, "deny:jti:"+id.TokenID, []byte{1}, ttl)
}

// denyEpochKey marks a key-value store that holds the whole denylist. A
// store that lost its keys lacks it: Redis restarted without persistence
// or flushed, or the in-process store of a server that restarted. Until the
// denylist is rebuilt, a token of a session revoked before the loss would
// pass; so the first request that finds the marker missing rebuilds it from
// the sessions revoked in the database within an access token's lifetime,
// before any token is trusted. (jti denials come with a revoked session.)
const denyEpochKey = "deny:epoch"

func (s *Service) denylistReady(ctx context.Context) error {
	// Get, not ExistsAny: a kv.Mirror keeps what Get finds, so on Redis
	// this costs no round trip.
	if _, err := s.kv.Get(ctx, denyEpochKey); err == nil {
		return nil
	} else if !errors.Is(err, kv.ErrNotFound) {
		return err
	}
	return s.rebuildDenylist(ctx, true)
}

// rebuildDenylist writes the denials of the sessions revoked within an
// access token's lifetime, then the marker; unless the marker, read from
// the shared store, shows that it was rebuilt while this call waited for
// the lock, or a rebuild failed meanwhile (its error is this call's too:
// each waiter trying again in turn would hold the last for the sum of
// their tries). A request's rebuild (detach) outlives the request: the
// requests waiting on the lock need it done, and with thousands of
// sessions it takes a while, so a client that gave up would leave the
// next to start again. It ends after rebuildTimeout, or with Close.
func (s *Service) rebuildDenylist(ctx context.Context, detach bool) error {
	asked := time.Now()
	select {
	case s.rebuilding <- struct{}{}:
		defer func() { <-s.rebuilding }()
	case <-ctx.Done():
		return ctx.Err() // gave up while waiting
	}
	if s.rebuildErr != nil && s.rebuiltAt.After(asked) {
		return s.rebuildErr
	}
	if detach {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), rebuildTimeout)
		defer cancel()
		defer context.AfterFunc(s.life, cancel)()
	}
	if _, err := kv.Shared(s.kv).Get(ctx, denyEpochKey); err == nil {
		return nil
	}
	now := s.now()
	n, err := s.denyRevokedSince(ctx, now, now.Add(-s.denyWindow()))
	if err != nil {
		s.rebuildErr, s.rebuiltAt = err, time.Now()
		return err
	}
	if err := s.kv.Set(ctx, denyEpochKey, []byte(now.Format(time.RFC3339)), 0); err != nil {
		s.rebuildErr, s.rebuiltAt = err, time.Now()
		return err
	}
	s.log.InfoContext(ctx, "access-token denylist rebuilt from the database", "revoked_sessions", n)
	return nil
}

// rebuildTimeout bounds a denylist rebuild begun by a request, which for
// tens of thousands of revoked sessions takes seconds.
const rebuildTimeout = 20 * time.Second

// denyWindow is how long after a session's revocation its denial is kept:
// past the exp of every access token issued in it.
func (s *Service) denyWindow() time.Duration { return s.cfg.AccessTTL + s.denyPastExp() }

// denyRevokedSince writes again, where missing, the denial of each session
// revoked after since that still needs one at now, for the rest of its
// denyWindow; it returns how many sessions were revoked since. The newest
// first: a store that lost its latest writes lost theirs. All in one
// kv.SetNXAll, so thousands cost a few round trips and, if any was missing,
// one message to the other instances.
func (s *Service) denyRevokedSince(ctx context.Context, now, since time.Time) (int, error) {
	revoked, err := s.store.revokedSince(ctx, since)
	if err != nil {
		return 0, err
	}
	denials := make([]kv.Entry, 0, len(revoked))
	for _, r := range revoked {
		if ttl := r.RevokedAt.Add(s.denyWindow()).Sub(now); ttl > 0 {
			denials = append(denials, kv.Entry{Key: "deny:sid:" + r.ID, Value: []byte{1}, TTL: ttl})
		}
	}
	if _, err := kv.SetNXAll(ctx, s.kv, denials); err != nil {
		return 0, err
	}
	return len(revoked), nil
}

// reassertWindow is how far back ReassertDenials looks unless asked for
// all: a store that loses only its latest writes loses the last seconds'
// ones.
const reassertWindow = time.Minute

// ReassertDenials writes again, where missing, the denials of the sessions
// revoked in the last minute, or with all every denial still needed. A
// key-value store can lose its latest writes and keep the rest, deny:epoch
// included: the last second's when a Redis replica is promoted before it
// had them or a Redis restarts from an AOF fsynced every second, the last
// minutes' when it restarts from an RDB snapshot (by default taken every
// one to sixty minutes, as writes come). The epoch marker cannot see such
// a loss, and a revoked session's access tokens would pass again until
// they expire. Run every few seconds, and with all every minute (app.go
// does, on Redis), this bounds that to the period. A denial still there
// costs its share of a pipelined round trip, and no message to the other
// instances.
//
// It first reads the marker from the shared store itself. A store flushed
// while every instance stayed subscribed (FLUSHALL) sends no message, and
// a kv.Mirror's copy of the marker would keep the lost denylist trusted
// for up to 30 s; a missing marker rebuilds the whole denylist instead.
func (s *Service) ReassertDenials(ctx context.Context, all bool) error {
	if _, err := kv.Shared(s.kv).Get(ctx, denyEpochKey); errors.Is(err, kv.ErrNotFound) {
		return s.rebuildDenylist(ctx, false)
	} else if err != nil {
		return err
	}
	window := reassertWindow
	if all {
		window = s.denyWindow()
	}
	now := s.now()
	_, err := s.denyRevokedSince(ctx, now, now.Add(-window))
	return err
}

// Authenticate verifies an access token and checks that neither its
// session nor the token itself has been revoked.
func (s *Service) Authenticate(ctx context.Context, raw string) (httpx.Identity, error) {
	c, err := s.verify(ctx, raw)
	if err != nil {
		return httpx.Identity{}, err
	}
	return httpx.Identity{UserID: c.Subject, TenantID: c.TenantID, SessionID: c.SessionID, TokenID: c.ID,
		Roles: c.Roles, ExpiresAt: c.ExpiresAt.Time}, nil
}

func (s *Service) verify(ctx context.Context, raw string) (*token.Claims, error) {
	c, err := s.tokens.Verify(ctx, raw)
	if err != nil {
		return nil, err
	}
	if err := s.denylistReady(ctx); err != nil {
		return nil, err
	}
	// Both revocations, the session's and the token's, in one round trip.
	// Both keys are cut from one string: one allocation, not two.
	keys := "deny:sid:" + c.SessionID + "deny:jti:" + c.ID
	sid := len("deny:sid:") + len(c.SessionID)
	denied, err := s.kv.ExistsAny(ctx, keys[:sid], keys[sid:])
	if err != nil {
		return nil, err
	}
	if denied {
		return nil, fmt.Errorf("%w: session or token revoked", token.ErrInvalidToken)
	}
	return c, nil
}

// Introspect returns the claims of a live access token for a service
// client, with the roles the user holds now in place of those the token
// was issued with; nil when the token is not active or its roles cannot be
// read.
func (s *Service) Introspect(ctx context.Context, raw, clientID string) (*token.Claims, error) {
	c, err := s.verify(ctx, raw)
	if errors.Is(err, token.ErrInvalidToken) {
		err = nil
	}
	if c != nil {
		// A copy: verified claims are shared with the token cache.
		own := *c
		if own.Roles, err = s.roles.CurrentRoles(ctx, c.TenantID, c.Subject); err == nil {
			c = &own
		} else {
			c = nil
		}
	}
	if c != nil {
		// Refused on every request of a suspended tenant, as the tenant
		// step refuses it; but a super admin's, as there.
		var suspended bool
		if suspended, err = s.tenants.Suspended(ctx, c.TenantID); err != nil || (suspended && !slices.Contains(c.Roles, "super_admin")) {
			c = nil
		}
	}
	if err != nil {
		// The client hears only "active": false; the cause goes here.
		s.log.WarnContext(ctx, "introspection answered inactive: the token's state could not be read", "error", err.Error())
	}
	s.record(ctx, audit.Event{Action: "oauth.introspect", Outcome: audit.Success, Actor: audit.Service(clientID),
		Metadata: map[string]any{"active": c != nil}})
	return c, err
}

// Logout revokes the caller's session and denies its access token; a
// refresh token given along ends its session too, if it is the caller's.
// Each ends with the sessions switched to from its sign-in (its family).
func (s *Service) Logout(ctx context.Context, id *httpx.Identity, refresh ...string) error {
	sids := []string{id.SessionID}
	for _, r := range refresh {
		if hash, ok := parseRefreshToken(r); ok {
			if _, sess, err := s.store.refreshToken(ctx, hash); err == nil && sess.UserID == id.UserID {
				sids = append(sids, sess.ID)
			}
		}
	}
	if _, err := s.endSessions(ctx, id.UserID, "logout", func(q *gorm.DB) *gorm.DB { return q.Where("id IN ?", sids) }, true); err != nil {
		return err
	}
	if err := s.denyToken(ctx, id); err != nil {
		return err
	}
	s.record(ctx, audit.Event{Action: "auth.logout", Outcome: audit.Success, TenantID: id.TenantID,
		Actor: audit.User(id.UserID), ResourceType: "session", ResourceID: id.SessionID})
	return nil
}

// LogoutAll revokes every session of the caller, in every tenant.
func (s *Service) LogoutAll(ctx context.Context, id *httpx.Identity) error {
	ids, err := s.endSessions(ctx, id.UserID, "logout_all", nil, false)
	if err != nil {
		return err
	}
	if err := s.denyToken(ctx, id); err != nil {
		return err
	}
	s.record(ctx, audit.Event{Action: "auth.logout_all", Outcome: audit.Success, TenantID: id.TenantID,
		Actor: audit.User(id.UserID), Metadata: map[string]any{"sessions": len(ids)}})
	return nil
}

// RevokeSession ends one of the caller's sessions. Another user's session
// is not found, never forbidden: its existence is not confirmed.
func (s *Service) RevokeSession(ctx context.Context, id *httpx.Identity, sessionID string) error {
	if _, err := uuid.Parse(sessionID); err != nil {
		return ErrSessionMissing
	}
	ids, err := s.endSessions(ctx, id.UserID, "revoked_by_user", func(q *gorm.DB) *gorm.DB { return q.Where("id = ?", sessionID) }, true)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return ErrSessionMissing
	}
	s.record(ctx, audit.Event{Action: "auth.session_revoke", Outcome: audit.Success, TenantID: id.TenantID,
		Actor: audit.User(id.UserID), ResourceType: "session", ResourceID: sessionID})
	return nil
}

// ChangePassword sets a new password after checking the current one, and
// revokes every other session of the user.
func (s *Service) ChangePassword(ctx context.Context, id *httpx.Identity, current, next string) error {
	if err := checkPassword("new_password", next); err != nil {
		return err
	}
	u, err := s.store.userByID(ctx, id.UserID)
	if err != nil {
		return err
	}
	// Counted with the account's logins: an access token alone must not
	// be a way to guess the password without a lockout.
	ctx, cancel := context.WithTimeout(ctx, maxCheck)
	defer cancel()
	a, err := s.claimAttempt(ctx, u.Email)
	if err != nil {
		return err
	}
	defer a.done()
	ok := false
	if len(current) <= maxPassword {
		if ok, err = s.hasher.compare(ctx, []byte(u.PasswordHash), current); err != nil {
			return err
		}
	}
	if !ok {
		s.record(ctx, audit.Event{Action: "auth.password_change", Outcome: audit.Failure, TenantID: id.TenantID,
			Actor: audit.User(id.UserID), Metadata: map[string]any{"reason": "wrong_current_password"}})
		if n, err := a.fail(ctx); err != nil {
			return err
		} else if n >= int64(s.cfg.LockoutThreshold) {
			return s.lock(ctx, u.Email, audit.User(u.ID))
		}
		return ErrWrongPassword
	}
	if err := a.pass(ctx); err != nil {
		return err
	}
	hash, err := s.hasher.hash(ctx, next)
	if err != nil {
		return err
	}
	if err := s.store.setPassword(ctx, u.ID, string(hash), s.now()); err != nil {
		return err
	}
	ids, err := s.endSessions(ctx, u.ID, "password_changed", func(q *gorm.DB) *gorm.DB { return q.Where("id <> ?", id.SessionID) }, false)
	if err != nil {
		return err
	}
	s.record(ctx, audit.Event{Action: "auth.password_change", Outcome: audit.Success, TenantID: id.TenantID,
		Actor: audit.User(id.UserID), Metadata: map[string]any{"sessions_revoked": len(ids)}})
	return nil
}

// SwitchTenant opens a session in another tenant the caller belongs to,
// in the family of the caller's session. It takes that session's current
// refresh token too: an access token alone (a script's loot in cookie
// mode) must not buy a refresh token, which lives for months.
func (s *Service) SwitchTenant(ctx context.Context, id *httpx.Identity, slug, refresh string, client Client) (Pair, error) {
	if slug == "" {
		return Pair{}, fault.Field("tenant", "tenant is required")
	}
	rt, origin, err := s.liveRefresh(ctx, refresh)
	if err != nil {
		return Pair{}, err
	}
	if rt.UsedAt != nil {
		// Rotated: its coming back is a reuse, as at refresh, unless the
		// tenant's grace for a refresh racing this switch still holds.
		from, err := s.tenants.TenantByID(ctx, origin.TenantID)
		if err != nil {
			return Pair{}, err
		}
		if from.RefreshGraceUses == 0 || rt.GraceUses >= from.RefreshGraceUses ||
			rt.UsedAt.Before(s.now().Add(-from.RefreshGraceWindow)) {
			return Pair{}, s.reused(ctx, origin)
		}
		return Pair{}, ErrInvalidRefresh
	}
	if origin.ID != id.SessionID {
		return Pair{}, ErrInvalidRefresh
	}
	t, err := s.pickMembership(ctx, id.UserID, slug)
	if err != nil {
		return Pair{}, ErrNotMember
	}
	family := origin.ID // written by a release before families: its own
	if origin.FamilyID != nil {
		family = *origin.FamilyID
	}
	pair, sid, err := s.startSession(ctx, id.UserID, t, client, sessionCause{origin: origin.ID}, family)
	if errors.Is(err, errSessionCauseGone) {
		return Pair{}, ErrInvalidRefresh // revoked while this ran
	}
	if err != nil {
		return Pair{}, err
	}
	s.record(ctx, audit.Event{Action: "auth.switch_tenant", Outcome: audit.Success, TenantID: t.ID,
		Actor: audit.User(id.UserID), ResourceType: "session", ResourceID: sid,
		Metadata: map[string]any{"from_tenant": id.TenantID}})
	return pair, nil
}

// Me returns the caller's account, its tenant and its roles there now.
func (s *Service) Me(ctx context.Context, id *httpx.Identity) (User, Tenant, []string, error) {
	u, err := s.store.userByID(ctx, id.UserID)
	if err != nil {
		return User{}, Tenant{}, nil, err
	}
	t, err := s.tenants.TenantByID(ctx, id.TenantID)
	if err != nil {
		return User{}, Tenant{}, nil, err
	}
	roles, err := s.roles.CurrentRoles(ctx, id.TenantID, id.UserID)
	return u, t, roles, err
}

// Sessions lists the caller's live sessions.
func (s *Service) Sessions(ctx context.Context, id *httpx.Identity) ([]Session, error) {
	return s.store.liveSessions(ctx, id.UserID, s.now())
}

func (s *Service) record(ctx context.Context, e audit.Event) {
	if s.events != nil {
		s.events.Record(ctx, e)
	}
}

// Refresh tokens are 256 random bits, base64url. Only their SHA-256 is
// stored: a leaked database holds no usable token.
const refreshBytes = 32

func newRefreshToken() (string, []byte) {
	b := make([]byte, refreshBytes)
	rand.Read(b)
	raw := base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(raw))
	return raw, sum[:]
}

// parseRefreshToken checks a token's form before any lookup.
func parseRefreshToken(raw string) ([]byte, bool) {
	if len(raw) != base64.RawURLEncoding.EncodedLen(refreshBytes) {
		return nil, false
	}
	if _, err := base64.RawURLEncoding.DecodeString(raw); err != nil {
		return nil, false
	}
	sum := sha256.Sum256([]byte(raw))
	return sum[:], true
}

// digest names an email in kv keys without storing the address itself.
func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

func newID() string { return uuid.Must(uuid.NewV7()).String() }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// UserInfo is what other modules may know of an account.
type UserInfo struct {
	ID, Email, Name string
}

// UserByEmail finds an account by email (normalised), or fault.ErrNotFound.
func (s *Service) UserByEmail(ctx context.Context, email string) (UserInfo, error) {
	email, err := normalizeEmail(email)
	if err != nil {
		return UserInfo{}, err
	}
	u, err := s.store.userByEmail(ctx, email)
	if err != nil {
		return UserInfo{}, err
	}
	return UserInfo{ID: u.ID, Email: u.Email, Name: u.Name}, nil
}

// Users returns what is known of the given accounts, by id; unknown ids
// are left out.
func (s *Service) Users(ctx context.Context, ids []string) (map[string]UserInfo, error) {
	users, err := s.store.usersByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]UserInfo, len(users))
	for _, u := range users {
		out[u.ID] = UserInfo{ID: u.ID, Email: u.Email, Name: u.Name}
	}
	return out, nil
}

// EndTenantSessions ends the user's sessions in one tenant, at once on
// every instance: for a member suspended or removed.
func (s *Service) EndTenantSessions(ctx context.Context, tenantID, userID, reason string) error {
	_, err := s.endSessions(ctx, userID, reason, func(q *gorm.DB) *gorm.DB { return q.Where("tenant_id = ?", tenantID) }, false)
	return err
}

// Activity counts live sessions, and the users who used one in the last
// day, for the operators' gauges.
func (s *Service) Activity(ctx context.Context) (sessions, activeUsers int64, err error) {
	now := s.now()
	q := s.store.conn(ctx).Model(&Session{}).Where("revoked_at IS NULL AND expires_at > ?", now)
	if err := q.Count(&sessions).Error; err != nil {
		return 0, 0, err
	}
	err = s.store.conn(ctx).Model(&Session{}).Where("revoked_at IS NULL AND last_used_at > ?", now.Add(-24*time.Hour)).
		Distinct("user_id").Count(&activeUsers).Error
	return sessions, activeUsers, err
}
