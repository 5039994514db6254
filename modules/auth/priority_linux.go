//go:build linux

package auth

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// lowerThreadPriority sets the calling OS thread (not the whole process)
// to nice 19. The scheduler then gives it CPU only when threads at the
// normal nice 0 leave some (weight 15 against 1024), and lets them
// preempt it when they wake. The caller must be locked to its thread.
// It refuses the main thread (false), which stands for the process in
// ps and top. Raising one's own nice needs no privilege; should it fail
// anyway, the work runs at normal priority, bounded as before.
func lowerThreadPriority() bool {
	tid := unix.Gettid()
	if tid == unix.Getpid() {
		return false
	}
	_ = unix.Setpriority(unix.PRIO_PROCESS, tid, 19)
	return true
}

// lowerProcessPriority sets every thread of this process to nice 19: the
// bcrypt helper process. Linux keeps a nice value per thread, and threads
// made later inherit their creator's, so the ones that exist now are all
// that need it.
func lowerProcessPriority() {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		_ = unix.Setpriority(unix.PRIO_PROCESS, 0, 19)
		return
	}
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			_ = unix.Setpriority(unix.PRIO_PROCESS, tid, 19)
		}
	}
}
