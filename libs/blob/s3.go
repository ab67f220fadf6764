package blob

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"quantfleet.dev/libs/fault"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

var (
	// ErrNoSuchBucket is returned when the S3 store's bucket does not exist.
	ErrNoSuchBucket = fault.New(fault.ErrPermanent, "blob: bucket does not exist")
	// ErrUnavailable wraps failures that may pass: the server unreachable (refused, reset, DNS,
	// timeouts), a 5xx answer, throttling, a body cut short. It is fault.ErrTransient.
	ErrUnavailable = fault.New(fault.ErrTransient, "object storage unavailable")
)

// DefaultPartSize is the part size of S3 uploads of unknown length when PutOptions.PartSize is 0.
const DefaultPartSize = 16 << 20

// S3Options configures an S3 store. Credentials left empty come from the environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
type S3Options struct {
	// Endpoint is "host:port", or a URL "http://host:port" / "https://host:port" whose scheme
	// decides TLS.
	Endpoint string
	Bucket   string
	Region   string // default "us-east-1"; setting it avoids a bucket-location lookup
	// Insecure selects plain HTTP for a bare host:port endpoint.
	Insecure bool
	// TLSSkipVerify accepts any server certificate (self-signed test servers only).
	TLSSkipVerify bool

	AccessKey, SecretKey, SessionToken string

	// PublicEndpoint, if set, is the host presigned URLs point at (the endpoint clients outside
	// the cluster reach); same forms as Endpoint.
	PublicEndpoint string
	// PartSize is the default part size for uploads of unknown length; default DefaultPartSize.
	PartSize uint64
	// MaxRetries is how often one request is tried on transient errors (network errors, 5xx,
	// throttling), with exponential backoff and jitter, giving up when the context ends. Default 10.
	MaxRetries int
	// Transport replaces the HTTP transport (e.g. to dial a UNIX socket).
	Transport http.RoundTripper
}

// String describes the options without the credentials.
func (o S3Options) String() string {
	return fmt.Sprintf("s3 endpoint=%s bucket=%s region=%s insecure=%v", o.Endpoint, o.Bucket, o.Region, o.Insecure)
}

// S3 is a Store over one bucket of an S3-compatible server, through minio-go.
type S3 struct {
	client   *minio.Client
	core     minio.Core
	presign  *minio.Client
	bucket   string
	region   string
	partSize uint64
}

var _ Store = (*S3)(nil)

// NewS3 returns a store for opts.Bucket. It does no I/O; call EnsureBucket to create the bucket or
// Ping to check the server.
func NewS3(opts S3Options) (*S3, error) {
	if opts.Bucket == "" {
		return nil, errors.New("blob: s3: bucket is required")
	}
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.AccessKey == "" && opts.SecretKey == "" {
		opts.AccessKey = os.Getenv("AWS_ACCESS_KEY_ID")
		opts.SecretKey = os.Getenv("AWS_SECRET_ACCESS_KEY")
		opts.SessionToken = os.Getenv("AWS_SESSION_TOKEN")
	}
	if opts.PartSize == 0 {
		opts.PartSize = DefaultPartSize
	}
	client, err := newMinio(opts.Endpoint, opts)
	if err != nil {
		return nil, err
	}
	presign := client
	if opts.PublicEndpoint != "" {
		if presign, err = newMinio(opts.PublicEndpoint, opts); err != nil {
			return nil, err
		}
	}
	return &S3{client: client, core: minio.Core{Client: client}, presign: presign,
		bucket: opts.Bucket, region: opts.Region, partSize: opts.PartSize}, nil
}

