package ggufmeta

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"

	"quantfleet.dev/libs/gguf"
)

// Values read from the model card (YAML) and from the JSON files are kept as the Python objects
// the reference converter would hold, because what it writes (or whether it fails) depends on
// their Python types:
//
//	None -> nil, bool -> bool, int -> *big.Int, float -> float64, str -> string, bytes -> []byte,
//	list -> []any, dict -> pyDict, date/datetime/set/tuple -> pyOther.
//
// pyDict keeps only string keys: the converter only ever looks up string keys.
type pyDict map[string]any

// pyOther stands for a Python object that the converter never inspects beyond its truthiness.
type pyOther struct {
	kind   string // Python type name, for error messages
	truthy bool
}

func pyTypeName(v any) string {
	switch x := v.(type) {
	case nil:
		return "NoneType"
	case bool:
		return "bool"
	case *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case []any:
		return "list"
	case pyDict:
		return "dict"
	case pyOther:
		return x.kind
	}
	return fmt.Sprintf("%T", v)
}

// pyTruthy is Python's bool(v).
func pyTruthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case *big.Int:
		return x.Sign() != 0
	case float64:
		return x != 0 // NaN is truthy, as in Python
	case string:
		return x != ""
	case []byte:
		return len(x) > 0
	case []any:
		return len(x) > 0
	case pyDict:
		return len(x) > 0
	case pyOther:
		return x.truthy
	}
	return true
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidMetadata}, args...)...)
}

// errJSONSyntax marks a file that is not valid JSON (json.JSONDecodeError in Python), which the
// converter tolerates for generation_config.json only.
var errJSONSyntax = errors.New("invalid JSON")

// pyJSONLoads is json.loads on already-decoded text, returning Python-typed values.
func pyJSONLoads(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: %v", errJSONSyntax, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: extra data after the JSON value", errJSONSyntax)
	}
	return fromJSON(v)
}

func fromJSON(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		d := make(pyDict, len(x))
		for k, e := range x {
			pv, err := fromJSON(e)
			if err != nil {
				return nil, err
			}
			d[k] = pv
		}
		return d, nil
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			pv, err := fromJSON(e)
			if err != nil {
				return nil, err
			}
			l[i] = pv
		}
		return l, nil
	case json.Number:
		s := string(x)
		if strings.ContainsAny(s, ".eE") { // Python's json makes a float only with a fraction or exponent
			f, ok := parseFloatLiteral(s)
			if !ok {
				return nil, fmt.Errorf("%w: bad number %q", errJSONSyntax, s)
			}
			return f, nil
		}
		n, ok := new(big.Int).SetString(s, 10)
		if !ok {
			return nil, fmt.Errorf("%w: bad number %q", errJSONSyntax, s)
		}
		return n, nil
	}
	return v, nil // string, bool, nil
}

// pyFloatRE is the grammar of Python's float() on a string (without underscores), after
// whitespace was stripped and digits mapped to ASCII.
var pyFloatRE = regexp.MustCompile(`^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))$`)

// pyFloat is Python's float(s) for a str argument; ok is false where Python raises ValueError.
func pyFloat(s string) (float64, bool) {
	s = asciiDigits(pyStrip(s))
	if !pyFloatRE.MatchString(s) {
		return 0, false
	}
	f, ok := parseFloatLiteral(s)
	if math.IsNaN(f) && s[0] == '-' {
		f = math.Copysign(f, -1) // float("-nan") keeps its sign
	}
	return f, ok
}

// parseFloatLiteral parses a decimal literal with correct rounding; like Python, an overflowing
// literal becomes ±inf and an underflowing one ±0 rather than an error.
func parseFloatLiteral(s string) (float64, bool) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, false
	}
	return f, true
}

// pyInt is Python's int(s, base) for a str argument (digits of any script, surrounding
// whitespace, an optional sign, and for base 2/8/16 an optional matching prefix).
func pyInt(s string, base int) (*big.Int, bool) {
	s = asciiDigits(pyStrip(s))
	sign := ""
	if s != "" && (s[0] == '+' || s[0] == '-') {
		sign, s = s[:1], s[1:]
	}
	prefix := map[int]string{2: "0b", 8: "0o", 16: "0x"}[base]
	if prefix != "" && len(s) > 2 && strings.EqualFold(s[:2], prefix) {
		s = s[2:]
	}
	if s == "" || strings.ContainsAny(s, "+-_") {
		return nil, false
	}
	return new(big.Int).SetString(sign+s, base)
}

// kvWriter collects metadata pairs with the semantics of GGUFWriter.add_* followed by the
// packing done when the file is written (struct.pack): where Python would raise, the first
// error is kept and later calls do nothing.
type kvWriter struct {
	kvs []gguf.KV
	err error
}

func (w *kvWriter) fail(key string, format string, args ...any) {
	if w.err == nil {
		w.err = invalidf("%s: "+format, append([]any{key}, args...)...)
	}
}

