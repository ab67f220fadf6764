package transformer

import (
	"context"
	"fmt"
	"io"
	"math"
	"sync"

	"quantfleet.dev/libs/safetensors"
)

// Model is a decoder-only transformer whose weights are read from a WeightSource layer by
// layer: the embeddings and the head (final norm + lm_head) are loaded on first use and
// kept; decoder layers are loaded by Layer and dropped by the caller.
type Model struct {
	Config *Config
	Source WeightSource

	mu    sync.Mutex
	embed []float32 // vocab × hidden
	norm  []float32
	head  []float32 // vocab × hidden; shares embed when tied
	ropes map[int]*ropeTable
}

// Load opens the Hugging Face checkpoint in dir (config.json and safetensors weights).
func Load(dir string) (*Model, error) {
	cfg, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	st, err := safetensors.OpenModel(dir)
	if err != nil {
		return nil, fmt.Errorf("transformer: %w", err)
	}
	return New(cfg, SafetensorsSource{Model: st}), nil
}

// New returns a model reading its weights from src.
func New(cfg *Config, src WeightSource) *Model {
	return &Model{Config: cfg, Source: src, ropes: make(map[int]*ropeTable)}
}

// Close closes the weight source if it is an io.Closer.
func (m *Model) Close() error {
	if c, ok := m.Source.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

func (m *Model) rope(seq int) *ropeTable {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.ropes[seq]
	if !ok {
		t = m.Config.ropeTable(seq)
		m.ropes[seq] = t
	}
	return t
}

// globalShape returns the shape the tensor table gives a non-block tensor.
// localRope is the rotary table of sliding-window layers (Gemma 3's local base).
func (m *Model) localRope(seq int) *ropeTable {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.ropes[-seq]
	if !ok {
		local := *m.Config
		local.Rope = *m.Config.LocalRope
		t = local.ropeTable(seq)
		m.ropes[-seq] = t
	}
	return t
}

// softcap applies cap·tanh(x/cap) in place (Gemma 2's final logit soft-capping); cap 0: none.
func softcap(x []float32, cap float64) {
	if cap <= 0 {
		return
	}
	c := float32(cap)
	for i, v := range x {
		x[i] = float32(math.Tanh(float64(v/c))) * c
	}
}

func (m *Model) globalShape(name string) []int64 {
	for _, s := range m.Config.Dims().Global() {
		if s.Name == name {
			return s.Shape
		}
	}
	return nil
}

func (m *Model) loadEmbed() ([]float32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.embed == nil {
		e, err := loadTensor(m.Source, "model.embed_tokens.weight", m.globalShape("model.embed_tokens.weight"))
		if err != nil {
			return nil, err
		}
		m.embed = e
	}
	return m.embed, nil
}

func (m *Model) loadHead() (norm, head []float32, err error) {
	if m.Config.TieWordEmbeddings {
		if _, err := m.loadEmbed(); err != nil {
			return nil, nil, err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.norm == nil {
		if m.norm, err = loadTensor(m.Source, "model.norm.weight", m.globalShape("model.norm.weight")); err != nil {
			return nil, nil, err
		}
		if m.Config.Gemma { // 1+w
			for i := range m.norm {
				m.norm[i]++
			}
		}
	}
	if m.head == nil {
		if m.Config.TieWordEmbeddings {
			m.head = m.embed
		} else if m.head, err = loadTensor(m.Source, "lm_head.weight", m.globalShape("lm_head.weight")); err != nil {
			return nil, nil, fmt.Errorf("%w (tie_word_embeddings is false)", err)
		}
	}
	return m.norm, m.head, nil
}

// ReleaseEmbeddings drops the cached embedding, final norm and lm_head weights.
func (m *Model) ReleaseEmbeddings() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.embed, m.norm, m.head = nil, nil, nil
}

func (m *Model) checkIDs(seqs [][]int) error {
	if len(seqs) == 0 {
		return fmt.Errorf("transformer: no sequences")
	}
	for i, s := range seqs {
		if len(s) != len(seqs[0]) {
			return fmt.Errorf("transformer: sequence %d has %d tokens, sequence 0 has %d (a batch needs equal lengths)", i, len(s), len(seqs[0]))
		}
		for _, id := range s {
			if id < 0 || id >= m.Config.VocabSize {
				return fmt.Errorf("transformer: token id %d in sequence %d is outside the vocabulary [0, %d)", id, i, m.Config.VocabSize)
			}
		}
	}
	return nil
}

// Embed returns the input embeddings of a batch of equally long token sequences.
func (m *Model) Embed(seqs [][]int) (*Tensor, error) {
	if err := m.checkIDs(seqs); err != nil {
		return nil, err
	}
	e, err := m.loadEmbed()
	if err != nil {
		return nil, err
	}
	h := m.Config.HiddenSize
	x := NewTensor(len(seqs), len(seqs[0]), h)
	for b, s := range seqs {
		for p, id := range s {
			copy(x.Row(b*x.Seq+p), e[id*h:(id+1)*h])
		}
	}
	if m.Config.Gemma {
		scale := m.Config.EmbedScale
		for i := range x.Data {
			x.Data[i] *= scale
		}
	}
	return x, nil
}

// Forward embeds seqs and runs every decoder layer, loading one layer at a time, and
// returns the last layer's output (before the final norm).
func (m *Model) Forward(ctx context.Context, seqs [][]int) (*Tensor, error) {
	x, err := m.Embed(seqs)
	if err != nil {
		return nil, err
	}
	for i := 0; i < m.Config.NumLayers; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l, err := m.Layer(i)
		if err != nil {
			return nil, err
		}
		x, err = l.Forward(x, nil)
		l.Release()
		if err != nil {
			return nil, err
		}
	}
	return x, nil
}

// headRows bounds the rows whose logits exist at once in NLL.
const headRows = 512

// Head applies the final norm and lm_head: logits of shape Batch×Seq×vocab.
func (m *Model) Head(x *Tensor) (*Tensor, error) {
	norm, head, err := m.checkHead(x)
	if err != nil {
		return nil, err
	}
	c := m.Config
	n := NewTensor(x.Batch, x.Seq, x.Dim)
	rmsNorm(n.Data, x.Data, norm, c.RMSNormEps)
	logits := NewTensor(x.Batch, x.Seq, c.VocabSize)
	Gemm(false, true, x.Rows(), c.VocabSize, c.HiddenSize, 1, n.Data, c.HiddenSize, head, c.HiddenSize, 0, logits.Data, c.VocabSize)
	softcap(logits.Data, c.FinalSoftcap)
	return logits, nil
}

func (m *Model) checkHead(x *Tensor) (norm, head []float32, err error) {
	if err := x.check(); err != nil {
		return nil, nil, err
	}
	if x.Dim != m.Config.HiddenSize {
		return nil, nil, fmt.Errorf("transformer: head takes %d features, input has %d", m.Config.HiddenSize, x.Dim)
	}
	return m.loadHead()
}

// NLL returns, per sequence, the sum over positions p of −log softmax(logits(x_p))[targets[b][p]]
// (natural log, float64), where x is the last layer's output. Logits are computed a few
// hundred rows at a time, never for the whole batch.
func (m *Model) NLL(x *Tensor, targets [][]int) ([]float64, error) {
	norm, head, err := m.checkHead(x)
	if err != nil {
		return nil, err
	}
	if len(targets) != x.Batch {
		return nil, fmt.Errorf("transformer: %d target sequences for a batch of %d", len(targets), x.Batch)
	}
	if err := m.checkIDs(targets); err != nil {
		return nil, err
	}
	if len(targets[0]) != x.Seq {
		return nil, fmt.Errorf("transformer: %d targets per sequence for %d positions", len(targets[0]), x.Seq)
	}
	c := m.Config
	rows := x.Rows()
	nll := make([]float64, rows)
	n := make([]float32, headRows*c.HiddenSize)
	logits := make([]float32, headRows*c.VocabSize)
	for r0 := 0; r0 < rows; r0 += headRows {
		nr := min(headRows, rows-r0)
		rmsNorm(n[:nr*c.HiddenSize], x.Data[r0*c.HiddenSize:(r0+nr)*c.HiddenSize], norm, c.RMSNormEps)
		Gemm(false, true, nr, c.VocabSize, c.HiddenSize, 1, n, c.HiddenSize, head, c.HiddenSize, 0, logits, c.VocabSize)
		rowsParallel(nr, c.VocabSize, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				row := logits[r*c.VocabSize : (r+1)*c.VocabSize]
				softcap(row, c.FinalSoftcap)
				g := r0 + r
				t := targets[g/x.Seq][g%x.Seq]
				nll[g] = logSumExp(row) - float64(row[t])
			}
		})
	}
	sums := make([]float64, x.Batch)
	for g, v := range nll {
		sums[g/x.Seq] += v
	}
	return sums, nil
}

// SequenceNLL runs the full model on sequences of L+1 tokens (equal lengths) and returns,
// per sequence, the summed negative log-likelihood of tokens 1..L given their prefixes.
func (m *Model) SequenceNLL(ctx context.Context, seqs [][]int) ([]float64, error) {
	if len(seqs) == 0 || len(seqs[0]) < 2 {
		return nil, fmt.Errorf("transformer: SequenceNLL needs sequences of at least 2 tokens")
	}
	in := make([][]int, len(seqs))
	tg := make([][]int, len(seqs))
	for i, s := range seqs {
		if len(s) < 2 {
			return nil, fmt.Errorf("transformer: sequence %d has %d tokens, sequence 0 has %d", i, len(s), len(seqs[0]))
		}
		in[i], tg[i] = s[:len(s)-1], s[1:]
	}
	x, err := m.Forward(ctx, in)
	if err != nil {
		return nil, err
	}
	return m.NLL(x, tg)
}