func newMinio(endpoint string, opts S3Options) (*minio.Client, error) {
	secure := !opts.Insecure
	if strings.Contains(endpoint, "://") {
		u, err := url.Parse(endpoint)
		if err != nil {
			return nil, fmt.Errorf("blob: s3 endpoint %q: %w", endpoint, err)
		}
		switch u.Scheme {
		case "http":
			secure = false
		case "https":
			secure = true
		default:
			return nil, fmt.Errorf("blob: s3 endpoint %q: scheme must be http or https", endpoint)
		}
		if u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("blob: s3 endpoint %q: must not have a path", endpoint)
		}
		endpoint = u.Host
	}
	if endpoint == "" {
		return nil, errors.New("blob: s3: endpoint is required")
	}
	tr := opts.Transport
	if tr == nil && opts.TLSSkipVerify {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // opt-in for test servers
		tr = t
	}
	c, err := minio.New(endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(opts.AccessKey, opts.SecretKey, opts.SessionToken),
		Secure:       secure,
		Region:       opts.Region,
		Transport:    tr,
		MaxRetries:   opts.MaxRetries,
		BucketLookup: minio.BucketLookupPath, // self-hosted servers rarely have bucket DNS names
	})
	if err != nil {
		return nil, fmt.Errorf("blob: s3 endpoint %q: %w", endpoint, err)
	}
	return c, nil
}

// NewTransport returns an HTTP transport with minio-go's defaults (a pool of idle connections
// per host, no transparent gzip decoding), for stores that share one pool through
// S3Options.Transport and whose owner closes its idle connections when done.
func NewTransport() *http.Transport {
	t, err := minio.DefaultTransport(false) // fails only for secure=true with a bad SSL_CERT_FILE
	if err != nil {
		panic(err)
	}
	return t
}

// Client returns the underlying minio-go client.
func (s *S3) Client() *minio.Client { return s.client }

// Bucket returns the bucket name.
func (s *S3) Bucket() string { return s.bucket }

// EnsureBucket creates the bucket unless it exists already (idempotent).
func (s *S3) EnsureBucket(ctx context.Context) error {
	err := s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: s.region})
	if err == nil {
		return nil
	}
	if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" {
		return nil
	} else if code == "BucketAlreadyExists" {
		// Owned by someone else on shared S3, or a server that reports it this way for the owner:
		// usable only if we can see it.
		if ok, e := s.client.BucketExists(ctx, s.bucket); e == nil && ok {
			return nil
		}
	}
	return s.wrap("make bucket", "", err)
}

// Ping checks that the server answers and the bucket exists.
func (s *S3) Ping(ctx context.Context) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return s.wrap("ping", "", err)
	}
	if !ok {
		return fmt.Errorf("%w: %s", ErrNoSuchBucket, s.bucket)
	}
	return nil
}

// wrap maps S3 error codes to this package's sentinels.
func (s *S3) wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("blob: s3 %s %s: %w", op, key, err)
	}
	resp := minio.ToErrorResponse(err)
	switch resp.Code {
	case "NoSuchKey", "NotFound":
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	case "NoSuchBucket":
		return fmt.Errorf("%w: %s", ErrNoSuchBucket, s.bucket)
	case "InvalidRange":
		return fmt.Errorf("%w: %s: %s", ErrInvalidRange, key, resp.Message)
	}
	if resp.StatusCode == http.StatusNotFound && resp.Code == "" {
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if unavailable(resp, err) {
		return fmt.Errorf("%w: s3 %s %s/%s: %w", ErrUnavailable, op, s.bucket, key, err)
	}
	return fmt.Errorf("blob: s3 %s %s/%s: %w", op, s.bucket, key, err)
}

// unavailable reports S3 failures that may pass by themselves: network errors (minio-go returns
// them once its own retries are spent), server errors, throttling and timeouts.
func unavailable(resp minio.ErrorResponse, err error) bool {
	switch resp.Code {
	case "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed", "Throttling",
		"ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "OperationAborted":
		return true
	}
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout {
		return true
	}
	return netFailure(err)
}

// netFailure reports errors of the connection rather than of the request: refused, reset, DNS,
// timeouts, a body cut short.
func netFailure(err error) bool {
	var ne net.Error
	var op *net.OpError
	var ue *url.Error
	var dns *net.DNSError
	return errors.As(err, &ne) || errors.As(err, &op) || errors.As(err, &ue) || errors.As(err, &dns) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE)
}

