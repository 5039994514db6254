package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/glebarez/go-sqlite"

	"gatehouse/modules/auth"
	"gatehouse/platform/testenv"
)

const metricsToken = "test-metrics-token-0123456789"

// scrape returns the value of each sample of /metrics, by its full name
// with labels as exposed.
func scrape(t *testing.T, app testApp) map[string]float64 {
	t.Helper()
	rec := app.do(t, req{method: "GET", path: "/metrics", header: map[string]string{"Authorization": "Bearer " + metricsToken}})
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(rec.Body.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// Acceptance 3: a scripted login, refresh, 403 and 429 each move their
// counter by exactly the right amount; /metrics wants its token.
func TestMetricsAfterAFlow(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[0])
	cfg.Metrics.Token = metricsToken
	for i, p := range cfg.RateLimit.Policies {
		if p.Name == "api-user" {
			cfg.RateLimit.Policies[i].Limit, cfg.RateLimit.Policies[i].Period = 3, time.Hour
		}
	}
	w := newWorldOn(t, startApp(t, cfg))
	wantStatus(t, w.app.do(t, req{method: "GET", path: "/metrics"}), 401, "")
	wantStatus(t, w.app.do(t, req{method: "GET", path: "/metrics", header: map[string]string{"Authorization": "Bearer wrong-token-0123456789"}}), 401, "")

	before := scrape(t, w.app)
	p := w.app.login(t, "member@acme.test", "correct horse battery", "acme")
	w.app.do(t, req{method: "POST", path: "/v1/auth/login", body: auth.LoginRequest{Email: "member@acme.test", Password: "wrong password!"}})
	wantStatus(t, w.app.refresh(p.RefreshToken, t), 200, "")
	member := person{token: p.AccessToken}
	wantStatus(t, w.as(t, member, "GET", "/v1/tenants", nil), 403, "forbidden")
	for i := 0; i < 5; i++ {
		w.app.me(t, p.AccessToken)
	}
	after := scrape(t, w.app)
	delta := func(name string) float64 { return after[name] - before[name] }
	for name, want := range map[string]float64{
		"gatehouse_login_requests_total":                                               2,
		"gatehouse_auth_success_total":                                                 1,
		`gatehouse_auth_failure_total{reason="wrong_password"}`:                        1,
		"gatehouse_token_refresh_total":                                                1,
		`gatehouse_access_denied_total{code="forbidden"}`:                              1,
		`gatehouse_rate_limits_blocked_total{policy="api-user"}`:                       3, // 1 (the 403) + 5 me - 3 allowed
		`gatehouse_http_requests_total{method="GET",route="/v1/tenants",status="403"}`: 1,
	} {
		if got := delta(name); got != want {
			t.Errorf("%s moved by %v, want %v", name, got, want)
		}
	}
	if after[`gatehouse_http_requests_total{method="GET",route="/v1/auth/me",status="429"}`] < 1 {
		t.Error("no 429 counted for /v1/auth/me")
	}
	for _, name := range []string{"gatehouse_active_sessions", "gatehouse_audit_queue_depth", "go_goroutines"} {
		if _, ok := after[name]; !ok {
			t.Errorf("%s is not exposed", name)
		}
	}
}

// A 403 is an audit event naming the caller and their tenant: the error
// handler answers with the context the authenticate step admitted.
func TestDenialNamesTheCaller(t *testing.T) {
	t.Parallel()
	w := newWorld(t, backends[0])
	wantStatus(t, w.as(t, w.member, "GET", "/v1/tenants", nil), 403, "forbidden")
	if err := w.app.Close(); err != nil { // flushes the audit writer
		t.Fatal(err)
	}
	var rows []struct{ ActorType, ActorID, TenantID, ResourceID string }
	err := w.app.db.Conn(context.Background()).Raw(
		"SELECT actor_type, actor_id, tenant_id, resource_id FROM audit_events WHERE action = 'access.denied'").Scan(&rows).Error
	if err != nil {
		t.Fatal(err)
	}
	want := struct{ ActorType, ActorID, TenantID, ResourceID string }{"user", w.member.id, w.acme, "GET /v1/tenants"}
	if len(rows) != 1 || rows[0] != want {
		t.Errorf("access.denied rows %+v, want one %+v", rows, want)
	}
}

// Acceptance 5: after a full flow no secret is in any audit row or any
// metric label.
func TestNoSecretsInAuditOrMetrics(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends[0])
	cfg.Metrics.Token = metricsToken
	app := startApp(t, cfg)
	const pw = "Sup3r-Secret-Passw0rd"
	app.register(t, "secret@example.com", pw, "")
	app.do(t, req{method: "POST", path: "/v1/auth/login", body: auth.LoginRequest{Email: "secret@example.com", Password: "Wr0ng-Secret-Guess"}})
	p := app.login(t, "secret@example.com", pw, "")
	next := decode[auth.Pair](t, app.refresh(p.RefreshToken, t))
	app.refresh(p.RefreshToken, t) // reuse
	app.do(t, req{method: "POST", path: "/v1/auth/password", bearer: next.AccessToken,
		body: map[string]any{"current_password": pw, "new_password": "An0ther-Secret-Pw"}})
	app.do(t, req{method: "GET", path: "/v1/tenants", bearer: next.AccessToken})
	if err := app.Close(); err != nil { // flushes the audit writer
		t.Fatal(err)
	}
	var rows []string
	err := app.db.Conn(context.Background()).Raw(
		"SELECT actor_id || '|' || action || '|' || resource_id || '|' || metadata || '|' || user_agent FROM audit_events").Scan(&rows).Error
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 5 {
		t.Fatalf("only %d audit rows after a full flow", len(rows))
	}
	metrics := app.do(t, req{method: "GET", path: "/metrics", header: map[string]string{"Authorization": "Bearer " + metricsToken}}).Body.String()
	all := strings.Join(rows, "\n") + "\n" + metrics
	for _, secret := range []string{pw, "Wr0ng-Secret-Guess", "An0ther-Secret-Pw", p.AccessToken, p.RefreshToken,
		next.AccessToken, next.RefreshToken, "secret@example.com", "$2a$"} {
		if strings.Contains(all, secret) {
			t.Errorf("a secret (%.12s…) is in the audit log or the metrics", secret)
		}
	}
	if regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}`).MatchString(metrics) {
		t.Error("a metric label carries an id")
	}
}

// Acceptance 1: 10,000 audit events under concurrent load, then SIGTERM:
// exactly 10,000 rows afterwards, on SQLite and on PostgreSQL.
func TestAuditSurvivesShutdown(t *testing.T) {
	for _, b := range []string{"sqlite", "postgres"} {
		t.Run(b, func(t *testing.T) {
			dir := t.TempDir()
			// A deadline no CI machine misses: under -race, with two busy
			// loops beside it, the writer averaged 700 rows a second (some
			// 17,000 without -race), so the default 10 s could cut the
			// drain short. TestAuditLossAtShutdownFails covers the deadline.
			env := []string{"GATEHOUSE_HTTP_ADDR=127.0.0.1:0", "GATEHOUSE_AUTH_BCRYPT_COST=10",
				"GATEHOUSE_GATEWAY_ROUTES_FILE=" + filepath.Join(dir, "none.yaml"), "GATEHOUSE_AUDIT_SHUTDOWN_TIMEOUT=5m"}
			var count func() int
			if b == "sqlite" {
				path := filepath.Join(dir, "g.db")
				env = append(env, "GATEHOUSE_DATABASE_SQLITE_PATH="+path)
				count = func() int { return countDenied(t, "sqlite", path) }
			} else {
				url := testenv.PostgresURL(t)
				env = append(env, "DATABASE_URL="+url)
				count = func() int { return countDenied(t, "pgx", url) }
			}
			// No limits in the way of the load.
			conf := filepath.Join(dir, "gatehouse.yaml")
			os.WriteFile(conf, []byte(relaxedLimitsYAML), 0o600)
			cmd, logs, stderr := gatehouse(t, env, "--config", conf, "serve")
			base := "http://" + waitLog(t, logs, "listening")["addr"].(string)
			warned := make(chan []string, 1)
			go drain(logs, warned)
			tok := loginOverHTTP(t, base)

			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
			var wg sync.WaitGroup
			var bad sync.Map
			for w := range 32 {
				wg.Go(func() {
					for i := w; i < 10000; i += 32 {
						r, _ := http.NewRequest("GET", base+"/v1/tenants", nil) // 403: one access.denied event each
						r.Header.Set("Authorization", "Bearer "+tok)
						res, err := client.Do(r)
						if err != nil || res.StatusCode != 403 {
							bad.Store(i, fmt.Sprint(err, res))
						}
						if res != nil {
							res.Body.Close()
						}
					}
				})
			}
			wg.Wait()
			bad.Range(func(k, v any) bool { t.Fatalf("request %v: %v", k, v); return false })
			cmd.Process.Signal(syscall.SIGTERM)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("exit: %v (%s)", err, stderr)
			}
			if n := count(); n != 10000 {
				t.Errorf("%d access.denied rows after SIGTERM, want exactly 10000; the server warned:\n%s",
					n, strings.Join(<-warned, "\n"))
			}
		})
	}
}

// Audit events that cannot be written by audit.shutdown_timeout are
// dropped, and the process says how many and exits 1. The events wait in
// the writer (an hour's flush interval) while the test holds SQLite's write
// lock, so the writer cannot write them before the deadline. Not parallel:
// the server's bcrypt runs at nice 19 (auth.bcrypt_process), so parallel
// tests that keep both cores busy could starve its register and login.
func TestAuditLossAtShutdownFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "g.db")
	conf := filepath.Join(dir, "gatehouse.yaml")
	os.WriteFile(conf, []byte(relaxedLimitsYAML), 0o600)
	cmd, logs, stderr := gatehouse(t, []string{"GATEHOUSE_HTTP_ADDR=127.0.0.1:0", "GATEHOUSE_AUTH_BCRYPT_COST=10",
		"GATEHOUSE_GATEWAY_ROUTES_FILE=" + filepath.Join(dir, "none.yaml"), "GATEHOUSE_DATABASE_SQLITE_PATH=" + path,
		"GATEHOUSE_AUDIT_FLUSH_INTERVAL=1h", "GATEHOUSE_AUDIT_SHUTDOWN_TIMEOUT=200ms"}, "--config", conf, "serve")
	base := "http://" + waitLog(t, logs, "listening")["addr"].(string)
	go drain(logs, make(chan []string, 1))
	tok := loginOverHTTP(t, base)
	for range 5 {
		r, _ := http.NewRequest("GET", base+"/v1/tenants", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(r)
		if err != nil || res.StatusCode != 403 {
			t.Fatalf("GET /v1/tenants: %v %v", err, res)
		}
		res.Body.Close()
	}
	d, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	lock, err := d.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	lock.ExecContext(context.Background(), "ROLLBACK")
	lock.Close()
	m := regexp.MustCompile(`audit writer: (\d+) events dropped, not written before the deadline`).FindStringSubmatch(stderr.String())
	if code := cmd.ProcessState.ExitCode(); code != 1 || m == nil {
		t.Fatalf("exit %d (%v), stderr %q; want 1 and the count of events dropped", code, err, stderr)
	}
	// register, login and the five denials: none written, all counted.
	if n, _ := strconv.Atoi(m[1]); n < 7 {
		t.Errorf("%s events reported dropped, want at least 7", m[1])
	}
	var rows int
	if err := d.QueryRow("SELECT count(*) FROM audit_events").Scan(&rows); err != nil || rows != 0 {
		t.Errorf("audit_events holds %d rows (%v), want 0: nothing was written", rows, err)
	}
}

const relaxedLimitsYAML = `ratelimit:
  policies:
    - {name: login, algorithm: token_bucket, limit: 100000, period: 1s, burst: 0, key: ip, on_error: allow}
    - {name: register, algorithm: token_bucket, limit: 100000, period: 1s, burst: 0, key: ip, on_error: allow}
    - {name: refresh, algorithm: token_bucket, limit: 100000, period: 1s, burst: 0, key: user, on_error: allow}
  anonymous: []
  authenticated: []
  plans: {default: 1}
