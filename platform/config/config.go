// Package config loads Gatehouse's one typed configuration.
//
// Values come from three layers, each overriding the one before: the
// defaults in Default, the YAML file (configs/gatehouse.yaml, or the file
// named by --config or GATEHOUSE_CONFIG), and the environment. Every setting
// has an environment name made from its YAML path: http.max_body_bytes is
// GATEHOUSE_HTTP_MAX_BODY_BYTES. The conventional DATABASE_URL, REDIS_URL and
// PORT are read too, and so is GATEHOUSE_MASTER_KEY for auth.master_key; a
// variable named after the setting wins over them.
//
// Load validates the result, and every error it returns is one line that
// names the setting (or file) and what is wrong with it.
package config

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultFile is the configuration file read when none is named.
const DefaultFile = "configs/gatehouse.yaml"

// Config is every setting of Gatehouse.
type Config struct {
	HTTP      HTTP      `yaml:"http"`
	CORS      CORS      `yaml:"cors"`
	Database  Database  `yaml:"database"`
	Redis     Redis     `yaml:"redis"`
	Log       Log       `yaml:"log"`
	Health    Health    `yaml:"health"`
	Auth      Auth      `yaml:"auth"`
	Tenancy   Tenancy   `yaml:"tenancy"`
	RateLimit RateLimit `yaml:"ratelimit"`
	Gateway   Gateway   `yaml:"gateway"`
	Metrics   Metrics   `yaml:"metrics"`
	Audit     Audit     `yaml:"audit"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Token guards /metrics on the main listener (Authorization: Bearer).
	Token string `yaml:"token"`
	// Listen serves /metrics on a separate address instead, unguarded.
	Listen string `yaml:"listen"`
}

// Audit configures the audit log's writer and retention.
type Audit struct {
	QueueSize     int           `yaml:"queue_size"`
	BatchSize     int           `yaml:"batch_size"`
	FlushInterval time.Duration `yaml:"flush_interval"`
	Overflow      string        `yaml:"overflow"` // block or drop
	BlockTimeout  time.Duration `yaml:"block_timeout"`
	// ShutdownTimeout bounds how long shutdown waits for the queue to be
	// written; what is still queued then is dropped and counted, and serve
	// fails (exit status 1, the count on stderr).
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	Retention       time.Duration `yaml:"retention"` // 0: keep forever
	PruneInterval   time.Duration `yaml:"prune_interval"`
}

// Gateway configures the API gateway.
type Gateway struct {
	// RoutesFile holds the proxied routes; re-read on SIGHUP and by
	// POST /v1/admin/gateway/reload.
	RoutesFile string `yaml:"routes_file"`
}

// RateLimit configures the rate-limit policies and which routes they
// govern.
type RateLimit struct {
	Policies []Policy `yaml:"policies"`
	// Anonymous and Authenticated name the policies every public and every
	// authenticated route gets, on top of the route's own.
	Anonymous     []string `yaml:"anonymous"`
	Authenticated []string `yaml:"authenticated"`
	// Plans multiply the limits of tenant-keyed policies by a tenant's plan.
	Plans map[string]int `yaml:"plans"`
	// Timeout bounds each decision: a Redis that accepts connections but
	// never answers must not hold every request for seconds before the
	// policies' on_error applies.
	Timeout time.Duration `yaml:"timeout"`
	// IPv6Prefix is the prefix length an IPv6 client is counted by: an end
	// site is given a /56 or a /48 (RFC 6177), and each of its addresses
	// or /64s counted apart would multiply its allowance.
	IPv6Prefix int `yaml:"ipv6_prefix"`
}

// Policy is one rate-limit policy.
type Policy struct {
	Name      string        `yaml:"name"`
	Algorithm string        `yaml:"algorithm"` // token_bucket or sliding_window
	Limit     int           `yaml:"limit"`
	Period    time.Duration `yaml:"period"`
	Burst     int           `yaml:"burst"` // token bucket: requests at once; 0 means limit
	Key       string        `yaml:"key"`   // ip, user, tenant, ip+route, user+route, ip+email or email
	OnError   string        `yaml:"on_error"`
}

// Tenancy configures how requests name their tenant.
type Tenancy struct {
	BaseDomain string `yaml:"base_domain"`
}

// HTTP configures the listener and the request limits.
type HTTP struct {
	Addr              string        `yaml:"addr"`
	PublicURL         string        `yaml:"public_url"`
	MaxBodyBytes      int64         `yaml:"max_body_bytes"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	ShutdownTimeout   time.Duration `yaml:"shutdown_timeout"`
	TLSCertFile       string        `yaml:"tls_cert_file"`
	TLSKeyFile        string        `yaml:"tls_key_file"`
	HSTSMaxAge        time.Duration `yaml:"hsts_max_age"`
	Docs              bool          `yaml:"docs"`
	// TrustedProxies are the peers (IPs or CIDRs) whose ClientIPHeader is
	// believed; from anyone else the connection's address is the client's.
	TrustedProxies []string `yaml:"trusted_proxies"`
	ClientIPHeader string   `yaml:"client_ip_header"`
}

