package fleet_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/fstest"

	"quantfleet.dev/services/fleet"
)

// sourceFS is a fleet.SourceFS over a map.
type sourceFS struct{ fstest.MapFS }

func (s sourceFS) Files() []string {
	var names []string
	for n := range s.MapFS {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (sourceFS) Prefix() string { return "models/abc/" }

func TestCopySmallFiles(t *testing.T) {
	src := sourceFS{fstest.MapFS{
		"config.json":                   {Data: []byte(`{"a":1}`)},
		"tokenizer.json":                {Data: []byte(`{}`)},
		"model.safetensors":             {Data: []byte("weights")},
		".gitattributes":                {Data: []byte("lfs")},
		"sub/extra.json":                {Data: []byte("nested")},
		"model-00001-of-2.safetensors":  {Data: []byte("weights")},
		"generation_config.json":        {Data: []byte(`{"b":2}`)},
		"original/consolidated.weights": {Data: []byte("x")},
	}}
	dir := t.TempDir()
	if err := fleet.CopySmallFiles(context.Background(), src, dir); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if want := []string{"config.json", "generation_config.json", "tokenizer.json"}; !slices.Equal(got, want) {
		t.Errorf("copied %v, want %v", got, want)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "config.json")); string(b) != `{"a":1}` {
		t.Errorf("config.json holds %q", b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := fleet.CopySmallFiles(ctx, src, t.TempDir()); err == nil {
		t.Error("a cancelled copy succeeded")
	}
}
