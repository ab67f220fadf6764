package awq

import (
	"bytes"
	"context"
	"encoding"
	"errors"
	"reflect"
	"slices"
	"testing"
)

// roundTrip stores p the way a worker writes it to object storage and reads it back.
func roundTrip[T any, P interface {
	*T
	encoding.BinaryMarshaler
	encoding.BinaryUnmarshaler
}](t *testing.T, p P) P {
	t.Helper()
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var v T
	q := P(&v)
	if err := q.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if b2, _ := q.MarshalBinary(); !bytes.Equal(b, b2) {
		t.Fatal("marshal, unmarshal, marshal changed the bytes")
	}
	return q
}

// shardRun holds the merged partials of a sharded run of one layer.
type shardRun struct {
	stats  *Stats
	losses *ScaleLosses
	clip   *ClipStats
	layer  *Layer
	res    *LayerResult
}

// runShards runs the shard API on tl split into shards of the given sizes as the fleet
// would: every step of every shard on a fresh copy of the layer holding only that shard's
// tokens, every partial through its binary form, merges in shard order (prefixMerge merges
// one shard at a time onto the merged prefix instead of all at once), and the last step on
// a fresh copy of the weights without inputs.
func runShards(t *testing.T, tl *testLayer, sizes []int, cfg Config, prefixMerge bool) *shardRun {
	t.Helper()
	ctx := context.Background()
	type shard struct {
		sh  Shard
		off int
		n   int
	}
	var shards []shard
	off := 0
	for _, n := range sizes {
		shards = append(shards, shard{Shard{Offset: off, Total: tl.tokens}, off, n})
		off += n
	}
	if off != tl.tokens {
		t.Fatalf("shard sizes %v sum to %d, not %d", sizes, off, tl.tokens)
	}
	merge := func(n int, mergeFn func(lo, hi int) error) {
		if !prefixMerge {
			if err := mergeFn(0, n); err != nil {
				t.Fatal(err)
			}
			return
		}
		for hi := 1; hi <= n; hi++ {
			if err := mergeFn(hi-1, hi); err != nil {
				t.Fatal(err)
			}
		}
	}
	run := &shardRun{}

	var stats []*Stats
	for _, s := range shards {
		p, err := CollectStats(tl.layer(s.off, s.n), s.sh, cfg)
		if err != nil {
			t.Fatal(err)
		}
		stats = append(stats, roundTrip(t, p))
	}
	merge(len(stats), func(lo, hi int) (err error) {
		parts := stats[lo:hi]
		if run.stats != nil {
			parts = append([]*Stats{run.stats}, parts...)
		}
		run.stats, err = MergeStats(parts)
		return err
	})
	run.stats = roundTrip(t, run.stats)

	var losses []*ScaleLosses
	for _, s := range shards {
		p, err := CollectScaleLosses(ctx, tl.layer(s.off, s.n), s.sh, run.stats, cfg)
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, roundTrip(t, p))
	}
	merge(len(losses), func(lo, hi int) (err error) {
		parts := losses[lo:hi]
		if run.losses != nil {
			parts = append([]*ScaleLosses{run.losses}, parts...)
		}
		run.losses, err = MergeScaleLosses(parts)
		return err
	})
	run.losses = roundTrip(t, run.losses)

	var clips []*ClipStats
	for _, s := range shards {
		l := tl.layer(s.off, s.n)
		scales, err := PickScales(l, run.stats, run.losses, cfg)
		if err != nil {
			t.Fatal(err)
		}
		p, err := CollectClipStats(l, s.sh, scales, cfg)
		if err != nil {
			t.Fatal(err)
		}
		clips = append(clips, roundTrip(t, p))
	}
	merge(len(clips), func(lo, hi int) (err error) {
		parts := clips[lo:hi]
		if run.clip != nil {
			parts = append([]*ClipStats{run.clip}, parts...)
		}
		run.clip, err = MergeClipStats(parts)
		return err
	})
	run.clip = roundTrip(t, run.clip)

	run.layer = tl.layer(0, tl.tokens)
	run.layer.Inputs, run.layer.Tokens = nil, 0 // the last step reads no activations
	for i := range run.layer.Groups {
		run.layer.Groups[i].Inspect = nil
	}
	scales, err := PickScales(run.layer, run.stats, run.losses, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if run.res, err = FinishLayer(ctx, run.layer, scales, run.clip, cfg); err != nil {
		t.Fatal(err)
	}
	return run
}