// CORS configures which browser origins may call the API.
type CORS struct {
	AllowedOrigins   []string      `yaml:"allowed_origins"`
	AllowCredentials bool          `yaml:"allow_credentials"`
	MaxAge           time.Duration `yaml:"max_age"`
}

// Database selects and tunes the database.
type Database struct {
	URL             string        `yaml:"url"`
	SQLitePath      string        `yaml:"sqlite_path"`
	MaxOpenConns    int           `yaml:"max_open_conns"`
	MaxIdleConns    int           `yaml:"max_idle_conns"`
	ConnMaxLifetime time.Duration `yaml:"conn_max_lifetime"`
	ConnMaxIdleTime time.Duration `yaml:"conn_max_idle_time"`
	ConnectTimeout  time.Duration `yaml:"connect_timeout"`
	AutoMigrate     bool          `yaml:"auto_migrate"`
}

// Redis selects the shared key-value store; empty URL keeps it in process.
type Redis struct {
	URL    string `yaml:"url"`
	Prefix string `yaml:"prefix"`
}

// Log configures the structured logger.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Health configures the health endpoints.
type Health struct {
	Timeout time.Duration `yaml:"timeout"`
}

// Auth configures sign-in, sessions and tokens.
type Auth struct {
	Issuer            string        `yaml:"issuer"`
	Audience          string        `yaml:"audience"`
	SigningAlgorithm  string        `yaml:"signing_algorithm"`
	MasterKey         string        `yaml:"master_key"`
	AccessTTL         time.Duration `yaml:"access_ttl"`
	Leeway            time.Duration `yaml:"leeway"`
	RefreshTTL        time.Duration `yaml:"refresh_ttl"`
	SessionMaxAge     time.Duration `yaml:"session_max_age"`
	BcryptCost        int           `yaml:"bcrypt_cost"`
	BcryptConcurrency int           `yaml:"bcrypt_concurrency"`
	BcryptProcess     bool          `yaml:"bcrypt_process"`
	LockoutThreshold  int           `yaml:"lockout_threshold"`
	LockoutDuration   time.Duration `yaml:"lockout_duration"`
	FailedLoginDelay  time.Duration `yaml:"failed_login_delay"`
	DefaultTenant     string        `yaml:"default_tenant"`
	IntrospectClients []string      `yaml:"introspect_clients"`
	CookieSecure      bool          `yaml:"cookie_secure"`
}

