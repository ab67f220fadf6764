package transformer

import "math"

// Rotary tables follow transformers' modeling_rope_utils: inverse frequencies are
// computed in float32 the way its torch code does, cos and sin of position×inv_freq are
// scaled by the attention factor, and a pair (i, i+dim/2) is rotated (rotate_half, the
// layout of Hugging Face checkpoints).

// invFreq returns the dim/2 inverse frequencies and the attention factor for a sequence of
// seqLen positions (seqLen matters only for dynamic scaling).
func (c *Config) invFreq(seqLen int) ([]float32, float32) {
	r := c.Rope
	dim := r.Dim
	half := dim / 2
	base := r.Theta
	// base ** (arange(0, dim, 2) / dim), in float32.
	powers := func(base float64) []float32 {
		p := make([]float32, half)
		for i := range p {
			e := float32(2*i) / float32(dim)
			p[i] = float32(math.Pow(base, float64(e)))
		}
		return p
	}
	inv := func(p []float32) []float32 {
		f := make([]float32, len(p))
		for i, v := range p {
			f[i] = 1 / v
		}
		return f
	}
	switch r.Type {
	case "linear":
		f := inv(powers(base))
		for i := range f {
			f[i] /= float32(r.Factor)
		}
		return f, 1
	case "dynamic":
		// transformers grows the frequencies while it sees longer inputs; per call this
		// is the NTK formula for the call's length when it exceeds max_position_embeddings.
		maxPos := c.MaxPositionEmbeddings
		if seqLen > maxPos {
			b := base * math.Pow(r.Factor*float64(seqLen)/float64(maxPos)-(r.Factor-1), float64(dim)/float64(dim-2))
			return inv(powers(b)), 1
		}
		return inv(powers(base)), 1
	case "longrope", "su":
		// transformers' _compute_longrope_parameters: short factors up to the original
		// context, long ones beyond; the attention factor from max/original positions.
		orig := r.OriginalMaxPositionEmbeddings
		ext := r.ShortFactor
		if seqLen > orig {
			ext = r.LongFactor
		}
		p := powers(base)
		f := make([]float32, half)
		for i := range f {
			f[i] = 1 / (float32(ext[i]) * p[i])
		}
		att := r.AttentionFactor
		if scale := float64(c.MaxPositionEmbeddings) / float64(orig); att == 0 && scale > 1 {
			att = math.Sqrt(1 + math.Log(scale)/math.Log(float64(orig)))
		} else if att == 0 {
			att = 1
		}
		return f, float32(att)
	case "yarn":
		return c.yarn()
	case "llama3":
		return c.llama3()
	}
	return inv(powers(base)), 1
}

func yarnMscale(scale, m float64) float64 {
	if scale <= 1 {
		return 1
	}
	return 0.1*m*math.Log(scale) + 1
}

func (c *Config) yarn() ([]float32, float32) {
	r := c.Rope
	dim, half := r.Dim, r.Dim/2
	// transformers 5 uses the declared factor even when it differs from
	// max_position_embeddings / original_max_position_embeddings (4.x replaced it by that
	// ratio; 5.x warns and keeps the factor).
	factor := r.Factor
	origMax := c.MaxPositionEmbeddings
	if r.OriginalMaxPositionEmbeddings > 0 {
		origMax = r.OriginalMaxPositionEmbeddings
	}
	att := r.AttentionFactor
	if att == 0 {
		if r.Mscale != 0 && r.MscaleAllDim != 0 {
			att = yarnMscale(factor, r.Mscale) / yarnMscale(factor, r.MscaleAllDim)
		} else {
			att = yarnMscale(factor, 1)
		}
	}
	betaFast, betaSlow := r.BetaFast, r.BetaSlow
	if betaFast == 0 {
		betaFast = 32
	}
	if betaSlow == 0 {
		betaSlow = 1
	}
	corrDim := func(rot float64) float64 {
		return float64(dim) * math.Log(float64(origMax)/(rot*2*math.Pi)) / (2 * math.Log(r.Theta))
	}
	low, high := corrDim(betaFast), corrDim(betaSlow)
	if r.Truncate {
		low, high = math.Floor(low), math.Ceil(high)
	}
	low = math.Max(low, 0)
	high = math.Min(high, float64(dim-1))
	if low == high {
		high += 0.001
	}
	f := make([]float32, half)
	for i := range f {
		pos := float32(math.Pow(r.Theta, float64(float32(2*i)/float32(dim))))
		extra := 1 / pos
		inter := 1 / (float32(factor) * pos)
		ramp := (float32(i) - float32(low)) / (float32(high) - float32(low))
		ramp = min(max(ramp, 0), 1)
		ef := 1 - ramp
		f[i] = inter*(1-ef) + extra*ef
	}
	return f, float32(att)
}

func (c *Config) llama3() ([]float32, float32) {
	r := c.Rope
	dim, half := r.Dim, r.Dim/2
	old := float64(r.OriginalMaxPositionEmbeddings)
	lowWave := old / r.LowFreqFactor
	highWave := old / r.HighFreqFactor
	factor := float32(r.Factor)
	f := make([]float32, half)
	for i := range f {
		inv := 1 / float32(math.Pow(r.Theta, float64(float32(2*i)/float32(dim))))
		wave := float32(2*math.Pi) / inv
		v := inv
		if float64(wave) > lowWave {
			v = inv / factor
		}
		if !(float64(wave) < highWave) && !(float64(wave) > lowWave) {
			smooth := (float32(old)/wave - float32(r.LowFreqFactor)) / float32(r.HighFreqFactor-r.LowFreqFactor)
			v = (1-smooth)*v/factor + smooth*v
		}
		f[i] = v
	}
	return f, 1
}

// ropeTable holds cos and sin for positions 0..n-1, dim/2 values per position (the two
// halves of transformers' cat(freqs, freqs) are equal).
type ropeTable struct {
	half     int
	cos, sin []float32
}

// RopeTables returns the rotary tables of positions 0..seqLen-1 as the CPU forward pass uses them:
// cos and sin, half values per position (half = rotary dim / 2), scaled by the attention factor
// of yarn. Other backends (the GPU's) upload these rather than computing their own.
func (c *Config) RopeTables(seqLen int) (cos, sin []float32, half int) {
	t := c.ropeTable(seqLen)
	return t.cos, t.sin, t.half
}

func (c *Config) ropeTable(seqLen int) *ropeTable {
	inv, att := c.invFreq(seqLen)
	half := len(inv)
	t := &ropeTable{half: half, cos: make([]float32, seqLen*half), sin: make([]float32, seqLen*half)}
	for p := 0; p < seqLen; p++ {
		for i, f := range inv {
			a := float64(float32(p) * f)
			t.cos[p*half+i] = float32(math.Cos(a)) * att
			t.sin[p*half+i] = float32(math.Sin(a)) * att
		}
	}
	return t
}

// apply rotates the heads of one row (heads×headDim values) at position pos:
// x[i] ← x[i]·cos − x[i+h]·sin, x[i+h] ← x[i+h]·cos + x[i]·sin.
func (t *ropeTable) apply(row []float32, heads, headDim, pos int) {
	h := t.half
	cs := t.cos[pos*h : pos*h+h]
	sn := t.sin[pos*h : pos*h+h]
	for k := 0; k < heads; k++ {
		x := row[k*headDim : k*headDim+2*h]
		x1, x2 := x[:h], x[h:2*h]
		for i := range x1 {
			a, b := x1[i], x2[i]
			x1[i] = float32(a*cs[i]) - float32(b*sn[i])
			x2[i] = float32(b*cs[i]) + float32(a*sn[i])
		}
	}
}
