package quantize

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"sync"
)

// ShardCache is the local pipeline's ShardStore: a DirStore behind an in-memory write-back cache
// of at most Budget bytes. A job's objects are mostly read by the next few tasks and then deleted
// (plan.Consumed): a shard's activations by the layer's Hessian and forward tasks, a partial
// Hessian by the group's solve. Kept in memory, they need neither the disk nor a second copy in
// the page cache; an object reaches the directory only when the budget evicts it (least recently
// used first), and one deleted before that never does. With a budget of two shards' activations
// a one-shard job (a GPU's usual setting) writes no activations at all, and memory still does
// not grow with the calibration set.
type ShardCache struct {
	Dir    DirStore
	Budget int64 // bytes kept in memory; 0 keeps nothing

	mu   sync.Mutex
	used int64
	lru  []*cachedObject // least recently used first
}

type cachedObject struct {
	key string
	b   []byte
}

// Get implements ShardStore. It returns a copy: decoders may keep the memory they are given
// (UnmarshalActivations does).
func (c *ShardCache) Get(ctx context.Context, key string) ([]byte, error) {
	c.mu.Lock()
	if i := c.find(key); i >= 0 {
		o := c.lru[i]
		c.lru = append(slices.Delete(c.lru, i, i+1), o)
		b := slices.Clone(o.b)
		c.mu.Unlock()
		return b, nil
	}
	c.mu.Unlock()
	return c.Dir.Get(ctx, key)
}

// Put implements ShardStore; the cache keeps b, which the caller must not modify afterwards.
func (c *ShardCache) Put(ctx context.Context, key string, b []byte) error {
	if int64(len(b)) > c.Budget {
		if err := c.Delete(key); err != nil {
			return err
		}
		return c.Dir.Put(ctx, key, b)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if i := c.find(key); i >= 0 { // a re-run task: same bytes, the newer copy wins
		c.used -= int64(len(c.lru[i].b))
		c.lru = slices.Delete(c.lru, i, i+1)
	}
	for c.used+int64(len(b)) > c.Budget {
		o := c.lru[0]
		if err := c.Dir.Put(ctx, o.key, o.b); err != nil {
			return err
		}
		c.used -= int64(len(o.b))
		c.lru = c.lru[1:]
	}
	c.lru = append(c.lru, &cachedObject{key: key, b: b})
	c.used += int64(len(b))
	return nil
}

// Take is Get and Delete in one, without Get's copy of what memory holds: the caller owns the
// bytes returned.
func (c *ShardCache) Take(ctx context.Context, key string) ([]byte, error) {
	c.mu.Lock()
	var b []byte
	if i := c.find(key); i >= 0 {
		b = c.lru[i].b
	}
	c.mu.Unlock()
	if b == nil {
		var err error
		if b, err = c.Dir.Get(ctx, key); err != nil {
			return nil, err
		}
	}
	return b, c.Delete(key)
}

// Delete removes an object from memory and from the directory.
func (c *ShardCache) Delete(key string) error {
	c.mu.Lock()
	if i := c.find(key); i >= 0 {
		c.used -= int64(len(c.lru[i].b))
		c.lru = slices.Delete(c.lru, i, i+1)
	}
	c.mu.Unlock()
	if err := c.Dir.Delete(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (c *ShardCache) find(key string) int {
	return slices.IndexFunc(c.lru, func(o *cachedObject) bool { return o.key == key })
}
