package llamacuda

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"quantfleet.dev/libs/awq"
	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/transformer"
)

// BenchmarkAWQLayer times AWQ's steps as `quantize` runs them (the inputs staged on the device,
// then the capture, statistics, scale-grid losses per group, clipping statistics, the clipping
// search and the layer's result) on layer 0 of the Llama checkpoint at
// $QUANTFLEET_AWQ_BENCH_MODEL (bench-gpu.sh's synthetic Llama-3-8B) with 128×2048 N(0, 1)
// inputs, with the projections in TF32 and the scale grid's in half precision, in TF32 only,
// and in float32 (Options): where a layer's seconds go (the clipping search on the device and
// the host's quantization apart: quantize runs the latter beside the next layer's capture).
// QUANTFLEET_AWQ_BENCH_OPTIONS=half,tf32 picks some of them. With -test.benchtime 2x the first
// iteration shows the device's cold costs (first allocations, libraries' lazy loading) beside warm ones.
//
//	QUANTFLEET_AWQ_BENCH_MODEL=/tmp/qfm llamacuda.test -test.run '^$' -test.bench AWQLayer -test.benchtime 1x
func BenchmarkAWQLayer(b *testing.B) {
	dir := os.Getenv("QUANTFLEET_AWQ_BENCH_MODEL")
	if dir == "" {
		b.Skip("set QUANTFLEET_AWQ_BENCH_MODEL to a Llama checkpoint")
	}
	d := openGPU(b)
	ctx := context.Background()
	m, err := transformer.Load(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	x := randTensor(rand.New(rand.NewPCG(1, 7)), 128, 2048, m.Config.HiddenSize, 1)
	cfg := quantize.DefaultAWQConfig()
	cfg.Bits, cfg.GroupSize = 4, 128
	sh := awq.Shard{Offset: 0, Total: x.Rows()}
	for range b.N {
		for _, o := range []struct {
			name string
			opt  Options
		}{{"half", Options{TF32: true, AWQHalf: true}}, {"tf32", Options{TF32: true}}, {"fp32", Options{}}} {
			if only := os.Getenv("QUANTFLEET_AWQ_BENCH_OPTIONS"); only != "" && !slices.Contains(strings.Split(only, ","), o.name) {
				continue
			}
			c := &Compute{D: d, Options: o.opt}
			t0 := time.Now()
			l, err := m.Layer(0)
			if err != nil {
				b.Fatal(err)
			}
			fmt.Printf("%s %-28s %7.2fs\n", o.name, "load weights (host)", time.Since(t0).Seconds())
			var total time.Duration
			step := func(name string, f func() error) {
				t0 := time.Now()
				if err := f(); err != nil {
					b.Fatalf("%s: %v", name, err)
				}
				if err := d.Synchronize(ctx); err != nil {
					b.Fatal(err)
				}
				el := time.Since(t0)
				total += el
				fmt.Printf("%s %-28s %7.2fs\n", o.name, name, el.Seconds()) // now, not at the end: a run cut short still tells
			}
			var (
				st      quantize.AWQStage
				al      *awq.Layer
				release func()
				stats   *awq.Stats
				losses  *awq.ScaleLosses
				scales  []*awq.Scales
				clip    *awq.ClipStats
			)
			step("stage inputs (once a job)", func() (err error) {
				st, err = c.StageAWQ(ctx, l, x)
				return err
			})
			total = 0 // a job's, not a layer's
			step("upload, capture, outputs", func() (err error) {
				al, release, err = st.Layer(ctx, l, true)
				if err == nil {
					al.Arithmetic = timedLosses{al.Arithmetic, d, o.name}
				}
				return err
			})
			step("statistics (a)", func() (err error) {
				stats, err = awq.CollectStats(al, sh, cfg)
				return err
			})
			step("scale-grid losses (b)", func() (err error) {
				losses, err = awq.CollectScaleLosses(ctx, al, sh, stats, cfg)
				return err
			})
			step("pick scales", func() (err error) {
				scales, err = awq.PickScales(al, stats, losses, cfg)
				return err
			})
			step("clipping statistics (c)", func() (err error) {
				clip, err = awq.CollectClipStats(al, sh, scales, cfg)
				return err
			})
			var clipped *awq.Clipped
			step("clipping search (l, device)", func() (err error) {
				clipped, err = awq.ClipLayer(ctx, al, scales, clip, cfg)
				return err
			})
			step("quantize (l, host)", func() error {
				_, err := clipped.Quantize(ctx)
				return err
			})
			release()
			st.Close()
			l.Release()
			fmt.Printf("%s %-28s %7.2fs\n", o.name, "layer", total.Seconds())
		}
	}
}

// timedLosses prints the time of each scale-grid group's Losses (which group the grid's
// seconds go to).
type timedLosses struct {
	awq.Arithmetic
	d    *cuda.Device
	name string
}

func (t timedLosses) Losses(ctx context.Context, group int, cands [][]float32, cfg awq.Config) ([]float64, int64, error) {
	t0 := time.Now()
	sums, n, err := t.Arithmetic.Losses(ctx, group, cands, cfg)
	if err == nil {
		err = t.d.Synchronize(ctx)
	}
	fmt.Printf("%s   grid group %d, %d candidates %13.2fs\n", t.name, group, len(cands), time.Since(t0).Seconds())
	return sums, n, err
}
