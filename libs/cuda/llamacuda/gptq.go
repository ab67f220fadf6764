package llamacuda

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/cuda/gptqcuda"
	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/transformer"
)

// QuantizeLayer is quantize.QuantizeLayer's GPTQ path on device d: it uploads l (a layer
// of a model with config c) and its calibration inputs, quantizes the layer and returns the
// same result (Outputs on the host). Like the CPU version it replaces l's weights by their
// dequantized values.
func QuantizeLayer(ctx context.Context, d *cuda.Device, c *transformer.Config, l *transformer.Layer, inputs *transformer.Tensor, cfg quantize.LayerConfig) (*quantize.LayerResult, error) {
	return QuantizeLayerWith(ctx, d, c, l, inputs, cfg, Options{})
}

// EnvTF32 and EnvAWQHalf name the environment variables that turn Options.TF32 and
// Options.AWQHalf off ("0" or "false") for the commands and workers that quantize on a GPU,
// which use both by default (DefaultOptions).
const (
	EnvTF32    = "QUANTFLEET_GPU_TF32"
	EnvAWQHalf = "QUANTFLEET_GPU_AWQ_HALF"
)

// Options tunes the GPU's arithmetic. The zero value is IEEE float32 throughout, within the
// last bits of the CPU's arithmetic (the GPU tests compare the two that way).
type Options struct {
	// TF32 runs the forward passes' projections and the attention's products on the tensor
	// cores with TF32 inputs: several times the IEEE float32 rate, activations within about
	// 1e-3 relative (the references run their layers in bf16, coarser still). Hessian sums,
	// solves, norms and softmax stay IEEE float32.
	TF32 bool
	// AWQHalf runs the projections of the blocks that AWQ's scale grid compares (the original
	// and every candidate) with half-precision inputs on the tensor cores, float32 sums, as
	// llm-awq runs its search in fp16: the candidates' weights are half values already, the
	// activations are rounded to half; the MLP's gate and up products and its hidden
	// silu(gate)·up are halves, as in an fp16 forward; the attention is flash_attention on
	// half q, k and v (compute capability 8.0 and later; heads of a multiple of 16 up to
	// 128). (A group compared through its one linear, o_proj or down_proj, sums its losses
	// from a Gram matrix with the TF32 option's products instead.)
	AWQHalf bool
}

// DefaultOptions are the commands' and workers' GPU arithmetic: TF32 forwards and AWQ's
// half-precision grid, which keep every mode of the quality protocol within its bar (README)
// at a fraction of the IEEE float32 time.
func DefaultOptions() Options { return Options{TF32: true, AWQHalf: true} }

// OptionsFromEnv returns DefaultOptions less what the environment turns off (EnvTF32,
// EnvAWQHalf set to "0" or "false").
func OptionsFromEnv(getenv func(string) string) Options {
	off := func(name string) bool {
		v := getenv(name)
		return v == "0" || v == "false"
	}
	o := DefaultOptions()
	o.TF32 = o.TF32 && !off(EnvTF32)
	o.AWQHalf = o.AWQHalf && !off(EnvAWQHalf)
	return o
}

// use sets the uploaded layer g up for o's forward arithmetic (AWQHalf applies to the scale
// grid alone: awqArith.Losses).
func (o Options) use(ctx context.Context, g *Layer) error {
	if o.TF32 {
		return g.UseTF32(ctx)
	}
	return nil
}

