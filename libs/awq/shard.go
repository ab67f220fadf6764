package awq

import (
	"context"
	"fmt"
	"math"
	"slices"
)

// The sharded decomposition of QuantizeLayer (SHARDS.md): the calibration tokens of a layer
// are split into shards, each shard contributes additive partial results to the three steps
// that read activations (activation statistics, scale-search losses, clipping statistics),
// and the partials are merged in token order, so the result is a function of the shard
// boundaries only, never of which worker ran which shard or when.

// Shard locates the calibration tokens a Layer holds (Layer.Tokens of them) among all the
// calibration tokens of the layer. Shards must not split a calibration sample when an
// Inspect function mixes tokens (attention), since Inspect runs on the shard's tokens alone.
type Shard struct {
	// Offset is the global index of the Layer's first token.
	Offset int
	// Total is the number of calibration tokens of all shards together. The clipping search
	// samples every max(1, Total/ClipTokens)-th global token, so each shard must know it.
	Total int
}

// Whole is the shard holding all of l's tokens: the monolithic case.
func Whole(l *Layer) Shard { return Shard{Total: l.Tokens} }

func (sh Shard) span(tokens int) (span, error) {
	if tokens <= 0 || sh.Offset < 0 || sh.Offset+tokens > sh.Total {
		return span{}, fmt.Errorf("%w: shard of %d tokens at offset %d of %d", ErrShape, tokens, sh.Offset, sh.Total)
	}
	return span{sh.Offset, tokens, sh.Total}, nil
}

// span is the token range [off, off+n) out of total that a partial result covers.
type span struct{ off, n, total int }

// Span returns the calibration tokens the partial result covers: [offset, offset+tokens)
// out of total. A merged result is complete when offset is 0 and tokens equals total.
func (s span) Span() (offset, tokens, total int) { return s.off, s.n, s.total }

func (s span) complete() bool { return s.off == 0 && s.n == s.total }

func (s span) String() string { return fmt.Sprintf("tokens [%d, %d) of %d", s.off, s.off+s.n, s.total) }

// mergeSpans checks that spans are consecutive, in order and start at token 0, and returns
// their union. Starting at 0 makes every way of merging a run of shards (all at once, or a
// merged prefix with the next shards) add the same numbers in the same order: the merged
// bytes do not depend on how the merges are grouped.
func mergeSpans(spans []span) (span, error) {
	if len(spans) == 0 {
		return span{}, fmt.Errorf("%w: nothing to merge", ErrPartial)
	}
	if spans[0].off != 0 {
		return span{}, fmt.Errorf("%w: merge starts at token %d, not 0 (partials must be merged in shard order from the first)", ErrPartial, spans[0].off)
	}
	m := span{0, 0, spans[0].total}
	for _, s := range spans {
		if s.total != m.total || s.off != m.n {
			return span{}, fmt.Errorf("%w: %v does not follow %v (partials must be merged in shard order)", ErrPartial, s, m)
		}
		m.n += s.n
	}
	return m, nil
}

// partial is what mergePartials needs of a partial result T (Stats, ScaleLosses, ClipStats):
// its span (embedded), a check that it may be merged with the first partial, a deep copy to
// start the merge from, and adding a later partial into it.
type partial[T any] interface {
	*T
	tokens() span
	setTokens(span)
	matches(first *T) error
	clone() *T
	add(later *T)
}

func (s span) tokens() span      { return s }
func (s *span) setTokens(v span) { *s = v }

// mergePartials adds partials in the order given, which must be shard order from the first
// shard (see mergeSpans): a copy of the first plus each later one, so the float64 sums are
// added in one fixed order.
func mergePartials[T any, P partial[T]](parts []P) (P, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: nothing to merge", ErrPartial)
	}
	spans := make([]span, len(parts))
	for i, p := range parts {
		if p == nil {
			return nil, fmt.Errorf("%w: partial %d is nil", ErrPartial, i)
		}
		if err := p.matches(parts[0]); err != nil {
			return nil, err
		}
		spans[i] = p.tokens()
	}
	sp, err := mergeSpans(spans)
	if err != nil {
		return nil, err
	}
	m := P(parts[0].clone())
	for _, p := range parts[1:] {
		m.add(p)
	}
	m.setTokens(sp)
	return m, nil
}

// sameShape reports whether two [group][i] sum tables have the same shape, naming the first
// group that differs.
func sameShape(a, b [][]float64) (group int, ok bool) {
	if len(a) != len(b) {
		return -1, false
	}
	for g := range a {
		if len(a[g]) != len(b[g]) {
			return g, false
		}
	}
	return 0, true
}

