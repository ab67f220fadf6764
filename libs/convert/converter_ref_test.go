package convert

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/gguf/ggufdump"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/sharedtest"
	"quantfleet.dev/libs/synth"
)

// converterCases pair a synthetic checkpoint and a convert_hf_to_gguf.py --outtype with the level
// that must reproduce it. For "auto" the level is the converter's own output (same keys, same
// order, same tensor layout); for an explicit outtype it is llama-quantize's path from the
// intermediate file, which must give the same values and tensor bytes.
var converterCases = []struct {
	model, outtype, level string
}{
	{"Qwen2-Synth-Instruct", "auto", "BF16"},
	{"Qwen2-Synth-Instruct", "f16", "F16"},
	{"Qwen3-Synth-v1.5-Chat", "auto", "BF16"},
	{"mistral-synth", "auto", "BF16"},
	{"mistral-synth", "f16", "F16"},
	{"llama-synth-linear-f16", "auto", "F16"},
	{"llama-synth-3.2-f32", "auto", "F16"},
	{"llama-synth-sharded", "auto", "BF16"},
	{"llama-synth-linear-f16", "bf16", "BF16"},
	{"mistral-synth", "f32", "F32"},
	{"mistral-synth", "q8_0", "Q8_0"},
	{"Qwen2-Synth-Instruct", "q8_0", "Q8_0"},
}

// archCases are the architectures of issue 13. Their reference dumps come from
// scripts/reference/arch_fixtures.py on the GPU machine; until they are in testdata/converter the
// cases skip. Besides the converter's own output (auto) each has llama-quantize's output at the
// levels in archLevels (MODEL.LEVEL.json), compared value for value and byte for byte.
var archCases = []string{
	"gemma-2-synth-it", "gemma-3-synth-it", "gemma-3-synth-mm", "Phi-3-synth-128k-instruct",
	"Mixtral-synth-8x", "Qwen3-MoE-synth", "Qwen1.5-MoE-synth",
}

// archLevels are the llama-quantize levels the fixture script dumps for archCases: the seed's 14
// mixes (the float outputs come from the converter itself).
var archLevels = domain.GGUFLevels[:14]

func init() {
	for _, m := range archCases {
		converterCases = append(converterCases, struct{ model, outtype, level string }{m, "auto", "BF16"})
		for _, l := range archLevels {
			converterCases = append(converterCases, struct{ model, outtype, level string }{m, l, l})
		}
	}
}

// synthModels writes each synthetic checkpoint once per test binary run.
type synthModels struct {
	once   sync.Once
	dir    string
	assets synth.Assets
	err    error
	mu     sync.Mutex
	made   map[string]string
}

var synthCache synthModels

