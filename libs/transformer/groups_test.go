package transformer_test

import (
	"slices"
	"strings"
	"testing"

	"quantfleet.dev/libs/sharedtest"
	"quantfleet.dev/libs/synth"
	"quantfleet.dev/libs/transformer"
)

// TestArchHooks runs layer 0 of each synthetic Gemma, Phi-3 and MoE checkpoint with a hook: the
// output must equal the unhooked forward's bit for bit, every reported input must start a group
// of Config.LinearGroups with the group's width, every group must be reported (an expert's input
// holding only its routed tokens, top-k experts per token), and the groups must cover
// Layer.Linears exactly. Layer.Inputs must report each group's input bit for bit as Forward
// does, without running any other expert.
func TestArchHooks(t *testing.T) {
	a, err := synth.LoadRepoAssets("..", sharedtest.Dir(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{"gemma-2-synth-it", "gemma-3-synth-mm", "Phi-3-synth-128k-instruct", "Mixtral-synth-8x", "Qwen1.5-MoE-synth"} {
		t.Run(name, func(t *testing.T) {
			src, err := synth.Write(dir, name, a)
			if err != nil {
				t.Skip(err)
			}
			m, err := transformer.Load(src)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			l, err := m.Layer(0)
			if err != nil {
				t.Fatal(err)
			}
			x := transformer.NewTensor(2, 9, m.Config.HiddenSize)
			for i := range x.Data {
				x.Data[i] = float32((i*7919)%201-100) / 100
			}
			groups := m.Config.LinearGroups()
			first := map[string]transformer.LinearGroup{}
			var names []string
			for _, g := range groups {
				first[g.Linears[0]] = g
				names = append(names, g.Linears...)
			}
			var lins []string
			for _, lin := range l.Linears() {
				lins = append(lins, lin.Name)
			}
			slices.Sort(names)
			slices.Sort(lins)
			if !slices.Equal(names, lins) {
				t.Errorf("groups name %v, the layer's linears are %v", names, lins)
			}
			rows := map[string]int{}
			inputs := map[string][]float32{}
			blockRows := 0
			got, err := l.Forward(x, func(linears []string, in *transformer.Tensor) {
				if block := m.Config.MoEBlock(); block != "" && slices.Equal(linears, []string{block}) {
					blockRows += in.Rows() // the block's whole input, AWQ's
					return
				}
				inputs[linears[0]] = append(inputs[linears[0]], in.Data...)
				g, ok := first[linears[0]]
				if !ok || !slices.Equal(g.Linears, linears) {
					t.Errorf("hook reported %v, not a group", linears)
					return
				}
				if in.Dim != l.Linear(linears[0]).In {
					t.Errorf("%s: input of %d features", linears[0], in.Dim)
				}
				rows[linears[0]] += in.Rows()
			})
			if err != nil {
				t.Fatal(err)
			}
			want, err := l.Forward(x, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Data, want.Data) {
				t.Error("the hooked forward differs from the plain one")
			}
			// Inputs reports each group's input as Forward does, running one expert at most.
			for _, g := range groups {
				var seen []float32
				err := l.Inputs(x, g.Linears[0], func(linears []string, in *transformer.Tensor) {
					if linears[0] == g.Linears[0] {
						seen = append(seen, in.Data...)
					} else if strings.Contains(linears[0], ".experts.") && !strings.HasPrefix(g.Linears[0], linears[0][:strings.LastIndexByte(linears[0], '.')+1]) {
						t.Errorf("Inputs(%s) ran %s", g.Linears[0], linears[0])
					}
				})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(seen, inputs[g.Linears[0]]) {
					t.Errorf("Inputs(%s) differs from the forward's input", g.Linears[0])
				}
			}
			routed := 0 // rows the experts' gate/up saw: top-k per token in all
			for _, g := range groups {
				n, ok := rows[g.Linears[0]]
				switch {
				case !ok:
					t.Errorf("group %v never reported", g.Linears)
				case strings.Contains(g.Linears[0], ".experts."):
					if len(g.Linears) == 2 {
						routed += n
					}
				case n != x.Rows():
					t.Errorf("group %v saw %d rows, want %d", g.Linears, n, x.Rows())
				}
			}
			if m.Config.MoEBlock() != "" && blockRows != x.Rows() {
				t.Errorf("the block's input had %d rows, want %d", blockRows, x.Rows())
			}
			if want := m.Config.ExpertsUsed * x.Rows(); routed != want {
				t.Errorf("the experts saw %d routed rows, want %d", routed, want)
			}
		})
	}
}
