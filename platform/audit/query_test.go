package audit

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/db"
	"gatehouse/platform/httpx"
)

func testMasking(t *testing.T, e *env) {
	type creds struct {
		User     string `json:"user"`
		Password string `json:"password"`
	}
	meta := map[string]any{"password": "hunter2-pw", "nested": map[string]any{"refresh_token": "rt-secret-y"},
		"list": []any{map[string]any{"Authorization": "Bearer abc-secret"}}, "email": "z@example.com",
		"X-Session-Cookie": "cookie-secret",
		// Types of their own: masked as the JSON they are stored as.
		"headers": http.Header{"Authorization": {"Bearer hdr-secret"}, "Accept": {"*/*"}},
		"form":    map[string][]string{"client_secret": {"form-secret"}},
		"struct":  creds{User: "u", Password: "struct-secret"}, "private_key": "pk-secret", "big": int64(1) << 60}
	e.write(Event{TenantID: "m", Action: "mask.test", Metadata: meta})
	if meta["password"] != "hunter2-pw" {
		t.Errorf("the caller's map was changed: %v", meta)
	}
	rs := e.rows("m")
	if len(rs) != 1 {
		t.Fatalf("rows = %d", len(rs))
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(rs[0].Metadata), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"password": Masked, "nested": map[string]any{"refresh_token": Masked},
		"list": []any{map[string]any{"Authorization": Masked}}, "email": "z@example.com", "X-Session-Cookie": Masked,
		"headers": map[string]any{"Authorization": Masked, "Accept": []any{"*/*"}}, "form": map[string]any{"client_secret": Masked},
		"struct": map[string]any{"user": "u", "password": Masked}, "private_key": Masked, "big": float64(1 << 60)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("metadata = %v, want %v", got, want)
	}
	all, _ := json.Marshal(rs[0])
	if !strings.Contains(rs[0].Metadata, `"big":1152921504606846976`) {
		t.Errorf("an int64 lost its digits: %s", rs[0].Metadata)
	}
	for _, secret := range []string{"hunter2-pw", "rt-secret-y", "abc-secret", "cookie-secret", "hdr-secret", "form-secret", "struct-secret", "pk-secret"} {
		if strings.Contains(string(all), secret) {
			t.Errorf("%q is stored: %s", secret, all)
		}
	}
}

// Text a client chose can be anything its bytes are: an email tried (whose
// first character the mask keeps, which may be several bytes), a user
// agent. PostgreSQL refuses invalid UTF-8 and NUL in text, and with them
// the whole batch, other tenants' events included; they are stored
// cleaned instead, and nothing is lost.
func testClientText(t *testing.T, e *env) {
	if got := MaskEmail("élise@example.com"); got != "é***@example.com" {
		t.Errorf("MaskEmail = %q", got)
	}
	evs := events("other", "batch.mate", 3)
	evs = append(evs, Event{TenantID: "c", Action: "client.text", Actor: Anonymous("élise@example.com"),
		UserAgent: "curl\xff/8", ResourceID: "r\x00id", RequestID: "id\xc3"})
	e.write(evs...)
	if n := len(e.rows("other")); n != 3 {
		t.Errorf("%d of the other tenant's 3 events stored", n)
	}
	rs := e.rows("c")
	if len(rs) != 1 {
		t.Fatalf("rows = %d, want the event stored", len(rs))
	}
	r := rs[0]
	if r.ActorID != "é***@example.com" || r.UserAgent != "curl\uFFFD/8" || r.ResourceID != "r\uFFFDid" || r.RequestID != "id\uFFFD" {
		t.Errorf("stored actor %q, user agent %q, resource %q, request id %q", r.ActorID, r.UserAgent, r.ResourceID, r.RequestID)
	}
}

// An event the database refuses (PostgreSQL: text that is not UTF-8, here
// in a field the code sets itself, which nothing cleans) is dropped alone:
// the others of its batch, of any tenant, are written.
func testRefusedEventAlone(t *testing.T, e *env) {
	w := NewWriter(e.db, WriterConfig{Interval: time.Hour, BatchSize: 10}, nil)
	evs := events("fine", "batch.mate", 4)
	evs = append(evs[:2], append([]Event{{TenantID: "odd", Action: "bad\xff"}}, evs[2:]...)...)
	for _, ev := range evs {
		w.Record(context.Background(), ev)
	}
	e.close(w)
	want := int64(0)
	if e.db.Dialect() == db.Postgres {
		want = 1
	}
	if n := len(e.rows("fine")); n != 4 || w.Dropped() != want || w.Written() != 5-want {
		t.Errorf("stored %d of the 4 good events; written %d, dropped %d, want %d dropped", n, w.Written(), w.Dropped(), want)
	}
	if b := e.verify(); len(b) != 0 {
		t.Errorf("chains broken: %+v", b)
	}
}

