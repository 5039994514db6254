// Command gatehouse is the front door of a multi-tenant SaaS: sign-in,
// sessions, authorization, rate limits and an API gateway in one binary.
//
// Usage:
//
//	gatehouse [--config FILE] [serve]         serve HTTP (the default)
//	gatehouse [--config FILE] migrate up      apply pending migrations
//	gatehouse [--config FILE] migrate status  list applied and pending migrations
//	gatehouse [--config FILE] admin super-admin add|remove EMAIL
//	                                          make or unmake a platform-wide super admin
//	gatehouse [--config FILE] audit verify [--tenant ID]
//	                                          check the audit log's hash chains
//	gatehouse [--config FILE] health          probe this host's /health (container HEALTHCHECK)
//	gatehouse [--config FILE] keys rotate     make a new signing key; old ones verify until their tokens expire
//	gatehouse version                         print the version
//
// Settings come from configs/gatehouse.yaml (or --config, or
// GATEHOUSE_CONFIG) and the environment; see that file.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"gatehouse/modules/auth"
	"gatehouse/platform/audit"
	"gatehouse/platform/config"
	"gatehouse/platform/db"
	"gatehouse/platform/httpx"
	"gatehouse/platform/kv"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

const usage = `usage: gatehouse [--config FILE] [command]

commands:
  serve            serve HTTP (the default)
  migrate up       apply pending database migrations
  migrate status   list applied and pending migrations
  keys rotate      make a new signing key (old keys stay in the JWKS until their tokens expire)
  admin super-admin add|remove EMAIL
                   make or unmake a platform-wide super admin (the account must exist)
  audit verify [--tenant ID]
                   check the audit log's hash chains; names the first broken link
  health           exit 0 if the server on this host answers /health (for HEALTHCHECK)
  version          print the version

The configuration file defaults to configs/gatehouse.yaml (or GATEHOUSE_CONFIG);
every setting can also be set in the environment (see that file).
`

func main() {
	tuneGC(os.Getenv)
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// tuneGC sets GOGC=200 unless the environment sets GOGC. A serving
// Gatehouse keeps a live heap of about 7 MB and allocates a few KB per
// request: at Go's default of 100 a loaded server collects some 20 times a
// second, marking that heap each time. 200 halves that for about 7 MB more
// heap under load; side by side it served about 5 % more requests. 400 did
// no better, and its larger heap raised the Redis stack's p99 by a third.
// Idle, the heap stays small (README, Performance).
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
}

// errUsage marks a command line that makes no sense: exit status 2.
var errUsage = errors.New("usage")

// run is the whole program; it returns the exit status. Tests call it with
// extra routes (a slow one, for the shutdown test); the binary never does.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, extra ...httpx.Route) int {
	err := dispatch(ctx, args, getenv, stdout, stderr, extra)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprint(stderr, usage)
		return 2
	default:
		fmt.Fprintf(stderr, "gatehouse: %v\n", err)
		return 1
	}
}

func dispatch(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, extra []httpx.Route) error {
	if len(args) == 1 && args[0] == "bcrypt-worker" {
		// The helper process serve starts for bcrypt (auth.bcrypt_process):
		// no configuration, no output but its answers.
		return auth.ServeBcryptWorker(os.Stdin, stdout)
	}
	fset := flag.NewFlagSet("gatehouse", flag.ContinueOnError)
	fset.SetOutput(io.Discard) // run prints the one usage text
	configPath := fset.String("config", getenv("GATEHOUSE_CONFIG"), "configuration file")
	tenantFlag := fset.String("tenant", "", "audit verify: only this tenant's chain")
	// Flags may stand before or after the command: parse both places.
	var cmd []string
	for rest := args; ; {
		if err := fset.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return errUsage
			}
			fmt.Fprintf(stderr, "gatehouse: %v\n", err)
			return errUsage
		}
		if fset.NArg() == 0 {
			break
		}
		cmd, rest = append(cmd, fset.Arg(0)), fset.Args()[1:]
	}
	if len(cmd) == 0 {
		cmd = []string{"serve"}
	}
	switch {
	case len(cmd) == 1 && cmd[0] == "version":
		fmt.Fprintln(stdout, versionLine())
		return nil
	case len(cmd) == 1 && cmd[0] == "serve":
		cfg, err := config.Load(*configPath, getenv)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, stdout, extra)
	case len(cmd) == 1 && cmd[0] == "health":
		cfg, err := config.Load(*configPath, getenv)
		if err != nil {
			return err
		}
		return probe(ctx, cfg, stdout)
	case len(cmd) == 4 && cmd[0] == "admin" && cmd[1] == "super-admin" && (cmd[2] == "add" || cmd[2] == "remove"):
		cfg, err := config.Load(*configPath, getenv)
		if err != nil {
			return err
		}
		return superAdmin(ctx, cfg, cmd[2] == "add", cmd[3], stdout, stderr)
	case len(cmd) == 2 && cmd[0] == "audit" && cmd[1] == "verify":
		cfg, err := config.Load(*configPath, getenv)
		if err != nil {
			return err
		}
		return verifyAudit(ctx, cfg, *tenantFlag, stdout, stderr)
	case len(cmd) == 2 && cmd[0] == "keys" && cmd[1] == "rotate":
		cfg, err := config.Load(*configPath, getenv)
		if err != nil {
			return err
		}
		return rotateKeys(ctx, cfg, stdout, stderr)
	case len(cmd) == 2 && cmd[0] == "migrate" && (cmd[1] == "up" || cmd[1] == "status"):
		cfg, err := config.Load(*configPath, getenv)
		if err != nil {
			return err
		}
		return migrate(ctx, cfg, cmd[1], stdout, stderr)
	}
	fmt.Fprintf(stderr, "gatehouse: unknown command %q\n", cmd)
	return errUsage
}

