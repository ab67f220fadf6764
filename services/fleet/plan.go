package fleet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/fault"
)

// PlanVersion is the version of the Plan JSON layout.
const PlanVersion = 2

// ErrBadPlan reports a plan or task that does not fit together (a corrupt or foreign plan object).
var ErrBadPlan = fault.New(fault.ErrPermanent, "inconsistent plan")

// ErrPlanChanged reports a stored plan whose SHA-256 is not the one a task was made for.
var ErrPlanChanged = fault.New(fault.ErrPermanent, "plan changed since the task was made")

// ErrShard reports a task's result object that is missing or not what its record says.
var ErrShard = fault.New(fault.ErrPermanent, "bad shard")

// ErrNoModel reports a source location that holds no checkpoint.
var ErrNoModel = fault.New(fault.ErrBadInput, "no model found")

// Plan is a planned job, stored once at PlanKey: what every kind's plan has (the source, the
// tasks) and, opaque to the fleet, the kind's own part (Spec). Workers and the assembler read it
// from the job's own key, never from a message.
type Plan struct {
	Version int `json:"version"`
	// Kind names the Kind that made the plan and runs its tasks.
	Kind  string `json:"kind"`
	JobID string `json:"job_id"`
	Level string `json:"level"` // canonical name, e.g. "Q4_K_M", "4bit"
	Arch  string `json:"arch"`
	// SourceBytes is the size of the source weights (for the compression ratio).
	SourceBytes int64 `json:"source_bytes"`
	// SourceBucket ("" for the fleet's bucket) and SourcePrefix locate the checkpoint; ModelName
	// is the name it was opened with.
	SourceBucket string     `json:"source_bucket,omitempty"`
	SourcePrefix string     `json:"source_prefix"`
	ModelName    string     `json:"model_name"`
	Tasks        []PlanTask `json:"tasks"`
	// Spec is the kind's part of the plan (its JSON), decoded by the kind (View).
	Spec json.RawMessage `json:"spec"`

	once    sync.Once
	view    any
	viewErr error
}

// PlanTask is one task of a plan.
type PlanTask struct {
	ID    string `json:"id"`    // "t0007", "l0003": sorts in order; a NATS token and a KV key part
	Label string `json:"label"` // "blk.3", "layer 3": the task for people
	Block int    `json:"block"` // transformer block, -1 for tasks outside the blocks
}

// Task returns the task with the given id.
func (p *Plan) Task(id string) (PlanTask, bool) {
	for _, t := range p.Tasks {
		if t.ID == id {
			return t, true
		}
	}
	return PlanTask{}, false
}

// Source is the checkpoint the job reads.
func (p *Plan) Source() Location { return Location{Bucket: p.SourceBucket, Prefix: p.SourcePrefix} }

// View returns the kind's decoded Spec, decoding it (and checking it against the plan) once.
func (p *Plan) View(decode func(*Plan) (any, error)) (any, error) {
	p.once.Do(func() { p.view, p.viewErr = decode(p) })
	return p.view, p.viewErr
}

// check verifies what every plan needs: its version and task ids that are unique tokens.
func (p *Plan) check() error {
	if p.Version != PlanVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrBadPlan, p.Version, PlanVersion)
	}
	seen := make(map[string]bool, len(p.Tasks))
	for _, t := range p.Tasks {
		if !ValidToken(t.ID) || seen[t.ID] {
			return fmt.Errorf("%w: task id %q", ErrBadPlan, t.ID)
		}
		seen[t.ID] = true
	}
	return nil
}

// ReadPlan reads a stored plan and returns it with the object's SHA-256 (hex); with sum not
// empty, a plan of another SHA-256 is refused (ErrPlanChanged).
func ReadPlan(ctx context.Context, store blob.Store, key, sum string) (*Plan, string, error) {
	rc, _, err := store.Get(ctx, key)
	if err != nil {
		return nil, "", fmt.Errorf("reading plan %s: %w", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, "", fmt.Errorf("reading plan %s: %w", key, err)
	}
	h := sha256.Sum256(b)
	got := hex.EncodeToString(h[:])
	if sum != "" && got != sum {
		return nil, "", fmt.Errorf("%w: %s", ErrPlanChanged, key)
	}
	var p Plan
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, "", fmt.Errorf("%w: %s: %v", ErrBadPlan, key, err)
	}
	if err := p.check(); err != nil {
		return nil, "", err
	}
	return &p, got, nil
}

// StorePlan writes the plan as JSON and returns the object's SHA-256 (hex).
func StorePlan(ctx context.Context, store blob.Store, key string, p *Plan) (string, error) {
	if err := p.check(); err != nil {
		return "", err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	if _, err := store.Put(ctx, key, bytes.NewReader(b), int64(len(b)), blob.PutOptions{}); err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}
