package sentencepiece

import (
	"errors"
	"os"
	"testing"

	"quantfleet.dev/libs/sharedtest"
)

// FuzzParse: no tokenizer.model panics the parser, the processor or encoding, and parsing
// allocates in proportion to the file. Seeds: tiny-llama's tokenizer.model, whole and truncated,
// and small synthetic models.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile(sharedtest.Path(f, "models", "tiny-llama", "tokenizer.model")); err == nil {
		f.Add(b)
		f.Add(sharedtest.TruncatePieces(f, b, 300))
	}
	f.Add(model{pieces: smallPieces(), trainer: bpeTrainer}.bytes())
	f.Add(model{pieces: smallPieces(), trainer: varintField(bpeTrainer, 35, 1), normalizer: varintField(nil, 3, 0)}.bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		var m *Model
		var err error
		grew := sharedtest.Allocated(func() { m, err = Parse(data) })
		if limit := 1<<20 + 64*uint64(len(data)); grew > limit {
			t.Fatalf("allocated %d bytes for %d bytes of tokenizer.model", grew, len(data))
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		p, err := NewProcessor(m)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedModel) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		ids := p.Encode("Hello, wörld! 123  <u>\n\t\xff")
		for _, id := range ids {
			if id < 0 || id >= p.VocabSize() {
				t.Fatalf("id %d outside the vocabulary of %d", id, p.VocabSize())
			}
		}
		p.Decode(append(ids, -1, p.VocabSize()))
	})
}
