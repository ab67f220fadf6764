package fleet

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"quantfleet.dev/libs/fault"
)

// ServiceFlags are the flags every service binary takes: the connection settings, the HTTP
// address of /metrics and /healthz, and the log level.
type ServiceFlags struct {
	Config
	HTTPAddr string
	LogLevel string
	// Backoff is how long and how often transient failures are retried.
	Backoff Backoff
}

// Register adds the flags to fs (defaults from getenv; os.Getenv when nil).
func (s *ServiceFlags) Register(fs *flag.FlagSet, getenv func(string) string, defaultHTTP string) {
	if getenv == nil {
		getenv = os.Getenv
	}
	s.Config.Register(fs, getenv)
	retries := 10
	if v, err := strconv.Atoi(getenv("S3_MAX_RETRIES")); err == nil && v > 0 {
		retries = v
	}
	fs.IntVar(&s.S3MaxRetries, "s3-max-retries", retries, "attempts of one S3 request on transient errors (env S3_MAX_RETRIES)")
	s.Backoff.Register(fs, getenv)
	if v := getenv("HTTP_ADDR"); v != "" {
		defaultHTTP = v
	}
	fs.StringVar(&s.HTTPAddr, "http-addr", defaultHTTP, "address of /metrics, /healthz and /livez (empty: none) (env HTTP_ADDR)")
	level := getenv("LOG_LEVEL")
	if level == "" {
		level = "info"
	}
	fs.StringVar(&s.LogLevel, "log-level", level, "debug, info, warn or error (env LOG_LEVEL)")
}

// Service is a started service: logger, connection and metrics registry, with /metrics and
// /healthz served.
type Service struct {
	Log      *zap.Logger
	RT       *Runtime
	Registry *prometheus.Registry
}

// Start builds the logger, connects (NATS must answer within --nats-connect-timeout) and serves
// HTTP. name identifies the service in logs and NATS connection names.
func (s *ServiceFlags) Start(ctx context.Context, name string) (*Service, error) {
	log, err := NewLogger(s.LogLevel)
	if err != nil {
		return nil, err
	}
	log = log.With(zap.String("service", name))
	log.Info("starting", s.Config.LogFields()...)
	rt, err := Connect(ctx, s.Config, "quantfleet-"+name, log)
	if err != nil {
		return nil, err
	}
	reg := NewRegistry()
	addr, err := ServeHTTP(ctx, s.HTTPAddr, reg, NATSHealth(rt.NC), log)
	if err != nil {
		rt.Close()
		return nil, err
	}
	if addr != nil {
		log.Info("serving /metrics and /healthz", zap.String("addr", addr.String()))
	}
	return &Service{Log: log, RT: rt, Registry: reg}, nil
}

// Close drains the connection and flushes the log.
func (s *Service) Close() {
	s.RT.Close()
	_ = s.Log.Sync()
}

// EnvDuration reads a duration from the environment (0 when unset or invalid).
func EnvDuration(name string) time.Duration {
	d, err := time.ParseDuration(os.Getenv(name))
	if err != nil {
		return 0
	}
	return d
}

// Main is a service binary's whole main: it registers the common flags and the service's own
// (register, which may keep pointers to fill), parses the command line (a flag error exits 2,
// --help 0), starts the service with a context cancelled by SIGINT/SIGTERM, and runs it.
func Main(name, defaultHTTP string, register func(fs *flag.FlagSet, sf *ServiceFlags), run func(ctx context.Context, svc *Service, sf *ServiceFlags) error) {
	var sf ServiceFlags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	sf.Register(fs, nil, defaultHTTP)
	if register != nil {
		register(fs, &sf)
	}
	if err := ParseFlags(fs, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "%s: %v (run %s --help)\n", name, err, name)
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected arguments %q\n", name, fs.Args())
		os.Exit(2)
	}
	Exit(name, func() error {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		svc, err := sf.Start(ctx, name)
		if err != nil {
			return err
		}
		defer svc.Close()
		return run(ctx, svc, &sf)
	}())
}

// ParseFlags parses args like fs.Parse, but a bad flag writes nothing (the caller reports the
// error, one line) and --help prints the flags to fs's output and returns flag.ErrHelp.
func ParseFlags(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard) // the flag package prints the error and the usage here
	err := fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		if fs.Usage != nil {
			fs.Usage()
		} else {
			fmt.Fprintf(out, "Usage of %s:\n", fs.Name())
			fs.PrintDefaults()
		}
	}
	return err
}

// Exit prints err (one line) and exits 2 for bad input (fault.ErrBadInput, as the CLI), 1 for
// any other error, or 0 for nil.
func Exit(service string, err error) {
	if err == nil {
		os.Exit(0)
	}
	fmt.Fprintf(os.Stderr, "%s: %s\n", service, OneLine(err.Error(), 4000))
	if errors.Is(err, fault.ErrBadInput) {
		os.Exit(2)
	}
	os.Exit(1)
}
