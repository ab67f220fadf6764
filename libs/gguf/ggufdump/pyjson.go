package ggufdump

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file emulates the parts of Python (3.x json module, str, float) that
// shared/tools/gguf_dump.py relies on, so that Dump produces the same JSON values and
// the same array hashes as that script.
//
// JSON values are modelled as: nil, bool, json.Number (the exact Python text of an int or
// float), string, []any, ArraySummary, object (ordered) and map[string]any (from loading).

// object is an ordered JSON object (a Python dict keeps insertion order).
type object []member

type member struct {
	key string
	val any
}

// pyFloat returns Python's json.dumps text of a float: repr, the shortest string that
// round-trips, in exponent form when the decimal exponent is < -4 or >= 16; "NaN",
// "Infinity" and "-Infinity" for non-finite values.
func pyFloat(x float64) string {
	switch {
	case math.IsNaN(x):
		return "NaN"
	case math.IsInf(x, 1):
		return "Infinity"
	case math.IsInf(x, -1):
		return "-Infinity"
	}
	e := strconv.FormatFloat(x, 'e', -1, 64) // "1.5e+16", "1e-05": Python's exponent style
	exp, err := strconv.Atoi(e[strings.IndexByte(e, 'e')+1:])
	if err != nil {
		panic(err) // strconv always writes an exponent
	}
	if x != 0 && (exp < -4 || exp >= 16) {
		return e
	}
	s := strconv.FormatFloat(x, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}

// pyDecodeReplace decodes bytes as Python's bytes.decode("utf-8", errors="replace"):
// each maximal invalid subpart becomes one U+FFFD (Unicode's recommended practice).
func pyDecodeReplace(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c < 0x80 {
			b.WriteByte(c)
			i++
			continue
		}
		need, lo, hi := 0, byte(0x80), byte(0xBF)
		switch {
		case c >= 0xC2 && c <= 0xDF:
			need = 1
		case c == 0xE0:
			need, lo = 2, 0xA0
		case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
			need = 2
		case c == 0xED:
			need, hi = 2, 0x9F
		case c == 0xF0:
			need, lo = 3, 0x90
		case c >= 0xF1 && c <= 0xF3:
			need = 3
		case c == 0xF4:
			need, hi = 3, 0x8F
		}
		j := i + 1
		for k := 0; k < need && j < len(s); k++ {
			if k > 0 {
				lo, hi = 0x80, 0xBF
			}
			if s[j] < lo || s[j] > hi {
				break
			}
			j++
		}
		if need > 0 && j-i == need+1 {
			b.WriteString(s[i:j])
		} else {
			b.WriteRune(utf8.RuneError)
		}
		i = j
	}
	return b.String()
}

// appendPyString appends a JSON string as Python's json module writes it.
func appendPyString(b []byte, s string, ensureASCII bool) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch r {
		case '"':
			b = append(b, `\"`...)
		case '\\':
			b = append(b, `\\`...)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		case '\t':
			b = append(b, `\t`...)
		case '\b':
			b = append(b, `\b`...)
		case '\f':
			b = append(b, `\f`...)
		default:
			switch {
			case r < 0x20:
				b = fmt.Appendf(b, `\u%04x`, r)
			case ensureASCII && r > 0x7e && r <= 0xffff:
				b = fmt.Appendf(b, `\u%04x`, r)
			case ensureASCII && r > 0xffff:
				r -= 0x10000
				b = fmt.Appendf(b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
			default:
				b = utf8.AppendRune(b, r)
			}
		}
	}
	return append(b, '"')
}

// appendPyJSON appends v as Python's json.dumps would: compact (", " and ": ") when
// indent < 0, else json.dump(indent=indent) at nesting level.
func appendPyJSON(b []byte, v any, ensureASCII bool, indent, level int) []byte {
	nl := func(b []byte, lvl int) []byte {
		b = append(b, '\n')
		return append(b, strings.Repeat(" ", indent*lvl)...)
	}
	seq := func(b []byte, open, close byte, n int, item func(b []byte, i int) []byte) []byte {
		if n == 0 {
			return append(b, open, close)
		}
		b = append(b, open)
		for i := range n {
			if i > 0 {
				b = append(b, ',')
				if indent < 0 {
					b = append(b, ' ')
				}
			}
			if indent >= 0 {
				b = nl(b, level+1)
			}
			b = item(b, i)
		}
		if indent >= 0 {
			b = nl(b, level)
		}
		return append(b, close)
	}
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, v)
	case json.Number:
		return append(b, v...)
	case string:
		return appendPyString(b, v, ensureASCII)
	case []any:
		return seq(b, '[', ']', len(v), func(b []byte, i int) []byte {
			return appendPyJSON(b, v[i], ensureASCII, indent, level+1)
		})
	case ArraySummary:
		return appendPyJSON(b, v.object(), ensureASCII, indent, level)
	case object:
		return seq(b, '{', '}', len(v), func(b []byte, i int) []byte {
			b = appendPyString(b, v[i].key, ensureASCII)
			b = append(b, ": "...)
			return appendPyJSON(b, v[i].val, ensureASCII, indent, level+1)
		})
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		o := make(object, len(keys))
		for i, k := range keys {
			o[i] = member{k, v[k]}
		}
		return appendPyJSON(b, o, ensureASCII, indent, level)
	}
	panic(fmt.Sprintf("gguf: no JSON form for %T", v))
}

