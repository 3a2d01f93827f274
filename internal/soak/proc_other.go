//go:build !linux

package soak

import "syscall"

// childAttr: elsewhere than Linux the children are stopped by the soak's
// clean-up only.
func childAttr() *syscall.SysProcAttr { return nil }
