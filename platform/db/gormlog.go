package db

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm/logger"
)

// slowQuery is how long a statement runs before it is logged.
const slowQuery = 200 * time.Millisecond

// gormLogger is gorm's logger. gorm's default one prints to stdout, with the
// statements' parameter values in the SQL; this one writes to slog, and only
// two things: slow statements at warn level and gorm's own remarks at debug
// level. A slow statement is named by the file and line that ran it, not by
// its SQL: gorm hands some statements (those run by Scan) to Trace with their
// values already written in, and the values may be secrets. A failed
// statement is not logged here: its error goes back to the caller, who
// decides.
type gormLogger struct {
	log  *slog.Logger
	slow time.Duration
}

// LogMode returns l unchanged: the level is the slog handler's to choose.
func (l gormLogger) LogMode(logger.LogLevel) logger.Interface { return l }

// Info logs one of gorm's remarks at debug level.
func (l gormLogger) Info(ctx context.Context, msg string, args ...any) {
	l.log.DebugContext(ctx, "gorm: "+fmt.Sprintf(msg, args...))
}

// Warn logs one of gorm's remarks at debug level.
func (l gormLogger) Warn(ctx context.Context, msg string, args ...any) {
	l.log.DebugContext(ctx, "gorm: "+fmt.Sprintf(msg, args...))
}

// Error logs one of gorm's remarks at debug level: the errors gorm reports
// this way are returned to the caller as well.
func (l gormLogger) Error(ctx context.Context, msg string, args ...any) {
	l.log.DebugContext(ctx, "gorm: "+fmt.Sprintf(msg, args...))
}

// Trace logs a statement that ran for l.slow or longer. It does not call
// fc, which would build the SQL with its values.
func (l gormLogger) Trace(ctx context.Context, begin time.Time, fc func() (sql string, rows int64), _ error) {
	elapsed := time.Since(begin)
	if elapsed < l.slow {
		return
	}
	l.log.WarnContext(ctx, "slow database query", "elapsed", elapsed, "caller", caller())
}

// caller returns "folder/file.go:line" of the code that called gorm: the
// first frame on the stack that is neither gorm's nor this logger's.
func caller() string {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	for {
		f, more := frames.Next()
		if !strings.HasPrefix(f.Function, "gorm.io/") && !strings.Contains(f.Function, "gormLogger") {
			return filepath.Base(filepath.Dir(f.File)) + "/" + filepath.Base(f.File) + ":" + strconv.Itoa(f.Line)
		}
		if !more {
			return ""
		}
	}
}