// Default returns the built-in settings: the embedded default stack, a
// SQLite file under ./data and the in-process key-value store.
func Default() Config {
	return Config{
		HTTP: HTTP{
			Addr:              ":8080",
			PublicURL:         "http://localhost:8080",
			MaxBodyBytes:      1 << 20,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       120 * time.Second,
			ShutdownTimeout:   15 * time.Second,
			HSTSMaxAge:        365 * 24 * time.Hour,
			Docs:              true,
			TrustedProxies:    []string{},
			ClientIPHeader:    "x-forwarded-for",
		},
		CORS: CORS{AllowedOrigins: []string{}, MaxAge: 10 * time.Minute},
		Database: Database{
			SQLitePath:      "./data/gatehouse.db",
			MaxOpenConns:    20,
			ConnMaxLifetime: 30 * time.Minute,
			ConnMaxIdleTime: 5 * time.Minute,
			ConnectTimeout:  5 * time.Second,
			AutoMigrate:     true,
		},
		Redis:   Redis{Prefix: "gatehouse:"},
		Log:     Log{Level: "info", Format: "json"},
		Health:  Health{Timeout: 2 * time.Second},
		Gateway: Gateway{RoutesFile: "configs/routes.yaml"},
		Audit: Audit{QueueSize: 10000, BatchSize: 500, FlushInterval: 200 * time.Millisecond, Overflow: "block",
			BlockTimeout: 50 * time.Millisecond, ShutdownTimeout: 10 * time.Second, Retention: 365 * 24 * time.Hour,
			PruneInterval: time.Hour},
		RateLimit: RateLimit{
			Policies: []Policy{
				{Name: "login", Algorithm: "sliding_window", Limit: 5, Period: 15 * time.Minute, Key: "ip+email", OnError: "deny"},
				{Name: "register", Algorithm: "sliding_window", Limit: 3, Period: time.Hour, Key: "ip", OnError: "deny"},
				{Name: "refresh", Algorithm: "token_bucket", Limit: 10, Period: time.Minute, Key: "user", OnError: "allow"},
				{Name: "otp", Algorithm: "sliding_window", Limit: 3, Period: 15 * time.Minute, Key: "email", OnError: "deny"},
				{Name: "api-anonymous", Algorithm: "token_bucket", Limit: 100, Period: 15 * time.Minute, Key: "ip", OnError: "allow"},
				{Name: "api-user", Algorithm: "token_bucket", Limit: 600, Period: time.Minute, Key: "user", OnError: "allow"},
				{Name: "api-tenant", Algorithm: "token_bucket", Limit: 6000, Period: time.Minute, Key: "tenant", OnError: "allow"},
			},
			Anonymous:     []string{"api-anonymous"},
			Authenticated: []string{"api-user", "api-tenant"},
			Plans:         map[string]int{"default": 1, "pro": 5, "enterprise": 20},
			Timeout:       250 * time.Millisecond,
			IPv6Prefix:    56,
		},
		Auth: Auth{
			Audience:          "gatehouse",
			SigningAlgorithm:  "RS256",
			AccessTTL:         15 * time.Minute,
			Leeway:            30 * time.Second,
			RefreshTTL:        14 * 24 * time.Hour,
			SessionMaxAge:     90 * 24 * time.Hour,
			BcryptCost:        12,
			BcryptConcurrency: 0,
			BcryptProcess:     true,
			LockoutThreshold:  5,
			LockoutDuration:   15 * time.Minute,
			FailedLoginDelay:  200 * time.Millisecond,
			DefaultTenant:     "default",
			IntrospectClients: []string{},
			CookieSecure:      true,
		},
	}
}

// Load returns the configuration from the defaults, the file at path and
// the environment read through getenv. An empty path means DefaultFile, which
// may be absent; a named file must exist.
func Load(path string, getenv func(string) string) (Config, error) {
	cfg := Default()
	named := path != ""
	if !named {
		path = DefaultFile
	}
	if err := loadFile(&cfg, path, named); err != nil {
		return cfg, err
	}
	if err := loadEnv(&cfg, getenv); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

func loadFile(cfg *Config, path string, named bool) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !named {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, errors.Unwrap(err))
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	// A misspelt setting must not be silently ignored.
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && err != io.EOF {
		msg := strings.ReplaceAll(err.Error(), "\n", "; ")
		return fmt.Errorf("config file %s: %s", path, strings.TrimPrefix(msg, "yaml: "))
	}
	return nil
}