// addInto adds src into dst element by element (same shape).
func addInto(dst, src []float64) {
	for i, v := range src {
		dst[i] += v
	}
}

func cloneRows(rows [][]float64) [][]float64 {
	out := make([][]float64, len(rows))
	for i, r := range rows {
		out[i] = slices.Clone(r)
	}
	return out
}

// Stats is a partial result of step 1: per scaling group and input channel, the sum of |x|
// over the covered tokens (float64, summed token by token in order within a shard), and per
// group the number of input rows summed (the tokens, or those routed to an expert).
type Stats struct {
	span
	sums   [][]float64 // [group][channel]
	counts []int64     // [group]
}

// CollectStats is step 1 on one shard: it sums |x| per channel of every group's input.
func CollectStats(l *Layer, sh Shard, cfg Config) (*Stats, error) {
	_, groups, sp, err := l.prepare(cfg, &sh)
	if err != nil {
		return nil, err
	}
	st := &Stats{span: sp}
	ar := l.arithmetic(groups)
	for i := range groups {
		sums, err := ar.AbsSums(context.Background(), i)
		if err != nil {
			return nil, err
		}
		if len(sums) != groups[i].Linears[0].Cols {
			return nil, fmt.Errorf("%w: %d channel sums for group %d of %d channels", ErrShape, len(sums), i, groups[i].Linears[0].Cols)
		}
		st.sums = append(st.sums, sums)
		st.counts = append(st.counts, int64(groups[i].Tokens))
	}
	return st, nil
}

// MergeStats adds partial statistics in the order given, which must be shard order from the
// first shard (see mergeSpans).
func MergeStats(parts []*Stats) (*Stats, error) { return mergePartials(parts) }

func (st *Stats) matches(first *Stats) error {
	if len(st.counts) != len(first.counts) {
		return fmt.Errorf("%w: merging stats of %d and %d group counts", ErrPartial, len(first.counts), len(st.counts))
	}
	if g, ok := sameShape(first.sums, st.sums); !ok {
		if g < 0 {
			return fmt.Errorf("%w: merging stats of %d and %d groups", ErrPartial, len(first.sums), len(st.sums))
		}
		return fmt.Errorf("%w: merging stats of group %d with %d and %d channels", ErrPartial, g, len(first.sums[g]), len(st.sums[g]))
	}
	return nil
}

func (st *Stats) clone() *Stats {
	return &Stats{span: st.span, sums: cloneRows(st.sums), counts: slices.Clone(st.counts)}
}

func (st *Stats) add(later *Stats) {
	for g := range st.sums {
		addInto(st.sums[g], later.sums[g])
		st.counts[g] += later.counts[g]
	}
}

// means returns the mean |x| per channel of every group (llm-awq get_act_scale), from
// complete statistics that match the layer's groups.
func (st *Stats) means(groups []Group) ([][]float64, error) {
	if st == nil {
		return nil, fmt.Errorf("%w: no stats", ErrPartial)
	}
	if !st.complete() {
		return nil, fmt.Errorf("%w: stats cover %v, not all tokens", ErrPartial, st.span)
	}
	if len(st.sums) != len(groups) || len(st.counts) != len(groups) {
		return nil, fmt.Errorf("%w: stats of %d groups for a layer of %d", ErrPartial, len(st.sums), len(groups))
	}
	out := make([][]float64, len(groups))
	for i, g := range groups {
		if len(st.sums[i]) != g.Linears[0].Cols {
			return nil, fmt.Errorf("%w: stats of %d channels for group %d of %d", ErrPartial, len(st.sums[i]), i, g.Linears[0].Cols)
		}
		out[i] = make([]float64, len(st.sums[i]))
		if st.counts[i] == 0 { // an expert no token reached: PickScales keeps it unscaled
			continue
		}
		for c, v := range st.sums[i] {
			out[i][c] = v / float64(st.counts[i])
		}
	}
	return out, nil
}

// ScaleLosses is a partial result of step 2: per scaling group and scale candidate, the sum
// of squared output errors over the covered tokens (float64), and the number of output
// values summed. The candidates are the identity first if Config.KeepIdentity, then the grid
// r = k/Grid, k = 0..Grid−1.
type ScaleLosses struct {
	span
	key    uint64      // of the Stats and Config the candidates were made from
	sums   [][]float64 // [group][candidate]
	counts []int64     // [group]
}

