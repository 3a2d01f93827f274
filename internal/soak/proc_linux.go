package soak

import "syscall"

// childAttr makes a child die with the soak (SIGKILL when the soak's
// process ends, however it ends), so a killed soak leaves no servers or
// workers behind.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
