package audit

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/db"
	"gatehouse/platform/fault"
	"gatehouse/platform/httpx"
)

// Page is the JSON answer of GET /v1/audit: a page of events, newest first.
type Page struct {
	Events     []Row  `json:"events"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// ErrOtherTenant is the error of a caller who is not a super admin asking
// for another tenant's audit log (or every tenant's) with ?tenant=.
var ErrOtherTenant = fault.New(fault.Forbidden, "forbidden_tenant", "only a super admin may read another tenant's audit log")

// csvHeader is the first line of a CSV export; each row follows in this
// order.
func csvHeader() []string {
	return []string{"id", "time", "tenant_id", "seq", "actor_type", "actor_id", "action", "resource_type",
		"resource_id", "outcome", "ip", "user_agent", "request_id", "metadata", "prev_hash", "hash"}
}

// flushEvery is how many exported rows go out between flushes: often
// enough that a client sees progress, rarely enough not to send a packet a
// row.
const flushEvery = 100

// Routes returns the audit log's endpoint: GET /v1/audit, which needs
// audit:read and reads the caller's tenant's events. isSuper says whether a
// user is a super admin; only one may pass ?tenant=<id> for another tenant
// or ?tenant=all for every tenant, and anyone else who asks for another
// tenant gets 403 (ErrOtherTenant), not their own tenant's log in
// disguise. nil isSuper means no one is.
//
// Filters: actor, action, outcome, resource_type, resource_id, from and to
// (RFC 3339; from inclusive, to exclusive). Paging: limit (1 to 200,
// default 50) and cursor. ?format=ndjson or ?format=csv exports every
// matching event, limit and cursor aside, streamed as it is read.
func Routes(d *db.DB, isSuper func(ctx context.Context, userID string) (bool, error)) []httpx.Route {
	h := handler{db: d, isSuper: isSuper}
	return []httpx.Route{{
		Method: http.MethodGet, Path: "/v1/audit",
		Summary: "List audit events",
		Description: "Newest first, keyset-paginated. format=ndjson or format=csv streams every matching event " +
			"as a download. Super admins may read another tenant (tenant=<id>) or all (tenant=all).",
		Tags:   []string{"audit"},
		Auth:   httpx.Permission("audit:read"),
		Out:    Page{},
		Handle: h.list,
	}}
}

type handler struct {
	db      *db.DB
	isSuper func(ctx context.Context, userID string) (bool, error)
}

func (h handler) list(c echo.Context) error {
	ctx := c.Request().Context()
	f, err := h.filter(c)
	if err != nil {
		return err
	}
	switch format := c.QueryParam("format"); format {
	case "ndjson":
		return h.ndjson(c, f)
	case "csv":
		return h.csv(c, f)
	case "", "json":
	default:
		return fault.Field("format", "format must be json, ndjson or csv")
	}
	limit := 50
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 200 {
			return fault.Field("limit", "limit must be a number from 1 to 200")
		}
		limit = n
	}
	rows, next, err := List(ctx, h.db, f, c.QueryParam("cursor"), limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, Page{Events: rows, NextCursor: next})
}

// filter reads the query's filters and decides which tenant it may see.
func (h handler) filter(c echo.Context) (Filter, error) {
	id := httpx.IdentityOf(c)
	if id == nil {
		// The route needs a permission, so authentication ran: this is a
		// wiring bug, not the client's doing.
		return Filter{}, fault.New(fault.Internal, "internal", "no identity on an authenticated route")
	}
	f := Filter{Tenant: &id.TenantID, Actor: c.QueryParam("actor"), Action: c.QueryParam("action"),
		Outcome: c.QueryParam("outcome"), ResourceType: c.QueryParam("resource_type"),
		ResourceID: c.QueryParam("resource_id")}
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		if v := c.QueryParam(p.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return Filter{}, fault.Field(p.name, p.name+" must be an RFC 3339 time, such as 2025-01-02T15:04:05Z")
			}
			*p.t = t
		}
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return Filter{}, fault.Field("to", "to must be after from")
	}
	if t := c.QueryParam("tenant"); t != "" && t != id.TenantID {
		ok := false
		if h.isSuper != nil {
			var err error
			if ok, err = h.isSuper(c.Request().Context(), id.UserID); err != nil {
				return Filter{}, err
			}
		}
		if !ok {
			return Filter{}, ErrOtherTenant
		}
		if t == "all" {
			f.Tenant = nil
		} else {
			f.Tenant = &t
		}
	}
	return f, nil
}

// export starts a download answer; rows are written after it.
func export(c echo.Context, contentType, ext string) *echo.Response {
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, contentType)
	w.Header().Set(echo.HeaderContentDisposition,
		`attachment; filename="audit-`+time.Now().UTC().Format("20060102T150405Z")+"."+ext+`"`)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return w
}

func (h handler) ndjson(c echo.Context, f Filter) error {
	w := export(c, "application/x-ndjson", "ndjson")
	enc := json.NewEncoder(w) // Encode ends each value with the newline NDJSON wants
	n := 0
	err := Stream(c.Request().Context(), h.db, f, func(r Row) error {
		if err := enc.Encode(r); err != nil {
			return err
		}
		if n++; n%flushEvery == 0 {
			w.Flush()
		}
		return nil
	})
	w.Flush()
	// The status is sent: an error can only cut the download short,
	// which the client sees as a truncated body; the handler still
	// returns it so that it is logged.
	return err
}

func (h handler) csv(c echo.Context, f Filter) error {
	w := export(c, "text/csv; charset=utf-8", "csv")
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHeader()); err != nil {
		return err
	}
	n := 0
	rec := make([]string, 16)
	err := Stream(c.Request().Context(), h.db, f, func(r Row) error {
		rec = append(rec[:0], r.ID, r.Time.Format(time.RFC3339Nano), r.TenantID, strconv.FormatInt(r.Seq, 10),
			r.ActorType, r.ActorID, r.Action, r.ResourceType, r.ResourceID, r.Outcome, r.IP, r.UserAgent,
			r.RequestID, string(r.Metadata), r.PrevHash, r.Hash)
		for i, v := range rec {
			rec[i] = CSVSafe(v)
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
		if n++; n%flushEvery == 0 {
			cw.Flush()
			w.Flush()
		}
		return cw.Error()
	})
	cw.Flush()
	w.Flush()
	if err != nil {
		return err
	}
	return cw.Error()
}

// CSVSafe returns v so that a spreadsheet opening the CSV shows it as text
// rather than running it as a formula: a value starting with =, +, -, @,
// a tab or a carriage return gets a leading '. (encoding/csv does the
// quoting; this guards against formula injection, which quoting does not.)
func CSVSafe(v string) string {
	if v != "" {
		switch v[0] {
		case '=', '+', '-', '@', '\t', '\r':
			return "'" + v
		}
	}
	return v
}
