package tenant

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"gatehouse/platform/audit"
	"gatehouse/platform/db"
	"gatehouse/platform/fault"
	"gatehouse/platform/kv"
)

// Service holds the rules of tenants and memberships.
type Service struct {
	store  store
	kv     kv.Store
	users  Users
	roles  Roles
	events audit.Recorder
	now    func() time.Time
	plans  []string // the plan names a tenant may have
	cached sync.Map // tenant id -> planEntry
}

// planEntry is a tenant's plan as read at some time.
type planEntry struct {
	plan string
	at   time.Time
}

// planTTL is how long a plan read is used: a changed plan raises or lowers
// limits within this time on every instance, which is soon enough for
// billing and spares the database a read per request.
const planTTL = time.Minute

// PlanOf returns the tenant's plan ("default" when unknown).
func (s *Service) PlanOf(ctx context.Context, tenantID string) string {
	// time.Since reads only the monotonic clock (at comes from time.Now):
	// half the cost of now(), on every request with a tenant rate limit.
	if e, ok := s.cached.Load(tenantID); ok && time.Since(e.(planEntry).at) < planTTL {
		return e.(planEntry).plan
	}
	plan := "default"
	if t, err := s.store.byID(ctx, tenantID); err == nil {
		plan = t.Plan
	}
	s.cached.Store(tenantID, planEntry{plan: plan, at: time.Now()})
	return plan
}

// LoginMethods are the sign-in methods a tenant may allow. OAuth providers
// join the list with the OAuth issue.
var LoginMethods = []string{"password"}

