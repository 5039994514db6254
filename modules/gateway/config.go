package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is configs/routes.yaml: the routes the gateway proxies.
type Config struct {
	Routes []RouteConfig `yaml:"routes"`
}

// RouteConfig is one proxied route: every request whose path is Prefix or
// lies under it goes to one of Upstreams. Parse fills the defaults that
// the field comments name.
type RouteConfig struct {
	// Name identifies the route in logs and errors, and is the audience of
	// its internal token: lower-case letters, digits and '-', unique.
	Name string `yaml:"name"`
	// Prefix is the path the route serves, with everything under it:
	// absolute and clean, without a trailing slash or any of * : { %.
	Prefix string `yaml:"prefix"`
	// Methods are the methods served; by default GET HEAD POST PUT PATCH
	// DELETE OPTIONS.
	Methods []string `yaml:"methods"`
	// Host, when set, limits the route to requests for that host; others
	// get 404. It has a port only if the request must name that port.
	Host string `yaml:"host"`
	// Upstreams are the servers, http(s)://host[:port][/base], at least one.
	Upstreams []string `yaml:"upstreams"`
	// StripPrefix removes Prefix from the path sent upstream.
	StripPrefix bool `yaml:"strip_prefix"`
	// Rewrite, when set, replaces Prefix in the path sent upstream
	// ("/v2"); it excludes StripPrefix.
	Rewrite string `yaml:"rewrite"`
	// Auth is "public", "authenticated" or a permission "resource:action".
	Auth string `yaml:"auth"`
	// Limits name rate-limit policies of configs/gatehouse.yaml.
	Limits []string `yaml:"limits"`
	// Timeout bounds an exchange from the request until the upstream's
	// response headers, retries included; by default 30s. A streaming
	// response may then last as long as it needs while it keeps moving
	// (IdleTimeout).
	Timeout time.Duration `yaml:"timeout"`
	// IdleTimeout bounds the silence of an answer once its headers have
	// arrived: when the upstream sends none of the body for this long, or
	// the client takes none of an event stream for this long, the
	// exchange is cut off (logged, and counted as a timeout); by default
	// 60s. An event stream must send something within it: a comment line
	// will do. WebSockets are not bound by it.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// Retries is how many more upstreams an idempotent request without a
	// body may try when it cannot reach one (0 to 10).
	Retries int `yaml:"retries"`
	// MaxRequests bounds the requests in flight to each of the route's
	// upstreams, streams and WebSockets included; by default 1024. An
	// upstream at its bound is passed over until one ends; when every
	// upstream is, the answer is at once 503 upstream_unavailable, not a
	// queue that would hold the client: a flood reaching Gatehouse does
	// not all reach the upstream.
	MaxRequests int `yaml:"max_requests"`
	// MaxBodyBytes bounds a request body; by default 10 MiB. Bodies stream
	// through: this is a limit, not a buffer.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// PassAuthorization forwards the client's Authorization header, which
	// is otherwise removed.
	PassAuthorization bool `yaml:"pass_authorization"`
	// WebSocket allows Upgrade: websocket; other routes refuse upgrades.
	WebSocket bool `yaml:"websocket"`
	// InternalToken adds X-Gatehouse-Token, a short-lived token for the
	// route's audience that the upstream verifies with the JWKS. It needs
	// a route that is not public.
	InternalToken bool `yaml:"internal_token"`
	// HealthCheck configures active health checks; none when Path is empty.
	HealthCheck HealthCheck `yaml:"health_check"`
	// Breaker configures the passive health of each upstream.
	Breaker Breaker `yaml:"breaker"`
}

// HealthCheck configures active health checks: every Interval the gateway
// sends GET Path to each upstream (on its host, ignoring its base path); a
// 2xx answer marks it up, anything else or no answer marks it down.
type HealthCheck struct {
	Path string `yaml:"path"`
	// Interval is 10s by default.
	Interval time.Duration `yaml:"interval"`
}

// Breaker configures passive health: an upstream that fails Failures
// times in a row (no connection, a timeout, or a 502, 503 or 504 from it)
// gets no traffic for Cooldown, then one trial request.
type Breaker struct {
	// Failures is 5 by default.
	Failures int `yaml:"failures"`
	// Cooldown is 30s by default.
	Cooldown time.Duration `yaml:"cooldown"`
}

// The defaults Parse fills in.
const (
	DefaultTimeout      = 30 * time.Second
	DefaultIdleTimeout  = 60 * time.Second
	DefaultMaxBodyBytes = 10 << 20
	DefaultMaxRequests  = 1024
	DefaultFailures     = 5
	DefaultCooldown     = 30 * time.Second
	DefaultInterval     = 10 * time.Second
)

