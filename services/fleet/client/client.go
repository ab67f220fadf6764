// Package client is the submitter's side of the fleet: submit a job (uploading a local model once,
// content-addressed), follow it, cancel or resume it, and fetch its result.
package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"quantfleet.dev/libs/fault"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"quantfleet.dev/libs/atomicfile"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/hub"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/dispatcher"
	"quantfleet.dev/services/fleet/modelstore"
)

// Sentinel errors callers branch on.
var (
	// ErrBadModel reports a --model that is neither a directory, a Hub id nor an s3:// URL.
	ErrBadModel = fault.New(fault.ErrBadInput, "bad model reference")
	// ErrNotFinished is returned when a finished job's result is asked for too early.
	ErrNotFinished = fault.New(fault.ErrBadInput, "job has not completed")
	// ErrNoDispatcher reports a request no dispatcher answered.
	ErrNoDispatcher = errors.New("no dispatcher answered")
	// ErrJobEnded is returned for an operation a job's state no longer allows.
	ErrJobEnded = fault.New(fault.ErrBadInput, "job has ended")
)

// Client talks to the fleet.
type Client struct {
	RT *fleet.Runtime
	// Overwrite lets Download replace whatever is at the output path; without it only an earlier
	// GGUF file or a directory quantfleet wrote is replaced (see atomicfile).
	Overwrite bool
}

// SubmitRequest describes a job.
type SubmitRequest struct {
	// Model is a local checkpoint directory, a Hub id "org/name[@rev]", or "s3://bucket/prefix".
	Model string
	// Name overrides the model's name (default: a directory's base name as given, or the Hub id).
	Name         string
	Config       domain.QuantizationConfig
	TokenizerPre string
	Pool         string // worker pool; "" is the dispatcher's default
	// Layered holds a GPTQ/AWQ job's settings beyond Config; its Calibration is filled from
	// Config.CalibrationDataPath, a local file uploaded once (content-addressed).
	Layered *fleet.LayerOptions
	Upload  modelstore.Progress // told about a local model's upload; may be nil
}

// Submitted describes a new job.
type Submitted struct {
	JobID    string            `json:"job_id"`
	Request  *fleet.JobRequest `json:"request"`
	Uploaded bool              `json:"uploaded"` // a local model was uploaded (not already stored)
}

// Submit validates the request, puts a local model into object storage if it is not there yet,
// and creates the PENDING job.
func (c *Client) Submit(ctx context.Context, r SubmitRequest) (*Submitted, error) {
	cfg := r.Config
	if err := cfg.Normalize(); err != nil {
		return nil, err
	}
	if r.Pool != "" {
		if err := queue.CheckPool(r.Pool); err != nil {
			return nil, err
		}
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	req := &fleet.JobRequest{JobID: id.String(), TokenizerPre: r.TokenizerPre, Pool: r.Pool, Config: cfg,
		SubmittedAt: time.Now().UTC()}
	if cfg.TargetFormat != domain.FormatGGUF {
		o := fleet.LayerOptions{}
		if r.Layered != nil {
			o = *r.Layered
		}
		if err := cfg.ValidateLayers(o.LayerOptions); err != nil {
			return nil, err
		}
		if !o.RTN {
			key, err := modelstore.UploadFile(ctx, c.RT.Store, cfg.CalibrationDataPath)
			if err != nil {
				return nil, fmt.Errorf("calibration data: %w", err)
			}
			o.Calibration, o.CalibrationName = &fleet.Location{Prefix: key}, filepath.Base(cfg.CalibrationDataPath)
		}
		req.Layered = &o
	}
	out := &Submitted{JobID: req.JobID, Request: req}
	switch {
	case strings.HasPrefix(r.Model, "s3://"):
		bucket, prefix, err := modelstore.ParseS3URL(r.Model)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadModel, err)
		}
		if bucket == c.RT.Bucket {
			bucket = ""
		}
		req.Model, req.ModelType, req.Location, req.Name = r.Model, domain.ModelLocalDir, &fleet.Location{Bucket: bucket, Prefix: prefix}, path.Base("/"+prefix)
	case isDir(r.Model):
		abs, err := filepath.Abs(r.Model)
		if err != nil {
			return nil, err
		}
		prefix, uploaded, err := modelstore.UploadDir(ctx, c.RT.Store, r.Model, r.Upload)
		if err != nil {
			return nil, err
		}
		out.Uploaded = uploaded
		req.Model, req.ModelType, req.Location, req.Name = abs, domain.ModelLocalDir, &fleet.Location{Prefix: strings.TrimSuffix(prefix, "/")}, BaseName(r.Model)
	case hub.LooksLikeModelID(r.Model):
		repo, _, err := hub.ParseModelID(r.Model)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadModel, err)
		}
		req.Model, req.ModelType, req.Name, req.RemoteID = r.Model, domain.ModelHFHub, repo, repo
	default:
		return nil, fmt.Errorf("%w: model %s: no such directory, not a Hugging Face Hub id (org/name[@revision]) and not an s3:// URL", ErrBadModel, r.Model)
	}
	if r.Name != "" {
		req.Name = r.Name
	}
	if err := c.RT.PutRequest(ctx, req); err != nil {
		return nil, err
	}
	job := domain.NewJob(req.JobID, time.Now().UTC())
	job.Config = &req.Config
	job.Source = &domain.SourceModel{ModelPath: req.Model, ModelType: req.ModelType}
	if _, err := c.RT.Jobs.Create(ctx, job); err != nil {
		return nil, err
	}
	return out, nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// BaseName names a local model the way the local quantizer does: the last path element.
