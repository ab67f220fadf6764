// Package blobtest is the contract every blob.Store implementation must pass.
//
//	func TestContract(t *testing.T) {
//		blobtest.RunContract(t, func(t *testing.T) blob.Store { return newEmptyStore(t) })
//	}
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"quantfleet.dev/libs/blob"
)

const mib = 1 << 20

// RunContract runs the contract as subtests. newStore must return an empty store for each call; it
// may register cleanups on t.
func RunContract(t *testing.T, newStore func(t *testing.T) blob.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, blob.Store)
	}{
		{"PutGet", testPutGet},
		{"PutStream", testPutStream},
		{"PutShortReader", testPutShortReader},
		{"Overwrite", testOverwrite},
		{"StatExists", testStatExists},
		{"GetRange", testGetRange},
		{"Open", testOpen},
		{"List", testList},
		{"Delete", testDelete},
		{"DeletePrefix", testDeletePrefix},
		{"InvalidKeys", testInvalidKeys},
		{"PresignGet", testPresignGet},
		{"ComposeSmall", testComposeSmall},
		{"ComposeLarge", testComposeLarge},
		{"ComposeErrors", testComposeErrors},
		{"Cancelled", testCancelled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// Data returns n pseudo-random bytes determined by seed.
func Data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := 0; k < 8; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func put(t *testing.T, s blob.Store, key string, b []byte) blob.ObjectInfo {
	t.Helper()
	oi, err := s.Put(ctx(t), key, bytes.NewReader(b), int64(len(b)), blob.PutOptions{})
	if err != nil {
		t.Fatalf("Put %s: %v", key, err)
	}
	if oi.Key != key || oi.Size != int64(len(b)) {
		t.Fatalf("Put %s returned %+v, want size %d", key, oi, len(b))
	}
	return oi
}

func get(t *testing.T, s blob.Store, key string) []byte {
	t.Helper()
	rc, oi, err := s.Get(ctx(t), key)
	if err != nil {
		t.Fatalf("Get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get %s: read: %v", key, err)
	}
	if oi.Size != int64(len(b)) {
		t.Fatalf("Get %s: info size %d, read %d bytes", key, oi.Size, len(b))
	}
	return b
}

func same(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: %d bytes, want %d; first difference at byte %d", what, len(got), len(want), i)
	}
}

func testPutGet(t *testing.T, s blob.Store) {
	for _, n := range []int{0, 1, 1000, 5*mib + 7, 17 * mib} { // 17 MiB: multipart with known size on S3
		key := fmt.Sprintf("obj/size-%d.bin", n)
		want := Data(uint64(n), n)
		put(t, s, key, want)
		same(t, key, get(t, s, key), want)
	}
}

// onlyReader hides io.Seeker/ReaderAt, as a network stream would.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func testPutStream(t *testing.T, s blob.Store) {
	want := Data(7, 12*mib+333)
	oi, err := s.Put(ctx(t), "stream/a.bin", onlyReader{bytes.NewReader(want)}, -1, blob.PutOptions{PartSize: 5 * mib})
	if err != nil {
		t.Fatal(err)
	}
	if oi.Size != int64(len(want)) {
		t.Fatalf("size %d, want %d", oi.Size, len(want))
	}
	same(t, "stream", get(t, s, "stream/a.bin"), want)
	// Unknown size without a part size uses the store default (and must not need 500 MiB).
	small := Data(8, 3000)
	if _, err := s.Put(ctx(t), "stream/b.bin", onlyReader{bytes.NewReader(small)}, -1, blob.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	same(t, "stream default part size", get(t, s, "stream/b.bin"), small)
}

func testPutShortReader(t *testing.T, s blob.Store) {
	_, err := s.Put(ctx(t), "short.bin", bytes.NewReader(make([]byte, 10)), 20, blob.PutOptions{})
	if err == nil {
		t.Fatal("Put with a reader shorter than size succeeded")
	}
	if ok, err := s.Exists(ctx(t), "short.bin"); err != nil || ok {
		t.Fatalf("failed Put left an object (exists=%v, err=%v)", ok, err)
	}
}

func testOverwrite(t *testing.T, s blob.Store) {
	put(t, s, "k", []byte("first version"))
	put(t, s, "k", []byte("v2"))
	same(t, "overwritten", get(t, s, "k"), []byte("v2"))
}

func testStatExists(t *testing.T, s blob.Store) {
	before := time.Now().Add(-2 * time.Second)
	put(t, s, "a/b/c.bin", Data(1, 1234))
	oi, err := s.Stat(ctx(t), "a/b/c.bin")
	if err != nil {
		t.Fatal(err)
	}
	if oi.Key != "a/b/c.bin" || oi.Size != 1234 || oi.ModTime.Before(before) || oi.ModTime.After(time.Now().Add(2*time.Second)) {
		t.Fatalf("Stat = %+v", oi)
	}
	for _, key := range []string{"a/b/missing", "a/b", "a"} { // "a/b" is a prefix, not an object
		if _, err := s.Stat(ctx(t), key); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat %s: err = %v, want ErrNotFound", key, err)
		}
		if ok, err := s.Exists(ctx(t), key); err != nil || ok {
			t.Errorf("Exists %s = %v, %v; want false, nil", key, ok, err)
		}
		if _, _, err := s.Get(ctx(t), key); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Get %s: err = %v, want ErrNotFound", key, err)
		}
	}
	if ok, err := s.Exists(ctx(t), "a/b/c.bin"); err != nil || !ok {
		t.Errorf("Exists = %v, %v; want true", ok, err)
	}
}

