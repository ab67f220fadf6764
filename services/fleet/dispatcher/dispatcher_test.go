package dispatcher_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap/zaptest"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/blob/s3embed"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/hub"
	"quantfleet.dev/libs/hub/hubtest"
	"quantfleet.dev/libs/natsembed"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/queue"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/assembler"
	"quantfleet.dev/services/fleet/client"
	"quantfleet.dev/services/fleet/dispatcher"
	"quantfleet.dev/services/fleet/worker"
	"quantfleet.dev/services/internal/testenv"
)

var s3srv *s3embed.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dispatcher-s3-")
	if err != nil {
		panic(err)
	}
	if s3srv, err = s3embed.Start(context.Background(), dir); err != nil {
		panic(err)
	}
	code := m.Run()
	s3srv.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fleetOn starts an embedded NATS server and returns a runtime factory over store.
func fleetOn(t *testing.T, cfg fleet.Config) func(name string) *fleet.Runtime {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	return func(name string) *fleet.Runtime {
		nc, err := ns.Connect(nats.Name(name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		store, err := cfg.OpenStore("")
		if err != nil {
			t.Fatal(err)
		}
		rt, err := fleet.NewRuntime(nc, store, cfg.S3Bucket, func(b string) (blob.Store, error) { return cfg.OpenStore(b) }, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		return rt
	}
}

func run(t *testing.T, ctx context.Context, f func(context.Context) error) {
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(ctx)
	go func() { done <- f(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
	})
}

func startDispatcher(t *testing.T, ctx context.Context, rt *fleet.Runtime, cfg dispatcher.Config) *dispatcher.Dispatcher {
	d := dispatcher.New(rt, cfg, nil, zaptest.NewLogger(t))
	run(t, ctx, d.Run)
	select {
	case <-d.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("dispatcher not ready")
	}
	if err := rt.WaitBound(ctx); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestObjectStorageUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rt := fleetOn(t, fleet.Config{S3Endpoint: dead, S3Insecure: true, S3Bucket: "fleetbucket", S3AccessKey: "k", S3SecretKey: "s", S3MaxRetries: 1})
	startDispatcher(t, ctx, rt("dispatcher"), dispatcher.Config{Retries: 3, RetryBackoff: 50 * time.Millisecond, StorageName: "S3 at " + dead,
		Backoff: fleet.Backoff{Budget: time.Second, Max: 200 * time.Millisecond}})
	c := &client.Client{RT: rt("client")}
	if err := c.RT.Bind(ctx); err != nil {
		t.Fatal(err)
	}
	sub, err := c.Submit(ctx, client.SubmitRequest{Model: "s3://fleetbucket/models/x", Config: domain.DefaultConfig(domain.FormatGGUF, "Q4_K_M")})
	if err != nil {
		t.Fatal(err)
	}
	j, err := c.Wait(ctx, sub.JobID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != domain.StatusFailed || !strings.Contains(j.ErrorMessage, "object storage unreachable") || !strings.Contains(j.ErrorMessage, dead) {
		t.Errorf("job %s: %q", j.Status, j.ErrorMessage)
	}
}

// fleetIn creates bucket on the test S3 server and returns a runtime factory over it (with its own
// NATS server) and the bucket's store.
func fleetIn(t *testing.T, ctx context.Context, cfg fleet.Config) (func(name string) *fleet.Runtime, *blob.S3) {
	t.Helper()
	store, err := cfg.OpenStore("")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.EnsureBucket(ctx); err != nil {
		t.Fatal(err)
	}
	return fleetOn(t, cfg), store
}

// newClient is a bound client on its own connection.
func newClient(t *testing.T, ctx context.Context, rt func(string) *fleet.Runtime) *client.Client {
	t.Helper()
	c := &client.Client{RT: rt("client")}
	if err := c.RT.Bind(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func s3Config(bucket string) fleet.Config {
	return fleet.Config{S3Endpoint: s3srv.Endpoint, S3Insecure: true, S3Bucket: bucket, S3Region: s3srv.Region,
		S3AccessKey: s3srv.AccessKey, S3SecretKey: s3srv.SecretKey}
}

// TestHubModel mirrors a Hub model once, checks resume's config check, and runs the job to a file
// identical to a local quantize of the same Hub model.
func TestHubModel(t *testing.T) {
	tiny := testenv.TinyLlama(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := hubtest.New(t)
	if _, err := srv.AddDir("org/tiny-llama", tiny); err != nil {
		t.Fatal(err)
	}
	hc := &hub.Client{Endpoint: srv.URL, HTTP: srv.Client(), CacheDir: t.TempDir()}

	// The local reference: quantize the Hub model on this machine.
	snap, err := hc.Download(ctx, "org/tiny-llama", nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := hfmodel.Open(os.DirFS(snap), "org/tiny-llama")
	if err != nil {
		t.Fatal(err)
	}
	res, err := quantize.GGUF(ctx, quantize.GGUFRequest{Model: m, ModelDir: snap, RemoteID: "org/tiny-llama", Level: "Q4_K_M", OutputDir: t.TempDir()})
	m.Close()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(res.OutputPath)
	if err != nil {
		t.Fatal(err)
	}

	cfg := s3Config("hubmodel")
	store, _ := cfg.OpenStore("")
	if err := store.EnsureBucket(ctx); err != nil {
		t.Fatal(err)
	}
	rt := fleetOn(t, cfg)
	startDispatcher(t, ctx, rt("dispatcher"), dispatcher.Config{Queue: queue.Config{AckWait: 5 * time.Second},
		Hub: &hub.Client{Endpoint: srv.URL, HTTP: srv.Client(), CacheDir: t.TempDir()}})
	c := &client.Client{RT: rt("client")}
	if err := c.RT.Bind(ctx); err != nil {
		t.Fatal(err)
	}
	sub, err := c.Submit(ctx, client.SubmitRequest{Model: "org/tiny-llama", Config: domain.DefaultConfig(domain.FormatGGUF, "Q4_K_M")})
	if err != nil {
		t.Fatal(err)
	}
	// No workers yet: the job is planned and its tasks wait.
	waitFor(t, ctx, func() bool { j, _ := c.Job(ctx, sub.JobID); return j != nil && j.TotalLayers == 8 })
	waitFor(t, ctx, func() bool { return pending(t, ctx, c.RT) == 8 })
	mismatch := domain.DefaultConfig(domain.FormatGGUF, "Q5_K_M")
	if _, err := c.Resume(ctx, sub.JobID, &mismatch, 10*time.Second); !errors.Is(err, domain.ErrConfigMismatch) {
		t.Errorf("resume with another level: %v", err)
	}
	same := domain.DefaultConfig(domain.FormatGGUF, "q4_k_m")
	if _, err := c.Resume(ctx, sub.JobID, &same, 10*time.Second); err != nil {
		t.Errorf("resume: %v", err)
	}
	// Resume re-queued the 8 missing tasks in a new generation (the old ones stay: duplicates are
	// dropped by the workers).
	waitFor(t, ctx, func() bool { return pending(t, ctx, c.RT) == 16 })

	// A second job of the same model does not download it again.
	srv.ResetRequests()
	sub2, err := c.Submit(ctx, client.SubmitRequest{Model: "org/tiny-llama", Config: domain.DefaultConfig(domain.FormatGGUF, "Q8_0")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, func() bool { j, _ := c.Job(ctx, sub2.JobID); return j != nil && j.TotalLayers == 8 })
	if n := srv.FileGets(); n != 0 {
		t.Errorf("the second job downloaded %d files from the Hub", n)
	}
	if _, err := c.Cancel(ctx, sub2.JobID); err != nil {
		t.Fatal(err)
	}

	// Workers and the assembler finish the first job.
	w := worker.New(rt("worker"), worker.Config{Slots: 2}, nil, zaptest.NewLogger(t))
	run(t, ctx, w.Run)
	a := assembler.New(rt("assembler"), assembler.Config{}, nil, zaptest.NewLogger(t))
	run(t, ctx, a.Run)
	j, err := c.Wait(ctx, sub.JobID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != domain.StatusCompleted {
		t.Fatalf("job %s: %s", j.Status, j.ErrorMessage)
	}
	out := t.TempDir()
	got, err := c.Download(ctx, sub.JobID, out, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(got.OutputPath)
	if !bytes.Equal(b, want) {
		t.Fatalf("fleet file of the Hub model (%d bytes) differs from quantize's (%d bytes)", len(b), len(want))
	}
	if filepath.Base(got.OutputPath) != filepath.Base(res.OutputPath) {
		t.Errorf("name %s, quantize wrote %s", filepath.Base(got.OutputPath), filepath.Base(res.OutputPath))
	}
	// The assembler cleaned up: no shards, no header.
	keys, _ := blob.ListAll(ctx, store, fleet.ShardPrefix(sub.JobID))
	if len(keys) != 0 {
		t.Errorf("%d shards left after completion", len(keys))
	}
}

func pending(t *testing.T, ctx context.Context, rt *fleet.Runtime) uint64 {
	t.Helper()
	cons, err := rt.JS.Consumer(ctx, queue.TasksStream, queue.ConsumerName(queue.PoolCPU))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.NumPending + uint64(info.NumAckPending)
}

func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal(fmt.Errorf("condition not met: %w", ctx.Err()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