func synthModel(t *testing.T, name string) string {
	t.Helper()
	tiny := sharedtest.Path(t, "models", "tiny-llama")
	c := &synthCache
	c.once.Do(func() {
		c.dir, c.err = os.MkdirTemp("", "synth-models-")
		if c.err == nil {
			c.assets, c.err = synth.LoadAssets(filepath.Join("..", "tokenizer", "testdata", "gpt2", "tokenizer.json.gz"), tiny)
		}
		if c.err == nil {
			c.err = c.assets.LoadQwen3(filepath.Join(tiny, "..", "..", "tokenizers", "qwen3"))
		}
		c.made = map[string]string{}
	})
	if c.err != nil {
		t.Fatal(c.err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if dir, ok := c.made[name]; ok {
		return dir
	}
	dir, err := synth.Write(c.dir, name, c.assets)
	if err != nil {
		t.Fatal(err)
	}
	c.made[name] = dir
	return dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if synthCache.dir != "" {
		os.RemoveAll(synthCache.dir)
	}
	os.Exit(code)
}

// writeGGUF converts dir at level into a file and returns its path and plan.
func writeGGUF(t *testing.T, dir, level string) (string, *Plan) {
	t.Helper()
	m, err := hfmodel.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	plan, err := NewPlan(m, dir, level, Options{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "out.gguf")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := gguf.NewWriter(f, plan.Header)
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range plan.Tensors {
		data, err := tp.Produce(m, plan.Rope)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteTensor(tp.Name, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path, plan
}

// TestMatchesConverter compares quantfleet's conversion of the synthetic checkpoints with
// llama.cpp's convert_hf_to_gguf.py output for them (testdata/converter, see its README).
func TestMatchesConverter(t *testing.T) {
	for _, tc := range converterCases {
		t.Run(tc.model+"/"+tc.outtype, func(t *testing.T) {
			ref := filepath.Join("testdata", "converter", tc.model+"."+tc.outtype)
			if _, err := os.Stat(ref + ".json"); errors.Is(err, os.ErrNotExist) && slices.Contains(archCases, tc.model) {
				t.Skipf("no reference dump %s.json yet: run scripts/reference/arch_fixtures.py on the GPU machine (see scripts/reference/README.md)", ref)
			}
			want, err := ggufdump.LoadDump(ref + ".json")
			if err != nil {
				t.Fatal(err)
			}
			path, plan := writeGGUF(t, synthModel(t, tc.model), tc.level)
			got, err := ggufdump.DumpFile(path)
			if err != nil {
				t.Fatal(err)
			}
			same, diffs := ggufdump.CompareDumpCount(want, got, []string{"general.name"})
			if len(diffs) > 0 {
				t.Errorf("%d/%d tensors identical; differences:\n%s", same, len(want.Tensors), strings.Join(diffs, "\n"))
			}
			// CompareDump does not see keys that only we write, nor GGUF value types.
			var wantKeys, gotKeys []string
			for _, kv := range want.KV {
				wantKeys = append(wantKeys, kv.Key)
			}
			for _, kv := range got.KV {
				gotKeys = append(gotKeys, kv.Key)
			}
			if tc.outtype == "auto" {
				if !slices.Equal(wantKeys, gotKeys) {
					t.Errorf("keys in order\n got  %q\n want %q", gotKeys, wantKeys)
				}
				// The converter's own file: same tensor order and offsets.
				for i := range min(len(want.Tensors), len(got.Tensors)) {
					w, g := want.Tensors[i], got.Tensors[i]
					if w.Name != g.Name || w.Offset != g.Offset {
						t.Errorf("tensor %d: got %s at %d, want %s at %d", i, g.Name, g.Offset, w.Name, w.Offset)
						break
					}
				}
			} else {
				slices.Sort(wantKeys)
				slices.Sort(gotKeys)
				if !slices.Equal(wantKeys, gotKeys) {
					t.Errorf("keys\n got  %q\n want %q", gotKeys, wantKeys)
				}
			}
			checkValueTypes(t, ref+".types.json", plan.Header)
		})
	}
}

// checkValueTypes compares the GGUF value types of the header with the converter's, recorded
// as key -> [type] or [ARRAY, element type].
func checkValueTypes(t *testing.T, path string, h *gguf.Header) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want map[string][]gguf.ValueType
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, kv := range h.KV {
		typ, elem, err := gguf.ValueTypeOf(kv.Value)
		if err != nil {
			t.Errorf("%s: %v", kv.Key, err)
			continue
		}
		got := []gguf.ValueType{typ}
		if typ == gguf.TypeArray {
			got = append(got, elem)
		}
		if w, ok := want[kv.Key]; ok && !slices.Equal(w, got) {
			t.Errorf("%s: GGUF type %v, converter wrote %v", kv.Key, fmt.Sprint(got), fmt.Sprint(w))
		}
	}
}

// TestArchSynthConverts converts every new synthetic checkpoint at every level: the plan passes
// CheckHeader (hparams against tensors, as llama.cpp's loader) and the written file reads back.
// It needs no reference; TestMatchesConverter compares against the converter once dumps exist.
func TestArchSynthConverts(t *testing.T) {
	for _, model := range archCases {
		for _, level := range []string{"BF16", "Q4_K_M", "Q8_0", "F32"} {
			t.Run(model+"/"+level, func(t *testing.T) {
				path, plan := writeGGUF(t, synthModel(t, model), level)
				got, err := ggufdump.DumpFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if len(got.Tensors) != len(plan.Tensors) {
					t.Fatalf("%d tensors read back, %d planned", len(got.Tensors), len(plan.Tensors))
				}
				// LlamaModel permutes q/k rows for every arch-llama model, Mixtral included;
				// the NEOX-rope architectures keep them.
				for _, tp := range plan.Tensors {
					if strings.HasSuffix(tp.Name, "attn_q.weight") || strings.HasSuffix(tp.Name, "attn_k.weight") {
						if permuted := tp.PermuteHeads > 0; permuted != (plan.Arch == "llama") {
							t.Errorf("%s: permute heads %d in arch %s", tp.Name, tp.PermuteHeads, plan.Arch)
						}
					}
				}
				// The converter (Python writer) keeps a trailing 1 dimension, llama-quantize
				// (gguf.cpp, ggml_n_dims) drops it.
				for _, tn := range got.Tensors {
					if tn.Name == "blk.0.ffn_gate_inp_shexp.weight" {
						want := []uint64{64, 1}
						if level != "BF16" {
							want = want[:1]
						}
						if !slices.Equal(tn.Shape, want) {
							t.Errorf("%s: shape %v, want %v", tn.Name, tn.Shape, want)
						}
					}
				}
			})
		}
	}
}
