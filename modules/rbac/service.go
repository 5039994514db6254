package rbac

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"gatehouse/platform/audit"
	"gatehouse/platform/db"
	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
	"gatehouse/platform/kv"
)

const (
	// maxCustomRoles bounds a tenant's custom roles, which keeps the role
	// list a single page.
	maxCustomRoles = 200
	// maxRolePermissions bounds one request's permission list.
	maxRolePermissions = 200
	// maxDescription bounds a role's description, in characters.
	maxDescription = 500
)

// errNoTenant answers an identity whose tenant is not an id at all, which
// verified tokens never carry: nothing can exist in such a tenant.
var errNoTenant = fmt.Errorf("rbac: malformed tenant id: %w", fault.ErrNotFound)

// Service holds the rules of roles and permissions. Its methods are safe for
// concurrent use.
type Service struct {
	db      *db.DB
	st      store
	kv      kv.Store
	log     *slog.Logger
	events  audit.Recorder
	cat     *Catalogue
	members Members
	memo    *memo
}

// Permissions returns the effective grants of userID in tenantID: all of
// them for a super admin; for an active member of an active tenant, the
// union of its roles' grants; otherwise none. The answer reflects every
// change whose call has returned, on every instance sharing the kv store.
//
// The answer is cached, so do not call it inside a transaction that has
// changed roles or memberships: it would file what that transaction has not
// committed (and may roll back) as the current state.
func (s *Service) Permissions(ctx context.Context, tenantID, userID string) (Grants, error) {
	v, err := s.version(ctx)
	if err != nil {
		return Grants{}, err
	}
	return s.grants(ctx, v, tenantID, userID)
}

// scope is the authorize step's check: the scope in which userID holds p in
// tenantID, or "" if it does not.
func (s *Service) scope(ctx context.Context, tenantID, userID, p string) (string, error) {
	v, err := s.version(ctx)
	if err != nil {
		return "", err
	}
	g, err := s.grants(ctx, v, tenantID, userID)
	if err != nil {
		return "", err
	}
	return g.Scope(p), nil
}

// Invalidate drops every cached answer, on every instance. Other modules call
// it after a change that moves permissions without touching rbac's tables: a
// membership or a tenant suspended, resumed or removed. Call it after the
// change has committed.
func (s *Service) Invalidate(ctx context.Context) error {
	return s.bump(ctx)
}

// RoleNames returns the names of the user's roles in the tenant, sorted,
// with "super_admin" among them if the user is a super admin: the roles an
// access token names. It reads the database and caches nothing, so sign-in
// may call it inside the transaction that made the membership.
func (s *Service) RoleNames(ctx context.Context, tenantID, userID string) ([]string, error) {
	if !db.IsID(tenantID) || !db.IsID(userID) {
		return []string{}, nil
	}
	super, err := s.st.isSuperAdmin(ctx, userID)
	if err != nil {
		return nil, err
	}
	return s.roleNames(ctx, tenantID, userID, super)
}

// CurrentRoles is what the gateway, /v1/auth/me and introspection tell of a
// caller's roles: the names of the user's roles in the tenant as the
// authorize step sees them now, sorted, with "super_admin" for a super
// admin, and none for anyone else who is not an active member of an active
// tenant. Unlike the roles an access token names, it reflects every change
// whose call has returned, on every instance. It is served from the
// permissions cache (see Permissions), and the slice is shared: do not
// change it.
func (s *Service) CurrentRoles(ctx context.Context, tenantID, userID string) ([]string, error) {
	g, err := s.Permissions(ctx, tenantID, userID)
	return g.roles, err
}

// roleNames is RoleNames once it is known whether the user is a super admin.
func (s *Service) roleNames(ctx context.Context, tenantID, userID string, super bool) ([]string, error) {
	names, err := s.st.memberRoles(ctx, tenantID, userID)
	if err != nil {
		return nil, err
	}
	// A membership row naming super_admin grants nothing (see
	// memberPermissions), so only the super_admins table decides.
	names = slices.DeleteFunc(names, func(n string) bool { return n == RoleSuperAdmin })
	if super {
		names = append(names, RoleSuperAdmin)
		slices.Sort(names)
	}
	if names == nil {
		names = []string{}
	}
	return slices.Compact(names), nil
}