// QuantizeLayerWith is QuantizeLayer with options.
func QuantizeLayerWith(ctx context.Context, d *cuda.Device, c *transformer.Config, l *transformer.Layer, inputs *transformer.Tensor, cfg quantize.LayerConfig, o Options) (*quantize.LayerResult, error) {
	if err := checkConfig(cfg); err != nil {
		return nil, err
	}
	if l == nil || l.Q == nil || inputs == nil || inputs.Rows() == 0 || inputs.Dim != l.Q.In {
		return nil, fmt.Errorf("%w: layer needs calibration inputs of its hidden size", quantize.ErrLayerConfig)
	}
	if err := CheckMemory(ctx, d, l, inputs.Batch, inputs.Seq, true); err != nil {
		return nil, err
	}
	g, err := UploadLayer(ctx, d, c, l)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	if err := o.use(ctx, g); err != nil {
		return nil, err
	}
	x, err := UploadTensor(ctx, d, inputs)
	if err != nil {
		return nil, err
	}
	defer x.Free()
	res, out, err := QuantizeDevice(ctx, g, l, x, cfg)
	if err != nil {
		return nil, err
	}
	defer out.Free()
	if res.Outputs, err = out.Download(ctx); err != nil {
		return nil, err
	}
	return res, nil
}

func checkConfig(cfg quantize.LayerConfig) error {
	if cfg.Method != hfquant.GPTQ || cfg.RTN {
		return fmt.Errorf("%w: the GPU path runs calibrated GPTQ only", quantize.ErrLayerConfig)
	}
	return nil
}

// gptqConfig is quantize.LayerConfig's: v1 zero points for asymmetric grids, so that the
// "gptq" checkpoint format can store every zero.
func gptqConfig(cfg quantize.LayerConfig) gptq.Config {
	g := cfg.GPTQ
	if !g.Sym {
		g.V1Zeros = true
	}
	return g
}

// CheckMemory fails with one line wrapping ErrMemory when quantizing l on batch×seq
// calibration tokens would not fit in d's free memory: the layer's weights (unless
// uploaded), the inputs (when withInputs) and outputs, one chunk's intermediates, and the
// largest linear's Hessian, factor and solve.
func CheckMemory(ctx context.Context, d *cuda.Device, l *transformer.Layer, batch, seq int, withInputs bool) error {
	free, _, err := d.MemInfo(ctx)
	if err != nil {
		return err
	}
	need := needBytes(l, batch, seq, withInputs)
	if exceeds(need, free) {
		return fmt.Errorf("%w: layer %d with %d×%d calibration tokens needs about %.1f GiB, %s has %.1f GiB free",
			ErrMemory, l.Index, batch, seq, gib(need), d.Name(), gib(free))
	}
	return nil
}

func gib(b int64) float64 { return float64(b) / (1 << 30) }

// exceeds reports whether need bytes, with 5% and 512 MiB of headroom for cuBLAS workspaces,
// modules and fragmentation, exceed free: the rule of every memory check here.
func exceeds(need, free int64) bool { return need+need/20+512<<20 > free }

func needBytes(l *transformer.Layer, batch, seq int, withInputs bool) int64 {
	var weights, solve int64
	for _, lin := range l.Linears() {
		weights += 4 * int64(len(lin.Weight)+len(lin.Bias))
		n, r := int64(lin.In), int64(lin.Out)
		// Hessian sum (f64) + factor (3 f32 matrices + scratch) + weight, permuted copy, codes.
		solve = max(solve, 8*n*n+13*n*n+9*r*n)
	}
	for _, n := range []*transformer.Norm{l.InputNorm, l.PostAttentionNorm, l.QNorm, l.KNorm} {
		if n != nil {
			weights += 4 * int64(len(n.Weight))
		}
	}
	tokens := int64(batch) * int64(seq)
	act := 4 * tokens * int64(l.Q.In)
	if withInputs {
		act *= 2
	}
	// the attention context kept between passes 2 and 3
	act += 4 * tokens * int64(l.O.In)
	ws := chunkBytes(int64(l.Q.In), int64(l.Q.Out), int64(l.K.Out), int64(l.Gate.Out), layerHeads(l), batch, seq)
	return weights + act + ws + solve + 4*int64(seq)*int64(l.Q.In) // + rope tables (bounded)
}

