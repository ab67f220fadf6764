package quantize

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/transformer"
)

// The sharded pipeline. A calibrated job's samples are cut into a fixed number of shards (set by
// the job's shard size, never by how many workers run it), and each layer's work into tasks that
// read and write objects in a ShardStore. GPTQ layers run true-sequentially (notes §1.8) as a
// Stage of linear groups; for group g of layer L:
//
//	h(L,g,s)  one per shard s: the partial Hessian of the group's input on shard s, from the layer
//	          with the groups g depends on (every earlier one; for a mixture-of-experts layer's
//	          expert, the attention groups and its own gate/up: Stage.After) replaced by their
//	          reconstructed quantized weights;
//	q(L,g)    the partials merged in shard order 0..S-1, then the group's GPTQ solve;
//
// and after the last group x(L+1,s), one per shard: shard s through the quantized layer, the
// activations entering layer L+1. AWQ runs awq's shard API (libs/awq/SHARDS.md) the same way:
//
//	a(L,s)    per shard: |x| statistics of the groups' inputs, and the shard's full-precision
//	          layer outputs, the activations entering layer L+1 (AutoAWQ propagates those);
//	b(L,s)    per shard: the scale-grid losses of every group (statistics merged in shard order);
//	c(L,s)    per shard: the clipping statistics under the picked scales (losses merged);
//	l(L)      the scales picked, clipping searched, the layer quantized (clip stats merged).
//
// RTN runs one task per layer, l(L). `quantfleet quantize` runs Tasks() in order in one
// process; a fleet runs whatever Deps allow on many workers. Both call RunShardTask, so the
// checkpoint is the same bytes whoever ran what.

// DefaultShardSamples is the calibration samples per shard when a job does not set it: 128
// samples make 4 shards. It bounds what one task holds, so memory does not grow with samples.
const DefaultShardSamples = 32

// SampleRange is a shard: calibration samples [Lo, Hi) of the job's set.
type SampleRange struct{ Lo, Hi int }

// ShardRanges cuts samples into ceil(samples/shardSamples) shards of balanced sizes (0:
// DefaultShardSamples).
func ShardRanges(samples, shardSamples int) []SampleRange {
	if shardSamples <= 0 {
		shardSamples = DefaultShardSamples
	}
	if samples <= 0 {
		return nil
	}
	n := (samples + shardSamples - 1) / shardSamples
	out := make([]SampleRange, n)
	for s := range out {
		out[s] = SampleRange{Lo: s * samples / n, Hi: (s + 1) * samples / n}
	}
	return out
}

// ShardOp is what a task of the sharded pipeline does.
type ShardOp int

const (
	// OpLayer quantizes a whole layer (RTN; AWQ over every shard).
	OpLayer ShardOp = iota
	// OpHessian writes the partial Hessian of a linear group's input on one shard.
	OpHessian
	// OpSolve merges a group's partial Hessians and solves its linears.
	OpSolve
	// OpForward writes one shard's activations entering Layer+1 from the quantized layer.
	OpForward
	// OpAWQStats writes one shard's AWQ statistics and the activations entering Layer+1.
	OpAWQStats
	// OpAWQScales writes one shard's AWQ scale-grid losses.
	OpAWQScales
	// OpAWQClip writes one shard's AWQ clipping statistics.
	OpAWQClip
)

// ShardTask is one task of the sharded pipeline; Group and Shard are 0 where the op has none.
type ShardTask struct {
	Op                  ShardOp
	Layer, Group, Shard int
}

