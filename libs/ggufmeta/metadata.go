// Package ggufmeta computes the general.* metadata that llama.cpp's convert_hf_to_gguf.py
// writes into a GGUF file: the model name and its parts (basename, finetune, version, size
// label) guessed from the model's directory name and config.json, the authorship, license,
// base models, datasets, tags and languages from the model card's YAML front matter (README.md),
// and the recommended sampling parameters from generation_config.json.
//
// It is a port of gguf-py's Metadata.load and Metadata.set_gguf_meta_model, together with
// ModelBase.prepare_metadata (name and size-label fallbacks) and GGUFWriter's parameter count,
// as of llama.cpp commit d32676d77426540327835040d5d3279728f0b4c8. Values keep the Python
// types the reference would see (YAML 1.1 typing of the model card, JSON ints vs floats), so
// that the same keys with the same GGUF value types come out, and inputs that make the
// reference converter fail make Metadata fail with ErrInvalidMetadata.
package ggufmeta

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"quantfleet.dev/libs/gguf"
)

// ErrInvalidMetadata reports model metadata that llama.cpp's converter would reject: a model
// card or config.json it cannot parse, or a value of a type it cannot write (for example
// "version: 1.0" in the model card, which YAML reads as a float).
var ErrInvalidMetadata = errors.New("ggufmeta: invalid model metadata")

// Options describes the model whose metadata is computed.
type Options struct {
	// Dir is the model directory; README.md, config.json and generation_config.json are read
	// from it when present. Empty means no files.
	Dir string
	// DirName is the name the directory-name heuristics and the name fallback use: the local
	// directory's base name or, for a Hub model, its "org/name" id. Like the converter's
	// Path.name, only its last path component counts. Empty means the base name of Dir.
	DirName string
	// RemoteID is the Hub id ("org/name") when the model came from the Hub; it then becomes
	// general.name, as with convert_hf_to_gguf.py --remote.
	RemoteID string
	// Parameter counts of the tensors written to the GGUF, as returned by CountParams.
	TotalParams, SharedParams, ExpertParams, ExpertCount int64
}

// Metadata returns the keys Metadata.set_gguf_meta_model writes, in its order and with its
// GGUF types: general.sampling.* (INT32/FLOAT32/STRING, from generation_config.json), then
// general.name, author, version, organization, finetune, basename, description, quantized_by,
// size_label, license, license.name, license.link, url, doi, uuid, repo_url, source.*,
// base_model.count (UINT32) and base_model.{i}.*, dataset.count and dataset.{i}.*, tags and
// languages (arrays, normally of strings). Empty strings and empty arrays are left out, as
// add_string and add_array do; general.name is therefore absent only if the name is empty.
func Metadata(opt Options) ([]gguf.KV, error) {
	var card, hf pyDict
	var gen any
	hasHF := false
	if opt.Dir != "" {
		fi, err := os.Stat(opt.Dir)
		if err != nil {
			return nil, fmt.Errorf("ggufmeta: model directory: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("ggufmeta: %s is not a directory", opt.Dir)
		}
		if card, err = loadModelCard(opt.Dir); err != nil {
			return nil, err
		}
		if hf, hasHF, err = loadHFParameters(opt.Dir); err != nil {
			return nil, err
		}
		if gen, err = loadGenerationConfig(opt.Dir); err != nil {
			return nil, err
		}
	}
	dirName := opt.DirName
	if dirName == "" {
		dirName = filepath.ToSlash(opt.Dir)
	}
	dirName = pyPathName(dirName)

	m := &meta{}
	if err := m.applyHeuristics(card, hf, hasHF, dirName, opt.TotalParams); err != nil {
		return nil, err
	}
	if pyTruthy(gen) {
		g, ok := gen.(pyDict)
		if !ok {
			return nil, invalidf("generation_config.json holds a JSON %s, not an object", pyTypeName(gen))
		}
		m.samplingSequence = g["sequence"]
		m.samplingTopK = g["top_k"]
		m.samplingTopP = g["top_p"]
		m.samplingMinP = g["min_p"]
		m.samplingXTCProbability = g["xtc_probability"]
		m.samplingXTCThreshold = g["xtc_threshold"]
		m.samplingTemp = g["temperature"]
		m.samplingPenaltyLastN = g["penalty_last_n"]
		m.samplingPenaltyRepeat = g["penalty_repeat"]
		m.samplingMirostat = g["mirostat"]
		m.samplingMirostatTau = g["mirostat_tau"]
		m.samplingMirostatEta = g["mirostat_eta"]
	}

	// ModelBase.prepare_metadata
	if opt.RemoteID != "" {
		m.name = opt.RemoteID
	}
	if m.name == nil {
		m.name = dirName
	}
	if m.sizeLabel == nil && opt.TotalParams > 0 {
		m.sizeLabel = SizeLabel(opt.TotalParams, opt.SharedParams, opt.ExpertParams, opt.ExpertCount)
	}
	return m.keys()
}

// meta mirrors the fields of gguf-py's Metadata dataclass; nil is None.
type meta struct {
	samplingSequence, samplingTopK, samplingTopP, samplingMinP    any
	samplingXTCProbability, samplingXTCThreshold, samplingTemp    any
	samplingPenaltyLastN, samplingPenaltyRepeat, samplingMirostat any
	samplingMirostatTau, samplingMirostatEta                      any
	name, author, version, organization, finetune, basename       any
	description, quantizedBy, sizeLabel                           any
	url, doi, uuid, repoURL                                       any
	sourceURL, sourceDOI, sourceUUID, sourceRepoURL               any
	license, licenseName, licenseLink                             any
	baseModels, datasets                                          []pyDict
	haveBaseModels, haveDatasets                                  bool
	tags, languages                                               []any
}

// readIfFile reads path if it is a regular file (Path.is_file); ok is false when it is absent.
func readIfFile(path string) (b []byte, ok bool, err error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) || err == nil && !fi.Mode().IsRegular() {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("ggufmeta: %w", err)
	}
	b, err = os.ReadFile(path)
	if err != nil {
		return nil, false, fmt.Errorf("ggufmeta: %w", err)
	}
	if !utf8.Valid(b) {
		return nil, false, invalidf("%s is not valid UTF-8", path)
	}
	return b, true, nil
}

