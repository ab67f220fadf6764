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
// QuantizeLayer is the GPU counterpart of quantize.QuantizeLayer's GPTQ path.
package llamacuda