func testListFilters(t *testing.T, e *env) {
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	var evs []Event
	for i := range 20 {
		ev := Event{TenantID: "f", Actor: User(fmt.Sprintf("u%d", i%2)), Action: []string{"auth.login", "user.update"}[i%2],
			Outcome: []string{Success, Failure}[i%4/3], ResourceType: []string{"user", "session"}[i%5/4],
			ResourceID: fmt.Sprintf("r%d", i%3), Time: base.Add(time.Duration(i) * time.Minute)}
		evs = append(evs, ev)
	}
	e.write(evs...)
	e.write(events("other", "auth.login", 5)...)
	tenant := "f"
	count := func(pred func(Event) bool) int {
		n := 0
		for _, ev := range evs {
			if pred(ev) {
				n++
			}
		}
		return n
	}
	for _, c := range []struct {
		name string
		f    Filter
		want int
	}{
		{"all of f", Filter{}, 20},
		{"actor", Filter{Actor: "u1"}, count(func(e Event) bool { return e.Actor.ID == "u1" })},
		{"action", Filter{Action: "auth.login"}, count(func(e Event) bool { return e.Action == "auth.login" })},
		{"outcome", Filter{Outcome: Failure}, count(func(e Event) bool { return e.Outcome == Failure })},
		{"resource", Filter{ResourceType: "session", ResourceID: "r1"},
			count(func(e Event) bool { return e.ResourceType == "session" && e.ResourceID == "r1" })},
		{"from", Filter{From: base.Add(5 * time.Minute)}, 15},
		{"to", Filter{To: base.Add(5 * time.Minute)}, 5},
		{"window", Filter{From: base.Add(5 * time.Minute), To: base.Add(7 * time.Minute)}, 2},
		{"combined", Filter{Action: "user.update", Outcome: Success, From: base.Add(10 * time.Minute)},
			count(func(e Event) bool {
				return e.Action == "user.update" && e.Outcome == Success && !e.Time.Before(base.Add(10*time.Minute))
			})},
	} {
		f := c.f
		f.Tenant = &tenant
		rows, next, err := List(context.Background(), e.db, f, "", 100)
		if err != nil || len(rows) != c.want || next != "" {
			t.Errorf("%s: %d rows, next %q, err %v; want %d", c.name, len(rows), next, err, c.want)
		}
		for _, r := range rows {
			if r.TenantID != "f" {
				t.Errorf("%s: row of tenant %q", c.name, r.TenantID)
			}
		}
	}
	rows, _, err := List(context.Background(), e.db, Filter{}, "", 100)
	if err != nil || len(rows) != 25 {
		t.Errorf("every tenant: %d rows, %v", len(rows), err)
	}
	if _, _, err := List(context.Background(), e.db, Filter{}, "not-a-cursor", 10); !errors.Is(err, ErrBadCursor) {
		t.Errorf("bad cursor: %v", err)
	}
}

