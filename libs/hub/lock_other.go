//go:build !(linux || darwin || freebsd || openbsd || netbsd || dragonfly)

package hub

import (
	"context"
	"sync"
)

// lockFile without flock only excludes goroutines of this process.
var (
	locksMu sync.Mutex
	locks   = map[string]chan struct{}{}
)

func lockFile(ctx context.Context, p string) (unlock func(), err error) {
	locksMu.Lock()
	ch, ok := locks[p]
	if !ok {
		ch = make(chan struct{}, 1)
		locks[p] = ch
	}
	locksMu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
