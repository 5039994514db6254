package tenant

import (
	"context"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"gatehouse/platform/db"
)

// store reads and writes tenants and memberships.
type store struct{ db *db.DB }

func (s store) conn(ctx context.Context) *gorm.DB { return s.db.Conn(ctx) }

func (s store) create(ctx context.Context, t Tenant) error {
	return db.Translate(s.conn(ctx).Create(&t).Error)
}

// ensure inserts t unless a tenant has its slug.
func (s store) ensure(ctx context.Context, t Tenant) error {
	return db.Translate(s.conn(ctx).Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "slug"}}, DoNothing: true}).
		Create(&t).Error)
}

func (s store) activeTenants(ctx context.Context, userID string) ([]string, error) {
	var ids []string
	err := s.conn(ctx).Model(&Membership{}).Where("user_id = ? AND status = ?", userID, StatusActive).
		Order("created_at").Limit(1000).Pluck("tenant_id", &ids).Error
	return ids, db.Translate(err)
}

func (s store) byID(ctx context.Context, id string) (Tenant, error) {
	var t Tenant
	return t, db.Translate(s.conn(ctx).Where("id = ?", id).First(&t).Error)
}

func (s store) bySlug(ctx context.Context, slug string) (Tenant, error) {
	var t Tenant
	return t, db.Translate(s.conn(ctx).Where("slug = ?", slug).First(&t).Error)
}

// list returns up to limit tenants after the cursor (an id), in id order:
// ids are UUIDv7, so that is creation order.
func (s store) list(ctx context.Context, after string, limit int) ([]Tenant, error) {
	var ts []Tenant
	q := s.conn(ctx).Order("id").Limit(limit)
	if after != "" {
		q = q.Where("id > ?", after)
	}
	return ts, db.Translate(q.Find(&ts).Error)
}

// suspended lists the ids of the suspended tenants.
func (s store) suspended(ctx context.Context) ([]string, error) {
	var ids []string
	return ids, db.Translate(s.conn(ctx).Model(&Tenant{}).Where("status = ?", StatusSuspended).Pluck("id", &ids).Error)
}

func (s store) update(ctx context.Context, id string, fields map[string]any) error {
	return db.Translate(s.conn(ctx).Model(&Tenant{}).Where("id = ?", id).Updates(fields).Error)
}

func (s store) membership(ctx context.Context, tenantID, userID string) (Membership, error) {
	var m Membership
	return m, db.Translate(s.conn(ctx).Where("tenant_id = ? AND user_id = ?", tenantID, userID).First(&m).Error)
}

func (s store) addMember(ctx context.Context, m Membership) error {
	return db.Translate(s.conn(ctx).Create(&m).Error)
}

func (s store) members(ctx context.Context, tenantID, after string, limit int) ([]Membership, error) {
	var ms []Membership
	q := s.conn(ctx).Where("tenant_id = ?", tenantID).Order("user_id").Limit(limit)
	if after != "" {
		q = q.Where("user_id > ?", after)
	}
	return ms, db.Translate(q.Find(&ms).Error)
}

func (s store) setMemberStatus(ctx context.Context, tenantID, userID, status string) error {
	return db.Translate(s.conn(ctx).Model(&Membership{}).Where("tenant_id = ? AND user_id = ?", tenantID, userID).
		Update("status", status).Error)
}

func (s store) removeMember(ctx context.Context, tenantID, userID string) error {
	return db.Translate(s.conn(ctx).Where("tenant_id = ? AND user_id = ?", tenantID, userID).Delete(&Membership{}).Error)
}
