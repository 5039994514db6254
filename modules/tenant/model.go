package tenant

import "time"

// Tenant is an organisation. Its slug is permanent; its name may change.
type Tenant struct {
	ID                   string `gorm:"primaryKey"`
	Slug                 string
	Name                 string
	Status               string // active or suspended
	DefaultRole          string // the role new members get
	LoginMethods         string // space-separated sign-in methods allowed
	Plan                 string // multiplies tenant-keyed rate limits
	RefreshGraceUses     int
	RefreshGraceWindowMS int `gorm:"column:refresh_grace_window_ms"`
	CreatedAt            time.Time
}

// Membership ties a user to a tenant.
type Membership struct {
	UserID    string `gorm:"primaryKey"`
	TenantID  string `gorm:"primaryKey"`
	Status    string // active or suspended
	CreatedAt time.Time
}

// Status values of tenants and memberships.
const (
	StatusActive    = "active"
	StatusSuspended = "suspended"
)
