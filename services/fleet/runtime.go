package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
)

// RequestsBucket is the KV bucket of JobRequests, keyed by job id.
const RequestsBucket = "QF_REQUESTS"

// ErrNotInitialised reports a NATS server on which no dispatcher has created the fleet's streams
// and buckets yet.
var ErrNotInitialised = errors.New("the fleet is not initialised on this NATS server (start a dispatcher first)")

// ErrNoRequest is returned for a job without a stored request.
var ErrNoRequest = errors.New("job request not found")

// Setup creates the fleet's JetStream objects (queue.Setup plus the requests bucket). Only the
// dispatcher calls it.
func Setup(ctx context.Context, js jetstream.JetStream, cfg queue.Config) error {
	if err := queue.Setup(ctx, js, cfg); err != nil {
		return err
	}
	replicas := max(cfg.Replicas, 1)
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: RequestsBucket, Description: "quantfleet job requests", Storage: cfg.Storage, Replicas: replicas,
	}); err != nil {
		return fmt.Errorf("fleet: kv %s: %w", RequestsBucket, err)
	}
	return nil
}

// StoreOpener returns the store of a bucket.
type StoreOpener func(bucket string) (blob.Store, error)

// Runtime is a service's connection to the fleet: NATS, JetStream, the KV stores and object storage.
type Runtime struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	Jobs     *queue.JobStore
	Done     *queue.TaskDone
	Requests jetstream.KeyValue
	Store    blob.Store // the fleet's bucket
	Bucket   string
	Log      *zap.Logger

	open   StoreOpener
	mu     sync.Mutex
	stores map[string]blob.Store
}

// NewRuntime assembles a Runtime from a connection and the fleet's store; open gives the stores of
// other buckets (s3:// sources). Call Bind (or WaitBound) before using the KV stores.
func NewRuntime(nc *nats.Conn, store blob.Store, bucket string, open StoreOpener, log *zap.Logger) (*Runtime, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Runtime{NC: nc, JS: js, Store: store, Bucket: bucket, Log: log, open: open,
		stores: map[string]blob.Store{bucket: store}}, nil
}

// Connect connects to NATS and opens the configured bucket (no S3 I/O).
func Connect(ctx context.Context, cfg Config, name string, log *zap.Logger) (*Runtime, error) {
	store, err := cfg.OpenStore("")
	if err != nil {
		return nil, err
	}
	nc, err := cfg.ConnectNATS(ctx, name, log)
	if err != nil {
		return nil, err
	}
	open := func(bucket string) (blob.Store, error) { return cfg.OpenStore(bucket) }
	rt, err := NewRuntime(nc, store, cfg.S3Bucket, open, log)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return rt, nil
}

// Bind binds the KV stores; it fails with ErrNotInitialised before a dispatcher ran Setup.
func (r *Runtime) Bind(ctx context.Context) error {
	kv, err := r.JS.KeyValue(ctx, RequestsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return ErrNotInitialised
	}
	if err != nil {
		return fmt.Errorf("fleet: kv %s: %w", RequestsBucket, err)
	}
	jobs, err := queue.NewJobStore(ctx, r.JS)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotInitialised, err)
	}
	done, err := queue.NewTaskDone(ctx, r.JS)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotInitialised, err)
	}
	r.Requests, r.Jobs, r.Done = kv, jobs, done
	return nil
}

// WaitBound retries Bind until it succeeds or ctx ends (services started before the dispatcher).
func (r *Runtime) WaitBound(ctx context.Context) error {
	logged := false
	for {
		err := r.Bind(ctx)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrNotInitialised) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			r.Log.Warn("binding the fleet's KV stores failed", zap.Error(err))
		} else if !logged {
			r.Log.Info("waiting for a dispatcher to initialise the fleet")
			logged = true
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// StoreFor returns the store of bucket ("" is the fleet's).
func (r *Runtime) StoreFor(bucket string) (blob.Store, error) {
	if bucket == "" || bucket == r.Bucket {
		return r.Store, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.stores[bucket]; ok {
		return s, nil
	}
	if r.open == nil {
		return nil, fmt.Errorf("fleet: no access to bucket %s", bucket)
	}
	s, err := r.open(bucket)
	if err != nil {
		return nil, err
	}
	r.stores[bucket] = s
	return s, nil
}

// PutRequest stores a job's request (once).
func (r *Runtime) PutRequest(ctx context.Context, req *JobRequest) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := r.Requests.Create(ctx, req.JobID, b); err != nil {
		return fmt.Errorf("fleet: store request of job %s: %w", req.JobID, err)
	}
	return nil
}

// Request returns a job's request.
func (r *Runtime) Request(ctx context.Context, job string) (*JobRequest, error) {
	if !ValidToken(job) {
		return nil, fmt.Errorf("%w: %q is not a job id", queue.ErrJobNotFound, job)
	}
	e, err := r.Requests.Get(ctx, job)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNoRequest, job)
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: get request of job %s: %w", job, err)
	}
	var req JobRequest
	if err := json.Unmarshal(e.Value(), &req); err != nil {
		return nil, fmt.Errorf("fleet: decode request of job %s: %w", job, err)
	}
	return &req, nil
}

// PublishEvent publishes a job event on qf.events.<job>.<kind>; a non-empty msgID de-duplicates.
func (r *Runtime) PublishEvent(ctx context.Context, e *pb.JobEvent, msgID string) error {
	b, err := proto.Marshal(e)
	if err != nil {
		return err
	}
	return queue.PublishEvent(ctx, r.JS, e.JobId, EventKind(e), msgID, b)
}

// Close closes the NATS connection (draining it).
func (r *Runtime) Close() {
	if r.NC != nil {
		_ = r.NC.Drain()
	}
}
