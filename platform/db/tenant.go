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
// on a scoped handle they fail with ErrRawScoped. The scope also reaches a
// Preload's query, which then needs tenant_id too, and a Joins must not
// make tenant_id ambiguous (it fails if it does); Save of a new row goes
// as an insert, which Creates' rule covers.
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
			exprs = append(exprs, group{w})
		}
	}
	delete(g.Statement.Clauses, "WHERE")
	g.Statement.AddClause(clause.Where{Exprs: exprs})
}

// group is the other conditions as they were, always in parentheses:
// gorm adds its own only where it sees AND or OR in a condition's SQL, and
// not around a lone Or ("id = 1 OR id = 3" would join the tenant's
// condition by AND to its first half only).
type group struct{ w clause.Where }

func (g group) Build(b clause.Builder) {
	b.WriteByte('(')
	g.w.Build(b)
	b.WriteByte(')')
}

func refuseRaw(g *gorm.DB) {
	if _, ok := g.Statement.Settings.Load(scopeKey); ok {
		_ = g.AddError(ErrRawScoped)
	}
}
