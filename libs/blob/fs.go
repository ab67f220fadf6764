package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// tmpSuffix marks in-progress writes; List never shows them.
const tmpSuffix = ".qf-tmp"

// syscallENOTDIR: opening "a/b" when "a" is a file means "a/b" does not exist.
const syscallENOTDIR = syscall.ENOTDIR

// FS is a Store over a local directory: an object is the file <root>/<key>. Writes go to a temporary
// file in the same directory, are synced, then renamed into place, so a reader never sees a partial
// object. Unlike S3, a key cannot be both an object and a prefix of others ("a" and "a/b").
type FS struct {
	root string
}

var _ Store = (*FS)(nil)

// NewFS returns a store rooted at dir, creating the directory if needed.
func NewFS(dir string) (*FS, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	return &FS{root: abs}, nil
}

// Root returns the store's directory.
func (s *FS) Root() string { return s.root }

func (s *FS) path(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	if strings.HasSuffix(key, tmpSuffix) {
		return "", fmt.Errorf("%w: key %q ends with the reserved suffix %s", ErrInvalidKey, key, tmpSuffix)
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

func notFound(key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscallENOTDIR) {
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return fmt.Errorf("blob: %s: %w", key, err)
}

// Put implements Store.
func (s *FS) Put(ctx context.Context, key string, r io.Reader, size int64, _ PutOptions) (ObjectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, err
	}
	return s.write(ctx, key, p, func(w io.Writer) (int64, error) {
		n, err := io.Copy(w, ctxReader{ctx, r})
		if err == nil && size >= 0 && n != size {
			err = fmt.Errorf("blob: put %s: read %d bytes, size says %d", key, n, size)
		}
		return n, err
	})
}

// write creates p atomically from fill.
func (s *FS) write(ctx context.Context, key, p string, fill func(io.Writer) (int64, error)) (ObjectInfo, error) {
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ObjectInfo{}, fmt.Errorf("blob: put %s: %w", key, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(p)+".*"+tmpSuffix)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("blob: put %s: %w", key, err)
	}
	tmp := f.Name()
	n, err := fill(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return ObjectInfo{}, fmt.Errorf("blob: put %s: %w", key, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return ObjectInfo{}, notFound(key, err)
	}
	return ObjectInfo{Key: key, Size: n, ModTime: fi.ModTime()}, nil
}

// Get implements Store.
func (s *FS) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	f, oi, err := s.open(ctx, key)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	return f, oi, nil
}

func (s *FS) open(ctx context.Context, key string) (*os.File, ObjectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return nil, ObjectInfo{}, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, ObjectInfo{}, notFound(key, err)
	}
	fi, err := f.Stat()
	if err != nil || fi.IsDir() {
		f.Close()
		return nil, ObjectInfo{}, notFound(key, fs.ErrNotExist)
	}
	return f, ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// GetRange implements Store.
func (s *FS) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := checkRange(offset, length); err != nil {
		return nil, err
	}
	f, oi, err := s.open(ctx, key)
	if err != nil {
		return nil, err
	}
	if offset >= oi.Size && !(oi.Size == 0 && offset == 0) {
		f.Close()
		return nil, fmt.Errorf("%w: offset %d, size of %s is %d", ErrInvalidRange, offset, key, oi.Size)
	}
	if length == -1 || offset+length > oi.Size {
		length = oi.Size - offset
	}
	return sectionCloser{io.NewSectionReader(f, offset, length), f}, nil
}

type sectionCloser struct {
	*io.SectionReader
	io.Closer
}

// Open implements Store.
func (s *FS) Open(ctx context.Context, key string) (Reader, error) {
	f, oi, err := s.open(ctx, key)
	if err != nil {
		return nil, err
	}
	return fileReader{f, oi.Size}, nil
}

type fileReader struct {
	*os.File
	size int64
}

func (r fileReader) Size() int64 { return r.size }

// Stat implements Store.
func (s *FS) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return ObjectInfo{}, notFound(key, err)
	}
	if fi.IsDir() {
		return ObjectInfo{}, notFound(key, fs.ErrNotExist)
	}
	return ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Exists implements Store.
