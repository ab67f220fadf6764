package awq

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"slices"

	"quantfleet.dev/libs/transformer"
)

// testLayer is a synthetic decoder layer whose groups cover every case QuantizeLayer
// handles: a norm prev op with a block Inspect over two linears (one not clippable), a norm
// prev op with an MLP Inspect, a linear prev op with the default Inspect (the linear alone),
// and an ungrouped linear that is only clipped and quantized.
type testLayer struct {
	hidden, inter, tokens int
	norm1, norm2          []float32
	k, v, o, gate, up     []float32
	down                  []float32
	x1, x2, xo, h         []float32 // captured inputs, tokens×features
}

func newTestLayer(seed uint64, hidden, inter, tokens int) *testLayer {
	rng := rand.New(rand.NewPCG(seed, 7))
	tl := &testLayer{hidden: hidden, inter: inter, tokens: tokens}
	outliers := func(x []float32, cols int) {
		for _, c := range []int{1, 17, 40, 41, 99} {
			for t := range len(x) / cols {
				x[t*cols+c%cols] *= 15
			}
		}
	}
	tl.x1 = randn(rng, tokens*hidden, 1)
	outliers(tl.x1, hidden)
	tl.x2 = randn(rng, tokens*hidden, 1)
	outliers(tl.x2, hidden)
	tl.xo = randn(rng, tokens*hidden, 0.5)
	tl.norm1, tl.norm2 = make([]float32, hidden), make([]float32, hidden)
	for i := range hidden {
		tl.norm1[i] = float32(0.5 + rng.Float64())
		tl.norm2[i] = float32(0.5 + rng.Float64())
	}
	w := func(n int) []float32 {
		v := randn(rng, n, 0.05)
		for i := 0; i < n; i += 89 {
			v[i] *= 5
		}
		return v
	}
	tl.k, tl.v, tl.o = w(hidden*hidden), w(hidden*hidden), w(hidden*hidden)
	tl.gate, tl.up, tl.down = w(inter*hidden), w(inter*hidden), w(hidden*inter)
	tl.h = swiglu(gemmT(tl.x2, tokens, hidden, tl.gate, inter), gemmT(tl.x2, tokens, hidden, tl.up, inter))
	return tl
}

// gemmT returns x·wᵀ with the package's matrix product.
func gemmT(x []float32, tokens, cols int, w []float32, rows int) []float32 {
	y := make([]float32, tokens*rows)
	transformer.Gemm(false, true, tokens, rows, cols, 1, x, cols, w, cols, 0, y, rows)
	return y
}

// layer returns the Layer of tokens [off, off+n), with fresh copies of the weights and
// Inspect functions that run on those tokens only, as a worker holding one shard builds it.
func (tl *testLayer) layer(off, n int) *Layer {
	hd, in := tl.hidden, tl.inter
	lin := func(name string, rows, cols int, w []float32) *Linear {
		return &Linear{Name: name, Rows: rows, Cols: cols, Weight: slices.Clone(w)}
	}
	x1, x2 := tl.x1[off*hd:(off+n)*hd], tl.x2[off*hd:(off+n)*hd]
	l := &Layer{
		Linears: map[string]*Linear{
			"self_attn.k_proj": lin("self_attn.k_proj", hd, hd, tl.k),
			"self_attn.v_proj": lin("self_attn.v_proj", hd, hd, tl.v),
			"self_attn.o_proj": lin("self_attn.o_proj", hd, hd, tl.o),
			"mlp.gate_proj":    lin("mlp.gate_proj", in, hd, tl.gate),
			"mlp.up_proj":      lin("mlp.up_proj", in, hd, tl.up),
			"mlp.down_proj":    lin("mlp.down_proj", hd, in, tl.down),
		},
		Norms: map[string]*Norm{
			"input_layernorm":          {Weight: slices.Clone(tl.norm1)},
			"post_attention_layernorm": {Weight: slices.Clone(tl.norm2)},
		},
		Inputs: map[string][]float32{
			"self_attn.k_proj": x1, "self_attn.v_proj": x1,
			"self_attn.o_proj": tl.xo[off*hd : (off+n)*hd],
			"mlp.gate_proj":    x2, "mlp.up_proj": x2,
			"mlp.down_proj": tl.h[off*in : (off+n)*in],
		},
		Tokens: n,
	}
	down := l.Linears["mlp.down_proj"].Weight
	l.Groups = []LayerGroup{
		{Prev: "input_layernorm", Linears: []string{"self_attn.k_proj", "self_attn.v_proj"},
			Inspect: func(_ context.Context, w [][]float32) ([]float32, error) {
				// k·v products per token, a stand-in for attention that mixes both.
				k, v := gemmT(x1, n, hd, w[0], hd), gemmT(x1, n, hd, w[1], hd)
				for i := range k {
					k[i] = float32(math.Tanh(float64(k[i]))) * v[i]
				}
				return k, nil
			}},
		{Prev: "post_attention_layernorm", Linears: []string{"mlp.gate_proj", "mlp.up_proj"},
			Inspect: func(_ context.Context, w [][]float32) ([]float32, error) {
				h := swiglu(gemmT(x2, n, hd, w[0], in), gemmT(x2, n, hd, w[1], in))
				return gemmT(h, n, in, down, hd), nil
			}},
		{Prev: "mlp.up_proj", Linears: []string{"mlp.down_proj"}},
	}
	return l
}

// digest hashes everything a checkpoint takes from a layer result: every quantized linear
// (codes, scales, zeros), the folded norms, the biases and the chosen ratios and clips.
func digest(l *Layer, r *LayerResult) string {
	h := sha256.New()
	f32s := func(v []float32) {
		for _, x := range v {
			binary.Write(h, binary.LittleEndian, math.Float32bits(x))
		}
	}
	names := make([]string, 0, len(r.Quantized))
	for name := range r.Quantized {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		q := r.Quantized[name]
		h.Write([]byte(name))
		h.Write(q.QWeight)
		f32s(q.Scales)
		h.Write(q.Zeros)
		f32s(l.Linears[name].Bias)
		f32s(r.Clips[name])
	}
	for _, name := range []string{"input_layernorm", "post_attention_layernorm"} {
		f32s(l.Norms[name].Weight)
	}
	for _, s := range r.Scales {
		binary.Write(h, binary.LittleEndian, s.Ratio)
		f32s(s.S)
	}
	return hex.EncodeToString(h.Sum(nil))
}
