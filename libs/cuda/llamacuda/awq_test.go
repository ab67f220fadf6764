package llamacuda

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"quantfleet.dev/libs/awq"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/transformer"
)

// awqShards runs fn on each shard's awq.Layer of layer 0 from ac (the CPU's or the GPU's
// AWQCompute), a fresh copy of the layer each time; outs collects the layer's outputs.
func awqShards(t *testing.T, ac quantize.AWQCompute, m *transformer.Model, shards []*transformer.Tensor,
	fn func(i int, al *awq.Layer, sh awq.Shard)) (outs []*transformer.Tensor, d time.Duration) {
	t.Helper()
	total := 0
	for _, s := range shards {
		total += s.Rows()
	}
	off := 0
	for i, s := range shards {
		l, err := m.Layer(0)
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		al, out, release, err := ac.AWQLayer(context.Background(), l, s, true)
		if err != nil {
			t.Fatalf("FAIL AWQLayer shard %d: %v", i, err)
		}
		fn(i, al, awq.Shard{Offset: off, Total: total})
		release()
		d += time.Since(t0)
		outs = append(outs, out)
		off += s.Rows()
	}
	return outs, d
}

// maxRel is max_i |a_i − b_i| / max_i |b_i| over nested float64 slices.
func maxRel(a, b [][]float64) float64 {
	var d, m float64
	for i := range b {
		for j := range b[i] {
			d = max(d, math.Abs(a[i][j]-b[i][j]))
			m = max(m, math.Abs(b[i][j]))
		}
	}
	return d / m
}