func testListPagination(t *testing.T, e *env) {
	// Many events share a time, so the id breaks ties across pages.
	base := time.Now().UTC().Truncate(time.Second)
	evs := events("pg", "page", 53)
	for i := range evs {
		evs[i].Time = base.Add(time.Duration(i/4) * time.Millisecond)
	}
	e.write(evs...)
	tenant := "pg"
	seen := map[string]bool{}
	var prev *Row
	cursor, pages := "", 0
	for {
		rows, next, err := List(context.Background(), e.db, Filter{Tenant: &tenant}, cursor, 5)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for i := range rows {
			r := rows[i]
			if seen[r.ID] {
				t.Fatalf("%s seen twice", r.ID)
			}
			seen[r.ID] = true
			if prev != nil && (r.Time.After(prev.Time) || r.Time.Equal(prev.Time) && r.ID > prev.ID) {
				t.Fatalf("order: %v %s after %v %s", r.Time, r.ID, prev.Time, prev.ID)
			}
			prev = &r
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if len(seen) != 53 || pages != 11 {
		t.Errorf("saw %d events in %d pages, want 53 in 11", len(seen), pages)
	}
	n := 0
	if err := Stream(context.Background(), e.db, Filter{Tenant: &tenant}, func(Row) error { n++; return nil }); err != nil || n != 53 {
		t.Errorf("Stream: %d rows, %v", n, err)
	}
}

// server serves Routes behind a stand-in authenticator that takes the
// caller from X-Test-User and X-Test-Tenant; "root" is the super admin.
func server(t *testing.T, e *env) *httptest.Server {
	isSuper := func(_ context.Context, user string) (bool, error) { return user == "root", nil }
	s := httpx.New(httpx.Options{Logger: slog.New(slog.DiscardHandler), Slots: httpx.Slots{
		Authenticate: func(httpx.Route) echo.MiddlewareFunc {
			return func(next echo.HandlerFunc) echo.HandlerFunc {
				return func(c echo.Context) error {
					return httpx.Admit(c, httpx.Identity{UserID: c.Request().Header.Get("X-Test-User"),
						TenantID: c.Request().Header.Get("X-Test-Tenant")}, next)
				}
			}
		},
	}})
	if err := s.Mount(Routes(e.db, isSuper)...); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, srv *httptest.Server, user, tenant, query string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/audit?"+query, nil)
	req.Header.Set("X-Test-User", user)
	req.Header.Set("X-Test-Tenant", tenant)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func testHTTP(t *testing.T, e *env) {
	e.write(events("ta", "a", 7)...)
	e.write(events("tb", "b", 4)...)
	srv := server(t, e)
	type page struct {
		Events     []Row  `json:"events"`
		NextCursor string `json:"next_cursor"`
	}
	cursor := url.QueryEscape(encodeCursor(time.Now(), "0190aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee"))
	for _, c := range []struct {
		name, user, tenant, query string
		status                    int
		events                    int    // events in the page
		only                      string // tenant every event must belong to
		field                     string // the field a 400 names
	}{
		{"own tenant", "alice", "ta", "", 200, 7, "ta", ""},
		{"other tenant's caller", "bob", "tb", "", 200, 4, "tb", ""},
		{"filter", "alice", "ta", "action=a.3", 200, 1, "ta", ""},
		{"tenant's own id", "alice", "ta", "tenant=ta", 200, 7, "ta", ""},
		{"another tenant, not super", "alice", "ta", "tenant=tb", 403, 0, "", ""},
		{"all, not super", "alice", "ta", "tenant=all", 403, 0, "", ""},
		{"another tenant, super", "root", "ta", "tenant=tb", 200, 4, "tb", ""},
		{"all, super", "root", "ta", "tenant=all&limit=200", 200, 11, "", ""},
		{"limit 0", "alice", "ta", "limit=0", 400, 0, "", "limit"},
		{"limit 201", "alice", "ta", "limit=201", 400, 0, "", "limit"},
		{"limit not a number", "alice", "ta", "limit=ten", 400, 0, "", "limit"},
		{"bad from", "alice", "ta", "from=yesterday", 400, 0, "", "from"},
		{"bad to", "alice", "ta", "to=2025-13-01T00:00:00Z", 400, 0, "", "to"},
		{"to before from", "alice", "ta", "from=2025-02-01T00:00:00Z&to=2025-01-01T00:00:00Z", 400, 0, "", "to"},
		{"bad cursor", "alice", "ta", "cursor=%21%21", 400, 0, "", "cursor"},
		{"bad format", "alice", "ta", "format=xml", 400, 0, "", "format"},
		{"good cursor", "alice", "ta", "cursor=" + cursor, 200, 7, "ta", ""},
	} {
		res := get(t, srv, c.user, c.tenant, c.query)
		if res.StatusCode != c.status {
			b, _ := io.ReadAll(res.Body)
			t.Errorf("%s: status %d, want %d: %s", c.name, res.StatusCode, c.status, b)
			continue
		}
		switch {
		case c.status == 200:
			var p page
			if err := json.NewDecoder(res.Body).Decode(&p); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if len(p.Events) != c.events {
				t.Errorf("%s: %d events, want %d", c.name, len(p.Events), c.events)
			}
			for _, ev := range p.Events {
				if c.only != "" && ev.TenantID != c.only {
					t.Errorf("%s: event of tenant %s", c.name, ev.TenantID)
				}
			}
		case c.field != "":
			var body httpx.ErrorBody
			json.NewDecoder(res.Body).Decode(&body)
			if body.Error.Code != "validation_failed" || body.Error.Details["field"] != c.field {
				t.Errorf("%s: error %+v, want validation_failed on %s", c.name, body.Error, c.field)
			}
		}
	}
	// Paging over HTTP follows next_cursor to the end.
	seen, cur := 0, ""
	for {
		res := get(t, srv, "alice", "ta", "limit=3&cursor="+url.QueryEscape(cur))
		var p page
		json.NewDecoder(res.Body).Decode(&p)
		seen += len(p.Events)
		if p.NextCursor == "" {
			break
		}
		cur = p.NextCursor
	}
	if seen != 7 {
		t.Errorf("paged over %d events, want 7", seen)
	}
	// JSON names are snake_case.
	res := get(t, srv, "alice", "ta", "limit=1")
	b, _ := io.ReadAll(res.Body)
	for _, k := range []string{`"tenant_id"`, `"actor_type"`, `"resource_type"`, `"prev_hash"`, `"user_agent"`, `"next_cursor"`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("response lacks %s: %s", k, b)
		}
	}
}

func testHTTPExports(t *testing.T, e *env) {
	const n = 1500
	evs := events("ex", "export", n)
	evs[0].Action, evs[1].ResourceID, evs[2].Actor.Type, evs[3].UserAgent = "=HYPERLINK(\"http://evil\")", "+1", "-2", "@SUM(A1)"
	evs[4].Metadata = map[string]any{"note": "a,b\n\"c\""}
	e.write(evs...)
	e.write(events("other", "no", 3)...)
	srv := server(t, e)

	res := get(t, srv, "alice", "ex", "format=ndjson&limit=1")
	if ct := res.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("ndjson Content-Type %q", ct)
	}
	if cd := res.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment;") {
		t.Errorf("ndjson Content-Disposition %q", cd)
	}
	sc := bufio.NewScanner(res.Body)
	lines := 0
	for sc.Scan() {
		var r Row
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.TenantID != "ex" {
			t.Fatalf("line %d: %v, tenant %q", lines, err, r.TenantID)
		}
		lines++
	}
	if lines != n {
		t.Errorf("ndjson: %d lines, want %d", lines, n)
	}

	res = get(t, srv, "alice", "ex", "format=csv")
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		t.Errorf("csv Content-Type %q", ct)
	}
	if cd := res.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment;") || !strings.Contains(cd, ".csv") {
		t.Errorf("csv Content-Disposition %q", cd)
	}
	recs, err := csv.NewReader(res.Body).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != n+1 || !reflect.DeepEqual(recs[0], csvHeader()) {
		t.Fatalf("csv: %d records, header %v", len(recs), recs[0])
	}
	cells := map[string]bool{}
	for _, r := range recs[1:] {
		for _, v := range r {
			cells[v] = true
		}
	}
	for _, want := range []string{"'=HYPERLINK(\"http://evil\")", "'+1", "'-2", "'@SUM(A1)", `{"note":"a,b\n\"c\""}`} {
		if !cells[want] {
			t.Errorf("csv lacks the cell %q", want)
		}
	}
	for v := range cells {
		if v != "" && strings.ContainsAny(v[:1], "=+-@") {
			t.Errorf("csv cell %q could run as a formula", v)
		}
	}
	// Filters apply to exports.
	res = get(t, srv, "alice", "ex", "format=ndjson&action=export.10")
	b, _ := io.ReadAll(res.Body)
	if got := strings.Count(string(b), "\n"); got != 1 {
		t.Errorf("filtered export: %d lines", got)
	}
}

func TestCSVSafe(t *testing.T) {
	for in, want := range map[string]string{"": "", "plain": "plain", "=1+1": "'=1+1", "+1": "'+1", "-1": "'-1",
		"@x": "'@x", "\tx": "'\tx", "a=b": "a=b"} {
		if got := CSVSafe(in); got != want {
			t.Errorf("CSVSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsSecretKey(t *testing.T) {
	for k, want := range map[string]bool{"password": true, "new_Password": true, "client_secret": true,
		"access_token": true, "Authorization": true, "set-cookie": true, "email": false, "user_id": false} {
		if IsSecretKey(k) != want {
			t.Errorf("IsSecretKey(%q) = %v", k, !want)
		}
	}
}
