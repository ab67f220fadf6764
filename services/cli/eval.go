package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"go.uber.org/zap"

	"quantfleet.dev/libs/cuda/llamacuda"
	"quantfleet.dev/libs/device"
	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/perplexity"
	"quantfleet.dev/libs/progress"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/transformer"
)

// evalResult is the result of `quantfleet eval`.
type evalResult struct {
	Model      string  `json:"model"`
	Data       string  `json:"data"`
	Ctx        int     `json:"ctx"`
	Windows    int     `json:"windows"`
	Tokens     int     `json:"tokens"`
	Perplexity float64 `json:"perplexity"`
	MeanNLL    float64 `json:"mean_nll"`
	Seconds    float64 `json:"seconds"`
	Device     string  `json:"device"`
	GPU        string  `json:"gpu,omitempty"`
}

// runEval measures perplexity: the data file is split on "\n\f\n", documents are stripped and
// encoded as [BOS]+ids and concatenated; window i is tokens [i·ctx, (i+1)·ctx]; perplexity is
// exp of the mean NLL of all ctx predictions of windows 0..N-1. GPTQ and AWQ directories are
// read through their files, dequantized as the loaders do.
func runEval(ctx context.Context, env Env, args []string) error {
	var c common
	var dev deviceFlag
	var model, data string
	var ctxLen, windows int
	fs := newFlagSet("eval", env)
	c.register(fs)
	fs.StringVar(&model, "model", "", "model directory: Hugging Face, GPTQ or AWQ checkpoint (required)")
	fs.StringVar(&data, "data", "", "text file (documents separated by \\n\\f\\n) or JSONL with a \"text\" field (required)")
	fs.IntVar(&ctxLen, "ctx", 512, "tokens scored per window")
	fs.IntVar(&windows, "windows", 400, "number of windows")
	dev.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	verb, err := c.parse()
	if err != nil {
		return err
	}
	switch {
	case model == "":
		return usagef("--model is required")
	case data == "":
		return usagef("--data is required")
	case ctxLen < 1 || windows < 1:
		return usagef("--ctx %d and --windows %d must be positive", ctxLen, windows)
	}
	if st, err := os.Stat(model); err != nil || !st.IsDir() {
		return usagef("model %s is not a directory", model)
	}
	if _, err := os.Stat(data); err != nil {
		return usageError{err}
	}
	log := logger(env, verb, c.json)
	defer log.Sync()
	d, err := dev.open(ctx, env, log)
	if err != nil {
		return err
	}
	defer d.Close()
	rep := reporter(env, verb, c.json)
	start := time.Now()
	started := false
	req := quantize.EvalRequest{ModelDir: model, DataPath: data, Ctx: ctxLen, Windows: windows,
		Progress: func(done, total int) {
			if !started {
				rep.Start("evaluate", int64(total), progress.Unit("windows"))
				started = true
			}
			rep.Update("", int64(done))
		}}
	gpu := d.IsGPU()
	if gpu {
		// A model the GPU forward pass does not run: auto evaluates it on the CPU, cuda refuses.
		if cfg, err := transformer.ReadConfig(model); err == nil {
			if err := llamacuda.Supports(cfg); err != nil {
				if dev.spec.Kind == device.CUDA {
					return usageError{err}
				}
				log.Warn("evaluating on the CPU", zap.Error(err))
				gpu = false
			}
		}
	}
	var r *perplexity.Result
	if gpu {
		r, err = llamacuda.Evaluate(ctx, d.GPU, req)
	} else {
		r, err = quantize.Evaluate(ctx, req)
	}
	if err != nil {
		if started {
			rep.Error(err)
		}
		return dataUsage(err)
	}
	rep.Finish(fmt.Sprintf("perplexity %.4f", r.Perplexity))
	res := evalResult{Model: model, Data: data, Ctx: ctxLen, Windows: windows, Tokens: r.Tokens,
		Perplexity: r.Perplexity, MeanNLL: r.MeanNLL, Seconds: math.Round(time.Since(start).Seconds()*10) / 10,
		Device: "cpu"}
	if gpu {
		res.Device, res.GPU = d.Name(), d.GPUName()
	}
	return printResult(env, c.json, res, func(w io.Writer) {
		fmt.Fprintf(w, "perplexity %.4f  (%d windows × %d tokens, mean NLL %.6f, %.1f s)\n", res.Perplexity, windows, ctxLen, res.MeanNLL, res.Seconds)
	})
}

// dataUsage marks errors in the user's data (too short, unreadable) as usage errors.
func dataUsage(err error) error {
	if fault.BadInput(err) || errors.Is(err, os.ErrNotExist) {
		return usageError{err}
	}
	return err
}
