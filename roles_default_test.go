package main

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
)

// The tenant's default role, which every newcomer gets, is settings:manage's
// to choose: a member with roles:manage (and the role's permissions) but not
// settings:manage cannot delete it (409 role_in_use, on both backends).
// Deleting it made every registration and member addition fail 404
// unknown_role, and the deleter could then recreate the name with what it
// liked for newcomers to get. Once the default is another role, the delete
// goes through.
func TestDefaultRoleCannotBeDeleted(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, b)
			settings := "/v1/tenants/" + w.acme + "/settings"

			rec := w.as(t, w.admin, "POST", "/v1/roles", map[string]any{"name": "newcomer", "description": "",
				"permissions": []string{"orders:read", "profile:read"}})
			wantStatus(t, rec, http.StatusCreated, "")
			role := "/v1/roles/" + decode[struct {
				ID string `json:"id"`
			}](t, rec).ID
			wantStatus(t, w.as(t, w.admin, "PATCH", settings, map[string]any{"default_role": "newcomer"}), http.StatusOK, "")

			// The member manages roles and holds each permission of
			// newcomer, but may not change the settings.
			w.giveMember(t, "role-keeper", "roles:manage", "orders:read")
			wantStatus(t, w.as(t, w.member, "PATCH", settings, map[string]any{"default_role": "member"}), http.StatusForbidden, "forbidden")

			wantStatus(t, w.as(t, w.member, "DELETE", role, nil), http.StatusConflict, "role_in_use")
			wantStatus(t, w.as(t, w.admin, "GET", role, nil), http.StatusOK, "")
			// Newcomers still join (201, checked by register), with it.
			if roles := joinedWith(t, w.app, "newcomer@acme.test"); !slices.Equal(roles, []string{"newcomer"}) {
				t.Fatalf("newcomer's roles %v, want [newcomer]", roles)
			}

			// Once the default is another role, it can go.
			wantStatus(t, w.as(t, w.admin, "PATCH", settings, map[string]any{"default_role": "member"}), http.StatusOK, "")
			wantStatus(t, w.as(t, w.member, "DELETE", role, nil), http.StatusNoContent, "")
			wantStatus(t, w.as(t, w.admin, "GET", role, nil), http.StatusNotFound, "not_found")
			if roles := joinedWith(t, w.app, "second@acme.test"); !slices.Equal(roles, []string{"member"}) {
				t.Fatalf("second newcomer's roles %v, want [member]", roles)
			}
		})
	}
}

// Making a role the default and deleting it at the same moment: never both,
// or the default would name no role. The delete reads the default in its
// transaction, locking the tenant's row on PostgreSQL; the settings update
// checks the role again in its own, after its update has locked that row.
func TestDefaultRoleSettingRacesDelete(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, b)
			w.giveMember(t, "role-keeper", "roles:manage", "orders:read")
			settings := "/v1/tenants/" + w.acme + "/settings"
			for i := range 8 {
				name := fmt.Sprintf("racer-%d", i)
				rec := w.as(t, w.admin, "POST", "/v1/roles", map[string]any{"name": name, "description": "",
					"permissions": []string{"orders:read"}})
				wantStatus(t, rec, http.StatusCreated, "")
				role := "/v1/roles/" + decode[struct {
					ID string `json:"id"`
				}](t, rec).ID
				var set, del int
				var wg sync.WaitGroup
				start := make(chan struct{})
				wg.Go(func() {
					<-start
					set = w.as(t, w.admin, "PATCH", settings, map[string]any{"default_role": name}).Code
				})
				wg.Go(func() {
					<-start
					del = w.as(t, w.member, "DELETE", role, nil).Code
				})
				close(start)
				wg.Wait()
				if set == http.StatusOK && del == http.StatusNoContent || set != http.StatusOK && del != http.StatusNoContent {
					t.Fatalf("round %d: settings %d, delete %d; want exactly one done", i, set, del)
				}
				// Newcomers can join whichever won.
				joinedWith(t, w.app, fmt.Sprintf("joiner-%d@acme.test", i))
				wantStatus(t, w.as(t, w.admin, "PATCH", settings, map[string]any{"default_role": "member"}), http.StatusOK, "")
			}
		})
	}
}