// AssignRole gives the member the tenant's role named roleName (a system
// role or one of the tenant's own), for the system's own use: registration
// and adding a member. It checks no caller and records no event. It joins
// the transaction ctx carries; the membership must exist in it. It returns
// an error wrapping ErrUnknownRole for a name the tenant has no role of, and
// refuses super_admin, which only SetSuperAdmin gives.
//
// The cache version is bumped at once, so if ctx carries a transaction the
// bump comes before the commit: a request racing the commit could file the
// member's old (smaller) grants under the new version, so callers call
// Invalidate once their transaction has committed.
func (s *Service) AssignRole(ctx context.Context, tenantID, userID, roleName string) error {
	if !db.IsID(tenantID) || !db.IsID(userID) {
		return fmt.Errorf("assign role to %s in %s: %w", userID, tenantID, ErrMemberNotFound)
	}
	if roleName == RoleSuperAdmin {
		return fmt.Errorf("assign role %s: only SetSuperAdmin makes super admins: %w", roleName, ErrEscalation)
	}
	r, err := s.st.roleByName(ctx, tenantID, roleName)
	if errors.Is(err, ErrRoleNotFound) {
		return fmt.Errorf("assign role %q: %w", roleName, ErrUnknownRole)
	}
	if err != nil {
		return err
	}
	if err := s.st.assign(ctx, tenantID, userID, r.ID, now()); err != nil {
		return err
	}
	return s.bump(ctx)
}

// CheckRoleGrantable returns nil if the tenant has a role of this name (a
// system role or its own) that actor may give out: not super_admin, and
// each of its permissions held by actor in the tenant. Else the error wraps
// ErrUnknownRole, or is an escalation error naming what actor lacks (and
// refused in the audit log as action). The tenant module asks it before it
// makes a role its default, which every newcomer gets.
func (s *Service) CheckRoleGrantable(ctx context.Context, tenantID, actorID, roleName, action string) error {
	if roleName == RoleSuperAdmin {
		s.refused(ctx, &httpx.Identity{TenantID: tenantID, UserID: actorID}, action, roleName, "super_admin")
		return fmt.Errorf("role %s: only SetSuperAdmin makes super admins: %w", roleName, ErrEscalation)
	}
	if !db.IsID(tenantID) {
		return fmt.Errorf("role %q: %w", roleName, ErrUnknownRole)
	}
	r, err := s.st.roleByName(ctx, tenantID, roleName)
	if err == nil {
		r, err = s.st.role(ctx, tenantID, r.ID) // with its permissions
	}
	if errors.Is(err, ErrRoleNotFound) {
		return fmt.Errorf("role %q: %w", roleName, ErrUnknownRole)
	}
	if err != nil {
		return err
	}
	return s.checkHolds(ctx, &httpx.Identity{TenantID: tenantID, UserID: actorID}, action, r.ID, r.Permissions)
}

// CheckHoldsMember returns nil if actor holds, in the tenant, each
// permission the roles of member there give, whatever the membership's
// status; else an escalation error naming the first it lacks (and refused
// in the audit log as action). Suspending, reactivating or removing a
// member takes away or gives back what its roles give, so it needs what
// revoking or assigning them would.
func (s *Service) CheckHoldsMember(ctx context.Context, tenantID, actorID, member, action string) error {
	if !db.IsID(tenantID) || !db.IsID(member) {
		// Never "holds": an id in another spelling may still find the
		// member's row on PostgreSQL (callers pass ids as stored).
		return fmt.Errorf("member %s of %s: %w", member, tenantID, ErrMemberNotFound)
	}
	perms, err := s.st.memberPermissions(ctx, tenantID, member)
	if err != nil {
		return err
	}
	return s.checkHolds(ctx, &httpx.Identity{TenantID: tenantID, UserID: actorID}, action, member, perms)
}

// IsSuperAdmin reports whether the user is a super admin.
func (s *Service) IsSuperAdmin(ctx context.Context, userID string) (bool, error) {
	if !db.IsID(userID) {
		return false, nil
	}
	return s.st.isSuperAdmin(ctx, userID)
}

