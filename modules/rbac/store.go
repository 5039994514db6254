package rbac

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"gatehouse/platform/db"
	"gatehouse/platform/fault"
)

// store reads and writes the rbac tables: roles, role_permissions,
// membership_roles and super_admins. Every method takes the tenant it works
// in as an argument and puts it in its WHERE clause, and translates gorm's
// errors into fault values.
type store struct{ db *db.DB }

func (s store) conn(ctx context.Context) *gorm.DB { return s.db.Conn(ctx) }

// systemRoles returns the roles every tenant has.
func (s store) systemRoles(ctx context.Context) ([]Role, error) {
	var out []Role
	err := s.conn(ctx).Where("tenant_id IS NULL AND system = ?", true).Order("name").Find(&out).Error
	return out, db.Translate(err)
}

// syncRole makes the role's grants exactly perms and, unless desc is empty,
// its description desc. It reports whether anything changed.
func (s store) syncRole(ctx context.Context, r Role, perms []string, desc string, now time.Time) (bool, error) {
	changed := false
	del := s.conn(ctx).Where("role_id = ?", r.ID)
	if len(perms) > 0 {
		del = del.Where("permission NOT IN ?", perms)
	}
	res := del.Delete(&rolePermission{})
	if res.Error != nil {
		return false, db.Translate(res.Error)
	}
	changed = res.RowsAffected > 0
	if len(perms) > 0 {
		rows := make([]rolePermission, len(perms))
		for i, p := range perms {
			rows[i] = rolePermission{RoleID: r.ID, Permission: p}
		}
		res = s.conn(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&rows)
		if res.Error != nil {
			return false, db.Translate(res.Error)
		}
		changed = changed || res.RowsAffected > 0
	}
	if desc != "" && desc != r.Description {
		if err := s.conn(ctx).Model(&Role{}).Where("id = ?", r.ID).
			Updates(map[string]any{"description": desc, "updated_at": now}).Error; err != nil {
			return false, db.Translate(err)
		}
		changed = true
	}
	return changed, nil
}

// role returns the role with this id if it is a system role or tenantID's,
// else an error wrapping ErrRoleNotFound.
func (s store) role(ctx context.Context, tenantID, id string) (Role, error) {
	var r Role
	err := s.conn(ctx).Where("id = ? AND (tenant_id = ? OR tenant_id IS NULL)", id, tenantID).First(&r).Error
	if err != nil {
		return Role{}, roleError(err, id)
	}
	r.Permissions, err = s.permissions(ctx, r.ID)
	return r, err
}

// roleByName returns the system role or tenantID's custom role named name.
func (s store) roleByName(ctx context.Context, tenantID, name string) (Role, error) {
	var r Role
	err := s.conn(ctx).Where("name = ? AND (tenant_id = ? OR tenant_id IS NULL)", name, tenantID).
		Order("tenant_id NULLS FIRST").First(&r).Error
	if err != nil {
		return Role{}, roleError(err, name)
	}
	return r, nil
}

func roleError(err error, which string) error {
	err = db.Translate(err)
	if errors.Is(err, fault.ErrNotFound) {
		return fmt.Errorf("role %s: %w", which, ErrRoleNotFound)
	}
	return err
}

// roles returns the system roles, then tenantID's custom roles, each by
// name and with its permissions. The custom roles are bounded by
// maxCustomRoles, so the list needs no paging.
func (s store) roles(ctx context.Context, tenantID string) ([]Role, error) {
	var out []Role
	err := s.conn(ctx).Where("tenant_id = ? OR tenant_id IS NULL", tenantID).
		Order("system DESC").Order("name").Limit(maxCustomRoles + 100).Find(&out).Error
	if err != nil {
		return nil, db.Translate(err)
	}
	ids := make([]string, len(out))
	for i, r := range out {
		ids[i] = r.ID
	}
	byRole, err := s.permissionsOf(ctx, ids)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Permissions = byRole[out[i].ID]
		if out[i].Permissions == nil {
			out[i].Permissions = []string{}
		}
	}
	return out, nil
}

// permissions returns one role's grants, sorted.
func (s store) permissions(ctx context.Context, roleID string) ([]string, error) {
	out := []string{}
	err := s.conn(ctx).Model(&rolePermission{}).Where("role_id = ?", roleID).Order("permission").Pluck("permission", &out).Error
	return out, db.Translate(err)
}

