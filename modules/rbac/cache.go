package rbac

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"gatehouse/platform/db"
	"gatehouse/platform/fault"
	"gatehouse/platform/kv"
)

// How effective permissions are cached.
//
// One version number in kv stands for the state of every rbac table and of
// every membership and tenant status: each change, here or in another module
// (through Invalidate), bumps it after its transaction commits. A cached
// answer is filed under the version read before it was computed, so it is
// used only while that version is current: the first request after a bump,
// on any instance sharing the kv store, misses and reads the database. On
// Redis, main.go hands this module a kv.Mirror that keeps the version in
// memory and has a bump confirmed by every instance before it returns, so
// the version read costs no round trip and "a revoked permission is gone on
// the very next request" still holds with no window.
//
// A bump adds a random step, and a missing key is started from a random
// number, so a kv store that lost the key (Redis restarted without
// persistence, flushed) never brings back a version some instance still has
// answers filed under.
const (
	versionKey = "rbac:version"
	// grantsKeyPrefix + version + ":" + tenant + ":" + user holds the
	// encoded Grants, so that one instance's database read serves the
	// others. Old versions' keys are never read again and expire.
	grantsKeyPrefix = "rbac:grants:"
	grantsTTL       = 5 * time.Minute
	// memoMax bounds the in-process map. Past it the whole map is dropped:
	// keeping LRU order would cost the hot path a lock and list work on
	// every hit, and a full map is a rare event (50k users active within
	// one version) whose cost is one kv read per user to refill. An entry
	// is a few hundred bytes, so the map stays within tens of megabytes.
	memoMax = 50_000
	// memoMaxAge limits how long an entry is used even though the version
	// has not moved. It matters only when a bump was lost (kv unreachable
	// just after a commit, or the process died between the two): the
	// change then takes effect within memoMaxAge+grantsTTL (an entry may
	// come from kv already aged) instead of never.
	memoMaxAge = grantsTTL
	// bumpTimeout bounds a bump; it runs on a context detached from the
	// request's cancellation, since the change it follows has committed.
	bumpTimeout = 5 * time.Second
	// bumpStep is the exclusive upper bound of a bump's random step.
	// Starting below 1<<62, a version overflows only after 2^30 bumps.
	bumpStep = 1 << 32
)

type memoKey struct{ tenant, user string }

type memoEntry struct {
	version string
	at      time.Time
	grants  Grants
}

// memo is the in-process map of (tenant, user) to their grants at a version.
type memo struct {
	mu     sync.RWMutex
	m      map[memoKey]memoEntry
	max    int
	maxAge time.Duration
}

func newMemo(max int, maxAge time.Duration) *memo {
	return &memo{m: make(map[memoKey]memoEntry), max: max, maxAge: maxAge}
}

// get returns the grants filed for k under version, if fresh. It allocates
// nothing: the string(version) comparison is done in place.
// get reads the clock with time.Since, which reads only the monotonic clock
// (at comes from time.Now): half the cost of time.Now, on every request.
func (m *memo) get(k memoKey, version []byte) (Grants, bool) {
	m.mu.RLock()
	e, ok := m.m[k]
	m.mu.RUnlock()
	if !ok || e.version != string(version) || time.Since(e.at) > m.maxAge {
		return Grants{}, false
	}
	return e.grants, true
}

func (m *memo) put(k memoKey, version string, g Grants, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.m[k]; !ok && len(m.m) >= m.max {
		clear(m.m)
	}
	m.m[k] = memoEntry{version: version, at: at, grants: g}
}

func (m *memo) reset() {
	m.mu.Lock()
	clear(m.m)
	m.mu.Unlock()
}

func (m *memo) len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.m)
}

