// Package local runs a whole fleet inside one process: an embedded NATS server, the embedded S3
// gateway over a data directory, a dispatcher, an assembler and worker slots, each component with
// its own NATS connection, exactly as the separate services run. quantfleet's run command and the
// fleet's in-process tests use it.
package local

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/blob/s3embed"
	"quantfleet.dev/libs/hub"
	"quantfleet.dev/libs/natsembed"
	"quantfleet.dev/libs/queue"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/assembler"
	"quantfleet.dev/services/fleet/dispatcher"
	"quantfleet.dev/services/fleet/worker"
)

// Options tune Start. Zero fields take the defaults in brackets.
type Options struct {
	// DataDir keeps the NATS store and the objects (DataDir/nats, DataDir/s3); a later Start on
	// the same directory continues where this one stopped. Empty: a temporary directory that Close
	// removes.
	DataDir string
	// Workers is the number of worker processes simulated (each with its own connection) [1];
	// Slots the concurrent tasks of each [2].
	Workers, Slots int
	// Queue tunes the JetStream layout (AckWait, MaxDeliver).
	Queue queue.Config
	// Hub mirrors Hub models (token, endpoint, cache) [default client].
	Hub *hub.Client
	// TaskDelay pauses every task (tests).
	TaskDelay time.Duration
	// KeepShards keeps completed jobs' shards.
	KeepShards bool
	// NoDispatcher, NoAssembler and NoWorkers leave components out (tests start their own).
	NoDispatcher, NoAssembler, NoWorkers bool
	// NATSPort listens on 127.0.0.1:NATSPort for other processes (0: in-process connections only).
	NATSPort int
	Log      *zap.Logger
}

// Fleet is a running in-process fleet.
type Fleet struct {
	NATS *natsembed.Server
	S3   *s3embed.Server
	// RT is a client runtime (its own connection) for submitting and following jobs.
	RT *fleet.Runtime
	// Config reaches the embedded servers from this process (credentials included).
	Config fleet.Config
	// Dispatcher is the embedded dispatcher (nil with NoDispatcher).
	Dispatcher *dispatcher.Dispatcher

	ownDir    string
	transport *http.Transport // every store's, see fleet.Config.S3Transport
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	conns     []*nats.Conn
	errMu     sync.Mutex
	errs      []error
}

// Start starts the servers and the components and returns once the dispatcher is ready.
func Start(ctx context.Context, o Options) (*Fleet, error) {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	f := &Fleet{}
	dir := o.DataDir
	if dir == "" {
		d, err := os.MkdirTemp("", "quantfleet-run-")
		if err != nil {
			return nil, err
		}
		dir, f.ownDir = d, d
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	nopts := natsembed.Options{Dir: filepath.Join(dir, "nats"), DontListen: o.NATSPort == 0, Port: o.NATSPort}
	if f.NATS, err = natsembed.Start(nopts); err != nil {
		return nil, err
	}
	// The gateway chdirs to its data root while it runs: every path above is absolute already.
	if f.S3, err = s3embed.Start(context.WithoutCancel(ctx), filepath.Join(dir, "s3")); err != nil {
		return nil, err
	}
	f.transport = blob.NewTransport()
	f.Config = fleet.Config{S3Endpoint: f.S3.Endpoint, S3Insecure: true, S3Bucket: fleet.DefaultBucket, S3Region: f.S3.Region,
		S3AccessKey: f.S3.AccessKey, S3SecretKey: f.S3.SecretKey, NATSURL: f.NATS.ClientURL(), S3Transport: f.transport}
	store, err := f.Config.OpenStore("")
	if err != nil {
		return nil, err
	}
	if err := store.EnsureBucket(ctx); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel = cancel
	newRT := func(name string) (*fleet.Runtime, error) {
		nc, err := f.NATS.Connect(nats.Name(name))
		if err != nil {
			return nil, err
		}
		f.conns = append(f.conns, nc)
		open := func(bucket string) (blob.Store, error) { return f.Config.OpenStore(bucket) }
		return fleet.NewRuntime(nc, store, fleet.DefaultBucket, open, o.Log.With(zap.String("component", name)))
	}
	run := func(name string, fn func(context.Context) error) {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			if err := fn(rctx); err != nil && !errors.Is(err, context.Canceled) {
				f.errMu.Lock()
				f.errs = append(f.errs, fmt.Errorf("%s: %w", name, err))
				f.errMu.Unlock()
			}
		}()
	}
	if !o.NoDispatcher {
		rt, err := newRT("dispatcher")
		if err != nil {
			return nil, err
		}
		f.Dispatcher = dispatcher.New(rt, dispatcher.Config{Queue: o.Queue, Hub: o.Hub, StorageName: "embedded S3 " + f.S3.Endpoint},
			nil, o.Log.With(zap.String("component", "dispatcher")))
		run("dispatcher", f.Dispatcher.Run)
		select {
		case <-f.Dispatcher.Ready():
		case <-time.After(30 * time.Second):
			return nil, errors.New("local fleet: the dispatcher did not start")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if !o.NoAssembler {
		rt, err := newRT("assembler")
		if err != nil {
			return nil, err
		}
		a := assembler.New(rt, assembler.Config{KeepShards: o.KeepShards}, nil, o.Log.With(zap.String("component", "assembler")))
		run("assembler", a.Run)
	}
	if !o.NoWorkers {
		for i := range max(o.Workers, 1) {
			name := fmt.Sprintf("worker-%d", i+1)
			rt, err := newRT(name)
			if err != nil {
				return nil, err
			}
			w := worker.New(rt, worker.Config{Slots: max(o.Slots, 2), Name: name, TaskDelay: o.TaskDelay}, nil,
				o.Log.With(zap.String("component", name)))
			run(name, w.Run)
		}
	}
	if f.RT, err = newRT("client"); err != nil {
		return nil, err
	}
	if err := f.RT.WaitBound(ctx); err != nil {
		return nil, err
	}
	ok = true
	return f, nil
}

// Close stops the components and the servers; a temporary data directory is removed.
func (f *Fleet) Close() error {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
	for _, nc := range f.conns {
		nc.Close()
	}
	var err error
	if f.transport != nil {
		f.transport.CloseIdleConnections()
	}
	if f.S3 != nil {
		err = f.S3.Close()
	}
	if f.NATS != nil {
		f.NATS.Shutdown()
	}
	if f.ownDir != "" {
		os.RemoveAll(f.ownDir)
	}
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return errors.Join(append(f.errs, err)...)
}