// TestAWQComputeTinyLlama checks Compute's AWQ arithmetic (quantize.AWQCompute, awq.Arithmetic
// on the GPU) against the CPU's on tiny-llama's layer 0 with 32×512 calibration tokens in 2
// shards of 16 sequences, step by step of libs/awq's shard API (llm-awq's plain grid, 4-bit
// g128), each GPU step fed the CPU's merged results of the steps before, so that every
// comparison sees the same inputs:
//   - the layer's outputs (next layer's inputs) per shard: max |Δy| / max |y| ≤ 1e-4;
//   - statistics (Σ|x| per group and channel, merged): max relative difference ≤ 1e-5;
//   - scale-grid losses (merged, per group and ratio): max relative difference ≤ 1e-4, output
//     counts equal; bit-identical when shard 0 is computed twice (determinism);
//   - the picked ratio of every group equals the CPU's, or the CPU's loss of the GPU's pick is
//     within 1e-4 relative of the CPU's best;
//   - the clipping search on the CPU's merged clip stats gives the CPU's bounds exactly, and
//     on the GPU's clip stats (Gram matrices by cuBLAS) ≥ 99% of the bounds, with the layer's
//     codes ≥ 99% equal.
func TestAWQComputeTinyLlama(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	m := tinyLlama(t)
	x := tinyCalibration(t, m, 512, 32)
	shards := []*transformer.Tensor{x.Sequences(0, 16), x.Sequences(16, 32)}
	cfg := quantize.DefaultAWQConfig()
	gpu := &Compute{D: d}
	var cpu quantize.AWQCompute = quantize.CPU{}
	pass := func(ok bool, format string, args ...any) {
		t.Helper()
		if ok {
			t.Logf("PASS "+format, args...)
		} else {
			t.Errorf("FAIL "+format, args...)
		}
	}

	// Step 1: statistics and outputs.
	var statsC, statsG []*awq.Stats
	collect := func(dst *[]*awq.Stats) func(int, *awq.Layer, awq.Shard) {
		return func(i int, al *awq.Layer, sh awq.Shard) {
			st, err := awq.CollectStats(al, sh, cfg)
			if err != nil {
				t.Fatalf("FAIL CollectStats shard %d: %v", i, err)
			}
			*dst = append(*dst, st)
		}
	}
	outC, tc := awqShards(t, cpu, m, shards, collect(&statsC))
	outG, tg := awqShards(t, gpu, m, shards, collect(&statsG))
	for i := range shards {
		e := relErr(outG[i].Data, outC[i].Data)
		pass(e <= 1e-4, "AWQ layer outputs shard %d: rel err %.2e (≤ 1e-4)", i, e)
	}
	stC, err := awq.MergeStats(statsC)
	if err != nil {
		t.Fatal(err)
	}
	stG, err := awq.MergeStats(statsG)
	if err != nil {
		t.Fatal(err)
	}
	e := maxRel(stG.Sums(), stC.Sums())
	pass(e <= 1e-5, "AWQ statistics Σ|x|: max rel diff %.2e (≤ 1e-5); capture+stats GPU %v, CPU %v", e,
		tg.Round(time.Millisecond), tc.Round(time.Millisecond))

	// Step 2: the scale grid's losses, both from the CPU's merged statistics.
	var lossC, lossG []*awq.ScaleLosses
	losses := func(dst *[]*awq.ScaleLosses, again bool) func(int, *awq.Layer, awq.Shard) {
		return func(i int, al *awq.Layer, sh awq.Shard) {
			sl, err := awq.CollectScaleLosses(ctx, al, sh, stC, cfg)
			if err != nil {
				t.Fatalf("FAIL CollectScaleLosses shard %d: %v", i, err)
			}
			*dst = append(*dst, sl)
			if again && i == 0 {
				sl2, err := awq.CollectScaleLosses(ctx, al, sh, stC, cfg)
				if err != nil {
					t.Fatal(err)
				}
				a, _ := sl.MarshalBinary()
				b, _ := sl2.MarshalBinary()
				pass(slices.Equal(a, b), "AWQ scale losses deterministic (shard 0 twice: identical bytes)")
			}
		}
	}
	_, tc = awqShards(t, cpu, m, shards, losses(&lossC, false))
	_, tg = awqShards(t, gpu, m, shards, losses(&lossG, true))
	lC, err := awq.MergeScaleLosses(lossC)
	if err != nil {
		t.Fatal(err)
	}
	lG, err := awq.MergeScaleLosses(lossG)
	if err != nil {
		t.Fatal(err)
	}
	sumsC, countsC := lC.Sums()
	sumsG, countsG := lG.Sums()
	for g := range sumsC {
		var worst float64
		for k := range sumsC[g] {
			worst = max(worst, math.Abs(sumsG[g][k]-sumsC[g][k])/math.Abs(sumsC[g][k]))
		}
		pass(worst <= 1e-4 && countsG[g] == countsC[g], "AWQ scale losses group %d: %d ratios, max rel diff %.2e (≤ 1e-4), counts %d/%d",
			g, len(sumsC[g]), worst, countsG[g], countsC[g])
	}
	t.Logf("AWQ scale losses (2 shards × 16×512, %d groups): GPU %v, CPU %v", len(sumsC), tg.Round(time.Millisecond), tc.Round(time.Millisecond))

	l, err := m.Layer(0)
	if err != nil {
		t.Fatal(err)
	}
	desc, _, _, err := cpu.AWQLayer(ctx, l, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	scC, err := awq.PickScales(desc, stC, lC, cfg)
	if err != nil {
		t.Fatal(err)
	}
	scG, err := awq.PickScales(desc, stC, lG, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for g := range scC {
		// The CPU's loss of the GPU's pick against the CPU's best.
		lossOfG := math.NaN()
		for k := range scC[g].Losses {
			if float64(k)/float64(awq.DefaultGrid) == scG[g].Ratio {
				lossOfG = scC[g].Losses[k]
			}
		}
		rel := math.Abs(lossOfG-scC[g].Loss) / scC[g].Loss
		pass(scG[g].Ratio == scC[g].Ratio || rel <= 1e-4, "AWQ group %d (after %s): ratio GPU %.2f CPU %.2f, loss GPU %.6g CPU %.6g (CPU loss of the GPU's pick within %.2e)",
			g, desc.Groups[g].Prev, scG[g].Ratio, scC[g].Ratio, scG[g].Loss, scC[g].Loss, rel)
	}

	// Step 3: clip statistics from the CPU's scales.
	var clipC, clipG []*awq.ClipStats
	clips := func(dst *[]*awq.ClipStats) func(int, *awq.Layer, awq.Shard) {
		return func(i int, al *awq.Layer, sh awq.Shard) {
			cs, err := awq.CollectClipStats(al, sh, scC, cfg)
			if err != nil {
				t.Fatalf("FAIL CollectClipStats shard %d: %v", i, err)
			}
			*dst = append(*dst, cs)
		}
	}
	awqShards(t, cpu, m, shards, clips(&clipC))
	awqShards(t, gpu, m, shards, clips(&clipG))
	cC, err := awq.MergeClipStats(clipC)
	if err != nil {
		t.Fatal(err)
	}
	cG, err := awq.MergeClipStats(clipG)
	if err != nil {
		t.Fatal(err)
	}

	// Step 4: the finish on fresh copies of the layer.
	finish := func(ac quantize.AWQCompute, clip *awq.ClipStats) (*awq.LayerResult, time.Duration) {
		l, err := m.Layer(0)
		if err != nil {
			t.Fatal(err)
		}
		al, _, release, err := ac.AWQLayer(ctx, l, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		t0 := time.Now()
		r, err := awq.FinishLayer(ctx, al, scC, clip, cfg)
		if err != nil {
			t.Fatalf("FAIL FinishLayer: %v", err)
		}
		return r, time.Since(t0)
	}
	want, tc := finish(cpu, cC)
	got, tg := finish(gpu, cC)
	fromG, _ := finish(gpu, cG)
	for name, wc := range want.Clips {
		pass(slices.Equal(got.Clips[name], wc), "AWQ clipping search %s on the CPU's clip stats: bounds identical", name)
		same := 0
		for i, v := range wc {
			if fromG.Clips[name][i] == v {
				same++
			}
		}
		frac := float64(same) / float64(len(wc))
		pass(frac >= 0.99, "AWQ clipping %s from the GPU's clip stats: %.3f%% of the bounds equal (≥ 99%%)", name, 100*frac)
	}
	for name, q := range want.Quantized {
		same := 0
		for i, v := range q.QWeight {
			if fromG.Quantized[name].QWeight[i] == v {
				same++
			}
		}
		frac := float64(same) / float64(len(q.QWeight))
		pass(frac >= 0.99, "AWQ codes %s (GPU clip stats and search): %.3f%% equal (≥ 99%%)", name, 100*frac)
	}
	t.Logf("AWQ finish (clipping search + quantization): GPU %v, CPU %v", tg.Round(time.Millisecond), tc.Round(time.Millisecond))
}

// TestAWQTinyLlama quantizes tiny-llama to AWQ 4-bit g128 (llm-awq's grid, the default) with
// quantize.Layered on the CPU and on the GPU (quantize.WithCompute(Compute): the path of
// `quantize --device cuda`), on 128×512 calibration tokens (4 shards), and checks:
//   - the GPU-quantized checkpoint's perplexity is within 0.2% of the CPU-quantized one's;
//   - each checkpoint's GPU perplexity agrees with its CPU perplexity within 1e-4 relative;
//   - the GPU quantization is deterministic: a second GPU run writes byte-identical files.
func TestAWQTinyLlama(t *testing.T) {
	checkQuantizeOnGPU(t, openGPU(t), domain.FormatAWQ, domain.LayerOptions{SeqLen: 512}, "awq", 0.002)
}

// TestAWQCheckMemory: an AWQ task on a shard far beyond the device fails in one line, before any
// allocation, as a permanent fault, and leaves the device to the next task (a small shard then
// runs: its outputs equal the CPU's forward within 1e-4).
func TestAWQCheckMemory(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	m := syntheticModel(t, map[string]any{"architectures": []string{"LlamaForCausalLM"}})
	l, err := m.Layer(0)
	if err != nil {
		t.Fatal(err)
	}
	c := &Compute{D: d}
	huge := &transformer.Tensor{Batch: 1 << 20, Seq: 1 << 14, Dim: m.Config.HiddenSize, Data: make([]float32, 1)}
	_, _, _, err = c.AWQLayer(ctx, l, huge, true)
	if !errors.Is(err, ErrMemory) || !fault.Permanent(err) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("FAIL got %v, want one line wrapping ErrMemory", err)
	}
	t.Logf("PASS refused: %v", err)
	x := randTensor(rand.New(rand.NewPCG(1, 2)), 2, 16, m.Config.HiddenSize, 1)
	_, out, release, err := c.AWQLayer(ctx, l, x, true)
	if err != nil {
		t.Fatalf("FAIL a small shard after the refusal: %v", err)
	}
	release()
	want, err := l.Forward(x, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e := relErr(out.Data, want.Data); !(e <= 1e-4) {
		t.Errorf("FAIL AWQ layer outputs after the refusal: rel err %.2e > 1e-4", e)
	} else {
		t.Logf("PASS AWQ layer outputs after the refusal: rel err %.2e", e)
	}
}

// TestAWQHalfGrid: with Options.AWQHalf the scale grid's losses on tiny-llama's layer 0 (32×512
// tokens, the CPU's statistics) stay within 2% of the float32 GPU's for every group and ratio
// (the candidates' weights are halves already; only the activations are rounded), and each
// group's pick costs, by the float32 losses, at most 1% more than the float32 pick.
func TestAWQHalfGrid(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	m := tinyLlama(t)
	x := tinyCalibration(t, m, 512, 32)
	shards := []*transformer.Tensor{x}
	cfg := quantize.DefaultAWQConfig()
	var stats *awq.Stats
	awqShards(t, quantize.CPU{}, m, shards, func(_ int, al *awq.Layer, sh awq.Shard) {
		var err error
		if stats, err = awq.CollectStats(al, sh, cfg); err != nil {
			t.Fatal(err)
		}
	})
	losses := func(o Options) *awq.ScaleLosses {
		var sl *awq.ScaleLosses
		awqShards(t, &Compute{D: d, Options: o}, m, shards, func(_ int, al *awq.Layer, sh awq.Shard) {
			var err error
			if sl, err = awq.CollectScaleLosses(ctx, al, sh, stats, cfg); err != nil {
				t.Fatalf("FAIL CollectScaleLosses: %v", err)
			}
		})
		return sl
	}
	full, half := losses(Options{}), losses(Options{AWQHalf: true})
	sf, _ := full.Sums()
	sh, _ := half.Sums()
	for g := range sf {
		var worst float64
		best, pick := 0, 0
		for k := range sf[g] {
			worst = max(worst, math.Abs(sh[g][k]-sf[g][k])/sf[g][k])
			if sf[g][k] < sf[g][best] {
				best = k
			}
			if sh[g][k] < sh[g][pick] {
				pick = k
			}
		}
		cost := sf[g][pick]/sf[g][best] - 1
		if worst > 0.02 || cost > 0.01 {
			t.Errorf("group %d: half losses within %.2e of float32's (≤ 2e-2); half pick %d costs %.2e more than pick %d (≤ 1e-2)", g, worst, pick, cost, best)
		} else {
			t.Logf("group %d: half losses within %.2e of float32's; picks %d (half) and %d (float32), cost %.2e", g, worst, pick, best, cost)
		}
	}
}
