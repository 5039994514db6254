package auth

import "time"

// Tenant is what sign-in knows of a tenant (the tenant module owns them).
type Tenant struct {
	ID, Slug, Name, Status string
	LoginMethods           string // space-separated: password, …
	RefreshGraceUses       int    // extra uses of a just-rotated refresh token
	RefreshGraceWindow     time.Duration
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

// Session is one sign-in on one device: a family of refresh tokens. Its ID
// is the sid claim of every access token issued in it.
type Session struct {
	ID            string `gorm:"primaryKey"`
	UserID        string
	TenantID      string
	FamilyID      *string // the sign-in's first session (switch-tenant); nil: ID
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