// loadEnv overlays the conventional variables, then every GATEHOUSE_ one.
func loadEnv(cfg *Config, getenv func(string) string) error {
	if v := getenv("DATABASE_URL"); v != "" {
		cfg.Database.URL = v
	}
	if v := getenv("REDIS_URL"); v != "" {
		cfg.Redis.URL = v
	}
	if v := getenv("GATEHOUSE_METRICS_TOKEN"); v != "" {
		cfg.Metrics.Token = v
	}
	if v := getenv("GATEHOUSE_MASTER_KEY"); v != "" {
		cfg.Auth.MasterKey = v
	}
	if v := getenv("PORT"); v != "" {
		if p, err := strconv.Atoi(v); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("PORT: must be a port number from 1 to 65535, got %q", v)
		}
		cfg.HTTP.Addr = ":" + v
	}
	var err error
	walk(reflect.ValueOf(cfg).Elem(), "GATEHOUSE", func(name string, field reflect.Value) {
		v := getenv(name)
		if v == "" || err != nil {
			return
		}
		if e := setField(field, v); e != nil {
			err = fmt.Errorf("%s: %v, got %q", name, e, v)
		}
	})
	return err
}

// walk calls fn for every leaf setting with its environment name.
func walk(v reflect.Value, prefix string, fn func(name string, field reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		name := prefix + "_" + strings.ToUpper(t.Field(i).Tag.Get("yaml"))
		if f := v.Field(i); f.Kind() == reflect.Struct {
			walk(f, name, fn)
		} else {
			fn(name, f)
		}
	}
}

func setField(f reflect.Value, s string) error {
	switch {
	case f.Type() == reflect.TypeOf(time.Duration(0)):
		d, err := time.ParseDuration(s)
		if err != nil {
			return errors.New("must be a duration such as 30s or 15m")
		}
		f.SetInt(int64(d))
	case f.Kind() == reflect.String:
		f.SetString(s)
	case f.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("must be true or false")
		}
		f.SetBool(b)
	case f.Kind() == reflect.Int || f.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return errors.New("must be an integer")
		}
		f.SetInt(n)
	case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
		var items []string
		for _, it := range strings.Split(s, ",") {
			if it = strings.TrimSpace(it); it != "" {
				items = append(items, it)
			}
		}
		f.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("unsupported setting type %s", f.Type())
	}
	return nil
}