// readErr classifies an error met while reading an object's body.
func readErr(key string, off int64, err error) error {
	if netFailure(err) {
		return fmt.Errorf("%w: s3 read %s at %d: %w", ErrUnavailable, key, off, err)
	}
	return fmt.Errorf("blob: s3 read %s at %d: %w", key, off, err)
}

func info(key string, oi minio.ObjectInfo) ObjectInfo {
	return ObjectInfo{Key: key, Size: oi.Size, ModTime: oi.LastModified, ETag: oi.ETag}
}

// Put implements Store. Known sizes above 16 MiB, and all unknown sizes, go up as multipart uploads.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (ObjectInfo, error) {
	if err := ValidateKey(key); err != nil {
		return ObjectInfo{}, err
	}
	if size < -1 {
		return ObjectInfo{}, fmt.Errorf("blob: put %s: size %d", key, size)
	}
	if sk, ok := r.(io.Seeker); ok && size >= 0 {
		// A short body would fail only after minio-go's retries; check up front when we can.
		if cur, err := sk.Seek(0, io.SeekCurrent); err == nil {
			if end, err := sk.Seek(0, io.SeekEnd); err == nil {
				if _, err := sk.Seek(cur, io.SeekStart); err != nil {
					return ObjectInfo{}, fmt.Errorf("blob: put %s: %w", key, err)
				}
				if end-cur < size {
					return ObjectInfo{}, fmt.Errorf("blob: put %s: reader has %d bytes, size says %d", key, end-cur, size)
				}
			}
		}
	}
	po := minio.PutObjectOptions{PartSize: opts.PartSize}
	if size == 0 {
		// Over plain HTTP minio-go signs bodies as aws-chunked streams. An empty stream still carries
		// a final chunk, which some servers (versitygw) leave unread on the connection; the next
		// request on it then reads a stray 400. An empty object needs no payload signature.
		po.DisableContentSha256 = true
	}
	if size < 0 && po.PartSize == 0 {
		// Without a part size minio-go sizes parts for a 5 TiB object (~537 MiB buffers).
		po.PartSize = s.partSize
	}
	ui, err := s.client.PutObject(ctx, s.bucket, key, r, size, po)
	if err != nil {
		return ObjectInfo{}, s.wrap("put", key, err)
	}
	if size >= 0 && ui.Size != size {
		_ = s.client.RemoveObject(context.WithoutCancel(ctx), s.bucket, key, minio.RemoveObjectOptions{})
		return ObjectInfo{}, fmt.Errorf("blob: put %s: wrote %d bytes, size says %d", key, ui.Size, size)
	}
	// Multipart completions may report no size or time: ask.
	return s.Stat(ctx, key)
}

// Get implements Store. A read that fails midway is resumed where it stopped (a few times, only
// while the object's ETag is unchanged).
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	if err := ValidateKey(key); err != nil {
		return nil, ObjectInfo{}, err
	}
	body, oi, _, err := s.core.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, ObjectInfo{}, s.wrap("get", key, err)
	}
	return &resumeReader{ctx: ctx, s: s, key: key, etag: oi.ETag, off: 0, end: oi.Size, body: body}, info(key, oi), nil
}

// GetRange implements Store.
func (s *S3) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if err := checkRange(offset, length); err != nil {
		return nil, err
	}
	if length == 0 || (offset == 0 && length == -1) {
		if length == 0 { // HTTP cannot ask for zero bytes; check the range against the size instead
			oi, err := s.Stat(ctx, key)
			if err != nil {
				return nil, err
			}
			if offset >= oi.Size && !(oi.Size == 0 && offset == 0) {
				return nil, fmt.Errorf("%w: offset %d, size of %s is %d", ErrInvalidRange, offset, key, oi.Size)
			}
			return io.NopCloser(bytes.NewReader(nil)), nil
		}
		rc, _, err := s.Get(ctx, key)
		return rc, err
	}
	return s.openRange(ctx, key, "", offset, length)
}

