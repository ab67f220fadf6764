package fleet

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"quantfleet.dev/libs/atomicfile"
)

// smallFileLimit bounds the source files CopySmallFiles copies.
const smallFileLimit = 256 << 20

// CopySmallFiles copies a checkpoint's top-level files but the weights and hidden files (config,
// tokenizer, generation config, README; at most 256 MiB each) from fsys into dir: what the
// metadata and tokenizer readers and the checkpoint writers read from a local directory.
func CopySmallFiles(ctx context.Context, fsys SourceFS, dir string) error {
	for _, name := range fsys.Files() {
		if strings.Contains(name, "/") || strings.HasSuffix(name, ".safetensors") || strings.HasPrefix(name, ".") {
			continue
		}
		st, err := fs.Stat(fsys, name)
		if err != nil || st.Size() > smallFileLimit {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := atomicfile.CopyFile(fsys, name, filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("source %s: %w", fsys.Prefix(), err)
		}
	}
	return nil
}
