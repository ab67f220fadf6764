package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"quantfleet.dev/libs/fault"
)

func TestCommitAndAbort(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(dir, "out.bin", Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("hello"))
	if _, err := os.Stat(filepath.Join(dir, "out.bin")); !os.IsNotExist(err) {
		t.Fatalf("final file exists before Commit: %v", err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	f.Abort() // no-op after Commit
	b, err := os.ReadFile(filepath.Join(dir, "out.bin"))
	if err != nil || string(b) != "hello" {
		t.Fatalf("committed file: %q, %v", b, err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "out.bin")); st.Mode().Perm() != Mode {
		t.Errorf("mode %v, want %v", st.Mode().Perm(), os.FileMode(Mode))
	}

	g, err := Create(dir, "other.bin", Options{})
	if err != nil {
		t.Fatal(err)
	}
	g.Write([]byte("partial"))
	g.Abort()
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("after Abort the directory holds %v, want only out.bin", entries)
	}
}

func TestCreateInMissingDir(t *testing.T) {
	if _, err := Create(filepath.Join(t.TempDir(), "missing"), "x", Options{}); err == nil {
		t.Fatal("Create in a missing directory succeeded")
	}
}

func TestCheckName(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"x.gguf", true}, {".hidden", true}, {"a.partial.txt", true},
		{"", false}, {".", false}, {"..", false}, {"a/b", false}, {`a\b`, false}, {"../x", false},
		{".x.gguf.123.partial", false}, {".x.1.partial.old", false},
	} {
		if err := CheckName(c.name); (err == nil) != c.ok {
			t.Errorf("CheckName(%q) = %v, want ok %v", c.name, err, c.ok)
		}
	}
}

// TestDirReplace: a directory output replaces its own earlier output (the marker) and nothing
// else, unless Overwrite.
func TestDirReplace(t *testing.T) {
	write := func(dir, name string, o Options) error {
		d, err := MkdirTemp(dir, name, o)
		if err != nil {
			return err
		}
		defer d.Abort()
		if err := os.WriteFile(filepath.Join(d.Path, "weights"), []byte("new"), 0o644); err != nil {
			t.Fatal(err)
		}
		return d.Commit()
	}
	dir := t.TempDir()
	if err := write(dir, "ckpt", Options{}); err != nil {
		t.Fatal(err)
	}
	if err := write(dir, "ckpt", Options{}); err != nil {
		t.Errorf("replacing its own output: %v", err)
	}
	os.MkdirAll(filepath.Join(dir, "mine"), 0o755)
	os.WriteFile(filepath.Join(dir, "mine", "f"), []byte("keep"), 0o644)
	if err := write(dir, "mine", Options{}); !errors.Is(err, ErrExists) || !fault.BadInput(err) {
		t.Errorf("replacing an unrelated directory: %v, want ErrExists (bad input)", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "mine", "f")); string(b) != "keep" {
		t.Error("the unrelated directory was changed")
	}
	if err := write(dir, "mine", Options{Overwrite: true}); err != nil {
		t.Errorf("with Overwrite: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("directory holds %v, want ckpt and mine only", entries)
	}
}

func TestCopyFile(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(filepath.Join(src, "tokenizer.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A longer file at dst must be replaced, not overwritten in place.
	if err := os.WriteFile(dst, []byte("an older, longer file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CopyFile(os.DirFS(src), "tokenizer.json", dst); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "{}" {
		t.Errorf("copy holds %q (%v)", b, err)
	}
	if err := CopyFile(os.DirFS(src), "missing.json", dst); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("copying a missing file: %v", err)
	}
}
