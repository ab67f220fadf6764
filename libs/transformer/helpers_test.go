package transformer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// sharedDir finds the team's read-only data: a "shared" directory beside the repository
// root, searched upwards from the package directory. Without it the test is skipped,
// unless CI is set.
func sharedDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		cand := filepath.Join(dir, "shared")
		if st, err := os.Stat(filepath.Join(cand, "models")); err == nil && st.IsDir() {
			return cand
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	if os.Getenv("CI") != "" {
		t.Fatal("shared data directory not found beside the repository")
	}
	t.Skip("shared data directory not found beside the repository")
	return ""
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