var slugPattern = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`)

// statusKey caches a tenant's status, "active" or "suspended", in kv: every
// authenticated request needs it, and on Redis a kv.Mirror answers it from
// memory. The database stays the truth: a kv store that lost the key
// (Redis restarted without persistence, flushed) refills it from there, so
// a suspension is never forgotten. The expiry only bounds what deleted
// tenants leave behind.
func statusKey(id string) string { return "tenant:status:" + id }

const statusTTL = 24 * time.Hour

// Suspended reports whether the tenant is suspended: from kv, else from the
// database, caching what it read. A tenant that does not exist is not
// suspended (its members have no permissions anyway).
func (s *Service) Suspended(ctx context.Context, id string) (bool, error) {
	v, err := s.kv.Get(ctx, statusKey(id))
	if err == nil {
		return string(v) == StatusSuspended, nil
	}
	if !errors.Is(err, kv.ErrNotFound) {
		return false, err
	}
	t, err := s.store.byID(ctx, id)
	if errors.Is(err, fault.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// SetNX: a suspension or resumption that committed after our read
	// has written its own value (with Set), and that must win.
	if _, err := s.kv.SetNX(ctx, statusKey(id), []byte(t.Status), statusTTL); err != nil {
		return false, err
	}
	return t.Status == StatusSuspended, nil
}

// Create makes a tenant.
func (s *Service) Create(ctx context.Context, actor, slug, name string) (Tenant, error) {
	slug = strings.TrimSpace(slug)
	if !slugPattern.MatchString(slug) {
		return Tenant{}, fault.Field("slug", "slug must be 1 to 63 lower-case letters, digits or inner hyphens")
	}
	if err := checkName(name); err != nil {
		return Tenant{}, err
	}
	t := Tenant{ID: uuid.Must(uuid.NewV7()).String(), Slug: slug, Name: strings.TrimSpace(name), Status: StatusActive,
		DefaultRole: "member", LoginMethods: "password", Plan: "default", RefreshGraceWindowMS: 10000, CreatedAt: s.now()}
	if err := s.store.create(ctx, t); errors.Is(err, fault.ErrConflict) {
		return Tenant{}, ErrSlugTaken
	} else if err != nil {
		return Tenant{}, err
	}
	s.record(ctx, actor, t.ID, "tenant.create", "tenant", t.ID, nil, t)
	return t, nil
}

func checkName(name string) error {
	if n := utf8.RuneCountInString(strings.TrimSpace(name)); n == 0 || n > 200 {
		return fault.Field("name", "name must have 1 to 200 characters")
	}
	return nil
}

// Get returns a tenant.
func (s *Service) Get(ctx context.Context, id string) (Tenant, error) {
	id, ok := db.ParseID(id)
	if !ok {
		return Tenant{}, ErrNotFound
	}
	t, err := s.store.byID(ctx, id)
	if errors.Is(err, fault.ErrNotFound) {
		return Tenant{}, ErrNotFound
	}
	return t, err
}

// List returns a page of tenants after the cursor.
func (s *Service) List(ctx context.Context, cursor string, limit int) ([]Tenant, error) {
	cursor, err := parseCursor(cursor)
	if err != nil {
		return nil, err
	}
	return s.store.list(ctx, cursor, limit)
}

// Update renames, suspends or resumes a tenant (nil fields are left).
// Suspension takes effect at once on every instance: access tokens are
// refused by the tenant step, refresh tokens by sign-in.
func (s *Service) Update(ctx context.Context, actor, id string, name, status, plan *string) (Tenant, error) {
	before, err := s.Get(ctx, id)
	if err != nil {
		return Tenant{}, err
	}
	id = before.ID // as stored: it names the status's key and the cache's entry
	fields := map[string]any{}
	if name != nil {
		if err := checkName(*name); err != nil {
			return Tenant{}, err
		}
		fields["name"] = strings.TrimSpace(*name)
	}
	if status != nil {
		if *status != StatusActive && *status != StatusSuspended {
			return Tenant{}, fault.Field("status", "status must be active or suspended")
		}
		fields["status"] = *status
	}
	if plan != nil {
		if !slices.Contains(s.plans, *plan) {
			return Tenant{}, fault.Field("plan", "plan must be one of "+strings.Join(s.plans, ", "))
		}
		fields["plan"] = *plan
		s.cached.Delete(id)
	}
	if len(fields) == 0 {
		return before, nil
	}
	if err := s.store.update(ctx, id, fields); err != nil {
		return Tenant{}, err
	}
	var after Tenant
	if status != nil {
		// After the commit, and overwriting: see suspended. Also when the
		// status is unchanged: a retry of an update whose write here failed
		// after the commit finds the new status already stored, and must
		// still finish it.
		if after, err = s.storeStatus(ctx, id, *status); err != nil {
			return Tenant{}, err
		}
		if err := s.roles.Invalidate(ctx); err != nil {
			return Tenant{}, err
		}
	} else if after, err = s.store.byID(ctx, id); err != nil {
		return Tenant{}, err
	}
	s.record(ctx, actor, id, "tenant.update", "tenant", id, before, after)
	return after, nil
}

// maxStatusWrites bounds storeStatus's rounds: each needs another update
// of the same tenant's status to have committed meanwhile.
const maxStatusWrites = 10

// ReassertSuspensions writes again the status of every suspended tenant
// whose key says otherwise. A store that loses its latest writes and keeps
// the rest (a Redis replica promoted before it had them) can hold "active"
// for a tenant suspended since, and every instance would let its members
// in until the key expires (statusTTL). Run every few seconds on Redis
// (app.go), with the denials' re-assertion, this bounds that to the
// period. Suspended tenants are few: one query, and a read of each from
// the shared store. A missing key needs nothing: Suspended reads the
// database then.
func (s *Service) ReassertSuspensions(ctx context.Context) error {
	ids, err := s.store.suspended(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		v, err := kv.Shared(s.kv).Get(ctx, statusKey(id))
		if errors.Is(err, kv.ErrNotFound) || err == nil && string(v) == StatusSuspended {
			continue
		}
		if err != nil {
			return err
		}
		// storeStatus, so that a resumption racing this write wins.
		if _, err := s.storeStatus(ctx, id, StatusSuspended); err != nil {
			return err
		}
	}
	return nil
}

// storeStatus writes a tenant's status to kv after an update committed it,
// then reads the tenant back to check the database still holds it: an
// update racing this one may have committed the other status and written
// it to kv before this write landed, which would leave kv opposite to the
// database (a suspended tenant's members let in) until the key expires. On
// a mismatch it writes what the database holds and checks again, so that
// whichever update writes last finds the database agreeing, and kv ends as
// the database is. It returns the tenant as read.
func (s *Service) storeStatus(ctx context.Context, id, status string) (Tenant, error) {
	for range maxStatusWrites {
		if err := s.kv.Set(ctx, statusKey(id), []byte(status), statusTTL); err != nil {
			return Tenant{}, err
		}
		t, err := s.store.byID(ctx, id)
		if err != nil || t.Status == status {
			return t, err
		}
		status = t.Status
	}
	return Tenant{}, fmt.Errorf("tenant %s: its status changed %d times during one update", id, maxStatusWrites)
}

// UpdateSettings changes a tenant's default role and allowed sign-in
// methods (nil fields are left).
func (s *Service) UpdateSettings(ctx context.Context, actor, id string, defaultRole *string, methods []string) (Tenant, error) {
	before, err := s.Get(ctx, id)
	if err != nil {
		return Tenant{}, err
	}
	id = before.ID // as stored: the checks below compare it as a string
	fields := map[string]any{}
	// Every newcomer gets the default role: whoever sets it must be able
	// to give it, and it must name a role of the tenant.
	checkRole := func(ctx context.Context) error {
		err := s.roles.CheckRoleGrantable(ctx, id, actor, *defaultRole, "tenant.settings_update")
		if fe, ok := fault.As(err); ok && fe.Kind == fault.NotFound {
			return fault.Field("default_role", "default_role must name a role of the tenant")
		}
		return err
	}
	if defaultRole != nil {
		if *defaultRole == "" || len(*defaultRole) > 64 {
			return Tenant{}, fault.Field("default_role", "default_role must name a tenant role")
		}
		if err := checkRole(ctx); err != nil {
			return Tenant{}, err
		}
		fields["default_role"] = *defaultRole
	}
	if methods != nil {
		if len(methods) == 0 {
			return Tenant{}, fault.Field("login_methods", "at least one sign-in method must stay allowed")
		}
		for i, m := range methods {
			if !slices.Contains(LoginMethods, m) {
				return Tenant{}, fault.Field("login_methods", "unknown sign-in method "+truncate(m, 32))
			}
			// Each at most once: the list is read on every sign-in.
			if slices.Contains(methods[:i], m) {
				return Tenant{}, fault.Field("login_methods", "sign-in method "+m+" is listed twice")
			}
		}
		fields["login_methods"] = strings.Join(methods, " ")
	}
	if len(fields) > 0 {
		err := s.store.db.InTx(ctx, func(ctx context.Context) error {
			if err := s.store.update(ctx, id, fields); err != nil {
				return err
			}
			if defaultRole == nil {
				return nil
			}
			// Again, now that the update holds the tenant's row (on
			// SQLite, the write lock): rbac's DeleteRole locks that row
			// to refuse deleting the default role, so a delete of this
			// role has committed, and is seen here, or waits for this
			// transaction and then sees the new default.
			return checkRole(ctx)
		})
		if err != nil {
			return Tenant{}, err
		}
	}
	after, err := s.store.byID(ctx, id)
	if err != nil {
		return Tenant{}, err
	}
	s.record(ctx, actor, id, "tenant.settings", "tenant", id, before, after)
	return after, nil
}

// ActiveMember reports whether the user is an active member of an active
// tenant: the condition for holding any permission there.
func (s *Service) ActiveMember(ctx context.Context, tenantID, userID string) (bool, error) {
	m, err := s.store.membership(ctx, tenantID, userID)
	if errors.Is(err, fault.ErrNotFound) {
		return false, nil
	}
	if err != nil || m.Status != StatusActive {
		return false, err
	}
	t, err := s.store.byID(ctx, tenantID)
	if err != nil {
		return false, err
	}
	return t.Status == StatusActive, nil
}

// AddMember makes an existing account a member, with the tenant's default
// role.
func (s *Service) AddMember(ctx context.Context, actor, tenantID, email string) (Member, error) {
	t, err := s.Get(ctx, tenantID)
	if err != nil {
		return Member{}, err
	}
	u, err := s.users.UserByEmail(ctx, email)
	if errors.Is(err, fault.ErrNotFound) {
		return Member{}, ErrUserNotFound
	}
	if err != nil {
		return Member{}, err
	}
	m := Membership{UserID: u.ID, TenantID: t.ID, Status: StatusActive, CreatedAt: s.now()}
	err = s.store.db.InTx(ctx, func(ctx context.Context) error {
		if err := s.store.addMember(ctx, m); err != nil {
			return err
		}
		return s.roles.AssignRole(ctx, t.ID, u.ID, t.DefaultRole)
	})
	if errors.Is(err, fault.ErrConflict) {
		return Member{}, ErrAlreadyMember
	}
	if err != nil {
		return Member{}, err
	}
	if err := s.roles.Invalidate(ctx); err != nil {
		return Member{}, err
	}
	member := Member{Membership: m, Email: u.Email, Name: u.Name, Roles: []string{t.DefaultRole}}
	s.record(ctx, actor, t.ID, "tenant.member_add", "membership", u.ID, nil, member)
	return member, nil
}

// Member is a membership with its account and roles.
type Member struct {
	Membership
	Email, Name string
	Roles       []string
}

// Members lists a page of a tenant's members after the cursor (a user id).
func (s *Service) Members(ctx context.Context, tenantID, cursor string, limit int) ([]Member, error) {
	cursor, err := parseCursor(cursor)
	if err != nil {
		return nil, err
	}
	ms, err := s.store.members(ctx, tenantID, cursor, limit)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.UserID
	}
	users, err := s.users.Users(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]Member, 0, len(ms))
	for _, m := range ms {
		roles, err := s.roles.RoleNames(ctx, tenantID, m.UserID)
		if err != nil {
			return nil, err
		}
		u := users[m.UserID]
		out = append(out, Member{Membership: m, Email: u.Email, Name: u.Name, Roles: roles})
	}
	return out, nil
}

// parseCursor returns a page's cursor (an id) as ids are stored.
func parseCursor(cursor string) (string, error) {
	if cursor == "" {
		return "", nil
	}
	id, ok := db.ParseID(cursor)
	if !ok {
		return "", fault.Field("cursor", "cursor is not valid")
	}
	return id, nil
}

// member returns a membership, or ErrMemberNotFound. Its ids are as
// stored, whatever the spelling asked for: the checks that follow compare
// them as strings.
func (s *Service) member(ctx context.Context, tenantID, userID string) (Membership, error) {
	tenantID, okT := db.ParseID(tenantID)
	userID, okU := db.ParseID(userID)
	if !okT || !okU {
		return Membership{}, ErrMemberNotFound
	}
	m, err := s.store.membership(ctx, tenantID, userID)
	if errors.Is(err, fault.ErrNotFound) {
		return Membership{}, ErrMemberNotFound
	}
	return m, err
}

// SetMemberStatus suspends or reactivates a member. Suspension ends the
// member's sessions in the tenant at once. The last admin cannot be
// suspended, and the caller must hold every permission the member's roles
// give.
func (s *Service) SetMemberStatus(ctx context.Context, actor, tenantID, userID, status string) (Membership, error) {
	if status != StatusActive && status != StatusSuspended {
		return Membership{}, fault.Field("status", "status must be active or suspended")
	}
	before, err := s.member(ctx, tenantID, userID)
	if err != nil {
		return Membership{}, err
	}
	tenantID, userID = before.TenantID, before.UserID
	if err := s.roles.CheckHoldsMember(ctx, tenantID, actor, userID, "tenant.member_status"); err != nil {
		return Membership{}, err
	}
	err = s.store.db.InTx(ctx, func(ctx context.Context) error {
		if status == StatusSuspended {
			if err := s.guardLastAdmin(ctx, tenantID, userID); err != nil {
				return err
			}
		}
		return s.store.setMemberStatus(ctx, tenantID, userID, status)
	})
	if err != nil {
		return Membership{}, err
	}
	if err := s.roles.Invalidate(ctx); err != nil {
		return Membership{}, err
	}
	if status == StatusSuspended {
		if err := s.users.EndTenantSessions(ctx, tenantID, userID, "membership_suspended"); err != nil {
			return Membership{}, err
		}
	}
	after := before
	after.Status = status
	s.record(ctx, actor, tenantID, "tenant.member_status", "membership", userID, before, after)
	return after, nil
}

// RemoveMember ends a membership and the member's sessions in the tenant.
// The last admin cannot be removed, and the caller must hold every
// permission the member's roles give.
func (s *Service) RemoveMember(ctx context.Context, actor, tenantID, userID string) error {
	before, err := s.member(ctx, tenantID, userID)
	if id, ok := db.ParseID(userID); ok && errors.Is(err, ErrMemberNotFound) {
		// Perhaps a retry of a removal that failed after its commit: the
		// member's sessions in the tenant may still be live, so they are
		// ended before the answer says there is no such member.
		if err := s.users.EndTenantSessions(ctx, tenantID, id, "membership_removed"); err != nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	tenantID, userID = before.TenantID, before.UserID
	if err := s.roles.CheckHoldsMember(ctx, tenantID, actor, userID, "tenant.member_remove"); err != nil {
		return err
	}
	err = s.store.db.InTx(ctx, func(ctx context.Context) error {
		if err := s.guardLastAdmin(ctx, tenantID, userID); err != nil {
			return err
		}
		return s.store.removeMember(ctx, tenantID, userID)
	})
	if err != nil {
		return err
	}
	if err := s.roles.Invalidate(ctx); err != nil {
		return err
	}
	if err := s.users.EndTenantSessions(ctx, tenantID, userID, "membership_removed"); err != nil {
		return err
	}
	s.record(ctx, actor, tenantID, "tenant.member_remove", "membership", userID, before, nil)
	return nil
}

// guardLastAdmin refuses to take userID's admin away if it is the tenant's
// last active admin. Called in the transaction of the change, so that two
// admins removing or suspending each other at once are serialised (rbac's
// IsLastAdmin locks the rows it reads) and the second is refused.
func (s *Service) guardLastAdmin(ctx context.Context, tenantID, userID string) error {
	last, err := s.roles.IsLastAdmin(ctx, tenantID, userID)
	if err != nil {
		return err
	}
	if last {
		return ErrLastAdmin
	}
	return nil
}

func (s *Service) record(ctx context.Context, actor, tenantID, action, resType, resID string, before, after any) {
	if s.events == nil {
		return
	}
	s.events.Record(ctx, audit.Event{Action: action, Outcome: audit.Success, TenantID: tenantID, Actor: audit.User(actor),
		ResourceType: resType, ResourceID: resID, Metadata: map[string]any{"before": before, "after": after}})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// BySlug returns a tenant by its slug, or ErrNotFound.
func (s *Service) BySlug(ctx context.Context, slug string) (Tenant, error) {
	t, err := s.store.bySlug(ctx, slug)
	if errors.Is(err, fault.ErrNotFound) {
		return Tenant{}, ErrNotFound
	}
	return t, err
}

// Membership returns the user's membership of the tenant, or
// ErrMemberNotFound.
func (s *Service) Membership(ctx context.Context, tenantID, userID string) (Membership, error) {
	return s.member(ctx, tenantID, userID)
}

// ActiveTenants returns the ids of the tenants where the user is an active
// member, oldest membership first.
func (s *Service) ActiveTenants(ctx context.Context, userID string) ([]string, error) {
	return s.store.activeTenants(ctx, userID)
}

// Join makes the user an active member with the tenant's default role, in
// the transaction carried by ctx (registration).
func (s *Service) Join(ctx context.Context, tenantID, userID string) error {
	t, err := s.store.byID(ctx, tenantID)
	if err != nil {
		return err
	}
	if err := s.store.addMember(ctx, Membership{UserID: userID, TenantID: tenantID, Status: StatusActive, CreatedAt: s.now()}); err != nil {
		return err
	}
	return s.roles.AssignRole(ctx, tenantID, userID, t.DefaultRole)
}

// EnsureTenant creates the tenant with this slug unless it exists; several
// instances starting at once all end with the one row.
func (s *Service) EnsureTenant(ctx context.Context, slug, name string) error {
	t := Tenant{ID: uuid.Must(uuid.NewV7()).String(), Slug: slug, Name: name, Status: StatusActive,
		DefaultRole: "member", LoginMethods: "password", Plan: "default", RefreshGraceWindowMS: 10000, CreatedAt: s.now()}
	return s.store.ensure(ctx, t)
}
