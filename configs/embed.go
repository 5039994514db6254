// Package configs holds the configuration files compiled into the binary:
// roles.yaml, the permission catalogue and the system roles' permissions.
//
// gatehouse.yaml and the other files in this folder are read from disk or
// shipped beside the binary; only what must match the code is embedded.
package configs

import _ "embed"

// Roles is roles.yaml: the permission catalogue and the system roles, in the
// format its opening comment describes. The rbac module parses it with
// LoadCatalogue. Callers must not modify it.
//
//go:embed roles.yaml
var Roles []byte
