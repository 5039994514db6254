package db_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"gatehouse/platform/db"
	"gatehouse/platform/fault"
	"gatehouse/platform/testenv"
)

// meta is a row of the meta table made by migration 00001.
type meta struct {
	Key       string `gorm:"primaryKey"`
	Value     string
	UpdatedAt time.Time
}

func (meta) TableName() string { return "meta" }

// TestSQLite runs the contract suite on a SQLite file per test.
func TestSQLite(t *testing.T) {
	t.Parallel()
	testContract(t, db.SQLite, func(t *testing.T) db.Config {
		return db.Config{SQLitePath: filepath.Join(t.TempDir(), "gatehouse.db")}
	})
}

// TestPostgres runs the contract suite on a PostgreSQL schema per test.
func TestPostgres(t *testing.T) {
	t.Parallel()
	testenv.Need(t, testenv.EnvPostgres)
	testContract(t, db.Postgres, func(t *testing.T) db.Config {
		return db.Config{URL: testenv.PostgresURL(t), MaxOpenConns: 8}
	})
}

// TestPoolKeepsBurstConnections shows that the connections a burst of
// queries opened serve the next burst, rather than being closed as it ends
// and opened again: on PostgreSQL each new one is a new server process.
// The idle limit is left unset, as in the default configuration.
func TestPoolKeepsBurstConnections(t *testing.T) {
	t.Parallel()
	testenv.Need(t, testenv.EnvPostgres)
	const size, bursts = 8, 5
	ctx := context.Background()
	d, err := db.Open(ctx, db.Config{URL: testenv.PostgresURL(t), MaxOpenConns: size}, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer d.Close()
	var mu sync.Mutex
	pids := map[int]bool{}
	for range bursts {
		var wg sync.WaitGroup
		for range size {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var pid int
				// The sleep holds each connection, so a burst needs all of them.
				if err := d.SQL().QueryRowContext(ctx, "SELECT pg_backend_pid() FROM pg_sleep(0.05)").Scan(&pid); err != nil {
					t.Errorf("query: %v", err)
					return
				}
				mu.Lock()
				pids[pid] = true
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	if len(pids) > size {
		t.Errorf("%d bursts of %d queries ran on %d server processes, want at most %d: the pool closed and reopened connections",
			bursts, size, len(pids), size)
	}
	if n := d.SQL().Stats().MaxIdleClosed; n != 0 {
		t.Errorf("the pool closed %d connections for being over its idle limit, want 0", n)
	}
}

// testContract is the behaviour every backend must show. newConfig returns
// the configuration of a fresh, empty database for one test.
func testContract(t *testing.T, dialect string, newConfig func(t *testing.T) db.Config) {
	// open returns a fresh database; migrated says whether to migrate it.
	open := func(t *testing.T, migrated bool) *db.DB {
		t.Helper()
		ctx := context.Background()
		d, err := db.Open(ctx, newConfig(t), nil)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() {
			if err := d.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		if migrated {
			if err := d.Migrate(ctx); err != nil {
				t.Fatalf("Migrate: %v", err)
			}
		}
		return d
	}

	t.Run("Dialect", func(t *testing.T) {
		t.Parallel()
		if got := open(t, false).Dialect(); got != dialect {
			t.Errorf("Dialect() = %q, want %q", got, dialect)
		}
	})

	t.Run("ScopedConfinesToTheTenant", func(t *testing.T) {
		t.Parallel()
		d := open(t, true)
		ctx := context.Background()
		// A tenant-owned table of the test's own (business modules bring theirs).
		if err := d.Conn(ctx).Exec("CREATE TABLE notes (id integer PRIMARY KEY, tenant_id text NOT NULL, body text NOT NULL)").Error; err != nil {
			t.Fatal(err)
		}
		for i, tid := range []string{"t1", "t1", "t2"} {
			if err := d.Conn(ctx).Exec("INSERT INTO notes (id, tenant_id, body) VALUES (?, ?, ?)", i+1, tid, "n").Error; err != nil {
				t.Fatal(err)
			}
		}
		var ids []int
		t1 := db.WithTenant(ctx, "t1")
		if err := d.Scoped(t1).Table("notes").Order("id").Pluck("id", &ids).Error; err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(ids) != "[1 2]" {
			t.Errorf("tenant t1 sees notes %v, want [1 2]", ids)
		}
		// Another tenant's row by id: not found.
		var body string
		err := d.Scoped(t1).Table("notes").Where("id = ?", 3).Select("body").Row().Scan(&body)
		if !errors.Is(db.Translate(err), fault.ErrNotFound) {
			t.Errorf("t1 reading t2's note: %v, want not found", err)
		}
		// Updates and deletes are confined too.
		if res := d.Scoped(t1).Table("notes").Where("id = ?", 3).Update("body", "stolen"); res.Error != nil || res.RowsAffected != 0 {
			t.Errorf("t1 updating t2's note: %v rows %d", res.Error, res.RowsAffected)
		}
		// No tenant in the context: every query fails, none runs unscoped.
		if err := d.Scoped(ctx).Table("notes").Pluck("id", &ids).Error; !errors.Is(err, db.ErrNoTenant) {
			t.Errorf("query without a tenant: %v, want ErrNoTenant", err)
		}
		// An Or stays inside the tenant: tenant_id = ? AND (a OR b), for
		// reads, counts, rows, updates and deletes alike.
		ids = nil
		if err := d.Scoped(t1).Table("notes").Where("id = ?", 1).Or("id = ?", 3).Order("id").Pluck("id", &ids).Error; err != nil || fmt.Sprint(ids) != "[1]" {
			t.Errorf("t1 reading note 1 or note 3: %v %v, want [1]", err, ids)
		}
		var n int64
		if err := d.Scoped(t1).Table("notes").Where("id = ?", 3).Or("body = ?", "n").Count(&n).Error; err != nil || n != 2 {
			t.Errorf("t1 counting note 3 or body n: %v %d, want t1's 2", err, n)
		}
		if err := d.Scoped(t1).Table("notes").Or("id = ?", 3).Select("body").Row().Scan(&body); !errors.Is(db.Translate(err), fault.ErrNotFound) {
			t.Errorf("t1 reading by a lone Or: %v %q, want not found", err, body)
		}
		ids = nil
		if err := d.Scoped(t1).Table("notes").Or("id = ? OR id = ?", 1, 3).Order("id").Pluck("id", &ids).Error; err != nil || fmt.Sprint(ids) != "[1]" {
			t.Errorf("t1 reading by a lone Or of two ids: %v %v, want [1]", err, ids)
		}
		ids = nil
		if err := d.Scoped(t1).Table("notes").Where("id = 3 OR id = 1").Not("id = ?", 2).Order("id").Pluck("id", &ids).Error; err != nil || fmt.Sprint(ids) != "[1]" {
			t.Errorf("t1 reading by an OR in the SQL and a Not: %v %v, want [1]", err, ids)
		}
		if res := d.Scoped(t1).Table("notes").Where("id = ?", 1).Or("id = ?", 3).Update("body", "stolen"); res.Error != nil || res.RowsAffected != 1 {
			t.Errorf("t1 updating note 1 or note 3: %v rows %d, want 1", res.Error, res.RowsAffected)
		}
		if res := d.Scoped(t1).Table("notes").Where("id = ?", 2).Or("id = ?", 3).Delete(nil); res.Error != nil || res.RowsAffected != 1 {
			t.Errorf("t1 deleting note 2 or note 3: %v rows %d, want 1", res.Error, res.RowsAffected)
		}
		if err := d.Conn(ctx).Table("notes").Where("id = ?", 3).Select("body").Row().Scan(&body); err != nil || body != "n" {
			t.Errorf("t2's note after t1's writes: %v %q, want it untouched", err, body)
		}
		// Raw and Exec carry their own SQL: refused, never run unconfined.
		if err := d.Scoped(t1).Exec("DELETE FROM notes").Error; !errors.Is(err, db.ErrRawScoped) {
			t.Errorf("Exec on a scoped handle: %v, want ErrRawScoped", err)
		}
		if err := d.Scoped(t1).Raw("SELECT id FROM notes").Scan(&ids).Error; !errors.Is(err, db.ErrRawScoped) {
			t.Errorf("Raw on a scoped handle: %v, want ErrRawScoped", err)
		}
		if err := d.Conn(ctx).Table("notes").Count(&n).Error; err != nil || n != 2 {
			t.Errorf("%d notes left (%v), want 2", n, err)
		}
	})

	// A cancelled request's query: on SQLite it runs to its end (watching
	// the context would cost two goroutines a query, see DB.uncancelled);
	// on PostgreSQL the cancellation stops it. A transaction likewise.
	t.Run("CancelledContext", func(t *testing.T) {
		t.Parallel()
		d := open(t, true)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var n int
		qerr := d.Conn(ctx).Raw("SELECT 1").Row().Scan(&n)
		txErr := d.InTx(ctx, func(ctx context.Context) error {
			return d.Conn(ctx).Create(&meta{Key: "cancelled", Value: "v", UpdatedAt: time.Now()}).Error
		})
		var rows int64
		if err := d.Conn(context.Background()).Model(&meta{}).Where("key = ?", "cancelled").Count(&rows).Error; err != nil {
			t.Fatal(err)
		}
		if dialect == db.SQLite {
			if qerr != nil || n != 1 || txErr != nil || rows != 1 {
				t.Errorf("SQLite under a cancelled context: query %v (%d), transaction %v, %d rows; want both to run", qerr, n, txErr, rows)
			}
			return
		}
		if !errors.Is(qerr, context.Canceled) || !errors.Is(txErr, context.Canceled) || rows != 0 {
			t.Errorf("PostgreSQL under a cancelled context: query %v, transaction %v, %d rows; want both cancelled", qerr, txErr, rows)
		}
	})

	t.Run("Ping", func(t *testing.T) {
		t.Parallel()
		d := open(t, false)
		if err := d.Ping(context.Background()); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		d.Close()
		err := d.Ping(context.Background())
		if !errors.Is(err, fault.ErrUnavailable) {
			t.Errorf("Ping after Close = %v, want an error wrapping fault.ErrUnavailable", err)
		}
	})

	t.Run("StatusBeforeAndAfterMigrate", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		d := open(t, false)
		before, err := d.MigrationStatus(ctx)
		if err != nil {
			t.Fatalf("MigrationStatus: %v", err)
		}
		if len(before) == 0 || before[0] != (db.MigrationStatus{Version: 1, Name: "00001_meta.sql"}) {
			t.Fatalf("status before Migrate = %+v, want 00001_meta.sql first, pending, no time", before)
		}
		for i, s := range before {
			if s.Applied {
				t.Errorf("before Migrate, %s is applied", s.Name)
			}
			if i > 0 && s.Version <= before[i-1].Version {
				t.Errorf("status not sorted by version: %d after %d", s.Version, before[i-1].Version)
			}
		}

		start := time.Now()
		if err := d.Migrate(ctx); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		after, err := d.MigrationStatus(ctx)
		if err != nil {
			t.Fatalf("MigrationStatus: %v", err)
		}
		if len(after) != len(before) {
			t.Fatalf("status lists %d migrations after Migrate, %d before", len(after), len(before))
		}
		for _, s := range after {
			if !s.Applied {
				t.Errorf("after Migrate, %s is pending", s.Name)
			}
			// SQLite records whole seconds; a wrong time zone would be
			// off by hours.
			if s.AppliedAt.Before(start.Add(-2*time.Second)) || s.AppliedAt.After(time.Now().Add(2*time.Second)) {
				t.Errorf("%s applied at %v, want about %v", s.Name, s.AppliedAt, start.UTC())
			}
		}
		var n int64
		if err := d.Conn(ctx).Model(&meta{}).Count(&n).Error; err != nil || n != 0 {
			t.Errorf("count of meta after Migrate = %d, %v; want 0, nil", n, err)
		}
	})

	t.Run("MigrateIsIdempotent", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		d := open(t, true)
		first, err := d.MigrationStatus(ctx)
		if err != nil {
			t.Fatalf("MigrationStatus: %v", err)
		}
		if err := d.Conn(ctx).Create(&meta{Key: "kept", Value: "v"}).Error; err != nil {
			t.Fatalf("insert: %v", err)
		}
		if err := d.Migrate(ctx); err != nil {
			t.Fatalf("second Migrate: %v", err)
		}
		second, err := d.MigrationStatus(ctx)
		if err != nil {
			t.Fatalf("MigrationStatus: %v", err)
		}
		if len(second) != len(first) || !second[0].AppliedAt.Equal(first[0].AppliedAt) {
			t.Errorf("status changed by a second Migrate: %+v, then %+v", first, second)
		}
		var got meta
		if err := d.Conn(ctx).First(&got, "key = ?", "kept").Error; err != nil {
			t.Errorf("row written before the second Migrate: %v", err)
		}
	})

	t.Run("DuplicateKeyIsConflict", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		d := open(t, true)
		if err := d.Conn(ctx).Create(&meta{Key: "k", Value: "one"}).Error; err != nil {
			t.Fatalf("first insert: %v", err)
		}
		err := d.Conn(ctx).Create(&meta{Key: "k", Value: "two"}).Error
		if !errors.Is(err, gorm.ErrDuplicatedKey) {
			t.Errorf("second insert = %v, want gorm.ErrDuplicatedKey", err)
		}
		terr := db.Translate(err)
		if !errors.Is(terr, fault.ErrConflict) {
			t.Errorf("Translate(%v) = %v, want fault.ErrConflict", err, terr)
		}
		if !errors.Is(terr, err) {
			t.Errorf("Translate(%v) = %v, lost the original error", err, terr)
		}
		var got meta
		if err := d.Conn(ctx).First(&got, "key = ?", "k").Error; err != nil || got.Value != "one" {
			t.Errorf("after the rejected insert, k = %q, %v; want \"one\"", got.Value, err)
		}
	})

	t.Run("MissingKeyIsNotFound", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		d := open(t, true)
		var got meta
		err := d.Conn(ctx).First(&got, "key = ?", "absent").Error
		if terr := db.Translate(err); !errors.Is(terr, fault.ErrNotFound) || !errors.Is(terr, gorm.ErrRecordNotFound) {
			t.Errorf("Translate(%v) = %v, want fault.ErrNotFound wrapping gorm.ErrRecordNotFound", err, terr)
		}
		// A raw Scan reports sql.ErrNoRows instead.
		var value string
		err = d.Conn(ctx).Raw("SELECT value FROM meta WHERE key = ?", "absent").Row().Scan(&value)
		if terr := db.Translate(err); !errors.Is(terr, fault.ErrNotFound) {
			t.Errorf("Translate(%v) = %v, want fault.ErrNotFound", err, terr)
		}
	})

	t.Run("InTxCommits", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		d := open(t, true)
		err := d.InTx(ctx, func(ctx context.Context) error {
			if err := d.Conn(ctx).Create(&meta{Key: "a", Value: "1"}).Error; err != nil {
				return err
			}
			if n := count(t, d, ctx, "a"); n != 1 {
				t.Errorf("inside InTx, Conn(ctx) sees %d rows, want 1", n)
			}
			// A context without the transaction reads committed data
			// only.
			if n := count(t, d, context.Background(), "a"); n != 0 {
				t.Errorf("outside the transaction, %d rows seen before commit, want 0", n)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("InTx: %v", err)
		}
		if n := count(t, d, ctx, "a"); n != 1 {
			t.Errorf("after commit, %d rows, want 1", n)
		}
	})

	t.Run("InTxRollsBackOnError", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		d := open(t, true)
		errStop := errors.New("stop")
		err := d.InTx(ctx, func(ctx context.Context) error {
			if err := d.Conn(ctx).Create(&meta{Key: "a", Value: "1"}).Error; err != nil {
				return err
			}
			return errStop
		})
		if !errors.Is(err, errStop) {
			t.Errorf("InTx = %v, want fn's error", err)
		}
		if n := count(t, d, ctx, "a"); n != 0 {
			t.Errorf("after rollback, %d rows, want 0", n)
		}
	})

	t.Run("InTxRollsBackOnPanic", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		d := open(t, true)
		func() {
			defer func() {
				if recover() == nil {
					t.Error("InTx swallowed fn's panic")
				}
			}()
			d.InTx(ctx, func(ctx context.Context) error {
				d.Conn(ctx).Create(&meta{Key: "a", Value: "1"})
				panic("boom")
			})
		}()
		if n := count(t, d, ctx, "a"); n != 0 {
			t.Errorf("after a panic, %d rows, want 0", n)
		}
	})

	t.Run("NestedInTxJoinsOuter", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		d := open(t, true)
		errStop := errors.New("stop")
		err := d.InTx(ctx, func(ctx context.Context) error {
			if err := d.Conn(ctx).Create(&meta{Key: "outer", Value: "1"}).Error; err != nil {
				return err
			}
			err := d.InTx(ctx, func(ctx context.Context) error {
				if n := count(t, d, ctx, "outer"); n != 1 {
					t.Errorf("inner InTx sees %d of the outer rows, want 1", n)
				}
				return d.Conn(ctx).Create(&meta{Key: "inner", Value: "2"}).Error
			})
			if err != nil {
				return err
			}
			return errStop
		})
		if !errors.Is(err, errStop) {
			t.Fatalf("InTx = %v, want the outer fn's error", err)
		}
		// The inner InTx returned nil but was part of the outer
		// transaction, so the outer rollback undid it.
		if n := count(t, d, ctx, "outer") + count(t, d, ctx, "inner"); n != 0 {
			t.Errorf("after the outer rollback, %d rows, want 0", n)
		}
	})

	t.Run("ConcurrentReadThenWriteTx", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		d := open(t, true)
		// Each transaction reads and then writes: on SQLite, a deferred
		// transaction would fail with SQLITE_BUSY here when another
		// committed in between.
		const workers = 8
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for i := range workers {
			wg.Go(func() {
				errs <- d.InTx(ctx, func(ctx context.Context) error {
					var n int64
					if err := d.Conn(ctx).Model(&meta{}).Count(&n).Error; err != nil {
						return err
					}
					time.Sleep(5 * time.Millisecond)
					return d.Conn(ctx).Create(&meta{Key: string(rune('a' + i)), Value: "v"}).Error
				})
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("InTx: %v", err)
			}
		}
		var n int64
		if err := d.Conn(ctx).Model(&meta{}).Count(&n).Error; err != nil || n != workers {
			t.Errorf("rows = %d, %v; want %d", n, err, workers)
		}
	})
}

