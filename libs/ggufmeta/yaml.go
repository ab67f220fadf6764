package ggufmeta

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The reference parses model cards with PyYAML's yaml.safe_load, a YAML 1.1 loader: plain
// scalars such as yes/no/on/off are booleans, 0x1f and 017 are ints, 1:30 is 90, 1e5 is a
// string (no dot), 2024-01-01 is a date, "<<" merges mappings. go.yaml.in/yaml/v3 parses the
// syntax into nodes; the typing below is PyYAML's SafeConstructor, done by hand.

// PyYAML's implicit resolvers (yaml/resolver.py), in the order they are tried.
var (
	yamlBoolRE  = regexp.MustCompile(`^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$`)
	yamlFloatRE = regexp.MustCompile(`^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?` +
		`|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?` +
		`|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*` +
		`|[-+]?\.(?:inf|Inf|INF)` +
		`|\.(?:nan|NaN|NAN))$`)
	yamlIntRE = regexp.MustCompile(`^(?:[-+]?0b[0-1_]+` +
		`|[-+]?0[0-7_]+` +
		`|[-+]?(?:0|[1-9][0-9_]*)` +
		`|[-+]?0x[0-9a-fA-F_]+` +
		`|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$`)
	yamlNullRE      = regexp.MustCompile(`^(?:~|null|Null|NULL|)$`)
	yamlTimestampRE = regexp.MustCompile(`^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]` +
		`|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?` +
		`(?:[Tt]|[ \t]+)[0-9][0-9]?` +
		`:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?` +
		`(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$`)
	// SafeConstructor.timestamp_regexp
	yamlTimestampParts = regexp.MustCompile(`^([0-9][0-9][0-9][0-9])-([0-9][0-9]?)-([0-9][0-9]?)` +
		`(?:(?:[Tt]|[ \t]+)([0-9][0-9]?):([0-9][0-9]):([0-9][0-9])(?:\.([0-9]*))?` +
		`(?:[ \t]*(Z|([-+])([0-9][0-9]?)(?::([0-9][0-9]))?))?)?$`)
)

const (
	tagStr       = "!!str"
	tagNull      = "!!null"
	tagBool      = "!!bool"
	tagInt       = "!!int"
	tagFloat     = "!!float"
	tagBinary    = "!!binary"
	tagTimestamp = "!!timestamp"
	tagMerge     = "!!merge"
	tagValue     = "!!value"
	tagSeq       = "!!seq"
	tagMap       = "!!map"
	tagSet       = "!!set"
	tagOmap      = "!!omap"
	tagPairs     = "!!pairs"
)

// yamlErrf reports a model card that yaml.safe_load rejects.
var yamlErrf = fmt.Errorf

// maxYAMLDepth bounds nesting (PyYAML would hit Python's recursion limit on cyclic merges).
const maxYAMLDepth = 1000

func resolvePlain(v string) string {
	switch {
	case yamlBoolRE.MatchString(v):
		return tagBool
	case yamlFloatRE.MatchString(v):
		return tagFloat
	case yamlIntRE.MatchString(v):
		return tagInt
	case v == "<<":
		return tagMerge
	case yamlNullRE.MatchString(v):
		return tagNull
	case yamlTimestampRE.MatchString(v):
		return tagTimestamp
	case v == "=":
		return tagValue
	}
	return tagStr
}

// pySafeLoad is yaml.safe_load on one string.
func pySafeLoad(src string) (any, error) {
	dec := yaml.NewDecoder(strings.NewReader(src))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // no document: None
		}
		return nil, yamlErrf("%v", err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, yamlErrf("%v", err)
		}
		return nil, yamlErrf("expected a single document in the stream, but found another document")
	}
	c := yamlConstructor{done: map[*yaml.Node]any{}, busy: map[*yaml.Node]bool{}}
	return c.construct(&doc, 0)
}

type yamlConstructor struct {
	done map[*yaml.Node]any  // constructed nodes: aliases share one object, as in PyYAML
	busy map[*yaml.Node]bool // nodes being constructed, to refuse cycles
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < maxYAMLDepth; i++ {
		n = n.Alias
	}
	return n
}

func (c *yamlConstructor) construct(n *yaml.Node, depth int) (any, error) {
	n = deref(n)
	if v, ok := c.done[n]; ok {
		return v, nil
	}
	if c.busy[n] || depth > maxYAMLDepth {
		return nil, yamlErrf("recursive structure at line %d is not supported", n.Line)
	}
	c.busy[n] = true
	defer delete(c.busy, n)
	v, err := c.constructNode(n, depth)
	if err != nil {
		return nil, err
	}
	c.done[n] = v
	return v, nil
}

func tagged(n *yaml.Node) bool { return n.Style&yaml.TaggedStyle != 0 }