// SetSuperAdmin makes the user a super admin, or stops it being one, and
// drops every cached answer. It is for the command line; it records an
// event with a system actor. An unknown user gives an error wrapping
// fault.ErrNotFound.
func (s *Service) SetSuperAdmin(ctx context.Context, userID string, on bool) error {
	if !db.IsID(userID) {
		return fmt.Errorf("user %q: %w", userID, fault.ErrNotFound)
	}
	var changed bool
	err := s.db.InTx(ctx, func(ctx context.Context) error {
		var err error
		changed, err = s.st.setSuperAdmin(ctx, userID, on, now())
		return err
	})
	if err != nil {
		return err
	}
	if changed {
		s.record(ctx, audit.Event{Action: "rbac.super_admin", Outcome: audit.Success, Actor: audit.Actor{Type: "system"},
			ResourceType: "user", ResourceID: userID, Metadata: map[string]any{"before": !on, "after": on}})
	}
	return s.bump(ctx)
}

// IsLastAdmin reports whether userID holds the admin role in tenantID and no
// other active member does. Inside a transaction on PostgreSQL it locks the
// tenant's admin assignments until the transaction ends, so a caller that
// checks and then removes in one transaction cannot race another doing the
// same.
func (s *Service) IsLastAdmin(ctx context.Context, tenantID, userID string) (bool, error) {
	if !db.IsID(tenantID) || !db.IsID(userID) {
		// Never "not the last": as in CheckHoldsMember.
		return false, fmt.Errorf("member %s of %s: %w", userID, tenantID, ErrMemberNotFound)
	}
	admins, err := s.st.activeAdmins(ctx, tenantID)
	if err != nil {
		return false, err
	}
	return len(admins) == 1 && admins[0] == userID, nil
}

// Catalogue returns the permission catalogue.
func (s *Service) Catalogue() *Catalogue { return s.cat }

// Roles returns the system roles and the caller's tenant's custom roles.
func (s *Service) Roles(ctx context.Context, id *httpx.Identity) ([]Role, error) {
	if !db.IsID(id.TenantID) {
		return nil, errNoTenant
	}
	return s.st.roles(ctx, id.TenantID)
}

// Role returns a system role or one of the caller's tenant's roles; any other
// id gives an error wrapping ErrRoleNotFound.
func (s *Service) Role(ctx context.Context, id *httpx.Identity, roleID string) (Role, error) {
	roleID, ok := db.ParseID(roleID)
	if !ok || !db.IsID(id.TenantID) {
		return Role{}, fmt.Errorf("role %q: %w", roleID, ErrRoleNotFound)
	}
	return s.st.role(ctx, id.TenantID, roleID)
}

// CreateRole adds a custom role to the caller's tenant. The permissions must
// be catalogue names or "resource:*" wildcards, none platform, and each held
// by the caller (else ErrEscalation, naming it). A name a role of the tenant
// or a system role has gives ErrRoleExists.
func (s *Service) CreateRole(ctx context.Context, id *httpx.Identity, name, description string, perms []string) (Role, error) {
	if !db.IsID(id.TenantID) {
		return Role{}, errNoTenant
	}
	if !roleName.MatchString(name) {
		return Role{}, fault.Field("name", "name must be 1 to 64 of a-z, 0-9, _ and -")
	}
	if err := checkDescription(description); err != nil {
		return Role{}, err
	}
	if len(perms) > maxRolePermissions {
		return Role{}, fault.Field("permissions", fmt.Sprintf("at most %d permissions", maxRolePermissions))
	}
	// System roles exist in every tenant, so their names are taken.
	if _, system := s.cat.Role(name); system {
		return Role{}, fmt.Errorf("role %s: %w", name, ErrRoleExists)
	}
	perms, err := s.checkGrant(ctx, id, "rbac.role_create", "", perms)
	if err != nil {
		return Role{}, err
	}
	n, err := s.st.customRoleCount(ctx, id.TenantID)
	if err != nil {
		return Role{}, err
	}
	if n >= maxCustomRoles {
		return Role{}, ErrRoleLimit
	}
	t := now()
	tenant := id.TenantID
	r := Role{ID: newID(), TenantID: &tenant, Name: name, Description: description, CreatedAt: t, UpdatedAt: t,
		Permissions: perms}
	if err := s.st.createRole(ctx, r); err != nil {
		return Role{}, err
	}
	s.record(ctx, s.event(id, "rbac.role_create", r.ID, nil, roleState(r)))
	return r, s.bump(ctx)
}

