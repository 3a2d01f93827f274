//go:build linux

package natstest

import "syscall"

// procAttr makes a node die with the test binary, even one killed before
// its cleanup could run (a test run cut short): no nats-server is left
// behind holding its ports.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
