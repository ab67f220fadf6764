package layered

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/services/fleet"
)

// Result is an assembled checkpoint directory in object storage.
type Result struct {
	Prefix string            // "outputs/<job>/<name>/"
	Files  map[string]string // file name → SHA-256
	Size   int64
	Meta   map[string]any
}

// Assemble writes the job's checkpoint directory into prefix (ending in "/") of store: the layer
// results gathered from the job's task objects (quantize.ShardedLayerResult, in layer order) and the source's other tensors unchanged, through the
// local pipeline's own quantize.CheckpointBuilder, config.json with the quantization_config and
// the source's tokenizer files. The directory is validated as quantize.ValidateCheckpoint does
// before any of it is uploaded.
func Assemble(ctx context.Context, store blob.Store, p *fleet.Plan, m *hfmodel.Model, fsys fleet.SourceFS, prefix, tempDir string) (*Result, error) {
	v, err := viewOf(p)
	if err != nil {
		return nil, err
	}
	s := v.spec
	tmp, err := os.MkdirTemp(tempDir, "quantfleet-assemble-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	srcDir, outDir := filepath.Join(tmp, "src"), filepath.Join(tmp, "out")
	if err := os.Mkdir(srcDir, 0o755); err != nil {
		return nil, err
	}
	if err := fleet.CopySmallFiles(ctx, fsys, srcDir); err != nil {
		return nil, err
	}
	cb, err := quantize.NewCheckpointBuilder(outDir, LayerConfig(s), v.shard.Linears, srcDir, m.Tensors)
	if err != nil {
		return nil, err
	}
	defer cb.Abort()
	st := NewShardStore(store, p.JobID)
	for i := range s.NumLayers {
		r, err := quantize.ShardedLayerResult(ctx, st, v.shard, i)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		if r.Index != i {
			return nil, fmt.Errorf("%w: layer %d's result holds layer %d", fleet.ErrBadPlan, i, r.Index)
		}
		if err := cb.AddLayer(r); err != nil {
			return nil, err
		}
	}
	if err := cb.Finish(ctx, m.Tensors, m.ReadRaw); err != nil {
		return nil, err
	}
	if err := quantize.ValidateCheckpointTensors(outDir, m.Tensors, nil); err != nil {
		return nil, err
	}
	res := &Result{Prefix: prefix, Files: map[string]string{}, Meta: cb.Metadata(quantize.CheckpointStats{
		Level: p.Level, Arch: p.Arch, CalibrationData: s.CalibrationName, Samples: s.Samples, SeqLen: s.SeqLen, Offset: s.CalibrationOffset,
	})}
	res.Meta["tasks"] = len(p.Tasks)
	entries, err := os.ReadDir(outDir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		sum, size, err := upload(ctx, store, filepath.Join(outDir, e.Name()), prefix+e.Name())
		if err != nil {
			return nil, err
		}
		res.Files[e.Name()], res.Size = sum, res.Size+size
	}
	return res, nil
}

func upload(ctx context.Context, store blob.Store, local, key string) (string, int64, error) {
	f, err := os.Open(local)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", 0, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", 0, err
	}
	if _, err := store.Put(ctx, key, f, st.Size(), blob.PutOptions{}); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), st.Size(), nil
}
