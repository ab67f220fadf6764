// Package gguf is the GGUF part of the fleet: it plans a job (the per-tensor type plan of
// convert, the header bytes and the split into tasks), produces one task's shard on a worker, and
// assembles and validates the final file from the shards in object storage.
//
// A shard is the contiguous bytes of the data section that its task's tensors occupy, padding
// included, so the file is exactly header ‖ shard₀ ‖ shard₁ ‖ … — byte for byte what
// quantize.GGUF writes locally.
package gguf

import (
	"encoding/json"
	"fmt"

	"quantfleet.dev/libs/convert"
	libgguf "quantfleet.dev/libs/gguf"
	"quantfleet.dev/services/fleet"
)

// PlanVersion is the version of the plan layout.
const PlanVersion = fleet.PlanVersion

// ErrNoModel reports a source location that holds no checkpoint.
var ErrNoModel = fleet.ErrNoModel

// ErrBadPlan reports a plan or task that does not fit together (a corrupt or foreign plan object).
var ErrBadPlan = fleet.ErrBadPlan

// Plan is what a GGUF job's workers and assembler need: the fleet.Plan's common fields and, in
// its Spec, the tensors, the header size and each task's span of the data section.
type Plan struct {
	Version  int    `json:"version"`
	JobID    string `json:"job_id"`
	Level    string `json:"level"` // canonical name, e.g. "Q4_K_M"
	FileType uint32 `json:"file_type"`
	Arch     string `json:"arch"`
	// HeaderSize is the length of the header bytes, alignment padding included: the data section
	// starts there.
	HeaderSize int64  `json:"header_size"`
	DataSize   uint64 `json:"data_size"`
	// SourceBytes is the size of the source weights (for the compression ratio).
	SourceBytes int64 `json:"source_bytes"`
	// SourceBucket ("" for the fleet's bucket) and SourcePrefix locate the checkpoint; ModelName
	// is the name it was opened with.
	SourceBucket string `json:"source_bucket,omitempty"`
	SourcePrefix string `json:"source_prefix"`
	ModelName    string `json:"model_name"`
	// QuantizationVersion is general.quantization_version.
	QuantizationVersion uint32               `json:"quantization_version"`
	Rope                convert.RopeFreqs    `json:"rope"`
	Tensors             []convert.TensorPlan `json:"tensors"`
	Tasks               []Task               `json:"tasks"`
}

// FileSize is the size of the assembled file.
func (p *Plan) FileSize() int64 { return p.HeaderSize + int64(p.DataSize) }

// Task is one unit of work: tensors [First, First+Count) of the plan, which occupy Size bytes
// (padding included) at Offset of the data section.
type Task struct {
	ID     string `json:"id"`    // "t0007": sorts in file order; a NATS token and a KV key part
	Label  string `json:"label"` // "blk.3", or the first tensor's name for the others
	Block  int    `json:"block"` // transformer block, -1 for the others
	First  int    `json:"first"`
	Count  int    `json:"count"`
	Offset uint64 `json:"offset"`
	Size   uint64 `json:"size"`
	// Inputs are the source byte ranges the task reads (generated tensors read none).
	Inputs []Input `json:"inputs,omitempty"`
}

// Input is one source tensor's bytes: Length bytes at Offset of File (relative to the model root).
type Input struct {
	Name   string `json:"name"`
	File   string `json:"file"`
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
}

// BigTensor is the element count from which a tensor outside the transformer blocks gets a task
// of its own (embeddings and the output matrix are as large as a block or larger).
const BigTensor = 1 << 20

// SplitTasks cuts the tensors (file order) into tasks: one per contiguous run of a transformer
// block's tensors, and for the tensors outside the blocks one per large tensor, the small ones
// (norms, rope factors) riding with their neighbours.
func SplitTasks(ts []convert.TensorPlan) []Task {
	var out []Task
	big := func(t convert.TensorPlan) bool {
		n := uint64(1)
		for _, d := range t.Ne {
			n *= d
		}
		return n >= BigTensor
	}
	hasBig := false
	for i, t := range ts {
		cut := i == 0 || t.Block != ts[i-1].Block
		if !cut && t.Block < 0 && big(t) && hasBig {
			cut = true
		}
		if cut {
			label := t.Name
			if t.Block >= 0 {
				label = fmt.Sprintf("blk.%d", t.Block)
			}
			out = append(out, Task{ID: fmt.Sprintf("t%04d", len(out)), Label: label, Block: t.Block, First: i, Offset: t.Offset})
			hasBig = false
		}
		cur := &out[len(out)-1]
		cur.Count++
		cur.Size = t.Offset + t.Size + libgguf.DataPadding(t.Size) - cur.Offset
		hasBig = hasBig || big(t)
	}
	return out
}

// NewPlan turns a convert plan into a job plan. header is the encoded header.
func NewPlan(jobID string, cp *convert.Plan, header []byte, sourceBytes int64) *Plan {
	return &Plan{
		Version: PlanVersion, JobID: jobID, Level: cp.Level.Name, FileType: cp.Level.FileType, Arch: cp.Arch,
		HeaderSize: int64(len(header)), DataSize: cp.DataSize(), SourceBytes: sourceBytes,
		QuantizationVersion: convert.QuantizationVersion, Rope: cp.Rope,
		Tensors: cp.Tensors, Tasks: SplitTasks(cp.Tensors),
	}
}

