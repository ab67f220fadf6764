// Package fleet holds what quantfleet's services share: connection settings for NATS and S3 (flags
// with environment defaults), the connected Runtime (JetStream, the job and task-completion KV
// stores, object storage), the object-key layout, the task envelope, and the HTTP endpoint with
// /metrics and /healthz.
package fleet

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"quantfleet.dev/libs/fault"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"quantfleet.dev/libs/blob"
)

// DefaultBucket is the object-storage bucket when --s3-bucket and S3_BUCKET are unset.
const DefaultBucket = "quantfleet"

// ErrConfig reports missing or contradictory connection settings.
var ErrConfig = fault.New(fault.ErrBadInput, "fleet: configuration")

// Config are the connection settings every service (and the fleet commands of the CLI) take.
// Secrets (NATS password/token, S3 keys) come from the environment or files, never from flags that
// show in process listings, and are never logged: String leaves them out.
type Config struct {
	NATSURL            string // comma-separated server URLs
	NATSCreds          string // .creds file (JWT + nkey seed)
	NATSNKey           string // nkey seed file
	NATSUser           string // with NATS_PASSWORD from the environment
	NATSPassword       string `json:"-"`
	NATSToken          string `json:"-"`
	NATSTLSCA          string // CA bundle for the server certificate
	NATSTLSCert        string // client certificate (mutual TLS)
	NATSTLSKey         string
	NATSConnectTimeout time.Duration

	S3Endpoint       string // host:port or http(s)://host:port
	S3PublicEndpoint string // host presigned URLs point at (default: S3Endpoint)
	S3Bucket         string
	S3Region         string
	S3Insecure       bool // plain HTTP for a bare host:port endpoint
	S3TLSSkipVerify  bool
	S3AccessKey      string `json:"-"` // AWS_ACCESS_KEY_ID
	S3SecretKey      string `json:"-"` // AWS_SECRET_ACCESS_KEY
	S3SessionToken   string `json:"-"` // AWS_SESSION_TOKEN
	// S3MaxRetries is how often one S3 request is tried on transient errors (default 10).
	S3MaxRetries int
	// S3Transport, when set, is the HTTP transport of every store opened from this Config (one
	// connection pool). An in-process fleet closes its idle connections before it stops its
	// embedded S3 server: that server's shutdown closes idle connections but waits up to 10 s
	// for one that never carried a request (the transport sometimes dials one spare).
	S3Transport http.RoundTripper `json:"-"`
}