// CollectScaleLosses is step 2 on one shard: for every group it evaluates the group's
// Inspect function on the shard's tokens with the original weights and with every scale
// candidate, the candidates being derived from the complete merged stats of step 1 and the
// original weights. The layer is not modified.
func CollectScaleLosses(ctx context.Context, l *Layer, sh Shard, stats *Stats, cfg Config) (*ScaleLosses, error) {
	cfg, groups, sp, err := l.prepare(cfg, &sh)
	if err != nil {
		return nil, err
	}
	xMeans, err := stats.means(groups)
	if err != nil {
		return nil, err
	}
	key, err := scaleKey(stats, cfg)
	if err != nil {
		return nil, err
	}
	sl := &ScaleLosses{span: sp, key: key}
	ar := l.arithmetic(groups)
	for i, g := range groups {
		cands, _ := candidates(xMeans[i], g, cfg)
		sums, n, err := ar.Losses(ctx, i, cands, cfg)
		if err != nil {
			return nil, err
		}
		sl.sums = append(sl.sums, sums)
		sl.counts = append(sl.counts, n)
	}
	return sl, nil
}

// MergeScaleLosses adds partial losses in the order given, which must be shard order from
// the first shard (see mergeSpans).
func MergeScaleLosses(parts []*ScaleLosses) (*ScaleLosses, error) { return mergePartials(parts) }

func (sl *ScaleLosses) matches(first *ScaleLosses) error {
	if sl.key != first.key || len(sl.sums) != len(first.sums) || len(sl.counts) != len(first.counts) {
		return fmt.Errorf("%w: merging scale losses of different stats, config or groups", ErrPartial)
	}
	if g, ok := sameShape(first.sums, sl.sums); !ok {
		return fmt.Errorf("%w: merging %d and %d losses of group %d", ErrPartial, len(first.sums[g]), len(sl.sums[g]), g)
	}
	return nil
}

func (sl *ScaleLosses) clone() *ScaleLosses {
	return &ScaleLosses{span: sl.span, key: sl.key, sums: cloneRows(sl.sums), counts: slices.Clone(sl.counts)}
}

func (sl *ScaleLosses) add(later *ScaleLosses) {
	for g := range sl.sums {
		addInto(sl.sums[g], later.sums[g])
		sl.counts[g] += later.counts[g]
	}
}

// PickScales ends step 2: from the complete merged stats and losses it picks, per group,
// the candidate of least mean squared error (the first on ties, never a NaN), as SearchScale
// does. The Scales are a pure function of the layer's original weights, stats, losses and
// cfg, so every worker of step 3 can compute them itself instead of reading them from
// storage. It must run before FinishLayer modifies the weights.
func PickScales(l *Layer, stats *Stats, losses *ScaleLosses, cfg Config) ([]*Scales, error) {
	cfg, groups, _, err := l.prepare(cfg, nil)
	if err != nil {
		return nil, err
	}
	xMeans, err := stats.means(groups)
	if err != nil {
		return nil, err
	}
	key, err := scaleKey(stats, cfg)
	if err != nil {
		return nil, err
	}
	switch {
	case losses == nil:
		return nil, fmt.Errorf("%w: no scale losses", ErrPartial)
	case !losses.complete():
		return nil, fmt.Errorf("%w: scale losses cover %v, not all tokens", ErrPartial, losses.span)
	case losses.key != key:
		return nil, fmt.Errorf("%w: scale losses were computed from other stats or another config", ErrPartial)
	case len(losses.sums) != len(groups):
		return nil, fmt.Errorf("%w: scale losses of %d groups for a layer of %d", ErrPartial, len(losses.sums), len(groups))
	}
	out := make([]*Scales, len(groups))
	for i, g := range groups {
		cands, ratios := candidates(xMeans[i], g, cfg)
		if len(losses.sums[i]) != len(cands) {
			return nil, fmt.Errorf("%w: %d losses for %d candidates of group %d", ErrPartial, len(losses.sums[i]), len(cands), i)
		}
		if out[i], err = pickScale(cands, ratios, losses.sums[i], losses.counts[i]); err != nil {
			return nil, fmt.Errorf("group %d (after %s): %w", i, l.Groups[i].Prev, err)
		}
	}
	return out, nil
}