// version returns the current version, starting it if the kv store has none.
// A kv store that cannot answer gives an error wrapping fault.ErrUnavailable:
// without the version no cached answer can be trusted, so authorization
// fails closed.
func (s *Service) version(ctx context.Context) ([]byte, error) {
	v, err := s.kv.Get(ctx, versionKey)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, kv.ErrNotFound) {
		return nil, unavailable("read the permissions version", err)
	}
	start := strconv.AppendInt(nil, rand.Int64N(1<<62), 10)
	// SetNX: of instances starting the version at once, one wins and all
	// read its value.
	if _, err := s.kv.SetNX(ctx, versionKey, start, 0); err != nil {
		return nil, unavailable("start the permissions version", err)
	}
	v, err = s.kv.Get(ctx, versionKey)
	if err != nil {
		return nil, unavailable("read the permissions version", err)
	}
	return v, nil
}

// bump moves the version on, so that every cached answer is dropped. It runs
// after the change has committed, on a context the request's end cannot
// cancel. If it fails the caller gets the error (the change stays made);
// this instance's map is emptied either way, and other instances' entries
// age out within memoMaxAge.
func (s *Service) bump(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bumpTimeout)
	defer cancel()
	_, err := s.kv.Incr(ctx, versionKey, 1+rand.Int64N(bumpStep), 0)
	if err != nil {
		s.memo.reset()
		s.log.ErrorContext(ctx, "rbac: permissions changed but the cache version could not be bumped: "+
			"other instances may use the old permissions for up to "+(memoMaxAge+grantsTTL).String(), "error", err.Error())
		return unavailable("bump the permissions version", err)
	}
	return nil
}

// grants returns the effective grants of (tenant, user) at version: from the
// in-process map, else from kv, else from the database, filling the caches
// on the way back.
func (s *Service) grants(ctx context.Context, version []byte, tenantID, userID string) (Grants, error) {
	k := memoKey{tenantID, userID}
	if g, ok := s.memo.get(k, version); ok {
		return g, nil
	}
	// Read before the grants, so that their age counts from then.
	now := time.Now()
	v := string(version)
	key := grantsKeyPrefix + v + ":" + tenantID + ":" + userID
	if b, err := s.kv.Get(ctx, key); err == nil {
		if g, ok := decodeGrants(s.cat, b); ok {
			s.memo.put(k, v, g, now)
			return g, nil
		}
	} else if !errors.Is(err, kv.ErrNotFound) {
		// The version read just worked; a failing cache read only costs
		// a trip to the database.
		s.log.WarnContext(ctx, "rbac: reading cached permissions failed", "error", err.Error())
	}
	g, err := s.compute(ctx, tenantID, userID)
	if err != nil {
		return Grants{}, err
	}
	if err := s.kv.Set(ctx, key, g.encode(), grantsTTL); err != nil {
		s.log.WarnContext(ctx, "rbac: caching permissions failed", "error", err.Error())
	}
	s.memo.put(k, v, g, now)
	return g, nil
}

// compute reads the effective grants from the database: everything for a
// super admin; for an active member of an active tenant, the union of its
// roles' grants; else nothing. The role names come along, for CurrentRoles.
func (s *Service) compute(ctx context.Context, tenantID, userID string) (Grants, error) {
	// Identities come from verified tokens, but a malformed id must not
	// reach PostgreSQL's uuid columns as an error.
	if !db.IsID(tenantID) || !db.IsID(userID) {
		return newGrants(s.cat, false, nil), nil
	}
	super, err := s.st.isSuperAdmin(ctx, userID)
	if err != nil {
		return Grants{}, err
	}
	var perms []string
	if !super {
		active, err := s.members.ActiveMember(ctx, tenantID, userID)
		if err != nil || !active {
			return newGrants(s.cat, false, nil), err
		}
		if perms, err = s.st.memberPermissions(ctx, tenantID, userID); err != nil {
			return Grants{}, err
		}
	}
	g := newGrants(s.cat, super, perms)
	if g.roles, err = s.roleNames(ctx, tenantID, userID, super); err != nil {
		return Grants{}, err
	}
	return g, nil
}

// unavailable wraps a kv failure so that it answers 503, not 500.
func unavailable(what string, err error) error {
	return fmt.Errorf("rbac: %s: %w: %w", what, fault.ErrUnavailable, err)
}
