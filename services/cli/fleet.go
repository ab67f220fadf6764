package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/client"
	"quantfleet.dev/services/fleet/modelstore"
)

// fleetFlags are the flags of every command that talks to a fleet.
type fleetFlags struct {
	common
	conn fleet.Config
}

func (f *fleetFlags) register(fs *flag.FlagSet, env Env) {
	f.common.register(fs)
	f.conn.Register(fs, env.Getenv)
}

// connect opens the fleet connection. Without needS3 an unset S3 endpoint is fine (status, list,
// cancel and watch only use NATS).
func (f *fleetFlags) connect(ctx context.Context, log *zap.Logger, needS3 bool) (*client.Client, func(), error) {
	var rt *fleet.Runtime
	var err error
	if f.conn.S3Endpoint == "" && !needS3 {
		nc, cerr := f.conn.ConnectNATS(ctx, "quantfleet", log)
		if cerr != nil {
			return nil, nil, cerr
		}
		rt, err = fleet.NewRuntime(nc, nil, f.conn.S3Bucket, nil, log)
		if err != nil {
			nc.Close()
		}
	} else {
		rt, err = fleet.Connect(ctx, f.conn, "quantfleet", log)
	}
	if err != nil {
		if errors.Is(err, fleet.ErrConfig) {
			return nil, nil, usageError{err}
		}
		return nil, nil, err
	}
	if err := rt.Bind(ctx); err != nil {
		rt.Close()
		return nil, nil, err
	}
	return &client.Client{RT: rt}, rt.Close, nil
}