// ID names the task: "l0003" (whole layer 3; AWQ's last step), "a0003s002", "b0003s002",
// "c0003s002" (AWQ's statistics, scale losses and clipping statistics of layer 3, shard 2), "h0003g1s002" (Hessian of group 1 of layer 3 on
// shard 2), "q0003g1" (solve of that group), "x0004s002" (shard 2 entering layer 4, the forward
// of layer 3). IDs are NATS tokens.
func (t ShardTask) ID() string {
	switch t.Op {
	case OpHessian:
		return fmt.Sprintf("h%04dg%ds%03d", t.Layer, t.Group, t.Shard)
	case OpSolve:
		return fmt.Sprintf("q%04dg%d", t.Layer, t.Group)
	case OpForward:
		return fmt.Sprintf("x%04ds%03d", t.Layer+1, t.Shard)
	case OpAWQStats:
		return fmt.Sprintf("a%04ds%03d", t.Layer, t.Shard)
	case OpAWQScales:
		return fmt.Sprintf("b%04ds%03d", t.Layer, t.Shard)
	case OpAWQClip:
		return fmt.Sprintf("c%04ds%03d", t.Layer, t.Shard)
	}
	return fmt.Sprintf("l%04d", t.Layer)
}

// Key is the task's result object in the ShardStore: its ID + ".bin". A forward's result is the
// activations it writes (ActivationsKey(Layer+1, Shard)).
func (t ShardTask) Key() string { return t.ID() + ".bin" }

// ActivationsKey holds shard s of the activations entering layer L (layer 0: the calibration
// samples' embeddings, written by WriteShardInputs).
func ActivationsKey(layer, shard int) string { return fmt.Sprintf("x%04ds%03d.bin", layer, shard) }

// Stage is what a calibrated layer solves: linear groups in order, each on its input with the
// groups it depends on already quantized, over the tokens of every shard (for an expert's
// group, the tokens routed to it). A dense decoder layer's groups are q/k/v; o; gate/up; down,
// each after all earlier ones; a mixture-of-experts layer adds two groups per expert (gate/up;
// down) that depend on the attention groups and on each other only, so experts are solved
// independently (transformer.Config.LinearGroups).
type Stage struct {
	Groups [][]string `json:"groups"`
	// After[g] are the groups whose solved weights group g's input passes through; nil: every
	// earlier group (true-sequential).
	After [][]int `json:"after,omitempty"`
}

// GPTQStage is the true-sequential stage of a dense decoder layer (notes §1.8).
func GPTQStage() Stage {
	return Stage{Groups: [][]string{transformer.AttentionInputs, transformer.OutputInputs, transformer.MLPInputs, transformer.DownInputs}}
}

// StageOf is the stage of the decoder layers of a model of config c.
func StageOf(c *transformer.Config) Stage {
	var s Stage
	for _, g := range c.LinearGroups() {
		s.Groups = append(s.Groups, g.Linears)
		s.After = append(s.After, g.After)
	}
	if s.sequential() {
		s.After = nil // the dense default, as plans stored before mixtures of experts spell it
	}
	return s
}

// after lists the groups whose solved weights group g's input depends on.
func (s Stage) after(g int) []int {
	if s.After == nil {
		out := make([]int, g)
		for i := range out {
			out[i] = i
		}
		return out
	}
	return s.After[g]
}

// sequential reports whether every group depends on all earlier ones.
func (s Stage) sequential() bool {
	for g := range s.Groups {
		if s.After != nil && !slices.Equal(s.After[g], Stage{}.after(g)) {
			return false
		}
	}
	return true
}

// check rejects a stage whose dependencies are not earlier groups.
func (s Stage) check() error {
	if s.After != nil && len(s.After) != len(s.Groups) {
		return fmt.Errorf("%w: %d groups, %d dependency lists", ErrLayerConfig, len(s.Groups), len(s.After))
	}
	for g, names := range s.Groups {
		if len(names) == 0 {
			return fmt.Errorf("%w: empty linear group %d", ErrLayerConfig, g)
		}
		for _, d := range s.after(g) {
			if d < 0 || d >= g {
				return fmt.Errorf("%w: group %d depends on group %d", ErrLayerConfig, g, d)
			}
		}
	}
	return nil
}

