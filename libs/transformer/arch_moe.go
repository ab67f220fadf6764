package transformer

import (
	"math"
	"sort"
)

// moe reports its input to hook as the block's (Config.MoEBlock), then routes each token: softmax over the router logits (float32), the top-k experts
// (renormalised when NormTopK), each expert a SwiGLU MLP; Qwen2-MoE adds its shared expert
// scaled by sigmoid(shared_expert_gate). hook sees every expert's input, the tokens routed to
// it (Batch 1, Seq = their count, possibly 0), so that GPTQ calibrates each expert on its tokens.
// A non-empty only runs just the expert that owns the linear of that name (forwardArch).
func (l *Layer) moe(n *Tensor, hook Hook, only string) *Tensor {
	c := l.model.Config
	rows, e := n.Rows(), len(l.arch.Experts)
	if hook != nil && (only == "" || only == c.MoEBlock()) {
		hook([]string{c.MoEBlock()}, n)
	}
	logits := make([]float32, rows*e)
	l.arch.Router.apply(logits, n.Data, rows)
	// Per-expert token lists, so that each expert runs one matrix product.
	tokens := make([][]int, e)
	weights := make([][]float32, e)
	idx := make([]int, e)
	for r := 0; r < rows; r++ {
		p := logits[r*e : (r+1)*e]
		softmaxRow(p)
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(a, b int) bool { return p[idx[a]] > p[idx[b]] })
		top := idx[:c.ExpertsUsed]
		var sum float32
		for _, x := range top {
			sum += p[x]
		}
		for _, x := range top {
			w := p[x]
			if c.NormTopK {
				w /= sum
			}
			tokens[x] = append(tokens[x], r)
			weights[x] = append(weights[x], w)
		}
	}
	out := NewTensor(n.Batch, n.Seq, n.Dim)
	for x, toks := range tokens {
		if only != "" && !l.arch.Experts[x].owns(only) {
			continue
		}
		if len(toks) == 0 {
			if hook != nil { // an expert no token reached: its (empty) input still counts
				e := &l.arch.Experts[x]
				hook([]string{e.Gate.Name, e.Up.Name}, NewTensor(1, 0, n.Dim))
				hook([]string{e.Down.Name}, NewTensor(1, 0, e.Gate.Out))
			}
			continue
		}
		in := NewTensor(1, len(toks), n.Dim)
		for i, r := range toks {
			copy(in.Row(i), n.Row(r))
		}
		y := l.arch.Experts[x].forward(in, hook)
		for i, r := range toks {
			o, yr, w := out.Row(r), y.Row(i), weights[x][i]
			for j := range o {
				o[j] += w * yr[j]
			}
		}
	}
	if l.arch.Shared != nil && (only == "" || l.arch.Shared.owns(only)) {
		y := l.arch.Shared.forward(n, hook)
		gate := make([]float32, rows)
		l.arch.SharedGate.apply(gate, n.Data, rows)
		for r := 0; r < rows; r++ {
			s := float32(1 / (1 + math.Exp(-float64(gate[r]))))
			o, yr := out.Row(r), y.Row(r)
			for j := range o {
				o[j] += s * yr[j]
			}
		}
	}
	return out
}

func (x *expert) owns(linear string) bool {
	return x.Gate.Name == linear || x.Up.Name == linear || x.Down.Name == linear
}

func (x *expert) forward(n *Tensor, hook Hook) *Tensor {
	rows := n.Rows()
	if hook != nil {
		hook([]string{x.Gate.Name, x.Up.Name}, n)
	}
	g, u := NewTensor(n.Batch, n.Seq, x.Gate.Out), NewTensor(n.Batch, n.Seq, x.Up.Out)
	x.Gate.apply(g.Data, n.Data, rows)
	x.Up.apply(u.Data, n.Data, rows)
	siluMul(g.Data, u.Data)
	if hook != nil {
		hook([]string{x.Down.Name}, g)
	}
	d := NewTensor(n.Batch, n.Seq, x.Down.Out)
	x.Down.apply(d.Data, g.Data, rows)
	return d
}