func testGetRange(t *testing.T, s blob.Store) {
	want := Data(3, 6*mib+10)
	put(t, s, "r.bin", want)
	put(t, s, "empty.bin", nil)
	size := int64(len(want))
	tests := []struct {
		key         string
		off, n      int64
		lo, hi      int64 // expected slice of want
		errInvalid  bool
		errNotFound bool
	}{
		{key: "r.bin", off: 0, n: 10, lo: 0, hi: 10},
		{key: "r.bin", off: 5*mib - 3, n: 1000, lo: 5*mib - 3, hi: 5*mib + 997},
		{key: "r.bin", off: 100, n: -1, lo: 100, hi: size},
		{key: "r.bin", off: 0, n: -1, lo: 0, hi: size},
		{key: "r.bin", off: size - 1, n: 1, lo: size - 1, hi: size},
		{key: "r.bin", off: size - 5, n: 100, lo: size - 5, hi: size}, // cut short at the end
		{key: "r.bin", off: 7, n: 0, lo: 7, hi: 7},
		{key: "r.bin", off: size, n: 1, errInvalid: true},
		{key: "r.bin", off: size + 10, n: -1, errInvalid: true},
		{key: "r.bin", off: -1, n: 1, errInvalid: true},
		{key: "r.bin", off: 0, n: -2, errInvalid: true},
		{key: "empty.bin", off: 0, n: -1, lo: 0, hi: 0},
		{key: "empty.bin", off: 0, n: 5, lo: 0, hi: 0},
		{key: "nope.bin", off: 0, n: 5, errNotFound: true},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s@%d+%d", tt.key, tt.off, tt.n)
		rc, err := s.GetRange(ctx(t), tt.key, tt.off, tt.n)
		switch {
		case tt.errInvalid:
			if !errors.Is(err, blob.ErrInvalidRange) {
				t.Errorf("%s: err = %v, want ErrInvalidRange", name, err)
			}
			continue
		case tt.errNotFound:
			if !errors.Is(err, blob.ErrNotFound) {
				t.Errorf("%s: err = %v, want ErrNotFound", name, err)
			}
			continue
		case err != nil:
			t.Errorf("%s: %v", name, err)
			continue
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Errorf("%s: read: %v", name, err)
			continue
		}
		if !bytes.Equal(got, want[tt.lo:tt.hi]) {
			t.Errorf("%s: got %d bytes, want bytes %d..%d", name, len(got), tt.lo, tt.hi)
		}
	}
}

