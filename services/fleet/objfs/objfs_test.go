package objfs_test

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"testing"
	"testing/fstest"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/services/fleet/objfs"
)

func put(t *testing.T, s blob.Store, key string, data []byte) {
	t.Helper()
	if _, err := s.Put(context.Background(), key, bytes.NewReader(data), int64(len(data)), blob.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestFSConformance(t *testing.T) {
	s, err := blob.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"models/abc/config.json":        `{"a":1}`,
		"models/abc/model.safetensors":  "0123456789",
		"models/abc/sub/tokenizer.json": "{}",
		"models/abc/sub/deeper/x.txt":   "x",
		"models/abcdef/not-mine.json":   "no", // shares the string prefix, not the directory
		"models/other/config.json":      "no",
	}
	for k, v := range files {
		put(t, s, k, []byte(v))
	}
	ctx := context.Background()
	for _, prefix := range []string{"models/abc", "models/abc/"} {
		fsys, err := objfs.New(ctx, s, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if err := fstest.TestFS(fsys, "config.json", "model.safetensors", "sub/tokenizer.json", "sub/deeper/x.txt"); err != nil {
			t.Fatal(err)
		}
		if got := fsys.Files(); len(got) != 4 {
			t.Errorf("prefix %q: files %v", prefix, got)
		}
		if _, err := fs.Stat(fsys, "not-mine.json"); err == nil {
			t.Errorf("prefix %q: a sibling prefix's object is visible", prefix)
		}
	}
}

// TestReadAtIsRanged checks that a file's ReadAt reads only the asked range.
func TestReadAtIsRanged(t *testing.T) {
	s, err := blob.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	put(t, s, "m/w.safetensors", data)
	cs := &countStore{Store: s}
	fsys, err := objfs.New(context.Background(), cs, "m")
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsys.Open("w.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ra := f.(io.ReaderAt)
	buf := make([]byte, 100)
	if _, err := ra.ReadAt(buf, 5000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, data[5000:5100]) {
		t.Fatal("wrong bytes")
	}
	if _, err := ra.ReadAt(buf, int64(len(data))-50); err != io.EOF {
		t.Errorf("short read at the end: err %v, want io.EOF", err)
	}
	if cs.read > 200 {
		t.Errorf("%d bytes read for 150 asked", cs.read)
	}
}

type countStore struct {
	blob.Store
	read int64
}

type countReader struct {
	blob.Reader
	s *countStore
}

func (r countReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.Reader.ReadAt(p, off)
	r.s.read += int64(n)
	return n, err
}

func (c *countStore) Open(ctx context.Context, key string) (blob.Reader, error) {
	r, err := c.Store.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	return countReader{r, c}, nil
}
