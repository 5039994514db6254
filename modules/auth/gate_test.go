package auth

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
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
	if cap(newGate(0).workers) != 1 {
		t.Error("a gate of size 0 must still let one through")
	}
}

// A job whose context has ended is skipped, whether or not a worker is
// free to take it; and a caller whose context ends while its job runs
// returns at once, without waiting for the job.
func TestGateContext(t *testing.T) {
	g := newGate(2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 100 {
		if err := g.do(ctx, func() { t.Error("ran a job whose context had ended") }); err != context.Canceled {
			t.Fatalf("ended context: %v", err)
		}
	}

	hold := make(chan struct{})
	defer close(hold)
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := g.do(ctx, func() { <-hold }); err != context.DeadlineExceeded {
		t.Errorf("context ended while running: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("waited %v for a job past its context", d)
	}
}

// An idle worker ends, giving back its place, and a new one starts for
// the next job.
func TestGateIdleWorker(t *testing.T) {
	g := newGate(1)
	g.idle = time.Millisecond
	for range 3 {
		if err := g.do(context.Background(), func() {}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(g.workers) != 0 {
			if time.Now().After(deadline) {
				t.Fatal("the idle worker did not end")
			}
			time.Sleep(time.Millisecond)
		}
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
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if ok, err := h.compare(cctx, hash, "correct horse battery"); ok || err != context.Canceled {
		t.Errorf("ended context: %v %v", ok, err)
	}
}

// While bcrypt runs GOMAXPROCS is one more than the workers, and only then.
func TestGateRaisesProcsWhileRunning(t *testing.T) {
	// Let an earlier test's raise be undone first.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		procs.mu.Lock()
		raised := procs.base != 0
		procs.mu.Unlock()
		if !raised {
			break
		}
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	defer func(d time.Duration) { procsLinger = d }(procsLinger)
	procsLinger = 10 * time.Millisecond
	g := newGate(1)
	var during int
	if err := g.do(context.Background(), func() { during = runtime.GOMAXPROCS(0) }); err != nil {
		t.Fatal(err)
	}
	if during != 2 {
		t.Errorf("GOMAXPROCS while bcrypt ran = %d, want 2", during)
	}
	time.Sleep(100 * time.Millisecond) // past procsLinger
	if after := runtime.GOMAXPROCS(0); after != 1 {
		t.Errorf("GOMAXPROCS after = %d, want 1 again", after)
	}
	runtime.GOMAXPROCS(4) // enough already: left alone
	if err := g.do(context.Background(), func() { during = runtime.GOMAXPROCS(0) }); err != nil {
		t.Fatal(err)
	}
	if during != 4 || runtime.GOMAXPROCS(0) != 4 {
		t.Errorf("GOMAXPROCS 4 was changed: %d during, %d after", during, runtime.GOMAXPROCS(0))
	}
}

// A compare against a hash of a lower cost (before auth.bcrypt_cost was
// raised) takes what one at the configured cost takes, padded from its own
// time; a burst of logins before must not leave the padding inflated, or
// such an account would answer slower than an unknown email instead.
func TestPaddingAfterABurst(t *testing.T) {
	h := &hasher{gate: newGate(1), cost: 10}
	ctx := context.Background()
	old, err := bcrypt.GenerateFromPassword([]byte("correct horse battery"), 8)
	if err != nil {
		t.Fatal(err)
	}
	h.dummyHash()
	var wg sync.WaitGroup
	for range 8 { // a burst of unknown emails, queued behind one worker
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = h.compare(ctx, nil, "guess") }()
	}
	wg.Wait()
	took := func(hash []byte) time.Duration {
		start := time.Now()
		if _, err := h.compare(ctx, hash, "wrong password guess"); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	// The fastest of five each, taken in turns, so that a loaded machine's
	// slow phases (CI runs other packages beside this one) fall on both.
	known, unknown := time.Hour, time.Hour
	for range 5 {
		known, unknown = min(known, took(old)), min(unknown, took(nil))
	}
	if known > 2*unknown || 2*known < unknown {
		t.Errorf("idle again: a wrong password for an account hashed at cost 8 takes %v, an unknown email %v", known, unknown)
	}
}