// ShardPlan is a layered job as tasks: derived from its config, the layers' linear groups, layer
// count and calibration samples alone, so a fleet's planner and workers and the local pipeline
// agree.
type ShardPlan struct {
	Config LayerConfig
	Layers int
	Shards []SampleRange // nil for RTN
	// Linears are the layers' quantized linears as groups, whatever the method.
	Linears Stage
	Stage   Stage // GPTQ's groups (Linears); empty when each layer is one task
}

// NewShardPlan plans a job of cfg over layers decoder layers whose linears are linears (StageOf
// the model's config; zero: GPTQStage) and samples calibration samples, shardSamples per shard
// (0: DefaultShardSamples).
func NewShardPlan(cfg LayerConfig, linears Stage, layers, samples, shardSamples int) (*ShardPlan, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if layers <= 0 || shardSamples < 0 {
		return nil, fmt.Errorf("%w: %d layers, %d samples per shard", ErrLayerConfig, layers, shardSamples)
	}
	if len(linears.Groups) == 0 {
		linears = GPTQStage()
	}
	if err := linears.check(); err != nil {
		return nil, err
	}
	p := &ShardPlan{Config: cfg, Layers: layers, Linears: linears}
	if !cfg.Calibrated() {
		return p, nil
	}
	if samples <= 0 {
		return nil, fmt.Errorf("%w: %d calibration samples", ErrLayerConfig, samples)
	}
	p.Shards = ShardRanges(samples, shardSamples)
	if cfg.Method == hfquant.GPTQ {
		p.Stage = linears
	}
	return p, nil
}

// Staged reports whether layers are split into Hessian, solve and forward tasks.
func (p *ShardPlan) Staged() bool { return len(p.Stage.Groups) > 0 }

// awqSharded reports whether layers are split into AWQ's per-shard steps.
func (p *ShardPlan) awqSharded() bool { return p.Config.Method == hfquant.AWQ && len(p.Shards) > 0 }

// awqSteps are AWQ's per-shard steps of a layer, in order.
var awqSteps = []ShardOp{OpAWQStats, OpAWQScales, OpAWQClip}

// shardsOf lists op's tasks of a layer, one per shard.
func (p *ShardPlan) shardsOf(op ShardOp, layer int) []ShardTask {
	out := make([]ShardTask, len(p.Shards))
	for s := range p.Shards {
		out[s] = ShardTask{Op: op, Layer: layer, Shard: s}
	}
	return out
}

// Tasks lists every task in an order in which each one's Deps come before it: the order the
// local pipeline runs them in.
func (p *ShardPlan) Tasks() []ShardTask {
	var out []ShardTask
	for L := range p.Layers {
		if p.awqSharded() {
			for _, op := range awqSteps {
				out = append(out, p.shardsOf(op, L)...)
			}
		}
		if !p.Staged() {
			out = append(out, ShardTask{Op: OpLayer, Layer: L})
			continue
		}
		for g := range p.Stage.Groups {
			for s := range p.Shards {
				out = append(out, ShardTask{Op: OpHessian, Layer: L, Group: g, Shard: s})
			}
			out = append(out, ShardTask{Op: OpSolve, Layer: L, Group: g})
		}
		if L+1 < p.Layers {
			for s := range p.Shards {
				out = append(out, ShardTask{Op: OpForward, Layer: L, Shard: s})
			}
		}
	}
	return out
}

