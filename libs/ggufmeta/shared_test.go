package ggufmeta

import (
	"encoding/json"
	"os"
	"testing"
)

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// safetensorsShapes reads the tensor shapes from a safetensors header.
func safetensorsShapes(t *testing.T, path string) []TensorShape {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n [8]byte
	if _, err := f.ReadAt(n[:], 0); err != nil {
		t.Fatal(err)
	}
	size := int64(n[0]) | int64(n[1])<<8 | int64(n[2])<<16 | int64(n[3])<<24 | int64(n[4])<<32 | int64(n[5])<<40
	hdr := make([]byte, size)
	if _, err := f.ReadAt(hdr, 8); err != nil {
		t.Fatal(err)
	}
	var entries map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &entries); err != nil {
		t.Fatal(err)
	}
	var out []TensorShape
	for name, raw := range entries {
		if name == "__metadata__" {
			continue
		}
		var e struct{ Shape []int64 }
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, TensorShape{Name: name, Shape: e.Shape})
	}
	return out
}
