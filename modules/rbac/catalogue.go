package rbac

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Permission is one entry of the catalogue.
type Permission struct {
	// Name is "resource:action" or "resource:action:own".
	Name        string
	Description string
	// Platform permissions are held only by super admins.
	Platform bool
}

// SystemRole is a role every tenant has, with the permissions the catalogue
// gives it. In a tenant role a "*" is already written out, so Permissions
// holds catalogue names and "resource:*" wildcards only.
type SystemRole struct {
	Name        string
	Description string
	Platform    bool
	Permissions []string
}

// Catalogue is the set of permissions Gatehouse knows and the permissions of
// its system roles, as read from configs/roles.yaml. It is immutable and safe
// for concurrent use.
type Catalogue struct {
	perms  []Permission
	byName map[string]Permission
	// resources maps a resource to its permissions' names, own forms
	// included.
	resources map[string][]string
	// platformResources are the resources with a platform permission: a
	// "resource:*" of one of them covers a platform permission.
	platformResources map[string]bool
	roles             []SystemRole
}

// The file's shape; KnownFields makes a misspelt key an error.
type catalogueFile struct {
	Permissions []struct {
		Name        string `yaml:"name"`
		Description string `yaml:"description"`
		Platform    bool   `yaml:"platform"`
	} `yaml:"permissions"`
	Roles []struct {
		Name        string   `yaml:"name"`
		Description string   `yaml:"description"`
		Platform    bool     `yaml:"platform"`
		Permissions []string `yaml:"permissions"`
	} `yaml:"roles"`
}

// A part of a permission or a role name: lower case, so that names compare
// as bytes.
var (
	permissionName = regexp.MustCompile(`^[a-z0-9_-]+:[a-z0-9_-]+(:own)?$`)
	roleName       = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)
)

// ownSuffix marks the own-resources form of a permission.
const ownSuffix = ":own"

// LoadCatalogue parses and checks a catalogue in the format of
// configs/roles.yaml. It returns an error if a key is unknown, a permission
// name is not resource:action[:own], a name is listed twice, an ":own" form
// lacks its plain form, or a role names a permission that is neither in the
// catalogue nor a wildcard of a resource in it, or (for a tenant role) names
// or covers a platform permission.
func LoadCatalogue(data []byte) (*Catalogue, error) {
	var f catalogueFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty document is io.EOF: report it as the missing list it is.
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("rbac catalogue: %w", err)
	}
	if len(f.Permissions) == 0 {
		return nil, errors.New("rbac catalogue: no permissions")
	}
	c := &Catalogue{byName: map[string]Permission{}, resources: map[string][]string{}, platformResources: map[string]bool{}}
	for _, p := range f.Permissions {
		if !permissionName.MatchString(p.Name) {
			return nil, fmt.Errorf("rbac catalogue: permission %q: want resource:action or resource:action:own, "+
				"lower-case letters, digits, _ and -", p.Name)
		}
		if _, dup := c.byName[p.Name]; dup {
			return nil, fmt.Errorf("rbac catalogue: permission %q is listed twice", p.Name)
		}
		perm := Permission{Name: p.Name, Description: strings.TrimSpace(p.Description), Platform: p.Platform}
		c.perms = append(c.perms, perm)
		c.byName[p.Name] = perm
		res := resourceOf(p.Name)
		c.resources[res] = append(c.resources[res], p.Name)
		if p.Platform {
			c.platformResources[res] = true
		}
	}
	for _, p := range c.perms {
		base, own := strings.CutSuffix(p.Name, ownSuffix)
		if !own {
			continue
		}
		b, ok := c.byName[base]
		if !ok {
			return nil, fmt.Errorf("rbac catalogue: permission %q: its plain form %q is not in the catalogue", p.Name, base)
		}
		// The own form is a narrowing of the plain one, so it cannot
		// belong to a different audience.
		if b.Platform != p.Platform {
			return nil, fmt.Errorf("rbac catalogue: permission %q: platform must be the same as %q's", p.Name, base)
		}
	}
	seen := map[string]bool{}
	for _, r := range f.Roles {
		if !roleName.MatchString(r.Name) {
			return nil, fmt.Errorf("rbac catalogue: role %q: want 1 to 64 of a-z, 0-9, _ and -", r.Name)
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("rbac catalogue: role %q is listed twice", r.Name)
		}
		seen[r.Name] = true
		perms, err := c.rolePermissions(r.Platform, r.Permissions)
		if err != nil {
			return nil, fmt.Errorf("rbac catalogue: role %q: %w", r.Name, err)
		}
		c.roles = append(c.roles, SystemRole{Name: r.Name, Description: strings.TrimSpace(r.Description),
			Platform: r.Platform, Permissions: perms})
	}
	return c, nil
}

// rolePermissions checks a system role's list and returns it sorted, without
// duplicates, with "*" written out for a tenant role.
func (c *Catalogue) rolePermissions(platform bool, list []string) ([]string, error) {
	var out []string
	for _, p := range list {
		if p == "*" {
			if platform {
				out = append(out, p)
				continue
			}
			for _, q := range c.perms {
				if !q.Platform {
					out = append(out, q.Name)
				}
			}
			continue
		}
		if err := c.checkGrantable(p, platform); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// checkGrantable returns an error unless p may be put in a role: a catalogue
// name or a "resource:*" of a catalogue resource, and, unless platform, not
// platform nor covering a platform permission. "*" is never grantable here.
func (c *Catalogue) checkGrantable(p string, platform bool) error {
	if res, ok := strings.CutSuffix(p, ":*"); ok {
		if _, known := c.resources[res]; !known {
			return fmt.Errorf("%w: %q", errUnknownPermission, p)
		}
		if !platform && c.platformResources[res] {
			return fmt.Errorf("%w: %q", errPlatformPermission, p)
		}
		return nil
	}
	q, ok := c.byName[p]
	if !ok {
		return fmt.Errorf("%w: %q", errUnknownPermission, p)
	}
	if q.Platform && !platform {
		return fmt.Errorf("%w: %q", errPlatformPermission, p)
	}
	return nil
}

// Causes checkGrantable reports; the service turns them into client errors.
var (
	errUnknownPermission  = errors.New("unknown permission")
	errPlatformPermission = errors.New("platform permission in a tenant role")
)

// Permissions returns the catalogue in file order.
func (c *Catalogue) Permissions() []Permission { return slices.Clone(c.perms) }

// Lookup returns the permission named name, if the catalogue has it.
func (c *Catalogue) Lookup(name string) (Permission, bool) {
	p, ok := c.byName[name]
	return p, ok
}

// Roles returns the system roles in file order.
func (c *Catalogue) Roles() []SystemRole {
	out := slices.Clone(c.roles)
	for i := range out {
		out[i].Permissions = slices.Clone(out[i].Permissions)
	}
	return out
}

// Role returns the system role named name, if the catalogue has it.
func (c *Catalogue) Role(name string) (SystemRole, bool) {
	for _, r := range c.roles {
		if r.Name == name {
			r.Permissions = slices.Clone(r.Permissions)
			return r, true
		}
	}
	return SystemRole{}, false
}

// isPlatform reports whether p is a platform permission (or an own form of
// one). A nil catalogue knows none.
func (c *Catalogue) isPlatform(p string) bool {
	if c == nil {
		return false
	}
	return c.byName[p].Platform
}

// resourceOf returns the part of a permission before its first colon.
func resourceOf(p string) string {
	res, _, _ := strings.Cut(p, ":")
	return res
}