// Deps are the tasks t reads the results of (the layer-0 inputs are not tasks).
func (p *ShardPlan) Deps(t ShardTask) []ShardTask {
	switch t.Op {
	case OpLayer:
		if p.awqSharded() {
			return p.shardsOf(OpAWQClip, t.Layer)
		}
		return nil // RTN: no inputs
	case OpAWQStats:
		if t.Layer > 0 {
			return []ShardTask{{Op: OpAWQStats, Layer: t.Layer - 1, Shard: t.Shard}}
		}
		return nil
	case OpAWQScales:
		return p.shardsOf(OpAWQStats, t.Layer)
	case OpAWQClip:
		return p.shardsOf(OpAWQScales, t.Layer)
	case OpHessian:
		var d []ShardTask
		if t.Layer > 0 {
			d = append(d, ShardTask{Op: OpForward, Layer: t.Layer - 1, Shard: t.Shard})
		}
		for _, g := range p.Stage.after(t.Group) {
			d = append(d, ShardTask{Op: OpSolve, Layer: t.Layer, Group: g})
		}
		return d
	case OpSolve:
		d := make([]ShardTask, len(p.Shards))
		for s := range p.Shards {
			d[s] = ShardTask{Op: OpHessian, Layer: t.Layer, Group: t.Group, Shard: s}
		}
		return d
	case OpForward:
		var d []ShardTask
		if t.Layer > 0 {
			d = append(d, ShardTask{Op: OpForward, Layer: t.Layer - 1, Shard: t.Shard})
		}
		for g := range p.Stage.Groups {
			d = append(d, ShardTask{Op: OpSolve, Layer: t.Layer, Group: g})
		}
		return d
	}
	return nil
}

// Consumed lists the objects no task after t reads when the tasks run in Tasks order: a group's
// Hessian partials once it is solved, a layer's inputs (and AWQ's partials) once the layer is
// done. The local pipeline deletes them as it goes, so its temporary directory holds about one
// layer's intermediates; a fleet keeps them until the job ends (its records name them).
func (p *ShardPlan) Consumed(t ShardTask) []string {
	var keys []string
	switch {
	case t.Op == OpSolve:
		for s := range p.Shards {
			keys = append(keys, ShardTask{Op: OpHessian, Layer: t.Layer, Group: t.Group, Shard: s}.Key())
		}
	case t.Op == OpForward && t.Shard == len(p.Shards)-1,
		t.Op == OpLayer && p.awqSharded():
		for s := range p.Shards {
			keys = append(keys, ActivationsKey(t.Layer, s))
			if t.Op == OpLayer {
				for _, op := range awqSteps {
					keys = append(keys, ShardTask{Op: op, Layer: t.Layer, Shard: s}.Key())
				}
			}
		}
	}
	return keys
}

// ShardStore keeps a sharded job's objects: object storage on a fleet, a temporary directory
// locally. Keys are single path elements.
type ShardStore interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Put(ctx context.Context, key string, b []byte) error
}

// DirStore is a ShardStore in a local directory.
type DirStore string

// Get implements ShardStore.
func (d DirStore) Get(_ context.Context, key string) ([]byte, error) {
	return os.ReadFile(filepath.Join(string(d), key))
}

// Delete removes an object.
func (d DirStore) Delete(key string) error { return os.Remove(filepath.Join(string(d), key)) }

// Put implements ShardStore (write and rename: a crash leaves no partial object).
func (d DirStore) Put(_ context.Context, key string, b []byte) error {
	p := filepath.Join(string(d), key)
	if err := os.WriteFile(p+".tmp", b, 0o644); err != nil {
		return err
	}
	return os.Rename(p+".tmp", p)
}

// ShardEnv is what RunShardTask needs.
type ShardEnv struct {
	Plan  *ShardPlan
	Store ShardStore
	// Layer loads decoder layer i's weights from the source (a fresh copy each call).
	Layer   func(i int) (*transformer.Layer, error)
	Compute LayerCompute // nil: CPU
}

// compute is the LayerCompute of layer l's tasks: env's, else the context's, else the CPU. A
// compute that does not run l's layout (a GPU runtime of the Llama layout only, see
// LayoutSupporter) leaves the layer to the CPU: the choice depends on the model alone, so a job's
// tasks still all run on one implementation wherever they run.
func (e *ShardEnv) compute(ctx context.Context, l *transformer.Layer) LayerCompute {
	c := e.Compute
	if c == nil {
		c = computeOf(ctx)
	}
	if s, ok := c.(LayoutSupporter); ok && l.Config() != nil && s.Supports(l.Config()) != nil {
		c = nil
	}
	if c == nil {
		return CPU{}
	}
	return c
}

