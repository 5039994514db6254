package rbac

import (
	"encoding/json"
	"slices"
	"strings"

	"gatehouse/platform/httpx"
)

// Grants are a user's effective permissions in one tenant. They are built
// once per cache fill and then only read, so the checks are map lookups on
// parts of the asked name and allocate nothing. The zero Grants hold
// nothing.
type Grants struct {
	super bool
	// all is a "*" grant. Outside a super admin it never covers a platform
	// permission.
	all bool
	// exact holds the plain permissions granted.
	exact map[string]struct{}
	// own holds the plain form of each ":own" permission granted, so that
	// a check for orders:read finds orders:read:own without building the
	// string.
	own map[string]struct{}
	// resources holds each resource granted with "resource:*".
	resources map[string]struct{}
	list      []string // as granted, sorted
	// mine is the answer of GET /v1/permissions/mine for these grants,
	// encoded once per cache fill rather than on every request: frontends
	// call that route on every page, and encoding it by reflection took
	// some 5 % of the server's CPU under the bench's load.
	mine []byte
	// roles are the names of the holder's roles in the tenant, as
	// RoleNames gives them; none for anyone not an active member of an
	// active tenant, unless a super admin. Shared by every reader of the
	// cached grants: never changed.
	roles []string
	cat   *Catalogue
}

// newGrants builds the grants of a super admin, or of a member holding perms.
// A member never holds a platform permission, whatever its roles say.
func newGrants(cat *Catalogue, super bool, perms []string) Grants {
	g := Grants{super: super, cat: cat}
	if super {
		g.list = []string{"*"}
		g.mine = encodeMine(g.list, true)
		return g
	}
	for _, p := range perms {
		if cat.isPlatform(p) {
			continue
		}
		switch {
		case p == "*":
			g.all = true
		case strings.HasSuffix(p, ":*"):
			if g.resources == nil {
				g.resources = map[string]struct{}{}
			}
			g.resources[strings.TrimSuffix(p, ":*")] = struct{}{}
		case strings.HasSuffix(p, ownSuffix):
			if g.own == nil {
				g.own = map[string]struct{}{}
			}
			g.own[strings.TrimSuffix(p, ownSuffix)] = struct{}{}
		default:
			if g.exact == nil {
				g.exact = map[string]struct{}{}
			}
			g.exact[p] = struct{}{}
		}
		g.list = append(g.list, p)
	}
	slices.Sort(g.list)
	g.list = slices.Compact(g.list)
	g.mine = encodeMine(g.list, false)
	return g
}

// encodeMine is the body c.JSON would send for MyPermissionsResponse, with
// its trailing newline; no permissions are [], not null. Marshalling a
// struct of strings and a bool cannot fail.
func encodeMine(list []string, super bool) []byte {
	if list == nil {
		list = []string{}
	}
	b, _ := json.Marshal(MyPermissionsResponse{Permissions: list, SuperAdmin: super})
	return append(b, '\n')
}

// Scope returns how the grants satisfy a route that needs permission p:
// httpx.ScopeAll when p is held outright (p itself, its resource's
// "resource:*", or "*"), httpx.ScopeOwn when only p's ":own" form is held,
// and "" when p is not granted. For a p that is itself an ":own" form,
// holding its plain form gives ScopeAll. A platform permission is granted
// only to a super admin.
func (g Grants) Scope(p string) string {
	if g.super {
		return httpx.ScopeAll
	}
	if g.cat.isPlatform(p) {
		return ""
	}
	base, _ := strings.CutSuffix(p, ownSuffix)
	if g.all {
		return httpx.ScopeAll
	}
	if _, ok := g.exact[base]; ok {
		return httpx.ScopeAll
	}
	if _, ok := g.resources[resourceOf(p)]; ok {
		return httpx.ScopeAll
	}
	if _, ok := g.own[base]; ok {
		return httpx.ScopeOwn
	}
	return ""
}

// Holds reports whether the grants include all that p grants, so that the
// holder may give p to others. A plain permission needs ScopeAll; an ":own"
// form is held through itself or its plain form; "resource:*" is held
// through itself, "*", or every catalogue permission of the resource; "*" is
// held only by a super admin, since for anyone else it would include
// platform permissions.
func (g Grants) Holds(p string) bool {
	if g.super {
		return true
	}
	if p == "*" {
		return false
	}
	if res, ok := strings.CutSuffix(p, ":*"); ok {
		if g.cat == nil || g.cat.platformResources[res] {
			return false
		}
		if _, ok := g.resources[res]; ok || g.all {
			return true
		}
		names := g.cat.resources[res]
		for _, n := range names {
			if !g.Holds(n) {
				return false
			}
		}
		return len(names) > 0
	}
	switch g.Scope(p) {
	case httpx.ScopeAll:
		return true
	case httpx.ScopeOwn:
		return strings.HasSuffix(p, ownSuffix)
	}
	return false
}

// encode writes the grants for the kv cache: "S2" for a super admin or
// "M2" for anyone else, then the role names on one line, comma-separated,
// then a member's permissions one a line. The 2 marks the format, so that
// an instance of an older build, sharing the kv store while a deploy rolls,
// reads the other's entries as misses rather than wrongly.
func (g Grants) encode() []byte {
	var b strings.Builder
	if g.super {
		b.WriteString("S2\n")
	} else {
		b.WriteString("M2\n")
	}
	b.WriteString(strings.Join(g.roles, ","))
	if !g.super {
		for _, p := range g.list {
			b.WriteByte('\n')
			b.WriteString(p)
		}
	}
	return []byte(b.String())
}

// decodeGrants reads what encode wrote; ok is false for anything else, which
// the caller treats as a cache miss.
func decodeGrants(cat *Catalogue, b []byte) (Grants, bool) {
	kind, rest, ok := strings.Cut(string(b), "\n")
	if !ok || kind != "S2" && kind != "M2" {
		return Grants{}, false
	}
	names, lines, hasPerms := strings.Cut(rest, "\n")
	var roles, perms []string
	if names != "" {
		roles = strings.Split(names, ",")
	}
	if hasPerms {
		perms = strings.Split(lines, "\n")
	}
	if slices.Contains(roles, "") || slices.Contains(perms, "") || kind == "S2" && hasPerms {
		return Grants{}, false
	}
	g := newGrants(cat, kind == "S2", perms)
	g.roles = roles
	return g, true
}
