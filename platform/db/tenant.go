package db

import (
	"context"
	"errors"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
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

// Scoped returns Conn(ctx) confined to the tenant in ctx: stores read,
// update and delete tenant-owned rows only through it, so a forgotten
// filter cannot leak another tenant's data. Without a tenant in ctx every
// query on it fails with ErrNoTenant. Creates set tenant_id from TenantOf
// themselves.
//
// The condition is added when the statement is built (confine), around
// all the others: tenant_id = ? AND (a OR b), never tenant_id = ? AND a
// OR b, which a Where added here would make of a later Or, reaching every
// tenant's b. Raw and Exec carry their own SQL, which nothing can confine:
// on a scoped handle they fail with ErrRawScoped.
func (d *DB) Scoped(ctx context.Context) *gorm.DB {
	g := d.Conn(ctx)
	id, ok := TenantOf(ctx)
	if !ok {
		_ = g.AddError(ErrNoTenant)
		return g
	}
	return g.Set(scopeKey, id)
}

// ErrRawScoped is the error of Raw or Exec on a Scoped handle: a bug.
var ErrRawScoped = errors.New("db: Raw or Exec on a tenant-scoped handle, which cannot confine it")

const scopeKey = "gatehouse:tenant_id"

// registerScope has every statement of a Scoped handle confined as it is
// built, before gorm's own callback for its kind writes the SQL.
func registerScope(g *gorm.DB) error {
	cb := g.Callback()
	for _, err := range []error{
		cb.Query().Before("gorm:query").Register("gatehouse:scope", confine),
		cb.Row().Before("gorm:row").Register("gatehouse:scope", confine),
		cb.Update().Before("gorm:update").Register("gatehouse:scope", confine),
		cb.Delete().Before("gorm:delete").Register("gatehouse:scope", confine),
		cb.Raw().Before("gorm:raw").Register("gatehouse:scope", refuseRaw),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// confine puts the tenant condition first and every other condition, as
// one group, after it.
func confine(g *gorm.DB) {
	id, ok := g.Statement.Settings.Load(scopeKey)
	if !ok || g.Error != nil {
		return
	}
	if g.Statement.SQL.Len() > 0 { // Raw's own SQL, run by Scan or Rows
		_ = g.AddError(ErrRawScoped)
		return
	}
	tenant := clause.Eq{Column: clause.Column{Name: "tenant_id"}, Value: id}
	exprs := []clause.Expression{tenant}
	if c, ok := g.Statement.Clauses["WHERE"]; ok {
		if w, ok := c.Expression.(clause.Where); ok && len(w.Exprs) > 0 {
			// A group of several is put in parentheses when built; one
			// alone is, by the outer list, if its SQL holds AND or OR.
			// A lone Or is grouped too, or it would be joined by OR.
			group := w.Exprs[0]
			if _, or := group.(clause.OrConditions); or || len(w.Exprs) > 1 {
				group = clause.AndConditions{Exprs: w.Exprs}
			}
			exprs = append(exprs, group)
		}
	}
	delete(g.Statement.Clauses, "WHERE")
	g.Statement.AddClause(clause.Where{Exprs: exprs})
}

func refuseRaw(g *gorm.DB) {
	if _, ok := g.Statement.Settings.Load(scopeKey); ok {
		_ = g.AddError(ErrRawScoped)
	}
}