// loadModelCard is Metadata.load_model_card: the YAML front matter of README.md, between a
// first line "---" and the next line "---" (or the end of the file).
func loadModelCard(dir string) (pyDict, error) {
	b, ok, err := readIfFile(filepath.Join(dir, "README.md"))
	if err != nil || !ok {
		return nil, err
	}
	lines := pySplitLines(pyReadText(b))
	if len(lines) == 0 || lines[0] != "---" {
		return nil, nil
	}
	var front []string
	for _, l := range lines[1:] {
		if l == "---" {
			break
		}
		front = append(front, l)
	}
	src := strings.Join(front, "\n") + "\n"
	// The reference's fixes: the "Norway problem" (a list item "no" is read as false) and tabs.
	src = strings.ReplaceAll(src, "- no\n", "- \"no\"\n")
	src = strings.ReplaceAll(src, "\t", "  ")
	v, err := pySafeLoad(src)
	if err != nil {
		return nil, invalidf("%s: YAML front matter: %v", filepath.Join(dir, "README.md"), err)
	}
	d, _ := v.(pyDict) // anything but a mapping is ignored
	return d, nil
}

// loadHFParameters is Metadata.load_hf_parameters (config.json); has is false when the file is
// absent or holds null.
func loadHFParameters(dir string) (d pyDict, has bool, err error) {
	path := filepath.Join(dir, "config.json")
	b, ok, err := readIfFile(path)
	if err != nil || !ok {
		return nil, false, err
	}
	v, err := pyJSONLoads(b)
	if err != nil {
		return nil, false, invalidf("%s: %v", path, err)
	}
	if v == nil {
		return nil, false, nil
	}
	d, ok = v.(pyDict)
	if !ok {
		return nil, false, invalidf("%s holds a JSON %s, not an object", path, pyTypeName(v))
	}
	return d, true, nil
}

// loadGenerationConfig is Metadata.load_generation_config: unreadable or malformed JSON is
// ignored.
func loadGenerationConfig(dir string) (any, error) {
	path := filepath.Join(dir, "generation_config.json")
	b, ok, err := readIfFile(path)
	if errors.Is(err, ErrInvalidMetadata) {
		return nil, err // not UTF-8: the reference fails before parsing
	}
	if err != nil || !ok {
		return nil, nil
	}
	v, err := pyJSONLoads(b)
	if err != nil {
		return nil, nil
	}
	return v, nil
}

// applyHeuristics is Metadata.apply_metadata_heuristic.
func (m *meta) applyHeuristics(card, hf pyDict, hasHF bool, dirName string, total int64) error {
	m.applyModelCard(card, total)

	if hasHF {
		if v := hf["_name_or_path"]; v != nil {
			id, use, err := nameOrPath(v)
			if err != nil {
				return err
			}
			if use {
				m.applyComponents(modelIDComponents(id, total))
			}
		}
	}

	// directory name fallback
	m.applyComponents(modelIDComponents(dirName, total))
	return nil
}

