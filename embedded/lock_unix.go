//go:build unix

package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// lockDir takes an exclusive flock on dir's lock file, creating dir if
// need be. The kernel releases a flock when its holder dies, so a worker
// killed with SIGKILL leaves no stale lock behind.
func lockDir(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded: data dir: %w", err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("embedded: data dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			by := strings.TrimSpace(string(holder))
			if by == "" {
				by = "another process"
			}
			return nil, fmt.Errorf("embedded: %w: %s is held by %s", ErrDataDirLocked, dir, by)
		}
		return nil, fmt.Errorf("embedded: data dir lock %s: %w", path, err)
	}
	// Who holds it, for the error above; best effort.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(fmt.Sprintf("pid %d\n", os.Getpid())), 0)
	}
	return func() { f.Close() }, nil // closing the file releases the flock
}
