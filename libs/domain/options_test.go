package domain_test

import (
	"errors"
	"strings"
	"testing"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/fault"
)

func TestValidateLayers(t *testing.T) {
	gptq, awq := domain.DefaultConfig(domain.FormatGPTQ, "4bit"), domain.DefaultConfig(domain.FormatAWQ, "4bit")
	calibrated := func(c domain.QuantizationConfig) domain.QuantizationConfig { c.CalibrationDataPath = "c.txt"; return c }
	for _, tc := range []struct {
		name string
		cfg  domain.QuantizationConfig
		o    domain.LayerOptions
		want string // "" valid
	}{
		{"gptq calibrated", calibrated(gptq), domain.LayerOptions{SeqLen: 16, Damp: 0.01, Sym: true, ActOrder: true}, ""},
		{"gptq rtn", gptq, domain.LayerOptions{RTN: true, Sym: true}, ""},
		{"awq calibrated", calibrated(awq), domain.LayerOptions{SeqLen: 16, DuoScaling: true}, ""},
		{"seqlen", calibrated(gptq), domain.LayerOptions{Damp: 0.01}, "seqlen 0 must be positive"},
		{"offset", gptq, domain.LayerOptions{RTN: true, CalibrationOffset: -2}, "calibration_offset -2 must not be negative"},
		{"damp 0", calibrated(gptq), domain.LayerOptions{SeqLen: 16}, "damp 0 must be in (0, 1)"},
		{"damp 1", calibrated(gptq), domain.LayerOptions{SeqLen: 16, Damp: 1}, "damp 1 must be in (0, 1)"},
		{"gptq duo", calibrated(gptq), domain.LayerOptions{SeqLen: 16, Damp: 0.01, DuoScaling: true}, "duo_scaling applies to awq only"},
		{"awq sym", calibrated(awq), domain.LayerOptions{SeqLen: 16, Sym: true}, "asymmetrically"},
		{"awq act order", calibrated(awq), domain.LayerOptions{SeqLen: 16, ActOrder: true}, "act_order applies to gptq only"},
		{"awq static groups", calibrated(awq), domain.LayerOptions{SeqLen: 16, StaticGroups: true}, "static_groups applies to gptq only"},
		{"awq damp", calibrated(awq), domain.LayerOptions{SeqLen: 16, Damp: 0.01}, "damp applies to gptq only"},
		{"awq rtn", awq, domain.LayerOptions{RTN: true}, "rtn applies to gptq only"},
		{"rtn act order", gptq, domain.LayerOptions{RTN: true, ActOrder: true}, "rtn uses no calibration"},
		{"rtn with data", calibrated(gptq), domain.LayerOptions{RTN: true}, "rtn uses no calibration"},
		{"gptq without data", gptq, domain.LayerOptions{SeqLen: 16, Damp: 0.01}, "gptq needs calibration text"},
		{"awq without data", awq, domain.LayerOptions{SeqLen: 16}, "awq needs calibration text"},
		{"gguf", domain.DefaultConfig(domain.FormatGGUF, "Q4_K_M"), domain.LayerOptions{}, "takes no gptq/awq options"},
		{"config first", domain.DefaultConfig(domain.FormatGPTQ, "5bit"), domain.LayerOptions{RTN: true}, "5bit"},
	} {
		err := tc.cfg.ValidateLayers(tc.o)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		case err != nil && !(errors.Is(err, domain.ErrInvalidConfig) && errors.Is(err, fault.ErrBadInput)):
			t.Errorf("%s: %v is not invalid config and bad input", tc.name, err)
		}
	}
}
