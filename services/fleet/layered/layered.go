// Package layered is the GPTQ/AWQ part of the fleet. A job is a chain of per-layer tasks: the
// dispatcher plans it and stores the calibration activations entering layer 0 (the embeddings
// of the calibration samples); the task of layer i loads the layer's weights by byte range and
// the activations entering it, runs quantize.QuantizeLayer, and stores the layer's result and the
// activations entering layer i+1, which are the job's checkpoint; the assembler writes the
// Hugging Face checkpoint directory from the layer results and the source's other tensors,
// exactly as the local pipeline (quantize.GPTQ, quantize.AWQ) writes it.
package layered

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/tokenizer"
	"quantfleet.dev/libs/transformer"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
)

// LayerConfig is the quantize.LayerConfig of a job, as `quantfleet quantize` builds it from
// the same flags.
func LayerConfig(s *Spec) quantize.LayerConfig {
	return quantize.NewLayerConfig(domain.OutputFormat(s.Format), s.Bits, s.GroupSize, s.LayerOptions)
}

// Weights reads a checkpoint's tensors as float32 by byte range (a transformer.WeightSource).
type Weights struct{ Model *hfmodel.Model }

// Float32 implements transformer.WeightSource.
func (w Weights) Float32(name string) ([]float32, []int64, error) {
	t, ok := w.Model.Lookup(name)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s", transformer.ErrWeightNotFound, name)
	}
	data, err := w.Model.ReadFloat32(name)
	if err != nil {
		return nil, nil, err
	}
	return data, t.Shape, nil
}

// ModelConfig parses the model's config.json for the transformer runtime.
func ModelConfig(m *hfmodel.Model) (*transformer.Config, error) {
	raw, err := fs.ReadFile(m.FS(), hfmodel.ConfigFile)
	if err != nil {
		return nil, err
	}
	c, err := transformer.ParseConfig(raw)
	if err != nil {
		return nil, err
	}
	if err := c.CheckQuantizable(); err != nil {
		return nil, err
	}
	return c, nil
}

// smallFileLimit bounds the top-level files copied next to the weights (config, tokenizer).
const smallFileLimit = 256 << 20

