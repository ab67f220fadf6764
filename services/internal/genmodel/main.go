// Command genmodel writes a synthetic Llama-shaped checkpoint (LlamaForCausalLM, bf16 safetensors,
// sharded with an index) for benchmarks: random weights with the shapes and names of a real model,
// and the tokenizer files of a real small model whose vocabulary size the generated model takes.
//
//	go run ./internal/genmodel --out /tmp/synth --tokenizer ../shared/models/tiny-llama
//
// The defaults (hidden 2048, 16 layers, 16 heads / 4 KV heads, intermediate 5632, vocab from the
// tokenizer: 8192 for tiny-llama) give 755 M parameters, 1.5 GB of bf16.
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"

	"quantfleet.dev/libs/safetensors"
)

type opts struct {
	out, tokenizer                                   string
	hidden, layers, heads, kvHeads, inter, vocab, mb int
	seed                                             uint64
}

func main() {
	var o opts
	flag.StringVar(&o.out, "out", "", "output directory (required)")
	flag.StringVar(&o.tokenizer, "tokenizer", "", "directory with tokenizer.json / tokenizer.model / tokenizer_config.json to copy (required)")
	flag.IntVar(&o.hidden, "hidden", 2048, "hidden size")
	flag.IntVar(&o.layers, "layers", 16, "transformer blocks")
	flag.IntVar(&o.heads, "heads", 16, "attention heads")
	flag.IntVar(&o.kvHeads, "kv-heads", 4, "key/value heads")
	flag.IntVar(&o.inter, "intermediate", 5632, "MLP intermediate size")
	flag.IntVar(&o.vocab, "vocab", 0, "vocabulary size (default: the tokenizer's config vocab_size)")
	flag.IntVar(&o.mb, "shard-mb", 1024, "largest safetensors shard, MiB")
	flag.Uint64Var(&o.seed, "seed", 1, "random seed")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "genmodel:", err)
		os.Exit(1)
	}
}

type tensor struct {
	name  string
	shape []int64
	std   float64 // 0: ones (norms)
}

func run(o opts) error {
	if o.out == "" || o.tokenizer == "" {
		return fmt.Errorf("--out and --tokenizer are required")
	}
	if o.vocab == 0 {
		var cfg struct {
			VocabSize int `json:"vocab_size"`
		}
		b, err := os.ReadFile(filepath.Join(o.tokenizer, "config.json"))
		if err != nil {
			return fmt.Errorf("--vocab not given and no config.json beside the tokenizer: %w", err)
		}
		if err := json.Unmarshal(b, &cfg); err != nil || cfg.VocabSize == 0 {
			return fmt.Errorf("reading vocab_size from %s: %v", o.tokenizer, err)
		}
		o.vocab = cfg.VocabSize
	}
	if o.hidden%o.heads != 0 || o.heads%o.kvHeads != 0 {
		return fmt.Errorf("hidden %d, heads %d and kv heads %d do not divide", o.hidden, o.heads, o.kvHeads)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	h, hd := int64(o.hidden), int64(o.hidden/o.heads)
	kv := int64(o.kvHeads) * hd
	std := 0.02
	ts := []tensor{{"model.embed_tokens.weight", []int64{int64(o.vocab), h}, std}}
	for l := 0; l < o.layers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		ts = append(ts,
			tensor{p + "input_layernorm.weight", []int64{h}, 0},
			tensor{p + "self_attn.q_proj.weight", []int64{h, h}, std},
			tensor{p + "self_attn.k_proj.weight", []int64{kv, h}, std},
			tensor{p + "self_attn.v_proj.weight", []int64{kv, h}, std},
			tensor{p + "self_attn.o_proj.weight", []int64{h, h}, std},
			tensor{p + "post_attention_layernorm.weight", []int64{h}, 0},
			tensor{p + "mlp.gate_proj.weight", []int64{int64(o.inter), h}, std},
			tensor{p + "mlp.up_proj.weight", []int64{int64(o.inter), h}, std},
			tensor{p + "mlp.down_proj.weight", []int64{h, int64(o.inter)}, std},
		)
	}
	ts = append(ts, tensor{"model.norm.weight", []int64{h}, 0}, tensor{"lm_head.weight", []int64{int64(o.vocab), h}, std})

	// Shards of at most shard-mb, in tensor order.
	var shards [][]tensor
	var cur []tensor
	var curBytes, total, params int64
	limit := int64(o.mb) << 20
	for _, t := range ts {
		n := int64(2)
		for _, d := range t.shape {
			n *= d
		}
		if len(cur) > 0 && curBytes+n > limit {
			shards = append(shards, cur)
			cur, curBytes = nil, 0
		}
		cur = append(cur, t)
		curBytes += n
		total += n
		params += n / 2
	}
	shards = append(shards, cur)
	rng := rand.New(rand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15))
	weightMap := map[string]string{}
	for i, sh := range shards {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		var wts []safetensors.WriteTensor
		for _, t := range sh {
			wts = append(wts, safetensors.WriteTensor{Name: t.name, DType: safetensors.BF16, Shape: t.shape, Data: fill(rng, t)})
			weightMap[t.name] = name
		}
		if err := safetensors.WriteFile(filepath.Join(o.out, name), wts, map[string]string{"format": "pt"}); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s (%d tensors)\n", name, len(sh))
	}
	index := map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}
	if err := writeJSON(filepath.Join(o.out, "model.safetensors.index.json"), index); err != nil {
		return err
	}
	config := map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama", "attention_bias": false, "attention_dropout": 0.0,
		"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": nil, "dtype": "bfloat16", "head_dim": hd, "hidden_act": "silu",
		"hidden_size": o.hidden, "initializer_range": 0.02, "intermediate_size": o.inter, "max_position_embeddings": 4096,
		"mlp_bias": false, "num_attention_heads": o.heads, "num_hidden_layers": o.layers, "num_key_value_heads": o.kvHeads,
		"pretraining_tp": 1, "rms_norm_eps": 1e-5, "rope_parameters": map[string]any{"rope_theta": 10000.0, "rope_type": "default"},
		"tie_word_embeddings": false, "transformers_version": "5.17.0", "use_cache": true, "vocab_size": o.vocab,
	}
	if err := writeJSON(filepath.Join(o.out, "config.json"), config); err != nil {
		return err
	}
	for _, f := range []string{"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json"} {
		b, err := os.ReadFile(filepath.Join(o.tokenizer, f))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(o.out, f), b, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "%s: %d parameters, %.2f GB of bf16 in %d shards\n", o.out, params, float64(total)/1e9, len(shards))
	return nil
}

// fill draws N(0, std) weights, or values near 1 for norms, as bf16 (round to nearest even).
func fill(rng *rand.Rand, t tensor) []byte {
	n := int64(1)
	for _, d := range t.shape {
		n *= d
	}
	b := make([]byte, 2*n)
	for i := int64(0); i < n; i++ {
		v := 1 + 0.05*rng.NormFloat64()
		if t.std > 0 {
			v = t.std * rng.NormFloat64()
		}
		binary.LittleEndian.PutUint16(b[2*i:], bf16(float32(v)))
	}
	return b
}

func bf16(f float32) uint16 {
	u := math.Float32bits(f)
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

func writeJSON(path string, v any) error {
	// Sorted keys, two-space indent, like transformers' save_pretrained.
	b, err := json.MarshalIndent(sortKeys(v), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func sortKeys(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(map[string]any, len(m))
	for _, k := range keys {
		out[k] = sortKeys(m[k])
	}
	return out
}