// Check verifies that the tasks tile the data section exactly, in order.
func (p *Plan) Check() error {
	if p.Version != PlanVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrBadPlan, p.Version, PlanVersion)
	}
	var off uint64
	next := 0
	for _, t := range p.Tasks {
		if t.First != next || t.Count <= 0 || t.First+t.Count > len(p.Tensors) || t.Offset != off {
			return fmt.Errorf("%w: task %s covers tensors [%d,+%d) at %d", ErrBadPlan, t.ID, t.First, t.Count, t.Offset)
		}
		last := p.Tensors[t.First+t.Count-1]
		if end := last.Offset + last.Size + libgguf.DataPadding(last.Size); end-t.Offset != t.Size {
			return fmt.Errorf("%w: task %s size %d, tensors span %d", ErrBadPlan, t.ID, t.Size, end-t.Offset)
		}
		off += t.Size
		next += t.Count
	}
	if next != len(p.Tensors) || off != p.DataSize {
		return fmt.Errorf("%w: tasks cover %d tensors and %d bytes, plan has %d and %d", ErrBadPlan, next, off, len(p.Tensors), p.DataSize)
	}
	return nil
}

// Task returns the task with the given id.
func (p *Plan) Task(id string) (Task, bool) {
	for _, t := range p.Tasks {
		if t.ID == id {
			return t, true
		}
	}
	return Task{}, false
}

// TypeCounts counts the tensors per GGUF type, as quantize's record does.
func (p *Plan) TypeCounts() map[string]int {
	m := map[string]int{}
	for _, t := range p.Tensors {
		m[t.Type.String()]++
	}
	return m
}

// spec is the GGUF part of a stored fleet.Plan.
type spec struct {
	FileType            uint32               `json:"file_type"`
	HeaderSize          int64                `json:"header_size"`
	DataSize            uint64               `json:"data_size"`
	QuantizationVersion uint32               `json:"quantization_version"`
	Rope                convert.RopeFreqs    `json:"rope"`
	Tensors             []convert.TensorPlan `json:"tensors"`
	Spans               []span               `json:"spans"` // per task, in the order of fleet.Plan.Tasks
}

// span is a task's tensors and bytes.
type span struct {
	First  int     `json:"first"`
	Count  int     `json:"count"`
	Offset uint64  `json:"offset"`
	Size   uint64  `json:"size"`
	Inputs []Input `json:"inputs,omitempty"`
}

// Envelope is the plan as the fleet stores it.
func (p *Plan) Envelope() (*fleet.Plan, error) {
	sp := spec{FileType: p.FileType, HeaderSize: p.HeaderSize, DataSize: p.DataSize, QuantizationVersion: p.QuantizationVersion,
		Rope: p.Rope, Tensors: p.Tensors}
	fp := &fleet.Plan{Version: fleet.PlanVersion, Kind: KindName, JobID: p.JobID, Level: p.Level, Arch: p.Arch,
		SourceBytes: p.SourceBytes, SourceBucket: p.SourceBucket, SourcePrefix: p.SourcePrefix, ModelName: p.ModelName}
	for _, t := range p.Tasks {
		fp.Tasks = append(fp.Tasks, fleet.PlanTask{ID: t.ID, Label: t.Label, Block: t.Block})
		sp.Spans = append(sp.Spans, span{First: t.First, Count: t.Count, Offset: t.Offset, Size: t.Size, Inputs: t.Inputs})
	}
	b, err := json.Marshal(sp)
	if err != nil {
		return nil, err
	}
	fp.Spec = b
	return fp, nil
}

// FromEnvelope is the GGUF plan of a stored one, decoded once and checked.
func FromEnvelope(fp *fleet.Plan) (*Plan, error) {
	v, err := fp.View(func(fp *fleet.Plan) (any, error) {
		if fp.Kind != KindName {
			return nil, fmt.Errorf("%w: a %q plan is not a GGUF job's", ErrBadPlan, fp.Kind)
		}
		var sp spec
		if err := json.Unmarshal(fp.Spec, &sp); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadPlan, err)
		}
		if len(sp.Spans) != len(fp.Tasks) {
			return nil, fmt.Errorf("%w: %d spans for %d tasks", ErrBadPlan, len(sp.Spans), len(fp.Tasks))
		}
		p := &Plan{Version: fp.Version, JobID: fp.JobID, Level: fp.Level, FileType: sp.FileType, Arch: fp.Arch,
			HeaderSize: sp.HeaderSize, DataSize: sp.DataSize, SourceBytes: fp.SourceBytes, SourceBucket: fp.SourceBucket,
			SourcePrefix: fp.SourcePrefix, ModelName: fp.ModelName, QuantizationVersion: sp.QuantizationVersion,
			Rope: sp.Rope, Tensors: sp.Tensors}
		for i, t := range fp.Tasks {
			s := sp.Spans[i]
			p.Tasks = append(p.Tasks, Task{ID: t.ID, Label: t.Label, Block: t.Block, First: s.First, Count: s.Count,
				Offset: s.Offset, Size: s.Size, Inputs: s.Inputs})
		}
		return p, p.Check()
	})
	if err != nil {
		return nil, err
	}
	return v.(*Plan), nil
}

// ErrPlanChanged reports a stored plan whose SHA-256 is not the one a task was made for.
var ErrPlanChanged = fleet.ErrPlanChanged
