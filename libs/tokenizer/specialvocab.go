package tokenizer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
)

// specialVocab mirrors gguf-py's SpecialVocab (gguf/vocab.py): merges, special token ids, add_*_token
// flags, chat templates and normalizer flags, gathered from tokenizer.json, tokenizer_config.json and
// config.json in the converter's order and with its precedence (first value wins).
type specialVocab struct {
	types      []string
	nVocab     int // -1: no range check (n_vocab=None)
	loadMerges bool
	idOverride map[string]*int // config.json <typ>_token_id supplied by the caller

	merges   []string
	ids      orderedMap[int]
	add      orderedMap[bool]
	chat     any // nil, string or []any of {name, template}
	lower    *bool
	stripAcc *bool
}

// orderedMap is a Python dict: assignment keeps an existing key's position.
type orderedMap[V any] struct {
	keys []string
	vals map[string]V
}

func (m *orderedMap[V]) set(k string, v V) {
	if m.vals == nil {
		m.vals = map[string]V{}
	}
	if _, ok := m.vals[k]; !ok {
		m.keys = append(m.keys, k)
	}
	m.vals[k] = v
}

func (m *orderedMap[V]) has(k string) bool { _, ok := m.vals[k]; return ok }

var defaultSpecialTypes = []string{"bos", "eos", "unk", "sep", "pad", "cls", "mask"}

func loadSpecialVocab(dir string, types []string, nVocab int, loadMerges bool, override map[string]*int) (*specialVocab, error) {
	sv := &specialVocab{types: append([]string(nil), types...), nVocab: nVocab, loadMerges: loadMerges, idOverride: override}
	if err := sv.fromTokenizerJSON(dir); err != nil {
		return nil, err
	}
	if err := sv.fromConfigJSON(dir); err != nil {
		return nil, err
	}
	if sv.loadMerges && len(sv.merges) == 0 {
		if err := sv.fromMergesTxt(dir); err != nil {
			return nil, err
		}
	}
	return sv, nil
}

// readJSONObject reads a JSON object file; ok is false when the file does not exist.
func readJSONObject(path string) (map[string]any, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("tokenizer: %w", err)
	}
	var v map[string]any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return nil, false, fmt.Errorf("tokenizer: %s: %w: %v", path, ErrMalformed, err)
	}
	return v, true, nil
}

// pyInt is Python's isinstance(x, int) for a decoded JSON value.
func pyInt(v any) (int, bool) {
	n, ok := v.(json.Number)
	if !ok || strings.ContainsAny(n.String(), ".eE") {
		return 0, false
	}
	i, err := n.Int64()
	return int(i), err == nil
}

// truthy is Python truthiness for decoded JSON values.
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case json.Number:
		f, _ := x.Float64()
		return f != 0
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}

func pyEq(a, b any) bool { return reflect.DeepEqual(a, b) }

func pyIn(a any, set ...any) bool {
	for _, b := range set {
		if pyEq(a, b) {
			return true
		}
	}
	return false
}

func getMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// specialTokenID reads {"SpecialToken": {"id": X}} from a template entry.
func specialTokenID(entry any) any {
	return getMap(getMap(entry)["SpecialToken"])["id"]
}

func sequenceID(entry any) any {
	return getMap(getMap(entry)["Sequence"])["id"]
}

func (sv *specialVocab) setSpecial(typ string, tid any) error {
	id, ok := pyInt(tid)
	if !ok {
		return nil
	}
	if id < 0 || id > math.MaxUint32 { // written as a GGUF uint32
		return fmt.Errorf("tokenizer: %w: invalid value for special token type %s: %d", ErrMalformed, typ, id)
	}
	if sv.nVocab < 0 || id < sv.nVocab {
		if !sv.ids.has(typ) {
			sv.ids.set(typ, id)
		}
	}
	return nil
}

func (sv *specialVocab) hasType(t string) bool {
	for _, x := range sv.types {
		if x == t {
			return true
		}
	}
	return false
}