// Validate reports the first invalid setting, by its YAML path.
func (c Config) Validate() error {
	bad := func(setting, format string, args ...any) error {
		return fmt.Errorf("%s: %s", setting, fmt.Sprintf(format, args...))
	}
	if _, port, err := net.SplitHostPort(c.HTTP.Addr); err != nil {
		return bad("http.addr", "must be host:port or :port, got %q", c.HTTP.Addr)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return bad("http.addr", "port must be a number from 0 to 65535, got %q", port)
	}
	if u, err := url.Parse(c.HTTP.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("http.public_url", "must be an absolute http or https URL, got %q", c.HTTP.PublicURL)
	}
	if c.HTTP.MaxBodyBytes < 1 || c.HTTP.MaxBodyBytes > 1<<30 {
		return bad("http.max_body_bytes", "must be between 1 and 1073741824, got %d", c.HTTP.MaxBodyBytes)
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"http.read_header_timeout", c.HTTP.ReadHeaderTimeout}, {"http.read_timeout", c.HTTP.ReadTimeout},
		{"http.write_timeout", c.HTTP.WriteTimeout}, {"http.idle_timeout", c.HTTP.IdleTimeout},
		{"http.shutdown_timeout", c.HTTP.ShutdownTimeout}, {"database.connect_timeout", c.Database.ConnectTimeout},
		{"health.timeout", c.Health.Timeout}, {"audit.shutdown_timeout", c.Audit.ShutdownTimeout},
		{"audit.flush_interval", c.Audit.FlushInterval}, {"audit.prune_interval", c.Audit.PruneInterval},
	} {
		if d.d <= 0 {
			return bad(d.name, "must be a positive duration, got %s", d.d)
		}
	}
	if (c.HTTP.TLSCertFile == "") != (c.HTTP.TLSKeyFile == "") {
		return bad("http.tls_cert_file", "tls_cert_file and tls_key_file must be set together")
	}
	for _, o := range c.CORS.AllowedOrigins {
		if o == "*" {
			if c.CORS.AllowCredentials {
				return bad("cors.allowed_origins", `"*" cannot be combined with cors.allow_credentials: list the origins`)
			}
			continue
		}
		u, err := url.Parse(o)
		// No path, not even "/": a browser's Origin has none, and the
		// match is exact.
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" {
			return bad("cors.allowed_origins", "%q is not an origin such as https://app.example.com (no path, no trailing /)", o)
		}
	}
	if c.Database.URL != "" {
		u, err := url.Parse(c.Database.URL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return bad("database.url", "must be a postgres:// URL, or empty for the embedded SQLite file")
		}
	} else if c.Database.SQLitePath == "" {
		return bad("database.sqlite_path", "must be set when database.url is empty")
	}
	if c.Database.MaxOpenConns < 1 || c.Database.MaxIdleConns < 0 || c.Database.MaxIdleConns > c.Database.MaxOpenConns {
		return bad("database.max_open_conns", "need max_open_conns >= 1 and 0 <= max_idle_conns <= max_open_conns")
	}
	for _, addr := range strings.Split(c.Redis.URL, ",") {
		addr = strings.TrimSpace(addr)
		if addr == "" {
			continue
		}
		if !strings.Contains(addr, "://") {
			addr = "redis://" + addr
		}
		if u, err := url.Parse(addr); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			return bad("redis.url", "must be a redis:// or rediss:// URL, or a comma-separated list of cluster nodes")
		}
	}
	if d := c.Tenancy.BaseDomain; d != "" && (strings.ContainsAny(d, "/:@ ") || strings.HasPrefix(d, ".") || !strings.Contains(d, ".")) {
		return bad("tenancy.base_domain", "must be a domain such as example.com, got %q", d)
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			return bad("metrics.listen", "must be host:port, got %q", c.Metrics.Listen)
		}
	}
	if c.Metrics.Token != "" && len(c.Metrics.Token) < 16 {
		return bad("metrics.token", "must have at least 16 characters")
	}
	switch a := c.Audit; {
	case a.QueueSize < 1 || a.QueueSize > MaxAuditQueueSize:
		return bad("audit.queue_size", "must be from 1 to %d, got %d", MaxAuditQueueSize, a.QueueSize)
	case a.BatchSize < 1 || a.BatchSize > MaxAuditBatchSize:
		return bad("audit.batch_size", "must be from 1 to %d, got %d", MaxAuditBatchSize, a.BatchSize)
	case a.Retention < 0:
		return bad("audit.retention", "must not be negative (0 keeps events forever), got %s", a.Retention)
	case a.Overflow != "block" && a.Overflow != "drop":
		return bad("audit.overflow", "must be block or drop, got %q", a.Overflow)
	case a.BlockTimeout < 0:
		return bad("audit.block_timeout", "must not be negative, got %s", a.BlockTimeout)
	case a.BlockTimeout == 0 && a.Overflow == "block":
		// Not "drop at once": that is overflow drop, and the writer takes a
		// zero wait as its default.
		return bad("audit.block_timeout", "must be positive with audit.overflow block (for no wait, set audit.overflow to drop), got 0s")
	}
	if err := c.RateLimit.validate(); err != nil {
		return err
	}
	for _, p := range c.HTTP.TrustedProxies {
		_, n, err := net.ParseCIDR(p)
		if err != nil && net.ParseIP(p) == nil {
			return bad("http.trusted_proxies", "%q is neither an IP nor a CIDR", p)
		}
		// A range that wide takes in clients, who could then name their
		// own address (and rate-limit key) in the header.
		if n != nil {
			ones, bits := n.Mask.Size()
			least := bits / 4
			// An IPv4-mapped range (::ffff:a.b.c.d/n) holds IPv4 addresses:
			// net.IPNet.Contains matches IPv4 clients against it as
			// a.b.c.d/(n-96), so ::ffff:0.0.0.0/96 is every one of them.
			// It is held to the IPv4 limit, /8, in its own notation.
			if n.IP.To4() != nil && bits == 128 {
				least = 96 + 32/4
			}
			if ones < least {
				return bad("http.trusted_proxies", "%q is too wide to be proxies: at most /%d", p, least)
			}
		}
	}
	if h := c.HTTP.ClientIPHeader; h != "x-forwarded-for" && h != "x-real-ip" {
		return bad("http.client_ip_header", "must be x-forwarded-for or x-real-ip, got %q", h)
	}
	if err := c.Auth.validate(); err != nil {
		return err
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		return bad("log.format", "must be json or text, got %q", c.Log.Format)
	}
	return nil
}

