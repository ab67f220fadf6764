package quantize

import (
	"context"
	"testing"

	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/sharedtest"
)

func tinyLlama(b *testing.B) string {
	return sharedtest.Path(b, "models", "tiny-llama")
}

// BenchmarkGGUFTinyLlama measures a whole-model conversion (plan, quantize, write, validate);
// b.SetBytes is the size of the source weights, so MB/s is source megabytes per second.
func BenchmarkGGUFTinyLlama(b *testing.B) {
	dir := tinyLlama(b)
	for _, level := range []string{"Q4_K_M", "Q8_0"} {
		b.Run(level, func(b *testing.B) {
			m, err := hfmodel.OpenDir(dir)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			b.SetBytes(m.WeightBytes())
			out := b.TempDir()
			for i := 0; i < b.N; i++ {
				if _, err := GGUF(context.Background(), GGUFRequest{Model: m, ModelDir: dir, Level: level, OutputDir: out}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