// permissionsOf returns the sorted grants of each role.
func (s store) permissionsOf(ctx context.Context, roleIDs []string) (map[string][]string, error) {
	var rows []rolePermission
	if len(roleIDs) > 0 {
		if err := s.conn(ctx).Where("role_id IN ?", roleIDs).Order("permission").Find(&rows).Error; err != nil {
			return nil, db.Translate(err)
		}
	}
	out := make(map[string][]string, len(roleIDs))
	for _, r := range rows {
		out[r.RoleID] = append(out[r.RoleID], r.Permission)
	}
	return out, nil
}

// customRoleCount counts tenantID's custom roles.
func (s store) customRoleCount(ctx context.Context, tenantID string) (int64, error) {
	var n int64
	err := s.conn(ctx).Model(&Role{}).Where("tenant_id = ?", tenantID).Count(&n).Error
	return n, db.Translate(err)
}

// createRole inserts a custom role with its grants; a taken name gives an
// error wrapping ErrRoleExists.
func (s store) createRole(ctx context.Context, r Role) error {
	return s.db.InTx(ctx, func(ctx context.Context) error {
		if err := db.Translate(s.conn(ctx).Create(&r).Error); err != nil {
			if errors.Is(err, fault.ErrConflict) {
				return fmt.Errorf("role %s: %w", r.Name, ErrRoleExists)
			}
			return err
		}
		_, err := s.addPermissions(ctx, r.ID, r.Permissions, r.UpdatedAt)
		return err
	})
}

// setDescription changes a role's description.
func (s store) setDescription(ctx context.Context, id, desc string, now time.Time) error {
	return db.Translate(s.conn(ctx).Model(&Role{}).Where("id = ?", id).
		Updates(map[string]any{"description": desc, "updated_at": now}).Error)
}

