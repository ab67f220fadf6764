package quantize

import (
	"context"
	"fmt"

	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/perplexity"
	"quantfleet.dev/libs/tokenizer"
	"quantfleet.dev/libs/transformer"
)

// OpenModel opens a model directory for inference: an unquantized Hugging Face checkpoint,
// or a GPTQ/AWQ checkpoint whose quantized linears are read back from the files and
// dequantized with the loaders' formulas (hfquant.Open). Close the model when done.
func OpenModel(dir string) (*transformer.Model, error) {
	cfg, err := transformer.ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	c, err := hfquant.Open(dir)
	if err != nil {
		return nil, err
	}
	return transformer.New(cfg, c), nil
}

// EvalRequest is a perplexity evaluation with the protocol of package perplexity.
type EvalRequest struct {
	ModelDir string
	DataPath string
	// Ctx is the window length (predictions per window), Windows the number of windows.
	Ctx, Windows int
	Progress     func(done, total int)
}

// Evaluate returns the perplexity of the model in ModelDir (quantized or not) on windows
// 0..Windows-1 of the data (documents stripped, each encoded as [BOS]+ids, concatenated;
// window i is tokens [i·Ctx, (i+1)·Ctx]).
func Evaluate(ctx context.Context, req EvalRequest) (*perplexity.Result, error) {
	return EvaluateWith(ctx, req, perplexity.EvaluateWith)
}

// ModelEvaluator runs the windows through a loaded model: perplexity.EvaluateWith on the host,
// or a GPU's equivalent.
type ModelEvaluator func(ctx context.Context, m *transformer.Model, windows [][]int, opt perplexity.Options) (*perplexity.Result, error)

// EvaluateWith is Evaluate with the forward pass of eval: the documents, windows and model
// files are read the same way whatever runs them.
func EvaluateWith(ctx context.Context, req EvalRequest, eval ModelEvaluator) (*perplexity.Result, error) {
	docs, err := perplexity.LoadDocuments(req.DataPath)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.Load(req.ModelDir)
	if err != nil {
		return nil, err
	}
	windows, err := perplexity.Windows(tok, docs, req.Ctx, req.Windows)
	if err != nil {
		return nil, err
	}
	m, err := OpenModel(req.ModelDir)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	r, err := eval(ctx, m, windows, perplexity.Options{Progress: req.Progress})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", req.ModelDir, err)
	}
	return r, nil
}
