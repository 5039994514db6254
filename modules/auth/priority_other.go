//go:build !linux

package auth

// lowerThreadPriority does nothing here: only Linux sets the priority of
// one thread; bcrypt work is then bounded by the gate alone.
func lowerThreadPriority() bool { return true }

// lowerProcessPriority does nothing here either.
func lowerProcessPriority() {}
