// Package transformer runs decoder-only language models (LlamaForCausalLM,
// MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM; Gemma 2/3, Phi-3, Mixtral and
// Qwen2/3-MoE in arch*.go) on the CPU in float32, from Hugging Face checkpoints with BF16, F16
// or F32 weights, layer by layer. Every layout reports its linears' inputs to a Hook, grouped
// as Config.LinearGroups names them (an expert's input: the tokens routed to it), which is what
// GPTQ calibrates on.
//
// The numerics follow transformers' eager fp32 path: RMSNorm computes
// x·rsqrt(mean(x²)+eps)·w; rotary embeddings rotate the two halves of each head
// (rotate_half, the layout of Hugging Face checkpoints) with the inverse frequencies of
// transformers' modeling_rope_utils (default, linear, dynamic, yarn, llama3); attention is
// causal and grouped-query, with Mistral's and Qwen's sliding windows where the config
// asks for them; the MLP is down(silu(gate(x))·up(x)); Qwen2 adds q/k/v biases, Qwen3
// per-head q/k RMSNorms before the rotation; tied embeddings reuse embed_tokens as lm_head.
// Dynamic NTK scaling is applied per call from that call's sequence length (transformers
// keeps the longest length seen so far; results agree for a fresh model).
//
// Memory: a Model keeps only the embeddings and the head; Layer loads one decoder layer's
// weights through a WeightSource and Release drops them, so a caller holds one layer plus
// activations. Quantizers swap weights by wrapping the WeightSource or by writing a
// Linear's Weight, and observe the inputs of every linear through a Hook.
//
// Matrix products (Gemm) use cache-blocked packing with register-blocked micro-kernels
// in Go assembly: 14×32 tiles with AVX-512F, 6×16 tiles with AVX2+FMA, and a portable Go
// 4×8 kernel elsewhere (or with the purego build tag), chosen at start-up from the CPU's
// features. This keeps binaries CGO_ENABLED=0 and self-contained, where OpenBLAS through
// cgo would need a C toolchain and a shared library on every worker; gonum's pure-Go
// float32 BLAS runs at a few GFLOP/s. Work is spread over GOMAXPROCS goroutines; attention
// runs per (sequence, key/value head) with the keys and values packed once and only the
// causally visible key blocks visited. exp (softmax, SiLU, log-sum-exp) is vectorized
// the same way. Results are not bit-exact with PyTorch (FMA, summation order); on
// tiny-llama the per-window NLL agrees to about 1e-7 relative.
package transformer
