package gptq

import "quantfleet.dev/libs/transformer"

// gemm is C = alpha·op(A)·op(B) + beta·C on row-major float32 matrices (the runtime's
// multi-threaded kernel).
var gemm = transformer.Gemm