func (s *S3) openRange(ctx context.Context, key, etag string, offset, length int64) (*resumeReader, error) {
	var opts minio.GetObjectOptions
	end := int64(0) // SetRange end 0 with start > 0 means "to the end"
	if length > 0 {
		end = offset + length - 1
	}
	if err := opts.SetRange(offset, end); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRange, err)
	}
	if etag != "" {
		_ = opts.SetMatchETag(etag)
	}
	body, oi, _, err := s.core.GetObject(ctx, s.bucket, key, opts)
	if err != nil {
		err = s.wrap("get", key, err)
		if errors.Is(err, ErrInvalidRange) && offset == 0 {
			// An empty object has no byte 0; give the caller the empty read it asked for.
			if st, serr := s.Stat(ctx, key); serr == nil && st.Size == 0 {
				return &resumeReader{ctx: ctx, s: s, key: key, body: io.NopCloser(bytes.NewReader(nil))}, nil
			}
		}
		return nil, err
	}
	return &resumeReader{ctx: ctx, s: s, key: key, etag: oi.ETag, off: offset, end: offset + oi.Size, body: body}, nil
}

// resumeReader reads [off, end) of an object and reopens the range after a transient read error.
type resumeReader struct {
	ctx      context.Context
	s        *S3
	key      string
	etag     string
	off, end int64
	body     io.ReadCloser
	retries  int
}

const maxReadResumes = 5

func (r *resumeReader) Read(p []byte) (int, error) {
	for {
		if r.body == nil {
			if r.off >= r.end {
				return 0, io.EOF
			}
			nr, err := r.s.openRange(r.ctx, r.key, r.etag, r.off, r.end-r.off)
			if err != nil {
				return 0, err
			}
			r.body = nr.body
		}
		n, err := r.body.Read(p)
		r.off += int64(n)
		if err == nil {
			return n, nil
		}
		if err == io.EOF && r.off >= r.end {
			return n, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if r.ctx.Err() != nil || r.retries >= maxReadResumes || r.etag == "" {
			return n, readErr(r.key, r.off, err)
		}
		r.body.Close()
		r.body = nil
		r.retries++
		select {
		case <-time.After(time.Duration(r.retries) * 200 * time.Millisecond):
		case <-r.ctx.Done():
			return n, r.ctx.Err()
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (r *resumeReader) Close() error {
	if r.body == nil {
		return nil
	}
	err := r.body.Close()
	r.body = nil
	return err
}

// Open implements Store.
func (s *S3) Open(ctx context.Context, key string) (Reader, error) {
	oi, err := s.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	return &s3Reader{ctx: ctx, s: s, key: key, etag: oi.ETag, size: oi.Size}, nil
}

// s3Reader is a Reader whose ReadAt issues one ranged GET per call (so concurrent ReadAt calls run
// in parallel), and whose Read streams from the current offset.
type s3Reader struct {
	ctx        context.Context
	s          *S3
	key, etag  string
	size       int64
	off        int64
	stream     io.ReadCloser
	streamFrom int64
}

func (r *s3Reader) Size() int64 { return r.size }

func (r *s3Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: negative offset", ErrInvalidRange)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), r.size-off)
	if want == 0 {
		return 0, nil
	}
	rc, err := r.s.openRange(r.ctx, r.key, r.etag, off, want)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, p[:want])
	if err != nil {
		return n, readErr(r.key, off, err)
	}
	if int64(n) < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

func (r *s3Reader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if r.stream == nil || r.streamFrom != r.off {
		if r.stream != nil {
			r.stream.Close()
		}
		rc, err := r.s.openRange(r.ctx, r.key, r.etag, r.off, r.size-r.off)
		if err != nil {
			r.stream = nil
			return 0, err
		}
		r.stream, r.streamFrom = rc, r.off
	}
	n, err := r.stream.Read(p)
	r.off += int64(n)
	r.streamFrom = r.off
	if err == io.EOF && r.off < r.size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		err = readErr(r.key, r.off, err)
	}
	return n, err
}

func (r *s3Reader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return 0, errors.New("blob: seek: invalid whence")
	}
	if abs < 0 {
		return 0, fmt.Errorf("%w: seek to %d", ErrInvalidRange, abs)
	}
	r.off = abs
	return abs, nil
}

func (r *s3Reader) Close() error {
	if r.stream != nil {
		err := r.stream.Close()
		r.stream = nil
		return err
	}
	return nil
}

// Stat implements Store.
func (s *S3) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	if err := ValidateKey(key); err != nil {
		return ObjectInfo{}, err
	}
	oi, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, s.wrap("stat", key, err)
	}
	return info(key, oi), nil
}

