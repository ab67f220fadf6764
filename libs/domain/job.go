package domain

import (
	"fmt"
	"time"
)

// QuantizationJob tracks one quantization. The first twelve fields are the seed's; the rest are what
// the fleet keeps in the same record (the request and the result) so that one KV value describes a job.
type QuantizationJob struct {
	JobID               string    `json:"job_id"`
	Status              JobStatus `json:"status"`
	ProgressPercentage  float64   `json:"progress_percentage"` // 0..100
	CurrentLayer        int       `json:"current_layer"`
	TotalLayers         int       `json:"total_layers"`
	StartTime           time.Time `json:"start_time,omitzero"`
	EndTime             time.Time `json:"end_time,omitzero"`
	EstimatedCompletion time.Time `json:"estimated_completion,omitzero"`
	PeakMemoryUsage     int64     `json:"peak_memory_usage,omitempty"`    // bytes
	CurrentMemoryUsage  int64     `json:"current_memory_usage,omitempty"` // bytes
	ErrorMessage        string    `json:"error_message,omitempty"`
	CheckpointPath      string    `json:"checkpoint_path,omitempty"`

	// Fleet extensions, not in the seed.
	CreatedAt time.Time           `json:"created_at,omitzero"`
	UpdatedAt time.Time           `json:"updated_at,omitzero"`
	Source    *SourceModel        `json:"source,omitempty"`
	Config    *QuantizationConfig `json:"config,omitempty"`
	Result    *QuantizedModel     `json:"result,omitempty"`
	// Waiting says what a PENDING or RUNNING job is waiting for ("waiting for object storage",
	// "waiting for a worker of pool gpu"); empty while it makes progress.
	Waiting string `json:"waiting,omitempty"`
	// History lists the job's status changes, oldest first (at most MaxHistory, the first kept).
	History []StatusChange `json:"history,omitempty"`
	// TasksDone of TotalTasks tasks are finished. A layer can be many tasks (a sharded GPTQ layer:
	// Hessian partials, solves, forwards), so CurrentLayer/TotalLayers count whole layers while
	// ProgressPercentage and EstimatedCompletion follow the tasks.
	TasksDone  int `json:"tasks_done,omitempty"`
	TotalTasks int `json:"total_tasks,omitempty"`
}

