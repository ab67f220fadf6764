package sentencepiece

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/pqueue"
)

// ErrUnsupportedModel is returned by NewProcessor for model types it cannot segment with.
var ErrUnsupportedModel = fault.New(fault.ErrBadInput, "sentencepiece: unsupported model type")

// Processor encodes and decodes text like SentencePieceProcessor (BPE models).
type Processor struct {
	m        *Model
	pieces   map[string]int // NORMAL, USER_DEFINED and UNUSED pieces: the ones segmentation may produce
	reserved map[string]int // CONTROL, UNKNOWN and BYTE pieces
	unk      int
	byteID   [256]int
	norm     *normalizer
	user     *prefixMatcher
}

// NewProcessor validates m the way SentencePiece's ModelInterface does and prepares it for encoding.
func NewProcessor(m *Model) (*Processor, error) {
	if m.Trainer.ModelType != BPE {
		return nil, fmt.Errorf("%w: %v (only bpe)", ErrUnsupportedModel, m.Trainer.ModelType)
	}
	p := &Processor{
		m:        m,
		pieces:   make(map[string]int, len(m.Pieces)),
		reserved: make(map[string]int),
		unk:      -1,
	}
	for i := range p.byteID {
		p.byteID[i] = -1
	}
	var user []string
	for i, sp := range m.Pieces {
		if sp.Piece == "" {
			return nil, fmt.Errorf("%w: piece %d is empty", ErrMalformed, i)
		}
		dst := p.reserved
		if sp.Type == Normal || sp.Type == UserDefined || sp.Type == Unused {
			dst = p.pieces
		}
		if _, dup := dst[sp.Piece]; dup {
			return nil, fmt.Errorf("%w: piece %q is already defined", ErrMalformed, sp.Piece)
		}
		dst[sp.Piece] = i
		switch sp.Type {
		case UserDefined:
			user = append(user, sp.Piece)
		case Unknown:
			if p.unk >= 0 {
				return nil, fmt.Errorf("%w: unk is already defined", ErrMalformed)
			}
			p.unk = i
		case Byte:
			if !m.Trainer.ByteFallback {
				return nil, fmt.Errorf("%w: byte piece %q found although byte_fallback is false", ErrMalformed, sp.Piece)
			}
			b, ok := pieceToByte(sp.Piece)
			if !ok {
				return nil, fmt.Errorf("%w: byte piece %q must be in [<0x00>, <0xFF>]", ErrMalformed, sp.Piece)
			}
			p.byteID[b] = i
		}
	}
	if p.unk < 0 {
		return nil, fmt.Errorf("%w: unk is not defined", ErrMalformed)
	}
	if m.Trainer.ByteFallback {
		for b, id := range p.byteID {
			if id < 0 {
				return nil, fmt.Errorf("%w: byte_fallback is set but <0x%02X> is missing", ErrMalformed, b)
			}
		}
	}
	p.user = newPrefixMatcher(user)
	n, err := newNormalizer(m.Normalizer, m.Trainer.TreatWhitespaceAsSuffix, p.user)
	if err != nil {
		return nil, err
	}
	p.norm = n
	return p, nil
}

// Model returns the model the processor was built from.
func (p *Processor) Model() *Model { return p.m }

// VocabSize is the number of pieces.
func (p *Processor) VocabSize() int { return len(p.m.Pieces) }

// PieceToID returns the id of piece, or the unknown id.
func (p *Processor) PieceToID(piece string) int {
	if id, ok := p.reserved[piece]; ok {
		return id
	}
	if id, ok := p.pieces[piece]; ok {
		return id
	}
	return p.unk
}

// IDToPiece returns the text of piece id ("" when out of range).
func (p *Processor) IDToPiece(id int) string {
	if id < 0 || id >= len(p.m.Pieces) {
		return ""
	}
	return p.m.Pieces[id].Piece
}

// UnkID, BOSID and EOSID are the ids of the unknown, begin and end pieces (-1 when the model has none).
func (p *Processor) UnkID() int { return p.unk }

// BOSID is the id of the begin-of-sentence piece, or -1.
func (p *Processor) BOSID() int { return p.specialID(p.m.Trainer.BOSPiece, p.m.Trainer.BOSID) }

// EOSID is the id of the end-of-sentence piece, or -1.
func (p *Processor) EOSID() int { return p.specialID(p.m.Trainer.EOSPiece, p.m.Trainer.EOSID) }

func (p *Processor) specialID(piece string, fallback int32) int {
	if id, ok := p.reserved[piece]; ok {
		return id
	}
	if fallback >= 0 && int(fallback) < len(p.m.Pieces) && p.m.Pieces[fallback].Type == Control {
		return int(fallback)
	}
	return -1
}

// Normalize returns the text the segmentation model sees (spaces escaped as "▁", dummy prefix added).
func (p *Processor) Normalize(text string) string { return p.norm.normalize(text) }

// Encode returns the piece ids of text. Like SentencePiece's Encode it adds no BOS/EOS.
func (p *Processor) Encode(text string) []int {
	return p.EncodeNormalized(p.norm.normalize(text), nil)
}

