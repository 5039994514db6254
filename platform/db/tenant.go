package db

import (
	"context"
	"errors"

	"gorm.io/gorm"
)

// ErrNoTenant is the error of a tenant-scoped query run without a tenant in
// its context: a bug, never a client's mistake.
var ErrNoTenant = errors.New("db: tenant-scoped query without a tenant in the context")

type tenantKey struct{}

// WithTenant returns ctx carrying the tenant that tenant-owned queries are
// confined to. The chain's tenant step sets it on every authenticated
// request, from the access token (never from the request body).
func WithTenant(ctx context.Context, tenantID string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenantID)
}

// TenantOf returns the tenant carried by ctx.
func TenantOf(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(tenantKey{}).(string)
	return id, ok && id != ""
}

// Scoped returns Conn(ctx) confined to the tenant in ctx (tenant_id = ?):
// stores read, update and delete tenant-owned rows only through it, so a
// forgotten filter cannot leak another tenant's data. Without a tenant in
// ctx every query on it fails with ErrNoTenant. Creates set tenant_id from
// TenantOf themselves. The condition is ANDed with those that follow, so
// a scoped query must not use Or (tenant_id = ? AND a OR b reaches every
// tenant's b), and Raw and Exec are not confined at all.
func (d *DB) Scoped(ctx context.Context) *gorm.DB {
	g := d.Conn(ctx)
	id, ok := TenantOf(ctx)
	if !ok {
		_ = g.AddError(ErrNoTenant)
		return g
	}
	return g.Where("tenant_id = ?", id)
}
