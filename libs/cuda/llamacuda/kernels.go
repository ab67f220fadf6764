package llamacuda

import (
	"context"
	_ "embed"

	"quantfleet.dev/libs/cuda"
)

//go:embed kernels.cu
var kernelSource string

// No FMA contraction: norms, rotations and SwiGLU round every float32 operation as Go does.
var kernelOptions = []string{"--fmad=false", "--std=c++17"}

type kernels struct {
	d    *cuda.Device
	blas *cuda.BLAS

	rmsNorm, addBias, add, siluMul, normRope, attention, nll *cuda.Function
	attnPack, attnSoftmax                                    *cuda.Function
	// AWQ (awq.go)
	absSumCols, scaledQuant, sqDiffSum, gatherRows, clipSearch, toHalf *cuda.Function
	sub, dotSum, siluMulHalf, flashAttention, flashAttention128        *cuda.Function
}

// Launch shapes; attnQ and attnK match AQ and AK in kernels.cu.
const (
	threads    = 256
	attnQ      = 8
	attnK      = 32
	sqThreads  = 256 // SQ_THREADS in kernels.cu
	clipMaxGS  = 256 // CLIP_MAX_GS in kernels.cu
	maxHeadDim = 256
	maxBlocks  = 65535
	// flash_attention's queries per block and largest head (FQ and FMAXD in kernels.cu)
	flashQ          = 128
	flashMaxHeadDim = 128
	// flash_attention's dynamic shared memory: the block's q rows and two stages of a K and a V
	// tile of FK = 64 keys, rows of FKS = FMAXD + 8 halves.
	flashShared = (flashQ + 2*2*64) * (flashMaxHeadDim + 8) * 2
)

func loadKernels(ctx context.Context, d *cuda.Device) (*kernels, error) {
	m, err := d.Module(ctx, "llama_kernels.cu", kernelSource, kernelOptions...)
	if err != nil {
		return nil, err
	}
	b, err := d.BLAS(ctx)
	if err != nil {
		return nil, err
	}
	k := &kernels{d: d, blas: b}
	for name, f := range map[string]**cuda.Function{
		"rms_norm": &k.rmsNorm, "add_bias": &k.addBias, "add": &k.add, "silu_mul": &k.siluMul,
		"norm_rope": &k.normRope, "attention": &k.attention, "nll": &k.nll,
		"attn_pack": &k.attnPack, "attn_softmax": &k.attnSoftmax,
		"abs_sum_cols": &k.absSumCols, "awq_scaled_quant": &k.scaledQuant, "sq_diff_sum": &k.sqDiffSum,
		"gather_rows": &k.gatherRows, "awq_clip_search": &k.clipSearch, "to_half": &k.toHalf,
		"sub": &k.sub, "dot_sum": &k.dotSum, "silu_mul_half": &k.siluMulHalf, "flash_attention": &k.flashAttention,
		"flash_attention_128": &k.flashAttention128,
	} {
		if *f, err = m.Function(name); err != nil {
			return nil, err
		}
	}
	// The attention tiles of a 256-wide head need more than the default 48 KiB.
	if err := k.attention.SetMaxDynamicShared(attnShared(maxHeadDim)); err != nil {
		return nil, err
	}
	for _, f := range []*cuda.Function{k.flashAttention, k.flashAttention128} {
		if err := f.SetMaxDynamicShared(flashShared); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// attnShared is the dynamic shared memory of the attention kernel for head dimension hd.
func attnShared(hd int) int { return 4 * (attnK*(hd+1) + attnK*hd + attnQ*hd + attnQ*attnK) }

// flat is the launch shape of the elementwise kernels over n values.
func flat(n int) (cuda.Dim3, cuda.Dim3) {
	return cuda.Dim3{X: min(max((n+threads-1)/threads, 1), 8192)}, cuda.Dim3{X: threads}
}

func (k *kernels) elementwise(ctx context.Context, f *cuda.Function, n int, args ...any) error {
	g, b := flat(n)
	return f.Launch(ctx, g, b, 0, args...)
}
