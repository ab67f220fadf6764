package transformer

import (
	"testing"
)

// BenchmarkForward measures forward-pass throughput on tiny-llama with all layer weights
// loaded once (the weights of a layer are read per batch in real use, which costs little):
//
//	pp512:    one 512-token sequence through every layer, logits of the last token only
//	          (what llama-bench's pp512 measures);
//	nll4x512: four 512-token windows, logits and NLL of every position (the perplexity
//	          workload).
func BenchmarkForward(b *testing.B) {
	m := loadTinyLlama(b)
	defer m.Close()
	layers := make([]*Layer, m.Config.NumLayers)
	for i := range layers {
		var err error
		if layers[i], err = m.Layer(i); err != nil {
			b.Fatal(err)
		}
	}
	seq := func(n, off int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = (i*7919 + off*31 + 1) % m.Config.VocabSize
		}
		return s
	}
	run := func(b *testing.B, batch int, allLogits bool) {
		in := make([][]int, batch)
		tg := make([][]int, batch)
		for i := range in {
			s := seq(513, i)
			in[i], tg[i] = s[:512], s[1:]
		}
		b.ResetTimer()
		for b.Loop() {
			x, err := m.Embed(in)
			if err != nil {
				b.Fatal(err)
			}
			for _, l := range layers {
				if x, err = l.Forward(x, nil); err != nil {
					b.Fatal(err)
				}
			}
			if allLogits {
				if _, err := m.NLL(x, tg); err != nil {
					b.Fatal(err)
				}
			} else {
				last := &Tensor{Data: x.Row(x.Rows() - 1), Batch: 1, Seq: 1, Dim: x.Dim}
				if _, err := m.Head(last); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(batch*512*b.N)/b.Elapsed().Seconds(), "tokens/s")
	}
	b.Run("pp512", func(b *testing.B) { run(b, 1, false) })
	b.Run("nll4x512", func(b *testing.B) { run(b, 4, true) })
}
