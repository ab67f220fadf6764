package quantize

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"quantfleet.dev/libs/transformer"
)

func TestShardCache(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := &ShardCache{Dir: DirStore(dir), Budget: 10}
	onDisk := func(key string) bool {
		_, err := os.Stat(filepath.Join(dir, key))
		return err == nil
	}
	get := func(key string, want []byte) {
		t.Helper()
		b, err := c.Get(ctx, key)
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("Get(%s) = %q, %v; want %q", key, b, err, want)
		}
	}
	put := func(key string, b []byte) {
		t.Helper()
		if err := c.Put(ctx, key, b); err != nil {
			t.Fatal(err)
		}
	}

	put("a", []byte("aaaa"))
	put("b", []byte("bbbb"))
	if onDisk("a") || onDisk("b") {
		t.Fatal("objects within the budget were written to the directory")
	}
	got, _ := c.Get(ctx, "a")
	got[0] = 'X' // a caller's change must not reach the cached copy
	get("a", []byte("aaaa"))

	// "b" is now the least recently used: a third object evicts it to the directory.
	put("c", []byte("cccc"))
	if !onDisk("b") || onDisk("a") || onDisk("c") {
		t.Fatalf("eviction: on disk a=%v b=%v c=%v, want only b", onDisk("a"), onDisk("b"), onDisk("c"))
	}
	get("b", []byte("bbbb"))

	// Deleted before eviction: never written; deleted after: gone from the directory too.
	if err := c.Delete("a"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete("b"); err != nil || onDisk("b") {
		t.Fatalf("Delete(b): %v, still on disk %v", err, onDisk("b"))
	}
	if _, err := c.Get(ctx, "a"); err == nil {
		t.Fatal("Get of a deleted object succeeded")
	}

	// An object larger than the budget goes straight to the directory.
	put("big", bytes.Repeat([]byte("z"), 11))
	if !onDisk("big") {
		t.Fatal("an object over the budget was kept in memory")
	}
	get("big", bytes.Repeat([]byte("z"), 11))
	get("c", []byte("cccc"))

	// Take: from memory and from the directory, the object gone from both afterwards.
	for key, want := range map[string][]byte{"c": []byte("cccc"), "big": bytes.Repeat([]byte("z"), 11)} {
		b, err := c.Take(ctx, key)
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("Take(%s) = %q, %v; want %q", key, b, err, want)
		}
		if _, err := c.Get(ctx, key); err == nil || onDisk(key) {
			t.Fatalf("%s still readable after Take (on disk %v)", key, onDisk(key))
		}
	}
	if _, err := c.Take(ctx, "c"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Take of a taken object: %v, want fs.ErrNotExist", err)
	}
}

// BenchmarkActivations encodes and decodes one shard of 8 × 2048 tokens of a 4096-wide model
// (256 MiB): the local pipeline does this for every task of a calibrated layer.
func BenchmarkActivations(b *testing.B) {
	x := transformer.NewTensor(8, 2048, 4096)
	b.SetBytes(int64(4 * len(x.Data)))
	for b.Loop() {
		if _, err := UnmarshalActivations(MarshalActivations(x)); err != nil {
			b.Fatal(err)
		}
	}
}
