package auth

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// gate runs the bcrypt computations on at most n worker goroutines, each
// locked to its own OS thread at the lowest priority (nice 19 on Linux,
// see lowerThreadPriority). A login flood then queues here instead of
// taking every core, and the kernel runs the workers only with the CPU
// that request goroutines leave: a request's thread preempts a worker's
// as soon as it wakes, so token-checked requests keep their latency,
// while logins still get all the CPU when nothing else wants it.
//
// Workers start on demand and end after idleWorker without work: the
// gate has no Close, and a worker that ends takes its niced thread with
// it (a locked goroutine that exits terminates its thread).
type gate struct {
	jobs    chan *job     // hands a job to an idle worker
	workers chan struct{} // one token per running worker, at most n
	idle    time.Duration // idleWorker; shorter in tests
}

// job is one computation handed to a worker; done closes when it ran or
// was skipped.
type job struct {
	ctx  context.Context
	f    func()
	done chan struct{}
}

// idleWorker is how long a worker waits for a job before it ends. A new
// thread costs microseconds next to a bcrypt computation's milliseconds.
const idleWorker = 10 * time.Second

func newGate(n int) gate {
	return gate{jobs: make(chan *job), workers: make(chan struct{}, max(n, 1)), idle: idleWorker}
}

// do runs f on a worker once one is free, and waits for it. It returns
// ctx's error if ctx ends first: a job not yet started is then skipped,
// and one already running finishes on its worker without this caller,
// so f must not write anything the caller reads after an error.
func (g gate) do(ctx context.Context, f func()) error {
	j := &job{ctx: ctx, f: f, done: make(chan struct{})}
	select {
	case g.jobs <- j: // an idle worker took it
	case g.workers <- struct{}{}: // room for one more worker
		go g.work(j)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-j.done:
		return ctx.Err() // non-nil if the worker skipped it
	case <-ctx.Done():
		return ctx.Err()
	}
}

// work runs jobs on a niced thread until none comes for g.idle.
func (g gate) work(j *job) {
	// Never unlocked once niced: the thread keeps nice 19, and must not
	// go back to the runtime's pool to run other goroutines. It ends
	// with this goroutine.
	runtime.LockOSThread()
	if !lowerThreadPriority() {
		// This is the process's main thread, whose nice ps and top show
		// as the whole process's: leave it as it is. Holding it while a
		// new goroutine locks its own thread gives that one another.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			g.work(j)
		}()
		<-locked
		runtime.UnlockOSThread()
		return
	}
	defer func() { <-g.workers }()
	idle := time.NewTimer(g.idle)
	defer idle.Stop()
	for {
		if j.ctx.Err() == nil { // else its caller is gone: skip it
			procs.raise(cap(g.workers) + 1)
			j.f()
			procs.lower()
		}
		close(j.done)
		idle.Reset(g.idle)
		select {
		case j = <-g.jobs:
		case <-idle.C:
			return
		}
	}
}

// procs raises GOMAXPROCS while bcrypt runs. A worker holds a P while it
// computes, and with no P left requests would wait for the Go scheduler to
// preempt it (10 ms slices) however low its OS priority; one P more than
// the workers lets the kernel pick requests over bcrypt. Raised only while
// some bcrypt runs, because a P more than the cores costs requests some
// throughput the rest of the time (on one core, GOMAXPROCS 2 against 1:
// about 15 % fewer requests a second). GOMAXPROCS is the process's, so
// this is too.
var procs procBoost

type procBoost struct {
	mu      sync.Mutex
	running int
	base    int // GOMAXPROCS before the first running job raised it; 0 if not raised
	gen     int // counts the times running fell to 0: a later restore supersedes
}

// procsLinger is how long GOMAXPROCS stays raised after the last bcrypt.
var procsLinger = time.Second

func (p *procBoost) raise(need int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running++
	if p.running == 1 {
		if cur := runtime.GOMAXPROCS(0); cur < need {
			if p.base == 0 { // else still raised from the last job, restore pending
				p.base = cur
			}
			runtime.GOMAXPROCS(need)
		}
	}
}