// deleteRole deletes a custom role; its grants and assignments go with it
// (ON DELETE CASCADE).
func (s store) deleteRole(ctx context.Context, tenantID, id string) error {
	res := s.conn(ctx).Where("id = ? AND tenant_id = ?", id, tenantID).Delete(&Role{})
	if res.Error != nil {
		return db.Translate(res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("role %s: %w", id, ErrRoleNotFound)
	}
	return nil
}

// defaultRole returns the name of the tenant's default role, which every
// newcomer gets ("" for no such tenant). On PostgreSQL, inside a
// transaction, it locks the tenant's row until the transaction ends, so a
// settings update making a role the default (which updates that row, then
// checks the role exists) and a delete of that role are serialised;
// SQLite's transactions take the write lock at BEGIN already.
func (s store) defaultRole(ctx context.Context, tenantID string) (string, error) {
	q := `SELECT default_role FROM tenants WHERE id = ?`
	if s.db.Dialect() == db.Postgres {
		q += " FOR UPDATE"
	}
	var out []string
	if err := s.conn(ctx).Raw(q, tenantID).Scan(&out).Error; err != nil {
		return "", db.Translate(err)
	}
	if len(out) == 0 {
		return "", nil
	}
	return out[0], nil
}

// addPermissions grants perms to a role, skipping those it has, and reports
// how many were new.
func (s store) addPermissions(ctx context.Context, roleID string, perms []string, now time.Time) (int64, error) {
	if len(perms) == 0 {
		return 0, nil
	}
	rows := make([]rolePermission, len(perms))
	for i, p := range perms {
		rows[i] = rolePermission{RoleID: roleID, Permission: p}
	}
	res := s.conn(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&rows)
	if res.Error != nil {
		return 0, db.Translate(res.Error)
	}
	if res.RowsAffected > 0 {
		if err := s.touch(ctx, roleID, now); err != nil {
			return 0, err
		}
	}
	return res.RowsAffected, nil
}

// removePermission revokes one grant of a role; ErrNotGranted if it had none.
func (s store) removePermission(ctx context.Context, roleID, perm string, now time.Time) error {
	res := s.conn(ctx).Where("role_id = ? AND permission = ?", roleID, perm).Delete(&rolePermission{})
	if res.Error != nil {
		return db.Translate(res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("role %s permission %s: %w", roleID, perm, ErrNotGranted)
	}
	return s.touch(ctx, roleID, now)
}

func (s store) touch(ctx context.Context, roleID string, now time.Time) error {
	return db.Translate(s.conn(ctx).Model(&Role{}).Where("id = ?", roleID).Update("updated_at", now).Error)
}

// assign gives the member the role; assigning a role it has is no change. A
// missing membership gives an error wrapping ErrMemberNotFound.
func (s store) assign(ctx context.Context, tenantID, userID, roleID string, now time.Time) error {
	err := s.conn(ctx).Clauses(clause.OnConflict{DoNothing: true}).
		Create(&membershipRole{TenantID: tenantID, UserID: userID, RoleID: roleID, CreatedAt: now}).Error
	if errors.Is(err, gorm.ErrForeignKeyViolated) {
		return fmt.Errorf("membership %s/%s: %w", tenantID, userID, ErrMemberNotFound)
	}
	return db.Translate(err)
}

// unassign takes the role from the member; ErrNotGranted if it had none.
func (s store) unassign(ctx context.Context, tenantID, userID, roleID string) error {
	res := s.conn(ctx).Where("tenant_id = ? AND user_id = ? AND role_id = ?", tenantID, userID, roleID).
		Delete(&membershipRole{})
	if res.Error != nil {
		return db.Translate(res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("membership %s/%s role %s: %w", tenantID, userID, roleID, ErrNotGranted)
	}
	return nil
}

// memberRoles returns the names of the member's roles in the tenant, sorted.
// Only system roles and the tenant's own count: a row naming another
// tenant's role, which nothing here writes, grants nothing.
func (s store) memberRoles(ctx context.Context, tenantID, userID string) ([]string, error) {
	var out []string
	err := s.conn(ctx).Table("membership_roles mr").Joins("JOIN roles r ON r.id = mr.role_id").
		Where("mr.tenant_id = ? AND mr.user_id = ? AND (r.tenant_id IS NULL OR r.tenant_id = mr.tenant_id)", tenantID, userID).
		Order("r.name").Pluck("r.name", &out).Error
	return out, db.Translate(err)
}

// memberPermissions returns the union of the grants of the member's roles in
// the tenant. The super_admin role is left out: being a super admin is a
// super_admins row, never a tenant's role, so a membership naming it (the
// migration could carry one over) grants nothing by it.
func (s store) memberPermissions(ctx context.Context, tenantID, userID string) ([]string, error) {
	var out []string
	err := s.conn(ctx).Table("membership_roles mr").
		Joins("JOIN roles r ON r.id = mr.role_id").
		Joins("JOIN role_permissions rp ON rp.role_id = mr.role_id").
		Where("mr.tenant_id = ? AND mr.user_id = ? AND mr.role_id <> ? AND (r.tenant_id IS NULL OR r.tenant_id = mr.tenant_id)",
			tenantID, userID, superAdminRoleID).
		Distinct("rp.permission").Pluck("rp.permission", &out).Error
	return out, db.Translate(err)
}

// isSuperAdmin reports whether the user is a super admin.
func (s store) isSuperAdmin(ctx context.Context, userID string) (bool, error) {
	var n int64
	err := s.conn(ctx).Model(&superAdmin{}).Where("user_id = ?", userID).Count(&n).Error
	return n > 0, db.Translate(err)
}

// setSuperAdmin adds or removes the user's super_admins row and reports
// whether that changed anything. A user that does not exist gives an error
// wrapping fault.ErrNotFound.
func (s store) setSuperAdmin(ctx context.Context, userID string, on bool, now time.Time) (bool, error) {
	if !on {
		res := s.conn(ctx).Where("user_id = ?", userID).Delete(&superAdmin{})
		return res.RowsAffected > 0, db.Translate(res.Error)
	}
	res := s.conn(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&superAdmin{UserID: userID, CreatedAt: now})
	if errors.Is(res.Error, gorm.ErrForeignKeyViolated) {
		return false, fmt.Errorf("user %s: %w", userID, fault.ErrNotFound)
	}
	return res.RowsAffected > 0, db.Translate(res.Error)
}

// activeAdmins returns the users holding the admin role in the tenant whose
// membership is active. On PostgreSQL, inside a transaction, it locks their
// membership_roles and memberships rows until the transaction ends, so two
// admins taking admin from each other at once (a role revoked, a member
// suspended or removed) are serialised and the second sees the first's
// change; SQLite's transactions take the write lock at BEGIN already.
func (s store) activeAdmins(ctx context.Context, tenantID string) ([]string, error) {
	q := `SELECT mr.user_id FROM membership_roles mr
		JOIN memberships m ON m.user_id = mr.user_id AND m.tenant_id = mr.tenant_id
		WHERE mr.tenant_id = ? AND mr.role_id = ? AND m.status = 'active'`
	if s.db.Dialect() == db.Postgres {
		q += " FOR UPDATE OF mr, m"
	}
	var out []string
	if err := s.conn(ctx).Raw(q, tenantID, adminRoleID).Scan(&out).Error; err != nil {
		return nil, db.Translate(err)
	}
	slices.Sort(out)
	return out, nil
}