// nameOrPath applies `if hf_name_or_path.count('/') <= 1` to config.json's _name_or_path: it is
// used only when it looks like a Hub id rather than a filesystem path.
func nameOrPath(v any) (string, bool, error) {
	switch x := v.(type) {
	case string:
		return x, strings.Count(x, "/") <= 1, nil
	case []any:
		// list.count('/') counts elements; a list that passes then fails in the reference.
		n := 0
		for _, e := range x {
			if s, ok := e.(string); ok && s == "/" {
				n++
			}
		}
		if n > 1 {
			return "", false, nil
		}
	}
	return "", false, invalidf("config.json: _name_or_path has type %s, not str", pyTypeName(v))
}

func (m *meta) applyComponents(c idComponents) {
	if m.name == nil && c.fullName != nil {
		m.name = idToTitle(*c.fullName)
	}
	if m.organization == nil && c.org != nil {
		m.organization = idToTitle(*c.org)
	}
	set := func(dst *any, s *string) {
		if *dst == nil && s != nil {
			*dst = *s
		}
	}
	set(&m.basename, c.basename)
	set(&m.finetune, c.finetune)
	set(&m.version, c.version)
	set(&m.sizeLabel, c.sizeLabel)
}

// getOr is dict.get(key, def).
func getOr(d pyDict, key string, def any) any {
	if v, ok := d[key]; ok {
		return v
	}
	return def
}

func (m *meta) applyModelCard(card pyDict, total int64) {
	use := func(dst *any, key string) {
		if v, ok := card[key]; ok && *dst == nil {
			*dst = v
		}
	}
	useArray := func(dst *[]any, key string) {
		switch v := card[key].(type) {
		case nil:
			return
		case string:
			*dst = append(*dst, v)
		case []any:
			*dst = append(*dst, v...)
		default:
			if *dst == nil {
				*dst = []any{}
			}
		}
	}

	// llama.cpp's own keys
	use(&m.name, "name")
	use(&m.author, "author")
	use(&m.version, "version")
	use(&m.organization, "organization")
	use(&m.description, "description")
	use(&m.finetune, "finetune")
	use(&m.basename, "basename")
	use(&m.sizeLabel, "size_label")
	use(&m.sourceURL, "url")
	use(&m.sourceDOI, "doi")
	use(&m.sourceUUID, "uuid")
	use(&m.sourceRepoURL, "repo_url")

	// the same with a model_ prefix
	use(&m.name, "model_name")
	use(&m.author, "model_author")
	use(&m.version, "model_version")
	use(&m.organization, "model_organization")
	use(&m.description, "model_description")
	use(&m.finetune, "model_finetune")
	use(&m.basename, "model_basename")
	use(&m.sizeLabel, "model_size_label")
	use(&m.sourceURL, "model_url")
	use(&m.sourceDOI, "model_doi")
	use(&m.sourceUUID, "model_uuid")
	use(&m.sourceRepoURL, "model_repo_url")

	// keys some model creators use (e.g. TheBloke's cards)
	use(&m.name, "model_name")
	use(&m.author, "model_creator")
	use(&m.basename, "model_type")

	_, a := card["base_model"]
	_, b := card["base_models"]
	_, c := card["base_model_sources"]
	if a || b || c {
		v := getOr(card, "base_model", getOr(card, "base_models", getOr(card, "base_model_sources", nil)))
		if !m.haveBaseModels {
			m.baseModels, m.haveBaseModels = []pyDict{}, true
		}
		for _, id := range listOf(v) {
			m.baseModels = append(m.baseModels, sourceEntry(id, total))
		}
	}

	_, a = card["datasets"]
	_, b = card["dataset"]
	_, c = card["dataset_sources"]
	if a || b || c {
		v := getOr(card, "datasets", getOr(card, "dataset", getOr(card, "dataset_sources", nil)))
		if !m.haveDatasets {
			m.datasets, m.haveDatasets = []pyDict{}, true
		}
		for _, id := range listOf(v) {
			m.datasets = append(m.datasets, sourceEntry(id, total))
		}
	}

	use(&m.license, "license")
	use(&m.licenseName, "license_name")
	use(&m.licenseLink, "license_link")

	useArray(&m.tags, "tags")
	useArray(&m.tags, "pipeline_tag")
	useArray(&m.languages, "languages")
	useArray(&m.languages, "language")
}

// listOf turns a str into a one-element list and keeps a list; anything else gives nothing.
func listOf(v any) []any {
	switch x := v.(type) {
	case string:
		return []any{x}
	case []any:
		return x
	}
	return nil
}

