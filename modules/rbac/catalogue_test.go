package rbac

import (
	"slices"
	"strings"
	"testing"

	"gatehouse/configs"
)

// TestLoadCatalogue reads the shipped roles.yaml: every permission the
// system needs is there, tenants:manage and gateway:manage alone are
// platform, and the system
// roles hold what the design says, admin's "*" written out without the
// platform permission.
func TestLoadCatalogue(t *testing.T) {
	c, err := LoadCatalogue(configs.Roles)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"orders:read", "orders:write", "orders:delete", "orders:read:own", "orders:write:own",
		"profile:read", "profile:write", "users:read", "users:manage", "roles:read", "roles:manage",
		"analytics:read", "audit:read", "settings:manage", "sessions:manage", "tenants:manage", "gateway:manage"}
	var names, platform []string
	for _, p := range c.Permissions() {
		names = append(names, p.Name)
		if p.Description == "" {
			t.Errorf("%s has no description", p.Name)
		}
		if p.Platform {
			platform = append(platform, p.Name)
		}
	}
	for _, w := range want {
		if !slices.Contains(names, w) {
			t.Errorf("catalogue lacks %s", w)
		}
	}
	if !slices.Equal(platform, []string{"tenants:manage", "gateway:manage"}) {
		t.Errorf("platform permissions = %v, want [tenants:manage gateway:manage]", platform)
	}
	nonPlatform := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "tenants:manage" || n == "gateway:manage" })
	roles := map[string][]string{
		"super_admin": {"*"},
		"admin":       sorted(nonPlatform...),
		"manager": sorted("orders:read", "orders:write", "orders:delete", "analytics:read", "users:read", "roles:read",
			"profile:read", "profile:write"),
		"member": sorted("orders:read:own", "orders:write:own", "profile:read", "profile:write"),
	}
	if got := len(c.Roles()); got != len(roles) {
		t.Errorf("%d roles, want %d", got, len(roles))
	}
	for name, perms := range roles {
		r, ok := c.Role(name)
		if !ok {
			t.Errorf("no role %s", name)
			continue
		}
		if !slices.Equal(r.Permissions, perms) {
			t.Errorf("%s: %v, want %v", name, r.Permissions, perms)
		}
		if r.Platform != (name == "super_admin") {
			t.Errorf("%s: platform %v", name, r.Platform)
		}
	}
}

// TestLoadCatalogueRefuses shows each mistake in a catalogue file is an
// error that says what is wrong.
func TestLoadCatalogueRefuses(t *testing.T) {
	const perms = `
permissions:
  - {name: orders:read, description: r}
  - {name: orders:read:own, description: o}
  - {name: tenants:manage, description: t, platform: true}
`
	cases := []struct {
		name, yaml, want string
	}{
		{"empty", ``, "no permissions"},
		{"unknown key", perms + "extra: 1\n", "field extra not found"},
		{"unknown permission key", "permissions:\n  - {name: a:b, descr: x}\n", "field descr not found"},
		{"no action", "permissions:\n  - {name: orders}\n", `"orders": want resource:action`},
		{"upper case", "permissions:\n  - {name: Orders:read}\n", "want resource:action"},
		{"wildcard in catalogue", "permissions:\n  - {name: orders:*}\n", "want resource:action"},
		{"three parts not own", "permissions:\n  - {name: a:b:c}\n", "want resource:action"},
		{"duplicate", perms + "  - {name: orders:read}\n", `"orders:read" is listed twice`},
		{"own without plain", "permissions:\n  - {name: orders:write:own}\n", "plain form \"orders:write\" is not in the catalogue"},
		{"own platform differs", "permissions:\n  - {name: t:m, platform: true}\n  - {name: t:m:own}\n", "platform must be the same"},
		{"role unknown permission", perms + "roles:\n  - {name: r, permissions: [orders:write]}\n", `role "r": unknown permission: "orders:write"`},
		{"role unknown wildcard", perms + "roles:\n  - {name: r, permissions: [\"nope:*\"]}\n", `unknown permission: "nope:*"`},
		{"tenant role platform", perms + "roles:\n  - {name: r, permissions: [tenants:manage]}\n", "platform permission in a tenant role"},
		{"tenant role platform wildcard", perms + "roles:\n  - {name: r, permissions: [\"tenants:*\"]}\n", "platform permission in a tenant role"},
		{"role name", perms + "roles:\n  - {name: Big Role, permissions: []}\n", `role "Big Role": want 1 to 64`},
		{"role twice", perms + "roles:\n  - {name: r}\n  - {name: r}\n", `role "r" is listed twice`},
		{"not yaml", "permissions: [", "rbac catalogue"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadCatalogue([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	// And the same permissions are fine in a platform role, with "*" kept.
	c, err := LoadCatalogue([]byte(perms + "roles:\n  - {name: p, platform: true, permissions: [\"*\", tenants:manage, \"tenants:*\"]}\n" +
		"  - {name: q, permissions: [\"*\"]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := c.Role("p"); !slices.Equal(r.Permissions, []string{"*", "tenants:*", "tenants:manage"}) {
		t.Errorf("platform role: %v", r.Permissions)
	}
	if r, _ := c.Role("q"); !slices.Equal(r.Permissions, []string{"orders:read", "orders:read:own"}) {
		t.Errorf("tenant role *: %v", r.Permissions)
	}
}