// QuantizeDevice quantizes the uploaded layer g (whose host weights are l) on the device
// inputs x (not modified) as quantize.QuantizeLayer's GPTQ path does: q, k, v on the input
// norm's output; o_proj on the attention output of the quantized q, k, v; gate and up on the
// post-attention norm of the residual after the quantized attention; down_proj on
// silu(gate)·up of the quantized gate and up. Each subset's Hessian is accumulated on the
// device from the forward pass with the earlier subsets quantized (their dequantized
// float32-scale weights put back into g and l). It returns the result without Outputs and
// the quantized layer's outputs on the device (the caller frees them).
func QuantizeDevice(ctx context.Context, g *Layer, l *transformer.Layer, x *Tensor, cfg quantize.LayerConfig) (*quantize.LayerResult, *Tensor, error) {
	if err := checkConfig(cfg); err != nil {
		return nil, nil, err
	}
	res, out, err := quantizeDevice(ctx, g, l, x, gptqConfig(cfg), nil, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("layer %d: %w", l.Index, err)
	}
	return res, out, nil
}

// force, when not nil, maps linear names to the weights the layer continues with after they
// are quantized instead of their own dequantized values: a test feeds the CPU's, so that
// each subset is compared on the same upstream weights (true-sequential GPTQ amplifies a
// flipped code upstream into many downstream, on the CPU as well).
// A test passes phases to get the seconds of each subset's forward pass with Hessian
// accumulation and of its solves (the device is synchronized between them).
func quantizeDevice(ctx context.Context, g *Layer, l *transformer.Layer, x *Tensor, cfg gptq.Config, force map[string][]float32, phases *[]phase) (*quantize.LayerResult, *Tensor, error) {
	res := &quantize.LayerResult{Index: l.Index}
	prefix := fmt.Sprintf("model.layers.%d.", l.Index)
	d := g.d
	quantizeWith := func(h *gptqcuda.Hessian, lins ...*transformer.Linear) error {
		defer h.Close()
		h.ReleaseScratch()
		f, err := gptqcuda.Prepare(ctx, h, cfg)
		if err != nil {
			return fmt.Errorf("%s: %w", lins[0].Name, err)
		}
		defer f.Close()
		for _, lin := range lins {
			r, err := f.Quantize(ctx, lin.Weight, lin.Out, lin.In)
			if err != nil {
				return fmt.Errorf("%s: %w", lin.Name, err)
			}
			// The rest of the layer sees the weight as the solve left it (float32 scales).
			lin.Weight = r.Reconstruct()
			if w, ok := force[lin.Name]; ok {
				lin.Weight = w
			}
			if err := g.SetWeight(ctx, lin.Name, lin.Weight); err != nil {
				return err
			}
			res.Linears = append(res.Linears, &hfquant.Linear{Name: prefix + lin.Name, Rows: r.Rows, Cols: r.Cols, Bits: r.Bits,
				GroupSize: r.GroupSize, QWeight: r.QWeight, Scales: r.Scales, Zeros: r.Zeros, GIdx: r.GIdx, Bias: lin.Bias})
			res.Stats = append(res.Stats, quantize.LinearStats{Name: prefix + lin.Name, Damp: r.Damp, Loss: r.Loss, Dead: r.Dead})
			res.Damp = max(res.Damp, r.Damp)
		}
		return nil
	}
	// into returns a hook adding the input of the group starting with name to h.
	into := func(names []string, h *gptqcuda.Hessian) Hook {
		return func(ctx context.Context, linears []string, in *Tensor) error {
			if !slices.Equal(linears, names) {
				return nil
			}
			return h.AddDevice(ctx, in.Ptr(), in.Rows(), in.Batch)
		}
	}
	out, err := NewTensor(ctx, d, x.Batch, x.Seq, x.Dim)
	if err != nil {
		return nil, nil, err
	}
	ok := false
	defer func() {
		if !ok {
			out.Free()
		}
	}()
	// The attention context (o_proj's input) of pass 2, kept for pass 3: q, k, v do not change
	// between them, so pass 3 only applies the quantized o_proj to it.
	saved, err := NewTensor(ctx, d, x.Batch, x.Seq, l.O.In)
	if err != nil {
		return nil, nil, err
	}
	defer saved.Free()
	subsets := []struct {
		names []string
		lins  []*transformer.Linear
		src   *Tensor // forward input: x, or the residual after attention
		st    stages
	}{
		// 1. q, k, v on input_layernorm(x).
		{transformer.AttentionInputs, []*transformer.Linear{l.Q, l.K, l.V}, x, stages{qkvInput: true}},
		// 2. o_proj on the attention output of the quantized q, k, v (kept in saved).
		{transformer.OutputInputs, []*transformer.Linear{l.O}, x, stages{attention: true}},
		// 3. gate, up on post_attention_layernorm(x + o(saved)); out keeps that residual.
		{transformer.MLPInputs, []*transformer.Linear{l.Gate, l.Up}, x, stages{attention: true, saved: saved}},
		// 4. down_proj on silu(gate)·up of the quantized gate and up.
		{transformer.DownInputs, []*transformer.Linear{l.Down}, out, stages{mlp: true, downInput: true}},
	}
	// keep copies each chunk's attention context into saved, in order, during pass 2.
	keptBytes := 0
	keep := func(ctx context.Context, linears []string, in *Tensor) error {
		if !slices.Equal(linears, transformer.OutputInputs) {
			return nil
		}
		n := 4 * in.Rows() * in.Dim
		if err := cuda.Copy(ctx, saved.buf, saved.off+keptBytes, in.buf, in.off, n); err != nil {
			return err
		}
		keptBytes += n
		return nil
	}
	t0 := time.Now()
	mark := func(name string) error {
		if phases == nil {
			return nil
		}
		if err := d.Synchronize(ctx); err != nil {
			return err
		}
		*phases = append(*phases, phase{name, time.Since(t0)})
		t0 = time.Now()
		return nil
	}
	for _, s := range subsets {
		h, err := gptqcuda.NewHessian(ctx, d, s.lins[0].In)
		if err != nil {
			return nil, nil, err
		}
		hook := into(s.names, h)
		if s.names[0] == transformer.OutputInputs[0] {
			add := hook
			hook = func(ctx context.Context, linears []string, in *Tensor) error {
				if err := keep(ctx, linears, in); err != nil {
					return err
				}
				return add(ctx, linears, in)
			}
		}
		if err := g.forward(ctx, s.src, out, s.st, hook); err != nil {
			h.Close()
			return nil, nil, err
		}
		if err := mark("forward+Hessian " + s.names[0]); err != nil {
			h.Close()
			return nil, nil, err
		}
		if err := quantizeWith(h, s.lins...); err != nil {
			return nil, nil, err
		}
		if err := mark("solve " + s.names[0]); err != nil {
			return nil, nil, err
		}
	}
	// The quantized layer's outputs: out = h + mlp(h).
	if err := g.forward(ctx, out, out, stages{mlp: true}, nil); err != nil {
		return nil, nil, err
	}
	if err := mark("forward outputs"); err != nil {
		return nil, nil, err
	}
	ok = true
	return res, out, nil
}

// phase is a part of quantizeDevice and its duration.
type phase struct {
	name string
	d    time.Duration
}

// Handles reports whether the GPU quantizes layers of cfg: calibrated GPTQ (Compute as
// quantize.LayerCompute) and AWQ (Compute as quantize.AWQCompute). GPTQ's round-to-nearest runs
// on the CPU.
func Handles(cfg quantize.LayerConfig) bool {
	return checkConfig(cfg) == nil || (cfg.Method == hfquant.AWQ && !cfg.RTN)
}

// turns holds one channel per device: a layer's (or a task's) work on the device holds it, so
// that the work of several slots of a worker runs one at a time and CheckMemory's free memory is
// what the work gets.
var turns sync.Map // *cuda.Device → chan struct{}

// acquire waits for the device's turn (or ctx's end) and returns its release.
func acquire(ctx context.Context, d *cuda.Device) (func(), error) {
	ch, _ := turns.LoadOrStore(d, make(chan struct{}, 1))
	turn := ch.(chan struct{})
	select {
	case turn <- struct{}{}:
		return func() { <-turn }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