// sourceEntry builds one base model or dataset entry from a Hub id, a URL, or a mapping given
// in the model card; entries of any other type end up empty.
func sourceEntry(id any, total int64) pyDict {
	switch x := id.(type) {
	case pyDict:
		return x
	case string:
		e := pyDict{}
		if strings.HasPrefix(x, "http://") || strings.HasPrefix(x, "https://") || strings.HasPrefix(x, "ssh://") {
			e["repo_url"] = x
			if strings.Contains(x, "huggingface.co") {
				if sm := hfURLRE.FindStringSubmatch(x); sm != nil {
					c := modelIDComponents(sm[1], total)
					if c.fullName != nil {
						e["name"] = idToTitle(*c.fullName)
					}
					if c.org != nil {
						e["organization"] = idToTitle(*c.org)
					}
					if c.version != nil {
						e["version"] = *c.version
					}
				}
			}
			return e
		}
		c := modelIDComponents(x, total)
		if c.fullName != nil {
			e["name"] = idToTitle(*c.fullName)
		}
		if c.org != nil {
			e["organization"] = idToTitle(*c.org)
		}
		if c.version != nil {
			e["version"] = *c.version
		}
		if c.org != nil && c.fullName != nil {
			e["repo_url"] = "https://huggingface.co/" + *c.org + "/" + *c.fullName
		}
		return e
	}
	return pyDict{}
}

// sourceFields are the per-entry keys of base models and datasets, in the order written.
var sourceFields = []string{"name", "author", "version", "organization", "description", "url", "doi", "uuid", "repo_url"}

// keys is Metadata.set_gguf_meta_model.
func (m *meta) keys() ([]gguf.KV, error) {
	w := &kvWriter{}
	if m.samplingSequence != nil {
		w.addString("general.sampling.sequence", m.samplingSequence)
	}
	for _, s := range []struct {
		key   string
		v     any
		float bool
	}{
		{"general.sampling.top_k", m.samplingTopK, false},
		{"general.sampling.top_p", m.samplingTopP, true},
		{"general.sampling.min_p", m.samplingMinP, true},
		{"general.sampling.xtc_probability", m.samplingXTCProbability, true},
		{"general.sampling.xtc_threshold", m.samplingXTCThreshold, true},
		{"general.sampling.temp", m.samplingTemp, true},
		{"general.sampling.penalty_last_n", m.samplingPenaltyLastN, false},
		{"general.sampling.penalty_repeat", m.samplingPenaltyRepeat, true},
		{"general.sampling.mirostat", m.samplingMirostat, false},
		{"general.sampling.mirostat_tau", m.samplingMirostatTau, true},
		{"general.sampling.mirostat_eta", m.samplingMirostatEta, true},
	} {
		switch {
		case s.v == nil:
		case s.float:
			w.addFloat32(s.key, s.v)
		default:
			w.addInt32(s.key, s.v)
		}
	}

	w.addString("general.name", m.name)
	w.addString("general.author", m.author)
	w.addString("general.version", m.version)
	w.addString("general.organization", m.organization)
	w.addString("general.finetune", m.finetune)
	w.addString("general.basename", m.basename)
	w.addString("general.description", m.description)
	w.addString("general.quantized_by", m.quantizedBy)
	w.addString("general.size_label", m.sizeLabel)

	if l, ok := m.license.([]any); ok {
		parts := make([]string, len(l))
		for i, e := range l {
			s, ok := e.(string)
			if !ok {
				return nil, invalidf("general.license: license list item %d has type %s, not str", i, pyTypeName(e))
			}
			parts[i] = s
		}
		w.addString("general.license", strings.Join(parts, ","))
	} else {
		w.addString("general.license", m.license)
	}
	w.addString("general.license.name", m.licenseName)
	w.addString("general.license.link", m.licenseLink)

	w.addString("general.url", m.url)
	w.addString("general.doi", m.doi)
	w.addString("general.uuid", m.uuid)
	w.addString("general.repo_url", m.repoURL)

	w.addString("general.source.url", m.sourceURL)
	w.addString("general.source.doi", m.sourceDOI)
	w.addString("general.source.uuid", m.sourceUUID)
	w.addString("general.source.repo_url", m.sourceRepoURL)

	if m.haveBaseModels {
		w.addUint32("general.base_model.count", len(m.baseModels))
		for i, e := range m.baseModels {
			for _, f := range sourceFields {
				if v, ok := e[f]; ok {
					w.addString(fmt.Sprintf("general.base_model.%d.%s", i, f), v)
				}
			}
		}
	}
	if m.haveDatasets {
		w.addUint32("general.dataset.count", len(m.datasets))
		for i, e := range m.datasets {
			for _, f := range sourceFields {
				if v, ok := e[f]; ok {
					w.addString(fmt.Sprintf("general.dataset.%d.%s", i, f), v)
				}
			}
		}
	}

	w.addArray("general.tags", m.tags)
	w.addArray("general.languages", m.languages)
	if w.err != nil {
		return nil, w.err
	}
	return w.kvs, nil
}