func testOpen(t *testing.T, s blob.Store) {
	want := Data(4, 2*mib+17)
	put(t, s, "open.bin", want)
	r, err := s.Open(ctx(t), "open.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() != int64(len(want)) {
		t.Fatalf("Size %d", r.Size())
	}
	// Concurrent random ReadAt.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := 0; i < 8; i++ {
				off := rng.Int64N(int64(len(want)))
				n := rng.IntN(70000) + 1
				buf := make([]byte, n)
				m, err := r.ReadAt(buf, off)
				end := min(off+int64(n), int64(len(want)))
				if int64(m) != end-off || !bytes.Equal(buf[:m], want[off:end]) {
					errs <- fmt.Errorf("ReadAt(%d, %d) = %d bytes, %v", off, n, m, err)
					return
				}
				if end-off < int64(n) && err != io.EOF {
					errs <- fmt.Errorf("short ReadAt(%d, %d): err %v, want io.EOF", off, n, err)
					return
				}
				if end-off == int64(n) && err != nil {
					errs <- fmt.Errorf("full ReadAt(%d, %d): err %v", off, n, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n, err := r.ReadAt(make([]byte, 4), int64(len(want))); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at end = %d, %v; want 0, EOF", n, err)
	}
	// Sequential reads and seeks.
	if _, err := r.Seek(1*mib, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 100)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatal(err)
	}
	same(t, "after Seek", head, want[mib:mib+100])
	if pos, err := r.Seek(-50, io.SeekEnd); err != nil || pos != int64(len(want))-50 {
		t.Fatalf("Seek end: %d %v", pos, err)
	}
	tail, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	same(t, "tail", tail, want[len(want)-50:])
	if _, err := s.Open(ctx(t), "missing"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Open missing: %v", err)
	}
}

func testList(t *testing.T, s blob.Store) {
	keys := []string{"jobs/1/b", "jobs/1/a", "jobs/12/x", "jobs/1/sub/c", "jobs/2/a", "other", "jobs.txt"}
	for i, k := range keys {
		put(t, s, k, Data(uint64(i), i*10))
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"jobs/1/", []string{"jobs/1/a", "jobs/1/b", "jobs/1/sub/c"}},
		{"jobs/1", []string{"jobs/1/a", "jobs/1/b", "jobs/1/sub/c", "jobs/12/x"}},
		{"jobs", []string{"jobs.txt", "jobs/1/a", "jobs/1/b", "jobs/1/sub/c", "jobs/12/x", "jobs/2/a"}},
		{"", []string{"jobs.txt", "jobs/1/a", "jobs/1/b", "jobs/1/sub/c", "jobs/12/x", "jobs/2/a", "other"}},
		{"nothing/", nil},
		{"jobs/1/sub/c", []string{"jobs/1/sub/c"}},
	}
	size := map[string]int64{}
	for i, k := range keys {
		size[k] = int64(i * 10)
	}
	for _, tt := range tests {
		got, err := blob.ListAll(ctx(t), s, tt.prefix)
		if err != nil {
			t.Fatalf("List %q: %v", tt.prefix, err)
		}
		var names []string
		for _, oi := range got {
			names = append(names, oi.Key)
			if oi.Size != size[oi.Key] {
				t.Errorf("List %q: %s size %d, want %d", tt.prefix, oi.Key, oi.Size, size[oi.Key])
			}
		}
		if strings.Join(names, ",") != strings.Join(tt.want, ",") {
			t.Errorf("List %q = %v, want %v", tt.prefix, names, tt.want)
		}
	}
	// Breaking out early must work.
	n := 0
	for _, err := range s.List(ctx(t), "jobs/") {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 2 {
			break
		}
	}
	if n != 2 {
		t.Errorf("early stop saw %d", n)
	}
}

func testDelete(t *testing.T, s blob.Store) {
	put(t, s, "d/x", []byte("x"))
	put(t, s, "d/y", []byte("y"))
	if err := s.Delete(ctx(t), "d/x"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.Exists(ctx(t), "d/x"); ok {
		t.Fatal("deleted object still exists")
	}
	if err := s.Delete(ctx(t), "d/x"); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}
	same(t, "sibling survives", get(t, s, "d/y"), []byte("y"))
}

