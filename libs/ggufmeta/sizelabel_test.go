package ggufmeta

import (
	"fmt"
	"path/filepath"
	"testing"

	"quantfleet.dev/libs/sharedtest"
)

type sizeLabelVectors struct {
	SizeLabels []struct {
		In   [4]int64 `json:"in"`
		Want string   `json:"want"`
	} `json:"size_labels"`
	Counts []struct {
		Name    string `json:"name"`
		Tensors [][2]any
		Want    [4]int64 `json:"want"`
	} `json:"counts"`
}

func loadSizeLabelVectors(t *testing.T) sizeLabelVectors {
	var v sizeLabelVectors
	readJSON(t, filepath.Join("testdata", "size_label.json"), &v)
	if len(v.SizeLabels) == 0 || len(v.Counts) == 0 {
		t.Fatal("no test vectors")
	}
	return v
}

func TestSizeLabel(t *testing.T) {
	for _, c := range loadSizeLabelVectors(t).SizeLabels {
		t.Run(fmt.Sprint(c.In), func(t *testing.T) {
			if got := SizeLabel(c.In[0], c.In[1], c.In[2], c.In[3]); got != c.Want {
				t.Errorf("SizeLabel%v = %q, want %q", c.In, got, c.Want)
			}
		})
	}
}

func TestCountParams(t *testing.T) {
	for _, c := range loadSizeLabelVectors(t).Counts {
		t.Run(c.Name, func(t *testing.T) {
			var ts []TensorShape
			for _, e := range c.Tensors {
				var shape []int64
				for _, d := range e[1].([]any) {
					shape = append(shape, int64(d.(float64)))
				}
				ts = append(ts, TensorShape{Name: e[0].(string), Shape: shape})
			}
			total, shared, expert, count := CountParams(ts)
			if got := [4]int64{total, shared, expert, count}; got != c.Want {
				t.Errorf("CountParams = %v, want %v", got, c.Want)
			}
		})
	}
}

// The real tiny-llama checkpoint: every tensor of model.safetensors is written to the GGUF, so
// its size label must be the one in llama.cpp's own output.
func TestTinyLlamaSizeLabel(t *testing.T) {
	shared := sharedtest.Dir(t)
	ts := safetensorsShapes(t, filepath.Join(shared, "models", "tiny-llama", "model.safetensors"))
	total, sh, ex, n := CountParams(ts)
	if total != sh || ex != 0 || n != 0 {
		t.Fatalf("CountParams = %d, %d, %d, %d; want a dense model", total, sh, ex, n)
	}
	ref := referenceGeneralKVs(t, filepath.Join(shared, "reference", "tiny-llama", "Q4_K_M.json"))
	want := ""
	for _, kv := range ref {
		if kv.key == "general.size_label" {
			want = kv.value.(string)
		}
	}
	if got := SizeLabel(total, sh, ex, n); got != want {
		t.Errorf("SizeLabel(%d) = %q, reference %q", total, got, want)
	}
}

func BenchmarkCountParams(b *testing.B) {
	ts := make([]TensorShape, 0, 1000)
	for i := range 1000 {
		ts = append(ts, TensorShape{Name: fmt.Sprintf("blk.%d.ffn_up_exps.weight", i), Shape: []int64{8, 14336, 4096}})
	}
	for b.Loop() {
		CountParams(ts)
	}
}
