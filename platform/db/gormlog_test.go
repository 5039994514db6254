package db

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"gorm.io/gorm"
)

// TestSlowQueryLogHidesValues shows that a slow statement is logged by the
// line that ran it, never with the values bound to it.
func TestSlowQueryLogHidesValues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := Open(ctx, Config{SQLitePath: filepath.Join(t.TempDir(), "x.db")}, log)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer d.Close()
	// With a zero threshold every statement counts as slow.
	conn := d.Conn(ctx).Session(&gorm.Session{Logger: gormLogger{log: log}})
	var n int
	if err := conn.Raw("SELECT length(?)", "secretvalue").Scan(&n).Error; err != nil || n != len("secretvalue") {
		t.Fatalf("query = %d, %v", n, err)
	}
	out := buf.String()
	if !strings.Contains(out, "slow database query") || !strings.Contains(out, "caller=db/gormlog_test.go:") {
		t.Errorf("log lacks the slow statement:\n%s", out)
	}
	if strings.Contains(out, "secretvalue") {
		t.Errorf("log shows a parameter value:\n%s", out)
	}
}
