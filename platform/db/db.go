// Package db opens Gatehouse's database and applies its migrations.
//
// The database is a SQLite file by default, or PostgreSQL when a postgres://
// URL is configured. Stores use gorm through a *DB: Conn returns the handle to
// query with, and InTx runs a function in a transaction that travels in the
// context, so a store method called inside InTx joins the transaction without
// knowing it. Translate turns gorm's errors into the fault sentinels.
//
// Nothing here logs SQL parameter values or prints to stdout: gorm and goose
// report to the *slog.Logger given to Open.
package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/glebarez/sqlite"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
)

// The dialects Dialect reports.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// sqliteMaxOpenConns bounds the SQLite pool. SQLite admits one writer at a
// time: a connection waiting to write polls the file lock in SQLite's busy
// handler rather than queueing in database/sql, and if it waits longer than
// busy_timeout it fails with SQLITE_BUSY. A small pool keeps that queue short
// while still letting readers run beside the writer, as WAL allows. It is not
// 1 because then a query made outside a running transaction (a context that
// does not carry it) would wait forever for the transaction's connection.
const sqliteMaxOpenConns = 4

// sqlitePragmas is the query string of every SQLite connection. busy_timeout
// makes a writer wait for the lock instead of failing at once; WAL lets
// readers and one writer work together; foreign keys are off in SQLite unless
// asked for. _txlock=immediate takes the write lock at BEGIN: a transaction
// that reads and then writes could otherwise fail with SQLITE_BUSY when
// another writer got in between, which busy_timeout cannot wait out. (The
// driver stops reading parameters after _time_format, so that one must not be
// added here; its default time format is already SQLite's own.)
const sqlitePragmas = "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=immediate"

// Config says which database to open and how to size its connection pool.
type Config struct {
	// URL is a postgres:// or postgresql:// URL. Empty means SQLite.
	URL string
	// SQLitePath is the SQLite file used when URL is empty. Its folder is
	// created if missing.
	SQLitePath string
	// Pool settings; zero keeps database/sql's default, but for
	// MaxIdleConns, where zero means as many as MaxOpenConns (see Open).
	// On SQLite MaxOpenConns is at most 4.
	MaxOpenConns    int
	MaxIdleConns    int
	ConnMaxLifetime time.Duration
	ConnMaxIdleTime time.Duration
}

// DB is an open database. It is safe for concurrent use.
type DB struct {
	gorm    *gorm.DB
	sql     *sql.DB
	dialect string
	log     *slog.Logger
}

// txKey is the context key of the transaction InTx runs; it holds the *DB so
// that a transaction of one database is never used for another.
type txKey struct{ db *DB }

// Open opens the database cfg names and checks, within ctx, that it answers.
// With an empty URL it opens (creating if needed) the SQLite file at
// SQLitePath, and at most 4 connections to it. It returns an error for any
// URL scheme other than postgres or postgresql. A database that cannot be
// reached gives an error that wraps fault.ErrUnavailable. Errors are one line
// and never contain the URL's password.
//
// log receives slow queries and the progress of migrations; nil discards
// them.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var (
		dialector gorm.Dialector
		dialect   string
		where     string
	)
	if cfg.URL == "" {
		path := cfg.SQLitePath
		if path == "" {
			return nil, errors.New("no database configured: both the database URL and the SQLite path are empty")
		}
		// The driver reads what follows "?" as its own parameters.
		if strings.Contains(path, "?") {
			return nil, fmt.Errorf("SQLite path %q must not contain '?'", path)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("cannot create the folder of SQLite database %s: %w", path, err)
		}
		// The driver would create the file world-readable; it will hold
		// password hashes and signing keys, so make it owner-only first.
		if f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600); err != nil {
			return nil, fmt.Errorf("cannot create SQLite database %s: %w", path, err)
		} else {
			f.Close()
		}
		dialector = sqlite.Open(path + "?" + sqlitePragmas)
		dialect, where = SQLite, path
		if cfg.MaxOpenConns <= 0 || cfg.MaxOpenConns > sqliteMaxOpenConns {
			cfg.MaxOpenConns = sqliteMaxOpenConns
		}
	} else {
		u, err := url.Parse(cfg.URL)
		if err != nil {
			// url.Parse quotes the URL, or the part it could not read, and
			// either may hold the password: say only what is wrong.
			return nil, errors.New("database URL is not a valid URL (is a special character in the password not percent-encoded?)")
		}
		if u.Scheme != "postgres" && u.Scheme != "postgresql" {
			return nil, fmt.Errorf("unsupported database URL scheme %q: want postgres:// or postgresql://, or no URL for SQLite", u.Scheme)
		}
		dialector = postgres.Open(withUTC(u))
		dialect, where = Postgres, u.Host
		if where == "" {
			where = "the default host"
		}
	}

	g, err := gorm.Open(dialector, &gorm.Config{
		Logger:         gormLogger{log: log, slow: slowQuery},
		TranslateError: true,
		NowFunc:        func() time.Time { return time.Now().UTC() },
		// gorm's own ping takes no context; Open pings below with ctx.
		DisableAutomaticPing: true,
	})
	if err != nil {
		return nil, connectError(dialect, where, cfg.URL, err)
	}
	if err := registerScope(g); err != nil {
		return nil, err
	}
	sqlDB, err := g.DB()
	if err != nil {
		return nil, connectError(dialect, where, cfg.URL, err)
	}
	// The pool keeps every connection it opened while it is idle, until
	// ConnMaxIdleTime, unless MaxIdleConns asks for fewer. Below the open
	// limit, the connections a burst opened beyond the idle limit are
	// closed as it ends and opened again at the next: on PostgreSQL each
	// is a new server process, and under load that churn cut /v1/auth/me
	// to a fifth of its throughput (README, Performance). A larger idle
	// limit database/sql lowers to the open one itself.
	if cfg.MaxOpenConns > 0 && cfg.MaxIdleConns <= 0 {
		cfg.MaxIdleConns = cfg.MaxOpenConns
	}
	if cfg.MaxOpenConns > 0 {
		sqlDB.SetMaxOpenConns(cfg.MaxOpenConns)
	}
	if cfg.MaxIdleConns > 0 {
		sqlDB.SetMaxIdleConns(cfg.MaxIdleConns)
	}
	if cfg.ConnMaxLifetime > 0 {
		sqlDB.SetConnMaxLifetime(cfg.ConnMaxLifetime)
	}
	if cfg.ConnMaxIdleTime > 0 {
		sqlDB.SetConnMaxIdleTime(cfg.ConnMaxIdleTime)
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		sqlDB.Close()
		return nil, connectError(dialect, where, cfg.URL, err)
	}
	return &DB{gorm: g, sql: sqlDB, dialect: dialect, log: log}, nil
}

