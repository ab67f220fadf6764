package ggufmeta

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/sharedtest"
)

type metadataCase struct {
	Name         string            `json:"name"`
	Dir          string            `json:"dir"`      // directory created for the model
	DirName      string            `json:"dir_name"` // Options.DirName ("" = from Dir)
	RemoteID     string            `json:"remote_id"`
	Files        map[string]string `json:"files"`
	FilesB64     map[string]string `json:"files_b64"`
	TotalParams  int64             `json:"total_params"`
	SharedParams int64             `json:"shared_params"`
	ExpertParams int64             `json:"expert_params"`
	ExpertCount  int64             `json:"expert_count"`
	Want         []json.RawMessage `json:"want"`  // [key, type, value]; FLOAT32 values as bits
	Error        string            `json:"error"` // the reference converter fails
}

// encodeKV writes a pair the way the test vectors do.
func encodeKV(t *testing.T, kv gguf.KV) string {
	t.Helper()
	var typ string
	var val any
	switch v := kv.Value.(type) {
	case string:
		typ, val = "STRING", v
	case uint32:
		typ, val = "UINT32", v
	case int32:
		typ, val = "INT32", v
	case float32:
		typ, val = "FLOAT32", math.Float32bits(v)
	case []string:
		typ, val = "ARRAY[STRING]", v
	case []int32:
		typ, val = "ARRAY[INT32]", v
	case []bool:
		typ, val = "ARRAY[BOOL]", v
	case []float32:
		bits := make([]uint32, len(v))
		for i, f := range v {
			bits[i] = math.Float32bits(f)
		}
		typ, val = "ARRAY[FLOAT32]", bits
	default:
		t.Fatalf("%s: unexpected value type %T", kv.Key, kv.Value)
	}
	b, err := json.Marshal([]any{kv.Key, typ, val})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// canonical re-encodes a vector entry so it compares equal to encodeKV's output.
func canonical(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMetadataReference(t *testing.T) {
	var cases []metadataCase
	readJSON(t, filepath.Join("testdata", "metadata.json"), &cases)
	if len(cases) == 0 {
		t.Fatal("no test vectors")
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), c.Dir)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, text := range c.Files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for name, b64 := range c.FilesB64 {
				b, err := base64.StdEncoding.DecodeString(b64)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Metadata(Options{Dir: dir, DirName: c.DirName, RemoteID: c.RemoteID,
				TotalParams: c.TotalParams, SharedParams: c.SharedParams, ExpertParams: c.ExpertParams, ExpertCount: c.ExpertCount})
			if c.Error != "" {
				if !errors.Is(err, ErrInvalidMetadata) {
					t.Fatalf("err = %v, want ErrInvalidMetadata (reference: %s)", err, firstLine(c.Error))
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			var gotS, wantS []string
			for _, kv := range got {
				gotS = append(gotS, encodeKV(t, kv))
			}
			for _, w := range c.Want {
				wantS = append(wantS, canonical(t, w))
			}
			if strings.Join(gotS, "\n") != strings.Join(wantS, "\n") {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(gotS, "\n"), strings.Join(wantS, "\n"))
			}
		})
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

type refKV struct {
	key   string
	value any
}

// referenceGeneralKVs returns, in file order, the keys of a reference dump that the converter's
// metadata step writes: those after general.type and before the architecture's own keys.
func referenceGeneralKVs(t *testing.T, path string) []refKV {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var doc struct{ KV json.RawMessage }
	if err := json.NewDecoder(f).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(doc.KV))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // {
		t.Fatal(err)
	}
	var out []refKV
	started := false
	for {
		tok, err := dec.Token()
		if err == io.EOF || tok == json.Delim('}') {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		key := tok.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(key, "general.") {
			if started {
				break
			}
			continue
		}
		if key == "general.type" {
			started = true
			continue
		}
		if started {
			out = append(out, refKV{key, v})
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no general.* metadata keys found", path)
	}
	return out
}

// The real tiny-llama directory must give exactly the metadata keys of llama.cpp's output.
func TestTinyLlamaReference(t *testing.T) {
	shared := sharedtest.Dir(t)
	dir := filepath.Join(shared, "models", "tiny-llama")
	total, sh, ex, n := CountParams(safetensorsShapes(t, filepath.Join(dir, "model.safetensors")))
	got, err := Metadata(Options{Dir: dir, TotalParams: total, SharedParams: sh, ExpertParams: ex, ExpertCount: n})
	if err != nil {
		t.Fatal(err)
	}
	for _, level := range []string{"Q4_K_M", "Q8_0", "BF16"} {
		ref := referenceGeneralKVs(t, filepath.Join(shared, "reference", "tiny-llama", level+".json"))
		if len(got) != len(ref) {
			t.Fatalf("%s: got %d keys %v, reference %d keys %v", level, len(got), got, len(ref), ref)
		}
		for i := range ref {
			if got[i].Key != ref[i].key || got[i].Value != ref[i].value {
				t.Errorf("%s: key %d = %s=%#v, reference %s=%#v", level, i, got[i].Key, got[i].Value, ref[i].key, ref[i].value)
			}
		}
	}
}

func TestMetadataOptions(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opt     Options
		want    []gguf.KV
		wantErr bool
	}{
		{name: "no directory, name only", opt: Options{DirName: "Qwen2.5-7B-Instruct", TotalParams: 7615616512},
			want: []gguf.KV{{Key: "general.name", Value: "Qwen2.5 7B Instruct"}, {Key: "general.finetune", Value: "Instruct"},
				{Key: "general.basename", Value: "Qwen2.5"}, {Key: "general.size_label", Value: "7B"}}},
		// Path.name semantics: only the last component of DirName is used by the heuristics.
		{name: "hub id as dir name", opt: Options{DirName: "Qwen/Qwen3-0.6B", RemoteID: "Qwen/Qwen3-0.6B", TotalParams: 751632384},
			want: []gguf.KV{{Key: "general.name", Value: "Qwen/Qwen3-0.6B"}, {Key: "general.basename", Value: "Qwen3"},
				{Key: "general.size_label", Value: "0.6B"}}},
		{name: "trailing slash", opt: Options{DirName: "models/tiny-llama/", TotalParams: 27269632},
			want: []gguf.KV{{Key: "general.name", Value: "Tiny Llama"}, {Key: "general.size_label", Value: "27M"}}},
		// Path(".").name is "": the name is empty and add_string leaves it out.
		{name: "dot directory", opt: Options{DirName: ".", TotalParams: 27269632},
			want: []gguf.KV{{Key: "general.size_label", Value: "27M"}}},
		{name: "missing directory", opt: Options{Dir: filepath.Join(t.TempDir(), "nope")}, wantErr: true},
		{name: "not a directory", opt: Options{Dir: file}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Metadata(tt.opt)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("key %d = %v, want %v", i, got[i], tt.want[i])
				}
			}
		})
	}
}
