// Package llamacuda runs the decoder layers of libs/transformer (Llama, Mistral, Qwen2,
// Qwen3) on an NVIDIA GPU in float32 and quantizes them with GPTQ and AWQ there.
//
// A Layer holds one decoder layer's weights on the device (UploadLayer); Forward runs it on
// device activations (Tensor) with an optional Hook that sees each linear group's input on
// the device, so that gptqcuda.Hessian.AddDevice consumes it without a copy. Projections are
// cuBLAS SGEMMs with TF32 off (TF32 with Options.TF32); the attention is the CPU's scheme, per
// sequence and kv head a batched GEMM of the scores, a masked softmax and a batched GEMM with
// v (an online-softmax kernel for sequences whose scores would not fit). RMSNorm, RoPE,
// SwiGLU and residual adds are NVRTC kernels from kernels.cu, compiled with --fmad=false so
// that elementwise arithmetic rounds like the Go runtime's.
//
// QuantizeLayer is the GPU counterpart of quantize.QuantizeLayer's GPTQ path and returns the
// same quantize.LayerResult (tests and benchmarks compare the two). CheckMemory refuses a layer
// whose work would not fit before it starts.
//
// Compute is the per-task arithmetic of the sharded pipeline (quantize.LayerCompute: a group's
// Hessian partial on one calibration shard, a layer's forward on one shard, a group's GPTQ
// solve from a merged Hessian; quantize.AWQCompute: AWQ's per-shard statistics, scale-grid
// losses and clipping statistics, and the finish's clipping search, through awq.Arithmetic)
// on the GPU: under quantize.WithCompute, `quantize --device cuda`, `run --device cuda` and
// `worker --device cuda` run calibrated GPTQ and AWQ layers with it; RTN stays on the CPU.
// AWQ's pseudo-quantizer (awq_scaled_quant, awq_clip_search in kernels.cu) rounds exactly as
// libs/awq's half-precision quantizer does, so the candidates' weights and, on the same Gram
// matrices, the clipping bounds are the CPU's bit for bit. A group compared through its one
// linear (o_proj, down_proj) sums its scale-grid losses from the input's Gram matrix. Under
// Options.AWQHalf the grid runs as llm-awq's fp16 forward does: half-precision products, the
// MLP's intermediates in half, and the attention by flash_attention (tensor-core mma on half
// q, k, v, an online softmax in float32, no scores in memory). Compute
// also stages a one-shard AWQ job's activations on the device from layer to layer
// (quantize.AWQStager), as OpenStages does for GPTQ, and compiles its kernels ahead (Warm,
// quantize.Warmer).
//
// Evaluate is quantize.Evaluate on the GPU (`eval --device cuda`): the whole forward pass,
// final norm, lm_head and log-softmax NLL on the device, each decoder layer uploaded once per
// group of windows that fits.
package llamacuda
