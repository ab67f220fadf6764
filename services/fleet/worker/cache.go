package worker

import (
	"context"
	"io"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/services/fleet"
)

// modelCache keeps opened checkpoints (their safetensors headers parsed) for later tasks of the
// same model. Entries in use are never closed; idle ones are evicted oldest first.
type modelCache struct {
	mu      sync.Mutex
	max     int
	entries map[string]*modelEntry
	clock   int64
}

type modelEntry struct {
	ready chan struct{}
	m     *hfmodel.Model
	err   error
	refs  int
	used  int64
}

func newModelCache(n int) *modelCache { return &modelCache{max: n, entries: map[string]*modelEntry{}} }

func (c *modelCache) get(loc fleet.Location, name string, open func() (*hfmodel.Model, error)) (*hfmodel.Model, func(), error) {
	key := loc.Bucket + "\x00" + loc.Prefix + "\x00" + name
	c.mu.Lock()
	e, ok := c.entries[key]
	if !ok {
		e = &modelEntry{ready: make(chan struct{})}
		c.entries[key] = e
		c.mu.Unlock()
		e.m, e.err = open()
		close(e.ready)
		c.mu.Lock()
		if e.err != nil {
			delete(c.entries, key)
		}
	}
	e.refs++
	c.clock++
	e.used = c.clock
	c.mu.Unlock()
	<-e.ready
	release := func() {
		c.mu.Lock()
		e.refs--
		c.evictLocked()
		c.mu.Unlock()
	}
	if e.err != nil {
		release()
		return nil, nil, e.err
	}
	return e.m, release, nil
}

func (c *modelCache) evictLocked() {
	for len(c.entries) > c.max {
		var oldKey string
		var old *modelEntry
		for k, e := range c.entries {
			select {
			case <-e.ready:
			default:
				continue
			}
			if e.refs == 0 && (old == nil || e.used < old.used) {
				oldKey, old = k, e
			}
		}
		if old == nil {
			return
		}
		delete(c.entries, oldKey)
		if old.m != nil {
			old.m.Close()
		}
	}
}

func (c *modelCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		select {
		case <-e.ready:
			if e.m != nil {
				e.m.Close()
			}
		default:
		}
		delete(c.entries, k)
	}
}

// countStore counts the bytes read from object storage.
type countStore struct {
	blob.Store
	n prometheus.Counter
}

type countReader struct {
	blob.Reader
	n prometheus.Counter
}

func (r countReader) Read(p []byte) (int, error) {
	n, err := r.Reader.Read(p)
	r.n.Add(float64(n))
	return n, err
}

func (r countReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.Reader.ReadAt(p, off)
	r.n.Add(float64(n))
	return n, err
}

func (s countStore) Open(ctx context.Context, key string) (blob.Reader, error) {
	r, err := s.Store.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	return countReader{r, s.n}, nil
}

type countReadCloser struct {
	io.ReadCloser
	n prometheus.Counter
}

func (r countReadCloser) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n.Add(float64(n))
	return n, err
}

func (s countStore) Get(ctx context.Context, key string) (io.ReadCloser, blob.ObjectInfo, error) {
	rc, oi, err := s.Store.Get(ctx, key)
	if err != nil {
		return nil, oi, err
	}
	return countReadCloser{rc, s.n}, oi, nil
}