func testDeletePrefix(t *testing.T, s blob.Store) {
	for i := 0; i < 25; i++ {
		put(t, s, fmt.Sprintf("jobs/j1/shards/%02d", i), []byte{byte(i)})
	}
	put(t, s, "jobs/j1/manifest.json", []byte("{}"))
	put(t, s, "jobs/j10/keep", []byte("k"))
	put(t, s, "jobs/j2/keep", []byte("k"))
	n, err := s.DeletePrefix(ctx(t), "jobs/j1/")
	if err != nil || n != 26 {
		t.Fatalf("DeletePrefix = %d, %v; want 26", n, err)
	}
	left, err := blob.ListAll(ctx(t), s, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || left[0].Key != "jobs/j10/keep" || left[1].Key != "jobs/j2/keep" {
		t.Fatalf("left %v", left)
	}
	if n, err := s.DeletePrefix(ctx(t), "jobs/j1/"); err != nil || n != 0 {
		t.Fatalf("second DeletePrefix = %d, %v", n, err)
	}
	if _, err := s.DeletePrefix(ctx(t), ""); !errors.Is(err, blob.ErrInvalidKey) {
		t.Fatalf("DeletePrefix(\"\") err = %v, want ErrInvalidKey", err)
	}
}

func testInvalidKeys(t *testing.T, s blob.Store) {
	for _, key := range []string{"", "/abs", "a//b", "a/../b", "..", "./a", "a/", "a\\b", "nul\x00", strings.Repeat("k", 1025), "bad\xff"} {
		if _, err := s.Put(ctx(t), key, bytes.NewReader(nil), 0, blob.PutOptions{}); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Put %q: err = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Stat(ctx(t), key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Stat %q: err = %v, want ErrInvalidKey", key, err)
		}
		if err := s.Delete(ctx(t), key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Delete %q: err = %v, want ErrInvalidKey", key, err)
		}
	}
	// Keys with ordinary punctuation work.
	for _, key := range []string{"a b/c=d+e,f@g.bin", "ünïcode/ключ", "x..y"} {
		put(t, s, key, []byte(key))
		same(t, key, get(t, s, key), []byte(key))
	}
}

func testPresignGet(t *testing.T, s blob.Store) {
	want := Data(5, 300000)
	put(t, s, "dl/model-Q4_K_M.gguf", want)
	u, err := s.PresignGet(ctx(t), "dl/model-Q4_K_M.gguf", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	same(t, "presigned download", fetchURL(t, u), want)
	if _, err := s.PresignGet(ctx(t), "dl/missing", time.Minute); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("presign missing: err = %v, want ErrNotFound", err)
	}
}

// fetchURL downloads an http(s) or file URL without any credentials.
func fetchURL(t *testing.T, raw string) []byte {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme == "file" {
		b, err := os.ReadFile(u.Path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	resp, err := http.Get(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET presigned: %s: %s", resp.Status, b)
	}
	return b
}

func testComposeSmall(t *testing.T, s blob.Store) {
	a, b := Data(10, 1000), Data(11, 2000)
	put(t, s, "c/a", a)
	put(t, s, "c/b", b)
	header := []byte("GGUF-header")
	parts := []blob.Part{blob.DataPart(header), blob.ObjectPart("c/a"), blob.RangePart("c/b", 100, 50), blob.DataPart(nil), blob.ObjectPart("c/b")}
	oi, err := s.Compose(ctx(t), "c/out", parts)
	if err != nil {
		t.Fatal(err)
	}
	want := concat(header, a, b[100:150], b)
	if oi.Size != int64(len(want)) {
		t.Fatalf("size %d, want %d", oi.Size, len(want))
	}
	same(t, "composed", get(t, s, "c/out"), want)
	// Empty compose gives an empty object.
	if oi, err := s.Compose(ctx(t), "c/empty", nil); err != nil || oi.Size != 0 {
		t.Fatalf("empty compose: %+v %v", oi, err)
	}
}

func concat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// testComposeLarge mixes inline data, big shards (server-side copies on S3) and small shards that
// must be merged because every S3 part but the last needs 5 MiB.
func testComposeLarge(t *testing.T, s blob.Store) {
	big1, big2 := Data(20, 6*mib+5), Data(21, 5*mib)
	small1, small2, small3 := Data(22, 1*mib), Data(23, 3*mib+1), Data(24, 1000)
	put(t, s, "shards/big1", big1)
	put(t, s, "shards/big2", big2)
	put(t, s, "shards/small1", small1)
	put(t, s, "shards/small2", small2)
	put(t, s, "shards/small3", small3)
	header := Data(25, 4096)
	tests := []struct {
		name  string
		parts []blob.Part
		want  []byte
	}{
		{"header+shards", []blob.Part{blob.DataPart(header), blob.ObjectPart("shards/big1"), blob.ObjectPart("shards/small1"),
			blob.ObjectPart("shards/big2"), blob.ObjectPart("shards/small2"), blob.ObjectPart("shards/small3")},
			concat(header, big1, small1, big2, small2, small3)},
		{"small first", []blob.Part{blob.ObjectPart("shards/small3"), blob.ObjectPart("shards/small1"), blob.ObjectPart("shards/big1"),
			blob.ObjectPart("shards/small2")},
			concat(small3, small1, big1, small2)},
		{"ranges", []blob.Part{blob.RangePart("shards/big1", 7, 5*mib+100), blob.DataPart([]byte("glue")), blob.RangePart("shards/big2", mib, -1)},
			concat(big1[7:7+5*mib+100], []byte("glue"), big2[mib:])},
		{"big only", []blob.Part{blob.ObjectPart("shards/big2"), blob.ObjectPart("shards/big1")}, concat(big2, big1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oi, err := s.Compose(ctx(t), "out/"+tt.name, tt.parts)
			if err != nil {
				t.Fatal(err)
			}
			if oi.Size != int64(len(tt.want)) {
				t.Fatalf("size %d, want %d", oi.Size, len(tt.want))
			}
			same(t, tt.name, get(t, s, "out/"+tt.name), tt.want)
		})
	}
}

func testComposeErrors(t *testing.T, s blob.Store) {
	put(t, s, "e/a", Data(30, 6*mib))
	tests := []struct {
		name  string
		parts []blob.Part
		err   error
	}{
		{"missing source", []blob.Part{blob.ObjectPart("e/a"), blob.ObjectPart("e/missing")}, blob.ErrNotFound},
		{"range past end", []blob.Part{blob.RangePart("e/a", 6*mib-10, 11)}, blob.ErrInvalidRange},
		{"negative offset", []blob.Part{blob.RangePart("e/a", -1, 5)}, blob.ErrInvalidRange},
		{"self", []blob.Part{blob.ObjectPart("e/out")}, blob.ErrInvalidKey},
		{"bad key", []blob.Part{blob.ObjectPart("../x")}, blob.ErrInvalidKey},
	}
	for _, tt := range tests {
		if _, err := s.Compose(ctx(t), "e/out", tt.parts); !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
		}
		if ok, _ := s.Exists(ctx(t), "e/out"); ok {
			t.Fatalf("%s: failed compose left e/out behind", tt.name)
		}
	}
}

func testCancelled(t *testing.T, s blob.Store) {
	put(t, s, "x", []byte("x"))
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Put(c, "y", bytes.NewReader([]byte("y")), 1, blob.PutOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context: %v", err)
	}
	if _, err := s.Stat(c, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("Stat with a cancelled context: %v", err)
	}
	if _, err := blob.ListAll(c, s, ""); err == nil {
		// An S3 lister may finish before it notices; it must not report a different error, though.
		t.Log("List with a cancelled context returned no error")
	}
	if ok, _ := s.Exists(ctx(t), "y"); ok {
		t.Error("Put with a cancelled context stored the object")
	}
}
