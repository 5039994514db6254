package audit

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"gatehouse/platform/db"
	"gatehouse/platform/fault"
)

// Filter selects events. Empty fields select everything.
type Filter struct {
	// Tenant confines the query to one tenant's events ("" for the
	// platform's own); nil reads every tenant's, for super admins only.
	Tenant       *string
	Actor        string // actor id
	Action       string
	Outcome      string
	ResourceType string
	ResourceID   string
	From         time.Time // events at or after From
	To           time.Time // events before To
}

// ErrBadCursor is the error of a cursor List did not make.
var ErrBadCursor = fault.Field("cursor", "cursor is not one this API returned")

// maxLimit bounds a page of List whatever the caller asks.
const maxLimit = 1000

// List returns up to limit events matching f, newest first, after cursor
// ("" for the first page), and the cursor of the next page, "" when there is
// none. Pages are keyed on (time, id), not offsets, so events written while
// a client pages through never make it see one twice or skip one that was
// there when it started. A limit outside 1 to 1000 is clamped. A cursor List
// did not make gives ErrBadCursor.
func List(ctx context.Context, d *db.DB, f Filter, cursor string, limit int) ([]Row, string, error) {
	limit = min(max(limit, 1), maxLimit)
	q := f.apply(d.Conn(ctx).Model(&stored{}))
	if cursor != "" {
		t, id, err := decodeCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		q = q.Where(`("time" < ? OR ("time" = ? AND id < ?))`, t, t, id)
	}
	var page []stored
	// One more than asked says whether there is a next page.
	if err := q.Order(`"time" DESC, id DESC`).Limit(limit + 1).Find(&page).Error; err != nil {
		return nil, "", fmt.Errorf("list audit events: %w", err)
	}
	next := ""
	if len(page) > limit {
		page = page[:limit]
		last := page[limit-1]
		next = encodeCursor(last.Time, last.ID)
	}
	rows := make([]Row, len(page))
	for i, s := range page {
		rows[i] = s.row()
	}
	return rows, next, nil
}

// streamPage is how many events Stream reads at a time.
const streamPage = 500

// Stream calls fn with every event matching f, newest first, reading a page
// at a time so that no more than one page is held in memory. It stops at
// and returns fn's first error.
func Stream(ctx context.Context, d *db.DB, f Filter, fn func(Row) error) error {
	cursor := ""
	for {
		// Checked each page: on SQLite a statement does not stop for a
		// cancelled context (db.DB.Conn), and an export whose client left
		// must not read the whole log.
		if err := ctx.Err(); err != nil {
			return err
		}
		rows, next, err := List(ctx, d, f, cursor, streamPage)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if err := fn(r); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		cursor = next
	}
}

func (f Filter) apply(q *gorm.DB) *gorm.DB {
	if f.Tenant != nil {
		q = q.Where("tenant_id = ?", *f.Tenant)
	}
	for _, c := range []struct{ col, v string }{
		{"actor_id", f.Actor}, {"action", f.Action}, {"outcome", f.Outcome},
		{"resource_type", f.ResourceType}, {"resource_id", f.ResourceID},
	} {
		if c.v != "" {
			q = q.Where(c.col+" = ?", c.v)
		}
	}
	if !f.From.IsZero() {
		q = q.Where(`"time" >= ?`, f.From.UTC())
	}
	if !f.To.IsZero() {
		q = q.Where(`"time" < ?`, f.To.UTC())
	}
	return q
}

// A cursor is the (time, id) of the last event of a page, so that it names
// a position even if that event is pruned.
func encodeCursor(t time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(t.UTC().Format(time.RFC3339Nano) + " " + id))
}

func decodeCursor(c string) (time.Time, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", ErrBadCursor
	}
	ts, id, ok := strings.Cut(string(b), " ")
	if !ok {
		return time.Time{}, "", ErrBadCursor
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return time.Time{}, "", ErrBadCursor
	}
	// A malformed id would reach PostgreSQL's uuid cast as a 500.
	u, err := uuid.Parse(id)
	if err != nil {
		return time.Time{}, "", ErrBadCursor
	}
	return t.UTC(), u.String(), nil
}
