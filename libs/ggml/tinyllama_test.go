package ggml_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"

	"quantfleet.dev/libs/ggml"
	"quantfleet.dev/libs/sharedtest"
)

// safetensors is a minimal reader: 8-byte little-endian header length, JSON header, data.
type safetensors struct {
	header map[string]json.RawMessage
	data   []byte
}

type stTensor struct {
	DType   string `json:"dtype"`
	Shape   []int  `json:"shape"`
	Offsets [2]int `json:"data_offsets"`
}

func readSafetensors(t testing.TB, path string) *safetensors {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	st := &safetensors{data: b[8+n:]}
	if err := json.Unmarshal(b[8:8+n], &st.header); err != nil {
		t.Fatal(err)
	}
	return st
}

// float32s returns a BF16 tensor widened to float32 (exact), and its shape.
func (st *safetensors) float32s(t testing.TB, name string) ([]float32, []int) {
	t.Helper()
	var ti stTensor
	if err := json.Unmarshal(st.header[name], &ti); err != nil {
		t.Fatalf("tensor %s: %v", name, err)
	}
	if ti.DType != "BF16" {
		t.Fatalf("tensor %s: dtype %s, want BF16", name, ti.DType)
	}
	raw := st.data[ti.Offsets[0]:ti.Offsets[1]]
	out := make([]float32, len(raw)/2)
	for i := range out {
		out[i] = ggml.BF16ToFP32(binary.LittleEndian.Uint16(raw[2*i:]))
	}
	return out, ti.Shape
}

var blkName = regexp.MustCompile(`^blk\.(\d+)\.(\w+)\.weight$`)

// hfName maps a GGUF tensor name back to the Hugging Face checkpoint name (Llama).
func hfName(gguf string) string {
	switch gguf {
	case "token_embd.weight":
		return "model.embed_tokens.weight"
	case "output.weight":
		return "lm_head.weight"
	case "output_norm.weight":
		return "model.norm.weight"
	}
	m := blkName.FindStringSubmatch(gguf)
	if m == nil {
		return ""
	}
	part := map[string]string{
		"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
		"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
		"attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
		"ffn_down": "mlp.down_proj",
	}[m[2]]
	if part == "" {
		return ""
	}
	return fmt.Sprintf("model.layers.%s.%s.weight", m[1], part)
}

// permuteQK applies convert_hf_to_gguf's LLaMA q/k row permutation: within each of the heads,
// new row 2b+a is old row a·(hd/2)+b.
func permuteQK(x []float32, rows, cols, heads int) []float32 {
	out := make([]float32, len(x))
	hd := rows / heads
	for h := 0; h < heads; h++ {
		for a := 0; a < 2; a++ {
			for b := 0; b < hd/2; b++ {
				src := h*hd + a*hd/2 + b
				dst := h*hd + 2*b + a
				copy(out[dst*cols:(dst+1)*cols], x[src*cols:(src+1)*cols])
			}
		}
	}
	return out
}

type refTensor struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Shape  []int  `json:"shape"`
	SHA256 string `json:"sha256"`
}

