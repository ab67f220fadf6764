package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"quantfleet.dev/libs/fault"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"quantfleet.dev/libs/domain"
)

var (
	// ErrJobNotFound is returned for an unknown job id.
	ErrJobNotFound = fault.New(fault.ErrBadInput, "queue: job not found")
	// ErrJobExists is returned by Create for a job id already in use.
	ErrJobExists = errors.New("queue: job already exists")
	// ErrConflict is returned by Update when it lost the compare-and-set race too many times.
	ErrConflict = errors.New("queue: job update conflict")
)

// JobStore keeps QuantizationJob records in the QF_JOBS KV bucket, one key per job id, as JSON.
// Every write is revision-checked, so concurrent writers (dispatcher replicas, a CLI cancel) never
// overwrite each other's changes.
type JobStore struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// NewJobStore binds to the QF_JOBS bucket (created by Setup).
func NewJobStore(ctx context.Context, js jetstream.JetStream) (*JobStore, error) {
	kv, err := js.KeyValue(ctx, JobsBucket)
	if err != nil {
		return nil, fmt.Errorf("queue: kv %s (has Setup run?): %w", JobsBucket, err)
	}
	return &JobStore{kv: kv, now: time.Now}, nil
}

// Create stores a new job and returns its revision. The job must validate; its id must be a
// single token (a UUID is).
func (s *JobStore) Create(ctx context.Context, job *domain.QuantizationJob) (uint64, error) {
	if err := checkToken("job id", job.JobID); err != nil {
		return 0, err
	}
	if err := job.Validate(); err != nil {
		return 0, err
	}
	if job.UpdatedAt.IsZero() {
		job.UpdatedAt = s.now()
	}
	b, err := json.Marshal(job)
	if err != nil {
		return 0, fmt.Errorf("queue: encode job %s: %w", job.JobID, err)
	}
	rev, err := s.kv.Create(ctx, job.JobID, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%w: %s", ErrJobExists, job.JobID)
	}
	if err != nil {
		return 0, classify(ctx, fmt.Errorf("queue: create job %s: %w", job.JobID, err))
	}
	return rev, nil
}

// Get returns a job and its revision.
func (s *JobStore) Get(ctx context.Context, id string) (*domain.QuantizationJob, uint64, error) {
	if err := checkToken("job id", id); err != nil {
		return nil, 0, err
	}
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("%w: %s", ErrJobNotFound, id)
	}
	if err != nil {
		return nil, 0, classify(ctx, fmt.Errorf("queue: get job %s: %w", id, err))
	}
	job, err := decodeJob(e)
	return job, e.Revision(), err
}

func decodeJob(e jetstream.KeyValueEntry) (*domain.QuantizationJob, error) {
	var job domain.QuantizationJob
	if err := json.Unmarshal(e.Value(), &job); err != nil {
		return nil, fmt.Errorf("queue: decode job %s: %w", e.Key(), err)
	}
	return &job, nil
}

// maxUpdateAttempts bounds Update's compare-and-set loop.
const maxUpdateAttempts = 100

// Update applies fn to the current job and writes the result if the job did not change meanwhile;
// on a conflict it re-reads and calls fn again (so fn must be free of side effects other than on
// the job). An error from fn aborts the update and is returned as is (e.g.
// domain.ErrIllegalTransition). Update returns the job as written.
func (s *JobStore) Update(ctx context.Context, id string, fn func(*domain.QuantizationJob) error) (*domain.QuantizationJob, error) {
	for attempt := 0; attempt < maxUpdateAttempts; attempt++ {
		job, rev, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := fn(job); err != nil {
			return nil, err
		}
		if job.JobID != id {
			return nil, fmt.Errorf("queue: update of job %s changed its id to %s", id, job.JobID)
		}
		if err := job.Validate(); err != nil {
			return nil, err
		}
		job.UpdatedAt = s.now()
		b, err := json.Marshal(job)
		if err != nil {
			return nil, fmt.Errorf("queue: encode job %s: %w", id, err)
		}
		_, err = s.kv.Update(ctx, id, b, rev)
		if err == nil {
			return job, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, classify(ctx, fmt.Errorf("queue: update job %s: %w", id, err))
		}
		// Lost the race: back off a little (jittered) and retry on fresh data.
		select {
		case <-time.After(time.Duration(rand.IntN(1+min(attempt, 20))) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("%w: %s after %d attempts", ErrConflict, id, maxUpdateAttempts)
}

// List returns every job, oldest first (by CreatedAt, then id).
func (s *JobStore) List(ctx context.Context) ([]*domain.QuantizationJob, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, classify(ctx, fmt.Errorf("queue: list jobs: %w", err))
	}
	defer lister.Stop()
	seen := map[string]bool{} // ListKeys may repeat keys on a busy bucket
	var jobs []*domain.QuantizationJob
	for key := range lister.Keys() {
		if seen[key] {
			continue
		}
		seen[key] = true
		job, _, err := s.Get(ctx, key)
		if errors.Is(err, ErrJobNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, job)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(jobs, func(a, b *domain.QuantizationJob) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.JobID, b.JobID)
	})
	return jobs, nil
}

// Delete removes a job record.
func (s *JobStore) Delete(ctx context.Context, id string) error {
	if err := checkToken("job id", id); err != nil {
		return err
	}
	if err := s.kv.Purge(ctx, id); err != nil {
		return classify(ctx, fmt.Errorf("queue: delete job %s: %w", id, err))
	}
	return nil
}

// JobUpdate is one value seen by Watch.
type JobUpdate struct {
	Job      *domain.QuantizationJob
	Revision uint64
}

// Watch sends the current state of job id (or of every job when id is "") and then every change,
// until ctx ends; then the channel is closed. Deleted jobs are not reported.
func (s *JobStore) Watch(ctx context.Context, id string) (<-chan JobUpdate, error) {
	var w jetstream.KeyWatcher
	var err error
	if id == "" {
		w, err = s.kv.WatchAll(ctx)
	} else {
		if err := checkToken("job id", id); err != nil {
			return nil, err
		}
		w, err = s.kv.Watch(ctx, id)
	}
	if err != nil {
		return nil, classify(ctx, fmt.Errorf("queue: watch jobs: %w", err))
	}
	out := make(chan JobUpdate, 16)
	go func() {
		defer close(out)
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil || e.Operation() != jetstream.KeyValuePut {
					continue // nil marks the end of the initial values
				}
				job, err := decodeJob(e)
				if err != nil {
					continue
				}
				select {
				case out <- JobUpdate{Job: job, Revision: e.Revision()}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}
