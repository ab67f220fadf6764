// Package gptqcuda runs the GPTQ core of libs/gptq on an NVIDIA GPU through package cuda (no
// cgo), returning the same gptq.Result.
//
// What runs where:
//
//   - Hessian: H = 2/n·Σ x xᵀ as in libs/gptq (n = samples), chunks of 2048 tokens multiplied
//     by cuBLAS SSYRK in IEEE float32 (no TF32) and added by a kernel to a float64 sum on the
//     device. Inputs come from host memory (Add) or device memory (AddDevice).
//   - Prepare (once per input, shared by q/k/v and gate/up): the diagonal is read back to
//     find dead columns, the damping mean and the act-order permutation on the host; the
//     permuted, reversed, damped matrix is built on the device and factored by libs/gptq's
//     float32 recursion (cuBLAS SGEMM for the off-diagonal blocks, one thread block per
//     128-order diagonal block in float64), giving U, the upper Cholesky factor of the
//     inverse, in one factorization and one triangular inverse. A failed factorization
//     (non-positive pivot or non-finite inverse) raises the damping by DampStep, as on the CPU.
//   - Quantize (per linear): group grids (dynamic at each group start from the partially
//     updated weight, static, or per row) by a warp-per-row kernel; the lazy block loop with a
//     kernel quantizing the block's ≤128 columns with in-block error feedback (one warp per
//     row, columns in registers) and an SGEMM for the trailing update; codes put back in the
//     original column order on the device. The quantizer's float32 arithmetic matches
//     quantizer.go operation by operation (kernels compiled with --fmad=false).
//
// Codes are not bit-identical to the CPU's: summation orders differ, and GPTQ turns a tiny
// difference into a different, equally good code now and then. The tests require the loss
// within 1%, ≥ 99% equal codes and the same output error relative to round-to-nearest.
package gptqcuda
