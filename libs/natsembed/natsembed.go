// Package natsembed runs a NATS server with JetStream inside the current process, for tests and for
// quantfleet's single-process mode. It is the only package that imports nats-server; everything
// else talks to NATS through nats.go.
package natsembed

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// Options configures an embedded server. The zero value gives a JetStream server on a random
// 127.0.0.1 port with its store in a temporary directory that Shutdown removes.
type Options struct {
	// Dir is the JetStream store directory. Empty: a new temporary directory, removed by Shutdown.
	// Always give a real directory when data must survive a restart of the process.
	Dir string
	// ServerName names the server (logs, monitoring); default "quantfleet".
	ServerName string
	// Host and Port to listen on; defaults 127.0.0.1 and a random free port. Ignored with DontListen.
	Host string
	Port int
	// DontListen opens no TCP port at all; connect with Server.Connect (in-process pipe).
	DontListen bool
	// HTTPPort enables the monitoring endpoint (/healthz, /jsz) on Host; -1 picks a free port.
	HTTPPort int
	// MaxMemory and MaxStore cap JetStream's memory and file storage (bytes); 0 uses the
	// server's defaults (a share of RAM and disk).
	MaxMemory, MaxStore int64
	// Logger receives the server's log lines; nil discards them.
	Logger *zap.Logger
	// ReadyTimeout bounds the wait for the server to accept connections; default 10 s.
	ReadyTimeout time.Duration
}

// Server is a running embedded server.
type Server struct {
	mu     sync.Mutex
	ns     *server.Server
	opts   Options
	ownDir bool
}

// Start starts a server and waits until it accepts connections.
func Start(opts Options) (*Server, error) {
	s := &Server{opts: opts}
	if s.opts.Dir == "" {
		dir, err := os.MkdirTemp("", "natsembed-")
		if err != nil {
			return nil, fmt.Errorf("natsembed: %w", err)
		}
		s.opts.Dir, s.ownDir = dir, true
	}
	if s.opts.ServerName == "" {
		s.opts.ServerName = "quantfleet"
	}
	if s.opts.Host == "" {
		s.opts.Host = "127.0.0.1"
	}
	if s.opts.Port == 0 {
		s.opts.Port = server.RANDOM_PORT
	}
	if s.opts.ReadyTimeout == 0 {
		s.opts.ReadyTimeout = 10 * time.Second
	}
	if err := s.start(); err != nil {
		if s.ownDir {
			os.RemoveAll(s.opts.Dir)
		}
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	o := &server.Options{
		ServerName:         s.opts.ServerName,
		Host:               s.opts.Host,
		Port:               s.opts.Port,
		DontListen:         s.opts.DontListen,
		JetStream:          true,
		StoreDir:           s.opts.Dir,
		JetStreamMaxMemory: s.opts.MaxMemory,
		JetStreamMaxStore:  s.opts.MaxStore,
		NoSigs:             true, // the host process owns SIGINT/SIGTERM
		NoLog:              s.opts.Logger == nil,
	}
	if s.opts.HTTPPort != 0 {
		o.HTTPHost, o.HTTPPort = s.opts.Host, s.opts.HTTPPort
	}
	ns, err := server.NewServer(o)
	if err != nil {
		return fmt.Errorf("natsembed: %w", err)
	}
	if s.opts.Logger != nil {
		ns.SetLoggerV2(zapLogger{s.opts.Logger.Sugar()}, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(s.opts.ReadyTimeout) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return fmt.Errorf("natsembed: server not ready after %v", s.opts.ReadyTimeout)
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return errors.New("natsembed: JetStream did not start")
	}
	// Pin the ports the server picked, so that Restart comes back on the same address and
	// clients can reconnect.
	if !s.opts.DontListen {
		if a, ok := ns.Addr().(*net.TCPAddr); ok {
			s.opts.Port = a.Port
		}
		if s.opts.HTTPPort != 0 {
			if a := ns.MonitorAddr(); a != nil {
				s.opts.HTTPPort = a.Port
			}
		}
	}
	s.ns = ns
	return nil
}

// ClientURL returns "nats://127.0.0.1:PORT", or "" with DontListen.
func (s *Server) ClientURL() string {
	if s.opts.DontListen {
		return ""
	}
	return "nats://" + net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.Port))
}

// MonitorURL returns the monitoring base URL, or "" when HTTPPort was not set.
func (s *Server) MonitorURL() string {
	if s.opts.HTTPPort == 0 || s.opts.DontListen {
		return ""
	}
	return "http://" + net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.HTTPPort))
}

// Dir returns the JetStream store directory.
func (s *Server) Dir() string { return s.opts.Dir }

// NATSServer returns the running nats-server (nil after Shutdown).
func (s *Server) NATSServer() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ns
}

// Connect opens a client connection over an in-process pipe (works with or without DontListen).
// Reconnection is disabled (a pipe cannot redial); after Restart, connect again.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	ns := s.NATSServer()
	if ns == nil {
		return nil, errors.New("natsembed: server is shut down")
	}
	opts = append([]nats.Option{nats.InProcessServer(ns), nats.Name("quantfleet-inproc")}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("natsembed: connect: %w", err)
	}
	return nc, nil
}

// Shutdown stops the server and waits for it (JetStream data is flushed to Dir). A temporary Dir is
// removed. Shutdown is idempotent.
func (s *Server) Shutdown() {
	s.stop()
	if s.ownDir {
		os.RemoveAll(s.opts.Dir)
	}
}

func (s *Server) stop() {
	s.mu.Lock()
	ns := s.ns
	s.ns = nil
	s.mu.Unlock()
	if ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
}

// Restart stops the server and starts it again on the same store directory and address; streams,
// consumers and KV buckets survive. TCP clients with reconnect enabled come back by themselves.
func (s *Server) Restart() error {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ns != nil {
		return errors.New("natsembed: concurrent Restart")
	}
	return s.start()
}

// zapLogger adapts zap to the nats-server logger interface.
type zapLogger struct{ l *zap.SugaredLogger }

func (z zapLogger) Noticef(format string, v ...any) { z.l.Infof(format, v...) }
func (z zapLogger) Warnf(format string, v ...any)   { z.l.Warnf(format, v...) }
func (z zapLogger) Errorf(format string, v ...any)  { z.l.Errorf(format, v...) }
func (z zapLogger) Fatalf(format string, v ...any)  { z.l.Errorf(format, v...) }
func (z zapLogger) Debugf(format string, v ...any)  { z.l.Debugf(format, v...) }
func (z zapLogger) Tracef(format string, v ...any)  { z.l.Debugf(format, v...) }