type symbol struct {
	start, end int // byte range in the normalized text; end == start once merged away
	prev, next int
	freeze     bool
}

type symbolPair struct {
	left, right int
	score       float32
	size        int
}

// pairBefore orders the agenda: highest score first, then the leftmost pair (bpe_model.cc
// SymbolPairComparator).
func pairBefore(a, b symbolPair) bool {
	if a.score != b.score {
		return a.score > b.score
	}
	return a.left < b.left
}

func (s *symbol) piece(t string) string { return t[s.start:s.end] }

// EncodeNormalized segments already-normalized text (bpe_model.cc Model::Encode, then byte fallback
// for unknown pieces) and appends the ids to dst.
func (p *Processor) EncodeNormalized(text string, dst []int) []int {
	if text == "" {
		return dst
	}
	syms := make([]symbol, 0, len(text))
	for i := 0; i < len(text); {
		l := p.user.match(text[i:])
		freeze := l > 0
		if !freeze {
			_, l = utf8.DecodeRuneInString(text[i:])
		}
		syms = append(syms, symbol{start: i, end: i + l, prev: len(syms) - 1, next: len(syms) + 1, freeze: freeze})
		i += l
	}
	syms[len(syms)-1].next = -1

	var revMerge map[string][2]string
	ag := pqueue.New(pairBefore, len(syms))
	addPair := func(left, right int) {
		if left < 0 || right < 0 || syms[left].freeze || syms[right].freeze {
			return
		}
		piece := text[syms[left].start:syms[right].end]
		id, ok := p.pieces[piece]
		if !ok {
			return
		}
		ag.Push(symbolPair{left: left, right: right, score: p.m.Pieces[id].Score, size: len(piece)})
		if p.m.Pieces[id].Type == Unused {
			if revMerge == nil {
				revMerge = make(map[string][2]string)
			}
			revMerge[piece] = [2]string{syms[left].piece(text), syms[right].piece(text)}
		}
	}
	for i := 1; i < len(syms); i++ {
		addPair(i-1, i)
	}
	for ag.Len() > 0 {
		top := ag.Pop()
		l, r := &syms[top.left], &syms[top.right]
		if l.start == l.end || r.start == r.end || (l.end-l.start)+(r.end-r.start) != top.size {
			continue // stale entry
		}
		l.end = r.end
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = top.left
		}
		r.end = r.start
		addPair(l.prev, top.left)
		addPair(top.left, l.next)
	}

	var emit func(w string)
	emit = func(w string) {
		id := p.PieceToID(w)
		if p.m.Pieces[id].Type == Unused {
			if parts, ok := revMerge[w]; ok {
				emit(parts[0])
				emit(parts[1])
				return
			}
		}
		if id == p.unk && p.m.Trainer.ByteFallback {
			for i := 0; i < len(w); i++ {
				dst = append(dst, p.byteID[w[i]])
			}
			return
		}
		dst = append(dst, id)
	}
	for i := 0; i >= 0; i = syms[i].next {
		emit(syms[i].piece(text))
	}
	return dst
}

// Decode turns ids back into text like SentencePieceProcessor::Decode: control pieces vanish, byte
// pieces are reassembled into UTF-8 (invalid bytes become U+FFFD), "▁" becomes a space and the space
// of the dummy prefix is dropped. Out-of-range ids are skipped.
func (p *Processor) Decode(ids []int) string {
	var (
		out       strings.Builder
		bytes     []byte
		isBOSWS   = true
		bosWSSeen bool
	)
	spec := p.m.Normalizer
	flush := func() {
		for len(bytes) > 0 {
			r, n := utf8.DecodeRune(bytes)
			if r == utf8.RuneError && n <= 1 {
				out.WriteString("\uFFFD")
				n = 1
			} else {
				out.Write(bytes[:n])
			}
			bytes = bytes[n:]
		}
	}
	for _, id := range ids {
		if id < 0 || id >= len(p.m.Pieces) {
			continue
		}
		sp := p.m.Pieces[id]
		if sp.Type == Byte {
			if b, ok := pieceToByte(sp.Piece); ok {
				bytes = append(bytes, b)
			}
			continue
		}
		flush()
		if bosWSSeen || out.Len() > 0 {
			isBOSWS = false
		}
		bosWSSeen = false
		piece := sp.Piece
		switch {
		case sp.Type == Control:
			continue
		case sp.Type == Unknown:
			out.WriteString(p.m.Trainer.UnkSurface)
			continue
		}
		if isBOSWS && (spec.AddDummyPrefix || spec.RemoveExtraWhitespaces) {
			if strings.HasPrefix(piece, spaceSymbol) {
				piece = piece[len(spaceSymbol):]
				bosWSSeen = !spec.RemoveExtraWhitespaces
			}
		}
		out.WriteString(strings.ReplaceAll(piece, spaceSymbol, " "))
	}
	flush()
	return out.String()
}

// pieceToByte parses "<0xNN>".
func pieceToByte(s string) (byte, bool) {
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(s[3:5], 16, 8)
	if err != nil {
		return 0, false
	}
	return byte(v), true
}