// TestTinyLlamaTensors quantizes the tiny Llama checkpoint's tensors and compares the bytes with
// the SHA-256s of llama.cpp's own GGUF outputs (convert_hf_to_gguf.py --outtype bf16, then
// llama-quantize) for every file type in shared/reference/tiny-llama.
func TestTinyLlamaTensors(t *testing.T) {
	shared := sharedtest.Dir(t)
	model := filepath.Join(shared, "models", "tiny-llama")
	st := readSafetensors(t, filepath.Join(model, "model.safetensors"))
	var cfg struct {
		Heads   int `json:"num_attention_heads"`
		KVHeads int `json:"num_key_value_heads"`
	}
	if b, err := os.ReadFile(filepath.Join(model, "config.json")); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	refs, err := filepath.Glob(filepath.Join(shared, "reference", "tiny-llama", "*.json"))
	if err != nil || len(refs) == 0 {
		t.Fatalf("no reference files: %v", err)
	}
	sort.Strings(refs)
	type key struct{ name, typ string }
	want := map[key]string{}
	var order []key
	for _, ref := range refs {
		b, err := os.ReadFile(ref)
		if err != nil {
			t.Fatal(err)
		}
		var f struct{ Tensors []refTensor }
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		for _, rt := range f.Tensors {
			k := key{rt.Name, rt.Type}
			if old, ok := want[k]; ok {
				if old != rt.SHA256 {
					t.Errorf("%s: %s as %s differs between reference files", ref, rt.Name, rt.Type)
				}
				continue
			}
			want[k] = rt.SHA256
			order = append(order, k)
		}
	}
	checked := map[string]bool{} // in -short mode, one tensor per type
	for _, k := range order {
		if testing.Short() && checked[k.typ] {
			continue
		}
		checked[k.typ] = true
		t.Run(k.name+"/"+k.typ, func(t *testing.T) {
			typ, err := ggml.ParseType(k.typ)
			if err != nil {
				t.Fatal(err)
			}
			hf := hfName(k.name)
			if hf == "" {
				t.Fatalf("no checkpoint tensor for %s", k.name)
			}
			x, shape := st.float32s(t, hf)
			cols := shape[len(shape)-1]
			switch {
			case strings.HasSuffix(k.name, ".attn_q.weight"):
				x = permuteQK(x, shape[0], cols, cfg.Heads)
			case strings.HasSuffix(k.name, ".attn_k.weight"):
				x = permuteQK(x, shape[0], cols, cfg.KVHeads)
			}
			for _, v := range ggml.KernelVariants() { // every kernel set this machine can run
				restore := v.Use()
				q := make([]byte, typ.RowSize(int64(len(x))))
				err := ggml.Quantize(typ, q, x, cols)
				restore()
				if err != nil {
					t.Fatal(err)
				}
				if err := ggml.ValidateRowData(typ, q); err != nil {
					t.Errorf("%s kernels: validate: %v", v.Name, err)
				}
				sum := sha256.Sum256(q)
				if got := hex.EncodeToString(sum[:]); got != want[k] {
					t.Errorf("%s kernels: sha256 %s, llama.cpp wrote %s", v.Name, got, want[k])
				}
			}
		})
	}
}

// BenchmarkTinyLlamaQ4KM quantizes every tensor of the tiny Llama checkpoint to the type
// llama.cpp's Q4_K_M file gave it (reference/tiny-llama/Q4_K_M.json: Q4_K, Q6_K, F32): the
// quantization part of a whole-model Q4_K_M conversion, without I/O. MB/s are of float32 input.
func BenchmarkTinyLlamaQ4KM(b *testing.B) {
	shared := sharedtest.Dir(b)
	st := readSafetensors(b, filepath.Join(shared, "models", "tiny-llama", "model.safetensors"))
	raw, err := os.ReadFile(filepath.Join(shared, "reference", "tiny-llama", "Q4_K_M.json"))
	if err != nil {
		b.Fatal(err)
	}
	var ref struct{ Tensors []refTensor }
	if err := json.Unmarshal(raw, &ref); err != nil {
		b.Fatal(err)
	}
	type job struct {
		typ  ggml.Type
		x    []float32
		cols int
		out  []byte
	}
	var jobs []job
	var elems int64
	for _, rt := range ref.Tensors {
		typ, err := ggml.ParseType(rt.Type)
		if err != nil {
			b.Fatal(err)
		}
		x, shape := st.float32s(b, hfName(rt.Name))
		jobs = append(jobs, job{typ, x, shape[len(shape)-1], make([]byte, typ.RowSize(int64(len(x))))})
		elems += int64(len(x))
	}
	for _, procs := range []int{1, runtime.GOMAXPROCS(0)} {
		name := "allcores"
		if procs == 1 {
			name = "1core"
		}
		b.Run(name, func(b *testing.B) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			b.SetBytes(4 * elems)
			for b.Loop() {
				for _, j := range jobs {
					if err := ggml.Quantize(j.typ, j.out, j.x, j.cols); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