// Exists implements Store.
func (s *S3) Exists(ctx context.Context, key string) (bool, error) {
	_, err := s.Stat(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// List implements Store.
func (s *S3) List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error] {
	return func(yield func(ObjectInfo, error) bool) {
		if err := validatePrefix(prefix); err != nil {
			yield(ObjectInfo{}, err)
			return
		}
		ctx, cancel := context.WithCancel(ctx) // stops minio-go's lister when we stop early
		defer cancel()
		for oi := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			if oi.Err != nil {
				yield(ObjectInfo{}, s.wrap("list", prefix, oi.Err))
				return
			}
			if strings.HasSuffix(oi.Key, "/") {
				continue // directory markers some servers (and the posix gateway) report
			}
			if !yield(info(oi.Key, oi), nil) {
				return
			}
		}
	}
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
	if err = s.wrap("delete", key, err); errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// DeletePrefix implements Store. It also aborts unfinished multipart uploads under prefix, so that
// cancelled jobs leave no hidden parts behind.
func (s *S3) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	if prefix == "" {
		return 0, fmt.Errorf("%w: DeletePrefix needs a non-empty prefix", ErrInvalidKey)
	}
	if err := validatePrefix(prefix); err != nil {
		return 0, err
	}
	var listErr error
	keys := func(yield func(minio.ObjectInfo) bool) {
		for oi, err := range s.List(ctx, prefix) {
			if err != nil {
				listErr = err
				return
			}
			if !yield(minio.ObjectInfo{Key: oi.Key}) {
				return
			}
		}
	}
	results, err := s.client.RemoveObjectsWithIter(ctx, s.bucket, keys, minio.RemoveObjectsOptions{})
	if err != nil {
		return 0, s.wrap("delete", prefix, err)
	}
	n := 0
	var firstErr error
	for res := range results {
		if res.Err != nil {
			if err := s.wrap("delete", res.ObjectName, res.Err); firstErr == nil && !errors.Is(err, ErrNotFound) {
				firstErr = err
			}
			continue
		}
		n++
	}
	if listErr != nil {
		return n, listErr
	}
	if firstErr != nil {
		return n, firstErr
	}
	for up := range s.client.ListIncompleteUploads(ctx, s.bucket, prefix, true) {
		if up.Err != nil {
			break // not every server lists uploads; the objects are gone either way
		}
		_ = s.core.AbortMultipartUpload(ctx, s.bucket, up.Key, up.UploadID)
	}
	return n, ctx.Err()
}

// PresignGet implements Store. The URL makes browsers and curl -J save the file under the key's
// base name.
func (s *S3) PresignGet(ctx context.Context, key string, expiry time.Duration) (string, error) {
	if _, err := s.Stat(ctx, key); err != nil {
		return "", err
	}
	params := url.Values{}
	params.Set("response-content-disposition", fmt.Sprintf("attachment; filename=%q", path.Base(key)))
	u, err := s.presign.PresignedGetObject(ctx, s.bucket, key, expiry, params)
	if err != nil {
		return "", s.wrap("presign", key, err)
	}
	return u.String(), nil
}

