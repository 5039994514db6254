package rbac

import (
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
	cat       *Catalogue
}

// newGrants builds the grants of a super admin, or of a member holding perms.
// A member never holds a platform permission, whatever its roles say.
func newGrants(cat *Catalogue, super bool, perms []string) Grants {
	g := Grants{super: super, cat: cat}
	if super {
		g.list = []string{"*"}
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
	return g
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

// SuperAdmin reports whether the grants are a super admin's: everything.
func (g Grants) SuperAdmin() bool { return g.super }

// List returns the permissions granted, sorted; a super admin's are ["*"].
func (g Grants) List() []string { return slices.Clone(g.list) }

// encode writes the grants for the kv cache: "S" for a super admin, else "M"
// and one permission a line.
func (g Grants) encode() []byte {
	if g.super {
		return []byte("S")
	}
	var b strings.Builder
	b.WriteString("M")
	for _, p := range g.list {
		b.WriteByte('\n')
		b.WriteString(p)
	}
	return []byte(b.String())
}

// decodeGrants reads what encode wrote; ok is false for anything else, which
// the caller treats as a cache miss.
func decodeGrants(cat *Catalogue, b []byte) (Grants, bool) {
	s := string(b)
	switch {
	case s == "S":
		return newGrants(cat, true, nil), true
	case s == "M":
		return newGrants(cat, false, nil), true
	case strings.HasPrefix(s, "M\n"):
		perms := strings.Split(s[2:], "\n")
		if slices.Contains(perms, "") {
			return Grants{}, false
		}
		return newGrants(cat, false, perms), true
	}
	return Grants{}, false
}
