package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"gatehouse/platform/fault"
)

// Translate returns err with the fault sentinel it stands for added to its
// chain: fault.ErrNotFound for a missing row (gorm.ErrRecordNotFound, or
// sql.ErrNoRows from a raw Scan) and fault.ErrConflict for a unique or
// primary key violation. The original error stays in the chain for the logs.
// Any other error, such as a timeout or a lost connection, is returned as it
// is; nil gives nil.
func Translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gorm.ErrRecordNotFound), errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%w: %w", fault.ErrNotFound, err)
	case errors.Is(err, gorm.ErrDuplicatedKey):
		// Both dialects report unique violations as gorm.ErrDuplicatedKey
		// because Open sets TranslateError.
		return fmt.Errorf("%w: %w", fault.ErrConflict, err)
	}
	return err
}

// unavailableError is a database that cannot be reached. Its message is
// written by this package so that it holds no password; the driver's error
// stays in the chain next to fault.ErrUnavailable.
type unavailableError struct {
	msg   string
	cause error
}

func (e *unavailableError) Error() string   { return e.msg }
func (e *unavailableError) Unwrap() []error { return []error{fault.ErrUnavailable, e.cause} }

// connectError returns the error of Open failing to reach the database at
// where, such as "cannot connect to postgres at db:5432: dial tcp ...".
func connectError(dialect, where, rawURL string, err error) error {
	return &unavailableError{
		msg:   fmt.Sprintf("cannot connect to %s at %s: %s", dialect, where, shortCause(err, rawURL)),
		cause: err,
	}
}

// shortCause returns the part of a driver's error that names the problem,
// on one line and without the password of rawURL. pgx's own messages repeat
// the user and database before the cause and can run over several lines.
func shortCause(err error, rawURL string) string {
	var (
		pgErr  *pgconn.PgError
		dnsErr *net.DNSError
		opErr  *net.OpError
		msg    string
	)
	switch {
	case errors.As(err, &pgErr):
		msg = pgErr.Message + " (SQLSTATE " + pgErr.Code + ")"
	case errors.As(err, &dnsErr):
		msg = dnsErr.Error()
	case errors.As(err, &opErr):
		msg = opErr.Error()
	case errors.Is(err, context.DeadlineExceeded):
		msg = "timed out"
	case errors.Is(err, context.Canceled):
		msg = "canceled"
	default:
		msg = err.Error()
	}
	// The drivers do not print passwords, but nothing here should depend
	// on that.
	if u, perr := url.Parse(rawURL); perr == nil {
		for _, pw := range passwords(u) {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return strings.Join(strings.Fields(msg), " ")
}
