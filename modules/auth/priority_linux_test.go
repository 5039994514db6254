//go:build linux

package auth

import (
	"context"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// threadNice is the nice value of the calling thread. The raw Linux
// getpriority returns 20 - nice, so that it is never negative.
func threadNice() int {
	p, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	if err != nil {
		panic(err)
	}
	return 20 - p
}

// Locked in init, the main goroutine, and so TestMain, runs on the main
// thread.
func init() { runtime.LockOSThread() }

// fromMain is what TestMain saw when a worker started on the main thread.
var fromMain struct{ before, after, jobNice, jobTid int }

func TestMain(m *testing.M) {
	fromMain.before = threadNice()
	g := newGate(1)
	g.workers <- struct{}{} // as do does before it starts a worker
	j := &job{ctx: context.Background(), done: make(chan struct{}), f: func() {
		fromMain.jobNice, fromMain.jobTid = threadNice(), unix.Gettid()
	}}
	g.work(j)
	<-j.done
	fromMain.after = threadNice()
	os.Exit(m.Run())
}

// Jobs run on a thread at nice 19; the caller's own thread keeps its
// priority.
func TestGateNice(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNice()
	g := newGate(1)
	for range 2 { // the worker's first job and a later one
		var nice int
		if err := g.do(context.Background(), func() { nice = threadNice() }); err != nil {
			t.Fatal(err)
		}
		if nice != 19 {
			t.Errorf("job ran at nice %d, want 19", nice)
		}
	}
	if after := threadNice(); after != before {
		t.Errorf("caller's thread went from nice %d to %d", before, after)
	}
}

// A worker started on the main thread moves to another one, niced, and
// leaves the main thread, which ps shows as the process, as it was.
func TestGateMainThread(t *testing.T) {
	m := fromMain
	if m.jobTid == os.Getpid() || m.jobNice != 19 {
		t.Errorf("the job ran on thread %d (main %d) at nice %d", m.jobTid, os.Getpid(), m.jobNice)
	}
	if m.after != m.before {
		t.Errorf("the main thread went from nice %d to %d", m.before, m.after)
	}
}
