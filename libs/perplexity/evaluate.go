package perplexity

import (
	"context"
	"fmt"
	"math"

	"quantfleet.dev/libs/transformer"
)

// Result is the outcome of an evaluation.
type Result struct {
	Perplexity float64   // exp(MeanNLL)
	MeanNLL    float64   // mean negative log-likelihood per scored token (nats)
	WindowNLL  []float64 // mean NLL of each window
	Tokens     int       // scored predictions
}

// Options tunes an evaluation.
type Options struct {
	// BatchWindows is the number of windows run through each layer at once. 0 picks a batch
	// whose hidden states take about 64 MiB.
	BatchWindows int
	// Progress, if not nil, is called after each batch with the windows done so far.
	Progress func(done, total int)
}

// Evaluate returns the perplexity of m on windows (each ctx+1 tokens, see WindowsOf).
// Windows go through the model in batches, one decoder layer at a time.
func Evaluate(ctx context.Context, m *transformer.Model, windows [][]int, progress func(done, total int)) (float64, error) {
	r, err := EvaluateWith(ctx, m, windows, Options{Progress: progress})
	if err != nil {
		return 0, err
	}
	return r.Perplexity, nil
}

// EvaluateWith is Evaluate with options and per-window results.
func EvaluateWith(ctx context.Context, m *transformer.Model, windows [][]int, opt Options) (*Result, error) {
	if len(windows) == 0 {
		return nil, fmt.Errorf("perplexity: no windows")
	}
	width := len(windows[0])
	if width < 2 {
		return nil, fmt.Errorf("perplexity: windows of %d tokens score nothing", width)
	}
	for i, w := range windows {
		if len(w) != width {
			return nil, fmt.Errorf("perplexity: window %d has %d tokens, window 0 has %d", i, len(w), width)
		}
	}
	batch := opt.BatchWindows
	if batch <= 0 {
		per := 2 * (width - 1) * m.Config.HiddenSize * 4 // input and output hidden states
		batch = max(1, (64<<20)/per)
	}
	res := &Result{WindowNLL: make([]float64, len(windows))}
	var sum float64
	for lo := 0; lo < len(windows); lo += batch {
		hi := min(len(windows), lo+batch)
		nll, err := m.SequenceNLL(ctx, windows[lo:hi])
		if err != nil {
			return nil, fmt.Errorf("perplexity: windows %d..%d: %w", lo, hi-1, err)
		}
		for i, v := range nll {
			res.WindowNLL[lo+i] = v / float64(width-1)
			sum += v
		}
		if opt.Progress != nil {
			opt.Progress(hi, len(windows))
		}
	}
	res.Tokens = len(windows) * (width - 1)
	res.MeanNLL = sum / float64(res.Tokens)
	res.Perplexity = math.Exp(res.MeanNLL)
	return res, nil
}
