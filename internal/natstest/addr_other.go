//go:build !linux

package natstest

import "net"

// reserve falls back, off Linux, to a port that was free a moment ago:
// nothing holds it, so another process may take it first.
func reserve() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, func() {}, nil
}