// Compose implements Store with one multipart upload: source ranges of 5 MiB or more become
// server-side UploadPartCopy parts; inline data and smaller ranges are gathered in memory into
// parts of at least 5 MiB (S3's minimum for all but the last part). Copies are pinned to the
// sources' ETags, so a source replaced meanwhile fails the compose instead of mixing versions.
func (s *S3) Compose(ctx context.Context, dst string, parts []Part) (ObjectInfo, error) {
	if err := ValidateKey(dst); err != nil {
		return ObjectInfo{}, err
	}
	etags := map[string]string{}
	segs := make([]segment, 0, len(parts))
	for _, p := range parts {
		if p.Key == "" {
			segs = append(segs, segment{data: p.Data})
			continue
		}
		if p.Key == dst {
			return ObjectInfo{}, fmt.Errorf("%w: compose destination %s is also a source", ErrInvalidKey, dst)
		}
		oi, err := s.Stat(ctx, p.Key)
		if err != nil {
			return ObjectInfo{}, fmt.Errorf("blob: compose %s: %w", dst, err)
		}
		etags[p.Key] = oi.ETag
		off, n, err := resolvePart(p, oi.Size)
		if err != nil {
			return ObjectInfo{}, fmt.Errorf("blob: compose %s: %w", dst, err)
		}
		segs = append(segs, segment{key: p.Key, off: off, n: n})
	}
	plan := planCompose(segs, minPartSize, maxCopySize, maxGlueBytes)
	if len(plan) > maxParts {
		return ObjectInfo{}, fmt.Errorf("blob: compose %s: %d parts exceed S3's %d", dst, len(plan), maxParts)
	}
	if len(plan) <= 1 && (len(plan) == 0 || !plan[0].copy) {
		// Small enough for one PUT.
		var buf []byte
		if len(plan) == 1 {
			var err error
			if buf, err = s.gather(ctx, plan[0], etags); err != nil {
				return ObjectInfo{}, fmt.Errorf("blob: compose %s: %w", dst, err)
			}
		}
		return s.Put(ctx, dst, bytes.NewReader(buf), int64(len(buf)), PutOptions{})
	}

	uploadID, err := s.core.NewMultipartUpload(ctx, s.bucket, dst, minio.PutObjectOptions{})
	if err != nil {
		return ObjectInfo{}, s.wrap("compose", dst, err)
	}
	abort := func(err error) (ObjectInfo, error) {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = s.core.AbortMultipartUpload(actx, s.bucket, dst, uploadID)
		return ObjectInfo{}, fmt.Errorf("blob: compose %s: %w", dst, err)
	}
	done := make([]minio.CompletePart, 0, len(plan))
	for i, p := range plan {
		num := i + 1
		if p.copy {
			hdr := map[string]string{"x-amz-copy-source-if-match": etags[p.src.key]}
			cp, err := s.core.CopyObjectPart(ctx, s.bucket, p.src.key, s.bucket, dst, uploadID, num, p.src.off, p.src.n, hdr)
			if err != nil {
				return abort(s.wrap("upload-part-copy", p.src.key, err))
			}
			done = append(done, cp)
			continue
		}
		buf, err := s.gather(ctx, p, etags)
		if err != nil {
			return abort(err)
		}
		op, err := s.core.PutObjectPart(ctx, s.bucket, dst, uploadID, num, bytes.NewReader(buf), int64(len(buf)), minio.PutObjectPartOptions{})
		if err != nil {
			return abort(s.wrap("upload-part", dst, err))
		}
		done = append(done, minio.CompletePart{PartNumber: num, ETag: op.ETag})
	}
	if _, err := s.core.CompleteMultipartUpload(ctx, s.bucket, dst, uploadID, done, minio.PutObjectOptions{}); err != nil {
		return abort(s.wrap("complete", dst, err))
	}
	return s.Stat(ctx, dst)
}

// gather materializes an in-memory part: inline data plus downloaded source ranges.
func (s *S3) gather(ctx context.Context, p plannedPart, etags map[string]string) ([]byte, error) {
	buf := make([]byte, 0, p.size)
	for _, piece := range p.pieces {
		if piece.data != nil {
			buf = append(buf, piece.data...)
			continue
		}
		rc, err := s.openRange(ctx, piece.key, etags[piece.key], piece.off, piece.n)
		if err != nil {
			return nil, err
		}
		b := buf[len(buf) : len(buf)+int(piece.n)]
		_, err = io.ReadFull(rc, b)
		rc.Close()
		if err != nil {
			return nil, readErr(piece.key, piece.off, err)
		}
		buf = buf[:len(buf)+int(piece.n)]
	}
	return buf, nil
}
