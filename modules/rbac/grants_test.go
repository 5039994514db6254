package rbac

import (
	"slices"
	"testing"
	"time"

	"gatehouse/configs"
	"gatehouse/platform/httpx"
)

func testCatalogue(t testing.TB) *Catalogue {
	t.Helper()
	c, err := LoadCatalogue(configs.Roles)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestGrantsScope is the matching table: what each kind of grant satisfies,
// and in which scope.
func TestGrantsScope(t *testing.T) {
	cat := testCatalogue(t)
	const all, own, none = httpx.ScopeAll, httpx.ScopeOwn, ""
	cases := []struct {
		grants []string
		super  bool
		need   string
		want   string
	}{
		{[]string{"orders:read"}, false, "orders:read", all},
		{[]string{"orders:read"}, false, "orders:write", none},
		{[]string{"orders:read"}, false, "orders:read:own", all}, // the plain form covers the own form
		{[]string{"orders:read:own"}, false, "orders:read", own},
		{[]string{"orders:read:own"}, false, "orders:read:own", own},
		{[]string{"orders:read:own"}, false, "orders:write", none},
		{[]string{"orders:read:own", "orders:read"}, false, "orders:read", all}, // the broader wins
		{[]string{"orders:*"}, false, "orders:read", all},
		{[]string{"orders:*"}, false, "orders:delete", all},
		{[]string{"orders:*"}, false, "orders:write:own", all},
		{[]string{"orders:*"}, false, "orders:anything-new", all},
		{[]string{"orders:*"}, false, "profile:read", none},
		{[]string{"order:*"}, false, "orders:read", none}, // a resource is matched whole
		{[]string{"orders"}, false, "orders:read", none},
		{[]string{"*"}, false, "users:manage", all},
		{[]string{"*"}, false, "tenants:manage", none}, // a member never holds a platform permission
		{[]string{"tenants:manage"}, false, "tenants:manage", none},
		{[]string{"tenants:*"}, false, "tenants:manage", none},
		{nil, true, "tenants:manage", all},
		{nil, true, "orders:read", all},
		{nil, true, "made:up", all},
		{nil, false, "orders:read", none},
	}
	for _, tc := range cases {
		g := newGrants(cat, tc.super, tc.grants)
		if got := g.Scope(tc.need); got != tc.want {
			t.Errorf("grants %v (super %v) need %s: scope %q, want %q", tc.grants, tc.super, tc.need, got, tc.want)
		}
	}
	var zero Grants
	if zero.Scope("orders:read") != "" || zero.Holds("orders:read") || zero.Holds("orders:*") {
		t.Error("the zero Grants hold something")
	}
}

// TestGrantsHolds is the escalation rule: what a caller holding grants may
// give to others.
func TestGrantsHolds(t *testing.T) {
	cat := testCatalogue(t)
	admin, _ := cat.Role("admin")
	manager, _ := cat.Role("manager")
	cases := []struct {
		grants []string
		super  bool
		perm   string
		want   bool
	}{
		{[]string{"orders:read"}, false, "orders:read", true},
		{[]string{"orders:read"}, false, "orders:read:own", true},
		{[]string{"orders:read:own"}, false, "orders:read:own", true},
		{[]string{"orders:read:own"}, false, "orders:read", false}, // own is less than all
		{[]string{"orders:*"}, false, "orders:*", true},
		{[]string{"orders:*"}, false, "orders:delete", true},
		// read, write and delete cover both own forms: every orders
		// permission of the catalogue is held, one by one.
		{manager.Permissions, false, "orders:*", true},
		{admin.Permissions, false, "orders:*", true},
		{manager.Permissions, false, "users:*", false}, // users:read but not users:manage
		{admin.Permissions, false, "*", false},         // "*" would include platform ones
		{admin.Permissions, false, "tenants:manage", false},
		{admin.Permissions, false, "tenants:*", false},
		{[]string{"orders:read", "orders:write"}, false, "orders:*", false},
		{nil, true, "*", true},
		{nil, true, "tenants:manage", true},
		{nil, false, "orders:read", false},
	}
	for _, tc := range cases {
		g := newGrants(cat, tc.super, tc.grants)
		if got := g.Holds(tc.perm); got != tc.want {
			t.Errorf("grants %v (super %v) hold %s = %v, want %v", tc.grants, tc.super, tc.perm, got, tc.want)
		}
	}
}

// TestGrantsEncode round-trips grants through the kv form and refuses
// anything else.
func TestGrantsEncode(t *testing.T) {
	cat := testCatalogue(t)
	withRoles := func(g Grants, roles ...string) Grants { g.roles = roles; return g }
	for _, g := range []Grants{newGrants(cat, true, nil), newGrants(cat, false, nil),
		withRoles(newGrants(cat, true, nil), "admin", "super_admin"),
		withRoles(newGrants(cat, false, []string{"orders:*", "profile:read", "orders:read:own"}), "manager", "member")} {
		back, ok := decodeGrants(cat, g.encode())
		if !ok || back.super != g.super || !slices.Equal(back.list, g.list) || !slices.Equal(back.roles, g.roles) {
			t.Errorf("%q came back as %v %v %v", g.encode(), back.list, back.roles, ok)
		}
	}
	// The first format's entries ("S", "M" and a permission a line), which
	// an older build may still write, are misses.
	for _, bad := range []string{"", "X", "S", "M", "M\norders:read", "M2", "M2\n\n", "M2\nmember\n", "M2\na,,b", "S2\nsuper_admin\n*"} {
		if _, ok := decodeGrants(cat, []byte(bad)); ok {
			t.Errorf("decoded %q", bad)
		}
	}
}

// TestGrantsMine checks the answer of GET /v1/permissions/mine that each
// cache fill encodes, also after the kv round trip: the sorted list, and []
// rather than null for no permissions.
func TestGrantsMine(t *testing.T) {
	cat := testCatalogue(t)
	cases := []struct {
		g    Grants
		want string
	}{
		{newGrants(cat, true, nil), `{"permissions":["*"],"super_admin":true}`},
		{newGrants(cat, false, []string{"profile:read", "orders:*", "orders:read:own", "profile:read"}),
			`{"permissions":["orders:*","orders:read:own","profile:read"],"super_admin":false}`},
		{newGrants(cat, false, nil), `{"permissions":[],"super_admin":false}`},
	}
	for _, tc := range cases {
		back, _ := decodeGrants(cat, tc.g.encode())
		for _, g := range []Grants{tc.g, back} {
			if got := string(g.mine); got != tc.want+"\n" {
				t.Errorf("mine = %q, want %q", got, tc.want+"\n")
			}
		}
	}
}

// TestMemoBound shows the in-process map never passes its bound: the entry
// that would is stored in an emptied map, while replacing a key at the
// bound keeps the others.
func TestMemoBound(t *testing.T) {
	m := newMemo(3, time.Minute)
	now := time.Now()
	g := Grants{}
	for _, u := range []string{"a", "b", "c"} {
		m.put(memoKey{"t", u}, "1", g, now)
	}
	m.put(memoKey{"t", "c"}, "2", g, now)
	if m.len() != 3 {
		t.Fatalf("replacing at the bound: len %d, want 3", m.len())
	}
	m.put(memoKey{"t", "d"}, "1", g, now)
	if m.len() != 1 {
		t.Fatalf("past the bound: len %d, want 1 (dropped, then d)", m.len())
	}
	if _, ok := m.get(memoKey{"t", "d"}, []byte("1")); !ok {
		t.Error("d is missing")
	}
	if _, ok := m.get(memoKey{"t", "a"}, []byte("1")); ok {
		t.Error("a survived the drop")
	}
	if _, ok := m.get(memoKey{"t", "d"}, []byte("2")); ok {
		t.Error("an entry answered for another version")
	}
	m.put(memoKey{"t", "d"}, "1", g, now.Add(-2*time.Minute))
	if _, ok := m.get(memoKey{"t", "d"}, []byte("1")); ok {
		t.Error("an entry answered past its age")
	}
}
