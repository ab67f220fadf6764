package awq

import (
	"bytes"
	"context"
	"encoding"
	"maps"
	"testing"
)

// recording is an Arithmetic that delegates to another and counts the calls.
type recording struct {
	inner Arithmetic
	calls map[string]int
}

func (r *recording) AbsSums(ctx context.Context, group int) ([]float64, error) {
	r.calls["AbsSums"]++
	return r.inner.AbsSums(ctx, group)
}

func (r *recording) Losses(ctx context.Context, group int, cands [][]float32, cfg Config) ([]float64, int64, error) {
	r.calls["Losses"]++
	return r.inner.Losses(ctx, group, cands, cfg)
}

func (r *recording) Gram(ctx context.Context, linear string, first, step int, s []float32, gs int) ([]float32, int64, error) {
	r.calls["Gram"]++
	return r.inner.Gram(ctx, linear, first, step, s, gs)
}

func (r *recording) SearchClip(ctx context.Context, lin *Linear, gram []float32, n int, cfg Config) ([]float32, error) {
	r.calls["SearchClip"]++
	return r.inner.SearchClip(ctx, lin, gram, n, cfg)
}

// TestArithmeticReplacesInputs runs every step of the shard API on a shard through
// Layer.Arithmetic, on a layer without Inputs and Inspect functions (as a GPU's task builds
// it), and expects the same bytes as the host path on the layer with them: the steps take
// everything that reads activations from the Arithmetic, and the partials depend on nothing
// else. Every method must be used, and the clip stats must ask for one Gram matrix per scaling
// group (gate and up share theirs).
func TestArithmeticReplacesInputs(t *testing.T) {
	ctx := context.Background()
	cfg := Config{PlainScaling: true, ClipTokens: 7}
	tl := newTestLayer(3, 128, 256, 96)
	off, n := 32, 40
	sh := Shard{Offset: off, Total: tl.tokens}
	host := tl.layer(off, n)
	_, groups, _, err := host.prepare(cfg, &sh)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recording{inner: host.arithmetic(groups), calls: map[string]int{}}
	dev := tl.layer(off, n)
	dev.Inputs, dev.Arithmetic = nil, rec
	for i := range dev.Groups {
		dev.Groups[i].Inspect = nil
	}
	same := func(what string, a, b encoding.BinaryMarshaler) {
		t.Helper()
		ba, err := a.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		bb, err := b.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ba, bb) {
			t.Errorf("%s: the Arithmetic's partial differs from the host's", what)
		}
	}

	stH, err := CollectStats(host, sh, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stD, err := CollectStats(dev, sh, cfg)
	if err != nil {
		t.Fatal(err)
	}
	same("stats", stD, stH)
	// Complete stats and losses for the later steps: this shard's, re-spanned as all tokens.
	whole := Shard{Total: n}
	stats, err := CollectStats(host, whole, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lH, err := CollectScaleLosses(ctx, host, sh, stats, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lD, err := CollectScaleLosses(ctx, dev, sh, stats, cfg)
	if err != nil {
		t.Fatal(err)
	}
	same("scale losses", lD, lH)
	losses, err := CollectScaleLosses(ctx, host, whole, stats, cfg)
	if err != nil {
		t.Fatal(err)
	}
	scales, err := PickScales(host, stats, losses, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cH, err := CollectClipStats(host, sh, scales, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cD, err := CollectClipStats(dev, sh, scales, cfg)
	if err != nil {
		t.Fatal(err)
	}
	same("clip stats", cD, cH)
	grams := rec.calls["Gram"]

	clip, err := CollectClipStats(host, whole, scales, cfg)
	if err != nil {
		t.Fatal(err)
	}
	fin := func(a Arithmetic) string {
		l := tl.layer(0, tl.tokens)
		l.Inputs, l.Tokens, l.Arithmetic = nil, 0, a
		r, err := FinishLayer(ctx, l, scales, clip, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return digest(l, r)
	}
	if fin(rec) != fin(nil) {
		t.Error("FinishLayer through the Arithmetic differs from the host's")
	}

	clipped := len(dev.clipped(cfg))
	if want := map[string]int{"AbsSums": len(groups), "Losses": len(groups), "Gram": grams, "SearchClip": clipped}; !maps.Equal(rec.calls, want) || grams >= clipped {
		t.Errorf("Arithmetic calls %v, want %v with fewer Gram matrices than the %d clipped linears", rec.calls, want, clipped)
	}
}
