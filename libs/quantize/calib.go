package quantize

import (
	"fmt"
	"quantfleet.dev/libs/fault"

	"quantfleet.dev/libs/perplexity"
)

// DefaultSeqLen is the length in tokens of a calibration sample (--seqlen).
const DefaultSeqLen = 2048

// ErrNoCalibrationData reports a calibrated quantization (GPTQ, AWQ) without calibration text.
var ErrNoCalibrationData = fault.New(fault.ErrBadInput, "calibration data required")

// CalibrationSamples reads the documents of path (text with documents separated by "\n\f\n",
// or JSON Lines with a "text" field) and returns samples first..first+n-1 of seqlen tokens.
//
// The samples are cut exactly like the evaluation windows of package perplexity, so they are
// deterministic and documented: every document is stripped and encoded as [BOS] + ids, the
// encodings are concatenated, and sample i is tokens [i·seqlen, (i+1)·seqlen) of that
// stream. A text too short for n samples is an error naming how many fit.
func CalibrationSamples(tok perplexity.Encoder, path string, seqlen, first, n int) ([][]int, error) {
	if path == "" {
		return nil, ErrNoCalibrationData
	}
	docs, err := perplexity.LoadDocuments(path)
	if err != nil {
		return nil, fmt.Errorf("calibration data: %w", err)
	}
	s, err := perplexity.Samples(tok, docs, seqlen, first, n)
	if err != nil {
		return nil, fmt.Errorf("calibration data %s: %w", path, err)
	}
	return s, nil
}
