//go:build unix

package gateway

import (
	"net"
	"syscall"
)

// directPath: the pool's idle check below needs a non-blocking peek.
const directPath = true

// quiet reports whether an idle connection is still open with nothing to
// read: the upstream has neither closed it nor sent anything unasked. It
// peeks without blocking or consuming.
func quiet(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var b [1]byte
	var rerr error
	err = raw.Read(func(fd uintptr) bool {
		_, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readiness
	})
	return err == nil && rerr == syscall.EAGAIN
}
