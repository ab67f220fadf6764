package llamacuda

import (
	"math"

	"quantfleet.dev/libs/transformer"
)

// ropeTables returns cos and sin for positions 0..seq-1, half = Rope.Dim/2 values per position,
// computed exactly as libs/transformer's (unexported) ropeTable, which this must track: the GPU
// forward tests compare against the CPU layer for every rope type. TODO(after merge): export
// transformer.Config.RopeTable and call it instead.
func ropeTables(c *transformer.Config, seq int) (cos, sin []float32, half int) {
	inv, att := invFreq(c, seq)
	half = len(inv)
	cos, sin = make([]float32, seq*half), make([]float32, seq*half)
	for p := 0; p < seq; p++ {
		for i, f := range inv {
			a := float64(float32(p) * f)
			cos[p*half+i] = float32(math.Cos(a)) * att
			sin[p*half+i] = float32(math.Sin(a)) * att
		}
	}
	return cos, sin, half
}

func invFreq(c *transformer.Config, seqLen int) ([]float32, float32) {
	r := c.Rope
	dim := r.Dim
	half := dim / 2
	powers := func(base float64) []float32 {
		p := make([]float32, half)
		for i := range p {
			p[i] = float32(math.Pow(base, float64(float32(2*i)/float32(dim))))
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
		f := inv(powers(r.Theta))
		for i := range f {
			f[i] /= float32(r.Factor)
		}
		return f, 1
	case "dynamic":
		if maxPos := c.MaxPositionEmbeddings; seqLen > maxPos {
			b := r.Theta * math.Pow(r.Factor*float64(seqLen)/float64(maxPos)-(r.Factor-1), float64(dim)/float64(dim-2))
			return inv(powers(b)), 1
		}
	case "yarn":
		return yarn(c)
	case "llama3":
		return llama3(c)
	}
	return inv(powers(r.Theta)), 1
}

func yarnMscale(scale, m float64) float64 {
	if scale <= 1 {
		return 1
	}
	return 0.1*m*math.Log(scale) + 1
}

func yarn(c *transformer.Config) ([]float32, float32) {
	r := c.Rope
	dim, half := r.Dim, r.Dim/2
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

func llama3(c *transformer.Config) ([]float32, float32) {
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
