// Package cuda is a minimal CUDA backend for CGO_ENABLED=0 builds: it loads the driver API
// (libcuda.so.1), NVRTC and cuBLAS at run time with purego (dlopen) instead of linking them, so
// the same binary runs on machines with and without a GPU.
//
// # Finding the libraries
//
// Each library is looked up, first match wins, in:
//
//  1. $QUANTFLEET_CUDA_LIB_DIR
//  2. the entries of $LD_LIBRARY_PATH
//  3. /usr/local/cuda/lib64, /usr/local/cuda/targets/x86_64-linux/lib,
//     /usr/lib/x86_64-linux-gnu, /usr/local/nvidia/lib64
//  4. the lib directories of pip's nvidia-* wheels (PyTorch's CUDA):
//     /opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib, /usr/local/lib/python3*/dist-packages/nvidia/*/lib, ...
//  5. the system loader's own path (ld.so.cache), by soname
//
// with the names libcuda.so.1; libnvrtc.so.13, .so.12, .so; libcublas.so.13, .so.12, .so.
// libnvrtc-builtins and libcublasLt are loaded from the same directory first, so that a
// directory not on the loader's path works. A library that is not found, a driver that fails
// cuInit, or no device is an error wrapping ErrUnavailable (bad input: a command asked for a
// GPU this machine does not have), in one line naming what is missing. Failed CUDA calls are
// *Error values carrying the library's name of the code (CUDA_ERROR_OUT_OF_MEMORY,
// NVRTC_ERROR_COMPILATION, CUBLAS_STATUS_...).
//
// A binary that imports this package is still built without cgo but is dynamically linked
// against glibc (dlopen needs the system loader); it does not run in a scratch container.
// Built with -tags nocuda, the package does not import purego and every binary stays static;
// then every library "is not found" with the reason (ErrUnavailable: built without CUDA
// support), so --device auto means the CPU and --device cuda exits 2. The Dockerfile builds
// its images that way unless asked for the GPU worker.
//
// # What it offers
//
// Open gives a Device (name, compute capability, free/total memory) with its primary context;
// every call makes that context current on a locked OS thread, so any goroutine may use it.
// All work goes to the legacy default stream, in issue order. Buffers are device memory with
// typed Upload/Download; uploads of 64 MiB and more go through two page-locked buffers of the
// device (staging.go), two to three times the driver's pageable copy rate. Device.Module
// compiles CUDA C++ source with NVRTC to a CUBIN for the device's architecture (PTX when
// NVRTC does not know it) once per process, cached by source hash, options and compute
// capability, and loads it once per device; Function.Launch starts a kernel. Device.BLAS is a
// cuBLAS handle with row-major SGEMM and SSYRK in IEEE float32 (TF32 off, as the GPTQ
// reference requires).
//
// Package gptqcuda (libs/cuda/gptqcuda) runs the GPTQ core on this backend, package llamacuda
// (libs/cuda/llamacuda) the decoder layers, GPTQ layer quantization, the sharded pipeline's
// per-task arithmetic of GPTQ and AWQ (Compute) and perplexity evaluation. Package device (libs/device) turns
// --device auto|cpu|cuda into an opened Device.
//
// # Tests on a GPU machine
//
// make test-gpu builds the test binaries into bin/gpu-tests/ (and runs them with -test.short,
// which skips without a GPU). Carry bin/ to the GPU machine and run, from the repository root,
// with tiny-llama and the calibration text (eval.txt is looked for beside calib.txt):
//
//	export QUANTFLEET_TINY_LLAMA=/path/tiny-llama QUANTFLEET_CALIB=/path/calib.txt
//	bin/gpu-tests/cuda.test -test.v
//	bin/gpu-tests/device.test -test.v
//	bin/gpu-tests/gptqcuda.test -test.v
//	bin/gpu-tests/llamacuda.test -test.v -test.timeout 30m
//	bin/gpu-tests/cli.test -test.v -test.run 'TestDevice'
//
// Each comparison prints a line starting PASS or FAIL with its measure and bound, and timings.
// llamacuda's TestEvalTinyLlama (GPU vs CPU perplexity ≤ 1e-4), TestEvalGPTQTinyLlama (a
// GPU-quantized checkpoint: eval agreement, perplexity within 1% of the CPU-quantized one,
// determinism), TestComputeTinyLlama (Compute vs the CPU arithmetic per shard and group),
// TestAWQComputeTinyLlama (AWQ's per-shard statistics, scale-grid losses, picks and clipping
// vs the CPU), TestAWQTinyLlama (a GPU-quantized AWQ checkpoint: perplexity within 0.2% of the
// CPU-quantized one, determinism), TestQuantizeTinyLlama and TestLlama8BLayer (timing) are the
// acceptance runs; cli.test's TestDeviceCUDA and TestDeviceCUDAAWQ run quantize, run and eval
// --device cuda through the command line.
package cuda
