// Package llamacuda runs the decoder layers of libs/transformer (Llama, Mistral, Qwen2,
// Qwen3) on an NVIDIA GPU in float32 and quantizes them with GPTQ there.
//
// A Layer holds one decoder layer's weights on the device (UploadLayer); Forward runs it on
// device activations (Tensor) with an optional Hook that sees each linear group's input on
// the device, so that gptqcuda.Hessian.AddDevice consumes it without a copy. Projections are
// cuBLAS SGEMMs with TF32 off; RMSNorm, RoPE, causal GQA attention (online softmax, sliding
// window), SwiGLU and residual adds are NVRTC kernels from kernels.cu, compiled with
// --fmad=false so that elementwise arithmetic rounds like the Go runtime's.
//
// QuantizeLayer is the GPU counterpart of quantize.QuantizeLayer's GPTQ path and returns the
// same quantize.LayerResult. This package imports libs/quantize for that type, so quantize
// cannot call it: a worker holding a GPU calls llamacuda.QuantizeLayer for calibrated GPTQ
// layers (CheckMemory tells it beforehand whether the layer and its calibration set fit) and
// quantize.QuantizeLayer otherwise (RTN, AWQ, no GPU).
package llamacuda
