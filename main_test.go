package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/platform/config"
	"gatehouse/platform/httpx"
	"gatehouse/platform/testenv"
)

// TestMain lets a test run this binary as the gatehouse program: with
// GATEHOUSE_TEST_MAIN=1 it calls run, with one extra slow route for the
// shutdown test, and exits with its status. Nothing test-only is built
// into the real binary.
func TestMain(m *testing.M) {
	// A bcrypt helper started by an App in this test binary: never the
	// tests again.
	if len(os.Args) == 2 && os.Args[1] == "bcrypt-worker" {
		os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
	}
	if os.Getenv("GATEHOUSE_TEST_MAIN") == "1" {
		slow := httpx.Route{Method: http.MethodGet, Path: "/test/slow", Auth: httpx.Public, Hidden: true,
			Handle: func(c echo.Context) error {
				time.Sleep(1500 * time.Millisecond)
				return c.String(http.StatusOK, "finished")
			}}
		os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr, slow))
	}
	os.Exit(m.Run())
}

// gatehouse starts this test binary as the program, with env added.
func gatehouse(t *testing.T, env []string, args ...string) (*exec.Cmd, *bufio.Scanner, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "GATEHOUSE_TEST_MAIN=1")
	cmd.Env = append(cmd.Env, env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, bufio.NewScanner(stdout), stderr
}

// waitLog reads JSON log lines until one has the message msg.
func waitLog(t *testing.T, lines *bufio.Scanner, msg string) map[string]any {
	t.Helper()
	for lines.Scan() {
		var m map[string]any
		if json.Unmarshal(lines.Bytes(), &m) == nil && m["msg"] == msg {
			return m
		}
	}
	t.Fatalf("log ended before %q", msg)
	return nil
}

// The acceptance test of graceful shutdown: a slow request in flight when
// SIGTERM arrives completes, new connections are refused, the process exits 0.
func TestGracefulShutdown(t *testing.T) {
	dir := t.TempDir()
	cmd, logs, stderr := gatehouse(t, []string{
		"GATEHOUSE_HTTP_ADDR=127.0.0.1:0",
		"GATEHOUSE_DATABASE_SQLITE_PATH=" + filepath.Join(dir, "g.db"),
		"GATEHOUSE_HTTP_SHUTDOWN_TIMEOUT=10s",
	}, "--config", filepath.Join("configs", "gatehouse.yaml"), "serve")
	base := "http://" + waitLog(t, logs, "listening")["addr"].(string)
	go io.Copy(io.Discard, struct{ io.Reader }{readerOf(logs)}) // keep the pipe drained

	if res, err := http.Get(base + "/health"); err != nil || res.StatusCode != 200 {
		t.Fatalf("health before shutdown: %v %v", res, err)
	}
	// The HEALTHCHECK command finds the server by its configured port.
	_, port, _ := strings.Cut(strings.TrimPrefix(base, "http://"), ":")
	if code, out, errOut := runCmd(t, map[string]string{"PORT": port}, "health"); code != 0 || out != "ok\n" {
		t.Errorf("gatehouse health: %d %q %q", code, out, errOut)
	}
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		res, err := http.Get(base + "/test/slow")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, _ := io.ReadAll(res.Body)
		done <- result{status: res.StatusCode, body: string(b)}
	}()
	time.Sleep(300 * time.Millisecond) // the slow request is now in its handler
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	if res, err := fresh.Get(base + "/health"); err == nil {
		t.Errorf("a new connection was served during shutdown: %d", res.StatusCode)
	}
	r := <-done
	if r.err != nil || r.status != 200 || r.body != "finished" {
		t.Errorf("slow request: %+v, want 200 finished", r)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit: %v (stderr %s)", err, stderr)
	}
}

// readerOf drains what is left of a scanner's input.
func readerOf(s *bufio.Scanner) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		for s.Scan() {
		}
		pw.Close()
	}()
	return pr
}

// runCmd calls run in-process and returns its status and output.
func runCmd(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, func(k string) string { return env[k] }, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// The binary collects at GOGC=200 unless GOGC is in the environment, which
// then decides (the runtime has already read it).
func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, c := range []struct {
		env  string
		want int
	}{{"", 200}, {"50", 100}, {"off", 100}} {
		debug.SetGCPercent(100)
		tuneGC(func(k string) string { return map[string]string{"GOGC": c.env}[k] })
		if got := debug.SetGCPercent(100); got != c.want {
			t.Errorf("GOGC=%q: the collector runs at %d, want %d", c.env, got, c.want)
		}
	}
}

