package blob_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/blob/blobtest"
	"quantfleet.dev/libs/blob/s3embed"
	"quantfleet.dev/libs/fault"
)

// gw is the one embedded S3 gateway of this test binary (versitygw allows one per process).
var gw *s3embed.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "blob-s3-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gw, err = s3embed.Start(context.Background(), dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start embedded S3:", err)
		os.Exit(1)
	}
	code := m.Run()
	gw.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

var bucketSeq atomic.Int64

func newS3(t *testing.T, edit func(*blob.S3Options)) *blob.S3 {
	t.Helper()
	opts := blob.S3Options{
		Endpoint: gw.Endpoint, Insecure: true, Region: gw.Region,
		Bucket:    fmt.Sprintf("test-%d-%d", time.Now().UnixNano()%1e6, bucketSeq.Add(1)),
		AccessKey: gw.AccessKey, SecretKey: gw.SecretKey,
	}
	if edit != nil {
		edit(&opts)
	}
	s, err := blob.NewS3(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureBucket(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestS3Contract(t *testing.T) {
	blobtest.RunContract(t, func(t *testing.T) blob.Store { return newS3(t, nil) })
}

func TestS3EnsureBucketIdempotent(t *testing.T) {
	s := newS3(t, nil)
	for i := 0; i < 2; i++ {
		if err := s.EnsureBucket(t.Context()); err != nil {
			t.Fatalf("EnsureBucket #%d: %v", i+2, err)
		}
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	other, err := blob.NewS3(blob.S3Options{Endpoint: "http://" + gw.Endpoint, Bucket: "never-created",
		AccessKey: gw.AccessKey, SecretKey: gw.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Ping(t.Context()); !errors.Is(err, blob.ErrNoSuchBucket) {
		t.Fatalf("Ping on a missing bucket: %v, want ErrNoSuchBucket", err)
	}
	if _, err := other.Put(t.Context(), "k", strings.NewReader("v"), 1, blob.PutOptions{}); !errors.Is(err, blob.ErrNoSuchBucket) {
		t.Fatalf("Put in a missing bucket: %v, want ErrNoSuchBucket", err)
	}
}

func TestS3CredentialsFromEnv(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", gw.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", gw.SecretKey)
	s := newS3(t, func(o *blob.S3Options) { o.AccessKey, o.SecretKey = "", "" })
	if _, err := s.Put(t.Context(), "k", strings.NewReader("v"), 1, blob.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
	bad, err := blob.NewS3(blob.S3Options{Endpoint: gw.Endpoint, Insecure: true, Bucket: s.Bucket()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.Stat(t.Context(), "k")
	if err == nil || errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("wrong secret: err = %v, want an auth error", err)
	}
	if strings.Contains(err.Error(), "wrong-secret") || strings.Contains(fmt.Sprint(blob.S3Options{SecretKey: "wrong-secret"}), "wrong-secret") {
		t.Fatal("secret key appears in an error or in S3Options.String")
	}
}

// TestS3ComposeParts checks, on the server, that Compose made a multipart object whose parts obey
// S3's 5 MiB minimum (every part but the last), using HEAD ?partNumber=N.
func TestS3ComposeParts(t *testing.T) {
	s := newS3(t, nil)
	ctx := t.Context()
	big := blobtest.Data(1, 6<<20)
	small := blobtest.Data(2, 100<<10)
	for _, kv := range []struct {
		k string
		b []byte
	}{{"big", big}, {"small", small}} {
		if _, err := s.Put(ctx, kv.k, bytes.NewReader(kv.b), int64(len(kv.b)), blob.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	parts := []blob.Part{blob.DataPart([]byte("hdr")), blob.ObjectPart("small"), blob.ObjectPart("big"),
		blob.ObjectPart("small"), blob.ObjectPart("big"), blob.ObjectPart("small")}
	oi, err := s.Compose(ctx, "out", parts)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int64
	var total int64
	for n := 1; total < oi.Size && n < 20; n++ {
		var o minio.StatObjectOptions
		o.PartNumber = n
		st, err := s.Client().StatObject(ctx, s.Bucket(), "out", o)
		if err != nil {
			t.Skipf("server does not report part sizes (HEAD ?partNumber): %v", err)
		}
		sizes = append(sizes, st.Size)
		total += st.Size
	}
	if total != oi.Size || len(sizes) < 2 {
		t.Skipf("server reports part sizes %v for a %d-byte object; cannot check", sizes, oi.Size)
	}
	for i, sz := range sizes[:len(sizes)-1] {
		if sz < 5<<20 {
			t.Errorf("part %d of %v is %d bytes < 5 MiB", i+1, sizes, sz)
		}
	}
	t.Logf("part sizes %v", sizes)
}

// TestS3Unreachable checks that requests to a dead endpoint are retried, then fail with a network
// error (not a hang), and that the context bounds the retrying.
func TestS3Unreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	var attempts atomic.Int32
	counting := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		attempts.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})
	s, err := blob.NewS3(blob.S3Options{Endpoint: dead, Insecure: true, Bucket: "bucket", AccessKey: "a", SecretKey: "b", MaxRetries: 3, Transport: counting})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Stat(t.Context(), "k")
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v, want connection refused", err)
	}
	if n := attempts.Load(); n < 2 {
		t.Errorf("%d attempt(s) against a dead endpoint, want retries", n)
	}
	s, _ = blob.NewS3(blob.S3Options{Endpoint: dead, Insecure: true, Bucket: "bucket", AccessKey: "a", SecretKey: "b", MaxRetries: 100})
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := s.Put(ctx, "k", bytes.NewReader([]byte("x")), 1, blob.PutOptions{}); err == nil {
		t.Fatal("Put to a dead endpoint succeeded")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("context deadline ignored: took %v", took)
	}
}

// TestS3OpenReadsRanges checks that Open does not download the object: reading 10 bytes at the end
// of a large object transfers only a little.
func TestS3OpenReadsRanges(t *testing.T) {
	s := newS3(t, nil)
	ctx := t.Context()
	want := blobtest.Data(9, 8<<20)
	if _, err := s.Put(ctx, "big", bytes.NewReader(want), int64(len(want)), blob.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := s.Open(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var cr countingReaderAt = countingReaderAt{r: r}
	buf := make([]byte, 10)
	if _, err := cr.ReadAt(buf, int64(len(want))-10); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, want[len(want)-10:]) {
		t.Fatal("wrong tail bytes")
	}
	rc, err := s.GetRange(ctx, "big", 1<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, rc)
	rc.Close()
	if n != 16 {
		t.Fatalf("range read returned %d bytes, want 16", n)
	}
}

type countingReaderAt struct{ r io.ReaderAt }

func (c countingReaderAt) ReadAt(p []byte, off int64) (int, error) { return c.r.ReadAt(p, off) }

// TestS3PresignPublicEndpoint: presigned URLs point at PublicEndpoint (the address users reach) and
// still verify, since the signature covers that host.
func TestS3PresignPublicEndpoint(t *testing.T) {
	_, port, _ := net.SplitHostPort(gw.Endpoint)
	s := newS3(t, func(o *blob.S3Options) { o.PublicEndpoint = "http://localhost:" + port })
	if _, err := s.Put(t.Context(), "m/model.gguf", strings.NewReader("GGUFdata"), 8, blob.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	u, err := s.PresignGet(t.Context(), "m/model.gguf", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u, "http://localhost:"+port+"/") || !strings.Contains(u, "model.gguf") {
		t.Fatalf("URL %s does not use the public endpoint", u)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "GGUFdata" {
		t.Fatalf("GET presigned: %s %q", resp.Status, b)
	}
	if cd := resp.Header.Get("Content-Disposition"); !strings.Contains(cd, `filename="model.gguf"`) {
		t.Errorf("Content-Disposition %q", cd)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestS3FaultClasses: every S3 failure carries its class where it arises. Failures that may pass
// (server down, 5xx from a proxy in front of the server, throttling, a body cut short) are
// fault.ErrTransient (ErrUnavailable); a missing object or a bad key are permanent.
func TestS3FaultClasses(t *testing.T) {
	base := newS3(t, nil)
	if _, err := base.Put(t.Context(), "obj", bytes.NewReader(blobtest.Data(1, 1<<20)), 1<<20, blob.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	status := func(code int) roundTripFunc { // a proxy answering code instead of the server
		return func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: code, Status: http.StatusText(code), Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")),
				Request: r}, nil
		}
	}
	cut := roundTripFunc(func(r *http.Request) (*http.Response, error) { // the connection drops mid-body
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil && r.Method == http.MethodGet && resp.ContentLength > 1000 {
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(io.LimitReader(resp.Body, 1000), errReader{io.ErrUnexpectedEOF}), resp.Body}
		}
		return resp, err
	})
	open := func(endpoint string, tr http.RoundTripper) *blob.S3 {
		s, err := blob.NewS3(blob.S3Options{Endpoint: endpoint, Insecure: true, Bucket: base.Bucket(), Region: gw.Region,
			AccessKey: gw.AccessKey, SecretKey: gw.SecretKey, MaxRetries: 1, Transport: tr})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	readAll := func(s *blob.S3, key string) error {
		rc, _, err := s.Get(t.Context(), key)
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = io.Copy(io.Discard, rc)
		return err
	}
	stat := func(s *blob.S3, key string) error { _, err := s.Stat(t.Context(), key); return err }
	for _, tc := range []struct {
		name  string
		op    func() error
		class error
	}{
		{"server down", func() error { return stat(open(dead, nil), "obj") }, fault.ErrTransient},
		{"server down: put", func() error {
			_, err := open(dead, nil).Put(t.Context(), "x", strings.NewReader("x"), 1, blob.PutOptions{})
			return err
		}, fault.ErrTransient},
		{"server down: list", func() error { _, err := blob.ListAll(t.Context(), open(dead, nil), "o"); return err }, fault.ErrTransient},
		{"503 from a proxy", func() error { return stat(open(gw.Endpoint, status(503)), "obj") }, fault.ErrTransient},
		{"500 from a proxy: get", func() error { return readAll(open(gw.Endpoint, status(500)), "obj") }, fault.ErrTransient},
		{"429 throttled", func() error { return stat(open(gw.Endpoint, status(429)), "obj") }, fault.ErrTransient},
		{"body cut short", func() error { return readAll(open(gw.Endpoint, cut), "obj") }, fault.ErrTransient},
		{"missing object", func() error { return stat(base, "nothing") }, fault.ErrPermanent},
		{"bad key", func() error { return stat(base, "../x") }, fault.ErrBadInput},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tc.class) {
				t.Fatalf("error %q is not %v", err, tc.class)
			}
			if tc.class == fault.ErrTransient && (fault.Permanent(err) || !errors.Is(err, blob.ErrUnavailable)) {
				t.Fatalf("transient error %q also permanent, or not ErrUnavailable", err)
			}
			if tc.class != fault.ErrTransient && fault.Transient(err) {
				t.Fatalf("error %q classified transient", err)
			}
		})
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
