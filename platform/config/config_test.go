package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "g.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The shipped file must state exactly the defaults, and every setting.
func TestShippedFileMatchesDefaults(t *testing.T) {
	path := filepath.Join("..", "..", DefaultFile)
	got, err := Load(path, env(nil))
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("%s differs from Default():\n got %+v\nwant %+v", path, got, want)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	cfg := Default()
	walk(reflect.ValueOf(&cfg).Elem(), "GATEHOUSE", func(name string, _ reflect.Value) {
		parts := strings.Split(strings.ToLower(strings.TrimPrefix(name, "GATEHOUSE_")), "_")
		section, ok := doc[parts[0]].(map[string]any)
		if !ok {
			t.Errorf("%s: section %q missing from %s", name, parts[0], path)
			return
		}
		if _, ok := section[strings.Join(parts[1:], "_")]; !ok {
			t.Errorf("%s: setting not documented in %s", name, path)
		}
	})
}

func TestLayers(t *testing.T) {
	file := writeFile(t, "http:\n  addr: \":9000\"\n  max_body_bytes: 2048\nlog:\n  level: debug\n")
	cfg, err := Load(file, env(map[string]string{
		"GATEHOUSE_LOG_LEVEL":            "warn",
		"DATABASE_URL":                   "postgres://u@db:5432/g",
		"REDIS_URL":                      "redis://r:6379/0",
		"GATEHOUSE_REDIS_URL":            "redis://other:6379/1",
		"GATEHOUSE_CORS_ALLOWED_ORIGINS": "https://a.example.com, https://b.example.com",
		"GATEHOUSE_HEALTH_TIMEOUT":       "750ms",
		"GATEHOUSE_HTTP_DOCS":            "false",
	}))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"file overrides default", cfg.HTTP.MaxBodyBytes, int64(2048)},
		{"file addr", cfg.HTTP.Addr, ":9000"},
		{"env overrides file", cfg.Log.Level, "warn"},
		{"DATABASE_URL", cfg.Database.URL, "postgres://u@db:5432/g"},
		{"GATEHOUSE_ wins over REDIS_URL", cfg.Redis.URL, "redis://other:6379/1"},
		{"list from env", cfg.CORS.AllowedOrigins, []string{"https://a.example.com", "https://b.example.com"}},
		{"duration from env", cfg.Health.Timeout, 750 * time.Millisecond},
		{"bool from env", cfg.HTTP.Docs, false},
		{"default kept", cfg.Database.SQLitePath, "./data/gatehouse.db"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	cfg, err = Load(file, env(map[string]string{"PORT": "7070"}))
	if err != nil || cfg.HTTP.Addr != ":7070" {
		t.Errorf("PORT=7070: addr %q, err %v", cfg.HTTP.Addr, err)
	}
}

func TestMissingDefaultFileIsFine(t *testing.T) {
	t.Chdir(t.TempDir())
	cfg, err := Load("", env(nil))
	if err != nil || !reflect.DeepEqual(cfg, Default()) {
		t.Fatalf("no file: err %v, cfg %+v", err, cfg)
	}
}