// lower restores GOMAXPROCS once no bcrypt has run for procsLinger, so
// that logins back to back (a flood) do not stop the world twice each.
func (p *procBoost) lower() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running--
	if p.running == 0 && p.base > 0 {
		p.gen++
		gen := p.gen
		time.AfterFunc(procsLinger, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.running == 0 && p.base > 0 && p.gen == gen {
				runtime.GOMAXPROCS(p.base)
				p.base = 0
			}
		})
	}
}

// hasher does the module's bcrypt work behind the gate, and keeps the
// dummy hash that unknown emails are compared against.
type hasher struct {
	gate  gate
	cost  int
	once  sync.Once
	dummy []byte
	// procs, when set, runs compare and hash in helper processes (see
	// worker.go); the gate then serves only as the fallback should a
	// helper fail to start or die, which is logged once.
	procs    *helpers
	log      *slog.Logger
	fellBack sync.Once
}

// dummyHash is made once, on a worker like any bcrypt work, in the
// background from start (see warm), so that starting does not wait a
// bcrypt computation.
func (h *hasher) dummyHash() []byte {
	h.once.Do(func() {
		// Background never ends, so do returns only once the hash is made.
		_ = h.gate.do(context.Background(), func() {
			h.dummy, _ = bcrypt.GenerateFromPassword([]byte("not a password of anyone"), h.cost)
		})
	})
	return h.dummy
}

// warm makes the dummy hash ahead of the first login that needs it.
func (h *hasher) warm() { go h.dummyHash() }

// compare reports whether password matches hash. A nil hash compares
// against the dummy, to cost the same time; callers ignore that answer.
//
// A hash made at a lower cost (before auth.bcrypt_cost was raised; Login
// rehashes it at the next sign-in) is quicker to check than the dummy, and
// an answer that came sooner would tell that the email has an account: so
// such a compare is padded to the time one at the configured cost would
// have taken, from its own: bcrypt's work doubles with each step of cost.
// Measured on the request itself, the padding follows the machine's load
// as the dummy's time does, and no earlier burst can inflate it.
func (h *hasher) compare(ctx context.Context, hash []byte, password string) (bool, error) {
	if hash == nil {
		hash = h.dummyHash()
	}
	start := time.Now()
	ok, err := h.compareAt(ctx, hash, password)
	if err != nil {
		return false, err
	}
	if cost, _ := bcrypt.Cost(hash); cost < h.cost {
		took := time.Since(start)
		if wait := min(took<<(h.cost-cost)-took, maxPadding); wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return false, ctx.Err()
			}
		}
	}
	return ok, nil
}

// maxPadding bounds compare's padding: a check of a much cheaper hash,
// queued behind others, would otherwise scale its wait in the queue too.
const maxPadding = 5 * time.Second

func (h *hasher) compareAt(ctx context.Context, hash []byte, password string) (bool, error) {
	if h.procs != nil {
		status, _, err := h.procs.do(ctx, 'C', 0, hash, []byte(password))
		if err == nil || ctx.Err() != nil {
			return status == 1, err
		}
		h.fallBack(err)
	}
	var ok bool
	if err := h.gate.do(ctx, func() { ok = bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil }); err != nil {
		return false, err
	}
	return ok, nil
}

// hash returns the bcrypt hash of password.
func (h *hasher) hash(ctx context.Context, password string) ([]byte, error) {
	if h.procs != nil {
		status, out, err := h.procs.do(ctx, 'H', h.cost, nil, []byte(password))
		if err == nil && status != 1 {
			err = errors.New("bcrypt worker: hashing failed")
		}
		if err == nil || ctx.Err() != nil {
			return out, err
		}
		h.fallBack(err)
	}
	var out []byte
	var herr error
	if err := h.gate.do(ctx, func() { out, herr = bcrypt.GenerateFromPassword([]byte(password), h.cost) }); err != nil {
		return nil, err
	}
	return out, herr
}

func (h *hasher) fallBack(err error) {
	h.fellBack.Do(func() {
		h.log.Error("bcrypt helper process failed; bcrypt runs in this process instead", "error", err.Error())
	})
}