func (c *yamlConstructor) constructNode(n *yaml.Node, depth int) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return c.construct(n.Content[0], depth+1)
	case yaml.ScalarNode:
		return c.scalar(n)
	case yaml.SequenceNode:
		tag := tagSeq
		if tagged(n) {
			tag = n.Tag
		}
		switch tag {
		case tagSeq:
			l := make([]any, 0, len(n.Content))
			for _, e := range n.Content {
				v, err := c.construct(e, depth+1)
				if err != nil {
					return nil, err
				}
				l = append(l, v)
			}
			return l, nil
		case tagOmap, tagPairs:
			// a list of (key, value) tuples
			l := make([]any, 0, len(n.Content))
			for _, e := range n.Content {
				e = deref(e)
				if e.Kind != yaml.MappingNode || len(e.Content) != 2 {
					return nil, yamlErrf("line %d: %s expects single-pair mappings", e.Line, tag)
				}
				for _, kv := range e.Content {
					if _, err := c.construct(kv, depth+1); err != nil {
						return nil, err
					}
				}
				l = append(l, pyOther{kind: "tuple", truthy: true})
			}
			return l, nil
		}
	case yaml.MappingNode:
		tag := tagMap
		if tagged(n) {
			tag = n.Tag
		}
		switch tag {
		case tagMap:
			d, _, err := c.mapping(n, depth)
			return d, err
		case tagSet:
			_, size, err := c.mapping(n, depth)
			return pyOther{kind: "set", truthy: size > 0}, err
		}
	}
	return nil, yamlErrf("line %d: could not determine a constructor for the tag %q", n.Line, n.Tag)
}

type nodePair struct{ key, value *yaml.Node }

func isMergeKey(k *yaml.Node) bool {
	if k.Kind != yaml.ScalarNode {
		return false
	}
	if tagged(k) {
		return k.Tag == tagMerge
	}
	return k.Style == 0 && k.Value == "<<"
}

// flatten is SafeConstructor.flatten_mapping: merged pairs come first (so the mapping's own keys
// win), and of a list of merged mappings the earlier ones win.
func (c *yamlConstructor) flatten(n *yaml.Node, depth int) ([]nodePair, error) {
	if depth > maxYAMLDepth {
		return nil, yamlErrf("recursive merge at line %d is not supported", n.Line)
	}
	var merged, own []nodePair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if !isMergeKey(k) {
			own = append(own, nodePair{k, v})
			continue
		}
		switch v.Kind {
		case yaml.MappingNode:
			sub, err := c.flatten(v, depth+1)
			if err != nil {
				return nil, err
			}
			merged = append(merged, sub...)
		case yaml.SequenceNode:
			var subs [][]nodePair
			for _, s := range v.Content {
				s = deref(s)
				if s.Kind != yaml.MappingNode {
					return nil, yamlErrf("line %d: expected a mapping for merging", s.Line)
				}
				sub, err := c.flatten(s, depth+1)
				if err != nil {
					return nil, err
				}
				subs = append(subs, sub)
			}
			for i := len(subs) - 1; i >= 0; i-- {
				merged = append(merged, subs[i]...)
			}
		default:
			return nil, yamlErrf("line %d: expected a mapping or list of mappings for merging", v.Line)
		}
	}
	return append(merged, own...), nil
}

// mapping is SafeConstructor.construct_mapping; size counts every pair, string keys or not.
func (c *yamlConstructor) mapping(n *yaml.Node, depth int) (pyDict, int, error) {
	pairs, err := c.flatten(n, depth)
	if err != nil {
		return nil, 0, err
	}
	d := make(pyDict, len(pairs))
	for _, p := range pairs {
		var key any
		if p.key.Kind == yaml.ScalarNode && (tagged(p.key) && p.key.Tag == tagValue || !tagged(p.key) && p.key.Style == 0 && p.key.Value == "=") {
			key = p.key.Value // flatten_mapping retags "=" keys as str
		} else if key, err = c.construct(p.key, depth+1); err != nil {
			return nil, 0, err
		}
		switch k := key.(type) {
		case []any, pyDict:
			return nil, 0, yamlErrf("line %d: found unhashable key", p.key.Line)
		case pyOther:
			if k.kind == "set" {
				return nil, 0, yamlErrf("line %d: found unhashable key", p.key.Line)
			}
		}
		v, err := c.construct(p.value, depth+1)
		if err != nil {
			return nil, 0, err
		}
		if s, ok := key.(string); ok {
			d[s] = v
		}
	}
	return d, len(pairs), nil
}

