package auth

import "time"

// Tenant is an organisation whose members sign in to it. The RBAC issue
// extends it; here it carries what sign-in needs.
type Tenant struct {
	ID                   string `gorm:"primaryKey"`
	Slug                 string
	Name                 string
	Status               string
	RefreshGraceUses     int
	RefreshGraceWindowMS int `gorm:"column:refresh_grace_window_ms"`
	DefaultRole          string
	LoginMethods         string // space-separated: password, …
	CreatedAt            time.Time
}

// User is a person: global, one email and one password across tenants.
type User struct {
	ID           string `gorm:"primaryKey"`
	Email        string
	Name         string
	PasswordHash string
	Status       string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// Membership ties a user to a tenant; its roles are the rbac module's.
type Membership struct {
	UserID    string `gorm:"primaryKey"`
	TenantID  string `gorm:"primaryKey"`
	Status    string
	CreatedAt time.Time
}

// Session is one sign-in on one device: a family of refresh tokens. Its ID
// is the sid claim of every access token issued in it.
type Session struct {
	ID            string `gorm:"primaryKey"`
	UserID        string
	TenantID      string
	UserAgent     string
	IP            string `gorm:"column:ip"`
	CreatedAt     time.Time
	LastUsedAt    time.Time
	ExpiresAt     time.Time
	RevokedAt     *time.Time
	RevokedReason string
}

// RefreshToken is one token of a session's family, known only by its hash.
type RefreshToken struct {
	ID        string `gorm:"primaryKey"`
	SessionID string
	ParentID  *string
	TokenHash []byte
	CreatedAt time.Time
	ExpiresAt time.Time
	UsedAt    *time.Time
	GraceUses int
}

// Status values.
const (
	statusActive = "active"
)