// Every bad value is refused with one line naming the setting.
func TestInvalid(t *testing.T) {
	cases := []struct {
		name, file string
		env        map[string]string
		want       string
	}{
		{"PORT not a number", "", map[string]string{"PORT": "abc"}, `PORT: must be a port number from 1 to 65535, got "abc"`},
		{"PORT out of range", "", map[string]string{"PORT": "70000"}, "PORT: must be a port number"},
		{"yaml syntax", "http:\n  addr: [\n", nil, "config file"},
		{"unknown key", "http:\n  adr: \":1\"\n", nil, "field adr not found"},
		{"wrong type in file", "http:\n  max_body_bytes: lots\n", nil, "config file"},
		{"bad duration in env", "", map[string]string{"GATEHOUSE_HTTP_READ_TIMEOUT": "soon"}, "GATEHOUSE_HTTP_READ_TIMEOUT: must be a duration"},
		{"bad int in env", "", map[string]string{"GATEHOUSE_DATABASE_MAX_OPEN_CONNS": "x"}, "GATEHOUSE_DATABASE_MAX_OPEN_CONNS: must be an integer"},
		{"bad bool in env", "", map[string]string{"GATEHOUSE_HTTP_DOCS": "maybe"}, "GATEHOUSE_HTTP_DOCS: must be true or false"},
		{"database scheme", "", map[string]string{"DATABASE_URL": "mysql://x/y"}, "database.url: must be a postgres:// URL"},
		{"redis scheme", "", map[string]string{"REDIS_URL": "http://x"}, "redis.url:"},
		{"cors wildcard with credentials", "cors:\n  allowed_origins: [\"*\"]\n  allow_credentials: true\n", nil, "cors.allowed_origins: \"*\" cannot be combined"},
		{"cors origin with path", "cors:\n  allowed_origins: [\"https://a.example.com/app\"]\n", nil, "cors.allowed_origins:"},
		{"cors origin with a trailing slash", "cors:\n  allowed_origins: [\"https://a.example.com/\"]\n", nil, "no trailing /"},
		{"zero body limit", "http:\n  max_body_bytes: 0\n", nil, "http.max_body_bytes:"},
		{"negative timeout", "http:\n  shutdown_timeout: -1s\n", nil, "http.shutdown_timeout: must be a positive duration"},
		{"zero audit drain", "", map[string]string{"GATEHOUSE_AUDIT_SHUTDOWN_TIMEOUT": "0s"}, "audit.shutdown_timeout: must be a positive duration"},
		{"tls half set", "http:\n  tls_cert_file: c.pem\n", nil, "http.tls_cert_file:"},
		{"log level", "", map[string]string{"GATEHOUSE_LOG_LEVEL": "loud"}, "log.level:"},
		{"public url", "", map[string]string{"GATEHOUSE_HTTP_PUBLIC_URL": "localhost"}, "http.public_url:"},
		{"addr", "", map[string]string{"GATEHOUSE_HTTP_ADDR": "8080"}, "http.addr:"},
		// Clients in such a range could name their own address.
		{"every address a proxy", "http:\n  trusted_proxies: [\"0.0.0.0/0\"]\n", nil, `http.trusted_proxies: "0.0.0.0/0" is too wide to be proxies: at most /8`},
		{"half the addresses proxies", "http:\n  trusted_proxies: [\"10.0.0.1\", \"::/1\"]\n", nil, `"::/1" is too wide to be proxies: at most /32`},
		// In IPv4-mapped notation the range holds IPv4 addresses: this one
		// all of them (net.IPNet.Contains reads it as 0.0.0.0/0), so every
		// client could name its own address.
		{"every IPv4 address a proxy, IPv4-mapped", "http:\n  trusted_proxies: [\"::ffff:0.0.0.0/96\"]\n", nil,
			`http.trusted_proxies: "::ffff:0.0.0.0/96" is too wide to be proxies: at most /104`},
		{"an IPv4 /9 a proxy, IPv4-mapped", "", map[string]string{"GATEHOUSE_HTTP_TRUSTED_PROXIES": "::ffff:10.0.0.0/105, ::ffff:10.0.0.0/103"},
			`"::ffff:10.0.0.0/103" is too wide to be proxies: at most /104`},
		// The writer waited 50ms for 0: block needs a wait, drop is no wait.
		{"block for no time", "audit:\n  block_timeout: 0s\n", nil, "audit.block_timeout: must be positive with audit.overflow block"},
		{"negative block time", "", map[string]string{"GATEHOUSE_AUDIT_BLOCK_TIMEOUT": "-1s", "GATEHOUSE_AUDIT_OVERFLOW": "drop"}, "audit.block_timeout: must not be negative"},
		// Sizes that big made start-up panic (makechan: size out of range)
		// or allocate gigabytes, instead of this one line.
		{"huge audit queue", "", map[string]string{"GATEHOUSE_AUDIT_QUEUE_SIZE": "100000000000000"}, "audit.queue_size: must be from 1 to 1000000, got 100000000000000"},
		{"no audit queue", "audit:\n  queue_size: 0\n", nil, "audit.queue_size: must be from 1 to 1000000, got 0"},
		{"huge audit batch", "", map[string]string{"GATEHOUSE_AUDIT_BATCH_SIZE": "10001"}, "audit.batch_size: must be from 1 to 10000, got 10001"},
		// Public routes have no user: such a default limited nothing, and
		// every public route was silently unlimited.
		{"anonymous keyed by user", "", map[string]string{"GATEHOUSE_RATELIMIT_ANONYMOUS": "api-anonymous,api-user"},
			`ratelimit.anonymous: the policy "api-user" is keyed by user, and a public route has none`},
		{"anonymous keyed by tenant", "ratelimit:\n  anonymous: [api-tenant]\n", nil, `ratelimit.anonymous: the policy "api-tenant" is keyed by tenant`},
		// A limiter that never answers held each request for seconds.
		{"no rate-limit timeout", "", map[string]string{"GATEHOUSE_RATELIMIT_TIMEOUT": "0s"}, "ratelimit.timeout: must be from 1ms to 10s, got 0s"},
		{"rate-limit timeout too long", "ratelimit:\n  timeout: 30s\n", nil, "ratelimit.timeout: must be from 1ms to 10s, got 30s"},
		{"IPv6 prefix too long", "", map[string]string{"GATEHOUSE_RATELIMIT_IPV6_PREFIX": "128"}, "ratelimit.ipv6_prefix: must be from 32 to 64, got 128"},
		{"IPv6 prefix too short", "ratelimit:\n  ipv6_prefix: 16\n", nil, "ratelimit.ipv6_prefix: must be from 32 to 64, got 16"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, c.file)
			_, err := Load(path, env(c.env))
			if err == nil {
				t.Fatalf("want error containing %q, got nil", c.want)
			}
			if msg := err.Error(); !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line containing %q", msg, c.want)
			}
		})
	}
}