// LayoutSupporter is implemented by a LayerCompute that runs the layers of some models only.
type LayoutSupporter interface {
	// Supports returns nil when the compute runs the decoder layers of models of config c.
	Supports(c *transformer.Config) error
}

// ErrShardTask reports a task that is not part of its plan.
var ErrShardTask = errors.New("quantize: task not in the plan")

// RunShardTask runs task t: it reads its dependencies' objects from env.Store and writes its own,
// t.Key() first, and returns the keys it wrote. The objects depend only on the plan, the source
// and the layer-0 inputs, so a task run twice (a retry, another worker) writes the same bytes.
func RunShardTask(ctx context.Context, env *ShardEnv, t ShardTask) ([]string, error) {
	p := env.Plan
	if !p.valid(t) {
		return nil, fmt.Errorf("%w: %s", ErrShardTask, t.ID())
	}
	var err error
	var keys []string
	switch t.Op {
	case OpLayer:
		if p.awqSharded() {
			keys, err = runAWQFinishTask(ctx, env, t)
		} else {
			keys, err = runLayerTask(ctx, env, t)
		}
	case OpHessian:
		keys, err = runHessianTask(ctx, env, t)
	case OpSolve:
		keys, err = runSolveTask(ctx, env, t)
	case OpForward:
		keys, err = runForwardTask(ctx, env, t)
	case OpAWQStats, OpAWQScales, OpAWQClip:
		keys, err = runAWQShardTask(ctx, env, t)
	}
	if err != nil {
		return nil, fmt.Errorf("task %s: %w", t.ID(), err)
	}
	return keys, nil
}

// rtnLinears rounds the linears to nearest on cfg's grid.
func rtnLinears(ctx context.Context, lins []*transformer.Linear, cfg gptq.Config) ([]*gptq.Result, error) {
	out := make([]*gptq.Result, len(lins))
	for i, lin := range lins {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, err := gptq.RTN(lin.Weight, lin.Out, lin.In, cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", lin.Name, err)
		}
		out[i] = r
	}
	return out, nil
}

func (p *ShardPlan) valid(t ShardTask) bool {
	if t.Layer < 0 || t.Layer >= p.Layers {
		return false
	}
	shard := t.Shard >= 0 && t.Shard < len(p.Shards)
	group := t.Group >= 0 && t.Group < len(p.Stage.Groups)
	switch t.Op {
	case OpLayer:
		return !p.Staged() && t.Group == 0 && t.Shard == 0
	case OpHessian:
		return p.Staged() && group && shard
	case OpSolve:
		return p.Staged() && group && t.Shard == 0
	case OpForward:
		return p.Staged() && shard && t.Group == 0 && t.Layer+1 < p.Layers
	case OpAWQStats, OpAWQScales, OpAWQClip:
		return p.awqSharded() && shard && t.Group == 0
	}
	return false
}

func getActivations(ctx context.Context, st ShardStore, layer, shard int) (*transformer.Tensor, error) {
	return readActivations(ctx, st.Get, layer, shard)
}

// A taker is a ShardStore that hands an object over and forgets it, without the copy its Get
// makes (ShardCache).
type taker interface {
	Take(ctx context.Context, key string) ([]byte, error)
}

// takeActivations is getActivations, then del of its key; from a taker in one step (a shard of
// an 8B model is gigabytes).
func takeActivations(ctx context.Context, st ShardStore, del func(key string) error, layer, shard int) (*transformer.Tensor, error) {
	if tk, ok := st.(taker); ok {
		return readActivations(ctx, tk.Take, layer, shard)
	}
	x, err := getActivations(ctx, st, layer, shard)
	if err == nil {
		err = del(ActivationsKey(layer, shard))
	}
	return x, err
}

