package health

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gatehouse/platform/httpx"
)

// dep is a dependency whose state the test sets.
type dep struct {
	err   atomic.Pointer[error]
	calls atomic.Int32
	delay time.Duration
}

func (d *dep) ping(ctx context.Context) error {
	d.calls.Add(1)
	if d.delay > 0 {
		select {
		case <-time.After(d.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if e := d.err.Load(); e != nil {
		return *e
	}
	return nil
}

func (d *dep) fail(err error) { d.err.Store(&err) }
func (d *dep) heal()          { d.err.Store(nil) }

// setup serves checks; adjust may change the Checker before it serves.
func setup(t *testing.T, adjust func(*Checker), checks ...Check) (http.Handler, *bytes.Buffer) {
	t.Helper()
	logs := &bytes.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	h := New(50*time.Millisecond, log, checks...)
	adjust(h)
	s := httpx.New(httpx.Options{Logger: slog.New(slog.DiscardHandler), MaxBodyBytes: 1024})
	if err := s.Mount(h.Routes()...); err != nil {
		t.Fatal(err)
	}
	return s, logs
}

func get(t *testing.T, h http.Handler, path string) (int, Report, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	var rep Report
	if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
		t.Fatalf("%s: not JSON: %s", path, rec.Body)
	}
	return rec.Code, rep, rec.Body.String()
}

func TestHealth(t *testing.T) {
	db, cache, extra := &dep{}, &dep{}, &dep{}
	// Every request checks afresh here; TestHealthReusesResults has the
	// window.
	h, logs := setup(t, func(h *Checker) { h.reuse = 0 },
		Check{Name: "database", Backend: "postgres", Required: true, Ping: db.ping},
		Check{Name: "cache", Backend: "redis", Required: true, Ping: cache.ping},
		Check{Name: "mail", Backend: "smtp", Required: false, Ping: extra.ping},
	)

	code, rep, _ := get(t, h, "/health/detailed")
	if code != 200 || rep.Status != "ok" || len(rep.Components) != 3 || rep.Components[0].Name != "database" ||
		rep.Components[1].Backend != "redis" || rep.Components[2].Status != "up" {
		t.Fatalf("all up: %d %+v", code, rep)
	}

	// Liveness touches no dependency, even when they are down.
	db.fail(errors.New("dial tcp 10.1.2.3:5432: connect: connection refused password=hunter2"))
	before := db.calls.Load()
	if code, rep, _ := get(t, h, "/health"); code != 200 || rep.Status != "ok" || len(rep.Components) != 0 {
		t.Errorf("/health with db down: %d %+v", code, rep)
	}
	if db.calls.Load() != before {
		t.Error("/health pinged the database")
	}

	for _, path := range []string{"/health/detailed", "/health/database"} {
		code, rep, body := get(t, h, path)
		if code != 503 || rep.Status != "down" || rep.Components[0].Status != "down" || rep.Components[0].Error != "unreachable" {
			t.Errorf("%s with db down: %d %s", path, code, body)
		}
		if strings.Contains(body, "hunter2") || strings.Contains(body, "10.1.2.3") {
			t.Errorf("%s leaks the cause: %s", path, body)
		}
	}
	// The cache alone is fine while the database is down.
	if code, rep, _ := get(t, h, "/health/cache"); code != 200 || len(rep.Components) != 1 || rep.Components[0].Name != "cache" {
		t.Errorf("/health/cache: %d %+v", code, rep)
	}
	// The outage is logged once, with its cause, and so is the recovery.
	if n := strings.Count(logs.String(), `"msg":"dependency down"`); n != 1 {
		t.Errorf("outage logged %d times:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "connection refused") {
		t.Error("the cause is not in the log")
	}
	db.heal()
	if code, _, _ := get(t, h, "/health/database"); code != 200 {
		t.Errorf("after recovery: %d", code)
	}
	if !strings.Contains(logs.String(), `"msg":"dependency recovered"`) {
		t.Error("recovery not logged")
	}

	// An optional dependency down degrades but does not fail.
	extra.fail(errors.New("no relay"))
	if code, rep, _ := get(t, h, "/health/detailed"); code != 200 || rep.Status != "degraded" {
		t.Errorf("optional down: %d %+v", code, rep)
	}
	extra.heal()

	// A hanging dependency is cut at the timeout and called a timeout.
	cache.delay = time.Second
	start := time.Now()
	code, rep, _ = get(t, h, "/health/cache")
	if code != 503 || rep.Components[0].Error != "timeout" || time.Since(start) > 500*time.Millisecond {
		t.Errorf("hanging cache: %d %+v after %s", code, rep, time.Since(start))
	}
}

// TestHealthReusesResults shows a flood of health requests pings each
// dependency once a Reuse window: requests arriving while a check runs
// wait for its answer, later ones within the window get it too, and the
// first request after the window checks again.
func TestHealthReusesResults(t *testing.T) {
	db, cache := &dep{delay: 20 * time.Millisecond}, &dep{}
	var now atomic.Int64
	now.Store(time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC).UnixNano())
	h, _ := setup(t, func(h *Checker) { h.now = func() time.Time { return time.Unix(0, now.Load()) } },
		Check{Name: "database", Backend: "postgres", Required: true, Ping: db.ping},
		Check{Name: "cache", Backend: "redis", Required: true, Ping: cache.ping},
	)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if code, _, body := get(t, h, "/health/detailed"); code != 200 {
				t.Errorf("%d %s", code, body)
			}
		})
	}
	wg.Wait()
	if db.calls.Load() != 1 || cache.calls.Load() != 1 {
		t.Fatalf("32 requests pinged the database %d and the cache %d times, want once each", db.calls.Load(), cache.calls.Load())
	}
	// Within the window an outage is not seen yet; after it, it is.
	db.fail(errors.New("down"))
	now.Add(int64(Reuse - time.Millisecond))
	if code, _, _ := get(t, h, "/health/database"); code != 200 || db.calls.Load() != 1 {
		t.Errorf("within the window: %d, %d pings", code, db.calls.Load())
	}
	now.Add(int64(time.Millisecond))
	if code, _, _ := get(t, h, "/health/database"); code != 503 || db.calls.Load() != 2 {
		t.Errorf("after the window: %d, %d pings", code, db.calls.Load())
	}
}