// ClipStats is a partial result of step 3: for every clippable linear, the Gram matrix of
// each input column group over the covered tokens that the clipping search samples (inputs
// divided by the group's scales), and the number of sampled tokens. The search's loss of a
// bound is a quadratic form of this Gram matrix, so the Gram matrices are the shards' whole
// contribution, and their size does not grow with the linear's rows.
type ClipStats struct {
	span
	key     uint64 // of the Scales the inputs were divided by
	step    int    // the global sampling step
	gs      int    // columns per group
	linears []clipGram
}

type clipGram struct {
	name    string
	cols    int
	samples int64
	gram    []float64 // [group][gs][gs]
}

// CollectClipStats is step 3 on one shard: for every linear that the clipping search
// covers (none with Config.NoClip), it samples the shard's tokens whose global index is a
// multiple of max(1, Total/ClipTokens), divides them by the scales of the linear's group
// (from PickScales), and accumulates the Gram matrices.
func CollectClipStats(l *Layer, sh Shard, scales []*Scales, cfg Config) (*ClipStats, error) {
	cfg, groups, sp, err := l.prepare(cfg, &sh)
	if err != nil {
		return nil, err
	}
	inputScale, err := l.inputScales(groups, scales)
	if err != nil {
		return nil, err
	}
	cs := &ClipStats{span: sp, key: scalesKey(scales), step: max(1, sh.Total/cfg.ClipTokens), gs: cfg.GroupSize}
	if cfg.NoClip {
		return cs, nil
	}
	globalFirst := (cs.step - sp.off%cs.step) % cs.step
	// Linears that share an input and its scales (gate and up: one group) share one Gram matrix;
	// the experts of a group over a block's input each read their own routed tokens.
	source := map[string]string{}
	for _, lg := range l.Groups {
		for _, name := range lg.Linears {
			if lg.Input == "" {
				source[name] = lg.Linears[0]
			}
		}
	}
	done := map[string]clipGram{}
	ar := l.arithmetic(groups)
	for _, name := range l.clipped(cfg) {
		lin, src := l.Linears[name], name
		if s, ok := source[name]; ok {
			src = s
		}
		if cg, ok := done[src]; ok {
			cs.linears = append(cs.linears, clipGram{name, cg.cols, cg.samples, cg.gram})
			continue
		}
		cg := clipGram{name: name, cols: lin.Cols}
		// Tokens are sampled every step-th of all the shards' tokens. An input of its own rows
		// (the tokens routed to an expert) is sampled as AutoAWQ samples it, every
		// max(1, rows/ClipTokens)-th row, but of the shard's rows: its rows' global positions
		// are not known to the shard, and one shard gives AutoAWQ's samples.
		first, step, rows := globalFirst, cs.step, sp.n
		if n, ok := l.Rows[name]; ok {
			first, step, rows = 0, max(1, n/cfg.ClipTokens), n
		}
		if first < rows {
			g32, n, err := ar.Gram(context.Background(), name, first, step, inputScale[name], cfg.groupSize(lin.Cols))
			if err != nil {
				return nil, err
			}
			cg.samples = n
			cg.gram = make([]float64, len(g32))
			for i, v := range g32 {
				cg.gram[i] = float64(v)
			}
		} else {
			cg.gram = make([]float64, lin.Cols*cfg.groupSize(lin.Cols))
		}
		done[src] = cg
		cs.linears = append(cs.linears, cg)
	}
	return cs, nil
}

// MergeClipStats adds partial clipping statistics in the order given, which must be shard
// order from the first shard (see mergeSpans).
func MergeClipStats(parts []*ClipStats) (*ClipStats, error) { return mergePartials(parts) }

func (cs *ClipStats) matches(first *ClipStats) error {
	if cs.key != first.key || cs.step != first.step || cs.gs != first.gs || len(cs.linears) != len(first.linears) {
		return fmt.Errorf("%w: merging clip stats of different scales, config or linears", ErrPartial)
	}
	for j, cg := range cs.linears {
		if cg.name != first.linears[j].name || len(cg.gram) != len(first.linears[j].gram) {
			return fmt.Errorf("%w: merging clip stats of %s with %s", ErrPartial, first.linears[j].name, cg.name)
		}
	}
	return nil
}

func (cs *ClipStats) clone() *ClipStats {
	m := &ClipStats{span: cs.span, key: cs.key, step: cs.step, gs: cs.gs}
	for _, cg := range cs.linears {
		m.linears = append(m.linears, clipGram{name: cg.name, cols: cg.cols, samples: cg.samples, gram: slices.Clone(cg.gram)})
	}
	return m
}