`

// drain reads the server's log to its end, then sends its warning and
// error lines: what a failure's message needs to say why.
func drain(s *bufio.Scanner, out chan<- []string) {
	var warned []string
	for s.Scan() {
		if l := s.Text(); strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
			warned = append(warned, l)
		}
	}
	out <- warned
}

// loginOverHTTP registers and signs in a member through a running server.
func loginOverHTTP(t *testing.T, base string) string {
	t.Helper()
	body := `{"email":"load@example.com","password":"correct horse battery"}`
	if res, err := http.Post(base+"/v1/auth/register", "application/json", strings.NewReader(body)); err != nil || res.StatusCode != 201 {
		t.Fatalf("register: %v %v", err, res)
	}
	res, err := http.Post(base+"/v1/auth/login", "application/json", strings.NewReader(body))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("login: %v %v", err, res)
	}
	defer res.Body.Close()
	var p auth.Pair
	if err := json.NewDecoder(res.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	return p.AccessToken
}

func countDenied(t *testing.T, driver, dsn string) int {
	t.Helper()
	d, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var n int
	if err := d.QueryRow("SELECT count(*) FROM audit_events WHERE action = 'access.denied'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// auditedApp is an App whose audit log holds a chain of events in the
// default tenant, flushed; it returns the env for commands on it.
func auditedApp(t *testing.T) (testApp, map[string]string) {
	t.Helper()
	cfg := testConfig(t, backends[0])
	app := startApp(t, cfg)
	app.register(t, "aud@example.com", "correct horse battery", "")
	for range 6 {
		p := app.login(t, "aud@example.com", "correct horse battery", "")
		app.refresh(p.RefreshToken, t)
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"GATEHOUSE_DATABASE_SQLITE_PATH": cfg.Database.SQLitePath, "GATEHOUSE_AUTH_BCRYPT_COST": "10"}
	if code, out, errOut := runCmd(t, env, "audit", "verify"); code != 0 || out != "audit log intact\n" {
		t.Fatalf("intact log: %d %q %q", code, out, errOut)
	}
	return app, env
}

// seqOf returns the id of the row at seq in the default tenant's chain.
func seqOf(t *testing.T, app testApp, seq int) (string, string) {
	var row struct{ ID, TenantID string }
	err := app.db.Conn(context.Background()).Raw("SELECT id, tenant_id FROM audit_events WHERE tenant_id <> '' AND seq = ?", seq).Scan(&row).Error
	if err != nil || row.ID == "" {
		t.Fatalf("seq %d: %v", seq, err)
	}
	return row.ID, row.TenantID
}

// Acceptance 2: `gatehouse audit verify` names the row changed by hand.
func TestAuditVerifyUpdate(t *testing.T) {
	t.Parallel()
	app, env := auditedApp(t)
	id, tid := seqOf(t, app, 4)
	app.db.Conn(context.Background()).Exec("UPDATE audit_events SET outcome = 'success', action = 'auth.refresh' WHERE id = ?", id)
	code, out, _ := runCmd(t, env, "audit", "verify", "--tenant", tid)
	if code != 1 || !strings.Contains(out, fmt.Sprintf("at seq 4 (row %s): content changed", id)) {
		t.Errorf("after an UPDATE: %d %q", code, out)
	}
}

func TestAuditVerifyDelete(t *testing.T) {
	t.Parallel()
	app, env := auditedApp(t)
	id, _ := seqOf(t, app, 5)
	next, _ := seqOf(t, app, 6)
	app.db.Conn(context.Background()).Exec("DELETE FROM audit_events WHERE id = ?", id)
	code, out, _ := runCmd(t, env, "audit", "verify")
	// The missing position is named, with the row that now follows the gap.
	if code != 1 || !strings.Contains(out, fmt.Sprintf("at seq 5 (row %s): missing", next)) {
		t.Errorf("after a DELETE of seq 5: %d %q", code, out)
	}
}

func TestAuditVerifyInsert(t *testing.T) {
	t.Parallel()
	app, env := auditedApp(t)
	_, tid := seqOf(t, app, 3)
	var last struct {
		Seq  int
		Hash string
	}
	app.db.Conn(context.Background()).Raw("SELECT seq, hash FROM audit_events WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1", tid).Scan(&last)
	// A forged event appended by hand, well formed but not chained by Gatehouse.
	err := app.db.Conn(context.Background()).Exec(`INSERT INTO audit_events (id, tenant_id, seq, time, actor_type, actor_id, action,
		resource_type, resource_id, outcome, ip, user_agent, request_id, metadata, prev_hash, hash)
		VALUES ('01950000-0000-7000-8000-0000000f0a6e', ?, ?, ?, 'user', 'x', 'auth.login', '', '', 'success', '', '', '', '{}', ?, ?)`,
		tid, last.Seq+1, time.Now().UTC(), last.Hash, strings.Repeat("ab", 32)).Error
	if err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCmd(t, env, "audit", "verify")
	if code != 1 || !strings.Contains(out, fmt.Sprintf("at seq %d (row 01950000-0000-7000-8000-0000000f0a6e)", last.Seq+1)) {
		t.Errorf("after an INSERT: %d %q", code, out)
	}
}
