// Package objfs presents the objects under a prefix of a blob.Store as a read-only io/fs.FS whose
// files implement io.ReaderAt, so that hfmodel.Open reads a checkpoint straight from object storage:
// each ReadAt is one ranged GET, and nothing is downloaded that is not asked for.
package objfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"quantfleet.dev/libs/blob"
)

// FS is a snapshot of the object listing under a prefix taken by New. Files are opened lazily.
type FS struct {
	ctx    context.Context
	store  blob.Store
	prefix string // "" or ends with "/"
	files  map[string]blob.ObjectInfo
	dirs   map[string][]string // directory → sorted child names
}

var (
	_ fs.StatFS    = (*FS)(nil)
	_ fs.ReadDirFS = (*FS)(nil)
)

// New lists the objects under prefix (a "directory": "models/abc" and "models/abc/" are the same)
// and returns a file system over them. ctx bounds every later read.
func New(ctx context.Context, store blob.Store, prefix string) (*FS, error) {
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	f := &FS{ctx: ctx, store: store, prefix: prefix, files: map[string]blob.ObjectInfo{}, dirs: map[string][]string{".": nil}}
	for oi, err := range store.List(ctx, prefix) {
		if err != nil {
			return nil, fmt.Errorf("objfs: listing %s: %w", prefix, err)
		}
		name := strings.TrimPrefix(oi.Key, prefix)
		if !fs.ValidPath(name) {
			continue
		}
		f.files[name] = oi
		f.addParents(name)
	}
	for d := range f.dirs {
		slices.Sort(f.dirs[d])
		f.dirs[d] = slices.Compact(f.dirs[d])
	}
	return f, nil
}

func (f *FS) addParents(name string) {
	for name != "." {
		dir := path.Dir(name)
		f.dirs[dir] = append(f.dirs[dir], path.Base(name)) // duplicates are compacted by New
		name = dir
	}
}

// Prefix returns the listed prefix, "" or ending in "/".
func (f *FS) Prefix() string { return f.prefix }

// Files returns the file names (slash-separated, relative to the prefix) in sorted order.
func (f *FS) Files() []string {
	out := make([]string, 0, len(f.files))
	for n := range f.files {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Open implements fs.FS. Regular files implement io.ReaderAt and io.Seeker.
func (f *FS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if oi, ok := f.files[name]; ok {
		return &file{fs: f, name: name, info: oi}, nil
	}
	if kids, ok := f.dirs[name]; ok {
		return &dir{name: name, kids: kids, fs: f}, nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

// Stat implements fs.StatFS without I/O.
func (f *FS) Stat(name string) (fs.FileInfo, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrInvalid}
	}
	if oi, ok := f.files[name]; ok {
		return fileInfo{name: path.Base(name), size: oi.Size, mod: oi.ModTime}, nil
	}
	if _, ok := f.dirs[name]; ok {
		return fileInfo{name: path.Base(name), dir: true}, nil
	}
	return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
}

// ReadDir implements fs.ReadDirFS without I/O.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrInvalid}
	}
	kids, ok := f.dirs[name]
	if !ok {
		if _, isFile := f.files[name]; isFile {
			return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
		}
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	return f.entries(name, kids), nil
}

func (f *FS) entries(dirName string, kids []string) []fs.DirEntry {
	out := make([]fs.DirEntry, 0, len(kids))
	for _, k := range kids {
		full := path.Join(dirName, k)
		info, _ := f.Stat(full)
		out = append(out, fs.FileInfoToDirEntry(info))
	}
	return out
}

type fileInfo struct {
	name string
	size int64
	mod  time.Time
	dir  bool
}

func (i fileInfo) Name() string       { return i.name }
func (i fileInfo) Size() int64        { return i.size }
func (i fileInfo) ModTime() time.Time { return i.mod }
func (i fileInfo) IsDir() bool        { return i.dir }
func (i fileInfo) Sys() any           { return nil }
func (i fileInfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o555
	}
	return 0o444
}

// file is a lazily opened object: the store reader is created on first read.
type file struct {
	fs   *FS
	name string
	info blob.ObjectInfo

	mu     sync.Mutex
	r      blob.Reader
	closed bool
}

func (f *file) Stat() (fs.FileInfo, error) {
	return fileInfo{name: path.Base(f.name), size: f.info.Size, mod: f.info.ModTime}, nil
}

func (f *file) reader() (blob.Reader, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrClosed}
	}
	if f.r == nil {
		r, err := f.fs.store.Open(f.fs.ctx, f.fs.prefix+f.name)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: f.name, Err: err}
		}
		f.r = r
	}
	return f.r, nil
}

func (f *file) Read(p []byte) (int, error) {
	r, err := f.reader()
	if err != nil {
		return 0, err
	}
	return r.Read(p)
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	r, err := f.reader()
	if err != nil {
		return 0, err
	}
	return r.ReadAt(p, off)
}

func (f *file) Seek(offset int64, whence int) (int64, error) {
	r, err := f.reader()
	if err != nil {
		return 0, err
	}
	return r.Seek(offset, whence)
}

func (f *file) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.name, Err: fs.ErrClosed}
	}
	f.closed = true
	if f.r != nil {
		return f.r.Close()
	}
	return nil
}

var (
	_ io.ReaderAt = (*file)(nil)
	_ io.Seeker   = (*file)(nil)
)

type dir struct {
	fs   *FS
	name string
	kids []string
	pos  int
}

func (d *dir) Stat() (fs.FileInfo, error) { return fileInfo{name: path.Base(d.name), dir: true}, nil }
func (d *dir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: errors.New("is a directory")}
}
func (d *dir) Close() error { return nil }

func (d *dir) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.kids[d.pos:]
	if n > 0 && len(rest) == 0 {
		return nil, io.EOF
	}
	if n > 0 && n < len(rest) {
		rest = rest[:n]
	}
	d.pos += len(rest)
	return d.fs.entries(d.name, rest), nil
}