// The largest audit.queue_size and audit.batch_size accepted. The writer
// allocates both at start, about 200 bytes an event: a bigger queue would
// take more memory than it can be worth, or make start-up panic.
const (
	MaxAuditQueueSize = 1_000_000
	MaxAuditBatchSize = 10_000
)

// MinBcryptCost is the lowest bcrypt cost accepted: below it a stolen hash
// is too cheap to attack.
const MinBcryptCost = 10

func (a Auth) validate() error {
	bad := func(setting, format string, args ...any) error {
		return fmt.Errorf("auth.%s: %s", setting, fmt.Sprintf(format, args...))
	}
	if a.Issuer != "" {
		if u, err := url.Parse(a.Issuer); err != nil || u.Scheme == "" || u.Host == "" {
			return bad("issuer", "must be an absolute URL, or empty for http.public_url")
		}
	}
	if a.Audience == "" {
		return bad("audience", "must not be empty")
	}
	if a.SigningAlgorithm != "RS256" && a.SigningAlgorithm != "EdDSA" {
		return bad("signing_algorithm", "must be RS256 or EdDSA, got %q", a.SigningAlgorithm)
	}
	if a.MasterKey != "" {
		if k, err := base64.StdEncoding.DecodeString(a.MasterKey); err != nil || len(k) != 32 {
			// Never echo the value: it is a secret.
			return bad("master_key", "must be 32 random bytes, base64-encoded (openssl rand -base64 32)")
		}
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"access_ttl", a.AccessTTL}, {"refresh_ttl", a.RefreshTTL}, {"session_max_age", a.SessionMaxAge}, {"lockout_duration", a.LockoutDuration}} {
		if d.d <= 0 {
			return bad(d.name, "must be a positive duration, got %s", d.d)
		}
	}
	if a.FailedLoginDelay < 0 || a.FailedLoginDelay > 5*time.Second {
		return bad("failed_login_delay", "must be between 0s and 5s, got %s", a.FailedLoginDelay)
	}
	if a.Leeway < 0 || a.Leeway > 5*time.Minute {
		return bad("leeway", "must be between 0s and 5m, got %s", a.Leeway)
	}
	if a.RefreshTTL > a.SessionMaxAge {
		return bad("refresh_ttl", "must not exceed auth.session_max_age")
	}
	if a.BcryptCost < MinBcryptCost || a.BcryptCost > 16 {
		return bad("bcrypt_cost", "must be between %d and 16, got %d", MinBcryptCost, a.BcryptCost)
	}
	if a.BcryptConcurrency < 0 {
		return bad("bcrypt_concurrency", "must not be negative, got %d", a.BcryptConcurrency)
	}
	if a.LockoutThreshold < 1 {
		return bad("lockout_threshold", "must be at least 1, got %d", a.LockoutThreshold)
	}
	if a.DefaultTenant == "" {
		return bad("default_tenant", "must name a tenant slug")
	}
	for _, c := range a.IntrospectClients {
		id, sum, ok := strings.Cut(c, ":")
		if h, err := hex.DecodeString(sum); !ok || id == "" || err != nil || len(h) != 32 {
			return bad("introspect_clients", "each entry must be client_id:sha256-of-secret-in-hex")
		}
	}
	return nil
}