// UpdateRole changes the description of one of the tenant's custom roles;
// a system role gives ErrSystemRole.
func (s *Service) UpdateRole(ctx context.Context, id *httpx.Identity, roleID, description string) (Role, error) {
	if err := checkDescription(description); err != nil {
		return Role{}, err
	}
	r, err := s.customRole(ctx, id, "rbac.role_update", roleID)
	if err != nil {
		return Role{}, err
	}
	before := roleState(r)
	t := now()
	if err := s.st.setDescription(ctx, r.ID, description, t); err != nil {
		return Role{}, err
	}
	r.Description, r.UpdatedAt = description, t
	s.record(ctx, s.event(id, "rbac.role_update", r.ID, before, roleState(r)))
	return r, s.bump(ctx)
}

// DeleteRole deletes one of the tenant's custom roles, taking it from every
// member that had it. The caller must hold every permission of the role,
// since deleting it revokes them from its members. The tenant's default
// role gives ErrRoleInUse: which role newcomers get is for settings:manage
// to change, not for a roles:manage that deletes it (and then every
// registration fails) or recreates its name. A role's name never changes
// (UpdateRole changes only the description), so the check is by name. It
// is made in the delete's transaction, which locks the tenant's row on
// PostgreSQL: a settings update making the role the default either
// committed first, and is seen, or waits and then finds the role gone.
func (s *Service) DeleteRole(ctx context.Context, id *httpx.Identity, roleID string) error {
	r, err := s.customRole(ctx, id, "rbac.role_delete", roleID)
	if err != nil {
		return err
	}
	if err := s.checkHolds(ctx, id, "rbac.role_delete", r.ID, r.Permissions); err != nil {
		return err
	}
	err = s.db.InTx(ctx, func(ctx context.Context) error {
		def, err := s.st.defaultRole(ctx, id.TenantID)
		if err != nil {
			return err
		}
		if def == r.Name {
			return fmt.Errorf("role %s of tenant %s: %w", r.Name, id.TenantID, ErrRoleInUse)
		}
		return s.st.deleteRole(ctx, id.TenantID, r.ID)
	})
	if errors.Is(err, ErrRoleInUse) {
		s.refused(ctx, id, "rbac.role_delete", r.ID, "default_role")
	}
	if err != nil {
		return err
	}
	s.record(ctx, s.event(id, "rbac.role_delete", r.ID, roleState(r), nil))
	return s.bump(ctx)
}

// GrantPermissions adds permissions to one of the tenant's custom roles,
// under the rules of CreateRole. Permissions the role has are skipped.
func (s *Service) GrantPermissions(ctx context.Context, id *httpx.Identity, roleID string, perms []string) (Role, error) {
	if len(perms) == 0 || len(perms) > maxRolePermissions {
		return Role{}, fault.Field("permissions", fmt.Sprintf("give 1 to %d permissions", maxRolePermissions))
	}
	r, err := s.customRole(ctx, id, "rbac.permission_grant", roleID)
	if err != nil {
		return Role{}, err
	}
	perms, err = s.checkGrant(ctx, id, "rbac.permission_grant", r.ID, perms)
	if err != nil {
		return Role{}, err
	}
	before := roleState(r)
	t := now()
	if _, err := s.st.addPermissions(ctx, r.ID, perms, t); err != nil {
		return Role{}, err
	}
	r.Permissions = slices.Compact(slices.Sorted(slices.Values(append(r.Permissions, perms...))))
	r.UpdatedAt = t
	s.record(ctx, s.event(id, "rbac.permission_grant", r.ID, before, roleState(r)))
	return r, s.bump(ctx)
}

// RevokePermission takes a permission from one of the tenant's custom roles.
// The caller must hold it; a role without it gives ErrNotGranted.
func (s *Service) RevokePermission(ctx context.Context, id *httpx.Identity, roleID, perm string) error {
	r, err := s.customRole(ctx, id, "rbac.permission_revoke", roleID)
	if err != nil {
		return err
	}
	if !slices.Contains(r.Permissions, perm) {
		// Perhaps a retry of a revoke whose bump failed (503): bumped
		// again, the revoke takes effect now rather than when the caches
		// age out.
		if err := s.bump(ctx); err != nil {
			return err
		}
		return fmt.Errorf("role %s permission %q: %w", r.ID, perm, ErrNotGranted)
	}
	if err := s.checkHolds(ctx, id, "rbac.permission_revoke", r.ID, []string{perm}); err != nil {
		return err
	}
	before := roleState(r)
	if err := s.st.removePermission(ctx, r.ID, perm, now()); err != nil {
		return err
	}
	r.Permissions = slices.DeleteFunc(r.Permissions, func(p string) bool { return p == perm })
	s.record(ctx, s.event(id, "rbac.permission_revoke", r.ID, before, roleState(r)))
	return s.bump(ctx)
}