// StatusChange is one entry of a job's history.
type StatusChange struct {
	From   JobStatus `json:"from,omitempty"`
	To     JobStatus `json:"to"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
}

// MaxHistory bounds QuantizationJob.History (a job resumed again and again keeps its first entry
// and the latest ones).
const MaxHistory = 32

// NewJob returns a PENDING job created at now.
func NewJob(id string, now time.Time) *QuantizationJob {
	return &QuantizationJob{JobID: id, Status: StatusPending, CreatedAt: now, UpdatedAt: now}
}

// transitions is the seed's state machine, PENDING → RUNNING → COMPLETED | FAILED | CANCELLED and
// PENDING → CANCELLED, plus one edge of the fleet's: FAILED → PENDING, a failed job resumed once its
// cause is fixed (it then runs again from its checkpoint or its source).
var transitions = map[JobStatus][]JobStatus{
	StatusPending: {StatusRunning, StatusCancelled},
	StatusRunning: {StatusCompleted, StatusFailed, StatusCancelled},
	StatusFailed:  {StatusPending},
}

// CanTransition reports whether the state machine allows moving from s to to. Staying in the same
// state is not a transition.
func (s JobStatus) CanTransition(to JobStatus) bool {
	for _, t := range transitions[s] {
		if t == to {
			return true
		}
	}
	return false
}

// Terminal reports whether s is final (COMPLETED, FAILED or CANCELLED).
func (s JobStatus) Terminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

// Transition moves the job to status to, or returns an error wrapping ErrIllegalTransition and leaves
// the job unchanged. Every transition is appended to History. Entering RUNNING sets StartTime;
// entering a terminal state sets EndTime and clears EstimatedCompletion and Waiting; COMPLETED also
// sets the progress to 100%; FAILED → PENDING clears EndTime and ErrorMessage (the history keeps
// the message).
func (j *QuantizationJob) Transition(to JobStatus, now time.Time) error {
	return j.TransitionWhy(to, "", now)
}

// TransitionWhy is Transition with a reason recorded in the history.
func (j *QuantizationJob) TransitionWhy(to JobStatus, reason string, now time.Time) error {
	if !j.Status.CanTransition(to) {
		return fmt.Errorf("%w: job %s cannot go from %s to %s", ErrIllegalTransition, j.JobID, j.Status, to)
	}
	j.History = append(j.History, StatusChange{From: j.Status, To: to, At: now, Reason: reason})
	if len(j.History) > MaxHistory {
		j.History = append(j.History[:1], j.History[len(j.History)-MaxHistory+1:]...)
	}
	from := j.Status
	j.Status = to
	j.UpdatedAt = now
	switch {
	case from == StatusFailed && to == StatusPending:
		j.EndTime = time.Time{}
		j.ErrorMessage = ""
	case to == StatusRunning:
		if j.StartTime.IsZero() {
			j.StartTime = now
		}
	case to.Terminal():
		j.EndTime = now
		j.EstimatedCompletion = time.Time{}
		j.Waiting = ""
		if to == StatusCompleted {
			j.ProgressPercentage = 100
			j.CurrentLayer, j.TasksDone = j.TotalLayers, j.TotalTasks
		}
	}
	return nil
}

// Fail moves a RUNNING job to FAILED and records msg. The seed has no PENDING → FAILED edge, so a job
// that fails before it starts must be moved to RUNNING first.
func (j *QuantizationJob) Fail(msg string, now time.Time) error {
	if err := j.TransitionWhy(StatusFailed, msg, now); err != nil {
		return err
	}
	j.ErrorMessage = msg
	return nil
}

// Progress is how far a job is: whole layers complete, and the tasks the layers are split into.
type Progress struct {
	LayersDone, Layers int
	TasksDone, Tasks   int
}

// SetProgress records p, clamped to its totals: CurrentLayer/TotalLayers from the layers,
// TasksDone/TotalTasks from the tasks, and ProgressPercentage and, once StartTime is set and some
// work is done, an EstimatedCompletion extrapolated linearly from the elapsed time, both from the
// tasks (the finer unit; the layers when there are no tasks).
func (j *QuantizationJob) SetProgress(p Progress, now time.Time) {
	clamp := func(done, total int) (int, int) {
		total = max(total, 0)
		return min(max(done, 0), total), total
	}
	j.CurrentLayer, j.TotalLayers = clamp(p.LayersDone, p.Layers)
	j.TasksDone, j.TotalTasks = clamp(p.TasksDone, p.Tasks)
	j.UpdatedAt = now
	done, total := j.TasksDone, j.TotalTasks
	if total == 0 {
		done, total = j.CurrentLayer, j.TotalLayers
	}
	if total == 0 {
		j.ProgressPercentage = 0
		return
	}
	j.ProgressPercentage = 100 * float64(done) / float64(total)
	if done > 0 && !j.StartTime.IsZero() && now.After(j.StartTime) {
		elapsed := now.Sub(j.StartTime)
		remaining := time.Duration(float64(elapsed) * float64(total-done) / float64(done))
		j.EstimatedCompletion = now.Add(remaining)
	}
}

// ObserveMemory records a worker's current memory use and raises the peak if needed.
func (j *QuantizationJob) ObserveMemory(bytes int64) {
	j.CurrentMemoryUsage = bytes
	j.PeakMemoryUsage = max(j.PeakMemoryUsage, bytes)
}

// Validate checks the record's invariants: job_id set, status known, progress in 0..100,
// 0 <= current_layer <= total_layers, 0 <= tasks_done <= total_tasks.
func (j *QuantizationJob) Validate() error {
	switch {
	case j.JobID == "":
		return invalid("job_id", "job_id is required")
	case !j.Status.Valid():
		return invalid("status", "status %q is not valid (valid: %s)", j.Status, joinEnum(jobStatuses))
	case j.ProgressPercentage < 0 || j.ProgressPercentage > 100:
		return invalid("progress_percentage", "progress_percentage %g is out of range (valid: 0..100)", j.ProgressPercentage)
	case j.TotalLayers < 0 || j.CurrentLayer < 0 || j.CurrentLayer > j.TotalLayers:
		return invalid("current_layer", "current_layer %d is out of range (valid: 0..%d)", j.CurrentLayer, j.TotalLayers)
	case j.TotalTasks < 0 || j.TasksDone < 0 || j.TasksDone > j.TotalTasks:
		return invalid("tasks_done", "tasks_done %d is out of range (valid: 0..%d)", j.TasksDone, j.TotalTasks)
	}
	return nil
}