// count returns how many meta rows with key the handle for ctx sees.
func count(t *testing.T, d *db.DB, ctx context.Context, key string) int64 {
	t.Helper()
	var n int64
	if err := d.Conn(ctx).Model(&meta{}).Where("key = ?", key).Count(&n).Error; err != nil {
		t.Fatalf("count %q: %v", key, err)
	}
	return n
}

func TestTranslate(t *testing.T) {
	t.Parallel()
	if err := db.Translate(nil); err != nil {
		t.Errorf("Translate(nil) = %v, want nil", err)
	}
	other := context.DeadlineExceeded
	if err := db.Translate(other); err != other {
		t.Errorf("Translate(%v) = %v, want it unchanged", other, err)
	}
}

func TestOpenSQLiteCreatesFolder(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "gatehouse.db")
	d, err := db.Open(context.Background(), db.Config{SQLitePath: path, MaxOpenConns: 20}, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer d.Close()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatalf("folder: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("folder mode = %v, want 0700", perm)
	}
	if fi, err := os.Stat(path); err != nil {
		t.Errorf("database file: %v", err)
	} else if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("database file mode = %v, want 0600: it will hold secrets", perm)
	}
	if got := d.SQL().Stats().MaxOpenConnections; got != 4 {
		t.Errorf("SQLite MaxOpenConnections = %d, want it capped at 4", got)
	}
}