// withUTC returns u as a DSN whose sessions use the UTC time zone, unless u
// sets one. Gatehouse keeps times in UTC, and "timestamp" columns hold no
// zone: without this, now() in SQL (goose's applied-at time among others)
// would be written in the server's zone and read back as if it were UTC.
func withUTC(u *url.URL) string {
	q := u.Query()
	for k := range q {
		if strings.EqualFold(k, "timezone") || k == "time_zone" {
			return u.String()
		}
	}
	q.Set("timezone", "UTC")
	c := *u
	c.RawQuery = q.Encode()
	return c.String()
}

// Dialect returns SQLite or Postgres.
func (d *DB) Dialect() string { return d.dialect }

// Conn returns the handle to query with: the transaction ctx carries, if InTx
// put one there, else the database. The handle runs its queries under ctx
// (on SQLite, without its cancellation: see uncancelled).
func (d *DB) Conn(ctx context.Context) *gorm.DB {
	if tx, ok := ctx.Value(txKey{d}).(*gorm.DB); ok {
		return tx.WithContext(d.uncancelled(ctx))
	}
	return d.gorm.WithContext(d.uncancelled(ctx))
}

// uncancelled returns ctx, on SQLite without its cancellation and deadline
// (its values stay). For a context that can be cancelled, database/sql
// starts a goroutine per query and per transaction to watch it, and the
// SQLite driver one more per statement to interrupt it. On a loaded server
// with one P those goroutines, four for a request of two queries, queued
// behind one another, and net/http's per-request goroutine queued behind
// them: /v1/auth/me had a p99 near 190 ms at a p50 of 6 ms. The driver runs
// each statement on the caller's goroutine, and Gatehouse's statements are
// short, so a request that is cancelled finishes its statement instead; a
// write waiting for SQLite's lock still gives up after busy_timeout.
// PostgreSQL keeps the cancellation: there it stops work on the server.
func (d *DB) uncancelled(ctx context.Context) context.Context {
	if d.dialect == SQLite && ctx.Done() != nil {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

// InTx runs fn in a transaction, which fn reaches through Conn with the
// context it is given. The transaction commits if fn returns nil and rolls
// back if fn returns an error or panics; InTx returns fn's error.
//
// If ctx already carries a transaction, fn joins it: no new transaction or
// savepoint is made, and fn's error undoes its work only if the outer
// function returns that error too.
func (d *DB) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	if _, ok := ctx.Value(txKey{d}).(*gorm.DB); ok {
		return fn(ctx)
	}
	return d.gorm.WithContext(d.uncancelled(ctx)).Transaction(func(tx *gorm.DB) error {
		return fn(context.WithValue(ctx, txKey{d}, tx))
	})
}

// Ping reports whether the database answers within ctx. Its error wraps
// fault.ErrUnavailable.
func (d *DB) Ping(ctx context.Context) error {
	if err := d.sql.PingContext(ctx); err != nil {
		return &unavailableError{msg: d.dialect + " does not answer: " + shortCause(err, ""), cause: err}
	}
	return nil
}

// SQL returns the database/sql handle under gorm, for tools that need one.
// Queries made through it do not join InTx's transactions.
func (d *DB) SQL() *sql.DB { return d.sql }

// Close closes the database. Queries still running fail.
func (d *DB) Close() error { return d.sql.Close() }
