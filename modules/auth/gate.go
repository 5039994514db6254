package auth

import (
	"context"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// gate bounds how many bcrypt computations run at once. A login flood
// then queues here instead of taking every core from the requests that
// only check a token, whose latency stays flat.
type gate struct{ slots chan struct{} }

func newGate(n int) gate { return gate{slots: make(chan struct{}, max(n, 1))} }

// do runs f once a slot is free, or returns ctx's error if ctx ends first.
func (g gate) do(ctx context.Context, f func()) error {
	select {
	case g.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-g.slots }()
	f()
	return nil
}

// hasher does the module's bcrypt work behind the gate, and keeps the
// dummy hash that unknown emails are compared against.
type hasher struct {
	gate  gate
	cost  int
	once  sync.Once
	dummy []byte
}

// dummyHash is made once, in the background from start (see warm), so
// that starting does not wait a bcrypt computation.
func (h *hasher) dummyHash() []byte {
	h.once.Do(func() {
		h.dummy, _ = bcrypt.GenerateFromPassword([]byte("not a password of anyone"), h.cost)
	})
	return h.dummy
}

// warm makes the dummy hash ahead of the first login that needs it.
func (h *hasher) warm() { go h.dummyHash() }

// compare reports whether password matches hash. A nil hash compares
// against the dummy, to cost the same time; callers ignore that answer.
func (h *hasher) compare(ctx context.Context, hash []byte, password string) (bool, error) {
	if hash == nil {
		hash = h.dummyHash()
	}
	var ok bool
	err := h.gate.do(ctx, func() { ok = bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil })
	return ok, err
}

// hash returns the bcrypt hash of password.
func (h *hasher) hash(ctx context.Context, password string) ([]byte, error) {
	var out []byte
	var herr error
	if err := h.gate.do(ctx, func() { out, herr = bcrypt.GenerateFromPassword([]byte(password), h.cost) }); err != nil {
		return nil, err
	}
	return out, herr
}