// Sizes and waits at their limits are accepted, and block_timeout 0 is
// fine where nothing waits (overflow drop).
func TestAuditLimits(t *testing.T) {
	_, err := Load(writeFile(t, "audit:\n  queue_size: 1000000\n  batch_size: 10000\n  overflow: drop\n  block_timeout: 0s\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Load(writeFile(t, "http:\n  trusted_proxies: [\"::ffff:10.0.0.0/104\", \"10.0.0.0/8\", \"2001:db8::/32\"]\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
}

func TestNamedFileMustExist(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("missing named file: err %v", err)
	}
}

// The rate limiter's timeout and IPv6 prefix are read from the file and
// the environment like every setting, their bounds included.
func TestRateLimitSettings(t *testing.T) {
	cfg, err := Load(writeFile(t, "ratelimit:\n  timeout: 1ms\n  ipv6_prefix: 32\n"), env(nil))
	if err != nil || cfg.RateLimit.Timeout != time.Millisecond || cfg.RateLimit.IPv6Prefix != 32 {
		t.Fatalf("file: err %v, timeout %s, ipv6_prefix %d", err, cfg.RateLimit.Timeout, cfg.RateLimit.IPv6Prefix)
	}
	cfg, err = Load("", env(map[string]string{"GATEHOUSE_RATELIMIT_TIMEOUT": "10s", "GATEHOUSE_RATELIMIT_IPV6_PREFIX": "64"}))
	if err != nil || cfg.RateLimit.Timeout != 10*time.Second || cfg.RateLimit.IPv6Prefix != 64 {
		t.Fatalf("env: err %v, timeout %s, ipv6_prefix %d", err, cfg.RateLimit.Timeout, cfg.RateLimit.IPv6Prefix)
	}
	// ip+route and email policies are fine defaults for public routes.
	cfg, err = Load(writeFile(t, "ratelimit:\n  anonymous: [api-anonymous, register, otp]\n"), env(nil))
	if err != nil {
		t.Fatalf("anonymous keyed by ip and email: %v", err)
	}
}
