// Package blob is quantfleet's object storage: a small Store interface with two implementations, an
// S3 store over minio-go (any S3-compatible server; the fleet's only network storage path) and a
// local filesystem store. Both pass the same contract suite (package blobtest).
//
// Keys are slash-separated paths relative to the store's root ("jobs/<id>/shards/3.bin"); see
// ValidateKey for the rules.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"quantfleet.dev/libs/fault"
	"strings"
	"time"
	"unicode/utf8"
)

var (
	// ErrNotFound is returned when an object (or a compose source) does not exist.
	ErrNotFound = fault.New(fault.ErrPermanent, "blob: object not found")
	// ErrInvalidKey is returned for a key that breaks the ValidateKey rules.
	ErrInvalidKey = fault.New(fault.ErrBadInput, "blob: invalid key")
	// ErrInvalidRange is returned for a negative offset or length, or an offset at or past the end of
	// a non-empty object.
	ErrInvalidRange = errors.New("blob: invalid range")
)

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
	ETag    string // the S3 ETag (empty for the filesystem store); opaque
}

// PutOptions tunes Put.
type PutOptions struct {
	// PartSize is the multipart part size for uploads of unknown size (size -1); it bounds the
	// memory an upload buffers. Zero means the store's default (16 MiB for S3). Min 5 MiB on S3.
	PartSize uint64
}

// Part is one piece of a Compose: either inline Data, or Length bytes of the object Key starting at
// Offset (Length -1: to the end of the object).
type Part struct {
	Data   []byte
	Key    string
	Offset int64
	Length int64
}

// DataPart returns an inline part.
func DataPart(b []byte) Part { return Part{Data: b} }

// ObjectPart returns a part that is the whole object key.
func ObjectPart(key string) Part { return Part{Key: key, Length: -1} }

// RangePart returns a part of length bytes of key starting at offset.
func RangePart(key string, offset, length int64) Part {
	return Part{Key: key, Offset: offset, Length: length}
}

// Reader reads one object: sequentially (Read, Seek) or at random offsets (ReadAt, safe for
// concurrent use).
type Reader interface {
	io.ReadSeekCloser
	io.ReaderAt
	Size() int64
}

// Store is an object store. Implementations are safe for concurrent use.
type Store interface {
	// Put stores r under key, replacing any existing object atomically: readers see the old object
	// or the new one, never a partial one. size is r's length, or -1 when unknown (a stream,
	// uploaded in opts.PartSize pieces).
	Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (ObjectInfo, error)
	// Get opens the whole object.
	Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error)
	// GetRange opens length bytes starting at offset (length -1: to the end). A range that runs
	// past the end is cut short, as in HTTP.
	GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	// Open returns a Reader for random access; each ReadAt is one ranged read.
	Open(ctx context.Context, key string) (Reader, error)
	// Stat returns the object's info or ErrNotFound.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// Exists reports whether key exists.
	Exists(ctx context.Context, key string) (bool, error)
	// List yields every object whose key starts with prefix (a plain string prefix, recursive), in
	// key order. Stop early by breaking out of the loop.
	List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error]
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// DeletePrefix removes every object under prefix and returns how many it removed. An empty
	// prefix is refused (ErrInvalidKey) so that a bug cannot wipe a store.
	DeletePrefix(ctx context.Context, prefix string) (int, error)
	// PresignGet returns a URL that downloads key without credentials until expiry (S3: 1 s to
	// 7 days; the filesystem store returns a file:// URL that does not expire).
	PresignGet(ctx context.Context, key string, expiry time.Duration) (string, error)
	// Compose writes the concatenation of parts to dst without passing copied ranges through this
	// process where the backend can avoid it (S3: multipart upload with server-side part copies).
	// dst must not be one of the sources.
	Compose(ctx context.Context, dst string, parts []Part) (ObjectInfo, error)
}

// ValidateKey checks that key is usable on every backend: non-empty, at most 1024 bytes of valid
// UTF-8, no NUL or backslash, not starting or ending with "/", and no empty, "." or ".." segments.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	case len(key) > 1024:
		return fmt.Errorf("%w: key longer than 1024 bytes", ErrInvalidKey)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: key %q is not valid UTF-8", ErrInvalidKey, key)
	case strings.ContainsAny(key, "\x00\\"):
		return fmt.Errorf("%w: key %q contains NUL or backslash", ErrInvalidKey, key)
	case strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/"):
		return fmt.Errorf("%w: key %q starts or ends with /", ErrInvalidKey, key)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: key %q has an empty, . or .. segment", ErrInvalidKey, key)
		}
	}
	return nil
}

// validatePrefix accepts the prefixes List and DeletePrefix take: a key, a key plus "/", or part of a
// segment ("jobs/12" matches "jobs/123/…").
func validatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	return ValidateKey(strings.TrimSuffix(prefix, "/"))
}

// ListAll collects List into a slice.
func ListAll(ctx context.Context, s Store, prefix string) ([]ObjectInfo, error) {
	var out []ObjectInfo
	for oi, err := range s.List(ctx, prefix) {
		if err != nil {
			return nil, err
		}
		out = append(out, oi)
	}
	return out, nil
}

// checkRange validates a requested range against nothing but itself.
func checkRange(offset, length int64) error {
	if offset < 0 || length < -1 {
		return fmt.Errorf("%w: offset %d length %d", ErrInvalidRange, offset, length)
	}
	return nil
}

// resolvePart returns a source part's offset and length given the source's size.
func resolvePart(p Part, size int64) (int64, int64, error) {
	if p.Offset < 0 || p.Length < -1 || p.Offset > size {
		return 0, 0, fmt.Errorf("%w: part %s offset %d length %d, object size %d", ErrInvalidRange, p.Key, p.Offset, p.Length, size)
	}
	n := p.Length
	if n == -1 {
		n = size - p.Offset
	}
	if p.Offset+n > size {
		return 0, 0, fmt.Errorf("%w: part %s offset %d length %d, object size %d", ErrInvalidRange, p.Key, p.Offset, p.Length, size)
	}
	return p.Offset, n, nil
}
