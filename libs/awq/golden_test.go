package awq

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"slices"
	"testing"

	"quantfleet.dev/libs/transformer"
)

var update = flag.Bool("update", false, "rewrite testdata/quantize_layer.json")

// golden is what testdata/quantize_layer.json records of QuantizeLayer on testLayer: the
// discrete choices (ratios, clip bounds) and a digest of the whole result. It was written by
// the monolithic implementation that preceded the shard API, so this test shows that
// re-expressing QuantizeLayer on the shard functions changed nothing.
type golden struct {
	Kernel string // transformer.KernelName() of the recording machine
	Cases  map[string]goldenCase
}

type goldenCase struct {
	Ratios []float64
	Losses [][]float64
	Clips  map[string][]float32
	Digest string
}

func goldenConfigs() map[string]Config {
	return map[string]Config{
		"duo":            {ClipTokens: 128},
		"plain+identity": {PlainScaling: true, KeepIdentity: true, ClipTokens: 128},
		"group64-3bit":   {Bits: 3, GroupSize: 64, ClipTokens: 100},
	}
}

func TestQuantizeLayerGolden(t *testing.T) {
	tl := newTestLayer(11, 128, 256, 600)
	got := golden{Kernel: transformer.KernelName(), Cases: map[string]goldenCase{}}
	for name, cfg := range goldenConfigs() {
		l := tl.layer(0, tl.tokens)
		r, err := QuantizeLayer(context.Background(), l, cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c := goldenCase{Clips: r.Clips, Digest: digest(l, r)}
		for _, s := range r.Scales {
			c.Ratios = append(c.Ratios, s.Ratio)
			c.Losses = append(c.Losses, s.Losses)
		}
		got.Cases[name] = c
	}
	const path = "testdata/quantize_layer.json"
	if *update {
		b, err := json.MarshalIndent(got, "", "\t")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want golden
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	for name, w := range want.Cases {
		g := got.Cases[name]
		// The choices must not change anywhere; the bytes only where the matrix-product
		// kernel rounds like the recording machine's.
		if !slices.Equal(g.Ratios, w.Ratios) {
			t.Errorf("%s: ratios %v, want %v", name, g.Ratios, w.Ratios)
		}
		for lin, wc := range w.Clips {
			if !slices.Equal(g.Clips[lin], wc) {
				t.Errorf("%s: clip bounds of %s differ", name, lin)
			}
		}
		if len(g.Clips) != len(w.Clips) {
			t.Errorf("%s: %d clipped linears, want %d", name, len(g.Clips), len(w.Clips))
		}
		if got.Kernel != want.Kernel {
			t.Logf("%s: kernel %s, golden recorded with %s: digest not compared", name, got.Kernel, want.Kernel)
			continue
		}
		if g.Digest != w.Digest {
			t.Errorf("%s: digest %s, want %s", name, g.Digest, w.Digest)
		}
		for i := range w.Losses {
			if !slices.Equal(g.Losses[i], w.Losses[i]) {
				t.Errorf("%s: group %d losses %v, want %v", name, i, g.Losses[i], w.Losses[i])
			}
		}
	}
}