func TestOpenSQLitePragmas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, err := db.Open(ctx, db.Config{SQLitePath: filepath.Join(t.TempDir(), "x.db")}, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer d.Close()
	for pragma, want := range map[string]string{
		"journal_mode": "wal",
		"foreign_keys": "1",
		"busy_timeout": "5000",
	} {
		var got string
		if err := d.Conn(ctx).Raw("PRAGMA " + pragma).Row().Scan(&got); err != nil || got != want {
			t.Errorf("PRAGMA %s = %q, %v; want %q", pragma, got, err, want)
		}
	}
}

func TestOpenUnreachablePostgres(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	d, err := db.Open(ctx, db.Config{URL: "postgres://user:secretpw@127.0.0.1:1/x"}, nil)
	if err == nil {
		d.Close()
		t.Fatal("Open succeeded on a closed port")
	}
	if elapsed := time.Since(start); elapsed > 4*time.Second {
		t.Errorf("Open took %v, want it bounded by ctx", elapsed)
	}
	msg := err.Error()
	if strings.Contains(msg, "secretpw") {
		t.Errorf("error shows the password: %s", msg)
	}
	if !strings.HasPrefix(msg, "cannot connect to postgres at 127.0.0.1:1: ") || strings.Contains(msg, "\n") {
		t.Errorf("error = %q, want one line naming postgres and 127.0.0.1:1", msg)
	}
	if !errors.Is(err, fault.ErrUnavailable) {
		t.Errorf("error %v does not wrap fault.ErrUnavailable", err)
	}
}

