//go:build unix

package atomicfile

import (
	"fmt"
	"os"
	"syscall"
)

// canLock: a live writer holds an flock on its temporary file.
const canLock = true

// lockPath opens the file or directory at path and takes an exclusive flock on it without waiting:
// it fails while another open file (of this process or another) holds the lock. Closing the returned
// file, or the process ending, releases the lock.
func lockPath(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return f, nil
}