func (sv *specialVocab) fromTokenizerJSON(dir string) error {
	tok, haveTok, err := readJSONObject(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return err
	}
	var added []any
	if haveTok {
		if sv.loadMerges {
			if err := sv.mergesFrom(getMap(tok["model"])["merges"]); err != nil {
				return err
			}
		}
		if n := tok["normalizer"]; truthy(n) {
			sv.parseNormalizer(getMap(n))
		}
		added, _ = tok["added_tokens"].([]any)
	}
	tc, _, err := readJSONObject(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		return err
	}
	hasTC := truthy(tc)
	if truthy(tok) {
		get := func(k string) any {
			if tc == nil {
				return nil
			}
			return tc[k]
		}
		specialBOS, specialCLS := get("bos_token"), get("cls_token")
		specialEOS, specialSEP := get("eos_token"), get("sep_token")
		if !truthy(specialBOS) && truthy(specialCLS) && hasTC {
			specialBOS = specialCLS
			tc["bos_token"] = specialBOS
		}
		if !truthy(specialEOS) && truthy(specialSEP) && hasTC {
			specialEOS = specialSEP
			tc["eos_token"] = specialEOS
		}
		if pp := getMap(tok["post_processor"]); truthy(pp) {
			procs := []any{pp}
			if p, ok := pp["processors"]; ok {
				procs, _ = p.([]any)
			}
			for _, pr := range procs {
				proc := getMap(pr)
				switch proc["type"] {
				case "RobertaProcessing":
					sv.add.set("bos", true)
					sv.add.set("eos", true)
					sv.add.set("sep", true)
					if !truthy(specialCLS) && hasTC {
						specialCLS = specialBOS
						if c, ok := proc["cls"].([]any); ok && len(c) > 0 {
							specialCLS = c[0]
						}
						tc["cls_token"] = specialCLS
					}
					if !truthy(specialSEP) && hasTC {
						specialSEP = specialEOS
						if c, ok := proc["sep"].([]any); ok && len(c) > 0 {
							specialSEP = c[0]
						}
						tc["sep_token"] = specialSEP
					}
				case "TemplateProcessing":
					single, _ := proc["single"].([]any)
					pair, _ := proc["pair"].([]any)
					var specialFirst, specialLast any
					if len(single) > 1 {
						if specialFirst = specialTokenID(single[0]); truthy(specialFirst) {
							if !hasTC {
								specialBOS = specialFirst
							} else if !pyIn(specialFirst, specialBOS, specialCLS) {
								if !truthy(specialBOS) {
									specialBOS = specialFirst
									tc["bos_token"] = specialBOS
								}
								if !truthy(specialCLS) {
									specialCLS = specialFirst
									tc["cls_token"] = specialCLS
								}
							}
							sv.add.set("bos", pyIn(specialFirst, specialBOS, specialCLS))
						}
						if specialLast = specialTokenID(single[len(single)-1]); truthy(specialLast) {
							if !hasTC {
								specialEOS = specialLast
							} else if !pyEq(specialLast, specialEOS) {
								switch {
								case !sv.hasType("eot"):
									sv.types = append(sv.types, "eot")
									tc["eot_token"] = specialEOS
								case !sv.hasType("eom"):
									sv.types = append(sv.types, "eom")
									tc["eom_token"] = specialEOS
								}
								specialEOS = specialLast
								tc["eos_token"] = specialEOS
							}
							sv.add.set("eos", pyEq(specialLast, specialEOS))
						}
					}
					if len(pair) > 0 {
						seqStart, seqStop := 0, len(pair)
						if truthy(specialFirst) && pyEq(specialTokenID(pair[0]), specialFirst) {
							seqStart = 1
						}
						if truthy(specialLast) && pyEq(specialTokenID(pair[len(pair)-1]), specialLast) {
							seqStop = len(pair) - 1
						}
						var tp []any
						if seqStart < seqStop {
							tp = pair[seqStart:seqStop]
						}
						if len(tp) > 0 {
							a, b := sequenceID(tp[0]), sequenceID(tp[len(tp)-1])
							if pyEq(a, "A") && pyEq(b, "B") && len(tp) > 2 {
								tp = tp[1 : len(tp)-1]
								addSep := false
								if e := specialTokenID(tp[0]); truthy(e) {
									if pyIn(e, specialSEP, specialEOS) && !truthy(specialLast) {
										addSep = true
									}
								}
								if len(tp) == 2 {
									if e := specialTokenID(tp[1]); truthy(e) && pyIn(e, specialSEP, specialEOS) {
										addSep = true
									}
								}
								sv.add.set("sep", addSep)
								if addSep && !truthy(specialSEP) && hasTC {
									tc["sep_token"] = specialEOS
								}
							}
						}
					}
				}
			}
		}
	}
	if !hasTC {
		return nil
	}
	if err := sv.loadChatTemplate(dir, tc); err != nil {
		return err
	}
	for _, typ := range sv.types {
		if b, ok := tc["add_"+typ+"_token"].(bool); ok {
			sv.add.set(typ, b)
		}
		var content string
		switch e := tc[typ+"_token"].(type) {
		case string:
			content = e
		case map[string]any:
			c, ok := e["content"].(string)
			if !ok {
				continue
			}
			content = c
		default:
			continue
		}
		var id any
		for _, a := range added {
			if am := getMap(a); am != nil && pyEq(am["content"], content) {
				id = am["id"]
				break
			}
		}
		if err := sv.setSpecial(typ, id); err != nil {
			return err
		}
	}
	return nil
}

