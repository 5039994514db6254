// Package migrations holds Gatehouse's versioned SQL schema changes, embedded
// in the binary.
//
// Each dialect has its own folder (postgres, sqlite) of numbered goose files,
// one file per change, with the same numbers in both folders so that both
// databases go through the same versions. platform/db applies them.
package migrations

import "embed"

// FS holds the migration files, under postgres/ and sqlite/.
//
//go:embed postgres/*.sql sqlite/*.sql
var FS embed.FS