// probe asks the server listening on this host's configured address for
// /health: the container HEALTHCHECK, where the image has no curl.
func probe(ctx context.Context, cfg config.Config, stdout io.Writer) error {
	scheme, client := "http", &http.Client{Timeout: 3 * time.Second}
	if cfg.HTTP.TLSCertFile != "" {
		// The certificate names the public host, not the address asked;
		// this asks our own process on this host and sends nothing secret.
		scheme = "https"
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+probeAddr(cfg.HTTP.Addr)+"/health", nil)
	if err != nil {
		return err
	}
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("health: %s", res.Status)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}

// probeAddr is where the probe finds a server listening on addr: the host
// addr binds, or loopback when it binds every interface (no host, 0.0.0.0,
// ::). A server bound to one address (a pod IP, ::1) is not on 127.0.0.1.
func probeAddr(addr string) string {
	host, port, _ := net.SplitHostPort(addr) // validated by config
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func versionLine() string {
	v := "gatehouse " + version + " " + runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v += " " + s.Value
			}
		}
	}
	return v
}

// newLogger logs synchronously, for the one-shot commands; serve logs
// through a queue (newAsyncLogger).
func newLogger(cfg config.Log, w io.Writer) *slog.Logger {
	return slog.New(httpx.NewLogHandler(w, cfg.Format, logLevel(cfg)))
}

// newAsyncLogger logs through a queue and one writer goroutine, so that
// formatting and writing lines (the access log's above all) happen off the
// request's goroutine. Close the handler to write what is left.
func newAsyncLogger(cfg config.Log, w io.Writer) (*slog.Logger, *httpx.AsyncHandler) {
	h := httpx.NewAsyncHandler(w, 0, cfg.Format, logLevel(cfg))
	return slog.New(h), h
}

// logLevel is the configured level; config validation rejects others.
func logLevel(cfg config.Log) slog.Level {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	return level
}

// openDB opens the database, naming the setting at fault if it cannot.
func openDB(ctx context.Context, cfg config.Config, log *slog.Logger) (*db.DB, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Database.ConnectTimeout)
	defer cancel()
	d := cfg.Database
	conn, err := db.Open(ctx, db.Config{URL: d.URL, SQLitePath: d.SQLitePath, MaxOpenConns: d.MaxOpenConns,
		MaxIdleConns: d.MaxIdleConns, ConnMaxLifetime: d.ConnMaxLifetime, ConnMaxIdleTime: d.ConnMaxIdleTime}, log)
	if err != nil {
		if d.URL != "" {
			return nil, fmt.Errorf("database.url: %w", err)
		}
		return nil, fmt.Errorf("database.sqlite_path: %w", err)
	}
	return conn, nil
}

// openMigrated opens the database and, unless database.auto_migrate is
// off, applies pending migrations.
func openMigrated(ctx context.Context, cfg config.Config, log *slog.Logger) (*db.DB, error) {
	conn, err := openDB(ctx, cfg, log)
	if err != nil || !cfg.Database.AutoMigrate {
		return conn, err
	}
	if err := conn.Migrate(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("database: migrate: %w", err)
	}
	return conn, nil
}

