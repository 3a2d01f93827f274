//go:build linux

package natstest

import (
	"fmt"
	"sync"
	"syscall"
)

// reserve binds a TCP socket to a port the kernel picks on 127.0.0.1 and
// never listens on it: connections to it are refused, and without
// SO_REUSEADDR no other socket may bind the port (nor does the kernel pick
// it as a client's own port) until it is closed.
func reserve() (string, func(), error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("socket: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		return "", nil, fmt.Errorf("bind: %w", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		return "", nil, fmt.Errorf("getsockname: %w", err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	return fmt.Sprintf("127.0.0.1:%d", port), sync.OnceFunc(func() { syscall.Close(fd) }), nil
}