func (s *FS) Exists(ctx context.Context, key string) (bool, error) {
	_, err := s.Stat(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// List implements Store.
func (s *FS) List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error] {
	return func(yield func(ObjectInfo, error) bool) {
		if err := validatePrefix(prefix); err != nil {
			yield(ObjectInfo{}, err)
			return
		}
		// Walk only the deepest directory the prefix names.
		start := s.root
		if i := strings.LastIndex(prefix, "/"); i >= 0 {
			start = filepath.Join(s.root, filepath.FromSlash(prefix[:i]))
		}
		var out []ObjectInfo
		err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if d.IsDir() || strings.HasSuffix(p, tmpSuffix) {
				return nil
			}
			rel, err := filepath.Rel(s.root, p)
			if err != nil {
				return err
			}
			key := filepath.ToSlash(rel)
			if !strings.HasPrefix(key, prefix) {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // deleted while listing
				}
				return err
			}
			out = append(out, ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
			return nil
		})
		if err != nil {
			yield(ObjectInfo{}, fmt.Errorf("blob: list %q: %w", prefix, err))
			return
		}
		// WalkDir orders by file name per directory, which differs from key order ("a/b" vs "a.b").
		slices.SortFunc(out, func(a, b ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
		for _, oi := range out {
			if !yield(oi, nil) {
				return
			}
		}
	}
}

// Delete implements Store.
func (s *FS) Delete(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		return nil // a "directory" is not an object
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscallENOTDIR) {
		return fmt.Errorf("blob: delete %s: %w", key, err)
	}
	s.pruneDirs(filepath.Dir(p))
	return nil
}

// pruneDirs removes now-empty parent directories up to the root, so deleted prefixes leave no
// directory litter. Failures (not empty, raced) are fine.
func (s *FS) pruneDirs(dir string) {
	for dir != s.root && strings.HasPrefix(dir, s.root+string(filepath.Separator)) {
		if os.Remove(dir) != nil {
			return
		}
		dir = filepath.Dir(dir)
	}
}

// DeletePrefix implements Store.
func (s *FS) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	if prefix == "" {
		return 0, fmt.Errorf("%w: DeletePrefix needs a non-empty prefix", ErrInvalidKey)
	}
	objs, err := ListAll(ctx, s, prefix)
	if err != nil {
		return 0, err
	}
	for i, oi := range objs {
		if err := s.Delete(ctx, oi.Key); err != nil {
			return i, err
		}
	}
	return len(objs), nil
}

// PresignGet returns a file:// URL of the object; it does not expire.
func (s *FS) PresignGet(ctx context.Context, key string, _ time.Duration) (string, error) {
	if _, err := s.Stat(ctx, key); err != nil {
		return "", err
	}
	p, _ := s.path(key)
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(p)}).String(), nil
}

// Compose implements Store by copying the parts into a new file.
func (s *FS) Compose(ctx context.Context, dst string, parts []Part) (ObjectInfo, error) {
	p, err := s.path(dst)
	if err != nil {
		return ObjectInfo{}, err
	}
	// Resolve every source first so a bad part fails before anything is written.
	type src struct {
		key    string
		off, n int64
		data   []byte
	}
	srcs := make([]src, len(parts))
	for i, part := range parts {
		if part.Key == "" {
			srcs[i] = src{data: part.Data}
			continue
		}
		if part.Key == dst {
			return ObjectInfo{}, fmt.Errorf("%w: compose destination %s is also a source", ErrInvalidKey, dst)
		}
		oi, err := s.Stat(ctx, part.Key)
		if err != nil {
			return ObjectInfo{}, fmt.Errorf("blob: compose %s: %w", dst, err)
		}
		off, n, err := resolvePart(part, oi.Size)
		if err != nil {
			return ObjectInfo{}, fmt.Errorf("blob: compose %s: %w", dst, err)
		}
		srcs[i] = src{key: part.Key, off: off, n: n}
	}
	return s.write(ctx, dst, p, func(w io.Writer) (int64, error) {
		var total int64
		for _, sr := range srcs {
			var r io.Reader = bytes.NewReader(sr.data)
			if sr.key != "" {
				rc, err := s.GetRange(ctx, sr.key, sr.off, sr.n)
				if errors.Is(err, ErrInvalidRange) && sr.n == 0 {
					continue
				}
				if err != nil {
					return total, err
				}
				defer rc.Close()
				r = io.LimitReader(rc, sr.n)
			}
			n, err := io.Copy(w, ctxReader{ctx, r})
			total += n
			if err != nil {
				return total, err
			}
		}
		return total, nil
	})
}

// ctxReader stops a copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