func (sv *specialVocab) mergesFrom(m any) error {
	list, ok := m.([]any)
	if !ok || len(list) == 0 {
		return nil
	}
	switch first := list[0].(type) {
	case string:
		sv.merges = make([]string, len(list))
		for i, x := range list {
			s, ok := x.(string)
			if !ok {
				return fmt.Errorf("tokenizer: %w: merge %d is not a string", ErrMalformed, i)
			}
			sv.merges[i] = s
		}
	case []any:
		if len(first) != 2 {
			return fmt.Errorf("tokenizer: %w: unknown tokenizer merges format", ErrMalformed)
		}
		if _, ok := first[0].(string); !ok {
			return fmt.Errorf("tokenizer: %w: unknown tokenizer merges format", ErrMalformed)
		}
		sv.merges = make([]string, len(list))
		for i, x := range list {
			pair, ok := x.([]any)
			if !ok {
				return fmt.Errorf("tokenizer: %w: merge %d is not a pair", ErrMalformed, i)
			}
			parts := make([]string, len(pair))
			for j, p := range pair {
				s, _ := p.(string)
				parts[j] = strings.ReplaceAll(s, " ", "\u0120") // chr(ord(' ') + 256)
			}
			sv.merges[i] = strings.Join(parts, " ")
		}
	default:
		return fmt.Errorf("tokenizer: %w: unknown tokenizer merges format", ErrMalformed)
	}
	return nil
}

func (sv *specialVocab) parseNormalizer(n map[string]any) {
	t := true
	switch n["type"] {
	case "Lowercase":
		sv.lower = &t
	case "StripAccents":
		sv.stripAcc = &t
	case "BertNormalizer":
		if v, ok := n["lowercase"]; ok {
			if b, ok := v.(bool); ok {
				sv.lower = &b
			} else {
				sv.lower = nil
			}
		}
		if v, ok := n["strip_accents"]; ok {
			if b, ok := v.(bool); ok {
				sv.stripAcc = &b
			} else {
				sv.stripAcc = nil
			}
		}
	case "Sequence":
		list, _ := n["normalizers"].([]any)
		for _, x := range list {
			sv.parseNormalizer(getMap(x))
		}
	}
}