// parseWithJob parses flags and exactly one positional JOB argument, which may come before,
// between or after the flags.
func parseWithJob(fs *flag.FlagSet, args []string) (string, error) {
	var pos []string
	rest := args
	for {
		if err := fleet.ParseFlags(fs, rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return "", err
			}
			return "", usageError{err}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	switch len(pos) {
	case 0:
		return "", usagef("a job id is required")
	case 1:
		if !fleet.ValidToken(pos[0]) {
			return "", usagef("%q is not a job id", pos[0])
		}
		return pos[0], nil
	}
	return "", usagef("unexpected argument %q", pos[1])
}

// jobWatcher renders a job's progress: a redrawn line on a terminal, a line per change otherwise,
// JSON progress events in --json mode, nothing when quiet.
type jobWatcher struct {
	w        io.Writer
	json     bool
	quiet    bool
	terminal bool
	last     string
	drawn    bool
}

func newJobWatcher(env Env, v domain.Verbosity, jsonOut bool) *jobWatcher {
	w := &jobWatcher{w: env.Stderr, json: jsonOut, quiet: v == domain.VerbosityQuiet, terminal: env.IsTerminal}
	if jsonOut {
		w.w = env.Stdout
	}
	return w
}

// progressEvent is the JSON form of a job update.
type progressEvent struct {
	Event           string           `json:"event"`
	JobID           string           `json:"job_id"`
	Status          domain.JobStatus `json:"status"`
	CurrentLayer    int              `json:"current_layer"` // whole layers complete
	TotalLayers     int              `json:"total_layers"`
	TasksDone       int              `json:"tasks_done,omitempty"` // tasks done, of which a layer may be many
	TotalTasks      int              `json:"total_tasks,omitempty"`
	Percent         float64          `json:"percent"`
	ETASeconds      float64          `json:"eta_seconds,omitempty"`
	MemoryBytes     int64            `json:"memory_bytes,omitempty"`
	PeakMemoryBytes int64            `json:"peak_memory_bytes,omitempty"`
	ErrorMessage    string           `json:"error_message,omitempty"`
	Waiting         string           `json:"waiting,omitempty"`
}

func (w *jobWatcher) update(j *domain.QuantizationJob) {
	if w.json {
		ev := progressEvent{Event: "progress", JobID: j.JobID, Status: j.Status, CurrentLayer: j.CurrentLayer,
			TotalLayers: j.TotalLayers, TasksDone: j.TasksDone, TotalTasks: j.TotalTasks, Percent: j.ProgressPercentage, MemoryBytes: j.CurrentMemoryUsage,
			PeakMemoryBytes: j.PeakMemoryUsage, ErrorMessage: j.ErrorMessage, Waiting: j.Waiting}
		if !j.EstimatedCompletion.IsZero() {
			ev.ETASeconds = max(0, time.Until(j.EstimatedCompletion).Seconds())
		}
		_ = json.NewEncoder(w.w).Encode(ev)
		return
	}
	if w.quiet {
		return
	}
	line := progressLine(j)
	if w.terminal {
		fmt.Fprintf(w.w, "\r\033[K%s", line)
		w.drawn = true
		if j.Status.Terminal() {
			fmt.Fprintln(w.w)
			w.drawn = false
		}
		return
	}
	// Without a terminal, print when the state, the layer count or the tenth of the tasks changes
	// (a layer can be hundreds of tasks), not for every memory sample.
	key := fmt.Sprintf("%s %d/%d %d %s", j.Status, j.CurrentLayer, j.TotalLayers, int(j.ProgressPercentage/10), j.Waiting)
	if key != w.last {
		fmt.Fprintln(w.w, line)
		w.last = key
	}
}

func (w *jobWatcher) done() {
	if w.drawn {
		fmt.Fprintln(w.w)
		w.drawn = false
	}
}

// progressLine is "job ID  running  layer 5/8  task 130/208  [############........]  62%  ETA 0:03
// mem 210 MiB (peak 240 MiB)": whole layers complete, the tasks they are split into (the
// percentage and ETA follow the tasks).
func progressLine(j *domain.QuantizationJob) string {
	var b strings.Builder
	fmt.Fprintf(&b, "job %s  %s", j.JobID, j.Status)
	if j.TotalLayers > 0 {
		fmt.Fprintf(&b, "  layer %d/%d", j.CurrentLayer, j.TotalLayers)
	}
	if j.TotalTasks > 0 {
		fmt.Fprintf(&b, "  task %d/%d", j.TasksDone, j.TotalTasks)
	}
	const width = 20
	fill := int(j.ProgressPercentage / 100 * width)
	fmt.Fprintf(&b, "  [%s%s] %3.0f%%", strings.Repeat("#", fill), strings.Repeat(".", width-fill), j.ProgressPercentage)
	if !j.EstimatedCompletion.IsZero() && !j.Status.Terminal() {
		fmt.Fprintf(&b, "  ETA %s", clockString(max(0, time.Until(j.EstimatedCompletion))))
	}
	if j.CurrentMemoryUsage > 0 || j.PeakMemoryUsage > 0 {
		fmt.Fprintf(&b, "  mem %s (peak %s)", humanBytes(j.CurrentMemoryUsage), humanBytes(j.PeakMemoryUsage))
	}
	if j.Waiting != "" && !j.Status.Terminal() {
		fmt.Fprintf(&b, "  (%s)", j.Waiting)
	}
	if j.ErrorMessage != "" {
		fmt.Fprintf(&b, "  error: %s", j.ErrorMessage)
	}
	return b.String()
}

func clockString(d time.Duration) string {
	s := int(d.Round(time.Second).Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// uploadProgress reports a local model's upload on the job watcher's stream.
func uploadProgress(env Env, v domain.Verbosity, jsonOut bool) modelstore.Progress {
	if jsonOut || v == domain.VerbosityQuiet {
		return nil
	}
	reported := map[string]bool{}
	return func(file string, done, total int64) {
		if reported[file] {
			return
		}
		if env.IsTerminal {
			fmt.Fprintf(env.Stderr, "\r\033[Kuploading %s  %s / %s", file, humanBytes(done), humanBytes(total))
		}
		if done == total {
			reported[file] = true
			if env.IsTerminal {
				fmt.Fprintln(env.Stderr)
			} else {
				fmt.Fprintf(env.Stderr, "uploaded %s (%s)\n", file, humanBytes(total))
			}
		}
	}
}

// jobSummary prints a job for people.
func jobSummary(w io.Writer, j *domain.QuantizationJob) {
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%-16s %s\n", k+":", v)
		}
	}
	ts := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Local().Format(time.DateTime)
	}
	row("job", j.JobID)
	row("status", string(j.Status))
	if !j.Status.Terminal() {
		row("waiting", j.Waiting)
	}
	if j.Source != nil {
		row("model", j.Source.ModelPath)
		if j.Source.Architecture != "" {
			row("architecture", fmt.Sprintf("%s, %d parameters, %s", j.Source.Architecture, j.Source.ParameterCount, j.Source.Dtype))
		}
	}
	if j.Config != nil {
		row("level", fmt.Sprintf("%s %s", j.Config.TargetFormat, j.Config.QuantizationLevel))
	}
	if j.TotalLayers > 0 {
		row("progress", fmt.Sprintf("layer %d/%d, task %d/%d, %.1f%%", j.CurrentLayer, j.TotalLayers, j.TasksDone, j.TotalTasks, j.ProgressPercentage))
	}
	row("created", ts(j.CreatedAt))
	row("started", ts(j.StartTime))
	if !j.Status.Terminal() {
		row("eta", ts(j.EstimatedCompletion))
	}
	row("ended", ts(j.EndTime))
	if j.CurrentMemoryUsage > 0 || j.PeakMemoryUsage > 0 {
		row("memory", fmt.Sprintf("%s (peak %s)", humanBytes(j.CurrentMemoryUsage), humanBytes(j.PeakMemoryUsage)))
	}
	row("checkpoint", j.CheckpointPath)
	row("error", j.ErrorMessage)
	for _, h := range j.History {
		row("history", fmt.Sprintf("%s  %s → %s%s", ts(h.At), cmp.Or(string(h.From), "new"), h.To, prefixed(": ", h.Reason)))
	}
	if r := j.Result; r != nil {
		row("output", r.OutputPath)
		row("size", fmt.Sprintf("%s (%.1f%% of the source), %s", humanBytes(r.FileSize), 100*r.CompressionRatio, r.ValidationStatus))
		if s, ok := r.QuantizationMetadata["sha256"].(string); ok {
			row("sha256", s)
		}
	}
}