// addString is add_string: falsy values are skipped, str and bytes are written, anything else
// fails to pack.
func (w *kvWriter) addString(key string, v any) {
	if w.err != nil || !pyTruthy(v) {
		return
	}
	switch x := v.(type) {
	case string:
		w.kvs = append(w.kvs, gguf.KV{Key: key, Value: x})
	case []byte:
		w.kvs = append(w.kvs, gguf.KV{Key: key, Value: string(x)})
	default:
		w.fail(key, "a value of type %s cannot be written as a GGUF string", pyTypeName(v))
	}
}

func (w *kvWriter) addUint32(key string, n int) {
	if w.err != nil {
		return
	}
	w.kvs = append(w.kvs, gguf.KV{Key: key, Value: uint32(n)})
}

// addInt32 is add_int32 (struct.pack("<i")): ints in range and bools only.
func (w *kvWriter) addInt32(key string, v any) {
	if w.err != nil {
		return
	}
	n, err := packInt32(v)
	if err != nil {
		w.fail(key, "%v", err)
		return
	}
	w.kvs = append(w.kvs, gguf.KV{Key: key, Value: n})
}

// addFloat32 is add_float32 (struct.pack("<f")): ints, floats and bools.
func (w *kvWriter) addFloat32(key string, v any) {
	if w.err != nil {
		return
	}
	f, err := packFloat32(v)
	if err != nil {
		w.fail(key, "%v", err)
		return
	}
	w.kvs = append(w.kvs, gguf.KV{Key: key, Value: f})
}

// addArray is add_array: empty lists are skipped; the element type comes from the first
// element (GGUFValueType.get_type) and every element must have the same one.
func (w *kvWriter) addArray(key string, l []any) {
	if w.err != nil || len(l) == 0 {
		return
	}
	typ, err := arrayElemType(l[0])
	if err != nil {
		w.fail(key, "%v", err)
		return
	}
	for _, e := range l[1:] {
		t, err := arrayElemType(e)
		if err != nil {
			w.fail(key, "%v", err)
			return
		}
		if t != typ {
			w.fail(key, "all items in a GGUF array should be of the same type")
			return
		}
	}
	switch typ {
	case gguf.TypeString:
		out := make([]string, len(l))
		for i, e := range l {
			if b, ok := e.([]byte); ok {
				out[i] = string(b)
			} else {
				out[i] = e.(string)
			}
		}
		w.kvs = append(w.kvs, gguf.KV{Key: key, Value: out})
	case gguf.TypeInt32:
		out := make([]int32, len(l))
		for i, e := range l {
			if out[i], err = packInt32(e); err != nil {
				w.fail(key, "%v", err)
				return
			}
		}
		w.kvs = append(w.kvs, gguf.KV{Key: key, Value: out})
	case gguf.TypeFloat32:
		out := make([]float32, len(l))
		for i, e := range l {
			if out[i], err = packFloat32(e); err != nil {
				w.fail(key, "%v", err)
				return
			}
		}
		w.kvs = append(w.kvs, gguf.KV{Key: key, Value: out})
	case gguf.TypeBool:
		out := make([]bool, len(l))
		for i, e := range l {
			out[i] = e.(bool)
		}
		w.kvs = append(w.kvs, gguf.KV{Key: key, Value: out})
	default:
		// Python would write an array of arrays, which llama.cpp cannot read.
		w.fail(key, "nested arrays are not supported")
	}
}

func arrayElemType(v any) (gguf.ValueType, error) {
	switch v.(type) {
	case string, []byte:
		return gguf.TypeString, nil
	case []any:
		return gguf.TypeArray, nil
	case float64:
		return gguf.TypeFloat32, nil
	case bool:
		return gguf.TypeBool, nil
	case *big.Int:
		return gguf.TypeInt32, nil
	}
	return 0, fmt.Errorf("unknown array element type %s", pyTypeName(v))
}

func packInt32(v any) (int32, error) {
	switch x := v.(type) {
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case *big.Int:
		if !x.IsInt64() || x.Int64() < math.MinInt32 || x.Int64() > math.MaxInt32 {
			return 0, fmt.Errorf("%v is out of the int32 range", x)
		}
		return int32(x.Int64()), nil
	}
	return 0, fmt.Errorf("a value of type %s is not an integer", pyTypeName(v))
}

func packFloat32(v any) (float32, error) {
	var f float64
	switch x := v.(type) {
	case bool:
		if x {
			f = 1
		}
	case *big.Int:
		var acc big.Accuracy
		f, acc = new(big.Float).SetInt(x).Float64()
		if math.IsInf(f, 0) && acc != big.Exact {
			return 0, fmt.Errorf("int %v is too large to convert to float", x)
		}
	case float64:
		f = x
	default:
		return 0, fmt.Errorf("a value of type %s is not a float", pyTypeName(v))
	}
	r := float32(f)
	if math.IsInf(float64(r), 0) && !math.IsInf(f, 0) {
		return 0, fmt.Errorf("float %v is too large for float32", f)
	}
	return r, nil
}