func readActivations(ctx context.Context, get func(context.Context, string) ([]byte, error), layer, shard int) (*transformer.Tensor, error) {
	b, err := get(ctx, ActivationsKey(layer, shard))
	if err == nil {
		var x *transformer.Tensor
		if x, err = UnmarshalActivations(b); err == nil {
			return x, nil
		}
	}
	return nil, fmt.Errorf("activations entering layer %d, shard %d: %w", layer, shard, err)
}

func putLayerResult(ctx context.Context, st ShardStore, key string, r *LayerResult) error {
	b, err := MarshalLayerResult(r)
	if err != nil {
		return err
	}
	return st.Put(ctx, key, b)
}

func getLayerResult(ctx context.Context, st ShardStore, key string) (*LayerResult, error) {
	b, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	r, err := UnmarshalLayerResult(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return r, nil
}

// solvedLayer loads layer L with the given groups replaced by their solved weights.
func solvedLayer(ctx context.Context, env *ShardEnv, layer int, groups []int) (*transformer.Layer, error) {
	l, err := env.Layer(layer)
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		r, err := getLayerResult(ctx, env.Store, ShardTask{Op: OpSolve, Layer: layer, Group: g}.Key())
		if err != nil {
			return nil, err
		}
		if err := replaceSolved(l, r); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// replaceSolved puts the solved linears of r into l as the solve left them (float32 scales,
// gptq.Result.Reconstruct), as the in-process pipeline of the reference does.
func replaceSolved(l *transformer.Layer, r *LayerResult) error {
	prefix := layerPrefix(l.Index)
	for _, q := range r.Linears {
		lin := l.Linear(q.Name[min(len(prefix), len(q.Name)):])
		if lin == nil || q.Name[:min(len(prefix), len(q.Name))] != prefix || q.Rows != lin.Out || q.Cols != lin.In {
			return fmt.Errorf("%w: solved %s does not fit layer %d", ErrBadLayerResult, q.Name, l.Index)
		}
		lin.Weight = (&gptq.Result{Rows: q.Rows, Cols: q.Cols, QWeight: q.QWeight, Scales: q.Scales, Zeros: q.Zeros, GIdx: q.GIdx}).Reconstruct()
	}
	return nil
}

func runHessianTask(ctx context.Context, env *ShardEnv, t ShardTask) ([]string, error) {
	l, err := solvedLayer(ctx, env, t.Layer, env.Plan.Stage.after(t.Group))
	if err != nil {
		return nil, err
	}
	defer l.Release()
	x, err := getActivations(ctx, env.Store, t.Layer, t.Shard)
	if err != nil {
		return nil, err
	}
	h, err := env.compute(ctx, l).GroupHessian(ctx, l, env.Plan.Stage.Groups[t.Group], x)
	if err != nil {
		return nil, err
	}
	b, err := h.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return []string{t.Key()}, env.Store.Put(ctx, t.Key(), b)
}

// MergeHessians sums partial Hessians in the order given (shard order 0..S-1): float64 addition
// is not associative, so a fixed order is what makes the merged Hessian the same bits everywhere.
// Each partial is decoded when its turn comes, so at most two are held.
func MergeHessians(parts func(i int) ([]byte, error), n int) (*gptq.Hessian, error) {
	var h *gptq.Hessian
	for i := range n {
		b, err := parts(i)
		if err != nil {
			return nil, err
		}
		var p gptq.Hessian
		if err := p.UnmarshalBinary(b); err != nil {
			return nil, fmt.Errorf("partial Hessian %d: %w", i, err)
		}
		if h == nil {
			h = &p
		} else if err := h.Merge(&p); err != nil {
			return nil, err
		}
	}
	if h == nil {
		return nil, gptq.ErrNoSamples
	}
	return h, nil
}

func runSolveTask(ctx context.Context, env *ShardEnv, t ShardTask) ([]string, error) {
	h, err := MergeHessians(func(s int) ([]byte, error) {
		return env.Store.Get(ctx, ShardTask{Op: OpHessian, Layer: t.Layer, Group: t.Group, Shard: s}.Key())
	}, len(env.Plan.Shards))
	if err != nil {
		return nil, err
	}
	l, err := env.Layer(t.Layer)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	r, err := solveGroup(ctx, env.compute(ctx, l), l, env.Plan.Stage.Groups[t.Group], h, env.Plan.Config.gptqConfig(), env.Plan.tokens())
	if err != nil {
		return nil, err
	}
	return []string{t.Key()}, putLayerResult(ctx, env.Store, t.Key(), r)
}

// fallbackShare is GPTQModel's low-sample threshold (quantization/config.py Fallback: strategy
// rtn, threshold "0.5%"): a linear that less than this share of the calibration tokens reaches
// is rounded to nearest instead of solved.
const fallbackShare = 0.005

// tokens is the calibration's token count: samples × SeqLen (0 when SeqLen is unset).
func (p *ShardPlan) tokens() int64 {
	if len(p.Shards) == 0 {
		return 0
	}
	return int64(p.Shards[len(p.Shards)-1].Hi) * int64(p.Config.SeqLen)
}

// solveGroup solves the group's linears of l on the merged Hessian h: a partial LayerResult
// (linears, statistics, damping) in the group's order.
//
// A group whose input had fewer than fallbackShare of the calibration's tokens (calibTokens)
// reach it, none at least (an expert the router seldom or never chose), is rounded to nearest on
// its weights: GPTQModel's rule for linears GPTQ cannot calibrate (its FailSafe/Fallback for MoE
// uneven routing, v5.7.0 #2293: strategy "rtn", threshold "0.5%"). GPTQ on an all-zero Hessian
// would instead treat every input column as dead and zero the expert's weights.
func solveGroup(ctx context.Context, c LayerCompute, l *transformer.Layer, group []string, h *gptq.Hessian, cfg gptq.Config, calibTokens int64) (*LayerResult, error) {
	r, _, err := solveGroupWith(ctx, l, group, h.Tokens(), calibTokens, cfg, func(lins []*transformer.Linear) ([]*gptq.Result, error) {
		return c.SolveGPTQ(ctx, h, cfg, lins)
	})
	return r, err
}

// solveGroupWith is solveGroup with the Hessian's token count and its solve given apart (a
// StageSession's Hessian stays on its device); it also returns the group's linears.
func solveGroupWith(ctx context.Context, l *transformer.Layer, group []string, tokens, calibTokens int64, cfg gptq.Config,
	solve func([]*transformer.Linear) ([]*gptq.Result, error)) (*LayerResult, []*transformer.Linear, error) {
	lins := make([]*transformer.Linear, len(group))
	for i, name := range group {
		if lins[i] = l.Linear(name); lins[i] == nil {
			return nil, nil, fmt.Errorf("%w: layer %d has no linear %s", ErrLayerConfig, l.Index, name)
		}
	}
	var rs []*gptq.Result
	var err error
	if tokens == 0 || float64(tokens) < fallbackShare*float64(calibTokens) {
		rs, err = rtnLinears(ctx, lins, cfg)
	} else {
		rs, err = solve(lins)
	}
	if err != nil {
		return nil, nil, err
	}
	if len(rs) != len(lins) {
		return nil, nil, fmt.Errorf("quantize: %d solve results for %d linears", len(rs), len(lins))
	}
	prefix := layerPrefix(l.Index)
	res := &LayerResult{Index: l.Index}
	for i, r := range rs {
		lin := lins[i]
		res.Linears = append(res.Linears, gptqLinear(prefix+lin.Name, r, lin.Bias))
		res.Stats = append(res.Stats, LinearStats{Name: prefix + lin.Name, Damp: r.Damp, Loss: r.Loss, Dead: r.Dead})
		res.Damp = max(res.Damp, r.Damp)
	}
	return res, lins, nil
}

func runForwardTask(ctx context.Context, env *ShardEnv, t ShardTask) ([]string, error) {
	all := make([]int, len(env.Plan.Stage.Groups))
	for g := range all {
		all[g] = g
	}
	l, err := solvedLayer(ctx, env, t.Layer, all)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	x, err := getActivations(ctx, env.Store, t.Layer, t.Shard)
	if err != nil {
		return nil, err
	}
	y, err := env.compute(ctx, l).Forward(ctx, l, x)
	if err != nil {
		return nil, err
	}
	return []string{t.Key()}, env.Store.Put(ctx, t.Key(), MarshalActivations(y))
}

// runLayerTask quantizes a whole layer without calibration (RTN) with QuantizeLayer.
func runLayerTask(ctx context.Context, env *ShardEnv, t ShardTask) ([]string, error) {
	if env.Plan.Config.Calibrated() {
		return nil, fmt.Errorf("%w: a calibrated layer runs as shard tasks", ErrShardTask)
	}
	l, err := env.Layer(t.Layer)
	if err != nil {
		return nil, err
	}
	r, err := QuantizeLayer(ctx, l, nil, env.Plan.Config)
	l.Release()
	if err != nil {
		return nil, err
	}
	return []string{t.Key()}, putLayerResult(ctx, env.Store, t.Key(), r)
}

// WriteShardInputs stores the activations entering layer 0 shard by shard: the embeddings of the
// plan's shards of samples (token ids). It returns the keys written.
func WriteShardInputs(ctx context.Context, st ShardStore, p *ShardPlan, m *transformer.Model, samples [][]int) ([]string, error) {
	var keys []string
	for s, sr := range p.Shards {
		if sr.Hi > len(samples) {
			return nil, fmt.Errorf("%w: shard %d needs sample %d of %d", ErrLayerConfig, s, sr.Hi-1, len(samples))
		}
		x, err := m.Embed(samples[sr.Lo:sr.Hi])
		if err != nil {
			return nil, err
		}
		key := ActivationsKey(0, s)
		if err := st.Put(ctx, key, MarshalActivations(x)); err != nil {
			return nil, err
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// layerResultKeys are the objects ShardedLayerResult reads for layer L.
func layerResultKeys(p *ShardPlan, layer int) []string {
	if !p.Staged() {
		return []string{ShardTask{Op: OpLayer, Layer: layer}.Key()}
	}
	keys := make([]string, len(p.Stage.Groups))
	for g := range keys {
		keys[g] = ShardTask{Op: OpSolve, Layer: layer, Group: g}.Key()
	}
	return keys
}

// ShardedLayerResult gathers layer L's result from its tasks' objects: the whole-layer task's,
// or the solved groups' in stage order (linears q, k, v, o, gate, up, down as QuantizeLayer
// orders them).
func ShardedLayerResult(ctx context.Context, st ShardStore, p *ShardPlan, layer int) (*LayerResult, error) {
	keys := layerResultKeys(p, layer)
	if !p.Staged() {
		return getLayerResult(ctx, st, keys[0])
	}
	res := &LayerResult{Index: layer}
	for g, key := range keys {
		r, err := getLayerResult(ctx, st, key)
		if err != nil {
			return nil, err
		}
		if r.Index != layer {
			return nil, fmt.Errorf("%w: group %d of layer %d holds layer %d", ErrBadLayerResult, g, layer, r.Index)
		}
		res.Linears = append(res.Linears, r.Linears...)
		res.Stats = append(res.Stats, r.Stats...)
		res.Damp = max(res.Damp, r.Damp)
	}
	return res, nil
}