func (cs *ClipStats) add(later *ClipStats) {
	for j := range cs.linears {
		cs.linears[j].samples += later.linears[j].samples
		addInto(cs.linears[j].gram, later.linears[j].gram)
	}
}

// FinishLayer is step 4, which reads no activations: it folds the scales into the layer
// (linears scaled in half precision, prev norms and linears divided), searches every
// clippable linear's bounds on the complete merged clip stats and applies them, and
// quantizes every linear. It modifies l's weights and norms in place; l.Inputs and l.Tokens
// are not used. clip may be nil with Config.NoClip. It is ClipLayer then Clipped.Quantize.
func FinishLayer(ctx context.Context, l *Layer, scales []*Scales, clip *ClipStats, cfg Config) (*LayerResult, error) {
	c, err := ClipLayer(ctx, l, scales, clip, cfg)
	if err != nil {
		return nil, err
	}
	return c.Quantize(ctx)
}

// Clipped is a layer between FinishLayer's two halves: scales folded, clipping bounds searched
// (the half that uses the layer's Arithmetic), the bounds not yet applied and nothing
// quantized (host work alone, which may run while the Arithmetic's device goes on to another
// layer).
type Clipped struct {
	l   *Layer
	cfg Config
	res *LayerResult
}

// ClipLayer is FinishLayer's first half: the checks, the folding and the clipping search.
func ClipLayer(ctx context.Context, l *Layer, scales []*Scales, clip *ClipStats, cfg Config) (*Clipped, error) {
	cfg, groups, _, err := l.prepare(cfg, nil)
	if err != nil {
		return nil, err
	}
	if _, err := l.inputScales(groups, scales); err != nil {
		return nil, err
	}
	names := l.clipped(cfg)
	if len(names) > 0 {
		switch {
		case clip == nil:
			return nil, fmt.Errorf("%w: no clip stats", ErrPartial)
		case !clip.complete():
			return nil, fmt.Errorf("%w: clip stats cover %v, not all tokens", ErrPartial, clip.span)
		case clip.key != scalesKey(scales) || clip.gs != cfg.GroupSize || clip.step != max(1, clip.total/cfg.ClipTokens):
			return nil, fmt.Errorf("%w: clip stats were computed with other scales or another config", ErrPartial)
		case len(clip.linears) != len(names):
			return nil, fmt.Errorf("%w: clip stats of %d linears for %d clipped linears", ErrPartial, len(clip.linears), len(names))
		}
		for i, name := range names {
			if cg := clip.linears[i]; cg.name != name || cg.cols != l.Linears[name].Cols || cg.samples < 0 {
				return nil, fmt.Errorf("%w: clip stats of %s (%d columns, %d samples) for %s", ErrPartial, cg.name, cg.cols, cg.samples, name)
			}
		}
	}

	res := &LayerResult{Quantized: map[string]*Result{}, Clips: map[string][]float32{}, Scales: scales}
	if err := l.fold(groups, scales); err != nil {
		return nil, err
	}

	for i, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		lin, cg := l.Linears[name], clip.linears[i]
		if cg.samples == 0 { // an expert no calibration token reached: nothing to clip on
			continue
		}
		g32 := make([]float32, len(cg.gram))
		for j, v := range cg.gram {
			g32[j] = float32(v)
		}
		m, err := l.arithmetic(groups).SearchClip(ctx, lin, g32, int(cg.samples), cfg)
		if err != nil {
			return nil, fmt.Errorf("clipping %s: %w", name, err)
		}
		res.Clips[name] = m // applied by Quantize: each search reads its own linear only
	}
	return &Clipped{l: l, cfg: cfg, res: res}, nil
}

// Quantize is FinishLayer's second half: every linear clipped to its bounds and quantized.
func (c *Clipped) Quantize(ctx context.Context) (*LayerResult, error) {
	l, res := c.l, c.res
	for name, m := range res.Clips {
		if err := ApplyClip(l.Linears[name], m, c.cfg.groupSize(l.Linears[name].Cols)); err != nil {
			return nil, err
		}
	}
	for name, lin := range l.Linears {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		q, err := Quantize(lin.Weight, lin.Rows, lin.Cols, c.cfg)
		if err != nil {
			return nil, fmt.Errorf("quantizing %s: %w", name, err)
		}
		res.Quantized[name] = q
	}
	return res, nil
}

