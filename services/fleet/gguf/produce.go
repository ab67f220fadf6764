package gguf

import (
	"context"
	"fmt"
	"os"
	"strings"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/convert"
	libgguf "quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/objfs"
)

// Produce computes a task's shard: every tensor's GGUF bytes followed by its alignment padding.
// tick, if not nil, is called after each tensor (workers use it for heartbeats and progress).
func Produce(ctx context.Context, src convert.Source, p *Plan, t Task, tick func(tensor string)) ([]byte, error) {
	if t.First < 0 || t.Count <= 0 || t.First+t.Count > len(p.Tensors) {
		return nil, fmt.Errorf("%w: task %s covers tensors [%d,+%d) of %d", ErrBadPlan, t.ID, t.First, t.Count, len(p.Tensors))
	}
	buf := make([]byte, 0, t.Size)
	rope := p.Rope
	for _, tp := range p.Tensors[t.First : t.First+t.Count] {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if tp.Offset != t.Offset+uint64(len(buf)) {
			return nil, fmt.Errorf("%w: tensor %s at %d, task %s reaches %d", ErrBadPlan, tp.Name, tp.Offset, t.ID, t.Offset+uint64(len(buf)))
		}
		data, err := tp.Produce(src, rope)
		if err != nil {
			return nil, err
		}
		if uint64(len(data)) != tp.Size {
			return nil, fmt.Errorf("%w: tensor %s produced %d bytes, plan says %d", ErrBadPlan, tp.Name, len(data), tp.Size)
		}
		buf = append(buf, data...)
		buf = append(buf, make([]byte, libgguf.DataPadding(tp.Size))...)
		if tick != nil {
			tick(tp.Name)
		}
	}
	if uint64(len(buf)) != t.Size {
		return nil, fmt.Errorf("%w: task %s produced %d bytes, plan says %d", ErrBadPlan, t.ID, len(buf), t.Size)
	}
	return buf, nil
}

// OpenModel opens the checkpoint stored under prefix: only config.json and the safetensors
// headers are read.
func OpenModel(ctx context.Context, store blob.Store, prefix, name string) (*hfmodel.Model, *objfs.FS, error) {
	return objfs.OpenModel(ctx, store, prefix, name)
}

// PlanOptions tune PlanJob.
type PlanOptions struct {
	RemoteID     string // Hub id of a Hub model
	DirName      string // name of a local model directory (default: the model's name)
	TokenizerPre string
	// TempDir is where the small files are copied (default os.TempDir()); they are removed after.
	TempDir string
	// SourceName is the model as the user named it (a local path, s3:// URL or Hub id): error
	// messages name it instead of the temporary copy.
	SourceName string
}

// relocated is an error whose text names the user's model instead of the planner's temporary copy.
type relocated struct {
	err      error
	from, to string
}

func (e *relocated) Error() string { return strings.ReplaceAll(e.err.Error(), e.from, e.to) }
func (e *relocated) Unwrap() error { return e.err }

// PlanJob plans the conversion of m at level: it copies the model's small top-level files (config,
// tokenizer, README) from fsys to a temporary directory for convert.NewPlan, and returns the plan
// and the encoded header.
func PlanJob(ctx context.Context, jobID string, m *hfmodel.Model, fsys fleet.SourceFS, level string, o PlanOptions) (*Plan, []byte, error) {
	dir, err := os.MkdirTemp(o.TempDir, "quantfleet-plan-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	if err := fleet.CopySmallFiles(ctx, fsys, dir); err != nil {
		return nil, nil, err
	}
	cp, err := convert.NewPlan(m, dir, level, convert.Options{RemoteID: o.RemoteID, DirName: o.DirName, TokenizerPre: o.TokenizerPre})
	if err != nil && o.SourceName != "" {
		return nil, nil, &relocated{err: err, from: dir, to: strings.TrimSuffix(o.SourceName, "/")}
	}
	if err != nil {
		return nil, nil, err
	}
	header, err := cp.Header.MarshalBinary()
	if err != nil {
		return nil, nil, err
	}
	p := NewPlan(jobID, cp, header, m.WeightBytes())
	for i := range p.Tasks {
		t := &p.Tasks[i]
		for _, tp := range p.Tensors[t.First : t.First+t.Count] {
			if st, ok := m.Lookup(tp.Source); ok && tp.Source != "" {
				t.Inputs = append(t.Inputs, Input{Name: tp.Source, File: st.File, Offset: st.Begin, Length: st.Size()})
			}
		}
	}
	if err := p.Check(); err != nil {
		return nil, nil, err
	}
	return p, header, nil
}
