package rbac

import "time"

// The system roles' fixed ids, seeded by migration 00004.
const (
	superAdminRoleID = "01950000-0000-7000-8000-000000000001"
	adminRoleID      = "01950000-0000-7000-8000-000000000002"
)

// The system roles the code itself refers to.
const (
	RoleSuperAdmin = "super_admin"
	RoleAdmin      = "admin"
)

// Role is a set of permissions members can be given: a system role, which
// every tenant has, or a tenant's custom role.
type Role struct {
	ID string `gorm:"primaryKey"`
	// TenantID is nil for a system role.
	TenantID    *string
	Name        string
	Description string
	System      bool
	CreatedAt   time.Time
	UpdatedAt   time.Time
	// Permissions are the role's grants, sorted; loaded separately.
	Permissions []string `gorm:"-"`
}

// rolePermission is one grant of a role.
type rolePermission struct {
	RoleID     string `gorm:"primaryKey"`
	Permission string `gorm:"primaryKey"`
}

// TableName names the table for gorm.
func (rolePermission) TableName() string { return "role_permissions" }

// membershipRole gives a member of a tenant one role there.
type membershipRole struct {
	TenantID  string `gorm:"primaryKey"`
	UserID    string `gorm:"primaryKey"`
	RoleID    string `gorm:"primaryKey"`
	CreatedAt time.Time
}

// TableName names the table for gorm.
func (membershipRole) TableName() string { return "membership_roles" }

// superAdmin makes a user a super admin, in every tenant.
type superAdmin struct {
	UserID    string `gorm:"primaryKey"`
	CreatedAt time.Time
}

// TableName names the table for gorm.
func (superAdmin) TableName() string { return "super_admins" }