// One-shot commands log to stderr, so their stdout is only their answer.
func migrate(ctx context.Context, cfg config.Config, action string, stdout, stderr io.Writer) error {
	log := newLogger(cfg.Log, stderr)
	conn, err := openDB(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	if action == "up" {
		if err := conn.Migrate(ctx); err != nil {
			return fmt.Errorf("migrate up: %w", err)
		}
	}
	st, err := conn.MigrationStatus(ctx)
	if err != nil {
		return fmt.Errorf("migrate status: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "VERSION\tNAME\tSTATE\tAPPLIED AT\n")
	for _, m := range st {
		state, at := "pending", "-"
		if m.Applied {
			state, at = "applied", m.AppliedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%05d\t%s\t%s\t%s\n", m.Version, m.Name, state, at)
	}
	return tw.Flush()
}

// verifyAudit walks the audit chains (one tenant's with --tenant) and
// reports the first broken link of each; exit 1 if any.
func verifyAudit(ctx context.Context, cfg config.Config, tenant string, stdout, stderr io.Writer) error {
	conn, err := openMigrated(ctx, cfg, newLogger(cfg.Log, stderr))
	if err != nil {
		return err
	}
	defer conn.Close()
	var only *string
	if tenant != "" {
		only = &tenant
	}
	breaks, err := audit.Verify(ctx, conn, only)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	for _, b := range breaks {
		chain := b.Tenant
		if chain == "" {
			chain = "(platform)"
		}
		fmt.Fprintf(stdout, "BROKEN chain %s at seq %d (row %s): %s\n", chain, b.Seq, b.ID, b.Reason)
	}
	if len(breaks) > 0 {
		return fmt.Errorf("audit verify: %d chain(s) broken", len(breaks))
	}
	fmt.Fprintln(stdout, "audit log intact")
	return nil
}

// rotateKeys makes a new signing key. Running servers pick it up on their
// own (see platform/token); tokens signed with the old key keep verifying
// until they expire.
func rotateKeys(ctx context.Context, cfg config.Config, stdout, stderr io.Writer) error {
	log := newLogger(cfg.Log, stderr)
	conn, err := openMigrated(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	tokens, err := newTokens(ctx, cfg, log, conn)
	if err != nil {
		return err
	}
	kid, err := tokens.Rotate(ctx)
	if err != nil {
		return fmt.Errorf("keys rotate: %w", err)
	}
	// Key rotation is a security event: recorded, and flushed before exit.
	w := audit.NewWriter(conn, audit.WriterConfig{}, log)
	w.Record(ctx, audit.Event{Action: "keys.rotate", Outcome: audit.Success, Actor: audit.Actor{Type: "system", ID: "cli"},
		ResourceType: "signing_key", ResourceID: kid})
	if err := w.Close(ctx); err != nil {
		return fmt.Errorf("keys rotate: audit: %w", err)
	}
	fmt.Fprintf(stdout, "new signing key %s is active\n", kid)
	return unaudited("keys rotate", w)
}

// unaudited fails a one-shot command whose change was made but whose audit
// event the writer dropped (the database refused it; the log above says
// why): the change stands, and the exit status tells the operator or script
// that the audit log does not show it.
func unaudited(command string, w *audit.Writer) error {
	if n := w.Dropped(); n > 0 {
		return fmt.Errorf("%s: the change was made, but its audit event was not written (%d dropped)", command, n)
	}
	return nil
}

// superAdmin makes the account with this email a super admin, or no
// longer one. It goes through the key-value store too, so running instances
// see the change on their next request.
func superAdmin(ctx context.Context, cfg config.Config, on bool, email string, stdout, stderr io.Writer) (err error) {
	log := newLogger(cfg.Log, stderr)
	conn, err := openMigrated(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	store, err := kv.Open(ctx, cfg.Redis.URL, cfg.Redis.Prefix)
	if err != nil {
		return fmt.Errorf("redis.url: %w", err)
	}
	defer store.Close()
	a, err := newApp(ctx, cfg, log, conn, store)
	if err != nil {
		return err
	}
	// Close writes the change's audit event; one it cannot write fails
	// the command.
	defer func() {
		if cerr := a.Close(); err != nil || cerr != nil {
			err = errors.Join(err, cerr)
			return
		}
		err = unaudited("admin super-admin", a.audit)
	}()
	u, err := a.auth.Service().UserByEmail(ctx, email)
	if err != nil {
		return fmt.Errorf("no account %q: register it first", email)
	}
	if err := a.rbac.Service().SetSuperAdmin(ctx, u.ID, on); err != nil {
		return err
	}
	state := "is now"
	if !on {
		state = "is no longer"
	}
	fmt.Fprintf(stdout, "%s %s a super admin\n", u.Email, state)
	return nil
}

// serve runs the server until ctx ends or SIGINT/SIGTERM arrives, then
// shuts down in order: stop accepting, let in-flight requests finish
// (bounded by http.shutdown_timeout), write the audit queue (bounded by
// audit.shutdown_timeout), then close the key-value store and the
// database, which in-flight requests may still have been using, and last
// write out the log's queue.
func serve(ctx context.Context, cfg config.Config, logOut io.Writer, extra []httpx.Route) (err error) {
	log, logq := newAsyncLogger(cfg.Log, logOut)
	// Deferred first, so run last: once the server has stopped and the
	// store and database are closed, every queued line is written before
	// serve returns and the process exits.
	defer logq.Close()
	started := time.Now()
	conn, err := openMigrated(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	kvCtx, cancel := context.WithTimeout(ctx, cfg.Database.ConnectTimeout)
	// go-redis logs through a package-level logger of its own (to stderr,
	// unstructured); main is the one place allowed to set such state.
	redis.SetLogger(redisLog{log})
	store, err := kv.Open(kvCtx, cfg.Redis.URL, cfg.Redis.Prefix)
	cancel()
	if err != nil {
		return fmt.Errorf("redis.url: %w", err)
	}
	defer store.Close()

	app, err := newApp(ctx, cfg, log, conn, store, extra...)
	if err != nil {
		return err
	}
	// Audit events Close could not write within audit.shutdown_timeout are
	// lost: like requests cut off by http.shutdown_timeout, that makes the
	// exit a failure, with the count on stderr.
	defer func() { err = errors.Join(err, app.Close()) }()
	if cfg.Audit.Retention > 0 {
		// Stopped, and waited for, before the database closes.
		rctx, stopRetention := context.WithCancel(context.Background())
		done := audit.StartRetention(rctx, conn, cfg.Audit.PruneInterval, cfg.Audit.Retention, log)
		defer func() { stopRetention(); <-done }()
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("http.addr: %w", err)
	}
	// Both addresses are bound before either serves: a metrics address in
	// use must stop the start before any request is taken.
	var mln net.Listener
	if cfg.Metrics.Listen != "" {
		if mln, err = net.Listen("tcp", cfg.Metrics.Listen); err != nil {
			ln.Close()
			return fmt.Errorf("metrics.listen: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           app,
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		ReadTimeout:       cfg.HTTP.ReadTimeout,
		WriteTimeout:      cfg.HTTP.WriteTimeout,
		IdleTimeout:       cfg.HTTP.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() {
		if cfg.HTTP.TLSCertFile != "" {
			served <- srv.ServeTLS(ln, cfg.HTTP.TLSCertFile, cfg.HTTP.TLSKeyFile)
		} else {
			served <- srv.Serve(ln)
		}
	}()
	if mln != nil {
		// Metrics on their own address: no token, and off the public port.
		msrv := &http.Server{Handler: app.metrics.Handler(""), ReadHeaderTimeout: 5 * time.Second}
		go msrv.Serve(mln)
		defer msrv.Close()
		log.Info("metrics listening", "addr", mln.Addr().String())
	}
	log.Info("listening", "addr", ln.Addr().String(), "database", conn.Dialect(), "kv", kvBackend(cfg),
		"tls", cfg.HTTP.TLSCertFile != "", "version", version, "startup", time.Since(started))

	// SIGHUP re-reads the gateway's routes; a bad file is logged and the
	// routes in use stay.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for waiting := true; waiting; {
		select {
		case err := <-served:
			return fmt.Errorf("http: %w", err)
		case <-hup:
			if err := app.Reload(); err != nil {
				log.Error("gateway reload refused: the routes in use stay", "error", err.Error())
			}
		case <-ctx.Done():
			waiting = false
		}
	}
	stop() // a second signal now kills at once
	log.Info("shutting down", "timeout", cfg.HTTP.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("shutdown: in-flight requests did not finish within http.shutdown_timeout (%s)", cfg.HTTP.ShutdownTimeout)
	}
	log.Info("stopped")
	return nil
}

// redisLog writes go-redis's messages (reconnects, dial failures) to slog.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis", "message", fmt.Sprintf(format, v...))
}

func kvBackend(cfg config.Config) string {
	if cfg.Redis.URL == "" {
		return "memory"
	}
	return "redis"
}