// pyValue converts a KV value as read by this package into the JSON value Python's
// gguf_dump.py reader produces for it (before summarising).
func pyValue(v any) any {
	num := func(x any) any { return json.Number(fmt.Sprint(x)) }
	list := func(n int, f func(i int) any) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	switch v := v.(type) {
	case uint8, int8, uint16, int16, uint32, int32, uint64, int64:
		return num(v)
	case float32:
		return json.Number(pyFloat(float64(v)))
	case float64:
		return json.Number(pyFloat(v))
	case bool:
		return v
	case string:
		return pyDecodeReplace(v)
	case []uint8:
		return list(len(v), func(i int) any { return num(v[i]) })
	case []int8:
		return list(len(v), func(i int) any { return num(v[i]) })
	case []uint16:
		return list(len(v), func(i int) any { return num(v[i]) })
	case []int16:
		return list(len(v), func(i int) any { return num(v[i]) })
	case []uint32:
		return list(len(v), func(i int) any { return num(v[i]) })
	case []int32:
		return list(len(v), func(i int) any { return num(v[i]) })
	case []uint64:
		return list(len(v), func(i int) any { return num(v[i]) })
	case []int64:
		return list(len(v), func(i int) any { return num(v[i]) })
	case []float32:
		return list(len(v), func(i int) any { return json.Number(pyFloat(float64(v[i]))) })
	case []float64:
		return list(len(v), func(i int) any { return json.Number(pyFloat(v[i])) })
	case []bool:
		return list(len(v), func(i int) any { return v[i] })
	case []string:
		return list(len(v), func(i int) any { return pyDecodeReplace(v[i]) })
	}
	panic(fmt.Sprintf("gguf: unexpected KV value type %T", v))
}

// pyNum is a Python int or float.
type pyNum struct {
	isInt bool
	i     *big.Int
	f     float64
}

func toPyNum(v any) (pyNum, bool) {
	switch v := v.(type) {
	case bool: // Python's bool is an int: True == 1
		if v {
			return pyNum{isInt: true, i: big.NewInt(1)}, true
		}
		return pyNum{isInt: true, i: big.NewInt(0)}, true
	case json.Number:
		s := string(v)
		switch s {
		case "NaN":
			return pyNum{f: math.NaN()}, true
		case "Infinity":
			return pyNum{f: math.Inf(1)}, true
		case "-Infinity":
			return pyNum{f: math.Inf(-1)}, true
		}
		if !strings.ContainsAny(s, ".eE") {
			i, ok := new(big.Int).SetString(s, 10)
			return pyNum{isInt: true, i: i}, ok
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil && !isRangeErr(err) {
			return pyNum{}, false
		}
		return pyNum{f: f}, true
	}
	return pyNum{}, false
}

func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

func (a pyNum) equal(b pyNum) bool {
	switch {
	case a.isInt && b.isInt:
		return a.i.Cmp(b.i) == 0
	case !a.isInt && !b.isInt:
		return a.f == b.f
	case a.isInt:
		a, b = b, a
	}
	// a is a float, b an int: Python compares them exactly.
	if math.IsNaN(a.f) || math.IsInf(a.f, 0) {
		return false
	}
	return new(big.Float).SetFloat64(a.f).Cmp(new(big.Float).SetInt(b.i)) == 0
}

// pyEqual is Python's == on JSON values.
func pyEqual(a, b any) bool {
	if an, ok := toPyNum(a); ok {
		bn, ok := toPyNum(b)
		return ok && an.equal(bn)
	}
	switch a := a.(type) {
	case nil:
		return b == nil
	case string:
		bs, ok := b.(string)
		return ok && a == bs
	case []any:
		bl, ok := b.([]any)
		if !ok || len(a) != len(bl) {
			return false
		}
		for i := range a {
			if !pyEqual(a[i], bl[i]) {
				return false
			}
		}
		return true
	case ArraySummary:
		return pyEqual(a.object(), b)
	case object:
		am := make(map[string]any, len(a))
		for _, m := range a {
			am[m.key] = m.val
		}
		return pyEqual(am, b)
	case map[string]any:
		var bm map[string]any
		switch b := b.(type) {
		case map[string]any:
			bm = b
		case ArraySummary:
			return pyEqual(a, b.object())
		case object:
			return pyEqual(b, a)
		default:
			return false
		}
		if len(a) != len(bm) {
			return false
		}
		for k, av := range a {
			bv, ok := bm[k]
			if !ok || !pyEqual(av, bv) {
				return false
			}
		}
		return true
	}
	return false
}

// pyParser parses JSON as Python's json.loads does, including its NaN, Infinity and
// -Infinity extensions. Objects become object (ordered), numbers json.Number.
type pyParser struct {
	s   []byte
	pos int
}

func (p *pyParser) errorf(format string, args ...any) error {
	return fmt.Errorf("json at offset %d: %s", p.pos, fmt.Sprintf(format, args...))
}

func (p *pyParser) skipSpace() {
	for p.pos < len(p.s) && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t' || p.s[p.pos] == '\n' || p.s[p.pos] == '\r') {
		p.pos++
	}
}

