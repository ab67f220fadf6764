package quantize

import (
	"context"
	"fmt"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/hfquant"
)

// GPTQRequest is one local GPTQ (or round-to-nearest) quantization.
type GPTQRequest struct {
	Request
	// Config: bits, group size, sym, act-order, static groups, damping. Config.V1Zeros is
	// forced on for asymmetric grids (the "gptq" v1 format stores zero−1).
	Config gptq.Config
	// RTN rounds to nearest without calibration (no calibration data needed).
	RTN bool
}

// GPTQ quantizes the model layer by layer with GPTQ (or RTN) and writes a Hugging Face
// checkpoint in the "gptq" (v1) format that transformers, vLLM, GPTQModel and AutoGPTQ
// load. The returned record's quantization_metadata holds bits, group_size, sym, desc_act,
// the damping used (per layer, and the maximum), and the calibration settings.
func GPTQ(ctx context.Context, req GPTQRequest) (*domain.QuantizedModel, error) {
	return layered(ctx, req.Request, LayerConfig{Method: hfquant.GPTQ, GPTQ: req.Config, RTN: req.RTN},
		fmt.Sprintf("%dbit", req.Config.Bits), domain.FormatGPTQ)
}