func BaseName(p string) string {
	p = strings.TrimRight(p, "/")
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[i+1:]
	}
	return p
}

// Job returns a job record.
func (c *Client) Job(ctx context.Context, id string) (*domain.QuantizationJob, error) {
	j, _, err := c.RT.Jobs.Get(ctx, id)
	return j, err
}

// Wait follows a job until it ends (or ctx does), calling onUpdate with every new state.
func (c *Client) Wait(ctx context.Context, id string, onUpdate func(*domain.QuantizationJob)) (*domain.QuantizationJob, error) {
	if _, err := c.Job(ctx, id); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates, err := c.RT.Jobs.Watch(wctx, id)
	if err != nil {
		return nil, err
	}
	for u := range updates {
		if onUpdate != nil {
			onUpdate(u.Job)
		}
		if u.Job.Status.Terminal() {
			return u.Job, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("watching job %s ended unexpectedly", id)
}

// Cancel moves a PENDING or RUNNING job to CANCELLED; the dispatcher then removes its objects and
// workers drop its tasks.
func (c *Client) Cancel(ctx context.Context, id string) (*domain.QuantizationJob, error) {
	j, err := c.RT.Jobs.Update(ctx, id, func(j *domain.QuantizationJob) error {
		if j.Status.Terminal() {
			return fmt.Errorf("%w: job %s is %s", ErrJobEnded, j.JobID, j.Status)
		}
		return j.Transition(domain.StatusCancelled, time.Now().UTC())
	})
	if err != nil {
		return nil, err
	}
	ev := fleet.NewEvent(id)
	ev.Event = &pb.JobEvent_State{State: &pb.JobStateChanged{To: string(domain.StatusCancelled)}}
	_ = c.RT.PublishEvent(ctx, ev, id+"/cancelled")
	return j, nil
}

// Resume asks a dispatcher to resume a job: finished tasks are verified against their shards and
// only the others are queued again. A non-nil cfg must match the job's config snapshot
// (domain.ErrConfigMismatch otherwise). It returns the job as it stands after the resume.
func (c *Client) Resume(ctx context.Context, id string, cfg *domain.QuantizationConfig, timeout time.Duration) (*domain.QuantizationJob, error) {
	req := &pb.JobControlRequest{JobId: id, Action: pb.JobControlRequest_ACTION_RESUME}
	if cfg != nil {
		if err := cfg.Normalize(); err != nil {
			return nil, err
		}
		req.Config = fleet.ConfigToProto(*cfg)
	}
	j, err := c.Job(ctx, id)
	if err != nil {
		return nil, err
	}
	if j.Status == domain.StatusCompleted || j.Status == domain.StatusCancelled {
		return nil, fmt.Errorf("%w: job %s is %s: only a pending, running or failed job can be resumed", ErrJobEnded, id, j.Status)
	}
	b, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	// A dispatcher that is starting answers a moment later: retry "no responders" until timeout.
	rctx := withTimeout(ctx, timeout)
	var m *nats.Msg
	for {
		m, err = c.RT.NC.RequestWithContext(rctx, dispatcher.ControlSubject, b)
		if !errors.Is(err, nats.ErrNoResponders) || rctx.Err() != nil {
			break
		}
		select {
		case <-time.After(250 * time.Millisecond):
		case <-rctx.Done():
		}
	}
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
		return nil, fmt.Errorf("%w within %v: start a dispatcher, then resume again (%v)", ErrNoDispatcher, timeout, err)
	}
	if err != nil {
		return nil, err
	}
	var r pb.JobReply
	if err := proto.Unmarshal(m.Data, &r); err != nil {
		return nil, fmt.Errorf("bad reply from the dispatcher: %w", err)
	}
	if r.Error != "" {
		switch {
		case strings.Contains(r.Error, domain.ErrConfigMismatch.Error()):
			return nil, fmt.Errorf("%w: %s", domain.ErrConfigMismatch, strings.TrimPrefix(r.Error, domain.ErrConfigMismatch.Error()+": "))
		case r.ErrorCode == dispatcher.CodeNotFound:
			return nil, fmt.Errorf("%w: %s", queue.ErrJobNotFound, r.Error)
		case r.ErrorCode == dispatcher.CodeConflict:
			return nil, fmt.Errorf("%w: %s", ErrJobEnded, r.Error)
		}
		return nil, errors.New(r.Error)
	}
	return c.Job(ctx, id)
}

func withTimeout(ctx context.Context, d time.Duration) context.Context {
	if d <= 0 {
		d = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	context.AfterFunc(ctx, cancel)
	return ctx
}

// List returns every job, oldest first.
func (c *Client) List(ctx context.Context) ([]*domain.QuantizationJob, error) {
	return c.RT.Jobs.List(ctx)
}

// resultKey returns the object key of a completed job's file.
func (c *Client) resultKey(ctx context.Context, id string) (*domain.QuantizedModel, string, error) {
	j, err := c.Job(ctx, id)
	if err != nil {
		return nil, "", err
	}
	if j.Status != domain.StatusCompleted || j.Result == nil {
		msg := ""
		if j.ErrorMessage != "" {
			msg = ": " + j.ErrorMessage
		}
		return nil, "", fmt.Errorf("%w: job %s is %s%s", ErrNotFinished, id, j.Status, msg)
	}
	bucket, key, ok := fleet.SplitS3URL(j.Result.OutputPath)
	if !ok || bucket != c.RT.Bucket {
		return nil, "", fmt.Errorf("job %s's output %s is not in bucket %s", id, j.Result.OutputPath, c.RT.Bucket)
	}
	return j.Result, key, nil
}

// Download writes a completed job's file into dir (name: the output's own name unless name is
// set), checks its SHA-256 against the assembler's, and returns the local record.
func (c *Client) Download(ctx context.Context, id, dir, name string, progress func(done, total int64)) (*domain.QuantizedModel, error) {
	res, key, err := c.resultKey(ctx, id)
	if err != nil {
		return nil, err
	}
	if strings.HasSuffix(key, "/") {
		return c.downloadDir(ctx, res, key, dir, name)
	}
	if name == "" {
		name = path.Base(key)
	}
	if err := atomicfile.MkdirAll(dir); err != nil {
		return nil, err
	}
	tmp, err := atomicfile.Create(dir, name, atomicfile.Options{Magic: gguf.Magic, Overwrite: c.Overwrite})
	if err != nil {
		return nil, err
	}
	defer tmp.Abort()
	rc, oi, err := c.RT.Store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	h := sha256.New()
	var src io.Reader = rc
	if progress != nil {
		src = &modelstore.ProgressReader{R: rc, F: func(n int64) { progress(n, oi.Size) }}
	}
	n, err := io.Copy(io.MultiWriter(tmp, h), src)
	if err != nil {
		return nil, fmt.Errorf("downloading %s: %w", res.OutputPath, err)
	}
	if n != res.FileSize {
		return nil, fmt.Errorf("downloaded %d bytes of %s, the job recorded %d", n, res.OutputPath, res.FileSize)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if want, _ := res.QuantizationMetadata["sha256"].(string); want != "" && want != sum {
		return nil, fmt.Errorf("downloaded %s has SHA-256 %s, the assembler validated %s", res.OutputPath, sum, want)
	}
	if err := tmp.Commit(); err != nil {
		return nil, err
	}
	final := tmp.FinalPath()
	abs, _ := filepath.Abs(final)
	local := *res
	local.OutputPath = abs
	return &local, nil
}

// URL returns a presigned download URL of a completed job's file, valid for expiry (1 s to 7 days).
func (c *Client) URL(ctx context.Context, id string, expiry time.Duration) (string, time.Time, error) {
	if expiry < time.Second || expiry > 7*24*time.Hour {
		return "", time.Time{}, fmt.Errorf("%w: expiry %v must be between 1s and 168h", domain.ErrInvalidConfig, expiry)
	}
	_, key, err := c.resultKey(ctx, id)
	if err != nil {
		return "", time.Time{}, err
	}
	u, err := c.RT.Store.PresignGet(ctx, key, expiry)
	if err != nil {
		return "", time.Time{}, err
	}
	return u, time.Now().Add(expiry).UTC(), nil
}

// downloadDir writes a checkpoint directory result into dir/name (name: the output's own name
// unless set), checking every file's SHA-256 against the assembler's; the directory appears
// complete or not at all.
func (c *Client) downloadDir(ctx context.Context, res *domain.QuantizedModel, prefix, dir, name string) (*domain.QuantizedModel, error) {
	if name == "" {
		name = path.Base(strings.TrimSuffix(prefix, "/"))
	}
	files, _ := res.QuantizationMetadata["files"].(map[string]any)
	if len(files) == 0 {
		return nil, fmt.Errorf("job result %s lists no files", res.OutputPath)
	}
	if err := atomicfile.MkdirAll(dir); err != nil {
		return nil, err
	}
	out, err := atomicfile.MkdirTemp(dir, name, atomicfile.Options{Overwrite: c.Overwrite})
	if err != nil {
		return nil, err
	}
	defer out.Abort()
	tmp := out.Path
	var total int64
	for file, want := range files {
		if file != path.Base(file) || strings.HasPrefix(file, ".") {
			return nil, fmt.Errorf("job result %s lists a bad file name %q", res.OutputPath, file)
		}
		n, sum, err := c.getFile(ctx, prefix+file, filepath.Join(tmp, file))
		if err != nil {
			return nil, fmt.Errorf("downloading %s%s: %w", res.OutputPath, file, err)
		}
		if sum != want {
			return nil, fmt.Errorf("downloaded %s%s has SHA-256 %s, the assembler validated %v", res.OutputPath, file, sum, want)
		}
		total += n
	}
	if total != res.FileSize {
		return nil, fmt.Errorf("downloaded %d bytes of %s, the job recorded %d", total, res.OutputPath, res.FileSize)
	}
	if err := out.Commit(); err != nil {
		return nil, err
	}
	abs, _ := filepath.Abs(out.FinalPath())
	local := *res
	local.OutputPath = abs
	return &local, nil
}

func (c *Client) getFile(ctx context.Context, key, dst string) (int64, string, error) {
	rc, _, err := c.RT.Store.Get(ctx, key)
	if err != nil {
		return 0, "", err
	}
	defer rc.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, "", err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, hex.EncodeToString(h.Sum(nil)), err
}