// MasterKeyBytes returns the decoded master key, or nil when none is set.
func (a Auth) MasterKeyBytes() []byte {
	k, _ := base64.StdEncoding.DecodeString(a.MasterKey) // validated
	if len(k) == 0 {
		return nil
	}
	return k
}

func (r RateLimit) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("ratelimit.%s", fmt.Sprintf(format, args...))
	}
	keys := map[string]string{} // policy name: key
	for i, p := range r.Policies {
		switch {
		case p.Name == "" || keys[p.Name] != "":
			return bad("policies[%d].name: must be set and unique, got %q", i, p.Name)
		case p.Algorithm != "token_bucket" && p.Algorithm != "sliding_window":
			return bad("policies[%d] (%s).algorithm: must be token_bucket or sliding_window, got %q", i, p.Name, p.Algorithm)
		case p.Limit < 1 || (p.Algorithm == "sliding_window" && p.Limit > 10000):
			return bad("policies[%d] (%s).limit: must be from 1 (to 10000 for sliding_window), got %d", i, p.Name, p.Limit)
		case p.Period < time.Second:
			return bad("policies[%d] (%s).period: must be at least 1s, got %s", i, p.Name, p.Period)
		case p.Burst < 0:
			return bad("policies[%d] (%s).burst: must not be negative", i, p.Name)
		case !slices.Contains([]string{"ip", "user", "tenant", "ip+route", "user+route", "ip+email", "email"}, p.Key):
			return bad("policies[%d] (%s).key: must be ip, user, tenant, ip+route, user+route, ip+email or email, got %q", i, p.Name, p.Key)
		case p.OnError != "allow" && p.OnError != "deny":
			return bad("policies[%d] (%s).on_error: must be allow or deny, got %q", i, p.Name, p.OnError)
		}
		keys[p.Name] = p.Key
	}
	for _, list := range [][]string{r.Anonymous, r.Authenticated} {
		for _, n := range list {
			if keys[n] == "" {
				return bad("anonymous/authenticated: no policy named %q", n)
			}
		}
	}
	// Public routes have no user or tenant: such a policy among their
	// defaults would never be decided, and they would be unlimited.
	for _, n := range r.Anonymous {
		if k := keys[n]; k == "user" || k == "tenant" || k == "user+route" {
			return bad("anonymous: the policy %q is keyed by %s, and a public route has none: use a policy keyed by ip, ip+route, ip+email or email", n, k)
		}
	}
	if r.Timeout < time.Millisecond || r.Timeout > 10*time.Second {
		return bad("timeout: must be from 1ms to 10s, got %s", r.Timeout)
	}
	if r.IPv6Prefix < 32 || r.IPv6Prefix > 64 {
		return bad("ipv6_prefix: must be from 32 to 64, got %d", r.IPv6Prefix)
	}
	if _, ok := r.Plans["default"]; !ok {
		return bad("plans: must define the plan \"default\"")
	}
	for name, f := range r.Plans {
		if f < 1 {
			return bad("plans.%s: the factor must be at least 1, got %d", name, f)
		}
	}
	return nil
}
