// Package s3embed runs a real S3 server (the Versity S3 gateway, versitygw, over a POSIX directory)
// inside the current process, so that tests and the single-process mode of quantfleet speak S3 through
// the same client code as a fleet.
//
// Two limits come from versitygw itself:
//   - Only one gateway may run per process (embedgw keeps package globals). Start returns
//     ErrAlreadyRunning for a second one; in tests, start it once in TestMain.
//   - The posix backend changes the process's working directory to the data root and resolves object
//     paths relative to it for as long as it runs. Make every path you need absolute before calling
//     Start, and never rely on the working directory afterwards (Server.OrigDir is the one from before).
package s3embed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/versity/versitygw/auth"
	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/embedgw"
)

// ErrAlreadyRunning is returned by Start while another embedded gateway runs in this process.
var ErrAlreadyRunning = errors.New("s3embed: a gateway is already running in this process")

// Region is the region the embedded gateway reports.
const Region = "us-east-1"

var running sync.Mutex // held while a gateway runs; TryLock gives the one-instance rule

// Server is a running embedded gateway.
type Server struct {
	Endpoint  string // host:port on 127.0.0.1, plain HTTP
	AccessKey string // generated for this run
	SecretKey string // generated for this run
	Region    string
	Dir       string // data root: buckets are directories, objects plain files under it
	OrigDir   string // working directory before Start

	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// Options tunes Start. The zero value is fine.
type Options struct {
	// Addr is the listen address; default "127.0.0.1:0" (a free port).
	Addr string
	// AccessKey and SecretKey are the root credentials; random when empty.
	AccessKey, SecretKey string
}

// Start starts a gateway storing its data under dir (created if missing) and returns when it accepts
// connections. The gateway stops when ctx is cancelled or Close is called.
func Start(ctx context.Context, dir string) (*Server, error) {
	return StartWithOptions(ctx, dir, Options{})
}

// StartWithOptions is Start with options.
func StartWithOptions(ctx context.Context, dir string, o Options) (*Server, error) {
	if !running.TryLock() {
		return nil, ErrAlreadyRunning
	}
	s, err := start(ctx, dir, o)
	if err != nil {
		running.Unlock()
		return nil, err
	}
	return s, nil
}

func start(ctx context.Context, dir string, o Options) (*Server, error) {
	orig, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("s3embed: %w", err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("s3embed: %w", err)
	}
	root := filepath.Join(dir, "data")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("s3embed: %w", err)
	}
	// Object metadata goes to user.* xattrs; on a filesystem without them, to a sidecar directory
	// (which versitygw wants outside the data root).
	var ms meta.MetadataStorer = meta.XattrMeta{}
	if (meta.XattrMeta{}).Test(root) != nil {
		side := filepath.Join(dir, "meta")
		if err := os.MkdirAll(side, 0o755); err != nil {
			return nil, fmt.Errorf("s3embed: %w", err)
		}
		if ms, err = meta.NewSideCar(side); err != nil {
			return nil, fmt.Errorf("s3embed: sidecar metadata: %w", err)
		}
	}
	// CopyObjectThreshold must be set: its zero value rejects every CopyObject/UploadPartCopy.
	be, err := posix.New(root, ms, posix.PosixOpts{CopyObjectThreshold: 5 << 30})
	if err != nil {
		_ = os.Chdir(orig)
		return nil, fmt.Errorf("s3embed: posix backend: %w", err)
	}
	if o.AccessKey == "" {
		o.AccessKey = "qf" + randHex(9)
	}
	if o.SecretKey == "" {
		o.SecretKey = randHex(20)
	}
	addr := o.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}

	// embedgw takes a port, not a listener: pick a free one, then hand it over. Another process could
	// grab it in between, so retry a few times when the gateway fails to come up.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		hostport, err := resolvePort(addr)
		if err != nil {
			be.Shutdown()
			return nil, err
		}
		gctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		cfg := &embedgw.Config{
			// Single-account IAM given explicitly: the default path prints a notice to stdout, which
			// would corrupt a --json output stream.
			IAMService:        auth.NewIAMServiceSingle(auth.Account{Access: o.AccessKey, Secret: o.SecretKey, Role: auth.RoleAdmin}),
			RootUserAccess:    o.AccessKey,
			RootUserSecret:    o.SecretKey,
			Region:            Region,
			Ports:             []string{hostport},
			MaxConnections:    1000,
			MaxRequests:       1000,
			MultipartMaxParts: 10000,
			Quiet:             true,
			KeepAlive:         true,
			HealthPath:        "/health",
		}
		go func() { done <- embedgw.RunVersityGW(gctx, be, cfg) }()
		if err := waitReady(ctx, hostport, done); err != nil {
			cancel()
			lastErr = err
			if ctx.Err() != nil {
				break
			}
			continue
		}
		return &Server{
			Endpoint: hostport, AccessKey: o.AccessKey, SecretKey: o.SecretKey, Region: Region,
			Dir: root, OrigDir: orig, cancel: cancel, done: done,
		}, nil
	}
	be.Shutdown()
	return nil, fmt.Errorf("s3embed: gateway did not start: %w", lastErr)
}

// resolvePort turns a ":0" port into a concrete free one.
func resolvePort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("s3embed: address %q: %w", addr, err)
	}
	if port != "0" {
		return addr, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("s3embed: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitReady(ctx context.Context, hostport string, done <-chan error) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			if err == nil {
				err = errors.New("gateway exited")
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		c, err := net.DialTimeout("tcp", hostport, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("no listener on %s after 10s", hostport)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// URL returns the gateway's base URL, "http://host:port".
func (s *Server) URL() string { return "http://" + s.Endpoint }

// Close stops the gateway and waits for it to exit. It restores the working directory that was in
// effect before Start. Close is idempotent.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.cancel()
		select {
		case err := <-s.done:
			if err != nil && !errors.Is(err, context.Canceled) {
				s.err = err
			}
		case <-time.After(30 * time.Second):
			// The gateway's own API-server shutdown waits up to 10 s for open connections
			// (keep-alives of clients in this process), then stops the rest.
			s.err = errors.New("s3embed: gateway did not stop within 30s")
		}
		_ = os.Chdir(s.OrigDir)
		running.Unlock()
	})
	return s.err
}