// Register adds the connection flags to fs. Their defaults come from getenv (os.Getenv when nil):
// NATS_URL, NATS_CREDS, NATS_NKEY, NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_TLS_CA, NATS_TLS_CERT,
// NATS_TLS_KEY, S3_ENDPOINT, S3_PUBLIC_ENDPOINT, S3_BUCKET, S3_REGION (or AWS_REGION), S3_INSECURE,
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.
func (c *Config) Register(fs *flag.FlagSet, getenv func(string) string) {
	if getenv == nil {
		getenv = os.Getenv
	}
	env := func(keys ...string) string {
		for _, k := range keys {
			if v := getenv(k); v != "" {
				return v
			}
		}
		return ""
	}
	def := func(v, d string) string {
		if v == "" {
			return d
		}
		return v
	}
	fs.StringVar(&c.NATSURL, "nats-url", def(env("NATS_URL"), nats.DefaultURL), "NATS server URL(s), comma-separated (env NATS_URL)")
	fs.StringVar(&c.NATSCreds, "nats-creds", env("NATS_CREDS"), "NATS credentials file (JWT + nkey seed) (env NATS_CREDS)")
	fs.StringVar(&c.NATSNKey, "nats-nkey", env("NATS_NKEY"), "NATS nkey seed file (env NATS_NKEY)")
	fs.StringVar(&c.NATSUser, "nats-user", env("NATS_USER"), "NATS user name; the password comes from env NATS_PASSWORD")
	fs.StringVar(&c.NATSTLSCA, "nats-tls-ca", env("NATS_TLS_CA"), "CA certificate file to verify the NATS server (env NATS_TLS_CA)")
	fs.StringVar(&c.NATSTLSCert, "nats-tls-cert", env("NATS_TLS_CERT"), "client certificate file for NATS mutual TLS (env NATS_TLS_CERT)")
	fs.StringVar(&c.NATSTLSKey, "nats-tls-key", env("NATS_TLS_KEY"), "client key file for NATS mutual TLS (env NATS_TLS_KEY)")
	fs.DurationVar(&c.NATSConnectTimeout, "nats-connect-timeout", 5*time.Second, "how long to try reaching NATS at start")
	fs.StringVar(&c.S3Endpoint, "s3-endpoint", env("S3_ENDPOINT"), "S3 endpoint host:port or URL (env S3_ENDPOINT)")
	fs.StringVar(&c.S3PublicEndpoint, "s3-public-endpoint", env("S3_PUBLIC_ENDPOINT"), "endpoint presigned URLs point at (default: --s3-endpoint) (env S3_PUBLIC_ENDPOINT)")
	fs.StringVar(&c.S3Bucket, "s3-bucket", def(env("S3_BUCKET"), DefaultBucket), "bucket for models, shards and results (env S3_BUCKET)")
	fs.StringVar(&c.S3Region, "s3-region", def(env("S3_REGION", "AWS_REGION"), "us-east-1"), "S3 region (env S3_REGION or AWS_REGION)")
	insecure, _ := strconv.ParseBool(env("S3_INSECURE"))
	fs.BoolVar(&c.S3Insecure, "s3-insecure", insecure, "plain HTTP to a host:port S3 endpoint (env S3_INSECURE)")
	fs.BoolVar(&c.S3TLSSkipVerify, "s3-tls-skip-verify", false, "accept any S3 server certificate (test servers only)")
	c.NATSPassword = env("NATS_PASSWORD")
	c.NATSToken = env("NATS_TOKEN")
	c.S3AccessKey = env("AWS_ACCESS_KEY_ID")
	c.S3SecretKey = env("AWS_SECRET_ACCESS_KEY")
	c.S3SessionToken = env("AWS_SESSION_TOKEN")
}

// String describes the configuration without secrets.
func (c Config) String() string {
	return fmt.Sprintf("nats=%s s3=%s bucket=%s region=%s insecure=%v", redactURLs(c.NATSURL), c.S3Endpoint, c.S3Bucket, c.S3Region, c.S3Insecure)
}

// LogFields are the zap fields describing c (no secrets).
func (c Config) LogFields() []zap.Field {
	return []zap.Field{zap.String("nats_url", redactURLs(c.NATSURL)), zap.String("s3_endpoint", c.S3Endpoint),
		zap.String("s3_bucket", c.S3Bucket), zap.String("s3_region", c.S3Region), zap.Bool("s3_insecure", c.S3Insecure)}
}

// userinfo is what precedes the host of a URL, scheme or not: "user:pass@", "token@".
var userinfo = regexp.MustCompile(`^(\s*(?:[A-Za-z][A-Za-z0-9+.-]*://)?)[^/\s]*@`)

// redactURLs replaces the user info (user:password@, token@) of NATS URLs, parsed or not
// ("user:pass@host:4222" is no URL url.Parse understands as one).
func redactURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = userinfo.ReplaceAllString(p, "${1}REDACTED@")
	}
	return strings.Join(parts, ",")
}

// redactedError is err with the user info of any URL in its text redacted (the client's errors may
// quote the URL it was given).
type redactedError struct{ err error }

