package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"gatehouse/modules/auth"
	"gatehouse/platform/config"
)

// A one-shot command whose audit event cannot be written (here a trigger
// refuses it; in life a full disk, a lock timeout, a revoked grant) makes
// its change and says so, but exits 1 with a line on stderr: it used to
// exit 0, leaving a super-admin grant or a key rotation that no audit
// record shows and no script notices.
func TestOneShotCommandsFailWhenTheirAuditEventIsLost(t *testing.T) {
	cfg := testConfig(t, backends[0])
	app := startApp(t, cfg)
	app.register(t, "ops@example.com", "correct horse battery", "")
	conn := app.db.Conn(context.Background())
	if err := conn.Exec(`CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit refused'); END`).Error; err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"GATEHOUSE_DATABASE_SQLITE_PATH": cfg.Database.SQLitePath, "GATEHOUSE_AUTH_BCRYPT_COST": "10"}
	const lost = "the change was made, but its audit event was not written"
	for _, c := range []struct {
		args []string
		out  string // on stdout: the change was made
	}{
		{[]string{"admin", "super-admin", "add", "ops@example.com"}, "ops@example.com is now a super admin"},
		{[]string{"keys", "rotate"}, "is active"},
	} {
		code, out, errOut := runCmd(t, env, c.args...)
		if code != 1 || !strings.Contains(out, c.out) || !strings.Contains(errOut, lost) {
			t.Errorf("%s with its audit event refused: exit %d, stdout %q, stderr %q; want exit 1, %q on stdout, %q on stderr",
				strings.Join(c.args, " "), code, out, errOut, c.out, lost)
		}
	}

	// With the audit log writable again, the same commands exit 0.
	if err := conn.Exec(`DROP TRIGGER refuse_audit`).Error; err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"admin", "super-admin", "remove", "ops@example.com"}, {"keys", "rotate"}} {
		if code, _, errOut := runCmd(t, env, args...); code != 0 {
			t.Errorf("%s: exit %d, stderr %q", strings.Join(args, " "), code, errOut)
		}
	}
}

// gatehouse_access_denied_total ("Requests refused for identity or
// permission, by error code") counts every 401 and 403: forged or expired
// tokens and tenant mismatches used to leave their series at 0, so a flood
// of them showed nowhere. A 403 is still counted once.
func TestAccessDeniedCountsEveryRefusal(t *testing.T) {
	cfg := testConfig(t, backends[0])
	cfg.Metrics.Token = metricsToken
	w := newWorldOn(t, startApp(t, cfg))
	before := scrape(t, w.app)
	wantStatus(t, w.app.do(t, req{method: "GET", path: "/v1/auth/me", bearer: "eyJhbGciOiJIUzI1NiJ9.e30.forged"}), 401, "invalid_token")
	wantStatus(t, w.app.do(t, req{method: "POST", path: "/v1/auth/login",
		body: auth.LoginRequest{Email: "member@acme.test", Password: "wrong password!"}}), 401, "invalid_credentials")
	wantStatus(t, w.app.do(t, req{method: "GET", path: "/v1/tenants", bearer: w.member.token,
		header: map[string]string{"X-Tenant-ID": w.globex}}), 403, "tenant_mismatch")
	wantStatus(t, w.as(t, w.member, "GET", "/v1/tenants", nil), 403, "forbidden")
	after := scrape(t, w.app)
	for _, code := range []string{"invalid_token", "invalid_credentials", "tenant_mismatch", "forbidden"} {
		name := `gatehouse_access_denied_total{code="` + code + `"}`
		if d := after[name] - before[name]; d != 1 {
			t.Errorf("%s moved by %v after one such refusal, want 1", name, d)
		}
	}
	if d := after[`gatehouse_access_denied_total{code="other"}`] - before[`gatehouse_access_denied_total{code="other"}`]; d != 0 {
		t.Errorf(`code="other" moved by %v, want 0`, d)
	}
	if _, ok := before[`gatehouse_access_denied_total{code="invalid_path"}`]; !ok {
		t.Error(`gatehouse_access_denied_total{code="invalid_path"} is not created at zero`)
	}
}

// A body over http.max_body_bytes (413), and a request no route matches
// (404, 405), count in gatehouse_http_requests_total, the latter under the
// route "unmatched", never the path asked: a flood of oversized bodies or of
// probes for paths used to be invisible on the dashboard.
func TestRefusedAndUnmatchedRequestsCounted(t *testing.T) {
	cfg := testConfig(t, backends[0])
	cfg.Metrics.Token = metricsToken
	app := startApp(t, cfg)
	before := scrape(t, app)
	big := strings.Repeat("x", int(cfg.HTTP.MaxBodyBytes)+1)
	wantStatus(t, app.do(t, req{method: "POST", path: "/v1/auth/login", body: big}), 413, "body_too_large")
	wantStatus(t, app.do(t, req{method: "GET", path: "/v1/no-such-thing/42"}), 404, "not_found")
	wantStatus(t, app.do(t, req{method: "DELETE", path: "/v1/auth/me"}), 405, "method_not_allowed")
	after := scrape(t, app)
	for _, name := range []string{
		`gatehouse_http_requests_total{method="POST",route="/v1/auth/login",status="413"}`,
		`gatehouse_http_requests_total{method="GET",route="unmatched",status="404"}`,
		`gatehouse_http_requests_total{method="DELETE",route="unmatched",status="405"}`,
	} {
		if d := after[name] - before[name]; d != 1 {
			t.Errorf("%s moved by %v, want 1", name, d)
		}
	}
	for name := range after {
		if strings.Contains(name, "no-such-thing") {
			t.Errorf("a raw path is a label: %s", name)
		}
	}
}

// `gatehouse health` (the container HEALTHCHECK) asks the host http.addr
// binds: it always asked 127.0.0.1, so a server bound to one address (here
// ::1; in life a pod IP) answered /health while the probe failed and the
// container was marked unhealthy.
func TestHealthProbeAsksTheBoundHost(t *testing.T) {
	for addr, want := range map[string]string{
		":8080":          "127.0.0.1:8080",
		"0.0.0.0:8080":   "127.0.0.1:8080",
		"[::]:8080":      "127.0.0.1:8080",
		"10.1.2.3:8080":  "10.1.2.3:8080",
		"[::1]:8080":     "[::1]:8080",
		"localhost:8080": "localhost:8080",
	} {
		if got := probeAddr(addr); got != want {
			t.Errorf("http.addr %s: the probe asks %s, want %s", addr, got, want)
		}
	}

	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	defer ln.Close()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"status":"ok"}`)) }))
	cfg := config.Default()
	cfg.HTTP.Addr = ln.Addr().String()
	var out strings.Builder
	if err := probe(context.Background(), cfg, &out); err != nil || out.String() != "ok\n" {
		t.Errorf("http.addr %s serves /health, but gatehouse health says %q, %v", cfg.HTTP.Addr, out.String(), err)
	}
}