const (
	maxRetries     = 10
	maxMaxRequests = 1 << 20
	// maxUpstreams keeps the set of upstreams a request has tried in
	// one machine word.
	maxUpstreams = 64
)

// defaultMethods are the methods a route serves when it names none.
var defaultMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	// pathRE is what a prefix, a rewrite and a base path may hold: no
	// escapes, wildcards or parameters, so they mean the same to Echo, to
	// the gateway and to every upstream.
	pathRE       = regexp.MustCompile(`^(/[A-Za-z0-9._~-]+)+$`)
	hostRE       = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$`)
	permissionRE = regexp.MustCompile(`^[a-z0-9_-]+:[a-z0-9_-]+$`)
	limitRE      = regexp.MustCompile(`^[a-z0-9_.-]+$`)
)

// Load reads and parses the routes file at path. A missing file is an empty
// configuration: a gateway with no routes.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("gateway routes: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes a routes file strictly (an unknown key is an error),
// checks every route and fills in the defaults. Its errors are one line
// and name the route and the field at fault.
func Parse(data []byte) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, decodeError(data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("want one YAML document")
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// check validates every route and fills in its defaults.
func (c *Config) check() error {
	names := map[string]bool{}
	prefixes := map[string]string{}
	for i := range c.Routes {
		r := &c.Routes[i]
		if err := r.check(); err != nil {
			return fmt.Errorf("route %s: %w", r.label(i), err)
		}
		if names[r.Name] {
			return fmt.Errorf("route %s: name: another route has this name", r.label(i))
		}
		names[r.Name] = true
		// Two routes cannot share a prefix even for different hosts: the
		// route table holds one handler per method and path.
		if other, ok := prefixes[r.Prefix]; ok {
			return fmt.Errorf("route %s: prefix: route %q has this prefix too", r.label(i), other)
		}
		prefixes[r.Prefix] = r.Name
	}
	return nil
}

// label names a route in an error: by its name, or by its place.
func (r *RouteConfig) label(i int) string {
	if r.Name != "" {
		return strconv.Quote(r.Name)
	}
	return "#" + strconv.Itoa(i+1)
}

// fieldError is an error about one field of a route.
func fieldError(field, format string, args ...any) error {
	return fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...))
}

// check validates the route and fills in its defaults.
func (r *RouteConfig) check() error {
	if !nameRE.MatchString(r.Name) {
		return fieldError("name", "want 1 to 63 lower-case letters, digits and '-', got %q", r.Name)
	}
	if err := checkPath(r.Prefix); err != nil {
		return fieldError("prefix", "%v", err)
	}
	if err := r.checkMethods(); err != nil {
		return err
	}
	if r.Host != "" {
		r.Host = strings.ToLower(r.Host)
		if !hostRE.MatchString(r.Host) {
			return fieldError("host", "want a host name with an optional port, got %q", r.Host)
		}
	}
	if len(r.Upstreams) == 0 {
		return fieldError("upstreams", "at least one is required")
	}
	if len(r.Upstreams) > maxUpstreams {
		return fieldError("upstreams", "at most %d", maxUpstreams)
	}
	for i, u := range r.Upstreams {
		if _, err := parseUpstream(u); err != nil {
			return fieldError("upstreams["+strconv.Itoa(i)+"]", "%v", err)
		}
		if slices.Index(r.Upstreams, u) != i {
			return fieldError("upstreams["+strconv.Itoa(i)+"]", "%q is listed twice", u)
		}
	}
	if r.Rewrite != "" {
		if r.StripPrefix {
			return fieldError("rewrite", "strip_prefix and rewrite exclude each other")
		}
		if r.Rewrite != "/" {
			if err := checkPath(r.Rewrite); err != nil {
				return fieldError("rewrite", "%v", err)
			}
		}
	}
	if err := r.checkAuth(); err != nil {
		return err
	}
	for i, l := range r.Limits {
		if !limitRE.MatchString(l) {
			return fieldError("limits["+strconv.Itoa(i)+"]", "%q is not a policy name", l)
		}
		if slices.Index(r.Limits, l) != i {
			return fieldError("limits["+strconv.Itoa(i)+"]", "%q is listed twice", l)
		}
	}
	switch {
	case r.Timeout < 0:
		return fieldError("timeout", "must not be negative")
	case r.Timeout == 0:
		r.Timeout = DefaultTimeout
	}
	switch {
	case r.IdleTimeout < 0:
		return fieldError("idle_timeout", "must not be negative")
	case r.IdleTimeout == 0:
		r.IdleTimeout = DefaultIdleTimeout
	}
	if r.Retries < 0 || r.Retries > maxRetries {
		return fieldError("retries", "want 0 to %d, got %d", maxRetries, r.Retries)
	}
	switch {
	case r.MaxRequests < 0 || r.MaxRequests > maxMaxRequests:
		return fieldError("max_requests", "want 1 to %d, got %d", maxMaxRequests, r.MaxRequests)
	case r.MaxRequests == 0:
		r.MaxRequests = DefaultMaxRequests
	}
	switch {
	case r.MaxBodyBytes < 0:
		return fieldError("max_body_bytes", "must not be negative")
	case r.MaxBodyBytes == 0:
		r.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if r.WebSocket && !slices.Contains(r.Methods, "GET") {
		return fieldError("websocket", "a WebSocket handshake is a GET, which methods leaves out")
	}
	if err := r.checkHealth(); err != nil {
		return err
	}
	switch {
	case r.Breaker.Failures < 0:
		return fieldError("breaker.failures", "must not be negative")
	case r.Breaker.Failures == 0:
		r.Breaker.Failures = DefaultFailures
	}
	switch {
	case r.Breaker.Cooldown < 0:
		return fieldError("breaker.cooldown", "must not be negative")
	case r.Breaker.Cooldown == 0:
		r.Breaker.Cooldown = DefaultCooldown
	}
	return nil
}

func (r *RouteConfig) checkMethods() error {
	if len(r.Methods) == 0 {
		r.Methods = slices.Clone(defaultMethods)
		return nil
	}
	// A new slice: the caller's stays as it was.
	methods := make([]string, len(r.Methods))
	for i, m := range r.Methods {
		m = strings.ToUpper(m)
		if !slices.Contains(defaultMethods, m) {
			return fieldError("methods["+strconv.Itoa(i)+"]", "%q is not one of %s", r.Methods[i], strings.Join(defaultMethods, " "))
		}
		if slices.Contains(methods[:i], m) {
			return fieldError("methods["+strconv.Itoa(i)+"]", "%s is listed twice", m)
		}
		methods[i] = m
	}
	r.Methods = methods
	return nil
}

func (r *RouteConfig) checkAuth() error {
	switch {
	case r.Auth == "":
		// No default: a route that forgets to say is not served to anyone.
		return fieldError("auth", "is required: public, authenticated or a permission resource:action")
	case r.Auth == "public":
		if r.InternalToken {
			return fieldError("internal_token", "needs a route that is not public: the token names the caller")
		}
	case r.Auth == "authenticated":
	case !permissionRE.MatchString(r.Auth):
		// The ":own" form is refused too: the proxy cannot limit an
		// upstream to the caller's own resources.
		return fieldError("auth", "want public, authenticated or a permission resource:action, got %q", r.Auth)
	}
	return nil
}

func (r *RouteConfig) checkHealth() error {
	h := &r.HealthCheck
	if h.Path == "" {
		if h.Interval != 0 {
			return fieldError("health_check.interval", "is set but health_check.path is not")
		}
		return nil
	}
	if u, err := url.Parse(h.Path); err != nil || !strings.HasPrefix(h.Path, "/") || strings.HasPrefix(h.Path, "//") ||
		u.Fragment != "" || strings.ContainsAny(h.Path, " \t\r\n") {
		return fieldError("health_check.path", "want an absolute path, got %q", h.Path)
	}
	switch {
	case h.Interval < 0:
		return fieldError("health_check.interval", "must not be negative")
	case h.Interval == 0:
		h.Interval = DefaultInterval
	}
	return nil
}

// checkPath checks a prefix or a rewrite: absolute, clean, plain.
func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("is required")
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("want an absolute path, got %q", p)
	case p == "/":
		return errors.New(`"/" would take every path Gatehouse does not serve itself`)
	case strings.HasSuffix(p, "/"):
		return fmt.Errorf("%q must not end with /", p)
	case path.Clean(p) != p:
		return fmt.Errorf("%q is not a clean path", p)
	case !pathRE.MatchString(p):
		return fmt.Errorf("%q may hold only letters, digits and - . _ ~ between slashes", p)
	}
	return nil
}

// parseUpstream checks an upstream URL and returns it with its base path
// cleaned of a trailing slash.
func parseUpstream(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL", raw)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%q: want http:// or https://", raw)
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("%q has no host", raw)
	case u.User != nil:
		// Credentials in the file would end up in logs; the upstream
		// should trust the internal token instead.
		return nil, fmt.Errorf("%q must not carry credentials", raw)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("%q must not have a query or fragment", raw)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%q: bad port", raw)
		}
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if u.Path != "" {
		if err := checkPath(u.Path); err != nil {
			return nil, fmt.Errorf("%q: base path: %v", raw, err)
		}
	}
	u.RawPath = ""
	return u, nil
}

// decodeError turns a YAML error into one line naming the route and field
// at fault, found from the line numbers yaml.v3 reports.
func decodeError(data []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return errors.New(strings.ReplaceAll(err.Error(), "\n", " "))
	}
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root) // it decoded once: the tree is there
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		msgs = append(msgs, describe(&root, e))
	}
	return errors.New(strings.Join(msgs, "; "))
}

var (
	lineRE    = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownRE = regexp.MustCompile(`^field (\S+) not found in type`)
	typeRE    = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (.+)$")
)

// describe rewrites one yaml.v3 message ("line 7: field foo not found in
// type gateway.RouteConfig") without Go's type names, led by the route and
// field on that line.
func describe(root *yaml.Node, msg string) string {
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return strings.ReplaceAll(msg, "\n", " ")
	}
	line, _ := strconv.Atoi(m[1])
	text := m[2]
	// The key or value named in the message tells apart two fields on one
	// line ({failures: 2, cooldwn: 1s}).
	var hint func(k, v *yaml.Node) bool
	if u := unknownRE.FindStringSubmatch(text); u != nil {
		text = "unknown key"
		hint = func(k, _ *yaml.Node) bool { return k.Value == u[1] }
	} else if t := typeRE.FindStringSubmatch(text); t != nil {
		text = fmt.Sprintf("want %s, got %q", want(t[3]), t[2])
		hint = func(_, v *yaml.Node) bool { return v.Value == t[2] }
	}
	route, field := locate(root, line, hint)
	if field != "" {
		text = field + ": " + text
	}
	if route != "" {
		return fmt.Sprintf("route %s: %s (line %d)", route, text, line)
	}
	return fmt.Sprintf("%s (line %d)", text, line)
}

// want names the YAML a Go type takes.
func want(goType string) string {
	switch {
	case goType == "time.Duration":
		return "a duration such as 30s"
	case strings.HasPrefix(goType, "int") || strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	}
	return "a mapping"
}

// locate finds the route (its quoted name or #n) and the dotted field
// whose key or value is on line.
func locate(root *yaml.Node, line int, hint func(k, v *yaml.Node) bool) (route, field string) {
	doc := root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		doc = doc.Content[0]
	}
	top := pairAt(doc, line, hint)
	if top == nil {
		return "", ""
	}
	if top[0].Value != "routes" || top[1].Kind != yaml.SequenceNode {
		return "", top[0].Value
	}
	for i, r := range top[1].Content {
		if !spans(r, line) {
			continue
		}
		route = "#" + strconv.Itoa(i+1)
		if r.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(r.Content); j += 2 {
				if r.Content[j].Value == "name" && r.Content[j+1].Value != "" {
					route = strconv.Quote(r.Content[j+1].Value)
				}
			}
		}
		var path []string
		for n := r; ; {
			p := pairAt(n, line, hint)
			if p == nil {
				break
			}
			path = append(path, p[0].Value)
			n = p[1]
		}
		return route, strings.Join(path, ".")
	}
	return "routes", ""
}

// pairAt returns the key and value of mapping n that hold line: the pair
// hint picks among those on that line, else the first.
func pairAt(n *yaml.Node, line int, hint func(k, v *yaml.Node) bool) []*yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	var found []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		next := -1
		if i+2 < len(n.Content) {
			next = n.Content[i+2].Line
		}
		if k.Line == line || (line >= v.Line && (next < 0 || line < next) && spans(v, line)) {
			if hint != nil && k.Line == line && hint(k, v) {
				return n.Content[i : i+2]
			}
			if found == nil {
				found = n.Content[i : i+2]
			}
		}
	}
	return found
}

// spans reports whether node n covers line: it starts on or before it and
// its last descendant starts on or after it.
func spans(n *yaml.Node, line int) bool {
	if n.Line > line {
		return false
	}
	last := n
	for len(last.Content) > 0 {
		last = last.Content[len(last.Content)-1]
	}
	return line <= last.Line || n.Line == line
}