// copySmallFiles copies the checkpoint's top-level non-weight files (config, tokenizer,
// generation config, README) into dir.
func copySmallFiles(ctx context.Context, fsys fs.FS, files []string, dir string) error {
	for _, name := range files {
		if strings.Contains(name, "/") || strings.HasSuffix(name, ".safetensors") || strings.HasPrefix(name, ".") {
			continue
		}
		st, err := fs.Stat(fsys, name)
		if err != nil || st.Size() > smallFileLimit {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := copyFile(fsys, name, filepath.Join(dir, path.Base(name))); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(fsys fs.FS, name, dst string) error {
	in, err := fsys.Open(name)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Plan plans a GPTQ/AWQ job over the checkpoint m (files in fsys): one task per decoder layer.
// For a calibrated job it computes the activations entering layer 0 from the calibration text
// (read from store) and stores them at fleet.ActivationsKey(job, 0), before the caller stores
// the plan.
func Plan(ctx context.Context, store blob.Store, job string, m *hfmodel.Model, fsys fleet.SourceFS, spec Spec, tempDir string) (*fleet.Plan, error) {
	cfg, err := ModelConfig(m)
	if err != nil {
		return nil, err
	}
	spec.NumLayers = cfg.NumLayers
	p := &fleet.Plan{Version: fleet.PlanVersion, Kind: KindName, JobID: job, Level: fmt.Sprintf("%dbit", spec.Bits), Arch: cfg.Architecture,
		SourceBytes: m.WeightBytes()}
	for i := range cfg.NumLayers {
		p.Tasks = append(p.Tasks, fleet.PlanTask{ID: LayerTaskID(i), Label: fmt.Sprintf("layer %d", i), Block: i})
	}
	if p.Spec, err = json.Marshal(spec); err != nil {
		return nil, err
	}
	if _, err := SpecOf(p); err != nil {
		return nil, err
	}
	if !spec.Calibrated() {
		return p, nil
	}
	dir, err := os.MkdirTemp(tempDir, "quantfleet-calib-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := copySmallFiles(ctx, fsys, fsys.Files(), dir); err != nil {
		return nil, err
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		return nil, err
	}
	calib := filepath.Join(dir, "calibration-"+path.Base(spec.CalibrationName))
	if err := download(ctx, store, spec.CalibrationKey, calib); err != nil {
		return nil, fmt.Errorf("calibration data: %w", err)
	}
	x, err := quantize.CalibrationInputs(transformer.New(cfg, Weights{m}), tok, calib, spec.SeqLen, spec.CalibrationOffset, spec.Samples)
	if err != nil {
		return nil, err
	}
	b := quantize.MarshalActivations(x)
	if _, err := store.Put(ctx, fleet.ActivationsKey(job, 0), bytes.NewReader(b), int64(len(b)), blob.PutOptions{}); err != nil {
		return nil, err
	}
	return p, nil
}

func download(ctx context.Context, store blob.Store, key, dst string) error {
	rc, _, err := store.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func get(ctx context.Context, store blob.Store, key string) ([]byte, error) {
	rc, _, err := store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func put(ctx context.Context, store blob.Store, key string, b []byte) (*pb.Shard, error) {
	if _, err := store.Put(ctx, key, bytes.NewReader(b), int64(len(b)), blob.PutOptions{}); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	return &pb.Shard{Key: key, Size: int64(len(b)), Sha256: hex.EncodeToString(sum[:])}, nil
}

// RunLayer runs layer i of a job on a worker: it reads the activations entering the layer
// (calibrated jobs), quantizes the layer of m, and stores the layer's result at layerKey and,
// unless it is the last layer, the activations entering layer i+1. The first shard returned is
// the layer result, the second (if any) the activations. The keys do not depend on the attempt,
// and QuantizeLayer is deterministic, so a re-run rewrites the same bytes.
func RunLayer(ctx context.Context, store blob.Store, job string, p *fleet.Plan, m *hfmodel.Model, i int, layerKey string) ([]*pb.Shard, int64, error) {
	s, err := SpecOf(p)
	if err != nil {
		return nil, 0, err
	}
	if i < 0 || i >= s.NumLayers {
		return nil, 0, fmt.Errorf("%w: job %s has no layer %d", fleet.ErrBadPlan, job, i)
	}
	cfg, err := ModelConfig(m)
	if err != nil {
		return nil, 0, err
	}
	var x *transformer.Tensor
	var read int64
	if s.Calibrated() {
		b, err := get(ctx, store, fleet.ActivationsKey(job, i))
		if err != nil {
			return nil, 0, fmt.Errorf("activations entering layer %d: %w", i, err)
		}
		read += int64(len(b))
		if x, err = quantize.UnmarshalActivations(b); err != nil {
			return nil, 0, fmt.Errorf("activations entering layer %d: %w", i, err)
		}
	}
	l, err := transformer.New(cfg, Weights{m}).Layer(i)
	if err != nil {
		return nil, 0, err
	}
	r, err := quantize.QuantizeLayer(ctx, l, x, LayerConfig(s))
	l.Release()
	if err != nil {
		return nil, 0, err
	}
	var next *pb.Shard
	if s.Calibrated() && i+1 < s.NumLayers {
		// The activations first: the layer's record, written after, promises them.
		if next, err = put(ctx, store, fleet.ActivationsKey(job, i+1), quantize.MarshalActivations(r.Outputs)); err != nil {
			return nil, 0, err
		}
	}
	b, err := quantize.MarshalLayerResult(r)
	if err != nil {
		return nil, 0, err
	}
	sh, err := put(ctx, store, layerKey, b)
	if err != nil {
		return nil, 0, err
	}
	out := []*pb.Shard{sh}
	if next != nil {
		out = append(out, next)
	}
	return out, read, nil
}
