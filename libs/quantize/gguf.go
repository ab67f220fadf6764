// Package quantize runs a whole quantization job on one machine: it resolves the source model,
// plans, produces every tensor, writes the artifact under a temporary name, validates it by
// reading it back and renames it into place.
package quantize

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"quantfleet.dev/libs/atomicfile"
	"quantfleet.dev/libs/convert"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/ggml"
	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/progress"
)

// ErrInvalidOutput reports an artifact that failed validation after it was written.
var ErrInvalidOutput = fault.New(fault.ErrPermanent, "output failed validation")

// GGUFRequest is one local GGUF conversion.
type GGUFRequest struct {
	Model     *hfmodel.Model
	ModelDir  string // local directory holding the model's small files
	RemoteID  string // Hub id when the model came from the Hub
	Level     string
	OutputDir string
	// OutputName is the file name; empty derives "<model>-<level>.gguf".
	OutputName   string
	TokenizerPre string
	// Overwrite replaces whatever is at the output path; without it only an earlier GGUF file is
	// replaced (see atomicfile).
	Overwrite bool
	Progress  progress.Reporter
}

// DefaultOutputName derives the output file name from the model name and level.
func DefaultOutputName(model, level string, f domain.OutputFormat) string {
	base := strings.NewReplacer("/", "-", " ", "-").Replace(model)
	if f == domain.FormatGGUF {
		return fmt.Sprintf("%s-%s.gguf", base, strings.ToUpper(level))
	}
	return fmt.Sprintf("%s-%s-%s", base, f, level)
}

// GGUF converts and quantizes the model and returns the record of the written file.
func GGUF(ctx context.Context, req GGUFRequest) (*domain.QuantizedModel, error) {
	rep := req.Progress
	if rep == nil {
		rep = progress.Nop()
	}
	plan, err := convert.NewPlan(req.Model, req.ModelDir, req.Level, convert.Options{
		TokenizerPre: req.TokenizerPre, RemoteID: req.RemoteID,
	})
	if err != nil {
		return nil, err
	}
	name := req.OutputName
	if name == "" {
		name = DefaultOutputName(req.Model.Name, plan.Level.Name, domain.FormatGGUF)
	}
	if err := atomicfile.MkdirAll(req.OutputDir); err != nil {
		return nil, err
	}
	out, err := atomicfile.Create(req.OutputDir, name, atomicfile.Options{Magic: gguf.Magic, Overwrite: req.Overwrite})
	if err != nil {
		return nil, err
	}
	defer out.Abort()

	rep.Start("quantize", int64(len(plan.Tensors)))
	w, err := gguf.NewWriter(out, plan.Header)
	if err != nil {
		return nil, err
	}
	for i, t := range plan.Tensors {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		data, err := t.Produce(req.Model, plan.Rope)
		if err != nil {
			return nil, err
		}
		if err := w.WriteTensor(t.Name, data); err != nil {
			return nil, err
		}
		rep.Update(t.Name, int64(i+1))
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if err := out.Close(); err != nil {
		return nil, err
	}
	rep.Finish("written")

	rep.Start("validate", int64(len(plan.Tensors)))
	if err := ValidateGGUF(out.TempPath(), plan.Header, rep); err != nil {
		return nil, err
	}
	rep.Finish("valid")
	if err := out.Commit(); err != nil {
		return nil, err
	}
	final := out.FinalPath()
	st, err := os.Stat(final)
	if err != nil {
		return nil, err
	}
	abs, _ := filepath.Abs(final)
	src := req.RemoteID
	if src == "" {
		src, _ = filepath.Abs(req.ModelDir)
	}
	return &domain.QuantizedModel{
		OutputPath:       abs,
		Format:           domain.FormatGGUF,
		FileSize:         st.Size(),
		CompressionRatio: float64(st.Size()) / float64(req.Model.WeightBytes()),
		QuantizationMetadata: map[string]any{
			"level":                plan.Level.Name,
			"file_type":            plan.Level.FileType,
			"architecture":         plan.Arch,
			"tensor_count":         len(plan.Tensors),
			"quantization_version": convert.QuantizationVersion,
			"tensor_types":         typeCounts(plan),
		},
		CreatedAt:        time.Now().UTC(),
		SourceModelPath:  src,
		ValidationStatus: domain.ValidationValid,
	}, nil
}

func typeCounts(p *convert.Plan) map[string]int {
	m := map[string]int{}
	for _, t := range p.Tensors {
		m[t.Type.String()]++
	}
	return m
}

// ValidateGGUF re-reads a written file: its header must match want (when given) tensor by tensor,
// and every tensor must dequantize without NaN or Inf.
func ValidateGGUF(path string, want *gguf.Header, rep progress.Reporter) error {
	if rep == nil {
		rep = progress.Nop()
	}
	f, err := gguf.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidOutput, err)
	}
	defer f.Close()
	if err := CheckHeader(&f.Header); err != nil {
		return err
	}
	if want != nil {
		if len(f.Header.Tensors) != len(want.Tensors) {
			return fmt.Errorf("%w: %d tensors, want %d", ErrInvalidOutput, len(f.Header.Tensors), len(want.Tensors))
		}
		for i, t := range f.Header.Tensors {
			w := want.Tensors[i]
			if t.Name != w.Name || t.Type != w.Type || t.Offset != w.Offset || !slices.Equal(t.Dims, w.Dims) {
				return fmt.Errorf("%w: tensor %d is %s %s %v @%d, want %s %s %v @%d", ErrInvalidOutput,
					i, t.Name, t.Type, t.Dims, t.Offset, w.Name, w.Type, w.Dims, w.Offset)
			}
		}
	}
	for i, t := range f.Header.Tensors {
		data, err := f.TensorData(t.Name)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidOutput, err)
		}
		if err := CheckTensorData(t.Name, t.Type, data); err != nil {
			return err
		}
		rep.Update(t.Name, int64(i+1))
	}
	return nil
}

// CheckHeader checks a GGUF header read back as llama.cpp's loader would (convert.CheckHeader):
// hparams that disagree with the tensors make the output invalid.
func CheckHeader(h *gguf.Header) error {
	if err := convert.CheckHeader(h); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidOutput, err)
	}
	return nil
}

// CheckTensorData checks one tensor's bytes as llama.cpp's loader would (ggml_validate_row_data)
// and that they dequantize without NaN or Inf.
func CheckTensorData(name string, t ggml.Type, data []byte) error {
	if err := ggml.ValidateRowData(t, data); err != nil {
		return fmt.Errorf("%w: tensor %s: %v", ErrInvalidOutput, name, err)
	}
	vals := make([]float32, int64(len(data))/int64(t.TypeSize())*int64(t.BlockSize()))
	if err := ggml.Dequantize(t, vals, data); err != nil {
		return fmt.Errorf("%w: tensor %s: %v", ErrInvalidOutput, name, err)
	}
	for j, v := range vals {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: tensor %s element %d is %v", ErrInvalidOutput, name, j, v)
		}
	}
	return nil
}
