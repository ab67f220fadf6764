package hfquant

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"quantfleet.dev/libs/fault"
)

// TestQuantConfigBounds: quantization configs whose numbers would divide by zero or mean
// nothing are refused when the checkpoint is opened.
func TestQuantConfigBounds(t *testing.T) {
	for _, c := range []struct{ qc, want string }{
		{`{"quant_method":"gptq","bits":4,"group_size":0}`, "GPTQ group_size 0"},
		{`{"quant_method":"gptq","bits":4,"group_size":-2}`, "GPTQ group_size -2"},
		{`{"quant_method":"gptq","bits":0,"group_size":128}`, "GPTQ with 0 bits"},
		{`{"quant_method":"awq","bits":4,"group_size":0}`, "group 0"},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"quantization_config":`+c.qc+`}`), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir)
		if !errors.Is(err, ErrFormat) || !fault.BadInput(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want bad input mentioning %q", c.qc, err, c.want)
		}
	}
}