// AssignMemberRole gives a member of the caller's tenant a role. tenantID
// must be the caller's tenant and userID an active member of it, and the
// role a system role or the tenant's, else the error wraps a not-found
// sentinel. super_admin is never given this way, and the caller must hold
// every permission of the role (ErrEscalation). It returns the member's roles
// after the change.
func (s *Service) AssignMemberRole(ctx context.Context, id *httpx.Identity, tenantID, userID, roleID string) ([]string, error) {
	return s.changeMemberRole(ctx, id, "rbac.role_assign", tenantID, userID, roleID)
}

// RevokeMemberRole takes a role from a member of the caller's tenant, under
// the rules of AssignMemberRole. Taking admin from the tenant's last active
// admin gives ErrLastAdmin; a member without the role gives ErrNotGranted.
func (s *Service) RevokeMemberRole(ctx context.Context, id *httpx.Identity, tenantID, userID, roleID string) ([]string, error) {
	return s.changeMemberRole(ctx, id, "rbac.role_revoke", tenantID, userID, roleID)
}

func (s *Service) changeMemberRole(ctx context.Context, id *httpx.Identity, action, tenantID, userID, roleID string) ([]string, error) {
	tenantID, okT := db.ParseID(tenantID)
	userID, okU := db.ParseID(userID)
	if !okT || !okU || tenantID != id.TenantID {
		return nil, fmt.Errorf("member %s of %s: %w", userID, tenantID, ErrMemberNotFound)
	}
	active, err := s.members.ActiveMember(ctx, tenantID, userID)
	if err != nil {
		return nil, err
	}
	if !active {
		return nil, fmt.Errorf("member %s of %s: %w", userID, tenantID, ErrMemberNotFound)
	}
	r, err := s.Role(ctx, id, roleID)
	if err != nil {
		return nil, err
	}
	if r.ID == superAdminRoleID {
		s.refused(ctx, id, action, userID, "super_admin")
		return nil, &fault.Error{Kind: fault.Forbidden, Code: ErrEscalation.Code,
			Message: "super_admin cannot be assigned or revoked here: it is platform-wide", Details: map[string]any{"role": RoleSuperAdmin}}
	}
	if err := s.checkHolds(ctx, id, action, userID, r.Permissions); err != nil {
		return nil, err
	}
	before, err := s.st.memberRoles(ctx, tenantID, userID)
	if err != nil {
		return nil, err
	}
	err = s.db.InTx(ctx, func(ctx context.Context) error {
		if action == "rbac.role_assign" {
			return s.st.assign(ctx, tenantID, userID, r.ID, now())
		}
		if r.ID == adminRoleID {
			last, err := s.IsLastAdmin(ctx, tenantID, userID)
			if err != nil {
				return err
			}
			if last {
				return fmt.Errorf("tenant %s user %s: %w", tenantID, userID, ErrLastAdmin)
			}
		}
		return s.st.unassign(ctx, tenantID, userID, r.ID)
	})
	if errors.Is(err, ErrLastAdmin) {
		s.refused(ctx, id, action, userID, "last_admin")
	}
	if errors.Is(err, ErrNotGranted) {
		// Perhaps a retry of a revoke whose bump failed: see
		// RevokePermission.
		if err := s.bump(ctx); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	bumpErr := s.bump(ctx) // before anything else can fail
	after, err := s.st.memberRoles(ctx, tenantID, userID)
	if err != nil {
		return nil, err
	}
	e := s.event(id, action, userID, before, after)
	e.ResourceType = "membership"
	e.Metadata["role_id"], e.Metadata["role"] = r.ID, r.Name
	s.record(ctx, e)
	return after, bumpErr
}

// customRole returns one of the tenant's custom roles, refusing system roles.
func (s *Service) customRole(ctx context.Context, id *httpx.Identity, action, roleID string) (Role, error) {
	r, err := s.Role(ctx, id, roleID)
	if err != nil {
		return Role{}, err
	}
	if r.System || r.TenantID == nil {
		s.refused(ctx, id, action, r.ID, "system_role")
		return Role{}, fmt.Errorf("role %s: %w", r.Name, ErrSystemRole)
	}
	return r, nil
}

// checkGrant checks permissions about to be put in a custom role: known,
// not platform, held by the caller. It returns them sorted and unique.
func (s *Service) checkGrant(ctx context.Context, id *httpx.Identity, action, roleID string, perms []string) ([]string, error) {
	perms = slices.Compact(slices.Sorted(slices.Values(perms)))
	for _, p := range perms {
		if err := s.cat.checkGrantable(p, false); err != nil {
			if errors.Is(err, errPlatformPermission) {
				s.refused(ctx, id, action, roleID, "platform_permission")
				return nil, permissionError(ErrPlatformPermission, p)
			}
			return nil, permissionError(ErrUnknownPermission, p)
		}
	}
	if err := s.checkHolds(ctx, id, action, roleID, perms); err != nil {
		return nil, err
	}
	return perms, nil
}

// checkHolds returns an escalation error naming the first of perms the
// caller does not hold.
func (s *Service) checkHolds(ctx context.Context, id *httpx.Identity, action, resource string, perms []string) error {
	g, err := s.Permissions(ctx, id.TenantID, id.UserID)
	if err != nil {
		return err
	}
	for _, p := range perms {
		if !g.Holds(p) {
			s.refused(ctx, id, action, resource, "escalation: "+p)
			return escalation(p)
		}
	}
	return nil
}

// event is the audit event of a change the caller made, with the state
// before and after it.
func (s *Service) event(id *httpx.Identity, action, resource string, before, after any) audit.Event {
	return audit.Event{Action: action, Outcome: audit.Success, TenantID: id.TenantID, Actor: audit.User(id.UserID),
		ResourceType: "role", ResourceID: resource, Metadata: map[string]any{"before": before, "after": after}}
}

// refused records an attempt the rules turned down: escalation attempts are
// what an audit log is read for.
func (s *Service) refused(ctx context.Context, id *httpx.Identity, action, resource, reason string) {
	s.record(ctx, audit.Event{Action: action, Outcome: audit.Failure, TenantID: id.TenantID, Actor: audit.User(id.UserID),
		ResourceID: resource, Metadata: map[string]any{"reason": reason}})
}

func (s *Service) record(ctx context.Context, e audit.Event) {
	if s.events != nil {
		audit.Complete(ctx, &e)
		s.events.Record(ctx, e)
	}
}

// roleState is a role as audit metadata.
func roleState(r Role) map[string]any {
	return map[string]any{"name": r.Name, "description": r.Description, "permissions": slices.Clone(r.Permissions)}
}

// syncSystemRoles sets the system roles' grants in the database to the
// catalogue's, in one transaction, and reports whether anything changed.
// Every system role in the database must be in the catalogue and the other
// way round, so a typo cannot leave a role with stale grants.
func syncSystemRoles(ctx context.Context, d *db.DB, st store, cat *Catalogue) (bool, error) {
	changed := false
	err := d.InTx(ctx, func(ctx context.Context) error {
		rows, err := st.systemRoles(ctx)
		if err != nil {
			return err
		}
		inDB := map[string]bool{}
		for _, r := range rows {
			inDB[r.Name] = true
			sr, ok := cat.Role(r.Name)
			if !ok {
				return fmt.Errorf("rbac: system role %q is in the database but not in the catalogue", r.Name)
			}
			c, err := st.syncRole(ctx, r, sr.Permissions, sr.Description, now())
			if err != nil {
				return fmt.Errorf("rbac: sync role %s: %w", r.Name, err)
			}
			changed = changed || c
		}
		for _, r := range cat.roles {
			if !inDB[r.Name] {
				return fmt.Errorf("rbac: catalogue role %q is not a system role in the database", r.Name)
			}
		}
		return nil
	})
	return changed, err
}

func checkDescription(d string) error {
	if utf8.RuneCountInString(d) > maxDescription || !utf8.ValidString(d) {
		return fault.Field("description", fmt.Sprintf("description must be valid text of at most %d characters", maxDescription))
	}
	return nil
}

func now() time.Time { return time.Now().UTC() }

func newID() string { return uuid.Must(uuid.NewV7()).String() }
