package gptq

// WithDefaults returns c with its defaults filled in, or ErrConfig if it is invalid: the
// normalization Quantize applies, for other implementations of the algorithm (the GPU one).
func (c Config) WithDefaults() (Config, error) { return c.withDefaults() }