func TestOpenBadURL(t *testing.T) {
	t.Parallel()
	for _, url := range []string{
		"mysql://user:secretpw@127.0.0.1/x",
		"host=127.0.0.1 user=u password=secretpw",
		"postgres://user:secret%zzpw@127.0.0.1/x",
	} {
		d, err := db.Open(context.Background(), db.Config{URL: url}, nil)
		if err == nil {
			d.Close()
			t.Errorf("Open(%q) succeeded", url)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, "secret") || strings.Contains(msg, "zz") {
			t.Errorf("Open(%q) error shows the password: %s", url, msg)
		}
	}
	_, err := db.Open(context.Background(), db.Config{URL: "mysql://h/x"}, nil)
	if err == nil || !strings.Contains(err.Error(), `unsupported database URL scheme "mysql"`) {
		t.Errorf("Open(mysql://h/x) = %v, want it to name the scheme", err)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"postgres://user:secretpw@db:5432/gh?sslmode=disable", "postgres://user:xxxxx@db:5432/gh?sslmode=disable"},
		{"postgresql://u:p%40ss%2Fw@db/gh", "postgresql://u:xxxxx@db/gh"},
		{"postgres://user@db/gh", "postgres://user@db/gh"},
		{"postgres://db/gh?password=secretpw&user=u", "postgres://db/gh?password=xxxxx&user=u"},
		{"postgres://user:secret%zzpw@db/gh", "xxxxx"},
		{"host=db password=secretpw", "xxxxx"},
	} {
		if got := db.Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