func (c *yamlConstructor) scalar(n *yaml.Node) (any, error) {
	var tag string
	switch {
	case tagged(n):
		tag = n.Tag
	case n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		tag = tagStr
	default:
		tag = resolvePlain(n.Value)
	}
	v := n.Value
	bad := func(what string) error {
		return yamlErrf("line %d: %s %q", n.Line, what, v)
	}
	switch tag {
	case tagStr:
		return v, nil
	case tagNull:
		return nil, nil
	case tagBool:
		switch strings.ToLower(v) {
		case "yes", "true", "on":
			return true, nil
		case "no", "false", "off":
			return false, nil
		}
		return nil, bad("invalid boolean")
	case tagInt:
		i, ok := yamlInt(v)
		if !ok {
			return nil, bad("invalid int")
		}
		return i, nil
	case tagFloat:
		f, ok := yamlFloat(v)
		if !ok {
			return nil, bad("invalid float")
		}
		return f, nil
	case tagBinary:
		b, ok := yamlBinary(v)
		if !ok {
			return nil, bad("invalid base64 data")
		}
		return b, nil
	case tagTimestamp:
		if !validTimestamp(v) {
			return nil, bad("invalid timestamp")
		}
		return pyOther{kind: "datetime", truthy: true}, nil
	}
	return nil, yamlErrf("line %d: could not determine a constructor for the tag %q", n.Line, tag)
}

// yamlInt is SafeConstructor.construct_yaml_int.
func yamlInt(v string) (*big.Int, bool) {
	v = strings.ReplaceAll(v, "_", "")
	if v == "" {
		return nil, false
	}
	neg := v[0] == '-'
	if v[0] == '+' || v[0] == '-' {
		v = v[1:]
	}
	var n *big.Int
	ok := true
	switch {
	case v == "0":
		n = new(big.Int)
	case strings.HasPrefix(v, "0b"):
		n, ok = pyInt(v[2:], 2)
	case strings.HasPrefix(v, "0x"):
		n, ok = pyInt(v[2:], 16)
	case v != "" && v[0] == '0':
		n, ok = pyInt(v, 8)
	case strings.Contains(v, ":"):
		n = new(big.Int)
		for _, part := range strings.Split(v, ":") {
			d, good := pyInt(part, 10)
			if !good {
				return nil, false
			}
			n.Mul(n, big.NewInt(60)).Add(n, d)
		}
	default:
		n, ok = pyInt(v, 10)
	}
	if !ok {
		return nil, false
	}
	if neg {
		n.Neg(n)
	}
	return n, true
}

// yamlFloat is SafeConstructor.construct_yaml_float.
func yamlFloat(v string) (float64, bool) {
	v = pyLower(strings.ReplaceAll(v, "_", ""))
	if v == "" {
		return 0, false
	}
	sign := 1.0
	if v[0] == '-' {
		sign = -1
	}
	if v[0] == '+' || v[0] == '-' {
		v = v[1:]
	}
	switch {
	case v == ".inf":
		return sign * math.Inf(1), true
	case v == ".nan":
		// PyYAML's nan_value is -inf/inf, the x86 default NaN (sign bit set).
		return math.Float64frombits(0xfff8000000000000), true
	case strings.Contains(v, ":"):
		parts := strings.Split(v, ":")
		value, base := 0.0, 1.0
		for i := len(parts) - 1; i >= 0; i-- {
			d, ok := pyFloat(parts[i])
			if !ok {
				return 0, false
			}
			value += d * base
			base *= 60
		}
		return sign * value, true
	}
	f, ok := pyFloat(v)
	return sign * f, ok
}

// yamlBinary is base64.decodebytes on an ASCII scalar (characters outside the alphabet are
// skipped, as binascii does).
func yamlBinary(v string) ([]byte, bool) {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		ch := v[i]
		if ch >= 0x80 {
			return nil, false
		}
		if ch >= 'A' && ch <= 'Z' || ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '+' || ch == '/' || ch == '=' {
			b.WriteByte(ch)
		}
	}
	out, err := base64.StdEncoding.DecodeString(b.String())
	return out, err == nil
}

// validTimestamp reports whether construct_yaml_timestamp builds a date/datetime from v
// (Python's datetime rejects out-of-range fields and time zones of a day or more).
func validTimestamp(v string) bool {
	m := yamlTimestampParts.FindStringSubmatch(v)
	if m == nil {
		return false
	}
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	year, month, day := atoi(m[1]), atoi(m[2]), atoi(m[3])
	if year < 1 || month < 1 || month > 12 || day < 1 || day > daysIn(year, month) {
		return false
	}
	if m[4] == "" {
		return true
	}
	if atoi(m[4]) > 23 || atoi(m[5]) > 59 || atoi(m[6]) > 59 {
		return false
	}
	if m[9] != "" {
		offset := atoi(m[10])*60 + atoi(m[11])
		if offset >= 24*60 {
			return false
		}
	}
	return true
}

func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