func (e redactedError) Error() string {
	words := strings.Split(e.err.Error(), " ")
	for i, w := range words {
		if strings.Contains(w, "@") {
			start := strings.IndexFunc(w, func(r rune) bool { return r != '"' && r != '\'' && r != '(' && r != '<' })
			words[i] = w[:max(start, 0)] + redactURLs(w[max(start, 0):])
		}
	}
	return strings.Join(words, " ")
}

func (e redactedError) Unwrap() error { return e.err }

// NATSOptions returns the client options for the configured authentication and TLS.
func (c Config) NATSOptions(name string) ([]nats.Option, error) {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second),
		nats.Timeout(c.connectTimeout())}
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	if c.NATSNKey != "" {
		o, err := nats.NkeyOptionFromSeed(c.NATSNKey)
		if err != nil {
			return nil, fmt.Errorf("%w: --nats-nkey: %w", ErrConfig, err)
		}
		opts = append(opts, o)
	}
	if c.NATSUser != "" {
		opts = append(opts, nats.UserInfo(c.NATSUser, c.NATSPassword))
	}
	if c.NATSToken != "" {
		opts = append(opts, nats.Token(c.NATSToken))
	}
	if c.NATSTLSCA != "" {
		opts = append(opts, nats.RootCAs(c.NATSTLSCA))
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		return nil, fmt.Errorf("%w: --nats-tls-cert and --nats-tls-key go together", ErrConfig)
	}
	if c.NATSTLSCert != "" {
		opts = append(opts, nats.ClientCert(c.NATSTLSCert, c.NATSTLSKey))
	}
	return opts, nil
}

func (c Config) connectTimeout() time.Duration {
	if c.NATSConnectTimeout > 0 {
		return c.NATSConnectTimeout
	}
	return 5 * time.Second
}

// ErrNATSUnreachable reports that no NATS server answered at start.
var ErrNATSUnreachable = fault.New(fault.ErrTransient, "NATS server unreachable")

// ConnectNATS connects to NATS, retrying until the connect timeout; afterwards the connection
// reconnects by itself forever.
func (c Config) ConnectNATS(ctx context.Context, name string, log *zap.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := c.NATSOptions(name)
	if err != nil {
		return nil, err
	}
	if log != nil {
		opts = append(opts,
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					log.Warn("NATS disconnected", zap.Error(err))
				}
			}),
			nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", zap.String("server", nc.ConnectedUrlRedacted())) }))
	}
	opts = append(opts, extra...)
	deadline := time.Now().Add(c.connectTimeout())
	for {
		nc, err := nats.Connect(c.NATSURL, opts...)
		if err == nil {
			return nc, nil
		}
		if errors.Is(err, nats.ErrAuthorization) || time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("%w at %s: %w", ErrNATSUnreachable, redactURLs(c.NATSURL), redactedError{err})
		}
		select {
		case <-time.After(250 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// S3Options returns the blob options for bucket (the configured one when empty).
func (c Config) S3Options(bucket string) (blob.S3Options, error) {
	if c.S3Endpoint == "" {
		return blob.S3Options{}, fmt.Errorf("%w: --s3-endpoint (or S3_ENDPOINT) is required", ErrConfig)
	}
	if bucket == "" {
		bucket = c.S3Bucket
	}
	return blob.S3Options{
		Endpoint: c.S3Endpoint, PublicEndpoint: c.S3PublicEndpoint, Bucket: bucket, Region: c.S3Region,
		Insecure: c.S3Insecure, TLSSkipVerify: c.S3TLSSkipVerify,
		AccessKey: c.S3AccessKey, SecretKey: c.S3SecretKey, SessionToken: c.S3SessionToken,
		MaxRetries: c.S3MaxRetries, Transport: c.S3Transport,
	}, nil
}

// OpenStore returns the S3 store of bucket (the configured one when empty). It does no I/O.
func (c Config) OpenStore(bucket string) (*blob.S3, error) {
	o, err := c.S3Options(bucket)
	if err != nil {
		return nil, err
	}
	return blob.NewS3(o)
}