// TestShardsMatchQuantizeLayer runs the shard API with 1, 2, 3 and more shards of various
// sizes, against QuantizeLayer on all tokens. One shard sums in the same order as
// QuantizeLayer, so its result must be byte-identical; more shards add the same terms
// grouped by shard, which may move the float64 loss sums and the float32 Gram matrices in
// their last bits, so the picks (ratios, clip bounds) must agree and the codes nearly all.
func TestShardsMatchQuantizeLayer(t *testing.T) {
	tl := newTestLayer(11, 128, 256, 330)
	splits := [][]int{
		{330},
		{165, 165},
		{110, 110, 110},
		{1, 328, 1},
		{7, 93, 50, 80, 100},
	}
	for name, cfg := range goldenConfigs() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			shardsMatch(t, tl, name, cfg, splits)
		})
	}
}

func shardsMatch(t *testing.T, tl *testLayer, name string, cfg Config, splits [][]int) {
	{
		l := tl.layer(0, tl.tokens)
		want, err := QuantizeLayer(context.Background(), l, cfg)
		if err != nil {
			t.Fatal(err)
		}
		wantDigest := digest(l, want)
		step := max(1, tl.tokens/cfg.ClipTokens)
		for _, sizes := range splits {
			run := runShards(t, tl, sizes, cfg, false)
			got := run.res
			// Every globally sampled token is counted once, whatever the shards.
			for _, cg := range run.clip.linears {
				if want := int64((tl.tokens + step - 1) / step); cg.samples != want {
					t.Errorf("%s %v: %s sampled %d tokens, want %d", name, sizes, cg.name, cg.samples, want)
				}
			}
			if d := digest(run.layer, got); len(sizes) == 1 && d != wantDigest {
				t.Errorf("%s %v: one shard differs from QuantizeLayer", name, sizes)
			}
			for i, s := range got.Scales {
				if s.Ratio != want.Scales[i].Ratio {
					t.Errorf("%s %v: group %d ratio %v, want %v", name, sizes, i, s.Ratio, want.Scales[i].Ratio)
				}
			}
			for lin, m := range want.Clips {
				if !slices.Equal(got.Clips[lin], m) {
					t.Errorf("%s %v: clip bounds of %s differ", name, sizes, lin)
				}
			}
			var codes, diff int
			for lin, q := range want.Quantized {
				for i, c := range got.Quantized[lin].QWeight {
					codes++
					if c != q.QWeight[i] {
						diff++
					}
				}
			}
			t.Logf("%s %v: %d of %d codes differ from QuantizeLayer; same bytes: %t", name, sizes, diff, codes, digest(run.layer, got) == wantDigest)
			if diff > codes/10000 {
				t.Errorf("%s %v: %d of %d codes differ from QuantizeLayer", name, sizes, diff, codes)
			}
			// Merging one shard at a time onto the merged prefix gives the same bytes as
			// merging all at once: the fleet may merge as shards arrive.
			if len(sizes) >= 5 {
				inc := runShards(t, tl, sizes, cfg, true)
				if digest(inc.layer, inc.res) != digest(run.layer, got) {
					t.Errorf("%s %v: prefix merges differ from one merge", name, sizes)
				}
				for _, pair := range [][2]encoding.BinaryMarshaler{{inc.stats, run.stats}, {inc.losses, run.losses}, {inc.clip, run.clip}} {
					a, _ := pair[0].MarshalBinary()
					b, _ := pair[1].MarshalBinary()
					if !bytes.Equal(a, b) {
						t.Errorf("%s %v: prefix-merged %T differs", name, sizes, pair[0])
					}
				}
			}
		}
	}
}

// TestPartialRoundTrip checks that every partial survives its binary form unchanged and that
// damaged bytes are rejected.
func TestPartialRoundTrip(t *testing.T) {
	tl := newTestLayer(3, 128, 256, 90)
	cfg := Config{ClipTokens: 20}
	run := runShards(t, tl, []int{40, 50}, cfg, false)
	for _, tc := range []struct {
		name string
		p    interface {
			encoding.BinaryMarshaler
			encoding.BinaryUnmarshaler
		}
		fresh   func() encoding.BinaryUnmarshaler
		countAt int // offset of the first count after the header and span
	}{
		{"stats", run.stats, func() encoding.BinaryUnmarshaler { return new(Stats) }, 30},
		{"losses", run.losses, func() encoding.BinaryUnmarshaler { return new(ScaleLosses) }, 38},
		{"clip", run.clip, func() encoding.BinaryUnmarshaler { return new(ClipStats) }, 54},
	} {
		b, err := tc.p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		v := tc.fresh()
		if err := v.UnmarshalBinary(b); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(v, tc.p) {
			t.Errorf("%s: round trip changed the value", tc.name)
		}
		bad := map[string][]byte{
			"empty":     nil,
			"truncated": b[:len(b)-1],
			"trailing":  append(slices.Clone(b), 0),
			"magic":     append([]byte("AWQX"), b[4:]...),
			"version":   append(append(slices.Clone(b[:5]), 9), b[6:]...),
		}
		// A count far beyond the data must fail without a huge allocation.
		huge := slices.Clone(b)
		for i := tc.countAt; i < tc.countAt+8; i++ {
			huge[i] = 0x7f
		}
		bad["count"] = huge
		for what, bb := range bad {
			if err := tc.fresh().UnmarshalBinary(bb); !errors.Is(err, ErrPartial) {
				t.Errorf("%s %s: error %v, want ErrPartial", tc.name, what, err)
			}
		}
	}
	// Kinds are not interchangeable.
	b, _ := run.stats.MarshalBinary()
	if err := new(ClipStats).UnmarshalBinary(b); !errors.Is(err, ErrPartial) {
		t.Errorf("stats decoded as clip stats: %v", err)
	}
}

