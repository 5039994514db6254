package db

import (
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"slices"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"gatehouse/migrations"
)

// MigrationStatus describes one migration and whether it has been applied.
type MigrationStatus struct {
	Version   int64
	Name      string    // the file name, such as "00001_meta.sql"
	Applied   bool      // recorded in the database as applied
	AppliedAt time.Time // when it was applied, in UTC; zero if not applied
}

// Migrate applies every migration not yet applied, in version order, and
// logs each one. With none pending it does nothing, so it is safe to call at
// every start. On PostgreSQL, instances that migrate at the same time take
// turns, one schema at a time.
func (d *DB) Migrate(ctx context.Context) error {
	p, err := d.provider(ctx)
	if err != nil {
		return err
	}
	results, err := p.Up(ctx)
	for _, r := range results {
		if r.Error == nil {
			d.log.InfoContext(ctx, "database migration applied",
				"version", r.Source.Version, "name", path.Base(r.Source.Path), "duration", r.Duration)
		}
	}
	if err != nil {
		return fmt.Errorf("migrate %s database: %w", d.dialect, err)
	}
	return nil
}

// MigrationStatus returns every migration Gatehouse knows, sorted by version,
// each with whether and when it was applied. It creates goose's version table
// if it is missing, but applies nothing.
func (d *DB) MigrationStatus(ctx context.Context) ([]MigrationStatus, error) {
	p, err := d.provider(ctx)
	if err != nil {
		return nil, err
	}
	list, err := p.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("read %s migration status: %w", d.dialect, err)
	}
	out := make([]MigrationStatus, 0, len(list))
	for _, s := range list {
		out = append(out, MigrationStatus{
			Version:   s.Source.Version,
			Name:      path.Base(s.Source.Path),
			Applied:   s.State == goose.StateApplied,
			AppliedAt: s.AppliedAt.UTC(),
		})
	}
	slices.SortFunc(out, func(a, b MigrationStatus) int { return cmp.Compare(a.Version, b.Version) })
	return out, nil
}

// provider returns a goose provider for d's dialect and migrations. It is
// made per call: it is cheap, and on PostgreSQL its lock depends on the
// current schema.
func (d *DB) provider(ctx context.Context) (*goose.Provider, error) {
	files, err := fs.Sub(migrations.FS, d.dialect)
	if err != nil {
		return nil, fmt.Errorf("migrations for %s: %w", d.dialect, err)
	}
	opts := []goose.ProviderOption{
		// Only the embedded files: never Go migrations registered in
		// goose's package-level registry.
		goose.WithDisableGlobalRegistry(true),
		// Without a logger goose would print to the standard logger.
		goose.WithSlog(d.log),
	}
	dialect := goose.DialectSQLite3
	if d.dialect == Postgres {
		dialect = goose.DialectPostgres
		locker, err := d.migrationLock(ctx)
		if err != nil {
			return nil, err
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(dialect, d.sql, files, opts...)
	if err != nil {
		return nil, fmt.Errorf("migrations for %s: %w", d.dialect, err)
	}
	return p, nil
}

// migrationLock returns an advisory lock that lets one instance at a time
// migrate the current schema. Its id is derived from the schema name because
// goose's version table lives in that schema: instances on different schemas
// of one database (tests, among others) need not wait for each other. It is
// retried every second for up to five minutes.
func (d *DB) migrationLock(ctx context.Context) (lock.SessionLocker, error) {
	var schema string
	if err := d.sql.QueryRowContext(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return nil, fmt.Errorf("read current schema: %w", err)
	}
	h := fnv.New64a()
	h.Write([]byte("gatehouse migrations " + schema))
	return lock.NewPostgresSessionLocker(
		lock.WithLockID(int64(h.Sum64())),
		lock.WithLockTimeout(1, 300),
	)
}
