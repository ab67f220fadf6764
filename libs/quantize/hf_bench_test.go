package quantize

import (
	"context"
	"path/filepath"
	"testing"

	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/perplexity"
	"quantfleet.dev/libs/tokenizer"
)

// BenchmarkForwardTinyLlama measures the perplexity workload on tiny-llama: 8 windows of
// 512 tokens through every layer (loaded per batch, as in evaluation) and the NLL of every
// position. tokens/s counts scored tokens.
func BenchmarkForwardTinyLlama(b *testing.B) {
	sh := shared(b)
	dir := filepath.Join(sh, "models", "tiny-llama")
	tok, err := tokenizer.Load(dir)
	if err != nil {
		b.Fatal(err)
	}
	docs, err := perplexity.LoadDocuments(filepath.Join(sh, "data", "eval.txt"))
	if err != nil {
		b.Fatal(err)
	}
	windows, err := perplexity.Windows(tok, docs, 512, 8)
	if err != nil {
		b.Fatal(err)
	}
	m, err := OpenModel(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	for b.Loop() {
		if _, err := perplexity.EvaluateWith(context.Background(), m, windows, perplexity.Options{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(windows)*512*b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkCalibratedTinyLlama measures whole GPTQ and AWQ jobs on tiny-llama with the
// acceptance calibration (128 samples × 512 tokens of calib.txt, 4 bits, group 128,
// asymmetric): calibration, every layer, writing and validating the checkpoint. Each
// iteration takes from half a minute (GPTQ) to several minutes (AWQ) on 2 cores; run it with
// -benchtime 1x.
func BenchmarkCalibratedTinyLlama(b *testing.B) {
	sh := shared(b)
	req := Request{ModelDir: filepath.Join(sh, "models", "tiny-llama"), ModelName: "tiny-llama",
		CalibrationData: filepath.Join(sh, "data", "calib.txt"), CalibrationSamples: 128, SeqLen: 512, OutputDir: b.TempDir()}
	ctx := context.Background()
	b.Run("gptq-4bit-act-order", func(b *testing.B) {
		for b.Loop() {
			if _, err := GPTQ(ctx, GPTQRequest{Request: req, Config: gptq.Config{Bits: 4, GroupSize: 128, ActOrder: true}}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/job")
	})
	b.Run("awq-4bit", func(b *testing.B) {
		for b.Loop() {
			if _, err := AWQ(ctx, AWQRequest{Request: req, Config: DefaultAWQConfig()}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/job")
	})
}
