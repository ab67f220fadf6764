//go:build !unix

package atomicfile

import "os"

// Without flock a live writer cannot be told from a crashed one: cleanStale removes nothing.
const canLock = false

// lockPath only opens path.
func lockPath(path string) (*os.File, error) { return os.Open(path) }
