package hub_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"quantfleet.dev/libs/hub"
)

func TestParseModelID(t *testing.T) {
	tests := []struct {
		in       string
		repo     string
		revision string
		wantErr  bool
	}{
		{in: "TinyLlama/TinyLlama-1.1B-Chat-v1.0", repo: "TinyLlama/TinyLlama-1.1B-Chat-v1.0", revision: "main"},
		{in: "org/name@v1.0", repo: "org/name", revision: "v1.0"},
		{in: "org/name@0123456789abcdef0123456789abcdef01234567", repo: "org/name", revision: "0123456789abcdef0123456789abcdef01234567"},
		{in: "org/name@refs/pr/1", repo: "org/name", revision: "refs/pr/1"},
		{in: "Qwen/Qwen2.5-0.5B_x", repo: "Qwen/Qwen2.5-0.5B_x", revision: "main"},
		{in: "name", wantErr: true},
		{in: "a/b/c", wantErr: true},
		{in: "/name", wantErr: true},
		{in: "org/", wantErr: true},
		{in: "org/na me", wantErr: true},
		{in: "org/na..me", wantErr: true},
		{in: "org/na--me", wantErr: true},
		{in: "org/.name", wantErr: true},
		{in: "org/name-", wantErr: true},
		{in: "org/name.git", wantErr: true},
		{in: "../name", wantErr: true},
		{in: "org/name@", wantErr: true},
		{in: "org/name@../x", wantErr: true},
		{in: "org/name@a//b", wantErr: true},
		{in: "org/name@a b", wantErr: true},
		{in: "org/" + strings.Repeat("a", 97), wantErr: true},
		{in: "org/" + strings.Repeat("a", 96), repo: "org/" + strings.Repeat("a", 96), revision: "main"},
		{in: "./models/x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			repo, rev, err := hub.ParseModelID(tt.in)
			if tt.wantErr {
				if !errors.Is(err, hub.ErrInvalidModelID) {
					t.Fatalf("ParseModelID(%q) = %q, %q, %v; want ErrInvalidModelID", tt.in, repo, rev, err)
				}
				return
			}
			if err != nil || repo != tt.repo || rev != tt.revision {
				t.Fatalf("ParseModelID(%q) = %q, %q, %v; want %q, %q", tt.in, repo, rev, err, tt.repo, tt.revision)
			}
		})
	}
}

func TestLooksLikeModelID(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "models", "local"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	tests := []struct {
		in   string
		want bool
	}{
		{"org/name", true},
		{"org/name@main", true},
		{"models/local", false}, // exists on disk
		{"models/other", true},
		{"./models/local", false},
		{"/abs/path", false},
		{"model.safetensors", false},
		{"a/b/c", false},
	}
	for _, tt := range tests {
		if got := hub.LooksLikeModelID(tt.in); got != tt.want {
			t.Errorf("LooksLikeModelID(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestDefaultAllow(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"model.safetensors", true},
		{"model-00001-of-00002.safetensors", true},
		{"model.safetensors.index.json", true},
		{"config.json", true},
		{"generation_config.json", true},
		{"tokenizer.json", true},
		{"tokenizer.model", true},
		{"tokenizer_config.json", true},
		{"vocab.txt", true},
		{"merges.txt", true},
		{"chat_template.jinja", true},
		{"sub/dir/config.json", true},
		{"pytorch_model.bin", false},
		{"consolidated.00.pth", false},
		{"model.pt", false},
		{"model-q4_0.gguf", false},
		{"README.md", false},
		{".gitattributes", false},
		{"onnx/model.onnx", false},
		{"flax_model.msgpack", false},
	}
	for _, tt := range tests {
		if got := hub.DefaultAllow(tt.path); got != tt.want {
			t.Errorf("DefaultAllow(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestRepoFolderName(t *testing.T) {
	if got, want := hub.RepoFolderName("TinyLlama/TinyLlama-1.1B"), "models--TinyLlama--TinyLlama-1.1B"; got != want {
		t.Errorf("RepoFolderName = %q, want %q", got, want)
	}
}