func (p *pyParser) literal(lit string) bool {
	if bytes.HasPrefix(p.s[p.pos:], []byte(lit)) {
		p.pos += len(lit)
		return true
	}
	return false
}

// parseDocument parses one value followed only by white space.
func (p *pyParser) parseDocument() (any, error) {
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos != len(p.s) {
		return nil, p.errorf("extra data")
	}
	return v, nil
}

func (p *pyParser) value(depth int) (any, error) {
	if depth > 1000 {
		return nil, p.errorf("nesting too deep")
	}
	p.skipSpace()
	if p.pos >= len(p.s) {
		return nil, p.errorf("unexpected end")
	}
	switch c := p.s[p.pos]; {
	case c == '{':
		p.pos++
		var o object
		p.skipSpace()
		if p.pos < len(p.s) && p.s[p.pos] == '}' {
			p.pos++
			return o, nil
		}
		for {
			p.skipSpace()
			k, err := p.str()
			if err != nil {
				return nil, err
			}
			p.skipSpace()
			if !p.literal(":") {
				return nil, p.errorf("expected ':'")
			}
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			o = append(o, member{k, v})
			p.skipSpace()
			if p.literal("}") {
				return o, nil
			}
			if !p.literal(",") {
				return nil, p.errorf("expected ',' or '}'")
			}
		}
	case c == '[':
		p.pos++
		l := []any{}
		p.skipSpace()
		if p.literal("]") {
			return l, nil
		}
		for {
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
			p.skipSpace()
			if p.literal("]") {
				return l, nil
			}
			if !p.literal(",") {
				return nil, p.errorf("expected ',' or ']'")
			}
		}
	case c == '"':
		return p.str()
	case p.literal("true"):
		return true, nil
	case p.literal("false"):
		return false, nil
	case p.literal("null"):
		return nil, nil
	case p.literal("NaN"):
		return json.Number("NaN"), nil
	case p.literal("Infinity"):
		return json.Number("Infinity"), nil
	case p.literal("-Infinity"):
		return json.Number("-Infinity"), nil
	}
	start := p.pos
	for p.pos < len(p.s) && strings.IndexByte("+-0123456789.eE", p.s[p.pos]) >= 0 {
		p.pos++
	}
	var n json.Number
	if err := json.Unmarshal(p.s[start:p.pos], &n); err != nil || start == p.pos {
		p.pos = start
		return nil, p.errorf("invalid value")
	}
	return n, nil
}

func (p *pyParser) str() (string, error) {
	if p.pos >= len(p.s) || p.s[p.pos] != '"' {
		return "", p.errorf("expected string")
	}
	start := p.pos
	p.pos++
	for p.pos < len(p.s) {
		switch p.s[p.pos] {
		case '\\':
			p.pos += 2
			continue
		case '"':
			p.pos++
			var s string
			if err := json.Unmarshal(p.s[start:p.pos], &s); err != nil {
				return "", p.errorf("bad string: %v", err)
			}
			return s, nil
		}
		p.pos++
	}
	return "", p.errorf("unterminated string")
}