// FoldScales folds the scales of every group into l, as FinishLayer does before clipping and
// quantizing: the group's linears scaled in half precision, its prev norm or linear divided. The
// layer then computes what it computed before, up to half-precision rounding, which is what
// tests of a layout's groups check.
func (l *Layer) FoldScales(scales []*Scales, cfg Config) error {
	_, groups, _, err := l.prepare(cfg, nil)
	if err != nil {
		return err
	}
	if _, err := l.inputScales(groups, scales); err != nil {
		return err
	}
	return l.fold(groups, scales)
}

// fold folds checked scales into the layer (FoldScales).
func (l *Layer) fold(groups []Group, scales []*Scales) error {
	for i, lg := range l.Groups {
		s := scales[i].S
		if n, ok := l.Norms[lg.Prev]; ok {
			if err := FoldIntoNorm(n.Weight, n.Bias, s); err != nil {
				return fmt.Errorf("folding into %s: %w", lg.Prev, err)
			}
		} else if err := FoldIntoLinear(l.Linears[lg.Prev], s); err != nil {
			return err
		}
		for _, lin := range groups[i].Linears {
			if err := ScaleColumns(lin, s); err != nil {
				return err
			}
		}
		for _, name := range lg.Dense {
			if err := ScaleColumns(l.Dense[name], s); err != nil {
				return err
			}
		}
	}
	return nil
}

// inputScales checks scales against the layer's groups and returns, per scaled linear, the
// scales its input is divided by.
func (l *Layer) inputScales(groups []Group, scales []*Scales) (map[string][]float32, error) {
	if len(scales) != len(groups) {
		return nil, fmt.Errorf("%w: %d scales for %d groups", ErrShape, len(scales), len(groups))
	}
	m := map[string][]float32{}
	for i, lg := range l.Groups {
		if scales[i] == nil || len(scales[i].S) != groups[i].Linears[0].Cols {
			return nil, fmt.Errorf("%w: scales of group %d (after %s) do not match its %d input features", ErrShape, i, lg.Prev, groups[i].Linears[0].Cols)
		}
		for _, name := range lg.Linears {
			m[name] = scales[i].S
		}
	}
	return m, nil
}

// clipped returns the names of the linears that the clipping search covers, sorted.
func (l *Layer) clipped(cfg Config) []string {
	if cfg.NoClip {
		return nil
	}
	var names []string
	for name := range l.Linears {
		if Clippable(name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// candidates returns the scale candidates of a group, in the order SearchScale evaluates
// them: the identity if KeepIdentity (ratio −1), then r = k/Grid.
func candidates(xMean []float64, g Group, cfg Config) ([][]float32, []float64) {
	var cands [][]float32
	var ratios []float64
	if cfg.KeepIdentity {
		ones := make([]float32, len(xMean))
		for i := range ones {
			ones[i] = 1
		}
		cands, ratios = append(cands, ones), append(ratios, -1)
	}
	var wMean []float64 // duo scaling's only: a pass over every weight of the group
	if !cfg.PlainScaling {
		wMean = weightMean(g.Linears, cfg.groupSize(g.Linears[0].Cols))
	}
	for k := 0; k < cfg.Grid; k++ {
		r := float64(k) / float64(cfg.Grid)
		cands, ratios = append(cands, gridScales(xMean, wMean, r, !cfg.PlainScaling)), append(ratios, r)
	}
	return cands, ratios
}

// pickScale returns the candidate of least loss sum/count, the first on ties. A group whose
// compared module saw no token (an expert no calibration token was routed to; AutoAWQ stops
// there) keeps its weights unscaled: the identity, ratio −1, loss 0.
func pickScale(cands [][]float32, ratios, sums []float64, count int64) (*Scales, error) {
	if count == 0 {
		ones := make([]float32, len(cands[0]))
		for i := range ones {
			ones[i] = 1
		}
		return &Scales{S: ones, Ratio: -1, IdentityLoss: math.NaN()}, nil
	}
	res := &Scales{Ratio: math.NaN(), Loss: math.Inf(1), IdentityLoss: math.NaN()}
	for k, sum := range sums {
		loss := sum / float64(count)
		if ratios[k] < 0 {
			res.IdentityLoss = loss
		} else {
			res.Losses = append(res.Losses, loss)
		}
		if loss < res.Loss {
			res.S, res.Ratio, res.Loss = cands[k], ratios[k], loss
		}
	}
	if res.S == nil {
		return nil, fmt.Errorf("%w: every scale candidate gave loss NaN or Inf (%v)", ErrNonFinite, res.Losses)
	}
	return res, nil
}