func (sv *specialVocab) loadChatTemplate(dir string, tc map[string]any) error {
	var alt any
	jinja := filepath.Join(dir, "chat_template.jinja")
	if b, err := os.ReadFile(jinja); err == nil {
		alt = string(b)
		extra, _ := filepath.Glob(filepath.Join(dir, "additional_chat_templates", "*.jinja"))
		sort.Strings(extra)
		if len(extra) > 0 {
			list := []any{map[string]any{"name": "default", "template": alt}}
			for _, p := range extra {
				b, err := os.ReadFile(p)
				if err != nil {
					return fmt.Errorf("tokenizer: %w", err)
				}
				list = append(list, map[string]any{"name": strings.TrimSuffix(filepath.Base(p), ".jinja"), "template": string(b)})
			}
			alt = list
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("tokenizer: %w", err)
	} else {
		ct, ok, err := readJSONObject(filepath.Join(dir, "chat_template.json"))
		if err != nil {
			return err
		}
		if ok {
			alt = ct["chat_template"]
		}
	}
	ct, ok := tc["chat_template"]
	if !ok {
		ct = alt
	}
	switch ct.(type) {
	case nil, string, []any:
		sv.chat = ct
	}
	return nil
}

func (sv *specialVocab) fromConfigJSON(dir string) error {
	cfg, ok, err := readJSONObject(filepath.Join(dir, "config.json"))
	if err != nil {
		return err
	}
	for _, typ := range sv.types {
		if p, given := sv.idOverride[typ]; given {
			if p != nil {
				if err := sv.setSpecial(typ, json.Number(fmt.Sprint(*p))); err != nil {
					return err
				}
			}
			continue
		}
		if !ok {
			continue
		}
		id := cfg[typ+"_token_id"]
		if id == nil {
			if text, has := cfg["text_config"]; has {
				id = getMap(text)[typ+"_token_id"]
			}
		}
		if err := sv.setSpecial(typ, id); err != nil {
			return err
		}
	}
	return nil
}

func (sv *specialVocab) fromMergesTxt(dir string) error {
	f, err := os.Open(filepath.Join(dir, "merges.txt"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	first := true
	var merges []string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if first {
			first = false
			if strings.HasPrefix(line, "#") {
				continue
			}
		}
		if line == "" {
			continue
		}
		parts := strings.Fields(line)
		if len(parts) != 2 {
			continue // the converter warns and ignores malformed entries
		}
		merges = append(merges, parts[0]+" "+parts[1])
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("tokenizer: merges.txt: %w", err)
	}
	sv.merges = merges
	return nil
}

// specialIDKeys maps SpecialVocab token types to the GGUF keys gguf-py has writers for; other types
// (cls, prefix, suffix, middle) are skipped by the converter.
var specialIDKeys = map[string]string{
	"bos":  "tokenizer.ggml.bos_token_id",
	"eos":  "tokenizer.ggml.eos_token_id",
	"unk":  "tokenizer.ggml.unknown_token_id",
	"sep":  "tokenizer.ggml.seperator_token_id",
	"pad":  "tokenizer.ggml.padding_token_id",
	"mask": "tokenizer.ggml.mask_token_id",
	"eot":  "tokenizer.ggml.eot_token_id",
	"eom":  "tokenizer.ggml.eom_token_id",
}

var addFlagKeys = map[string]string{
	"bos": "tokenizer.ggml.add_bos_token",
	"eos": "tokenizer.ggml.add_eos_token",
	"sep": "tokenizer.ggml.add_sep_token",
}

// addTo is SpecialVocab.add_to_gguf.
func (sv *specialVocab) addTo(kv *kvList) {
	kv.addStrings("tokenizer.ggml.merges", sv.merges)
	for _, typ := range sv.ids.keys {
		if key, ok := specialIDKeys[typ]; ok {
			kv.set(key, uint32(sv.ids.vals[typ]))
		}
	}
	for _, typ := range sv.add.keys {
		if key, ok := addFlagKeys[typ]; ok {
			kv.set(key, sv.add.vals[typ])
		}
	}
	if sv.chat != nil {
		kv.addChatTemplate(sv.chat)
	}
	if sv.lower != nil {
		kv.set("tokenizer.ggml.normalizer.lowercase", *sv.lower)
	}
	if sv.stripAcc != nil {
		kv.set("tokenizer.ggml.normalizer.strip_accents", *sv.stripAcc)
	}
}
