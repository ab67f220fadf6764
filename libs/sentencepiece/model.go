// Package sentencepiece reads SentencePiece model files (tokenizer.model) and encodes text with them
// the way Google's SentencePiece library does (BPE and unigram models, byte fallback).
//
// The model file is a serialized sentencepiece.ModelProto (sentencepiece_model.proto, proto2). It is
// decoded here straight from the protobuf wire format; only the fields that affect tokenization or
// GGUF conversion are kept.
package sentencepiece

import (
	"fmt"
	"math"
	"os"

	"google.golang.org/protobuf/encoding/protowire"

	"quantfleet.dev/libs/fault"
)

// PieceType is ModelProto.SentencePiece.Type. The numbers are also llama.cpp's token types.
type PieceType int32

// Piece types.
const (
	Normal      PieceType = 1
	Unknown     PieceType = 2
	Control     PieceType = 3
	UserDefined PieceType = 4
	Unused      PieceType = 5
	Byte        PieceType = 6
)

// ModelType is TrainerSpec.ModelType.
type ModelType int32

// Model types.
const (
	Unigram ModelType = 1
	BPE     ModelType = 2
	Word    ModelType = 3
	Char    ModelType = 4
)

func (t ModelType) String() string {
	switch t {
	case Unigram:
		return "unigram"
	case BPE:
		return "bpe"
	case Word:
		return "word"
	case Char:
		return "char"
	}
	return fmt.Sprintf("ModelType(%d)", int32(t))
}

// Piece is one vocabulary entry; its index in Model.Pieces is its id.
type Piece struct {
	Piece string
	Score float32
	Type  PieceType
}

// TrainerSpec holds the trainer fields that matter after training. Absent fields carry the proto defaults.
type TrainerSpec struct {
	ModelType               ModelType
	VocabSize               int32
	SplitDigits             bool
	TreatWhitespaceAsSuffix bool
	ByteFallback            bool
	UnkID, BOSID, EOSID     int32
	PadID                   int32
	UnkPiece, BOSPiece      string
	EOSPiece, PadPiece      string
	UnkSurface              string
}

// NormalizerSpec is the text normalization applied before segmentation. Absent fields carry the proto
// defaults (add_dummy_prefix, remove_extra_whitespaces and escape_whitespaces default to true).
type NormalizerSpec struct {
	Name                   string
	PrecompiledCharsmap    []byte
	AddDummyPrefix         bool
	RemoveExtraWhitespaces bool
	EscapeWhitespaces      bool
}

// Model is a decoded tokenizer.model.
type Model struct {
	Pieces       []Piece
	Trainer      TrainerSpec
	Normalizer   NormalizerSpec
	Denormalizer *NormalizerSpec // nil when absent
}

// ErrMalformed is returned (wrapped) for bytes that are not a valid ModelProto.
var ErrMalformed = fault.New(fault.ErrBadInput, "sentencepiece: malformed model")

// Load reads and parses a tokenizer.model file.
func Load(path string) (*Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sentencepiece: %w", err)
	}
	m, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// Parse decodes a serialized ModelProto.
func Parse(b []byte) (*Model, error) {
	m := &Model{
		Trainer:    defaultTrainer(),
		Normalizer: defaultNormalizer(),
	}
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			p, err := parsePiece(v)
			if err != nil {
				return fmt.Errorf("piece %d: %w", len(m.Pieces), err)
			}
			m.Pieces = append(m.Pieces, p)
		case num == 2 && typ == protowire.BytesType:
			return parseTrainer(v, &m.Trainer)
		case num == 3 && typ == protowire.BytesType:
			return parseNormalizer(v, &m.Normalizer)
		case num == 5 && typ == protowire.BytesType:
			d := defaultNormalizer()
			if err := parseNormalizer(v, &d); err != nil {
				return fmt.Errorf("denormalizer_spec: %w", err)
			}
			m.Denormalizer = &d
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(m.Pieces) == 0 {
		return nil, fmt.Errorf("%w: no pieces", ErrMalformed)
	}
	return m, nil
}

func defaultTrainer() TrainerSpec {
	return TrainerSpec{
		ModelType: Unigram, VocabSize: 8000,
		UnkID: 0, BOSID: 1, EOSID: 2, PadID: -1,
		UnkPiece: "<unk>", BOSPiece: "<s>", EOSPiece: "</s>", PadPiece: "<pad>",
		UnkSurface: " \u2047 ",
	}
}

func defaultNormalizer() NormalizerSpec {
	return NormalizerSpec{AddDummyPrefix: true, RemoveExtraWhitespaces: true, EscapeWhitespaces: true}
}

func parsePiece(b []byte) (Piece, error) {
	p := Piece{Type: Normal}
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			p.Piece = string(v)
		case num == 2 && typ == protowire.Fixed32Type:
			p.Score = math.Float32frombits(uint32(x))
		case num == 3 && typ == protowire.VarintType:
			p.Type = PieceType(int32(x))
		}
		return nil
	})
	return p, err
}

func parseTrainer(b []byte, t *TrainerSpec) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		if typ == protowire.VarintType {
			switch num {
			case 3:
				t.ModelType = ModelType(int32(x))
			case 4:
				t.VocabSize = int32(x)
			case 24:
				t.TreatWhitespaceAsSuffix = x != 0
			case 25:
				t.SplitDigits = x != 0
			case 35:
				t.ByteFallback = x != 0
			case 40:
				t.UnkID = int32(x)
			case 41:
				t.BOSID = int32(x)
			case 42:
				t.EOSID = int32(x)
			case 43:
				t.PadID = int32(x)
			}
			return nil
		}
		if typ == protowire.BytesType {
			switch num {
			case 44:
				t.UnkSurface = string(v)
			case 45:
				t.UnkPiece = string(v)
			case 46:
				t.BOSPiece = string(v)
			case 47:
				t.EOSPiece = string(v)
			case 48:
				t.PadPiece = string(v)
			}
		}
		return nil
	})
}

func parseNormalizer(b []byte, n *NormalizerSpec) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			n.Name = string(v)
		case num == 2 && typ == protowire.BytesType:
			n.PrecompiledCharsmap = append([]byte(nil), v...)
		case num == 3 && typ == protowire.VarintType:
			n.AddDummyPrefix = x != 0
		case num == 4 && typ == protowire.VarintType:
			n.RemoveExtraWhitespaces = x != 0
		case num == 5 && typ == protowire.VarintType:
			n.EscapeWhitespaces = x != 0
		}
		return nil
	})
}

// walk calls fn for every field of a message: v is set for length-delimited fields, x for the others.
func walk(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", ErrMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var u uint32
			u, n = protowire.ConsumeFixed32(b)
			x = uint64(u)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%w: field %d: %v", ErrMalformed, num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