// TestMergeOrder checks that merges only accept consecutive shards in order from the first,
// that incomplete merges are not used, and that partials of other stats or scales are
// rejected.
func TestMergeOrder(t *testing.T) {
	ctx := context.Background()
	tl := newTestLayer(5, 128, 256, 60)
	cfg := Config{ClipTokens: 16}
	var parts []*Stats
	for _, s := range [][2]int{{0, 20}, {20, 15}, {35, 25}} {
		p, err := CollectStats(tl.layer(s[0], s[1]), Shard{Offset: s[0], Total: 60}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	for name, order := range map[string][]int{
		"reversed":  {2, 1, 0},
		"swapped":   {0, 2, 1},
		"gap":       {0, 2},
		"no first":  {1, 2},
		"duplicate": {0, 0, 1, 2},
		"empty":     {},
	} {
		var ps []*Stats
		for _, i := range order {
			ps = append(ps, parts[i])
		}
		if _, err := MergeStats(ps); !errors.Is(err, ErrPartial) {
			t.Errorf("%s: error %v, want ErrPartial", name, err)
		}
	}
	prefix, err := MergeStats(parts[:2])
	if err != nil {
		t.Fatal(err)
	}
	if off, n, total := prefix.Span(); off != 0 || n != 35 || total != 60 {
		t.Errorf("prefix span %d, %d, %d", off, n, total)
	}
	l := tl.layer(0, 60)
	if _, err := CollectScaleLosses(ctx, l, Whole(l), prefix, cfg); !errors.Is(err, ErrPartial) {
		t.Errorf("incomplete stats used: %v", err)
	}
	stats, err := MergeStats(parts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CollectStats(tl.layer(40, 20), Shard{Offset: 50, Total: 60}, cfg); !errors.Is(err, ErrShape) {
		t.Errorf("shard past the total: %v", err)
	}

	losses, err := CollectScaleLosses(ctx, l, Whole(l), stats, cfg)
	if err != nil {
		t.Fatal(err)
	}
	other, err := CollectStats(newTestLayer(6, 128, 256, 60).layer(0, 60), Whole(l), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PickScales(l, other, losses, cfg); !errors.Is(err, ErrPartial) {
		t.Errorf("losses of other stats picked: %v", err)
	}
	if _, err := PickScales(l, stats, losses, Config{ClipTokens: 16, Grid: 10}); !errors.Is(err, ErrPartial) {
		t.Errorf("losses of another grid picked: %v", err)
	}
	scales, err := PickScales(l, stats, losses, cfg)
	if err != nil {
		t.Fatal(err)
	}
	clip, err := CollectClipStats(l, Whole(l), scales, cfg)
	if err != nil {
		t.Fatal(err)
	}
	wrong := slices.Clone(scales)
	wrong[0] = &Scales{S: slices.Clone(scales[0].S)}
	wrong[0].S[0] *= 2
	if _, err := FinishLayer(ctx, tl.layer(0, 60), wrong, clip, cfg); !errors.Is(err, ErrPartial) {
		t.Errorf("clip stats of other scales used: %v", err)
	}
	if _, err := FinishLayer(ctx, tl.layer(0, 60), scales, nil, cfg); !errors.Is(err, ErrPartial) {
		t.Errorf("missing clip stats: %v", err)
	}
	if _, err := FinishLayer(ctx, tl.layer(0, 60), scales, nil, Config{ClipTokens: 16, NoClip: true}); err != nil {
		t.Errorf("NoClip without clip stats: %v", err)
	}
}
