// Package testenv gives tests the outside services they need, or skips them.
//
// Tests that need PostgreSQL or Redis ask here. Without the TEST_ variable the
// test is skipped with a message, unless GATEHOUSE_REQUIRE_SERVICES=1, under
// which the missing service is a failure: CI sets it so that a test can never
// pass by quietly not running.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/redis/go-redis/v9"
)

// The variables tests read.
const (
	EnvPostgres     = "TEST_POSTGRES_URL"
	EnvRedis        = "TEST_REDIS_URL"
	EnvRedisCluster = "TEST_REDIS_CLUSTER_URL"
	EnvRequire      = "GATEHOUSE_REQUIRE_SERVICES"
)

// Need returns the value of the environment variable name, or skips t (fails
// it when services are required) if it is empty.
func Need(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v != "" {
		return v
	}
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s is not set and %s=1: this test must run", name, EnvRequire)
	}
	t.Skipf("%s is not set: skipping (set it to run this test against a real service)", name)
	return ""
}

// PostgresURL returns a connection URL to a fresh, empty schema on the test
// PostgreSQL server; the schema is dropped when the test ends. Tests may run
// in parallel, each in its own schema.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := Need(t, EnvPostgres)
	schema := "t_" + Random(8)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("open %s: %v", EnvPostgres, err)
	}
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
		admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse %s: %v", EnvPostgres, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// DeleteKeys deletes every key under prefix, at the end of a test. A
// cluster spreads keys over its masters and SCAN sees only the node it runs
// on, so each master is scanned; each key has a DEL of its own, because one
// sent straight to a node must not span slots, pipelined a page at a time
// (a test may leave tens of thousands).
func DeleteKeys(t testing.TB, c redis.UniversalClient, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	scan := func(ctx context.Context, node *redis.Client) error {
		var cursor uint64
		for {
			keys, next, err := node.Scan(ctx, cursor, prefix+"*", 1000).Result()
			if err != nil {
				return err
			}
			if _, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range keys {
					p.Del(ctx, k)
				}
				return nil
			}); err != nil {
				return err
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	var err error
	switch c := c.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, scan)
	case *redis.Client:
		err = scan(ctx, c)
	}
	if err != nil {
		t.Errorf("delete keys under %s: %v", prefix, err)
	}
}

// Random returns n random bytes, hex encoded: a name no other test uses.
func Random(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
