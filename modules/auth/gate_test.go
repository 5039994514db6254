package auth

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The gate never lets more than its size run at once, runs everything
// eventually, and gives up on a waiter whose context ends.
func TestGate(t *testing.T) {
	g := newGate(2)
	var running, peak atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			err := g.do(context.Background(), func() {
				n := running.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				time.Sleep(2 * time.Millisecond)
				running.Add(-1)
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if peak.Load() != 2 {
		t.Errorf("peak concurrency %d, want 2", peak.Load())
	}

	hold := make(chan struct{})
	for range 2 {
		go g.do(context.Background(), func() { <-hold })
	}
	time.Sleep(10 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := g.do(ctx, func() { t.Error("ran while the gate was full") }); err != context.DeadlineExceeded {
		t.Errorf("waiting past the context: %v", err)
	}
	close(hold)
	if newGate(0).slots == nil || cap(newGate(0).slots) != 1 {
		t.Error("a gate of size 0 must still let one through")
	}
}

// The hasher's answers: right and wrong passwords, and the dummy.
func TestHasher(t *testing.T) {
	h := &hasher{gate: newGate(1), cost: 10}
	ctx := context.Background()
	hash, err := h.hash(ctx, "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := h.compare(ctx, hash, "correct horse battery"); !ok || err != nil {
		t.Errorf("right password: %v %v", ok, err)
	}
	if ok, _ := h.compare(ctx, hash, "wrong"); ok {
		t.Error("wrong password accepted")
	}
	if ok, _ := h.compare(ctx, nil, "anything"); ok {
		t.Error("the dummy matched")
	}
	if len(h.dummyHash()) == 0 {
		t.Error("no dummy hash")
	}
}