func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	sqlite := filepath.Join(dir, "g.db")
	badYAML := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badYAML, []byte("http:\n  addr: [\n"), 0o600)
	for _, c := range []struct {
		name       string
		env        map[string]string
		args       []string
		wantCode   int
		wantStdout string // a regular expression
		wantStderr string
	}{
		{"version", nil, []string{"version"}, 0, "gatehouse dev go1", ""},
		{"unknown command", nil, []string{"frobnicate"}, 2, "", "usage: gatehouse"},
		{"unknown flag", nil, []string{"--frob"}, 2, "", "flag provided but not defined: -frob"},
		{"health with no server", map[string]string{"PORT": "1"}, []string{"health"}, 1, "", "gatehouse: health: "},
		{"migrate without action", nil, []string{"migrate"}, 2, "", "usage: gatehouse"},
		{"migrate bad action", nil, []string{"migrate", "down"}, 2, "", "usage: gatehouse"},
		{"PORT=abc", map[string]string{"PORT": "abc"}, []string{"serve"}, 1, "", `gatehouse: PORT: must be a port number from 1 to 65535, got "abc"` + "\n"},
		{"YAML syntax error", nil, []string{"--config", badYAML, "serve"}, 1, "", "gatehouse: config file " + badYAML + ": line 2"},
		{"GATEHOUSE_CONFIG names the file", map[string]string{"GATEHOUSE_CONFIG": badYAML}, nil, 1, "", "config file " + badYAML},
		{"unreachable database", map[string]string{"DATABASE_URL": "postgres://gh:secretpw@nohost:1/x"}, []string{"serve"}, 1, "",
			"gatehouse: database.url: cannot connect to postgres at nohost:1"},
		{"migrate status", map[string]string{"GATEHOUSE_DATABASE_SQLITE_PATH": sqlite}, []string{"migrate", "status"}, 0,
			`00001\s+00001_meta.sql\s+pending\s+-`, ""},
		{"migrate up", map[string]string{"GATEHOUSE_DATABASE_SQLITE_PATH": sqlite}, []string{"migrate", "up"}, 0, `00003\s+00003_identity.sql\s+applied\s+20\d\d-`, ""},
		{"flags after the command", map[string]string{"GATEHOUSE_DATABASE_SQLITE_PATH": sqlite}, []string{"migrate", "status", "--config", filepath.Join("configs", "gatehouse.yaml")}, 0, "applied", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, c.env, c.args...)
			if code != c.wantCode || !regexp.MustCompile(c.wantStdout).MatchString(stdout) || !strings.Contains(stderr, c.wantStderr) {
				t.Errorf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, c.wantCode, stdout, stderr)
			}
			if code == 1 && strings.Count(stderr, "\n") != 1 {
				t.Errorf("a start-up error must be one line: %q", stderr)
			}
			if strings.Contains(stdout+stderr, "secretpw") {
				t.Errorf("output leaks the database password: %s %s", stdout, stderr)
			}
		})
	}
}

func TestMigratePostgres(t *testing.T) {
	env := map[string]string{"DATABASE_URL": testenv.PostgresURL(t)}
	if code, out, errOut := runCmd(t, env, "migrate", "status"); code != 0 || !strings.Contains(out, "pending") {
		t.Fatalf("status: %d %s %s", code, out, errOut)
	}
	if code, out, errOut := runCmd(t, env, "migrate", "up"); code != 0 || !strings.Contains(out, "applied") || strings.Contains(out, "pending") {
		t.Fatalf("up: %d %s %s", code, out, errOut)
	}
}

// The README's configuration table lists every setting under its
// environment name, so the docs cannot fall behind the code.
func TestReadmeListsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := os.ReadFile(filepath.Join("configs", "gatehouse.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(shipped), "\n") {
		// Top-level sections have no indent; settings have two spaces.
		if strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   ") && !strings.HasPrefix(strings.TrimSpace(line), "#") &&
			strings.Contains(line, ":") {
			n++
		}
	}
	names := regexp.MustCompile("`(GATEHOUSE_[A-Z_]+)`").FindAllString(string(readme), -1)
	if len(names) < n {
		t.Errorf("README names %d GATEHOUSE_ variables, configs/gatehouse.yaml has %d settings", len(names), n)
	}
	var cfg config.Config
	walkEnv(reflect.ValueOf(&cfg).Elem(), "GATEHOUSE", func(name string) {
		if !strings.Contains(string(readme), "`"+name+"`") {
			t.Errorf("README does not document %s", name)
		}
	})
}

// walkEnv calls fn with every setting's environment name.
func walkEnv(v reflect.Value, prefix string, fn func(string)) {
	for i := range v.NumField() {
		name := prefix + "_" + strings.ToUpper(v.Type().Field(i).Tag.Get("yaml"))
		if v.Field(i).Kind() == reflect.Struct {
			walkEnv(v.Field(i), name, fn)
		} else {
			fn(name)
		}
	}
}

// SIGHUP re-reads the gateway's routes in the running process: a valid
// file adds its routes, an invalid one is logged and changes nothing.
func TestSighupReloadsGateway(t *testing.T) {
	up := newUpstream(t)
	dir := t.TempDir()
	routes := filepath.Join(dir, "routes.yaml")
	cmd, logs, stderr := gatehouse(t, []string{
		"GATEHOUSE_HTTP_ADDR=127.0.0.1:0",
		"GATEHOUSE_DATABASE_SQLITE_PATH=" + filepath.Join(dir, "g.db"),
		"GATEHOUSE_GATEWAY_ROUTES_FILE=" + routes,
		"GATEHOUSE_AUTH_BCRYPT_COST=10",
	}, "serve")
	base := "http://" + waitLog(t, logs, "listening")["addr"].(string)
	status := func() int {
		res, err := http.Get(base + "/open/x")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if s := status(); s != 404 {
		t.Fatalf("before any routes: %d", s)
	}
	writeRoutes(t, routes, "routes:\n  - name: open\n    prefix: /open\n    upstreams: ["+up.URL+"]\n    auth: public\n")
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, logs, "gateway routes loaded")
	if s := status(); s != 200 || up.hits.Load() != 1 {
		t.Fatalf("after SIGHUP: %d, upstream hits %d", s, up.hits.Load())
	}
	writeRoutes(t, routes, "routes: [\n")
	cmd.Process.Signal(syscall.SIGHUP)
	if m := waitLog(t, logs, "gateway reload refused: the routes in use stay"); !strings.Contains(m["error"].(string), "routes.yaml") {
		t.Errorf("the refusal does not name the file: %v", m["error"])
	}
	if s := status(); s != 200 {
		t.Errorf("after a bad file: %d, want the old route still served", s)
	}
	go io.Copy(io.Discard, readerOf(logs))
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit: %v (%s)", err, stderr)
	}
}
